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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from corridor.analytic.prediction import Predictor, flatten, plan_summary
from corridor.emulation.api import Network
from corridor.emulation.faultsched import FaultInjector
from corridor.errors import CorridorError, EmulationError, NeedsRootError, RunDirError, SpecError
from corridor.links import health
from corridor.planning.plan import Plan
from corridor.planning.points import Point, expand_points, hosts_for, params_for, plan_for, role_names
from corridor.planning.scale import full_scale_record, plan_scale
from corridor.results.rundir import SESSION_KIND, RunWriter, environment, utc_now
from corridor.spec.experiment import (
    Experiment,
    Placement,
    SweepPoint,
    WorkloadSpec,
)
from corridor.workloads import registry

log = logging.getLogger(__name__)

#: Seconds between link statistics samples while a point runs.
LINK_SAMPLE_INTERVAL_S = 0.5


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
    """Builds a point batch's network; ``seed`` seeds its links' random loss and jitter (see :func:`link_seed`)."""

    def __call__(self, plan: Plan, *, backend: str, time_scale: float,
                 seed: int) -> contextlib.AbstractContextManager[Any]: ...


@dataclass
class RunContext:
    """What every batch and point of one session shares: the experiment, the writer and the tools to run."""

    exp: Experiment
    writer: RunWriter
    session: int
    durations: list[float]
    report: Callable[[Point | None, str], None]
    plan_builder: Callable[[Experiment, Placement, SweepPoint], Plan]
    network_factory: NetworkFactory
    model: Predictor


def link_seed(batch: Sequence[Point]) -> int:
    """The seed of the links a batch of points runs on: its first point's seed.

    A point's seed mixes the experiment's seed, its group and its repetition, so a
    precision round's network (its first point a new repetition) draws its own random
    loss and jitter, while a rerun of the experiment draws the same. With one seed
    for every network, a repeated lossy point lost the same packets at the same
    places as its first repetition, and the round narrowed its interval without
    sampling the loss. Points after the first in a batch continue their network's
    draw, as before.
    """
    return batch[0].seed


def default_network_factory(plan: Plan, *, backend: str, time_scale: float,
                            seed: int = 1) -> contextlib.AbstractContextManager[Any]:
    try:
        from corridor.emulation.network import CorridorNetwork
    except ImportError as exc:
        raise EmulationError(f"the emulation layer cannot be loaded here: {exc}") from exc

    net: contextlib.AbstractContextManager[Any] = CorridorNetwork(plan, backend=backend, time_scale=time_scale,
                                                                  seed=seed)
    return net


