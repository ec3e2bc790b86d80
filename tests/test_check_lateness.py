"""corridor check judges departure lateness: a userspace link late at p99 during its throughput test fails.

Pure: the network is a fake whose delay-line stats advance between reads, the
tools' output is captured, so no root and no namespace is needed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from corridor.errors import EmulationError
from corridor.links.delayline import DirectionStats
from corridor.links.userspace import late_percentile_between
from corridor.planning.planner import build_plan
from corridor.spec.topospec import load_topology
from corridor.tools import check
from corridor.tools.check import CheckOptions, Tolerances, lateness_measurement

DATA = Path(__file__).parent / "data"


def direction(lateness_s: list[float]) -> dict[str, Any]:
    """One direction's stats as the delay line publishes them after departures this late."""
    stats = DirectionStats()
    for late in lateness_s:
        stats.record_send(late, 0.025, 1, 1500)
    return {"late_hist_us": stats.late_histogram(), "late_us_p99": stats.late_percentile_us(0.99)}


def test_the_checks_lateness_row_names_steal_of_one_percent_or_more_and_still_judges_the_link() -> None:
    late = direction([0.0002] * 100 + [0.003] * 5)
    row = lateness_measurement("l", "a_to_b", None, late, Tolerances(),
                               steal={"steal_fraction": 0.1, "steal_fraction_max_cpu": 0.15})
    assert row is not None and not row.ok and "CPU steal 10.0 % (worst CPU 15.0 %) meanwhile" in row.detail
    quiet = lateness_measurement("l", "a_to_b", None, late, Tolerances(),
                                 steal={"steal_fraction": 0.001, "steal_fraction_max_cpu": 0.004})
    assert quiet is not None and "steal" not in quiet.detail


def test_window_percentile_ignores_lateness_before_the_window() -> None:
    before = direction([0.05] * 100)  # 50 ms late, before the test
    after = direction([0.05] * 100 + [0.000_05] * 1000)
    assert after["late_us_p99"] == 51_000  # the lifetime figure is dominated by the old stall
    assert late_percentile_between(before, after, 0.99) == 60.0
    assert late_percentile_between(None, after, 0.99) == 51_000.0


def test_window_without_departures_has_no_percentile() -> None:
    same = direction([0.001])
    assert late_percentile_between(same, same, 0.99) is None


@pytest.mark.parametrize("bad", [
    {"late_hist_us": "10:3"},
    {"late_hist_us": [[10, -1]]},
    {"late_hist_us": [[10]]},
    {"late_hist_us": [["x", 3]]},
    {"late_hist_us": [[10, True]]},
])
def test_malformed_histograms_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(EmulationError):
        late_percentile_between(None, bad, 0.99)


def test_histogram_going_backwards_is_refused() -> None:
    with pytest.raises(EmulationError, match="restarted"):
        late_percentile_between(direction([0.001] * 5), direction([0.001]), 0.99)


def test_lateness_measurement_against_the_contract() -> None:
    tol = Tolerances()
    good = lateness_measurement("l", "a_to_b", None, direction([0.0002] * 200), tol)
    bad = lateness_measurement("l", "a_to_b", None, direction([0.0002] * 100 + [0.003] * 5), tol)
    assert good is not None and good.ok and good.measured == 210.0
    assert bad is not None and not bad.ok and bad.measured is not None and 3000 <= bad.measured <= 3010
    assert bad.metric == "late_p99_a_to_b" and bad.high == tol.late_p99_us
    # a host that itself stalled at least as long explains the late departures: reported, not failed...
    stalled = lateness_measurement("l", "a_to_b", None, direction([0.0002] * 100 + [0.003] * 5), tol,
                                   host_stall_ms=4.0)
    assert stalled is not None and stalled.ok and "host itself stalled up to 4.0 ms" in stalled.detail
    # ...but a shorter host stall does not excuse a later departure
    short = lateness_measurement("l", "a_to_b", None, direction([0.0002] * 100 + [0.003] * 5), tol,
                                 host_stall_ms=1.5)
    assert short is not None and not short.ok and short.high == tol.late_p99_us
    # netem (no histogram): nothing to judge
    assert lateness_measurement("l", "a_to_b", None, {"packets": 3}, tol) is None
    assert lateness_measurement("l", "a_to_b", None, None, tol) is None


