"""The analytic prediction layer: the model's figures per point, the baseline's, and where a workload stops tolerating.

Stage: model/analysis (pure: no root, no network; ``corridor predict`` runs
through this module alone). For each workload at each placement the workload's
kind predicts the statistic its verdict compares; :func:`stop_points` scans the
WAN delay (as fibre km) and the WAN rate for where the model's verdict changes,
so a row can say at which distance and below which rate it stops tolerating.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from corridor.errors import CorridorError
from corridor.planning.plan import Plan
from corridor.planning.points import Point, expand_points, hosts_for, params_for, plan_for, role_names
from corridor.spec.experiment import FIBRE_MS_PER_KM, LOCAL_PLACEMENT, Experiment, Placement, SweepPoint, WorkloadSpec
from corridor.workloads import registry

log = logging.getLogger(__name__)


def corridor_sites(placement: Placement) -> tuple[str, str]:
    """The two sites whose path is "the corridor" of a placement.

    Servers to clients if they differ, else an extra role (e.g. prefill) to the
    servers, else the first to the last training rank.
    """
    if placement.servers[0] != placement.clients[0]:
        return placement.servers[0], placement.clients[0]
    for _, sites in placement.roles:
        if sites[0] != placement.servers[0]:
            return sites[0], placement.servers[0]
    return placement.ranks[0], placement.ranks[-1]


def plan_summary(plan: Plan, placement: Placement | None = None) -> dict[str, Any]:
    """The WAN figures analysis needs: every link, and the placement's corridor path (RTT, km, rate, loss).

    The same plan fields ``topo show`` prints: ``great_circle_km`` (the "gc km"
    column) and ``fibre_km`` (the "fibre km" column; None for a link given by
    its delay alone). ``path_km`` is the fibre a distance scan scales: the fibre
    km where the model derived it, else the delay's fibre equivalent at
    4.90 us/km (``path_km_is_equivalent``).
    """
    links: list[dict[str, Any]] = []
    for link in plan.wan_links:
        d = link.derivation
        links.append({
            "name": link.name, "a": link.a, "b": link.b,
            "rate_mbps": link.a_to_b.rate_mbps, "one_way_ms": link.a_to_b.delay_ms, "rtt_ms": link.rtt_ms,
            "loss": link.a_to_b.loss, "queue_bytes": link.a_to_b.queue_bytes,
            "path_km": d.path_km if d.path_km is not None else link.a_to_b.delay_ms / FIBRE_MS_PER_KM,
            "path_km_is_equivalent": d.path_km is None,
            "fibre_km": d.path_km,
            "great_circle_km": d.great_circle_km,
        })
    on_path = links
    if placement is not None and links:
        src, dst = corridor_sites(placement)
        try:
            names = {link.name for link, _ in plan.path(src, dst)}
        except (KeyError, CorridorError, AttributeError):
            names = {lk["name"] for lk in links}
        on_path = [lk for lk in links if lk["name"] in names]
    return {
        "name": plan.name,
        "sites": [s.name for s in plan.sites],
        "wan_links": links,
        "path_links": [lk["name"] for lk in on_path],
        "max_rtt_ms": sum(float(lk["rtt_ms"]) for lk in on_path),
        "max_path_km": sum(float(lk["path_km"]) for lk in on_path),
        "great_circle_km": (sum(float(lk["great_circle_km"]) for lk in on_path)
                            if on_path and all(lk["great_circle_km"] is not None for lk in on_path) else None),
        "fibre_km": (sum(float(lk["fibre_km"]) for lk in on_path)
                     if on_path and all(lk["fibre_km"] is not None for lk in on_path) else None),
        "min_rate_mbps": min((float(lk["rate_mbps"]) for lk in on_path), default=None),
        "path_loss": 1.0 - _product(1.0 - float(lk["loss"]) for lk in on_path),
    }


def _product(values: Iterator[float]) -> float:
    out = 1.0
    for v in values:
        out *= v
    return out


def flatten(stats: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    if isinstance(stats, Mapping):
        for key, value in stats.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                flat.update(flatten(value, name + "."))
            elif isinstance(value, (int, float, str, bool)) or value is None:
                flat[name] = value
    return flat



def model_figures(w: WorkloadSpec, predicted: Mapping[str, Any]) -> dict[str, float]:
    """The figures verdicts compare (same statistic as the verdict), from a ``predict`` result."""
    return registry.get(w.kind).model_figures(predicted, w.slo)


def predict_workload(w: WorkloadSpec, plan: Plan, hosts: Any, *, time_scale: float = 1.0,
                     seed: int | None = None) -> dict[str, Any]:
    """The kind's analytic prediction of the statistic its verdict compares, flattened to JSON-able scalars.

    ``seed`` is the point's: a kind whose model replays the workload's own
    schedule (inference) replays the same one the agents ran.
    """
    # a scale model's plan is predicted with the sizes the agents run (corridor.planning.scale): times are the same
    predicted = registry.get(w.kind).predict(params_for(w, plan), plan, hosts=hosts, time_scale=time_scale,
                                             slo=w.slo, seed=seed)
    return flatten(predicted)


def scale_delays(plan: Plan, factor: float) -> Plan:
    """The same plan with every WAN one-way delay (and jitter) multiplied by ``factor``."""
    links = []
    for link in plan.wan_links:
        links.append(dataclasses.replace(
            link,
            a_to_b=dataclasses.replace(link.a_to_b, delay_ms=link.a_to_b.delay_ms * factor,
                                       jitter_ms=link.a_to_b.jitter_ms * factor),
            b_to_a=dataclasses.replace(link.b_to_a, delay_ms=link.b_to_a.delay_ms * factor,
                                       jitter_ms=link.b_to_a.jitter_ms * factor),
        ))
    return dataclasses.replace(plan, wan_links=tuple(links))


def model_verdict(w: WorkloadSpec, remote: Mapping[str, float], local: Mapping[str, float]) -> str | None:
    """The verdict the model gives, from figures of :func:`model_figures`; None if it lacks them."""
    return registry.get(w.kind).model_verdict(w.slo, remote, local)


def scale_rates(plan: Plan, factor: float) -> Plan:
    """The same plan with every WAN rate (and so its BDP queue) multiplied by ``factor``."""
    links = []
    for link in plan.wan_links:
        links.append(dataclasses.replace(
            link,
            a_to_b=dataclasses.replace(link.a_to_b, rate_mbps=link.a_to_b.rate_mbps * factor,
                                       queue_bytes=max(1500, int(link.a_to_b.queue_bytes * factor))),
            b_to_a=dataclasses.replace(link.b_to_a, rate_mbps=link.b_to_a.rate_mbps * factor,
                                       queue_bytes=max(1500, int(link.b_to_a.queue_bytes * factor))),
        ))
    return dataclasses.replace(plan, wan_links=tuple(links))


def _bisect(ok: Callable[[float], bool | None], good: float, bad: float) -> float:
    """The factor between ``good`` (tolerates) and ``bad`` (does not) where the verdict changes, to 0.2 %."""
    for _ in range(40):
        mid = (good * bad) ** 0.5
        if ok(mid):
            good = mid
        else:
            bad = mid
        if max(good, bad) / min(good, bad) < 1.002:
            break
    return bad


def stop_distance(w: WorkloadSpec, plan: Plan, hosts: Any, local: Mapping[str, float], *,
                  placement: Placement | None = None, time_scale: float = 1.0,
                  seed: int | None = None) -> dict[str, Any]:
    """Where the model stops saying "tolerates": per cause, distance and rate.

    Distance: the WAN delay is scaled (as fibre km at 4.90 us/km) from almost
    nothing to about 10,000 km. Rate: at the placement's own distance, every WAN
    rate is scaled from 1/1000 to 1000 times. Returns ``stop_km`` (None when it
    tolerates across the scan, 0 when not even at the shortest distance),
    ``stop_rtt_ms``, ``stop_rate_mbps`` (the rate below which it stops
    tolerating at this distance; None when no rate in the scan changes the
    verdict) and a sentence naming each.
    """
    from corridor.spec.units import format_rate
    from corridor.workloads.kind import TOLERATES

    if not plan.wan_links:
        return {"stop_km": None, "stop_rtt_ms": None, "stop_rate_mbps": None, "note": "no WAN link to scale"}
    summary = plan_summary(plan, placement)
    base_km = summary["max_path_km"] or 1.0
    base_rtt = summary["max_rtt_ms"]
    base_rate = summary["min_rate_mbps"] or 0.0

    def verdict(p: Plan) -> str | None:
        figures = model_figures(w, predict_workload(w, p, hosts, time_scale=time_scale, seed=seed))
        return model_verdict(w, figures, local)

    def ok_delay(factor: float) -> bool | None:
        v = verdict(scale_delays(plan, factor))
        return None if v is None else v == TOLERATES

    def ok_rate(factor: float) -> bool | None:
        v = verdict(scale_rates(plan, factor))
        return None if v is None else v == TOLERATES

    low, high = 1e-3, 1e3 / max(base_km, 1.0) * 10.0  # about 1 m to 10,000 km of fibre
    at_low, at_high = ok_delay(low), ok_delay(high)
    if at_low is None or at_high is None:
        return {"stop_km": None, "stop_rtt_ms": None, "stop_rate_mbps": None,
                "note": "the model gives no figure to judge"}
    out: dict[str, Any] = {"stop_km": None, "stop_rtt_ms": None, "stop_rate_mbps": None}
    notes: list[str] = []
    if at_high:
        notes.append(f"tolerates at every distance up to {base_km * high:,.0f} km of fibre")
    elif not at_low:
        out.update(stop_km=0.0, stop_rtt_ms=0.0)
        notes.append("does not tolerate at any distance: not the round trips but the rate or compute limits it")
    else:
        factor = _bisect(lambda f: bool(ok_delay(f)), low, high)
        out.update(stop_km=round(base_km * factor, 1), stop_rtt_ms=round(base_rtt * factor, 3))
        notes.append(f"stops tolerating beyond about {base_km * factor:,.0f} km of fibre "
                     f"(RTT {base_rtt * factor:.1f} ms)")
    # rate, at this distance
    r_low, r_high = 1e-3, 1e3
    here = ok_rate(1.0)
    slow, fast = ok_rate(r_low), ok_rate(r_high)
    if here is None or slow is None or fast is None or not base_rate:
        pass
    elif slow:
        notes.append(f"at this distance it tolerates at any rate down to {format_rate(base_rate * r_low)}")
    elif not fast:
        notes.append(f"at this distance no rate up to {format_rate(base_rate * r_high)} makes it tolerate "
                     "(the round trips, not the rate, limit it)")
    else:
        factor = _bisect(lambda f: bool(ok_rate(f)), r_high, r_low)
        out["stop_rate_mbps"] = round(base_rate * factor, 3)
        notes.append(f"at this distance it needs at least {format_rate(base_rate * factor)}")
    out["note"] = "model: " + "; ".join(notes)
    return out


class Predictor:
    """Caches local-baseline predictions and stop distances while a run goes on."""

    def __init__(self, exp: Experiment, plan_builder: Callable[[Experiment, Placement, SweepPoint], Plan]) -> None:
        self.exp = exp
        self.plan_builder = plan_builder
        self._local: dict[tuple[str, SweepPoint, int | None], dict[str, float]] = {}
        self._stop: dict[tuple[str, str, SweepPoint], dict[str, Any]] = {}

    def local_figures(self, w: WorkloadSpec, sweep: SweepPoint, seed: int | None = None) -> dict[str, float]:
        base = dataclasses.replace(sweep, distance_km=None, delay_scale=None, rate_mbps=None, loss=None)
        key = (w.name, base, seed)
        if key not in self._local:
            local = self.exp.placement(LOCAL_PLACEMENT)
            plan = self.plan_builder(self.exp, local, base)
            hosts = hosts_for(plan, local, w, role_names=role_names(self.exp))
            self._local[key] = model_figures(w, predict_workload(w, plan, hosts, seed=seed))
        return self._local[key]

    def record(self, w: WorkloadSpec, placement: Placement, plan: Plan, point: Point) -> dict[str, Any]:
        """A ``prediction`` record for one workload at one point (an ``error`` field if the model failed)."""
        record: dict[str, Any] = {"kind": "prediction", "workload": w.name, "model_only": True}
        try:
            hosts = hosts_for(plan, placement, w, role_names=role_names(self.exp))
            predicted = predict_workload(w, plan, hosts, seed=point.seed)
            figures = model_figures(w, predicted)
            record.update({f"model_{k}": v for k, v in figures.items()})
            record.update({f"predicted.{k}": v for k, v in predicted.items()})
            if plan.wan_links:
                local = self.local_figures(w, point.sweep, point.seed)
                record.update({f"local_model_{k}": v for k, v in local.items()})
                record["model_verdict"] = model_verdict(w, figures, local)
                key = (w.name, placement.name, point.sweep)
                if key not in self._stop:
                    self._stop[key] = stop_distance(w, plan, hosts, local, placement=placement, seed=point.seed)
                record.update(self._stop[key])
        except (CorridorError, ArithmeticError, KeyError, TypeError, ValueError, ImportError) as exc:
            log.warning("model for %s at %s failed: %s", w.name, placement.name, exc)
            record["error"] = f"{type(exc).__name__}: {exc}"
        return record


def predict_experiment(
    exp: Experiment,
    *,
    plan_builder: Callable[[Experiment, Placement, SweepPoint], Plan] | None = None,
) -> list[dict[str, Any]]:
    """The analytic model alone for every workload x placement x sweep point: no network, no root.

    Each row carries ``model_only: True``, the model's figures for the placement
    and for the local baseline, the verdict the model gives and the distance at
    which it stops tolerating. Tenant groups are not modelled (shared queues are
    what the emulation is for).
    """
    plan_builder = plan_builder or plan_for
    model = Predictor(exp, plan_builder)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for point in expand_points(exp):
        if point.placement == LOCAL_PLACEMENT or len(point.workloads) != 1:
            continue
        key = (point.placement, point.group, point.sweep)
        if key in seen:
            continue
        seen.add(key)
        placement = exp.placement(point.placement)
        w = exp.workload(point.group)
        plan = plan_builder(exp, placement, point.sweep)
        record = model.record(w, placement, plan, point)
        rows.append({"model_only": True, "workload": w.name, "type": w.type, "kind": w.kind,
                     "placement": placement.name, "sweep": point.sweep.label(),
                     "corridor": plan_summary(plan, placement),
                     **{k: v for k, v in record.items() if k not in ("kind", "workload", "model_only")}})
    return rows
