"""Points and plans: an experiment expanded into units of work, and the plan each placement runs on.

Stage: plan (pure: no root, no network). A *point* is one workload (or one
group of tenants running at the same time) in one placement at one
combination of sweep values and one repetition. :func:`plan_for` is the one
place that loads a placement's topology, applies the experiment's overrides
and one sweep point, and builds its plan; the runner, ``predict``, ``check``,
the benches and the pytest plugin all go through it (or through
:func:`plan_for_topology` when there is no experiment).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corridor.planning.plan import Plan
from corridor.spec.experiment import (
    FIBRE_MS_PER_KM,
    LOCAL_TOPOLOGY,
    Experiment,
    Placement,
    SweepPoint,
    WorkloadSpec,
)
from corridor.workloads import registry


@dataclass(frozen=True)
class Point:
    """One unit of work; finished points are never run again."""

    point_id: str
    placement: str
    group: str  # the workload name, or the tenant group's name
    workloads: tuple[str, ...]
    sweep: SweepPoint
    sweep_index: int
    repetition: int
    seed: int

    @property
    def network_key(self) -> tuple[Any, ...]:
        return (self.placement, self.sweep)

    def label(self) -> str:
        rep = f" rep {self.repetition + 1}" if self.repetition else ""
        return f"{self.group} @ {self.placement} ({self.sweep.label()}){rep}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "point_id": self.point_id,
            "placement": self.placement,
            "group": self.group,
            "workloads": list(self.workloads),
            "sweep": self.sweep.as_dict(),
            "sweep_index": self.sweep_index,
            "sweep_label": self.sweep.label(),
            "repetition": self.repetition,
            "seed": self.seed,
        }


def expand_points(exp: Experiment, repetitions: Sequence[int] | None = None) -> list[Point]:
    """All points of an experiment, in run order (grouped so points share networks).

    ``repetitions`` are the repetition indices to expand (default: the
    experiment's ``0 .. repetitions-1``); the precision loop asks for one more.
    """
    groups: list[tuple[str, tuple[str, ...]]] = [(w.name, (w.name,)) for w in exp.workloads]
    groups += [(t.name, t.workloads) for t in exp.tenants]
    points: list[Point] = []
    seen: set[str] = set()
    for sweep_index, sweep in enumerate(exp.sweep.points()):
        for placement in exp.placements:
            effective = sweep
            if placement.topology == LOCAL_TOPOLOGY:
                effective = dataclasses.replace(sweep, distance_km=None, delay_scale=None, rate_mbps=None, loss=None)
            for rep in (range(exp.repetitions) if repetitions is None else repetitions):
                for group, members in groups:
                    if not all(exp.workload(m).runs_in(placement.name) for m in members):
                        continue
                    host_part = "-".join(str(v) for v in effective.host_key())
                    wan_part = "-".join("_" if v is None else f"{v:g}" for v in effective.wan_key())
                    point_id = f"{placement.name}|{group}|{wan_part}|{host_part}|r{rep}"
                    if point_id in seen:
                        continue
                    seen.add(point_id)
                    seed = zlib.crc32(f"{exp.seed}:{group}:{rep}".encode()) & 0x7FFFFFFF
                    points.append(Point(point_id, placement.name, group, members, effective, sweep_index, rep, seed))
    return points


def plan_for(exp: Experiment, placement: Placement, sweep: SweepPoint) -> Plan:
    """Build the plan a placement runs on at one sweep point (topology, overrides, sweep values).

    With the experiment's ``scale`` key the plan is the scale model
    (:mod:`corridor.planning.scale`): rates and queues divided by :func:`scale_for`, the
    factor in ``plan.meta["scale"]``.
    """
    from corridor.planning.scale import scale_plan

    return scale_plan(full_scale_plan_for(exp, placement, sweep), scale_for(exp))


def full_scale_plan_for(exp: Experiment, placement: Placement, sweep: SweepPoint) -> Plan:
    """The plan of :func:`plan_for` before any scale-model division (the rates the spec gives)."""
    from corridor.planning.planner import build_plan
    from corridor.spec.topospec import load_topology, override_links

    topology = placement.topology or exp.topology
    spec = load_topology(topology)
    if topology != LOCAL_TOPOLOGY:
        overrides = link_overrides(exp, sweep)
        if overrides:
            spec = override_links(spec, **overrides)
    return build_plan(spec)


#: Resolved ``scale: auto`` factors, by experiment object (an experiment is immutable once loaded).
_AUTO_SCALES: dict[int, tuple[Experiment, float]] = {}


def scale_for(exp: Experiment) -> float:
    """The experiment's scale factor: 1 without the key, the number given, or for ``auto`` the smallest
    factor that fits every WAN link of every placement at every sweep point (corridor.planning.scale.auto_scale).

    One factor for the whole experiment, so every point (the local baseline too) is the same scale model.
    """
    if exp.scale is None:
        return 1.0
    if not isinstance(exp.scale, str):
        return float(exp.scale)
    cached = _AUTO_SCALES.get(id(exp))
    if cached is not None and cached[0] is exp:
        return cached[1]
    from corridor.planning.scale import auto_scale

    rates: list[float] = []
    for sweep in exp.sweep.points():
        for placement in exp.placements:
            plan = full_scale_plan_for(exp, placement, sweep)
            rates += [d.rate_mbps for link in plan.wan_links for d in (link.a_to_b, link.b_to_a)]
    factor = auto_scale(rates)
    _AUTO_SCALES[id(exp)] = (exp, factor)
    return factor


def params_for(w: WorkloadSpec, plan: Plan) -> Any:
    """The workload's parameters for a network built from ``plan``: divided by the plan's scale factor."""
    from corridor.planning.scale import plan_scale, scaled_params

    return scaled_params(registry.get(w.kind), w.params, plan_scale(plan))


def link_overrides(exp: Experiment, sweep: SweepPoint) -> dict[str, Any]:
    """The ``override_links`` keyword arguments for the experiment's overrides plus one sweep point."""
    overrides: dict[str, Any] = dict(exp.overrides)
    if sweep.distance_km is not None:
        # A swept distance is fibre path length; it sets the one-way delay at 4.90 us/km.
        overrides.pop("delay_scale", None)
        overrides["delay"] = f"{sweep.distance_km * FIBRE_MS_PER_KM:.6g}ms"
    if sweep.delay_scale is not None:
        overrides["delay_scale"] = float(overrides.get("delay_scale", 1.0)) * sweep.delay_scale
    if sweep.rate_mbps is not None:
        overrides["rate"] = f"{sweep.rate_mbps:.9g}Mbit"
    if sweep.loss is not None:
        overrides["loss"] = sweep.loss
    return overrides


def hosts_for(plan: Plan, placement: Placement, workload: WorkloadSpec, *, role_names: Sequence[str] = ()) -> Any:
    """The hosts argument of a workload's ``run``/``predict`` for one placement (the kind decides)."""
    return registry.get(workload.kind).hosts(plan, placement, workload, role_names=role_names)


def role_names(exp: Experiment) -> list[str]:
    names: list[str] = []
    for placement in exp.placements:
        for role, _ in placement.roles:
            if role not in names:
                names.append(role)
    return names




def plan_for_topology(topology: str, **overrides: Any) -> Plan:
    """Load a topology (preset name or file), apply link overrides (``override_links`` keywords), build its plan."""
    from corridor.planning.planner import build_plan
    from corridor.spec.topospec import load_topology, override_links

    spec = load_topology(topology)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        spec = override_links(spec, **given)
    return build_plan(spec)
