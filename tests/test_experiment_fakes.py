"""Stand-ins for the workload modules, the planner and the emulated network, shared by the run tests.

The fakes follow the workload interface of corridor/workloads/__init__.py (validate/run/predict, record kinds, Network
attributes) and derive their figures from the plan's RTT and the seed, so the
tests can check that analysis turns records into the right verdicts and
figures without root, Mininet or the real workloads. Importing this module
registers the fake run-time modules under ``corridor_fake_training`` and
``corridor_fake_inference``; :func:`use_fakes` registers workload kinds over
them in :data:`corridor.workloads.registry.KINDS`.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import threading
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from corridor.errors import SpecError
from corridor.links.contract import LinkDirection
from corridor.planning.plan import HostPlan, LinkDerivation, Plan, SitePlan, WanLinkPlan
from corridor.spec import experiment
from corridor.workloads import registry
from corridor.workloads.inference.kind import InferenceKind
from corridor.workloads.training.kind import TrainingKind

# -- a fake network ------------------------------------------------------------------


class FakeNet:
    """A network that runs nothing; workloads read its plan to invent plausible figures."""

    instances = 0

    def __init__(self, plan: Plan, *, backend: str, time_scale: float, seed: int = 1) -> None:
        self.plan = plan
        self.seed = seed
        self.backend = "fake"
        self.backend_reason = f"requested {backend}; tests use a fake network"
        self.time_scale = time_scale
        self.bulk = 0
        self._lock = threading.Lock()
        self._bytes = 0
        FakeNet.instances += 1

    def __enter__(self) -> FakeNet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def rtt_s(self) -> float:
        return max((lk.rtt_ms for lk in self.plan.wan_links), default=0.1) / 1e3

    def link_stats(self, link_name: str) -> dict[str, Any]:
        self.plan.link(link_name)
        with self._lock:
            self._bytes += 125_000 * (1 + self.bulk)
            return {"a_to_b": {"tx_bytes": self._bytes, "backlog_bytes": 1000 * self.bulk, "drops": 0},
                    "b_to_a": {"tx_bytes": self._bytes // 2, "backlog_bytes": 0, "drops": 0}}

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "time_scale": self.time_scale, "link_seed": self.seed}


def fake_network_factory(plan: Plan, *, backend: str, time_scale: float, seed: int = 1) -> FakeNet:
    return FakeNet(plan, backend=backend, time_scale=time_scale, seed=seed)


# -- fake plans ---------------------------------------------------------------------------


def _site(index: int, name: str, code: str, gpus: int, clients: int) -> SitePlan:
    hosts: list[HostPlan] = []
    for role, count in (("gpu", gpus), ("client", clients)):
        for n in range(1, count + 1):
            short = "gpu" if role == "gpu" else "cli"
            hosts.append(HostPlan(name=f"{code}-{short}{n}", site=name, role=role, ip=f"10.{index}.0.{len(hosts) + 1}",
                                  prefix_len=24, gateway=f"10.{index}.0.254", intf=f"{code}-{short}{n}-eth0"))
    return SitePlan(name=name, code=code, lat=0.0, lon=0.0, kind="gpu", subnet=f"10.{index}.0.0/24",
                    switch=f"{code}-s", router=f"{code}-r", router_lan_ip=f"10.{index}.0.254",
                    router_lan_intf=f"{code}-r-eth0", routes=(), hosts=tuple(hosts))


def make_plan(*, local: bool = False, one_way_ms: float = 25.0, rate_mbps: float = 1000.0, loss: float = 0.0) -> Plan:
    if local:
        return Plan(name="local", source="preset:local", sites=(_site(1, "local", "loc", 4, 2),), wan_links=())
    direction = LinkDirection(rate_mbps=rate_mbps, delay_ms=one_way_ms, queue_bytes=10**6, loss=loss)
    derivation = LinkDerivation(source="explicit-delay", great_circle_km=None, path_km=None, stretch=None,
                                waypoints=(), fibre="smf", us_per_km=4.9, propagation_ms=one_way_ms, amplifiers=0,
                                regenerators=0, switches=0, equipment_ms=0.0, one_way_ms=one_way_ms)
    link = WanLinkPlan(name="remote-city", index=1, a="remote", b="city", wire="wremcty", wire_intf_a="w-a",
                       wire_intf_b="w-b", router_intf_a="r-a", router_intf_b="r-b", ip_a="10.255.1.1",
                       ip_b="10.255.1.2", a_to_b=direction, b_to_a=direction, derivation=derivation)
    return Plan(name="two-site", source="preset:two-site",
                sites=(_site(1, "remote", "rem", 2, 0), _site(2, "city", "cty", 2, 2)), wan_links=(link,))


def fake_plan_builder(exp: experiment.Experiment, placement: experiment.Placement,
                      sweep: experiment.SweepPoint) -> Plan:
    if (placement.topology or exp.topology) == "local":
        return make_plan(local=True)
    from corridor.planning.points import link_overrides

    overrides = link_overrides(exp, sweep)
    one_way = 25.0
    if "delay" in overrides:
        one_way = float(str(overrides["delay"]).removesuffix("ms"))
    one_way *= float(overrides.get("delay_scale", 1.0))
    rate = float(str(overrides.get("rate", "1000Mbit")).removesuffix("Mbit"))
    return make_plan(one_way_ms=one_way, rate_mbps=rate, loss=float(overrides.get("loss", 0.0)))


# -- fake workload modules ------------------------------------------------------------------

#: Calls of either fake ``run``; a test may set ``interrupt_after`` to raise KeyboardInterrupt on that call.
CALLS: dict[str, Any] = {"count": 0, "interrupt_after": None, "log": []}


@dataclasses.dataclass(frozen=True)
class FakeTrainParams:
    pattern: str
    steps: int = 5
    compute_s: float = 0.1
    round_trips: float = 2.0


@dataclasses.dataclass(frozen=True)
class FakeInferParams:
    pattern: str
    requests: int = 40
    prefill_s: float = 0.05
    tpot_s: float = 0.02
    output_tokens: int = 8


def _count(label: str) -> None:
    CALLS["count"] += 1
    CALLS["log"].append(label)
    if CALLS["interrupt_after"] is not None and CALLS["count"] > CALLS["interrupt_after"]:
        raise KeyboardInterrupt


def _train_validate(params: Mapping[str, Any], *, where: str) -> FakeTrainParams:
    allowed = {f.name for f in dataclasses.fields(FakeTrainParams)}
    for key in params:
        if key not in allowed:
            raise SpecError(f"unknown parameter; allowed: {', '.join(sorted(allowed))}", path=where, key=key)
    return FakeTrainParams(**params)


def _train_step_s(params: FakeTrainParams, rtt_s: float) -> float:
    factor = {"fake-dp": 1.0, "fake-diloco": 0.01, "fake-pipeline": 0.5}[params.pattern]
    return params.compute_s + params.round_trips * factor * rtt_s


def _train_run(net: Any, params: FakeTrainParams, *, hosts: Sequence[str], seed: int, timeout_s: float,
               progress: Any = None) -> list[dict[str, Any]]:
    _count(f"train:{params.pattern}:{net.plan.name}")
    rng = random.Random(seed)
    net.bulk += 1
    try:
        time.sleep(0.05)
        records = []
        for step in range(params.steps):
            for rank, _host in enumerate(hosts):
                step_s = _train_step_s(params, net.rtt_s()) * (1 + 0.01 * rng.random())
                records.append({"kind": "train_step", "pattern": params.pattern, "step": step, "rank": rank,
                                "step_time_s": step_s, "compute_time_s": params.compute_s,
                                "comm_time_s": step_s - params.compute_s, "exposed_comm_s": step_s - params.compute_s,
                                "wan_bytes": 1000, "time_scale": net.time_scale})
        return records
    finally:
        net.bulk -= 1


def _train_predict(params: FakeTrainParams, plan: Plan, *, hosts: Any, time_scale: float = 1.0) -> dict[str, Any]:
    rtt_s = max((lk.rtt_ms for lk in plan.wan_links), default=0.1) / 1e3
    step = _train_step_s(params, rtt_s)
    return {"step_time_s": step, "utilisation": params.compute_s / step, "note": "fake"}


def _infer_validate(params: Mapping[str, Any], *, where: str) -> FakeInferParams:
    allowed = {f.name for f in dataclasses.fields(FakeInferParams)}
    for key in params:
        if key not in allowed:
            raise SpecError(f"unknown parameter; allowed: {', '.join(sorted(allowed))}", path=where, key=key)
    return FakeInferParams(**params)


def _infer_run(net: Any, params: FakeInferParams, *, hosts: Mapping[str, Sequence[str]], seed: int, timeout_s: float,
               progress: Any = None) -> list[dict[str, Any]]:
    _count(f"infer:{params.pattern}:{net.plan.name}")
    time.sleep(0.01)  # lets a tenant start first
    rng = random.Random(seed)
    shared = 0.08 if net.bulk else 0.0  # queueing behind a bulk tenant
    records = []
    for i in range(params.requests):
        ttft = params.prefill_s + net.rtt_s() + rng.random() * 0.01 + (shared * rng.random())
        tpot = params.tpot_s * (1 + 0.1 * rng.random())
        records.append({"kind": "request", "pattern": params.pattern, "request_id": i,
                        "client": hosts["clients"][i % len(hosts["clients"])], "server": hosts["servers"][0],
                        "prompt_tokens": 100, "output_tokens": params.output_tokens, "t_sched_s": i * 0.1,
                        "t_send_s": i * 0.1, "ttft_s": ttft, "tpot_s": tpot,
                        "e2e_s": ttft + tpot * (params.output_tokens - 1), "ok": True, "error": None,
                        "time_scale": net.time_scale})
    # agentic workloads write records of kind "session"; they must not be mistaken for run sessions
    records.append({"kind": "session", "session_id": "r0", "calls": 1, "ok": True})
    return records


def _infer_predict(params: FakeInferParams, plan: Plan, *, hosts: Any, time_scale: float = 1.0,
                   percentile: float | None = None, seed: int | None = None) -> dict[str, Any]:
    rtt_s = max((lk.rtt_ms for lk in plan.wan_links), default=0.1) / 1e3
    return {"ttft_s": params.prefill_s + rtt_s, "tpot_s": params.tpot_s}


def _module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    sys.modules[name] = module
    return module


_module("corridor_fake_training", PATTERNS={"fake-dp": None, "fake-diloco": None, "fake-pipeline": None},
        validate=_train_validate, run=_train_run, predict=_train_predict)
_module("corridor_fake_inference", PATTERNS={"fake-chat": None}, validate=_infer_validate, run=_infer_run,
        predict=_infer_predict)


class FakeTrainingKind(TrainingKind):
    """The training kind (its SLO, verdict and model figures) over the fake run-time module."""

    def module(self) -> types.ModuleType:
        return sys.modules["corridor_fake_training"]


class FakeInferenceKind(InferenceKind):
    def module(self) -> types.ModuleType:
        return sys.modules["corridor_fake_inference"]


@pytest.fixture
def use_fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Register fake workload kinds in the registry; reset the call log."""
    monkeypatch.setitem(registry.KINDS, "training", FakeTrainingKind())
    monkeypatch.setitem(registry.KINDS, "inference", FakeInferenceKind())
    CALLS.update(count=0, interrupt_after=None, log=[])
    yield CALLS
    CALLS.update(count=0, interrupt_after=None, log=[])


