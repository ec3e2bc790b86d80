"""The step walk across an outage (corridor.analytic.stepwalk): which round of a training step a fault catches.

Pure model: no root, no network. The step is the faults experiment's
dp-allreduce (4 ranks on two sites, a 4 MB gradient in two buckets, ring
all-reduce, 100 ms of compute) on the two-site corridor (25 ms one way, 1 Gbit/s).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from corridor.analytic.faults import TIMER_SLACK, idle_retries_s, linux_rto_s
from corridor.analytic.stepwalk import (
    Outage,
    Path,
    StepPlan,
    _after_round_trips,
    calibrated,
    conservation_rounds,
    retries_from,
    slow_start_s,
    stall_s,
    walk_step,
)
from corridor.planning.plan import PathParams
from corridor.spec.faults import fault_impacts
from corridor.workloads.training.model import TcpAssumptions
from corridor.workloads.training.patterns import PATTERNS

SITES = ["remote", "city", "remote", "city"]
ONE_WAY_S = 0.025


def _path(a: str, b: str) -> PathParams:
    if a == b:
        return PathParams(a, b, 10_000.0, 0.05, 0.1, 0.0, 1_000_000, 0.0, ())
    return PathParams(a, b, 1000.0, ONE_WAY_S * 1e3, 2 * ONE_WAY_S * 1e3, 0.0, 6_250_000, 0.0, ("remote-city",))


class _Params:
    compute_s = 0.1
    forward_fraction = 1 / 3
    buckets = 2
    algorithm = "ring"
    grad_bytes = 4_000_000
    steps = 60
    pattern = "allreduce"


def _predicted() -> dict[str, Any]:
    return PATTERNS["allreduce"].predict(_Params(), SITES, _path, TcpAssumptions(cc="cubic"))


@pytest.fixture(scope="module")
def plan() -> StepPlan:
    return StepPlan.from_text(_predicted()["step_plan"])


def test_the_plan_is_the_models_own_step(plan: StepPlan) -> None:
    predicted = _predicted()
    # the walk without an outage is the model's step: same buckets, same rounds, same paths
    assert walk_step(plan) == (pytest.approx(predicted["step_time_s"], rel=0.03), "none")
    assert plan.buckets == 2 and plan.n_ranks == 4 and plan.compute_s == pytest.approx(0.1)
    [(flows, repeat)] = plan.rounds
    assert repeat == 6 and len(flows) == 4 and {size for _, _, size in flows} == {500_000}
    assert sum(path.wan for path in plan.paths.values()) == 2  # the ring crosses the corridor once each way
    assert StepPlan.from_json(plan.to_json()) == plan and StepPlan.from_text(plan.to_text()) == plan


def test_the_walk_is_stretched_to_the_measured_step(plan: StepPlan) -> None:
    # the agents' rounds cost more than the model's: a measured 0.34 s step puts a cut 0.23 s in inside the
    # second bucket's ring, where the model's own 0.25 s step has already ended
    assert stall_s(plan, Outage(0.229, 2.0))[0] == 0.0
    stretched = calibrated(plan, 0.34)
    assert walk_step(stretched)[0] == pytest.approx(0.34, abs=1e-6)
    assert stall_s(stretched, Outage(0.229, 2.0))[1] == "slow-start"
    # a median at or below the model's step leaves the plan alone
    assert calibrated(plan, 0.2) == plan


def test_a_malformed_plan_is_refused() -> None:
    data = json.loads(_predicted()["step_plan"])
    with pytest.raises(ValueError, match="without a path"):
        StepPlan.from_json({**data, "paths": data["paths"][:1]})
    with pytest.raises(KeyError):
        StepPlan.from_json({k: v for k, v in data.items() if k != "rounds"})
    with pytest.raises(ValueError):
        StepPlan.from_text("[1, 2]")


def test_retries_and_slow_start_follow_linux() -> None:
    rto = linux_rto_s(0.050)
    # nothing else outstanding: the schedule corridor.analytic.faults gives a chunk sent into an outage
    idle = [1.0 + r for r in idle_retries_s(0.050, segments=2)[:5]]
    assert retries_from(1.0, 1.0, 0.050, rto)[:5] == pytest.approx(idle)
    # ACKs of data sent 200 ms earlier lost: the timer pending for that data is due before the probe, so the
    # probe goes then (Linux caps the probe's timeout at the RTO's), and the timer follows one RTO later, doubling
    assert retries_from(1.0, 0.80, 0.050, rto)[:3] == pytest.approx([1.05, 1.30, 1.80])
    # 80 ms earlier: the probe (102 ms after the send) still comes first
    assert retries_from(1.0, 0.92, 0.050, rto)[:2] == pytest.approx([1.102, 1.352])
    # 346 segments from a one-segment window, ssthresh 173: 1+2+...+128 in eight round trips, the rest in the ninth
    took, window = slow_start_s(346, 0.050, cwnd=1.0, ssthresh=173.0)
    assert took == pytest.approx(8 * 0.050) and window == 257.0
    assert slow_start_s(346, 0.050, cwnd=400.0, ssthresh=173.0)[0] == 0.0


def test_a_cut_in_the_compute_catches_the_first_round_sent_into_it(plan: StepPlan) -> None:
    # cut 6 ms into the step: the first bucket's round goes out 67 ms in, 61 ms into the cut, and is retried
    # 0.102, 0.352, 0.852, 1.852, 3.852 s after: on time the 1.852 s retry is still in the cut; the 3.852 s one
    # gets through, then the 346-segment round needs nine round trips from a one-segment window (eight more than
    # a warm one) and the connection's next round one more
    on_time, via = stall_s(plan, Outage(0.006, 2.0))
    assert via == "slow-start"
    assert on_time == pytest.approx(3.852 + 8 * 0.050 + 0.050, abs=0.01)
    # an eighth late the 1.852 s retry comes through with the link, 1.94 s after the round went out
    late, _ = stall_s(plan, Outage(0.006, 2.0), slack=TIMER_SLACK)
    assert late == pytest.approx((2.006 - 0.0667) + 9 * 0.050, abs=0.01)


def test_a_protection_switch_is_a_probe_and_a_long_fast_recovery(plan: StepPlan) -> None:
    # 50 ms without light during the first bucket's ring, then 30 ms one way: the rounds handed to the link in
    # the outage (two of 346 segments here) are lost; the probe goes about 2 srtt after the last of them, and
    # fast recovery resends the 692 segments at packet conservation, one the first round trip and half a segment
    # more each after: 52 round trips of 60 ms, not one
    stall, via = stall_s(plan, Outage(0.1, 0.05, new_one_way_s=0.030, hold_s=3.0))
    assert via == "probe"
    assert conservation_rounds(692) == 52
    assert stall == pytest.approx(52 * 0.060 + 0.085, abs=0.03)
    # after the step: nothing to catch
    assert stall_s(plan, Outage(0.3, 2.0)) == (0.0, "none")


def test_a_recovery_longer_than_the_protection_path_returns_to_the_links_own_delay(plan: StepPlan) -> None:
    wan = Path(ONE_WAY_S, 1e9, True)
    switch = Outage(0.1, 0.05, new_one_way_s=0.030, hold_s=1.5)  # the protection path until 1.65 s
    # 52 round trips from 0.2 s: the 25 begun before 1.65 s take 60 ms, the 27 after it 50 ms
    assert _after_round_trips(0.2, 52, wan, switch) == pytest.approx(0.2 + 25 * 0.060 + 27 * 0.050)
    # a LAN path keeps its own delay throughout
    assert _after_round_trips(0.2, 3, Path(0.001, 1e9, False), switch) == pytest.approx(0.206)
    # the step walk: held for 3 s, every one of the recovery's 52 round trips is 60 ms; held for 1.5 s, the
    # 25-28 begun after the return (the two directions' recoveries start a little apart) are 10 ms shorter, and
    # without a protection path at all, every one is the link's own
    held, _ = stall_s(plan, Outage(0.1, 0.05, new_one_way_s=0.030, hold_s=3.0))
    short, via = stall_s(plan, switch)
    own, _ = stall_s(plan, Outage(0.1, 0.05))
    assert via == "probe"
    assert 25 * 0.010 <= held - short <= 28 * 0.010 + 0.005
    assert own < short < held


def test_packet_conservation_resends_a_lost_flight_over_many_round_trips() -> None:
    assert conservation_rounds(1) == 1 and conservation_rounds(2) == 2
    # 1 + 1.5 + 2 + ... : 73 round trips for the 1,381 segments a captured 50 ms outage dropped
    assert conservation_rounds(1381) == 73
    assert conservation_rounds(1381, growth=1.0) == 53  # 1 + 2 + ... + 52 = 1,378 falls three short


def test_training_rows_walk_the_step_when_the_prediction_carries_its_plan(plan: StepPlan) -> None:
    fault = {"kind": "fault", "point_id": "p", "event": "cut", "link": "remote-city", "fault_index": 0,
             "at_s": 12.0, "outage_s": 2.0, "t_monotonic_s": 112.006, "base_delay_ms": 25.0,
             "base_rate_mbps": 1000.0, "time_scale": 1.0}
    steps = [{"kind": "train_step", "workload": "dp", "step": i, "rank": 0, "t_start_s": 110.0 - 0.27 * (9 - i),
              "step_time_s": 0.27, "point_id": "p"} for i in range(10)]
    steps.append({"kind": "train_step", "workload": "dp", "step": 10, "rank": 0, "t_start_s": 112.0,
                  "step_time_s": 0.27 + 4.3, "point_id": "p"})
    prediction = {"kind": "prediction", "workload": "dp", "point_id": "p", "predicted.step_plan": plan.to_text(),
                  "predicted.wan_bytes": 12_000_000, "model_step_time_s": 0.253}

    class _Run:
        records = [fault, *steps, prediction]

    [row] = fault_impacts(_Run())
    assert row["event_into_step_s"] == pytest.approx(0.006)
    assert row["model_sender"] == "step-walk" and row["model_via"] == "slow-start"
    # the walk is stretched to the point's median step (0.27 s) before the cut is placed on it
    stretched = calibrated(plan, 0.27)
    assert row["model_round_overhead_s"] == pytest.approx(stretched.overhead_s) and stretched.overhead_s > 1e-3
    assert row["model_stall_s"] == pytest.approx(stall_s(stretched, Outage(0.006, 2.0))[0])
    assert row["model_stall_alt_s"] == pytest.approx(stall_s(stretched, Outage(0.006, 2.0), slack=TIMER_SLACK)[0])
    # a time-scaled point keeps the single-transmission model (the walk's clock is the unscaled one)
    [scaled] = fault_impacts(type("R", (), {"records": [{**fault, "time_scale": 2.0}, *steps, prediction]})())
    assert scaled["model_sender"] != "step-walk"
