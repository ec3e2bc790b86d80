"""Training workload runner: parameter validation, every pattern on loopback, predictions beside records."""

from __future__ import annotations

import pytest

from corridor.emulation.api import LocalNetwork
from corridor.errors import AgentError, SpecError
from corridor.planning.planner import build_plan
from corridor.spec.topospec import load_topology, override_links
from corridor.workloads.training.run import PATTERNS, TrainingParams, predict, run, validate

SITES = {"a1": "a", "a2": "a", "b1": "b", "b2": "b"}
HOSTS = list(SITES)


def test_defaults_and_units():
    p = validate({"pattern": "allreduce", "compute_time": "120ms", "grad_size": "64MB", "socket_buffer": "4MiB"},
                 where="exp.yaml")
    assert p.compute_s == pytest.approx(0.12)
    assert p.grad_bytes == 64_000_000
    assert p.sock_buf_bytes == 4 * 2**20
    assert p.steps == 20 and p.algorithm == "ring"


def test_compute_from_model_shape():
    # 6 * 1e9 params * 4096 tokens / (989e12 * 0.4) = 62.1 ms; fp16 gradient of 1e9 params = 2 GB
    p = validate({"pattern": "allreduce", "model_params": 1e9, "tokens_per_step": 4096, "peak_tflops": 989,
                  "mfu": 0.4}, where="e")
    assert p.compute_s == pytest.approx(6 * 1e9 * 4096 / (989e12 * 0.4))
    assert p.grad_bytes == 2_000_000_000


@pytest.mark.parametrize("dtype, factor", [("fp16", 1.0), ("int8", 0.5), ("int4", 0.25)])
def test_diloco_payload_shrinks_with_dtype(dtype, factor):
    p = validate({"pattern": "diloco", "grad_size": "8MB", "outer_dtype": dtype}, where="e")
    assert p.outer_bytes == int(8_000_000 * factor)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"pattern": "gossip"}, "pattern"),
        ({}, "pattern"),
        ({"pattern": "allreduce", "colour": 1}, "colour"),
        ({"pattern": "allreduce", "steps": 0}, "steps"),
        ({"pattern": "allreduce", "steps": 2.5}, "steps"),
        ({"pattern": "allreduce", "buckets": True}, "buckets"),
        ({"pattern": "allreduce", "compute_time": "-5ms"}, "compute_time"),
        ({"pattern": "allreduce", "compute_time": "5ms", "mfu": 0.5}, "compute_time"),
        ({"pattern": "allreduce", "model_params": 1e9}, "tokens_per_step"),
        ({"pattern": "allreduce", "model_params": 1e9, "tokens_per_step": 1, "peak_tflops": 1, "mfu": 2}, "mfu"),
        ({"pattern": "allreduce", "algorithm": "butterfly"}, "algorithm"),
        ({"pattern": "diloco", "outer_dtype": "fp8"}, "outer_dtype"),
        ({"pattern": "allreduce", "cc": "warp"}, "cc"),
        ({"pattern": "allreduce", "streams": 0}, "streams"),
        ({"pattern": "allreduce", "forward_fraction": 1.5}, "forward_fraction"),
    ],
)
def test_bad_params_name_the_key(params, key):
    with pytest.raises(SpecError) as info:
        validate(params, where="exp.yaml")
    assert info.value.key == key
    assert "exp.yaml" in str(info.value)


@pytest.mark.parametrize(("params", "text"), [({"pattern": "allreduce", "grad_size": "12 parsecs"}, "unit"),
                                              ({"pattern": "allreduce", "compute_time": 5}, "no unit")])
def test_bad_units(params, text):
    with pytest.raises(SpecError, match=text):
        validate(params, where="exp.yaml")


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_every_pattern_runs_and_records_each_step(pattern):
    params = validate({"pattern": pattern, "steps": 4, "compute_time": "15ms", "grad_size": "512KB",
                       "activation_size": "64KB", "inner_steps": 2, "outer_dtype": "int8"}, where="t")
    recs = run(LocalNetwork(SITES), params, hosts=HOSTS, seed=7, timeout_s=60)
    steps = [r for r in recs if r["kind"] == "train_step"]
    assert len(steps) == 4 * len(HOSTS)
    assert {r["rank"] for r in steps} == {0, 1, 2, 3}
    for r in steps:
        assert r["pattern"] == pattern and r["time_scale"] == 1.0
        assert r["step_time_s"] >= r["compute_time_s"] * 0.95
        assert r["exposed_comm_s"] >= 0 and r["wan_bytes"] >= 0
    total_wan = sum(r["wan_bytes"] for r in steps)
    if pattern == "diloco":
        assert all(r["wan_bytes"] == 0 for r in steps if not r["outer_sync"])
        assert any(r["outer_sync"] for r in steps)
    assert total_wan > 0


def test_hierarchical_training_sends_fewer_wan_bytes_than_ring():
    base = {"pattern": "allreduce", "steps": 2, "compute_time": "5ms", "grad_size": "1MB"}
    ring = run(LocalNetwork(SITES), validate(base, where="t"), hosts=HOSTS, seed=1, timeout_s=60)
    hier = run(LocalNetwork(SITES), validate({**base, "algorithm": "hierarchical"}, where="t"), hosts=HOSTS, seed=1,
               timeout_s=60)
    assert sum(r["wan_bytes"] for r in hier) < sum(r["wan_bytes"] for r in ring)