FAKE_EXPERIMENT = """
name: fake
topology: two-site
placements:
  - name: local
  - name: urumqi-serves-shanghai
    servers: [remote]
    clients: [city]
    ranks: [remote, city]
workloads:
  - name: dp
    type: fake-dp
    params: {steps: 4, compute_s: 0.1}
    slo: {max_slowdown: 1.1, marginal_slowdown: 1.5}
  - name: diloco
    type: fake-diloco
    params: {steps: 4}
  - name: chat
    type: fake-chat
    params: {requests: 50}
    slo: {ttft: 250ms, tpot: 100ms}
tenants:
  - name: chat-with-dp
    workloads: [chat, dp]
    victim: chat
sweep:
  distance: [1000km, 3268km]
repetitions: 1
seed: 7
"""


def write_experiment(tmp_path: Any, text: str = FAKE_EXPERIMENT, name: str = "fake.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_fake_plan_builder_follows_the_swept_distance(use_fakes: dict[str, Any], tmp_path: Any) -> None:
    exp = experiment.load_experiment(write_experiment(tmp_path))
    remote = exp.placement("urumqi-serves-shanghai")
    plans = [fake_plan_builder(exp, remote, s) for s in exp.sweep.points()]
    assert [round(p.wan_links[0].a_to_b.delay_ms, 3) for p in plans] == [4.9, 16.013]


def test_fake_chat_slows_behind_a_bulk_tenant(use_fakes: dict[str, Any]) -> None:
    net = FakeNet(make_plan(), backend="auto", time_scale=1.0)
    params = FakeInferParams(pattern="fake-chat", requests=20)
    hosts = {"servers": ["rem-gpu1"], "clients": ["cty-cli1"]}
    alone = _infer_run(net, params, hosts=hosts, seed=1, timeout_s=5)
    net.bulk = 1
    shared = _infer_run(net, params, hosts=hosts, seed=1, timeout_s=5)
    assert sum(r["ttft_s"] for r in shared if "ttft_s" in r) > sum(r["ttft_s"] for r in alone if "ttft_s" in r)


def run_fake(tmp_path: Any, out: str = "run", text: str = FAKE_EXPERIMENT, *, resume: bool = False) -> str:
    """Run the fake experiment into ``tmp_path/out`` with the fake plan builder and network."""
    from corridor.workloads.runner import run_experiment

    exp = experiment.load_experiment(write_experiment(tmp_path, text))
    path = str(tmp_path / out)
    run_experiment(exp, path, resume=resume, plan_builder=fake_plan_builder, network_factory=fake_network_factory)
    return path

