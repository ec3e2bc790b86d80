"""Verdicts: measured figures against the local baseline and the SLO, in words; resume gives the same table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_experiment_fakes import CALLS, FAKE_EXPERIMENT, run_fake, use_fakes  # noqa: F401

from corridor.results.rundir import read_run
from corridor.results.verdict import (
    NO_DATA,
    compute_verdicts,
    format_table,
    step_times_s,
    to_csv,
    to_markdown,
)
from corridor.spec.experiment import DOES_NOT_TOLERATE, MARGINAL, TOLERATES, InferenceSlo
from corridor.workloads.inference.kind import InferenceKind
from corridor.workloads.training.kind import TrainingKind

pytestmark = pytest.mark.usefixtures("use_fakes")


def _request(ttft_s: float, tpot_s: float = 0.02, ok: bool = True) -> dict[str, Any]:
    return {"kind": "request", "ttft_s": ttft_s if ok else None, "tpot_s": tpot_s if ok else None, "ok": ok,
            "error": None if ok else "timeout", "point_id": "p"}


def test_inference_measurement_uses_the_slo_percentile_and_counts_goodput() -> None:
    ttfts = [0.01 * i for i in range(1, 31)]  # 10 .. 300 ms
    records = [_request(t) for t in ttfts] + [_request(0, ok=False)]
    slo = InferenceSlo(ttft_ms=250, percentile=90)
    kind = InferenceKind()
    samples = kind.samples(records, slo)
    j = kind.judge(slo, samples, samples, baseline_label="local")
    assert j.value == pytest.approx(np.percentile([t * 1e3 for t in ttfts], 90))
    assert j.extra["goodput"] == pytest.approx(25 / 31)  # 10..250 ms are within; one failed request counts against
    assert j.extra["failed"] == 1 and j.n == 31


def test_training_step_is_the_slowest_rank_without_warm_up() -> None:
    records = []
    for step, times in enumerate([(9.0, 9.0), (1.0, 2.0), (1.0, 4.0)]):
        for rank, t in enumerate(times):
            records.append({"kind": "train_step", "point_id": "p", "step": step, "rank": rank, "step_time_s": t,
                            "compute_time_s": 0.5})
    assert step_times_s(records) == [2.0, 4.0]
    samples = TrainingKind().samples(records, None)
    assert samples["step_time_s"] == [2.0, 4.0]
    assert samples["utilisation"] == [pytest.approx(3.0 / 26.0)]


def _steps(times: list[float], syncs: set[int] = frozenset(), point: str = "p") -> list[dict[str, Any]]:
    return [{"kind": "train_step", "point_id": point, "step": i, "rank": 0, "step_time_s": t,
             "compute_time_s": 0.1, "outer_sync": i in syncs} for i, t in enumerate(times)]


def test_outer_syncs_are_judged_on_the_mean_step_where_a_median_would_never_see_them() -> None:
    """DiLoCo-like: 99 compute steps and one 2 s outer sync remote, a 50 ms one local: +18 % on the mean."""
    from corridor.spec.experiment import TrainingSlo

    kind, slo = TrainingKind(), TrainingSlo(max_slowdown=1.10, marginal_slowdown=1.50)
    rng = np.random.default_rng(1)
    compute = [0.1 + float(x) for x in rng.uniform(0, 0.002, 100)]
    remote = kind.samples(_steps(compute[:99] + [2.0], {99}), slo)
    local = kind.samples(_steps(compute[:99] + [0.15], {99}, "q"), slo)
    assert remote["outer_sync"][-1] == 1.0 and sum(remote["outer_sync"]) == 1
    j = kind.judge(slo, remote, local, baseline_label="local")
    assert j.metric == "mean step time" and j.reason.startswith("mean step")
    assert j.value == pytest.approx(sum(compute[1:99] + [2.0]) / 99 * 1e3)  # the warm-up step dropped
    assert j.ratio == pytest.approx(j.value / j.baseline)
    assert 1.10 < j.ratio_low <= j.ratio <= j.ratio_high < 1.50 and j.verdict == MARGINAL
    # the same steps without the sync flag are judged on their median, which sees only compute
    plain = kind.judge(slo, kind.samples(_steps(compute[:99] + [2.0]), slo),
                       kind.samples(_steps(compute[:99] + [0.15], point="q"), slo), baseline_label="local")
    assert plain.metric == "median step time" and plain.verdict == TOLERATES


def test_leaving_out_stalled_steps_keeps_the_syncs_and_their_weight() -> None:
    """A sync step's comm thread waits for a CPU and reads as stalled; leaving it out would leave no sync."""
    from corridor.spec.experiment import TrainingSlo

    kind, slo = TrainingKind(), TrainingSlo(max_slowdown=1.10, marginal_slowdown=1.50)
    remote_records = _steps([0.1] * 99 + [2.0], {99})
    for r in remote_records[10:40] + remote_records[99:]:  # thirty ordinary steps and the sync step stalled
        r["sched_stall_s"] = 0.05
    j = kind.judge(slo, kind.samples(remote_records, slo), kind.samples(_steps([0.1] * 100, {99}, "q"), slo),
                   baseline_label="local")
    assert "without the 30 ordinary steps the host stalled: +19 %" in j.reason
    assert j.extra["slowdown_without_stalls"] == pytest.approx(j.ratio)  # the same steps in the same mix


