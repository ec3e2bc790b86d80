"""The bulk-transfer kind: parameters and SLO, its model, its verdict, and a real run across two-site."""

from __future__ import annotations

from pathlib import Path

import pytest

from corridor.errors import SpecError
from corridor.planning.points import hosts_for, plan_for
from corridor.spec.experiment import load_experiment
from corridor.workloads import registry
from corridor.workloads.bulk import BulkKind, BulkParams, BulkSlo, predict_completion_s, validate
from corridor.workloads.kind import DOES_NOT_TOLERATE, INCONCLUSIVE, MARGINAL, TOLERATES

EXPERIMENT = """
name: bulk-test
topology: two-site
overrides: {rate: 200Mbit}
placements:
  - name: local
  - name: urumqi-to-shanghai
    servers: [remote]
    clients: [city]
workloads:
  - name: checkpoint
    type: checkpoint-replication
    params: {size: 8MB, streams: 2, transfers: 3}
    slo: {deadline: 2s}
    timeout: 60s
"""


def _experiment(tmp_path: Path) -> Path:
    path = tmp_path / "bulk.yaml"
    path.write_text(EXPERIMENT)
    return path


def test_the_kind_is_registered_and_owns_its_patterns() -> None:
    assert isinstance(registry.KINDS["bulk"], BulkKind)
    assert registry.pattern_kinds()["checkpoint-replication"] == "bulk"
    assert registry.pattern_kinds()["dataset-staging"] == "bulk"


@pytest.mark.parametrize(("params", "message"), [
    ({"pattern": "checkpoint-replication"}, "size: is required"),
    ({"pattern": "checkpoint-replication", "size": "32Mb"}, "bits"),
    ({"pattern": "checkpoint-replication", "size": "1GB", "streams": 0}, "streams"),
    ({"pattern": "checkpoint-replication", "size": "1GB", "window": 3}, "unknown parameter"),
    ({"pattern": "checkpoint-replication", "size": "1GB", "cc": "vegas"}, "cc"),
])
def test_bad_parameters_are_refused(params: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        validate(params, where="exp.yaml: workloads[0].params")


def test_experiment_loads_and_places_source_and_sink(tmp_path: Path) -> None:
    exp = load_experiment(str(_experiment(tmp_path)))
    w = exp.workload("checkpoint")
    assert w.kind == "bulk" and w.params == BulkParams("checkpoint-replication", 8_000_000, 2, 3)
    assert w.slo == BulkSlo(deadline_s=2.0)
    remote = exp.placement("urumqi-to-shanghai")
    plan = plan_for(exp, remote, exp.sweep.points()[0])
    hosts = hosts_for(plan, remote, w)
    assert plan.host(hosts["source"]).site == "remote" and plan.host(hosts["sink"]).site == "city"


def test_model_is_serialisation_plus_slow_start_and_grows_with_distance() -> None:
    params = BulkParams("checkpoint-replication", 100_000_000, 4, 1)
    near = predict_completion_s(params, rate_mbps=1000, one_way_s=0.001, rtt_s=0.002)
    far = predict_completion_s(params, rate_mbps=1000, one_way_s=0.025, rtt_s=0.05)
    serial = 100e6 * 8 / 1e9
    assert serial < near < serial * 1.1
    assert far > near + 0.05  # at least the handshake and the first slow-start rounds at 50 ms


@pytest.mark.parametrize(("times", "expected"), [
    ([1.0, 1.02, 0.98, 1.01, 0.99], TOLERATES),  # wholly inside 80 % of a 2 s deadline
    ([1.75, 1.8, 1.7, 1.78, 1.72], MARGINAL),
    ([3.0, 3.1, 2.9, 3.05, 2.95], DOES_NOT_TOLERATE),
    ([1.0, 3.0, 1.5, 2.5, 1.9], INCONCLUSIVE),  # spans both limits
])
def test_judged_on_the_interval_of_the_median_completion(times: list[float], expected: str) -> None:
    kind = BulkKind()
    j = kind.judge(BulkSlo(deadline_s=2.0), {"completion_s": times}, {"completion_s": [0.5, 0.5, 0.5]},
                   baseline_label="local")
    assert j.verdict == expected
    if expected == INCONCLUSIVE:
        assert "would decide" in j.reason


@pytest.mark.corridor_root
def test_checkpoint_replication_across_two_site(tmp_path: Path) -> None:
    from corridor.results.rundir import read_run
    from corridor.results.verdict import compute_verdicts
    from corridor.workloads.runner import run_experiment

    exp = load_experiment(str(_experiment(tmp_path)))
    run_experiment(exp, str(tmp_path / "run"))
    run = read_run(str(tmp_path / "run"))
    assert all(p.get("status") == "ok" for p in run.points.values()), [p.get("error") for p in run.points.values()]
    [v] = compute_verdicts(run)
    assert v.n == 3 and v.n_baseline == 3
    assert v.measured is not None and v.model is not None and v.baseline is not None
    # 8 MB at 200 Mbit/s is 0.32 s of serialisation; 50 ms RTT adds the handshake and slow start
    assert 320 < v.measured < 2000 and v.measured > v.baseline
    assert abs(v.model - v.measured) / v.measured < 0.35, (v.model, v.measured)
