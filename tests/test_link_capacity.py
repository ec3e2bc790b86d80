"""corridor bench links: the verdicts and accounting of N loaded links (pure), and one real link (root)."""

from __future__ import annotations

import os
from dataclasses import replace

import click
import pytest
from click.testing import CliRunner

from corridor.cli import cli
from corridor.cli.bench_links import links_report_lines, parse_counts
from corridor.errors import EmulationError
from corridor.links import capacity as cap

STAT = ("4242 (python3 -m corridor.links.delay line) S 1 4242 4242 0 -1 4194560 5010 0 0 0 "
        "350 125 0 0 -21 0 3 0 5000 100000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 20 1 0 0 0")


def test_proc_cpu_counts_user_and_system_time_past_a_command_with_spaces() -> None:
    assert cap.proc_cpu_s(STAT, ticks_per_s=100) == pytest.approx(4.75)


@pytest.mark.parametrize("text", ["", "4242 python3 S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 2 3 4 5 6 7 8 9 a b c d"])
def test_proc_cpu_refuses_what_is_not_a_stat_line(text: str) -> None:
    with pytest.raises(EmulationError):
        cap.proc_cpu_s(text)


def direction(goodput: float, late_p99: float | None = 300.0) -> cap.DirectionLoad:
    return cap.DirectionLoad(goodput_mbps=goodput, late_p50_us=50.0, late_p99_us=late_p99, queue_delay_ms_max=20.0)


def link(a: float = 960.0, b: float = 955.0, late_a: float | None = 300.0, late_b: float | None = 400.0,
         name: str = "link1") -> cap.LinkLoad:
    return cap.LinkLoad(link=name, rate_mbps=1000.0, delay_ms=25.0, a_to_b=direction(a, late_a),
                        b_to_a=direction(b, late_b), idle_rtt_ms=50.2, loaded_rtt_ms=80.2, cpu_s=2.4, window_s=12.0,
                        carried_ip_bits=24e9)


@pytest.mark.parametrize(("kwargs", "holds"), [
    ({}, True),
    ({"a": 949.0}, False),  # under 95 % one way
    ({"b": 900.0}, False),
    ({"late_a": 1010.0}, False),  # later than 1 ms at p99
    ({"late_b": None}, False),  # no departures counted: nothing carried
    ({"late_b": 1000.0}, True),
])
def test_a_link_holds_on_rate_and_lateness_both_ways(kwargs: dict[str, float | None], holds: bool) -> None:
    assert link(**kwargs).holds() is holds  # type: ignore[arg-type]


def test_link_accounting() -> None:
    lk = link()
    assert lk.queueing_ms == pytest.approx(30.0)
    assert lk.cpu_fraction == pytest.approx(0.2)
    assert lk.cpu_per_gbps == pytest.approx(0.1)  # 2.4 CPU s over 24 Gbit
    assert lk.carried_fractions == pytest.approx((0.96, 0.955))


def test_aggregate_takes_totals_and_worst_cases() -> None:
    result = cap.LinksResult(links=(link(), link(a=900.0, late_b=700.0, name="link2")), duration_s=10, load_avg_1m=2.0)
    agg = result.aggregate()
    assert agg["links"] == 2 and not agg["holds"]
    assert agg["goodput_mbps"] == pytest.approx(960 + 955 + 900 + 955)
    assert agg["carried_min_of_configured"] == pytest.approx(0.9)
    assert agg["late_p99_us_max"] == 700.0
    assert agg["cpu_cores"] == pytest.approx(0.4)
    assert agg["cpu_s_per_gbit"] == pytest.approx(0.1)


def _run(count: int, holds: bool) -> cap.LinksResult:
    links = tuple(link(name=f"link{i}", a=960.0 if holds else 500.0) for i in range(count))
    return cap.LinksResult(links=links, duration_s=10, load_avg_1m=1.0)


@pytest.mark.parametrize(("runs", "best"), [
    ([(1, True), (2, True), (4, True), (8, False)], 4),
    ([(1, True), (2, False), (4, True)], 1),  # a larger N holding after a smaller failed is noise
    ([(1, False), (2, False)], None),
    ([(8, True), (1, True)], 8),
])
def test_largest_holding_count(runs: list[tuple[int, bool]], best: int | None) -> None:
    assert cap.largest_holding([_run(n, ok) for n, ok in runs]) == best