def test_a_scale_models_bytes_are_set_against_its_full_scale_rate() -> None:
    from corridor.spec.experiment import TrainingSlo
    from corridor.workloads.training.kind import explain_training

    kind, slo = TrainingKind(), TrainingSlo()
    records = _steps([0.1] * 9 + [0.3], {9})
    for r in records:
        r.update(scale=3.5, wan_bytes=35_000_000 if r["outer_sync"] else 0)
    samples = kind.samples(records, slo)
    j = kind.judge(slo, samples, kind.samples(_steps([0.1] * 10, {9}, "q"), slo), baseline_label="local")
    text = explain_training(j, samples, {}, {"max_rtt_ms": 10.0, "min_rate_mbps": 400.0})
    # 35 MB over 9 steps, half each way, at 3.5 x 400 Mbit/s
    assert "3.9 MB cross the WAN: 11 ms at 1,400 Mbit/s (full scale; 1/3.5 emulated)" in text, text


def test_a_strata_mean_keeps_each_kind_of_step_in_its_count() -> None:
    from corridor import stats

    ordinary, syncs = [0.1 + 0.001 * (i % 5) for i in range(99)], [2.0]
    strata = stats.bootstrap_strata_mean([ordinary, syncs])
    plain = stats.bootstrap(ordinary + syncs, q=None, stat="mean")
    assert strata.value == pytest.approx(plain.value) and strata.n == 100
    # a plain resample draws 0, 1, 2... syncs; the design has exactly one, so only the ordinary steps spread it
    assert strata.high - strata.low < 0.002 < plain.high - plain.low
    assert strata.low <= strata.value <= strata.high