def cluster_network_factory(cluster: Any) -> NetworkFactory:
    """A factory that spreads each point's network over ``cluster``'s servers (a ClusterSpec)."""

    def factory(plan: Plan, *, backend: str, time_scale: float,
                seed: int = 1) -> contextlib.AbstractContextManager[Any]:
        from corridor.cluster.placer import pins_within
        from corridor.emulation.network import CorridorNetwork

        net: contextlib.AbstractContextManager[Any] = CorridorNetwork(
            plan, backend=backend, time_scale=time_scale, seed=seed, cluster=pins_within(plan, cluster))
        return net

    return factory


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
    precision: Precision | None = None,
) -> RunWriter:
    """Run every point of ``exp`` not yet finished in ``out``; returns the writer.

    ``backend`` overrides the sweep's backend axis. On Ctrl-C the finished points
    stay on disk, the summary says "interrupted" and KeyboardInterrupt propagates.
    With ``precision``, after the planned points the runner adds repetitions of
    the workloads whose verdict is inconclusive or whose compared statistic's
    interval is wider than the target (:func:`_precision_rounds`).
    """
    if exp.model_only:
        raise SpecError("is a model-only experiment (model_only: true); use `corridor predict`", path=exp.source)
    plan_builder = plan_builder or plan_for
    network_factory = network_factory or default_network_factory
    points = expand_points(exp)
    if backend is not None:
        points = [dataclasses.replace(p, sweep=dataclasses.replace(p.sweep, backend=backend)) for p in points]
    if resume:
        from corridor.results.rundir import check_same_experiment

        writer = RunWriter.resume(out)
        try:
            check_same_experiment(out, writer.manifest, exp.as_dict())
        except RunDirError:
            writer.close()
            raise
        planned = [p["point_id"] for p in writer.manifest.get("points", [])]
        if planned != [p.point_id for p in points]:
            writer.close()
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
    outcome: dict[str, Any] | None = None
    model = Predictor(exp, plan_builder)

    planned_ids = {p.point_id for p in points}
    repeats: list[str] = []  # points the precision loop added; the progress total counts them once added

    def report(current: Point | None, message: str) -> None:
        if current is not None and current.point_id not in planned_ids and current.point_id not in repeats:
            repeats.append(current.point_id)
        if progress is None:
            return
        done = len(writer.done_points())
        total = len(points) + len(repeats)
        remaining = max(0, total - done)
        eta = (sum(durations) / len(durations)) * remaining if durations else None
        progress(Progress(done=done, total=total, skipped=skipped,
                          current=current.label() if current else None, eta_s=eta, message=message))

    ctx = RunContext(exp, writer, session, durations, report, plan_builder, network_factory, model)
    try:
        report(None, f"{len(todo)} points to run, {skipped} already finished")
        for key, batch in _batches(todo):
            placement = exp.placement(key[0])
            sweep: SweepPoint = key[1]
            _run_batch(ctx, placement, sweep, batch)
        if precision is not None:
            def announce(extra: Sequence[Point]) -> None:
                repeats.extend(p.point_id for p in extra if p.point_id not in repeats)

            outcome = _precision_rounds(ctx, points, precision, started, backend, announce)
        status = "complete"
    except BaseException:
        # the run is already stopping on an error: a summary that cannot be written (a full disk) is logged,
        # so the first error is the one the user sees
        try:
            _write_summary(writer, points, status, session, time.monotonic() - started, outcome)
        except (OSError, CorridorError) as exc:
            log.warning("could not write the summary of %s: %s", writer.path, exc)
        writer.close()
        raise
    _write_summary(writer, points, status, session, time.monotonic() - started, outcome)
    writer.close()
    return writer


@dataclass(frozen=True)
class Precision:
    """When to stop repeating: each compared statistic's 95 % interval within ``target`` (relative half-width)."""

    target: float = 0.10
    max_repetitions: int = 3
    budget_s: float | None = None  # wall-clock seconds for the whole run, planned points included


def _imprecise_cells(run_path: str, target: float) -> dict[tuple[str, tuple[Any, ...]], str]:
    """(group, WAN sweep key) -> why it needs more samples, for every verdict row that is not yet precise."""
    from corridor.results.rundir import read_run
    from corridor.results.verdict import compute_verdicts
    from corridor.spec.experiment import WAN_AXES
    from corridor.workloads.kind import INCONCLUSIVE, NO_DATA

    run = read_run(run_path)
    tenants = {t["name"]: t for t in run.experiment.get("tenants", [])}
    out: dict[tuple[str, tuple[Any, ...]], str] = {}
    for v in compute_verdicts(run):
        if v.verdict == NO_DATA:
            continue
        low, high, value = v.slowdown_ci_low, v.slowdown_ci_high, v.slowdown
        if v.kind != "training" or value is None:
            low, high, value = v.ci_low, v.ci_high, v.measured
        width = (high - low) / 2.0 / abs(value) if low is not None and high is not None and value else None
        why = ""
        if v.verdict == INCONCLUSIVE:
            why = "inconclusive"
        elif width is None or width > target:
            why = f"interval +/-{width * 100:.0f} %" if width is not None else "no interval"
        if why:
            wan = tuple(v.sweep.get(a) for a in WAN_AXES)
            out[(v.group, wan)] = why
            if v.group in tenants:
                out[(str(tenants[v.group]["victim"]), wan)] = why
    return out