def test_pipeline_needs_two_stages():
    with pytest.raises(AgentError, match="two ranks"):
        run(LocalNetwork({"x": "a"}), validate({"pattern": "pipeline"}, where="t"), hosts=["x"], seed=1, timeout_s=5)


def test_halving_doubling_needs_power_of_two_ranks():
    params = validate({"pattern": "allreduce", "algorithm": "halving_doubling"}, where="t")
    with pytest.raises(AgentError, match="power-of-two"):
        run(LocalNetwork({"x": "a", "y": "a", "z": "b"}), params, hosts=["x", "y", "z"], seed=1, timeout_s=5)


def _two_site_plan():
    return build_plan(override_links(load_topology("two-site"), rate="200Mbit", delay="25ms"))


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_predict_remote_slower_than_local(pattern):
    plan = _two_site_plan()
    params = TrainingParams(pattern=pattern, compute_s=0.1, grad_bytes=8_000_000, inner_steps=5)
    remote = predict(params, plan, hosts=["rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2"])
    local = predict(params, plan, hosts=["cty-gpu1", "cty-gpu2", "cty-cli1", "cty-cli2"])
    key = "outer_step_time_s" if pattern == "diloco" else "step_time_s"
    assert remote[key] > local[key] >= 0.1


def test_records_carry_predictions_when_a_plan_is_known():
    plan = _two_site_plan()
    hosts = ["rem-gpu1", "cty-gpu1"]
    net = LocalNetwork({h: plan.host(h).site for h in hosts})
    params = validate({"pattern": "allreduce", "steps": 2, "compute_time": "5ms", "grad_size": "64KB"}, where="t")
    recs = run(net, params, hosts=hosts, seed=2, timeout_s=30, plan=plan)
    assert all(r["predicted_step_time_s"] > 0.05 for r in recs)  # the model sees a 25 ms corridor


def test_summarize_takes_the_slowest_rank_per_step():
    from corridor.workloads.training.run import summarize_steps

    recs = [
        {"kind": "train_step", "step": 0, "rank": 0, "step_time_s": 1.0, "exposed_comm_s": 0.1, "wan_bytes": 5},
        {"kind": "train_step", "step": 0, "rank": 1, "step_time_s": 2.0, "exposed_comm_s": 0.3, "wan_bytes": 7},
        {"kind": "train_step", "step": 1, "rank": 0, "step_time_s": 3.0, "exposed_comm_s": 0.0, "wan_bytes": 0},
        {"kind": "other"},
    ]
    s = summarize_steps(recs)
    assert s["steps"] == 2 and s["mean_step_time_s"] == 2.5 and s["wan_bytes_per_step"] == 6
    with pytest.raises(AgentError):
        summarize_steps([{"kind": "other"}])


@pytest.mark.corridor_root
@pytest.mark.corridor_slow
def test_every_pattern_local_versus_remote():
    """10 steps per pattern on `local` and on a 200 Mbit/s, 25 ms corridor; prints the step-time inflation.

    Ten steps hold two DiLoCo outer exchanges (inner_steps 5): every pattern runs in both placements,
    sends WAN bytes only when remote, and is never faster remote than local.
    """
    from corridor.emulation.network import CorridorNetwork
    from corridor.workloads.training.run import summarize_steps

    base = {"steps": 10, "compute_time": "60ms", "grad_size": "1MB", "activation_size": "128KB", "inner_steps": 5,
            "outer_dtype": "int8"}
    placements = {
        "local": (build_plan(load_topology("local")), ["loc-gpu1", "loc-gpu2", "loc-gpu3", "loc-gpu4"]),
        "remote": (_two_site_plan(), ["rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2"]),
    }
    results: dict[str, dict[str, dict]] = {}
    for where, (plan, hosts) in placements.items():
        hosts = hosts if all(h in {x.name for x in plan.hosts()} for h in hosts) else \
            [h.name for h in plan.hosts(role="gpu")][:4]
        with CorridorNetwork(plan, backend="userspace") as net:
            for pattern in PATTERNS:
                recs = run(net, validate({"pattern": pattern, **base}, where="test"), hosts=hosts, seed=1,
                           timeout_s=120)
                results.setdefault(pattern, {})[where] = summarize_steps(recs)
    for pattern, by_where in results.items():
        loc, rem = by_where["local"], by_where["remote"]
        inflation = rem["mean_step_time_s"] / loc["mean_step_time_s"]
        print(f"{pattern:17s} local {loc['mean_step_time_s'] * 1e3:7.1f} ms  "
              f"remote {rem['mean_step_time_s'] * 1e3:7.1f} ms  inflation x{inflation:.2f}  "
              f"model {rem['mean_predicted_step_time_s'] * 1e3:7.1f} ms  "
              f"WAN {rem['wan_bytes_per_step'] / 1e6:.2f} MB/step")
        assert loc["steps"] == rem["steps"] == 10
        assert rem["mean_step_time_s"] >= loc["mean_step_time_s"] * 0.95
        assert loc["wan_bytes_per_step"] == 0 and rem["wan_bytes_per_step"] > 0