def test_verdicts_of_a_run(tmp_path: Path) -> None:
    run = read_run(run_fake(tmp_path))
    verdicts = compute_verdicts(run)
    by = {(v.workload, v.corridor.split(" km")[0] + " km"): v for v in verdicts}
    # dp pays 2 round trips per step: RTT 9.8 ms -> about +20 %, RTT 32 ms -> about +64 %
    assert by[("dp", "1,000 km")].verdict == MARGINAL
    assert by[("dp", "3,268 km")].verdict == DOES_NOT_TOLERATE
    assert by[("diloco", "3,268 km")].verdict == TOLERATES
    assert by[("chat", "3,268 km")].verdict == TOLERATES
    dp = by[("dp", "3,268 km")]
    assert dp.reason.startswith("median step ") and "vs 101 ms local" in dp.reason
    assert "over the 50 % limit" in dp.reason
    # the slowdown's interval is reported and lies wholly over the limit
    assert dp.slowdown_ci_low is not None and dp.slowdown_ci_high is not None
    assert 1.5 < dp.slowdown_ci_low <= dp.slowdown <= dp.slowdown_ci_high  # type: ignore[operator]
    assert dp.n == 3 and dp.n_baseline == 3  # 4 steps, the warm-up step dropped
    assert dp.model == pytest.approx((0.1 + 2 * 0.032026) * 1e3, rel=1e-3)
    assert dp.stop_km == pytest.approx(522, rel=0.01)  # model: 1.1 x 100.2 ms reached at RTT 5.1 ms
    chat = by[("chat", "3,268 km")]
    assert chat.reason.startswith("TTFT p99 ") and "+32 ms vs local" in chat.reason
    assert "within the 250 ms SLO" in chat.reason
    assert chat.ci_low is not None and chat.ci_high is not None
    assert chat.ci_low <= chat.measured <= chat.ci_high < 0.8 * 250  # type: ignore[operator]
    mixed = [v for v in verdicts if v.kind == "tenants"]
    assert {v.placement for v in mixed} == {"local", "urumqi-serves-shanghai"}
    assert all(v.baseline_label == "alone" and v.measured > v.baseline for v in mixed)  # type: ignore[operator]
    assert all("vs alone" in v.reason for v in mixed)


def test_slo_breach_is_reported_in_words(tmp_path: Path) -> None:
    text = FAKE_EXPERIMENT.replace("slo: {ttft: 250ms, tpot: 100ms}", "slo: {ttft: 70ms, tpot: 100ms}")
    verdicts = compute_verdicts(read_run(run_fake(tmp_path, text=text)))
    chat = next(v for v in verdicts if v.workload == "chat" and v.corridor.startswith("3,268"))
    assert chat.verdict == DOES_NOT_TOLERATE
    assert "over the 70 ms SLO" in chat.reason and "goodput" in chat.reason


def test_resume_after_interrupt_gives_the_same_table_and_runs_no_point_twice(tmp_path: Path) -> None:
    full = format_table(compute_verdicts(read_run(run_fake(tmp_path, "full"))))
    calls_full = list(CALLS["log"])
    CALLS.update(count=0, interrupt_after=5, log=[])
    with pytest.raises(KeyboardInterrupt):
        run_fake(tmp_path, "cut")
    partial = read_run(str(tmp_path / "cut"))
    assert partial.summary is not None and partial.summary["status"] == "interrupted"
    assert 0 < len(partial.points) < 12
    CALLS.update(interrupt_after=None)
    run_fake(tmp_path, "cut", resume=True)
    resumed = read_run(str(tmp_path / "cut"))
    assert format_table(compute_verdicts(resumed)) == full
    markers = resumed.of_kind("point")
    assert len(markers) == len({m["point_id"] for m in markers}) == 12
    assert {m["session"] for m in markers} == {1, 2}
    sessions = resumed.of_kind("run_session")
    assert [s["resume"] for s in sessions] == [False, True]
    assert sessions[1]["points_skipped"] == len(partial.points)
    # every workload call of the uninterrupted run happened once more, plus only the interrupted call
    assert len(CALLS["log"]) == len(calls_full) + 1
    assert resumed.summary is not None and resumed.summary["status"] == "complete"


