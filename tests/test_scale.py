"""Scale-model emulation: the factor, the scaled plan and params, and records reported at full scale."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from corridor.analytic.prediction import predict_workload
from corridor.errors import SpecError
from corridor.planning.points import expand_points, params_for, plan_for, scale_for
from corridor.planning.scale import FIT_RATE_MBPS, auto_scale, full_scale_record, plan_scale, scale_plan, scaled_params
from corridor.spec.experiment import load_experiment, parse_experiment
from corridor.workloads import registry


def _doc(**extra: Any) -> dict[str, Any]:
    return {
        "topology": "two-site",
        "overrides": {"rate": "400Gbit"},
        "placements": [{"name": "local"}, {"name": "remote", "servers": ["remote"], "clients": ["city"],
                                          "ranks": ["remote", "city"]}],
        "workloads": [
            {"name": "dp", "type": "allreduce", "params": {"grad_size": "2GB", "activation_size": "8MB",
                                                          "socket_buffer": "64MB", "compute_time": "100ms"}},
            {"name": "copy", "type": "checkpoint-replication", "params": {"size": "40GB"}},
            {"name": "pd", "type": "disagg", "params": {"model": "70b", "prompt_tokens": 1024}},
        ],
        **extra,
    }


def test_auto_scale_fits_the_fastest_link_and_reads_plainly() -> None:
    assert auto_scale([400_000.0, 100_000.0]) == 270.0  # 266.7 rounded up to two figures
    assert 400_000.0 / auto_scale([400_000.0]) <= FIT_RATE_MBPS
    assert auto_scale([1000.0]) == 1.0  # already fits: full scale
    assert auto_scale([]) == 1.0
    assert auto_scale([15_000.0]) == 10.0


@pytest.mark.parametrize(("value", "message"), [
    (0.5, r"scale: must be auto or a number from 1"),
    ("fast", r"scale: must be auto or a number"),
    (True, r"scale: must be auto"),
    (2e6, r"scale: must be auto or a number from 1 to 1e\+06"),
])
def test_scale_key_refuses_bad_values(value: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_experiment(_doc(scale=value), path="x.yaml")


def test_scale_is_recorded_only_when_given() -> None:
    assert "scale" not in parse_experiment(_doc(), path="x.yaml").as_dict()
    assert parse_experiment(_doc(scale="auto"), path="x.yaml").as_dict()["scale"] == "auto"
    assert parse_experiment(_doc(scale=100), path="x.yaml").as_dict()["scale"] == 100.0


def test_plan_for_divides_rates_and_queues_but_keeps_delays() -> None:
    exp = parse_experiment(_doc(scale="auto"), path="x.yaml")
    assert scale_for(exp) == 270.0
    remote = exp.placement("remote")
    sweep = expand_points(exp)[0].sweep
    plan = plan_for(exp, remote, sweep)
    full = scale_plan(plan, 1.0)
    assert plan_scale(plan) == 270.0
    link = plan.wan_links[0]
    assert link.a_to_b.rate_mbps == pytest.approx(400_000 / 270)
    assert link.a_to_b.delay_ms == 25.0 and link.a_to_b.jitter_ms == full.wan_links[0].a_to_b.jitter_ms
    unscaled = parse_experiment(_doc(), path="x.yaml")
    base = plan_for(unscaled, unscaled.placement("remote"), sweep).wan_links[0]
    assert link.a_to_b.queue_bytes == pytest.approx(base.a_to_b.queue_bytes / 270, abs=1)
    assert plan.sites[0].host_rate_mbps == pytest.approx(
        plan_for(unscaled, unscaled.placement("remote"), sweep).sites[0].host_rate_mbps / 270)


def test_every_kind_scales_its_sizes_and_keeps_its_times() -> None:
    exp = parse_experiment(_doc(scale=100), path="x.yaml")
    plan = plan_for(exp, exp.placement("remote"), expand_points(exp)[0].sweep)
    dp = params_for(exp.workload("dp"), plan)
    assert (dp.grad_bytes, dp.activation_bytes, dp.sock_buf_bytes) == (20_000_000, 80_000, 640_000)
    assert dp.compute_s == exp.workload("dp").params.compute_s
    assert params_for(exp.workload("copy"), plan).size_bytes == 400_000_000
    pd_full, pd = exp.workload("pd").params, params_for(exp.workload("pd"), plan)
    assert pd.shape.kv_bytes_per_token == round(pd_full.shape.kv_bytes_per_token / 100)
    assert pd.prefill_s(1024) == pd_full.prefill_s(1024) and pd.tpot_ms == pd_full.tpot_ms


def test_predicted_times_are_the_same_at_two_scales() -> None:
    """The model's step time of the scale model equals full scale's (the invariance the emulation relies on)."""
    times = []
    for factor in (None, 10, 40):
        exp = parse_experiment(_doc(**({"scale": factor} if factor else {})), path="x.yaml")
        w = exp.workload("dp")
        plan = plan_for(exp, exp.placement("remote"), expand_points(exp)[0].sweep)
        hosts = registry.get(w.kind).hosts(plan, exp.placement("remote"), w)
        times.append(predict_workload(w, plan, hosts)["step_time_s"])
    assert times[1] == pytest.approx(times[0], rel=0.02) and times[2] == pytest.approx(times[0], rel=0.02)


def test_records_are_reported_at_full_scale() -> None:
    record = {"kind": "train_step", "step_time_s": 0.12, "wan_bytes": 1000, "busbw": 2.5, "rate_mbps": 10.0,
              "kv_bytes_per_token": 3, "time_scale": 1.0, "nested": {"bytes": 5}}
    out = full_scale_record(record, 100.0)
    assert out["step_time_s"] == 0.12 and out["time_scale"] == 1.0  # times unchanged
    assert out["wan_bytes"] == 100_000 and isinstance(out["wan_bytes"], int)
    assert out["busbw"] == 250.0 and out["rate_mbps"] == 1000.0 and out["kv_bytes_per_token"] == 300
    assert out["nested"] == {"bytes": 5} and out["scale"] == 100.0
    assert full_scale_record(record, 1.0) == record


def test_a_kind_without_scaled_cannot_run_as_a_scale_model() -> None:
    class Bare:
        name = "bare"

    assert scaled_params(Bare(), "p", 1.0) == "p"
    with pytest.raises(SpecError, match="'bare' cannot be emulated as a scale model"):
        scaled_params(Bare(), "p", 4.0)
    with pytest.raises(SpecError, match="at least 1"):
        scale_plan(plan_for(parse_experiment(_doc(), path="x.yaml"),
                            parse_experiment(_doc(), path="x.yaml").placement("remote"),
                            expand_points(parse_experiment(_doc(), path="x.yaml"))[0].sweep), 0.5)


def test_scaled_training_params_keep_the_dataclass() -> None:
    exp = parse_experiment(_doc(), path="x.yaml")
    w = exp.workload("dp")
    scaled = registry.get("training").scaled(w.params, 4.0)  # type: ignore[attr-defined]
    assert dataclasses.replace(scaled, grad_bytes=w.params.grad_bytes, activation_bytes=w.params.activation_bytes,
                               sock_buf_bytes=w.params.sock_buf_bytes) == w.params


def test_validation_experiment_loads(tmp_path: Path) -> None:
    exp = load_experiment(str(Path(__file__).parent.parent / "experiments" / "validation" / "streaming-diloco.yaml"))
    assert exp.scale is not None and scale_for(exp) >= 1