@pytest.mark.parametrize("text", ["", "0", "1,x", "65", "-1,2"])
def test_bad_link_counts_are_refused(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_counts(text)


def test_link_counts_are_sorted_and_distinct() -> None:
    assert parse_counts("8,1,4,2,4") == [1, 2, 4, 8]


def test_report_names_every_link_and_the_verdict() -> None:
    result = cap.LinksResult(links=(link(), link(a=900.0, name="link2")), duration_s=10, load_avg_1m=2.0)
    lines = links_report_lines(result.as_dict())
    assert any(line.strip().startswith("link1") and line.rstrip().endswith("yes") for line in lines)
    assert any(line.strip().startswith("link2") and line.rstrip().endswith("NO") for line in lines)
    assert "does NOT hold" in lines[-1]


def test_a_link_that_does_not_hold_says_why_from_the_lines_counters() -> None:
    def lk(a: cap.DirectionLoad, b: cap.DirectionLoad) -> cap.LinkLoad:
        return cap.LinkLoad(link="link1", rate_mbps=1000.0, delay_ms=25.0, a_to_b=a, b_to_a=b, idle_rtt_ms=50.2,
                            loaded_rtt_ms=80.2, cpu_s=2.4, window_s=12.0, carried_ip_bits=24e9)

    def why(load: cap.LinkLoad) -> list[str]:
        lines = links_report_lines(cap.LinksResult(links=(load,), duration_s=10, load_avg_1m=3.5).as_dict())
        row = next(i for i, line in enumerate(lines) if line.strip().startswith("link1"))
        return [line.strip() for line in lines[row + 1:-1]]

    on_time = cap.DirectionLoad(960.0, 50.0, 300.0, 20.0, drops_queue=0)
    assert why(lk(on_time, on_time)) == []  # it holds: nothing to explain
    dropped = cap.DirectionLoad(877.0, 50.0, 110.0, 20.0, drops_queue=412)
    assert why(lk(on_time, dropped)) == [
        "b->a: 87.7 % carried, on time (p99 110 us); the line dropped 412 packets at its full queue, and TCP's "
        "recovery from the loss cost the rate"]
    starved = cap.DirectionLoad(600.0, 50.0, 250.0, 20.0, drops_queue=0)
    late = cap.DirectionLoad(960.0, 50.0, 2300.0, 20.0, drops_queue=0)
    assert why(lk(late, starved)) == [
        "a->b: departures late (p99 2300 us, above 1000 us)",
        "b->a: 60.0 % carried, on time (p99 250 us); the line dropped nothing: the flow's ends sent no more "
        "(load average 3.5)"]
    unknown = cap.DirectionLoad(600.0, 50.0, 250.0, 20.0)
    assert why(lk(unknown, on_time)) == [
        "a->b: 60.0 % carried, on time (p99 250 us); the line's queue counters did not say whether it dropped"]


@pytest.mark.parametrize("args", [["--links", "0"], ["--rate", "fast"], ["--duration", "1"]])
def test_cli_refuses_bad_options(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["bench", "links", *args])
    assert result.exit_code == 2, result.output


@pytest.mark.corridor_root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_one_loaded_link_reports_both_directions() -> None:
    result = cap.measure_links(1, rate_mbps=200.0, delay_ms=5.0, duration_s=2.0, omit_s=0.5)
    (lk,) = result.links
    # Both flows ran and crossed the delay line: each direction counted departures and carried bytes.
    assert lk.a_to_b.goodput_mbps > 0 and lk.b_to_a.goodput_mbps > 0
    assert lk.a_to_b.late_p99_us is not None and lk.b_to_a.late_p99_us is not None
    assert lk.carried_ip_bits > 0 and lk.cpu_s > 0
    assert lk.loaded_rtt_ms is not None and lk.idle_rtt_ms >= 10.0
    # the line's queue-drop counters were read over the window
    assert lk.a_to_b.drops_queue is not None and lk.a_to_b.drops_queue >= 0
    assert lk.b_to_a.drops_queue is not None and lk.b_to_a.drops_queue >= 0
    # the whole machine over the flows' steady state: busy, with the lines' share of it and the bits they carried
    agg = result.aggregate()
    assert 0 < agg["machine_busy_fraction"] <= 1 and agg["machine_cpus"] == os.cpu_count()
    assert result.busy["steady_ip_bits"] > 0 and result.busy["steady_lines_cpu_s"] > 0
    assert agg["machine_cpu_s_per_gbit"] > 0


# two readings of /proc/stat on a 2-CPU machine: 500 user, 300 system, 700 idle, 100 softirq, 400 stolen ticks
STAT_BEFORE = "cpu  1000 0 500 8000 10 0 100 400 0 0\ncpu0 500 0 250 4000 5 0 50 200 0 0\ncpu1 x\nintr 1\n"
STAT_AFTER = ("cpu  1500 0 800 8700 10 0 200 800 0 0\ncpu0 700 0 350 4200 5 0 50 500 0 0\n"
              "cpu1 800 0 450 4500 5 0 150 300 0 0\n")


def test_the_machines_busy_share_leaves_stolen_time_out() -> None:
    from corridor.links.fidelity import busy_between

    busy = busy_between(STAT_BEFORE, STAT_AFTER)
    assert busy["machine_busy_fraction"] == pytest.approx(900 / 1600)  # of the 2,000 ticks, 400 were the host's
    assert busy["machine_cpus"] == 2
    assert busy_between(STAT_BEFORE, STAT_BEFORE) == {}  # no time passed
    assert busy_between("", STAT_AFTER) == {}
    assert busy_between(STAT_BEFORE, "cpu  1 2 3\n") == {}


def _machine_result(busy_fraction: float, *, a: float = 800.0) -> cap.LinksResult:
    # 4 s of steady state on 2 CPUs; the lines used 4.8 CPU s of it and carried 20 Gbit
    busy = {"machine_busy_fraction": busy_fraction, "machine_cpus": 2.0, "steady_s": 4.0,
            "steady_lines_cpu_s": 4.8, "steady_ip_bits": 20e9}
    links = tuple(replace(link(a=a, name=name), a_to_b=replace(direction(a), drops_queue=0))
                  for name in ("link1", "link2"))
    return cap.LinksResult(links=links, duration_s=10, load_avg_1m=4.0, busy=busy)


def test_the_machine_figures_come_from_the_steady_state() -> None:
    agg = _machine_result(1.0).aggregate()
    assert agg["machine_cores_busy"] == pytest.approx(2.0)
    assert agg["steady_lines_cores"] == pytest.approx(1.2)
    assert agg["other_cores_busy"] == pytest.approx(0.8)
    assert agg["machine_cpu_s_per_gbit"] == pytest.approx(0.4)  # 8 CPU s over 20 Gbit
    assert agg["cpus_for_full_rate"] == pytest.approx(0.4 * 4)  # two links, both ways at 1 Gbit/s
    assert "machine_cores_busy" not in cap.LinksResult(links=(link(),), duration_s=10, load_avg_1m=1.0).aggregate()


def test_links_short_on_a_machine_with_no_idle_cpu_say_so_and_how_many_cpus_would_do() -> None:
    saturated = links_report_lines(_machine_result(0.99).as_dict())
    assert saturated[-2] == ("  machine  busy 99 % of 2 CPUs in the flows' steady state: the lines 1.20 cores, the "
                             "flows' ends and the kernel's work for them 0.78; 0.396 CPU s/Gbit in all")
    assert saturated[-1] == ("  the machine had no idle CPU while loaded, so lines and flows' ends were short of it "
                             "alike: at 0.396 CPU s/Gbit, every direction at its full rate would take about 1.6 CPUs")
    assert any(line.strip() == "a->b: 80.0 % carried, on time (p99 300 us); the line dropped nothing: the flow's ends "
               "sent no more, on a machine with no idle CPU (below)" for line in saturated)
    idle = links_report_lines(_machine_result(0.60).as_dict())  # short, with CPU to spare: no CPU sentence
    assert idle[-1].startswith("  machine  busy 60 %")
    assert any(line.strip().endswith("the flow's ends sent no more (load average 4.0)") for line in idle)
    held = links_report_lines(_machine_result(0.99, a=960.0).as_dict())  # holding on a busy machine: nothing to explain
    assert held[-1].startswith("  machine  busy 99 %")
