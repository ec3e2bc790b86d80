"""What a workload kind is: the typed interface every kind implements, and the verdict vocabulary.

Stage: spec/analysis plug-in interface (pure: imports nothing that needs root,
Mininet or a network). A kind (``training``, ``inference``) is one object
registered by name in :mod:`corridor.workloads.registry`. The experiment loader,
the runner, the verdicts and the plots reach a kind only through this
interface, so adding a kind is one new module plus one registry line.

A kind's run-time code (agents, processes on emulated hosts) is imported only
inside :meth:`WorkloadKind.run`, so loading an experiment or judging a run
directory never pulls in the emulation layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

TOLERATES = "tolerates"
MARGINAL = "marginal"
DOES_NOT_TOLERATE = "does not tolerate"
INCONCLUSIVE = "inconclusive"
NO_DATA = "no data"
#: The three decided verdicts, best first.
VERDICTS = (TOLERATES, MARGINAL, DOES_NOT_TOLERATE)
#: Every word a verdict row can carry, best first (tables and the heatmap sort by it).
VERDICT_ORDER = (TOLERATES, MARGINAL, INCONCLUSIVE, DOES_NOT_TOLERATE, NO_DATA)

#: A model figure further than this from the measured one is flagged on the verdict row.
MODEL_AGREEMENT = 0.15
#: A step or request during which the host kept its agent off the CPU for longer than this is "stalled".
STALL_THRESHOLD_S = 0.002


def interval_verdict(low: float, high: float, tolerate_max: float, marginal_max: float) -> str:
    """Judge a 95 % interval of a figure against two limits (lower is better).

    Tolerates only when the whole interval is within ``tolerate_max``; does not
    tolerate only when it is wholly above ``marginal_max``; marginal when it lies
    wholly between the two; otherwise the samples cannot decide: inconclusive.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if high <= tolerate_max:
        return TOLERATES
    if low > marginal_max:
        return DOES_NOT_TOLERATE
    if low > tolerate_max and high <= marginal_max:
        return MARGINAL
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """Several criteria's verdicts -> one: a decided failure wins, then undecided, then the worst."""
    if DOES_NOT_TOLERATE in verdicts:
        return DOES_NOT_TOLERATE
    if INCONCLUSIVE in verdicts:
        return INCONCLUSIVE
    if MARGINAL in verdicts:
        return MARGINAL
    return TOLERATES


@dataclass(frozen=True)
class Judgement:
    """What a kind says about one placement's samples against the baseline's and the SLO.

    ``value``/``low``/``high`` are the compared statistic and its 95 % interval in
    ``unit``; ``baseline*`` the same for the baseline; ``ratio*`` the slowdown
    (placement over baseline) with its interval. ``needed_n`` is how many samples
    per side would make an inconclusive row decide, if its interval narrowed as
    1/sqrt(n) around the same value.
    """

    verdict: str
    reason: str
    metric: str
    unit: str
    n: int
    baseline_n: int
    value: float | None
    low: float | None
    high: float | None
    baseline: float | None
    baseline_low: float | None
    baseline_high: float | None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    slo: float | None = None
    needed_n: int | None = None
    capacity_limited: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class ModuleBackedKind:
    """Plumbing shared by kinds whose run-time code is one module with ``PATTERNS``, ``validate`` and ``run``.

    A subclass names the module in :meth:`module` (imported there, lazily, so
    loading an experiment never pulls in the agents) and adds the rest of
    :class:`WorkloadKind`.
    """

    name = "module-backed"

    def module(self) -> ModuleType:
        raise NotImplementedError

    def patterns(self) -> Mapping[str, str]:
        return dict(self.module().PATTERNS)

    def validate(self, params: Mapping[str, Any], *, where: str) -> Any:
        return self.module().validate(params, where=where)

    def run(self, net: Any, params: Any, *, hosts: Any, seed: int, timeout_s: float,
            progress: Any = None) -> list[dict[str, Any]]:
        return list(self.module().run(net, params, hosts=hosts, seed=seed, timeout_s=timeout_s, progress=progress))


class WorkloadKind(Protocol):
    """The interface of a workload kind (see the module docstring)."""

    name: str

    def patterns(self) -> Mapping[str, str]:
        """Pattern name (the workload's ``type``) -> one line saying what it does."""
        ...

    def validate(self, params: Mapping[str, Any], *, where: str) -> Any:
        """Parameters of one workload -> the kind's frozen params (raises SpecError naming ``where``)."""
        ...

    # Optional (corridor.planning.scale.scaled_params looks it up; a kind without it cannot run as a scale model):
    # def scaled(self, params: Any, factor: float) -> Any:
    #     """The params of the scale model: every size (message, gradient, KV, buffer) / factor, times kept."""

    def parse_slo(self, value: Mapping[str, Any], *, path: str, where: str) -> Any:
        """The ``slo`` block of one workload -> the kind's frozen SLO (raises SpecError)."""
        ...

    def slo_from_manifest(self, value: Mapping[str, Any]) -> Any:
        """The SLO as a run manifest stores it (``dataclasses.asdict``) -> the kind's SLO."""
        ...

    def hosts(self, plan: Any, placement: Any, workload: Any, *, role_names: Sequence[str] = ()) -> Any:
        """The hosts argument of ``run``/``predict`` for one placement on one plan."""
        ...

    def run(self, net: Any, params: Any, *, hosts: Any, seed: int, timeout_s: float,
            progress: Any = None) -> list[dict[str, Any]]:
        """Run the workload on a network; returns its records."""
        ...

    def predict(self, params: Any, plan: Any, *, hosts: Any, time_scale: float = 1.0, slo: Any = None,
                seed: int | None = None) -> Mapping[str, Any]:
        """The analytic model's prediction for one placement, of the statistic ``slo``'s verdict compares.

        ``seed`` is the point's, for a model that replays the workload's own seeded schedule.
        """
        ...

    def model_figures(self, predicted: Mapping[str, Any], slo: Any) -> dict[str, float]:
        """The figures a verdict compares (same statistic as :meth:`judge`), from a prediction."""
        ...

    def model_verdict(self, slo: Any, remote: Mapping[str, float], local: Mapping[str, float]) -> str | None:
        """The verdict the model gives from :meth:`model_figures` of the placement and the baseline."""
        ...

    def samples(self, records: Sequence[Mapping[str, Any]], slo: Any) -> dict[str, list[float]]:
        """The per-step or per-request samples a verdict is computed from."""
        ...

    def judge(self, slo: Any, measured: Mapping[str, list[float]], baseline: Mapping[str, list[float]],
              *, baseline_label: str) -> Judgement:
        """Samples of a placement and of its baseline -> the verdict with its evidence."""
        ...

    def explain(self, j: Judgement, measured: Mapping[str, list[float]], prediction: Mapping[str, Any],
                plan: Mapping[str, Any]) -> str:
        """The mechanism in numbers: which term of the corridor (round trips x RTT, bytes / rate) dominates."""
        ...