def test_a_failed_workload_is_kept_as_a_failed_point_with_no_data(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import test_experiment_fakes as fakes

    from corridor.errors import AgentError

    original = fakes._infer_run

    def broken(net: Any, params: Any, **kwargs: Any) -> list[dict[str, Any]]:
        if net.plan.wan_links:
            raise AgentError("client cty-cli1 did not answer within 5 s")
        return original(net, params, **kwargs)

    monkeypatch.setattr(fakes.sys.modules["corridor_fake_inference"], "run", broken)
    run = read_run(run_fake(tmp_path))
    failed = [p for p in run.points.values() if p["status"] == "failed"]
    assert failed and all("cty-cli1" in p["error"] for p in failed)
    chat = [v for v in compute_verdicts(run) if v.workload == "chat"]
    assert chat and all(v.verdict == NO_DATA and "cty-cli1" in v.reason for v in chat)


def test_tables_in_csv_and_markdown(tmp_path: Path) -> None:
    verdicts = compute_verdicts(read_run(run_fake(tmp_path)))
    csv_text = to_csv(verdicts)
    assert csv_text.splitlines()[0].startswith("workload,group,kind")
    assert len(csv_text.splitlines()) == len(verdicts) + 1
    md = to_markdown(verdicts)
    assert md.startswith("| workload | placement |") and md.count("\n") == len(verdicts) + 2
    assert json.loads(json.dumps([v.as_dict() for v in verdicts]))


def test_a_point_whose_link_misbehaved_is_not_judged(tmp_path: Path) -> None:
    run_dir = Path(run_fake(tmp_path))
    records = run_dir / "records.jsonl"
    lines = []
    for line in records.read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "point" and record.get("group") == "dp" and record.get("placement") != "local":
            record["link_health"] = {"ok": False, "links": {"wan-rem-cty": {"ok": False, "fatal": True}}}
        lines.append(json.dumps(record))
    records.write_text("\n".join(lines) + "\n")
    dp = [v for v in compute_verdicts(read_run(str(run_dir))) if v.workload == "dp"]
    assert dp and all(v.verdict == NO_DATA for v in dp)
    assert all("not judged" in v.reason and "wan-rem-cty misbehaved" in v.reason for v in dp)


def test_the_summary_paragraph_is_written_from_the_verdicts(tmp_path: Path) -> None:
    from corridor.results.verdict import summary_paragraph

    verdicts = compute_verdicts(read_run(run_fake(tmp_path)))
    text = summary_paragraph(verdicts)
    dp_far = next(v for v in verdicts if v.workload == "dp" and v.corridor.startswith("3,268"))
    assert f"dp ({(dp_far.slowdown - 1) * 100:+.0f} % median step time)" in text  # type: ignore[operator]
    assert "do not tolerate it" in text and "tolerate remote placement" in text
    assert summary_paragraph([]).startswith("No workload has a verdict yet")


def test_a_rows_interval_holds_the_spread_between_its_repetitions() -> None:
    """Four repetitions of a lossy point at the levels four rounds of the quickstart's dp-allreduce read (0.95,
    0.87, 0.88 and 1.94 s): pooled as independent steps, the slowdown's interval was a narrow band about the
    three alike; resampled by repetition it reaches the fourth draw's level."""
    from corridor import stats
    from corridor.spec.experiment import TrainingSlo

    kind, slo = TrainingKind(), TrainingSlo(max_slowdown=1.10, marginal_slowdown=1.50)
    rng = np.random.default_rng(4)
    remote_records: list[dict[str, Any]] = []
    local_records: list[dict[str, Any]] = []
    for rep, level in enumerate((0.95, 0.87, 0.88, 1.94)):
        remote_records += _steps(list(level + rng.normal(0, 0.03, 20)), point=f"remote|r{rep}")
        local_records += _steps(list(0.13 + rng.normal(0, 0.005, 20)), point=f"local|r{rep}")
    remote, local = kind.samples(remote_records, slo), kind.samples(local_records, slo)
    assert remote["repetition"] == [float(rep) for rep in range(4) for _ in range(19)]  # warm-up steps left out
    j = kind.judge(slo, remote, local, baseline_label="local")
    pooled = stats.bootstrap_ratio(remote["step_time_s"], local["step_time_s"], q=50)
    assert j.ratio == pytest.approx(pooled.value)
    assert pooled.high < 1.0 / 0.13  # the pooled band stays about the three alike draws
    assert j.ratio_high > 1.5 / 0.13
    assert j.verdict == DOES_NOT_TOLERATE  # every draw is far over the limit: the words do not change