def _precision_rounds(
    ctx: RunContext,
    planned: Sequence[Point],
    precision: Precision,
    started: float,
    backend: str | None,
    announce: Callable[[Sequence[Point]], None] = lambda extra: None,
) -> dict[str, Any]:
    """Repeat the points of imprecise verdict rows, local and remote interleaved, until precise or out of budget.

    Each round adds one repetition of every (workload, WAN sweep value) whose
    row is inconclusive or wider than the target, on every placement it runs in
    and on the local baseline, batch by batch in the experiment's placement order
    so the machine's noise of that moment hits the baseline and the placement
    alike. A round starts only if the points it adds, at the mean duration of
    the points so far, fit in what is left of the budget.
    """
    exp, writer, durations, report = ctx.exp, ctx.writer, ctx.durations, ctx.report
    from corridor.spec.experiment import WAN_AXES

    outcome: dict[str, Any] = {"precision_target": precision.target, "max_repetitions": precision.max_repetitions,
                               "budget_s": precision.budget_s, "rounds": 0}
    rep = max([p.repetition for p in planned] + [int(m.get("repetition", 0)) for m in _markers(writer)]) + 1
    while True:
        need = _imprecise_cells(writer.path, precision.target)
        if not need:
            outcome["stopped"] = "every compared statistic is within the target"
            break
        if rep >= precision.max_repetitions:
            outcome["stopped"] = f"{precision.max_repetitions} repetitions reached"
            break
        done = writer.done_points()
        markers = _markers(writer)
        per_group: dict[str, list[float]] = {}
        for m in markers:
            per_group.setdefault(str(m.get("group")), []).append(float(m.get("duration_s") or 0.0))
        fallback = sum(durations) / len(durations) if durations else 10.0
        elapsed = time.monotonic() - started
        left = None if precision.budget_s is None else precision.budget_s - elapsed
        # undecided rows first, then the widest intervals; take cells while their points fit the budget
        ordered = sorted(need.items(), key=lambda kv: (not kv[1].startswith("inconclusive"), kv[1]))
        extra: list[Point] = []
        chosen: dict[tuple[str, tuple[Any, ...]], str] = {}
        estimate = 0.0
        candidates = expand_points(exp, [rep])
        if backend is not None:
            candidates = [dataclasses.replace(p, sweep=dataclasses.replace(p.sweep, backend=backend))
                          for p in candidates]
        for (group, wan), why in ordered:
            cell = [p for p in candidates if p.group == group and p.point_id not in done
                    and p not in extra and (p.placement == "local"
                                            or tuple(getattr(p.sweep, a) for a in WAN_AXES) == wan)]
            cost = sum((sum(per_group.get(p.group, [fallback])) / len(per_group.get(p.group, [fallback])))
                       for p in cell) * 1.2 + 2.0
            if not cell or (left is not None and estimate + cost > left):
                continue
            extra += cell
            estimate += cost
            chosen[(group, wan)] = why
        if not extra:
            outcome["stopped"] = ("time budget: no imprecise workload's next repetition fits in the "
                                  f"{max(0.0, left or 0.0):.0f} s left" if left is not None else
                                  "nothing left to repeat")
            break
        extra.sort(key=lambda p: [q.point_id for q in candidates].index(p.point_id))
        need = chosen
        whys = ", ".join(sorted({f"{g} ({why})" for (g, _), why in need.items()}))
        announce(extra)
        report(None, f"repetition {rep + 1} for {whys}")
        for key, batch in _batches(extra):
            _run_batch(ctx, exp.placement(key[0]), key[1], batch)
        outcome["rounds"] += 1
        rep += 1
    outcome["imprecise"] = sorted({g for g, _ in _imprecise_cells(writer.path, precision.target)})
    return outcome


def _markers(writer: RunWriter) -> list[dict[str, Any]]:
    from corridor.results.rundir import read_run

    return list(read_run(writer.path).points.values())


def _sessions(writer: RunWriter) -> Iterator[None]:
    from corridor.results.rundir import read_run

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


def _run_batch(ctx: RunContext, placement: Placement, sweep: SweepPoint, batch: Sequence[Point]) -> None:
    exp, writer, report = ctx.exp, ctx.writer, ctx.report
    plan = ctx.plan_builder(exp, placement, sweep)
    report(batch[0], f"building network for {placement.name} ({sweep.label()})")
    try:
        context = ctx.network_factory(plan, backend=sweep.backend, time_scale=sweep.time_scale, seed=link_seed(batch))
        with _import_errors_as_emulation_errors(), context as net:
            tuned = _tune(net, sweep)
            for point in batch:
                report(point, f"running {point.label()}")
                _run_point(ctx, placement, plan, net, point, tuned)
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


