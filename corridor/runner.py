"""The experiment runner: expands an experiment into points and runs them into a run directory.

Stage: workload run (needs root for the emulated network). A *point* is one
workload (or one group of tenants running at the same time) in one placement at
one combination of sweep values and one repetition. Points that share a
placement and sweep values share one emulated network, built once through
:class:`corridor.emulation.network.CorridorNetwork` and torn down after them.

Each finished point's records and its ``point`` marker are appended and fsynced
to ``records.jsonl`` before the next point starts, so Ctrl-C keeps everything
finished and :func:`run_experiment` with ``resume=True`` skips exactly those
points. The local baseline placement ignores the WAN sweep axes (distance,
delay scale, rate, loss): it runs once per combination of the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from corridor.emulation.api import Network
from corridor.errors import CorridorError, EmulationError, NeedsRootError, RunDirError, SpecError
from corridor.experiment import (
    FIBRE_MS_PER_KM,
    LOCAL_TOPOLOGY,
    Experiment,
    Placement,
    SweepPoint,
    WorkloadSpec,
    workload_module,
)
from corridor.plan import Plan
from corridor.rundir import SESSION_KIND, RunWriter, environment, utc_now

log = logging.getLogger(__name__)

#: Seconds between link statistics samples while a point runs.
LINK_SAMPLE_INTERVAL_S = 0.5


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


@dataclass(frozen=True)
class Progress:
    """What the runner reports while it works."""

    done: int
    total: int
    skipped: int
    current: str | None
    eta_s: float | None
    message: str


class NetworkFactory(Protocol):
    def __call__(self, plan: Plan, *, backend: str, time_scale: float) -> contextlib.AbstractContextManager[Any]: ...


def expand_points(exp: Experiment) -> list[Point]:
    """All points of an experiment, in run order (grouped so points share networks)."""
    groups: list[tuple[str, tuple[str, ...]]] = [(w.name, (w.name,)) for w in exp.workloads]
    groups += [(t.name, t.workloads) for t in exp.tenants]
    points: list[Point] = []
    seen: set[str] = set()
    for sweep_index, sweep in enumerate(exp.sweep.points()):
        for placement in exp.placements:
            effective = sweep
            if placement.topology == LOCAL_TOPOLOGY:
                effective = dataclasses.replace(sweep, distance_km=None, delay_scale=None, rate_mbps=None, loss=None)
            for rep in range(exp.repetitions):
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
    """Build the plan a placement runs on at one sweep point (topology, overrides, sweep values)."""
    from corridor.planner import build_plan
    from corridor.spec import load_topology, override_links

    topology = placement.topology or exp.topology
    spec = load_topology(topology)
    if topology != LOCAL_TOPOLOGY:
        overrides = link_overrides(exp, sweep)
        if overrides:
            spec = override_links(spec, **overrides)
    return build_plan(spec)


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
    """The hosts argument of a workload's ``run``/``predict`` for one placement.

    Training: the ordered rank list (GPU hosts of ``placement.ranks``, site by site,
    balanced across sites when ``max_ranks`` trims it). Inference: a dict with
    ``servers``, ``clients`` and any extra roles (``prefill``, ``decode``, ...).
    ``role_names`` are roles other placements use; a placement that does not name
    them (the local baseline) gets them from its own GPU hosts, split evenly.
    """
    if workload.kind == "training":
        return _balanced(plan, placement.ranks, "gpu", workload.max_ranks, placement.name)
    roles = dict(placement.roles)
    hosts: dict[str, list[str]] = {
        "servers": _balanced(plan, placement.servers, "gpu", workload.max_ranks, placement.name),
        "clients": _balanced(plan, placement.clients, "client", None, placement.name),
    }
    missing = [r for r in role_names if r not in roles]
    for role, sites in roles.items():
        hosts[role] = _balanced(plan, sites, "gpu", workload.max_ranks, placement.name)
    if missing:
        # Roles this placement does not name (the local baseline) take other GPU hosts of the server
        # sites, as many as there are servers, so e.g. prefill and decode stay on different hosts.
        pool = [h for h in _balanced(plan, placement.servers, "gpu", None, placement.name)
                if h not in hosts["servers"]] or list(hosts["servers"])
        n = len(hosts["servers"])
        for i, role in enumerate(missing):
            hosts[role] = [pool[(i * n + j) % len(pool)] for j in range(n)]
    return hosts


def _balanced(plan: Plan, sites: Sequence[str], role: str, limit: int | None, placement: str) -> list[str]:
    per_site: list[list[str]] = []
    for site in sites:
        try:
            plan.site(site)
        except KeyError:
            names = ", ".join(s.name for s in plan.sites)
            raise SpecError(f"placement {placement!r} names site {site!r}, but the topology {plan.name!r} "
                            f"has only: {names}") from None
        found = [h.name for h in plan.hosts(site=site, role=role)]
        if not found:
            raise SpecError(f"placement {placement!r}: site {site!r} has no {role} hosts in topology {plan.name!r}")
        per_site.append(found)
    if limit is None:
        return [h for hosts in per_site for h in hosts]
    chosen: list[list[str]] = [[] for _ in per_site]
    total = 0
    depth = 0
    while total < limit and any(depth < len(h) for h in per_site):
        for i, hosts in enumerate(per_site):
            if depth < len(hosts) and total < limit:
                chosen[i].append(hosts[depth])
                total += 1
        depth += 1
    return [h for hosts in chosen for h in hosts]


def role_names(exp: Experiment) -> list[str]:
    names: list[str] = []
    for placement in exp.placements:
        for role, _ in placement.roles:
            if role not in names:
                names.append(role)
    return names


def default_network_factory(plan: Plan, *, backend: str, time_scale: float) -> contextlib.AbstractContextManager[Any]:
    try:
        from corridor.emulation.network import CorridorNetwork
    except ImportError as exc:
        raise EmulationError(f"the emulation layer cannot be loaded here: {exc}") from exc

    net: contextlib.AbstractContextManager[Any] = CorridorNetwork(plan, backend=backend, time_scale=time_scale)
    return net


def planned_manifest(exp: Experiment, points: Sequence[Point], *, backend: str | None) -> dict[str, Any]:
    return {
        "experiment": exp.as_dict(),
        "points": [p.as_dict() for p in points],
        "backend_requested": backend or "per sweep (see points)",
        "backend_note": "the backend each point ran on, and why it was picked, is in its 'point' record",
    }


def run_experiment(
    exp: Experiment,
    out: str,
    *,
    resume: bool = False,
    backend: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    plan_builder: Callable[[Experiment, Placement, SweepPoint], Plan] | None = None,
    network_factory: NetworkFactory | None = None,
    command: Sequence[str] = (),
) -> RunWriter:
    """Run every point of ``exp`` not yet finished in ``out``; returns the writer.

    ``backend`` overrides the sweep's backend axis. On Ctrl-C the finished points
    stay on disk, the summary says "interrupted" and KeyboardInterrupt propagates.
    """
    if exp.model_only:
        raise SpecError("is a model-only experiment (model_only: true); use `corridor predict`", path=exp.source)
    plan_builder = plan_builder or plan_for
    network_factory = network_factory or default_network_factory
    points = expand_points(exp)
    if backend is not None:
        points = [dataclasses.replace(p, sweep=dataclasses.replace(p.sweep, backend=backend)) for p in points]
    if resume:
        writer = RunWriter.resume(out)
        planned = [p["point_id"] for p in writer.manifest.get("points", [])]
        if planned != [p.point_id for p in points]:
            raise RunDirError(
                f"{out} was started from a different experiment or sweep (its planned points differ); "
                "resume it with the same experiment file, or start a new run with another --out"
            )
    else:
        writer = RunWriter.create(out, {**planned_manifest(exp, points, backend=backend), "command": list(command)})
    done_before = writer.done_points()
    todo = [p for p in points if p.point_id not in done_before]
    session = sum(1 for _ in _sessions(writer)) + 1
    writer.append([{"kind": SESSION_KIND, "session": session, "resume": resume, "points_todo": len(todo),
                    "points_skipped": len(points) - len(todo), **environment()}])
    skipped = len(points) - len(todo)
    started = time.monotonic()
    durations: list[float] = []
    status = "interrupted"
    model = _Model(exp, plan_builder)

    def report(current: Point | None, message: str) -> None:
        if progress is None:
            return
        done = len(writer.done_points())
        remaining = len(points) - done
        eta = (sum(durations) / len(durations)) * remaining if durations else None
        progress(Progress(done=done, total=len(points), skipped=skipped,
                          current=current.label() if current else None, eta_s=eta, message=message))

    try:
        report(None, f"{len(todo)} points to run, {skipped} already finished")
        for key, batch in _batches(todo):
            placement = exp.placement(key[0])
            sweep: SweepPoint = key[1]
            _run_batch(exp, placement, sweep, batch, writer, session, durations, report, plan_builder,
                       network_factory, model)
        status = "complete"
    finally:
        _write_summary(writer, points, status, session, time.monotonic() - started)
    return writer


def _sessions(writer: RunWriter) -> Iterator[None]:
    from corridor.rundir import read_run

    for record in read_run(writer.path).records:
        if record.get("kind") == SESSION_KIND and "point_id" not in record:
            yield None


def _batches(points: Sequence[Point]) -> Iterator[tuple[tuple[Any, ...], list[Point]]]:
    batch: list[Point] = []
    key: tuple[Any, ...] | None = None
    for point in points:
        if key is not None and point.network_key != key:
            yield key, batch
            batch = []
        key = point.network_key
        batch.append(point)
    if batch and key is not None:
        yield key, batch


def _run_batch(
    exp: Experiment,
    placement: Placement,
    sweep: SweepPoint,
    batch: Sequence[Point],
    writer: RunWriter,
    session: int,
    durations: list[float],
    report: Callable[[Point | None, str], None],
    plan_builder: Callable[[Experiment, Placement, SweepPoint], Plan],
    network_factory: NetworkFactory,
    model: _Model,
) -> None:
    plan = plan_builder(exp, placement, sweep)
    report(batch[0], f"building network for {placement.name} ({sweep.label()})")
    try:
        context = network_factory(plan, backend=sweep.backend, time_scale=sweep.time_scale)
        with _import_errors_as_emulation_errors(), context as net:
            tuned = _tune(net, sweep)
            for point in batch:
                report(point, f"running {point.label()}")
                _run_point(exp, placement, plan, net, point, writer, session, durations, tuned, model)
    except NeedsRootError:
        raise
    except EmulationError as exc:
        if all(p.point_id in writer.done_points() for p in batch):
            log.warning("network teardown for %s reported: %s", placement.name, exc)
            return
        # The machine, not the workload, failed: stop here so a resume retries these points.
        raise EmulationError(f"network for placement {placement.name} ({sweep.label()}) failed: {exc}") from exc


@contextlib.contextmanager
def _import_errors_as_emulation_errors() -> Iterator[None]:
    try:
        yield
    except ImportError as exc:
        raise EmulationError(f"the emulation layer cannot be loaded here: {exc}") from exc


def _tune(net: Any, sweep: SweepPoint) -> dict[str, Any]:
    """Apply the swept congestion control to every host; returns what was set, for the point record.

    Uses the network's ``tune_tcp`` where it has one; otherwise sets the
    per-namespace sysctl in each emulated host (never on a loopback stand-in,
    whose hosts share this machine's own namespace).
    """
    if sweep.cc is None:
        return {}
    tune = getattr(net, "tune_tcp", None)
    if callable(tune):
        result = tune(cc=sweep.cc)
        return dict(result) if isinstance(result, Mapping) else {"cc": sweep.cc}
    if getattr(net, "backend", "local") == "local":
        raise SpecError(f"cannot set congestion control {sweep.cc!r} on a loopback network (it would change "
                        "this machine's own setting)")
    for host in net.hosts():
        done = net.run(host, ["sysctl", "-w", f"net.ipv4.tcp_congestion_control={sweep.cc}"], timeout_s=10.0)
        if done.returncode != 0:
            raise EmulationError(f"{host}: setting congestion control {sweep.cc!r} failed: "
                                 f"{(done.stderr or done.stdout).strip()}")
    return {"cc": sweep.cc, "how": "net.ipv4.tcp_congestion_control in every host namespace"}


def _run_point(
    exp: Experiment,
    placement: Placement,
    plan: Plan,
    net: Network,
    point: Point,
    writer: RunWriter,
    session: int,
    durations: list[float],
    tuned: Mapping[str, Any],
    model: _Model,
) -> None:
    t0 = time.monotonic()
    roles = role_names(exp)
    results: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    workloads = [exp.workload(name) for name in point.workloads]

    def one(w: WorkloadSpec, on: Any = net) -> None:
        try:
            hosts = hosts_for(plan, placement, w, role_names=roles)
            module = workload_module(w.kind)
            results[w.name] = list(module.run(on, w.params, hosts=hosts, seed=point.seed, timeout_s=w.timeout_s,
                                              progress=lambda msg, name=w.name: log.info("%s: %s", name, msg)))
        except CorridorError as exc:
            errors[w.name] = str(exc)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the runner's thread below
            crashed.append(exc)

    crashed: list[BaseException] = []
    records_model = [model.record(w, placement, plan, point) for w in workloads]
    sampler = _LinkSampler(net, plan)
    with sampler:
        if len(workloads) == 1:
            one(workloads[0])
        else:
            shared = _SharedNetwork(net)
            threads = [threading.Thread(target=one, args=(w, shared), name=f"tenant-{w.name}", daemon=True)
                       for w in workloads]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
    if crashed:
        # A tenant hit Ctrl-C or a bug: the point is not finished, so nothing of it is written.
        raise crashed[0]
    duration = time.monotonic() - t0
    common = {"placement": point.placement, "group": point.group, "repetition": point.repetition,
              **{f"sweep_{k}": v for k, v in point.sweep.as_dict().items()}}
    records: list[dict[str, Any]] = []
    for w in workloads:
        for record in results.get(w.name, []):
            records.append({**record, **common, "workload": w.name})
    records += [{**s, **common} for s in sampler.samples]
    records += [{**r, **common} for r in records_model]
    status = "failed" if errors else "ok"
    info = {**_point_info(point, plan, net, session, duration, tuned, placement), "status": status,
            "error": "; ".join(f"{k}: {v}" for k, v in errors.items()) or None,
            "n_records": len(records)}
    writer.finish_point(point.point_id, records, info)
    durations.append(duration)


def _point_info(point: Point, plan: Plan, net: Any, session: int, duration_s: float,
                tuned: Mapping[str, Any], placement: Placement | None = None) -> dict[str, Any]:
    return {
        **point.as_dict(),
        "session": session,
        "duration_s": round(duration_s, 3),
        "started_utc": utc_now(),
        "backend": getattr(net, "backend", None),
        "backend_reason": getattr(net, "backend_reason", None),
        "time_scale": getattr(net, "time_scale", point.sweep.time_scale),
        "tcp": dict(tuned),
        "network": _describe(net),
        "plan": plan_summary(plan, placement),
    }


def _describe(net: Any) -> dict[str, Any]:
    describe = getattr(net, "describe", None)
    if not callable(describe):
        return {}
    try:
        return dict(describe())
    except Exception as exc:  # noqa: BLE001 - a description must never fail a finished point
        return {"error": str(exc)}


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
    """The WAN figures analysis needs: every link, and the placement's corridor path (RTT, km, rate, loss)."""
    links: list[dict[str, Any]] = []
    for link in plan.wan_links:
        d = link.derivation
        links.append({
            "name": link.name, "a": link.a, "b": link.b,
            "rate_mbps": link.a_to_b.rate_mbps, "one_way_ms": link.a_to_b.delay_ms, "rtt_ms": link.rtt_ms,
            "loss": link.a_to_b.loss, "queue_bytes": link.a_to_b.queue_bytes,
            "path_km": d.path_km if d.path_km is not None else link.a_to_b.delay_ms / FIBRE_MS_PER_KM,
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
        "min_rate_mbps": min((float(lk["rate_mbps"]) for lk in on_path), default=None),
        "path_loss": 1.0 - _product(1.0 - float(lk["loss"]) for lk in on_path),
    }


def _product(values: Iterator[float]) -> float:
    out = 1.0
    for v in values:
        out *= v
    return out


class _SharedNetwork:
    """The network as tenants running in threads see it: starting processes is serialised.

    Tenants start their agents at the same moment; the network's bookkeeping of
    started processes is not written for concurrent callers, and a start takes
    milliseconds, so one lock costs nothing measurable.
    """

    def __init__(self, net: Any) -> None:
        self._net = net
        self._lock = threading.Lock()

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> Any:
        with self._lock:
            return self._net.popen(host, argv, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._net, name)


class _LinkSampler:
    """Samples ``net.link_stats`` for every WAN link in a background thread while a point runs."""

    def __init__(self, net: Any, plan: Plan) -> None:
        self._net = net
        self._links = [link.name for link in plan.wan_links]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples: list[dict[str, Any]] = []

    def __enter__(self) -> _LinkSampler:
        if self._links and callable(getattr(self._net, "link_stats", None)):
            self._t0 = time.monotonic()
            self._thread = threading.Thread(target=self._loop, name="link-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def _loop(self) -> None:
        while True:
            t = time.monotonic() - self._t0
            for name in self._links:
                try:
                    stats = self._net.link_stats(name)
                except Exception as exc:  # noqa: BLE001 - sampling must never break a point
                    log.debug("link_stats(%s) failed, sampling stopped: %s", name, exc)
                    return
                self.samples.append({"kind": "link_sample", "link": name, "t_s": round(t, 3), **_flatten(stats)})
            if self._stop.wait(LINK_SAMPLE_INTERVAL_S):
                return


def _flatten(stats: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    if isinstance(stats, Mapping):
        for key, value in stats.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                flat.update(_flatten(value, name + "."))
            elif isinstance(value, (int, float, str, bool)) or value is None:
                flat[name] = value
    return flat


def _write_summary(writer: RunWriter, points: Sequence[Point], status: str, session: int, duration_s: float) -> None:
    from corridor.rundir import read_run

    run = read_run(writer.path)
    markers = run.points
    backends = sorted({f"{m.get('backend')}: {m.get('backend_reason')}" for m in markers.values() if m.get("backend")})
    writer.write_summary({
        "status": status if len(markers) < len(points) or status != "interrupted" else "complete",
        "points_total": len(points),
        "points_done": len(markers),
        "points_failed": sum(1 for m in markers.values() if m.get("status") != "ok"),
        "sessions": session,
        "last_session_s": round(duration_s, 1),
        "backends": backends,
        "updated_utc": utc_now(),
    })


# -- the analytic model, per point and as a distance scan ---------------------------------------------

#: Keys the workload models may use for the figure a verdict judges, in order of preference.
MODEL_KEYS: dict[str, tuple[str, ...]] = {
    # Amortised step time first: DiLoCo's plain step_time_s leaves out the outer sync every H steps.
    "step_time_s": ("mean_step_time_s", "step_time_s", "predicted_step_time_s"),
    "utilisation": ("utilisation", "compute_utilisation", "utilization"),
    "ttft_s": ("ttft_s", "ttft_p50_s", "ttft_mean_s", "predicted_ttft_s"),
    "tpot_s": ("tpot_s", "tpot_p50_s", "tpot_mean_s", "predicted_tpot_s"),
}


def model_figures(predicted: Mapping[str, Any]) -> dict[str, float]:
    """The figures verdicts use (step_time_s, utilisation, ttft_s, tpot_s) from a ``predict`` result."""
    out: dict[str, float] = {}
    for name, keys in MODEL_KEYS.items():
        for key in keys:
            value = predicted.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[name] = float(value)
                break
    compute = predicted.get("compute_s")
    if "utilisation" not in out and isinstance(compute, (int, float)) and out.get("step_time_s"):
        out["utilisation"] = float(compute) / out["step_time_s"]
    return out


def predict_workload(w: WorkloadSpec, plan: Plan, hosts: Any, *, time_scale: float = 1.0) -> dict[str, Any]:
    """The workload module's analytic prediction, flattened to JSON-able scalars."""
    predicted = workload_module(w.kind).predict(w.params, plan, hosts=hosts, time_scale=time_scale)
    return _flatten(predicted)


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
    from corridor.experiment import InferenceSlo, TrainingSlo

    if isinstance(w.slo, TrainingSlo):
        if "step_time_s" not in remote or not local.get("step_time_s"):
            return None
        return w.slo.judge(remote["step_time_s"] / local["step_time_s"])
    assert isinstance(w.slo, InferenceSlo)
    if "ttft_s" not in remote:
        return None
    tpot = remote.get("tpot_s")
    return w.slo.judge(remote["ttft_s"] * 1e3, tpot * 1e3 if tpot is not None else None)


def stop_distance(w: WorkloadSpec, plan: Plan, hosts: Any, local: Mapping[str, float], *,
                  placement: Placement | None = None, time_scale: float = 1.0) -> dict[str, Any]:
    """Scan the WAN delay (as fibre km at 4.90 us/km) for where the model stops saying "tolerates".

    Returns ``stop_km`` (None when it tolerates across the whole scan, or not even
    at the shortest distance), ``stop_rtt_ms`` and a sentence.
    """
    from corridor.experiment import TOLERATES

    if not plan.wan_links:
        return {"stop_km": None, "stop_rtt_ms": None, "note": "no WAN link to scale"}
    summary = plan_summary(plan, placement)
    base_km = summary["max_path_km"] or 1.0
    base_rtt = summary["max_rtt_ms"]

    def judge(factor: float) -> str | None:
        figures = model_figures(predict_workload(w, scale_delays(plan, factor), hosts, time_scale=time_scale))
        return model_verdict(w, figures, local)

    def ok(factor: float) -> bool | None:
        verdict = judge(factor)
        return None if verdict is None else verdict == TOLERATES

    low, high = 1e-3, 1e3 / max(base_km, 1.0) * 10.0  # scan up to about 10,000 km
    at_low, at_high = ok(low), ok(high)
    if at_low is None or at_high is None:
        return {"stop_km": None, "stop_rtt_ms": None, "note": "the model gives no figure to judge"}
    if at_high:
        return {"stop_km": None, "stop_rtt_ms": None,
                "note": f"model: tolerates at every distance up to {base_km * high:,.0f} km"}
    if not at_low:
        return {"stop_km": 0.0, "stop_rtt_ms": 0.0,
                "note": f"model: {judge(low)} even at {base_km * low:,.0f} km (the link rate, not the distance, "
                        "is the limit)"}
    for _ in range(40):
        mid = (low * high) ** 0.5
        if ok(mid):
            low = mid
        else:
            high = mid
        if high / low < 1.002:
            break
    return {"stop_km": round(base_km * high, 1), "stop_rtt_ms": round(base_rtt * high, 3),
            "note": f"model: stops tolerating beyond about {base_km * high:,.0f} km (RTT {base_rtt * high:.1f} ms)"}


class _Model:
    """Caches local-baseline predictions and stop distances while a run goes on."""

    def __init__(self, exp: Experiment, plan_builder: Callable[[Experiment, Placement, SweepPoint], Plan]) -> None:
        self.exp = exp
        self.plan_builder = plan_builder
        self._local: dict[tuple[str, SweepPoint], dict[str, float]] = {}
        self._stop: dict[tuple[str, str, SweepPoint], dict[str, Any]] = {}

    def local_figures(self, w: WorkloadSpec, sweep: SweepPoint) -> dict[str, float]:
        from corridor.experiment import LOCAL_PLACEMENT

        base = dataclasses.replace(sweep, distance_km=None, delay_scale=None, rate_mbps=None, loss=None)
        key = (w.name, base)
        if key not in self._local:
            local = self.exp.placement(LOCAL_PLACEMENT)
            plan = self.plan_builder(self.exp, local, base)
            hosts = hosts_for(plan, local, w, role_names=role_names(self.exp))
            self._local[key] = model_figures(predict_workload(w, plan, hosts))
        return self._local[key]

    def record(self, w: WorkloadSpec, placement: Placement, plan: Plan, point: Point) -> dict[str, Any]:
        """A ``prediction`` record for one workload at one point (an ``error`` field if the model failed)."""
        record: dict[str, Any] = {"kind": "prediction", "workload": w.name, "model_only": True}
        try:
            hosts = hosts_for(plan, placement, w, role_names=role_names(self.exp))
            predicted = predict_workload(w, plan, hosts)
            figures = model_figures(predicted)
            record.update({f"model_{k}": v for k, v in figures.items()})
            record.update({f"predicted.{k}": v for k, v in predicted.items()})
            if plan.wan_links:
                local = self.local_figures(w, point.sweep)
                record.update({f"local_model_{k}": v for k, v in local.items()})
                record["model_verdict"] = model_verdict(w, figures, local)
                key = (w.name, placement.name, point.sweep)
                if key not in self._stop:
                    self._stop[key] = stop_distance(w, plan, hosts, local, placement=placement)
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
    from corridor.experiment import LOCAL_PLACEMENT

    plan_builder = plan_builder or plan_for
    model = _Model(exp, plan_builder)
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
