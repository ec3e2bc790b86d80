"""The hypervisor's steal beside lateness: read from /proc/stat, printed by the benchmarks (pure; the check's row is
in tests/test_check_lateness.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corridor.cli.bench_link import report_lines
from corridor.cli.bench_links import links_report_lines
from corridor.cli.table import fit_lines
from corridor.links import capacity as cap
from corridor.links.fidelity import CpuSteal, cpu_ticks, steal_between, steal_words

# two readings 10 s apart on a 2-CPU guest: cpu0 lost 300 of its 800 ticks, cpu1 100 of its 1,200
BEFORE = """cpu  1000 0 500 8000 10 0 100 400 0 0
cpu0 500 0 250 4000 5 0 50 200 0 0
cpu1 500 0 250 4000 5 0 50 200 0 0
intr 123 0 0
ctxt 456
"""
AFTER = """cpu  1500 0 800 8700 10 0 200 800 0 0
cpu0 700 0 350 4200 5 0 50 500 0 0
cpu1 800 0 450 4500 5 0 150 300 0 0
intr 456 0 0
ctxt 789
"""


def test_ticks_are_steal_and_the_total_of_the_first_eight_columns() -> None:
    ticks = cpu_ticks(BEFORE)
    assert set(ticks) == {"cpu", "cpu0", "cpu1"}
    assert ticks["cpu"] == (400, 1000 + 500 + 8000 + 10 + 100 + 400)
    assert ticks["cpu0"] == (200, 500 + 250 + 4000 + 5 + 50 + 200)


def test_steal_over_the_machine_and_on_its_worst_cpu() -> None:
    steal = steal_between(BEFORE, AFTER)
    assert steal["steal_fraction"] == pytest.approx(400 / 2000)
    assert steal["steal_fraction_max_cpu"] == pytest.approx(300 / 800)
    assert steal_words(steal) == "CPU steal 20.0 % (worst CPU 37.5 %)"


@pytest.mark.parametrize(("before", "after"), [
    ("cpu  1 2 3 4 5 6 7\n", "cpu  2 3 4 5 6 7 8\n"),  # a kernel without the steal column
    (BEFORE, BEFORE),  # no time passed
    ("", AFTER),  # /proc/stat could not be read
    ("cpu  a b c d e f g h\n", AFTER),
])
def test_no_steal_figure_without_two_good_readings(before: str, after: str) -> None:
    assert steal_between(before, after) == {}
    assert steal_words({}) == ""


def test_the_probe_reads_before_and_after_its_block() -> None:
    readings = iter([BEFORE, AFTER])
    with CpuSteal(read=lambda: next(readings)) as steal:
        pass
    assert steal.summary()["steal_fraction"] == pytest.approx(0.2)
    with pytest.raises(RuntimeError):
        CpuSteal(read=lambda: BEFORE).summary()


def test_this_machine_gives_a_figure_or_none() -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat here")
    with CpuSteal() as steal:
        sum(range(200_000))
    figures = steal.summary()
    assert figures == {} or 0.0 <= figures["steal_fraction"] <= figures["steal_fraction_max_cpu"] <= 1.0


BENCH = {"rate_mbps": 5000.0, "delay_ms": 25.0, "duration_s": 10.0, "congestion": "cubic", "bare_mbps": 33000.0,
         "shaped_mbps": 4790.0, "shaped_of_configured": 0.958, "ratio": 0.14, "rtt_median_ms": 50.3,
         "rtt_configured_ms": 50.0, "rtt_error_pct": 0.6, "jitter_p50_ms": 0.1, "jitter_p99_ms": 1.6,
         "delayline_late_us_p99": 16000.0}


def test_bench_link_prints_steal_when_the_kernel_gives_it() -> None:
    assert not any("CPU steal" in line for line in report_lines(BENCH))
    lines = fit_lines(report_lines({**BENCH, "steal_fraction": 0.14, "steal_fraction_max_cpu": 0.2}), width=100)
    steal = [line for line in lines if line.startswith("CPU steal")]
    assert steal and "14.0 %" in steal[0] and "worst CPU 20.0 %" in steal[0]
    assert all(len(line) <= 100 for line in lines)


def _load(late_us: float) -> cap.LinkLoad:
    return cap.LinkLoad(link="link1", rate_mbps=1000.0, delay_ms=25.0,
                        a_to_b=cap.DirectionLoad(goodput_mbps=960.0, late_p50_us=50.0, late_p99_us=late_us,
                                                 queue_delay_ms_max=1.0),
                        b_to_a=cap.DirectionLoad(goodput_mbps=960.0, late_p50_us=50.0, late_p99_us=late_us,
                                                 queue_delay_ms_max=1.0),
                        idle_rtt_ms=50.0, loaded_rtt_ms=52.0, cpu_s=1.0, window_s=10.0, carried_ip_bits=2e10)


def test_bench_links_names_steal_in_each_counts_heading() -> None:
    stolen = cap.LinksResult(links=(_load(300.0),), duration_s=10, load_avg_1m=1.5,
                             steal={"steal_fraction": 0.05, "steal_fraction_max_cpu": 0.08})
    assert stolen.aggregate()["steal_fraction"] == pytest.approx(0.05)
    assert "CPU steal 5.0 % (worst CPU 8.0 %) while loaded" in links_report_lines(stolen.as_dict())[0]
    bare = cap.LinksResult(links=(_load(300.0),), duration_s=10, load_avg_1m=1.5)
    assert "steal" not in links_report_lines(bare.as_dict())[0]


def test_bench_link_prints_how_busy_the_machine_was_and_whether_the_line_left_real_time() -> None:
    assert not any(line.startswith("machine busy") for line in report_lines(BENCH))
    busy = {**BENCH, "machine_busy_fraction": 0.88, "machine_cpus": 2.0}
    (line,) = [line for line in report_lines({**busy, "delayline_policy_switches": 1})
               if line.startswith("machine busy")]
    assert line == ("machine busy                88.0 %  (of 2 CPUs, during the delay line's flow); the line changed "
                    "its scheduling policy once: it needed more than 85 % of a core and ran as a normal task at "
                    "nice -10, which others on its CPU can delay")
    kept = [line for line in report_lines({**busy, "delayline_policy_switches": 0}) if line.startswith("machine")]
    assert kept[0].endswith("during the delay line's flow); the line kept its scheduling policy")
    unknown = [line for line in report_lines({**busy, "delayline_policy_switches": None}) if line.startswith("machine")]
    assert unknown[0].endswith("during the delay line's flow)")


def test_the_lines_policy_switches_are_read_only_from_a_count() -> None:
    from corridor.tools.linkbench import _switches

    assert _switches({"scheduling": {"policy": "nice", "switches": 3}}) == 3
    assert _switches({"scheduling": {"switches": True}}) is None
    assert _switches({"scheduling": None}) is None
    assert _switches({}) is None
