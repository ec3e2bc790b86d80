"""The runner's own cost per point, measured without a network.

Stage: workload run (no root, no network). Times
:func:`corridor.workloads.runner.run_experiment` over an experiment whose one workload
(pattern ``null-step``) does no work and whose network runs nothing, so what is
left is the runner itself: planning, the model's prediction, link sampling,
writing records and the run directory, verdicts at the end. The null workload
is a :class:`~corridor.workloads.training.kind.TrainingKind` over this module
(``PATTERNS``, :func:`validate`, :func:`run`, :func:`predict`), put in the
registry only for the measurement (:func:`null_training_kind`).
``corridor bench cost`` prints the figure beside the network's build and
agent start-up costs (:mod:`corridor.workloads.runcost`).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from corridor.errors import SpecError
from corridor.planning.plan import Plan
from corridor.workloads import registry
from corridor.workloads.training.kind import TrainingKind

PATTERNS: dict[str, str] = {"null-step": "a training job whose steps take no time and move nothing"}
#: Seconds every null step reports: constant, so the verdicts are decided and cheap.
NULL_STEP_S = 0.01


@dataclass(frozen=True)
class NullParams:
    pattern: str
    steps: int = 10


def validate(params: Mapping[str, Any], *, where: str) -> NullParams:
    allowed = {f.name for f in dataclasses.fields(NullParams)}
    for key in params:
        if key not in allowed:
            raise SpecError(f"unknown parameter; allowed: {', '.join(sorted(allowed))}", path=where, key=key)
    return NullParams(**params)


def run(net: Any, params: NullParams, *, hosts: Sequence[str], seed: int, timeout_s: float,
        progress: Any = None) -> list[dict[str, Any]]:
    """Records of ``params.steps`` steps on every rank, made up at once."""
    return [{"kind": "train_step", "pattern": params.pattern, "step": step, "rank": rank, "step_time_s": NULL_STEP_S,
             "compute_time_s": NULL_STEP_S, "comm_time_s": 0.0, "exposed_comm_s": 0.0, "wan_bytes": 0,
             "time_scale": getattr(net, "time_scale", 1.0)}
            for step in range(params.steps) for rank in range(len(hosts))]


def predict(params: NullParams, plan: Plan, *, hosts: Any, time_scale: float = 1.0) -> dict[str, Any]:
    return {"step_time_s": NULL_STEP_S, "utilisation": 1.0, "note": "null workload (corridor bench cost)"}


class NullTrainingKind(TrainingKind):
    """The training kind's SLO, verdict and model figures over this module's null workload."""

    def module(self) -> ModuleType:
        return sys.modules[__name__]


class NullNetwork:
    """A network that runs nothing; its one link reports counters that grow, as a live delay line's do."""

    def __init__(self, plan: Plan, *, backend: str, time_scale: float, seed: int = 1) -> None:
        self.plan = plan
        self.seed = seed
        self.backend = "null"
        self.backend_reason = f"requested {backend}; the runner's cost is measured without a network"
        self.time_scale = time_scale
        self._bytes = 0

    def __enter__(self) -> NullNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def hosts(self) -> list[str]:
        return [h.name for site in self.plan.sites for h in site.hosts]

    def link_stats(self, link_name: str) -> dict[str, Any]:
        self.plan.link(link_name)
        self._bytes += 125_000
        return {"a_to_b": {"tx_bytes": self._bytes, "backlog_bytes": 0, "drops": 0},
                "b_to_a": {"tx_bytes": self._bytes // 2, "backlog_bytes": 0, "drops": 0}}

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "time_scale": self.time_scale}


def null_network_factory(plan: Plan, *, backend: str, time_scale: float, seed: int = 1) -> NullNetwork:
    return NullNetwork(plan, backend=backend, time_scale=time_scale, seed=seed)


@contextmanager
def null_training_kind() -> Iterator[None]:
    """The registry's ``training`` kind is the null one inside the block, the real one again after it."""
    real = registry.KINDS["training"]
    registry.KINDS["training"] = NullTrainingKind()
    try:
        yield
    finally:
        registry.KINDS["training"] = real


def experiment_text(distances: int, repetitions: int) -> str:
    """A local and a remote placement of the null job over ``distances`` swept distances."""
    kms = ", ".join(f"{1000 + 250 * i}km" for i in range(distances))
    return f"""
name: runner-cost
topology: two-site
placements:
  - name: local
  - name: remote
    servers: [remote]
    clients: [city]
    ranks: [remote, city]
workloads:
  - name: null-job
    type: null-step
    params: {{steps: 10}}
sweep:
  distance: [{kms}]
repetitions: {repetitions}
seed: 1
"""


@dataclass(frozen=True)
class RunnerCost:
    points: int
    wall_s: float
    points_s: float  # the sum of the points' own durations (the null workload's share is nil)

    @property
    def per_point_s(self) -> float:
        return self.wall_s / self.points if self.points else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "per_point_s": self.per_point_s}


def measure_runner(*, distances: int = 5, repetitions: int = 2) -> RunnerCost:
    """Run the null experiment into a scratch directory and time it; the directory is removed after."""
    from corridor.results.rundir import read_run
    from corridor.spec.experiment import load_experiment
    from corridor.workloads.runner import run_experiment

    scratch = Path(tempfile.mkdtemp(prefix="corridor-runner-cost-"))
    try:
        spec = scratch / "runner-cost.yaml"
        spec.write_text(experiment_text(distances, repetitions), encoding="utf-8")
        with null_training_kind():
            exp = load_experiment(str(spec))
            started = time.monotonic()
            run_experiment(exp, str(scratch / "run"), network_factory=null_network_factory)
            wall = time.monotonic() - started
        run_dir = read_run(str(scratch / "run"))
        points = [r for r in run_dir.records if r.get("kind") == "point"]
        return RunnerCost(points=len(points), wall_s=wall,
                          points_s=sum(float(p.get("duration_s") or 0.0) for p in points))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
