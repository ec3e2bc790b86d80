"""The ``streaming-diloco`` training pattern: its agents run the schedule the analytic model walks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from corridor.analytic.diloco import SyncMethod, sync_plan, walk_steps
from corridor.emulation.api import LocalNetwork
from corridor.errors import SpecError
from corridor.planning.planner import build_plan
from corridor.spec.topospec import load_topology, override_links
from corridor.workloads.training import patterns
from corridor.workloads.training.patterns import PATTERNS, StepContext
from corridor.workloads.training.run import TrainingParams, predict, run, validate


@dataclass
class _Event:
    done_at: float


@dataclass
class _Clock:
    """Virtual time: sleeps advance it, a wait jumps it to the event's end, the link takes one reduction at a time."""

    layer_s: float
    now: float = 0.0
    link_free: float = 0.0
    busy_s: float = 0.0
    submitted: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    def monotonic(self) -> float:
        return self.now

    def submit(self, _steps: Any) -> _Event:
        self.submitted.append(self.now)
        done = max(self.link_free, self.now) + self.layer_s
        self.busy_s += self.layer_s
        self.link_free = done
        return _Event(done)

    def wait(self, event: _Event) -> None:
        self.now = max(self.now, event.done_at)


def _agent_durations(job: dict[str, Any], clock: _Clock, monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, Any]]:
    monkeypatch.setattr(patterns.time, "monotonic", clock.monotonic)
    compute = float(job["compute_s"])
    state: dict[str, Any] = {}
    out = []
    for step in range(int(job["steps"])):
        start = clock.now
        times = PATTERNS["streaming-diloco"].agent_step(StepContext(
            agent=None, job=job, worker=clock, step=step, sites=["a", "b"], compute_s=compute, fwd_s=compute / 3,
            bwd_s=compute * 2 / 3, grad_bytes=int(job["outer_bytes"]), algorithm="ring", sleep=clock.sleep,
            state=state))
        out.append((clock.now - start, times))
    return out


@pytest.mark.parametrize(("fragment_layers", "order", "overlap"), [
    (3, "strided", 1), (3, "strided", 0), (2, "sequential", 2), (12, "strided", 0), (1, "strided", 1)])
def test_the_agents_step_is_the_models_walk(fragment_layers: int, order: str, overlap: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Agent and model, on one virtual clock and a link of known speed, give every steady-state step the same time."""
    h, layers, compute, layer_s = 20, 12, 0.1, 0.25
    job = {"pattern": "streaming-diloco", "steps": 5 * h, "compute_s": compute, "layers": layers,
           "inner_steps": h, "fragment_layers": fragment_layers, "fragment_order": order, "overlap_steps": overlap,
           "outer_bytes": 12_000_000}
    agent = _agent_durations(job, _Clock(layer_s), monkeypatch)
    method = SyncMethod("x", inner_steps=h, fragment_layers=fragment_layers, pattern=order, overlap_steps=overlap)
    model = walk_steps(layers, compute, method, layer_s)
    steady = [d for d, _ in agent[2 * h:4 * h]]  # the model's two measured cycles, after two of warm-up
    assert steady == pytest.approx(model, abs=1e-9)
    assert max(model) > 1.5 * compute  # the link is slow enough that the schedule shows in the times


def test_fragments_go_in_turn_and_the_last_step_waits_for_what_is_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    h, layers = 10, 8
    job = {"pattern": "streaming-diloco", "steps": h, "compute_s": 0.1, "layers": layers, "inner_steps": h,
           "fragment_layers": 2, "overlap_steps": 1, "outer_bytes": 8_000_000}
    clock = _Clock(0.3)
    steps = _agent_durations(job, clock, monkeypatch)
    method = SyncMethod("x", inner_steps=h, fragment_layers=2, overlap_steps=1)
    plan = sync_plan(layers, method)
    assert sorted(plan) == [1, 4, 6, 9] and [len(f) for fs in plan.values() for f in fs] == [2, 2, 2, 2]
    assert len(clock.submitted) == layers  # every layer once per cycle of H steps
    # a step that waits for an exchange says so: two steps after each send, and the last step (the drain)
    waited = [i for i, (_, t) in enumerate(steps) if t.outer_sync]
    assert waited == [3, 6, 8, 9]
    assert steps[-1][1].exposed_s > 0 and clock.now >= clock.link_free
    assert all(t.exposed_s == 0 for i, (_, t) in enumerate(steps) if i not in waited)


def test_predicted_utilisation_rises_with_overlap_and_bandwidth() -> None:
    def cu(rate: str, overlap: int) -> float:
        plan = build_plan(override_links(load_topology("two-site"), rate=rate, delay="5ms"))
        params = TrainingParams(pattern="streaming-diloco", compute_s=0.1, grad_bytes=200_000_000, layers=24,
                                inner_steps=100, fragment_layers=3, overlap_steps=overlap)
        out = predict(params, plan, hosts=["rem-gpu1", "cty-gpu1"])
        assert out["fragments"] == 8 and out["step_time_s"] == pytest.approx(0.1)  # most steps only compute
        assert out["mean_step_time_s"] > out["step_time_s"] and out["outer_step_time_s"] > 0.1
        return float(out["compute_utilisation"])

    assert cu("100Mbit", 0) < cu("100Mbit", 1) < cu("400Mbit", 1) < 1.0


@pytest.mark.parametrize(("params", "key"), [
    ({"layers": 4, "fragment_layers": 5}, "fragment_layers"),
    ({"fragment_order": "random"}, "fragment_order"),
    ({"inner_steps": 4, "overlap_steps": 4}, "overlap_steps"),
    ({"overlap_steps": -1}, "overlap_steps"),
])
def test_bad_streaming_params_name_the_key(params: dict[str, Any], key: str) -> None:
    with pytest.raises(SpecError) as info:
        validate({"pattern": "streaming-diloco", **params}, where="exp.yaml")
    assert info.value.key == key and "exp.yaml" in str(info.value)


def test_streaming_runs_on_loopback_and_sends_every_layer_once_per_cycle() -> None:
    params = validate({"pattern": "streaming-diloco", "steps": 8, "compute_time": "10ms", "grad_size": "400KB",
                       "layers": 4, "inner_steps": 4, "fragment_layers": 1, "overlap_steps": 1}, where="t")
    recs = run(LocalNetwork({"a1": "a", "b1": "b"}), params, hosts=["a1", "b1"], seed=3, timeout_s=60)
    steps = [r for r in recs if r["kind"] == "train_step"]
    assert len(steps) == 16 and all(r["pattern"] == "streaming-diloco" for r in steps)
    # two cycles, four 100 KB layers each, a ring of two: every rank sends each layer's 100 KB once per cycle
    for rank in (0, 1):
        sent = sum(r["wan_bytes"] for r in steps if r["rank"] == rank)
        assert 2 * 4 * 100_000 <= sent < 2 * 4 * 100_000 * 1.01