class _UnstalledHost:
    """A host that never stalls, so every late departure in these fakes is the delay line's own."""

    def __init__(self, **_: Any) -> None:
        pass

    def __enter__(self) -> _UnstalledHost:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def summary(self, *, absorbed_ms: float) -> dict[str, float]:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "stalled_fraction": 0.0}


class FakeNet:
    """A running two-site network whose delay line departs 1000 packets per throughput test.

    ``late_s`` gives, per direction, how late those departures are: one figure for every test,
    or one per attempt in turn.
    """

    def __init__(self, late_s: dict[str, float | list[float]]) -> None:
        self.plan = build_plan(load_topology("two-site"))
        self.late_s = {label: late if isinstance(late, list) else [late] * 5 for label, late in late_s.items()}
        self.sent: dict[str, list[float]] = {"a_to_b": [0.05] * 50, "b_to_a": [0.05] * 50}
        self.tests: list[str] = []

    def run(self, host: str, argv: list[str], *, timeout_s: float = 0) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 0, (DATA / "ping-two-site.txt").read_text(), "")

    def throughput_test(self, raw_key: tuple[str, str, str]) -> None:
        label = raw_key[2].removesuffix("-again")
        self.tests.append(raw_key[2])
        self.sent[label] += [self.late_s[label].pop(0)] * 1000

    def link_stats(self, name: str) -> dict[str, Any]:
        return {label: direction(sent) for label, sent in self.sent.items()}


def _check(monkeypatch: pytest.MonkeyPatch, net: FakeNet) -> list[check.Measurement]:
    link = net.plan.wan_links[0]

    def iperf_pair(*_a: Any, raw_key: tuple[str, str, str], **_k: Any) -> str:
        net.throughput_test(raw_key)
        return "iperf3 output"

    monkeypatch.setattr(check, "iperf_pair", iperf_pair)
    # every attempt carries the link's expected goodput, so only lateness can ask for another
    monkeypatch.setattr(check, "parse_iperf_tcp", lambda _out: check.expected_tcp_goodput_mbps(link.a_to_b))
    monkeypatch.setattr(check.fidelity, "TimerLateness", _UnstalledHost)  # the fake's lateness is the delay line's
    return check.check_link(net, link, CheckOptions(measure_loss=False))


@pytest.mark.parametrize(("late_a", "late_b", "failing"), [
    (0.0001, 0.0001, []),
    (0.0001, 0.004, ["late_p99_b_to_a"]),
    (0.002, 0.0001, ["late_p99_a_to_b"]),
])
def test_check_link_fails_a_late_direction(monkeypatch: pytest.MonkeyPatch, late_a: float, late_b: float,
                                           failing: list[str]) -> None:
    net = FakeNet({"a_to_b": late_a, "b_to_a": late_b})
    out = _check(monkeypatch, net)
    lateness = [m for m in out if m.metric.startswith("late_p99")]
    assert [m.metric for m in lateness] == ["late_p99_a_to_b", "late_p99_b_to_a"]
    # The 50 ms stall before the test is outside its window and does not count.
    assert all(m.measured is not None and m.measured < 10_000 for m in lateness)
    assert [m.metric for m in lateness if not m.ok] == failing
    # a late direction was measured twice, late both times, and says so; an on-time one once
    for m in lateness:
        label = m.metric.removeprefix("late_p99_")
        assert net.tests.count(f"{label}-again") == (0 if m.ok else 1)
        assert ("first attempt p99" in m.detail) == (not m.ok)


def test_a_window_late_once_is_measured_again_and_the_second_window_is_judged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = FakeNet({"a_to_b": [0.004, 0.0001], "b_to_a": 0.0001})
    out = _check(monkeypatch, net)
    rows = {m.metric: m for m in out}
    assert net.tests == ["a_to_b", "a_to_b-again", "b_to_a"]
    late = rows["late_p99_a_to_b"]
    assert late.ok and late.measured is not None and late.measured < 1000
    assert "first attempt p99 4" in late.detail and "measured again" in late.detail
    # the throughput row says it was measured again too, though its first figure was in bounds
    assert "measured again" in rows["tcp_a_to_b"].detail and rows["tcp_a_to_b"].ok
    assert "measured again" not in rows["late_p99_b_to_a"].detail