def _run_point(ctx: RunContext, placement: Placement, plan: Plan, net: Network, point: Point,
               tuned: Mapping[str, Any]) -> None:
    exp, writer, session, durations, model = ctx.exp, ctx.writer, ctx.session, ctx.durations, ctx.model
    t0 = time.monotonic()
    roles = role_names(exp)
    results: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    workloads = [exp.workload(name) for name in point.workloads]

    def one(w: WorkloadSpec, on: Any = net) -> None:
        try:
            hosts = hosts_for(plan, placement, w, role_names=roles)
            kind = registry.get(w.kind)
            results[w.name] = kind.run(on, params_for(w, plan), hosts=hosts, seed=point.seed, timeout_s=w.timeout_s,
                                       progress=lambda msg, name=w.name: log.info("%s: %s", name, msg))
        except CorridorError as exc:
            errors[w.name] = str(exc)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the runner's thread below
            crashed.append(exc)

    crashed: list[BaseException] = []
    records_model = [model.record(w, placement, plan, point) for w in workloads]
    sampler = _LinkSampler(net, plan)
    with _servers_checked_on_failure(net, point, "before"):
        sampler.check_before(point)
    # The experiment's link faults, applied during every point that crosses a WAN link (corridor.spec.faults).
    faults = FaultInjector(exp.faults, plan, net) if exp.faults and plan.wan_links else None
    with sampler, (faults if faults is not None else contextlib.nullcontext()):
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
    # A dead, stale or unreadable link raises here: nothing of the point is written, so a resume retries it.
    with _servers_checked_on_failure(net, point, "during"):
        link_health = sampler.finish(point)
        if errors:  # an agent that failed may have failed with its server: that is not the workload's result
            _raise_if_servers_lost(net, point, "during")
    duration = time.monotonic() - t0
    common = {"placement": point.placement, "group": point.group, "repetition": point.repetition,
              **{f"sweep_{k}": v for k, v in point.sweep.as_dict().items()}}
    factor = plan_scale(plan)
    records: list[dict[str, Any]] = []
    for w in workloads:
        for record in results.get(w.name, []):
            if factor != 1.0:  # a scale model: sizes and rates back to full scale (times are as measured)
                record = full_scale_record(record, factor)
            records.append({**record, **common, "workload": w.name})
    records += [{**s, **common} for s in sampler.samples]
    records += [{**r, **common} for r in (faults.records if faults is not None else [])]
    records += [{**r, **common} for r in records_model]
    status = "failed" if errors else "ok"
    info = {**_point_info(point, plan, net, session, duration, tuned, placement), "status": status,
            "error": "; ".join(f"{k}: {v}" for k, v in errors.items()) or None,
            "n_records": len(records), "link_health": health.summary(link_health)}
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


class LinkFailure(EmulationError):
    """A WAN link died, went stale or became unreadable around a point: the run stops and a resume retries it."""


class _LinkSampler:
    """Watches every WAN link of a point: a probe before, ``net.link_stats`` samples while it runs, a probe after.

    A probe reads the link's statistics and, where the network can tell
    (``net.link_alive``), whether its process runs. :meth:`check_before` and
    :meth:`finish` raise :class:`LinkFailure` naming the link when one failed;
    :meth:`finish` returns the per-link health the point's marker records.
    """

    def __init__(self, net: Any, plan: Plan) -> None:
        self._net = net
        self._links = [link.name for link in plan.wan_links]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch = bool(self._links) and callable(getattr(net, "link_stats", None))
        self._t0 = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self.before: dict[str, health.LinkProbe] = {}
        self.after: dict[str, health.LinkProbe] = {}

    def __enter__(self) -> _LinkSampler:
        if self._watch:
            self._t0 = time.monotonic()
            self._thread = threading.Thread(target=self._loop, name="link-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def check_before(self, point: Point) -> None:
        """Probe every link before the point runs; raise LinkFailure when one is already down."""
        if not self._watch:
            return
        self.before = {name: self._probe(name) for name in self._links}
        problems = [f"WAN link {name}: {', '.join(found)}" for name, probe in self.before.items()
                    if (found := health.probe_problems(probe))]
        if problems:
            raise LinkFailure(_link_failure_text(point, "; ".join(problems), "before"))

    def finish(self, point: Point) -> dict[str, health.LinkHealth]:
        """Probe every link after the point and judge each; raise LinkFailure when one failed."""
        if not self._watch:
            return {}
        deadline = time.monotonic() + health.STALE_AFTER_S
        for name in self._links:
            probe = self._probe(name)
            # A short point can end before the delay line's next 0.2 s write: wait for it (a dead one never comes).
            while (probe.error is None and probe.alive is not False and time.monotonic() < deadline
                   and _stamp(probe) is not None and _stamp(probe) == _stamp(self.before.get(name))):
                time.sleep(0.05)
                probe = self._probe(name)
            self.after[name] = probe
        verdicts = health.assess(self.samples, self.before, self.after)
        failed = health.failure_message(verdicts)
        if failed:
            raise LinkFailure(_link_failure_text(point, failed, "during"))
        return verdicts

    def _probe(self, name: str) -> health.LinkProbe:
        alive: bool | None = None
        pid: int | None = None
        error: str | None = None
        stats: dict[str, Any] = {}
        try:
            check = getattr(self._net, "link_alive", None)
            alive = check(name) if callable(check) else None
            get_pid = getattr(self._net, "link_pid", None)
            pid = get_pid(name) if callable(get_pid) else None
            stats = flatten(self._net.link_stats(name))
        except Exception as exc:  # noqa: BLE001 - an unreadable link is a finding, recorded with its reason
            error = str(exc) or type(exc).__name__
        return health.LinkProbe(link=name, at_monotonic_s=time.monotonic(), alive=alive, stats=stats, error=error,
                                pid=pid)

    def _loop(self) -> None:
        broken: set[str] = set()
        while True:
            t = time.monotonic() - self._t0
            for name in self._links:
                if name in broken:
                    continue
                try:
                    stats = flatten(self._net.link_stats(name))
                except Exception as exc:  # noqa: BLE001 - recorded in the sample; the health check judges it
                    log.warning("reading the statistics of WAN link %s failed: %s", name, exc)
                    broken.add(name)
                    self.samples.append({"kind": "link_sample", "link": name, "t_s": round(t, 3),
                                         "error": str(exc) or type(exc).__name__})
                    continue
                sample = {"kind": "link_sample", "link": name, "t_s": round(t, 3), **stats}
                stamp = stats.get(health.TIME_FIELD)
                if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
                    sample[health.AGE_FIELD] = round(time.monotonic() - stamp, 3)
                self.samples.append(sample)
            if self._stop.wait(LINK_SAMPLE_INTERVAL_S):
                return


def _stamp(probe: health.LinkProbe | None) -> Any:
    return None if probe is None else probe.stats.get(health.TIME_FIELD)


class ServerLost(EmulationError):
    """A server of a cluster network stopped answering around a point: the run stops and a resume retries it."""


def _raise_if_servers_lost(net: Any, point: Point, when: str) -> None:
    """Raise :class:`ServerLost` naming each server of ``net`` that no longer answers (none on one machine)."""
    ask = getattr(net, "lost_servers", None)
    lost = ask() if callable(ask) else {}
    if lost:
        named = "; ".join(f"server {server}: {why}" for server, why in lost.items())
        raise ServerLost(f"lost {named} ({when} point {point.label()}); the point is not recorded as finished: "
                         "bring the server back, run `corridor clean --cluster FILE`, then run again with --resume "
                         "to retry it")


@contextlib.contextmanager
def _servers_checked_on_failure(net: Any, point: Point, when: str) -> Iterator[None]:
    """A link failure on a cluster network is reported as the server it ran on, when that server is gone."""
    try:
        yield
    except LinkFailure:
        _raise_if_servers_lost(net, point, when)
        raise


def _link_failure_text(point: Point, problems: str, when: str) -> str:
    return (f"{problems} ({when} point {point.label()}); the point is not recorded as finished: check the link "
            "(its delay-line log is beside its stats file in the run's state directory), then run again with "
            "--resume to retry it")


def _write_summary(writer: RunWriter, points: Sequence[Point], status: str, session: int, duration_s: float,
                   precision: Mapping[str, Any] | None = None) -> None:
    from corridor.results.rundir import read_run

    run = read_run(writer.path)
    markers = run.points
    backends = sorted({f"{m.get('backend')}: {m.get('backend_reason')}" for m in markers.values() if m.get("backend")})
    planned = {p.point_id for p in points}
    planned_done = sum(1 for pid in markers if pid in planned)
    repeats = len(markers) - planned_done  # points the precision loop added
    writer.write_summary({
        "status": status if planned_done < len(points) or status != "interrupted" else "complete",
        "points_total": len(points) + repeats,
        "points_done": len(markers),
        "points_repeated_for_precision": repeats,
        "points_failed": sum(1 for m in markers.values() if m.get("status") != "ok"),
        "sessions": session,
        "last_session_s": round(duration_s, 1),
        "backends": backends,
        "updated_utc": utc_now(),
        **({"precision": dict(precision)} if precision else {}),
    })


