"""Training workload runner: validate parameters, run agents on ranks, attach predictions.

Stage: workload run (root when the network is emulated; none on LocalNetwork).
The public surface is the workload interface (see corridor/workloads/__init__.py): :func:`validate`, :func:`run`,
:func:`predict`, :data:`PATTERNS`; plus :func:`run_collective_sweep` for
``corridor bench collective`` and :func:`run_agents`, the generic launcher
(rendezvous port, per-rank configs, watching, killing leftovers by pid) that
other workload runners may reuse.

Failure handling: the run ends as soon as one rank exits non-zero (the others
get a short grace to report what they saw) or when ``timeout_s`` passes; every
agent still running is then killed by pid and reaped, and :class:`AgentError`
names the rank that failed first (a rank killed by a signal, or the rank its
peers blame).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from corridor import stats
from corridor.agent.collectives import ALGORITHMS, ScheduleError, busbw_factor, schedule
from corridor.emulation.api import Network
from corridor.errors import AgentError, SpecError, UnitError
from corridor.planning.plan import Plan
from corridor.spec.units import parse_duration_ms, parse_fraction, parse_size_bytes
from corridor.spec.validate import check_keys
from corridor.workloads.agents import AgentProcess
from corridor.workloads.training.model import (
    DEFAULT_WINDOW_BYTES,
    PathFn,
    TcpAssumptions,
    collective_time,
    training_step_time,
)
from corridor.workloads.training.patterns import PATTERNS as PATTERN_OBJECTS

log = logging.getLogger(__name__)

#: pattern name -> one-line description (params["pattern"]); each pattern is one object in training_patterns
PATTERNS: dict[str, str] = {name: p.description for name, p in PATTERN_OBJECTS.items()}

OUTER_DTYPE_FACTORS = {"fp16": 1.0, "bf16": 1.0, "int8": 0.5, "int4": 0.25}
_CC_NAMES = ("cubic", "bbr", "reno", "htcp", "dctcp", "vegas")
_GRACE_S = 3.0
#: Agents on an emulated network run at nice -10: ahead of unrelated load, behind the delay lines.
_NICE = -10


@dataclass(frozen=True)
class TrainingParams:
    """A validated training workload (durations are unscaled, real-world figures)."""

    pattern: str
    steps: int = 20
    compute_s: float = 0.1
    grad_bytes: int = 4_000_000
    algorithm: str = "ring"
    buckets: int = 4
    forward_fraction: float = 1 / 3
    microbatches: int = 4
    activation_bytes: int = 1_000_000
    layers: int = 4
    inner_steps: int = 10
    outer_dtype: str = "fp16"
    fragment_layers: int = 1
    fragment_order: str = "strided"
    overlap_steps: int = 0
    cc: str | None = None
    streams: int = 1
    sock_buf_bytes: int | None = None

    @property
    def outer_bytes(self) -> int:
        return int(self.grad_bytes * OUTER_DTYPE_FACTORS[self.outer_dtype])

    def job(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "steps": self.steps,
            "compute_s": self.compute_s,
            "grad_bytes": self.grad_bytes,
            "algorithm": self.algorithm,
            "buckets": self.buckets,
            "forward_fraction": self.forward_fraction,
            "microbatches": self.microbatches,
            "activation_bytes": self.activation_bytes,
            "layers": self.layers,
            "inner_steps": self.inner_steps,
            "outer_bytes": self.outer_bytes,
            "fragment_layers": self.fragment_layers,
            "fragment_order": self.fragment_order,
            "overlap_steps": self.overlap_steps,
        }


_KEYS = {
    "pattern", "steps", "compute_time", "model_params", "tokens_per_step", "peak_tflops", "mfu", "grad_size",
    "bytes_per_param", "algorithm", "buckets", "forward_fraction", "microbatches", "activation_size", "layers",
    "inner_steps", "outer_dtype", "fragment_layers", "fragment_order", "overlap_steps", "cc", "streams",
    "socket_buffer",
}
_FRAGMENT_ORDERS = ("strided", "sequential")


def _int(params: Mapping[str, Any], key: str, default: int, lo: int, hi: int, where: str) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SpecError(f"must be a whole number from {lo} to {hi}, got {value!r}", path=where, key=key)
    return value


def _num(params: Mapping[str, Any], key: str, lo: float, hi: float, where: str) -> float:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise SpecError(f"must be a number from {lo:g} to {hi:g}, got {value!r}", path=where, key=key)
    return float(value)


def _quantity(parse: Callable[[object], Any], value: object, key: str, where: str) -> Any:
    """``parse(value)``, with a unit error reported against ``key``."""
    try:
        return parse(value)
    except UnitError as exc:
        raise SpecError(str(exc), path=where, key=key) from exc


def validate(params: Mapping[str, Any], *, where: str) -> TrainingParams:
    """Check a training workload's parameters; raise SpecError naming the key and allowed values.

    Compute per step is ``compute_time`` (e.g. ``"120ms"``) or derived from
    ``model_params``, ``tokens_per_step``, ``peak_tflops`` and ``mfu`` as
    6·N·tokens / (peak·MFU). The gradient is ``grad_size`` (e.g. ``"64MB"``) or
    ``model_params`` × ``bytes_per_param`` (default 2, fp16).
    """
    check_keys(params, _KEYS, path=where, what="parameter")
    pattern = params.get("pattern")
    if pattern not in PATTERNS:
        raise SpecError(f"must be one of {', '.join(PATTERNS)}, got {pattern!r}", path=where, key="pattern")
    try:
        model_keys = ("model_params", "tokens_per_step", "peak_tflops", "mfu")
        if "compute_time" in params:
            if any(k in params for k in model_keys[1:]):
                raise SpecError("give compute_time or tokens_per_step/peak_tflops/mfu, not both",
                                path=where, key="compute_time")
            compute_s = _quantity(parse_duration_ms, params["compute_time"], "compute_time", where) / 1e3
            if not 0 <= compute_s <= 3600:
                raise SpecError(f"must be from 0s to 1h, got {params['compute_time']!r}", path=where,
                                key="compute_time")
        elif any(k in params for k in model_keys):
            missing = [k for k in model_keys if k not in params]
            if missing:
                raise SpecError("needed to derive compute time from the model", path=where, key=missing[0])
            n_params = _num(params, "model_params", 1, 1e13, where)
            tokens = _num(params, "tokens_per_step", 1, 1e9, where)
            peak = _num(params, "peak_tflops", 0.001, 1e6, where)
            mfu = _num(params, "mfu", 0.001, 1.0, where)
            compute_s = 6 * n_params * tokens / (peak * 1e12 * mfu)
        else:
            compute_s = 0.1
        if "grad_size" in params:
            grad_bytes = _quantity(parse_size_bytes, params["grad_size"], "grad_size", where)
        elif "model_params" in params:
            grad_bytes = int(_num(params, "model_params", 1, 1e13, where)
                             * _num({"b": params.get("bytes_per_param", 2)}, "b", 0.125, 8, where))
        else:
            grad_bytes = 4_000_000
        if not 0 <= grad_bytes <= 10**12:
            raise SpecError("must be from 0B to 1TB", path=where, key="grad_size")
        activation_bytes = _quantity(parse_size_bytes, params.get("activation_size", "1MB"), "activation_size", where)
        sock_buf = params.get("socket_buffer")
        sock_buf_bytes = _quantity(parse_size_bytes, sock_buf, "socket_buffer", where) if sock_buf is not None else None
        forward_fraction = _quantity(parse_fraction, params.get("forward_fraction", 1 / 3), "forward_fraction", where)
    except UnitError as exc:
        raise SpecError(str(exc), path=where) from exc
    if not 0 < forward_fraction < 1:
        raise SpecError("must be between 0 and 1 (exclusive)", path=where, key="forward_fraction")
    algorithm = params.get("algorithm", "ring")
    allowed_algos = [a for a, kind in ALGORITHMS.items() if kind == "all_reduce"]
    if algorithm not in allowed_algos:
        raise SpecError(f"must be one of {', '.join(allowed_algos)}, got {algorithm!r}", path=where, key="algorithm")
    outer_dtype = params.get("outer_dtype", "fp16")
    if outer_dtype not in OUTER_DTYPE_FACTORS:
        raise SpecError(f"must be one of {', '.join(OUTER_DTYPE_FACTORS)}, got {outer_dtype!r}", path=where,
                        key="outer_dtype")
    layers = _int(params, "layers", 4, 1, 4096, where)
    inner_steps = _int(params, "inner_steps", 10, 1, 100_000, where)
    fragment_layers = _int(params, "fragment_layers", 1, 1, 4096, where)
    if fragment_layers > layers:
        raise SpecError(f"a fragment cannot hold more than the model's {layers} layers, got {fragment_layers}; "
                        "lower fragment_layers or raise layers", path=where, key="fragment_layers")
    fragment_order = params.get("fragment_order", "strided")
    if fragment_order not in _FRAGMENT_ORDERS:
        raise SpecError(f"must be one of {', '.join(_FRAGMENT_ORDERS)}, got {fragment_order!r}", path=where,
                        key="fragment_order")
    overlap_steps = _int(params, "overlap_steps", 0, 0, 100_000, where)
    if overlap_steps and overlap_steps >= inner_steps:
        raise SpecError(f"an exchange must be done before its fragment's next one: overlap_steps must be below "
                        f"inner_steps ({inner_steps}), got {overlap_steps}", path=where, key="overlap_steps")
    cc = params.get("cc")
    if cc is not None and cc not in _CC_NAMES:
        raise SpecError(f"must be one of {', '.join(_CC_NAMES)} (or absent for the system default), got {cc!r}",
                        path=where, key="cc")
    return TrainingParams(
        pattern=pattern,
        steps=_int(params, "steps", 20, 1, 100_000, where),
        compute_s=compute_s,
        grad_bytes=grad_bytes,
        algorithm=algorithm,
        buckets=_int(params, "buckets", 4, 1, 1024, where),
        forward_fraction=forward_fraction,
        microbatches=_int(params, "microbatches", 4, 1, 4096, where),
        activation_bytes=activation_bytes,
        layers=layers,
        inner_steps=inner_steps,
        outer_dtype=outer_dtype,
        fragment_layers=fragment_layers,
        fragment_order=fragment_order,
        overlap_steps=overlap_steps,
        cc=cc,
        streams=_int(params, "streams", 1, 1, 64, where),
        sock_buf_bytes=sock_buf_bytes,
    )


# ---------------------------------------------------------------------------
# launching agents


def _pick_port(rng: random.Random) -> int:
    """A rendezvous port: free here (which is all a LocalNetwork shares) and random otherwise."""
    for _ in range(20):
        port = rng.randint(20000, 59999)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AgentError("could not find a free rendezvous port")


def _describe_exit(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def run_agents(
    net: Network,
    role: str,
    hosts: Sequence[str],
    job: Mapping[str, Any],
    *,
    seed: int,
    timeout_s: float,
    cc: str | None = None,
    streams: int = 1,
    sock_buf_bytes: int | None = None,
    stall_timeout_s: float | None = None,
    progress: Callable[[str], None] | None = None,
    on_start: Callable[[list[subprocess.Popen[bytes]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Start one ``role`` agent per host (rank = position), wait, return all their records.

    Raises AgentError naming the failed rank within ``timeout_s`` (+ a few
    seconds of grace); leaves no agent process behind. ``on_start`` gets the
    processes once all are started (tests use it to kill one).
    """
    if not hosts:
        raise AgentError("no hosts to run on")
    rng = random.Random(seed)
    port = _pick_port(rng)
    k = float(getattr(net, "time_scale", 1.0) or 1.0)
    n = len(hosts)
    stall = stall_timeout_s if stall_timeout_s is not None else max(5.0, min(30.0, timeout_s / 2))
    from corridor.emulation.state import scratch_dir_prefix

    tmp = tempfile.mkdtemp(prefix=scratch_dir_prefix("agents"))  # names its owner, for `corridor clean`
    agents: list[AgentProcess] = []
    rv_ip = net.host_ip(hosts[0])
    secret = secrets.token_hex(16)  # one per run: peers prove they hold it before joining the mesh
    reaped_by_us: set[int] = set()
    try:
        for rank, host in enumerate(hosts):
            cfg = {
                "rank": rank,
                "n_ranks": n,
                "host": host,
                "site": net.host_site(host),
                "ip": net.host_ip(host),
                "rendezvous_ip": rv_ip,
                "rendezvous_port": port,
                "timeout_s": timeout_s,
                "stall_timeout_s": stall,
                "cc": cc,
                "streams": streams,
                "sock_buf_bytes": sock_buf_bytes,
                "time_scale": k,
                "nice": _NICE if net.backend != "local" else 0,
                "job": dict(job),
                "secret": secret,
            }
            agents.append(AgentProcess(net, host, role, cfg, tmp, name=f"rank{rank}"))
        if progress:
            progress(f"started {n} {role} agents on {', '.join(hosts)}")
        if on_start:
            on_start([a.proc for a in agents])
        deadline = time.monotonic() + timeout_s + 2.0
        first_fail: float | None = None
        while True:
            codes = [a.poll() for a in agents]
            if all(c is not None for c in codes):
                break
            now = time.monotonic()
            if any(c not in (None, 0) for c in codes):
                first_fail = first_fail or now
                if now - first_fail > _GRACE_S:
                    break
            if now > deadline:
                break
            time.sleep(0.05)
    finally:
        # SIGKILL, not the stdin stop: a stopped rank writes an error record, and the blame must
        # stay with the rank that failed first
        reaped_by_us.update(rank for rank, a in enumerate(agents) if a.kill())
        for a in agents:
            try:
                a.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                log.warning("agent pid %d did not exit after SIGKILL", a.proc.pid)
            a.close()
    try:
        records: list[dict[str, Any]] = []
        errors: dict[int, dict[str, Any]] = {}
        for rank, a in enumerate(agents):
            for rec in a.records():
                if rec.get("kind") == "agent_error":
                    errors.setdefault(rank, rec)
                else:
                    records.append(rec)
        codes = [a.proc.returncode for a in agents]
        if any(c != 0 for c in codes) or errors:
            raise AgentError(_failure_message(hosts, codes, errors, tmp, timeout_s, reaped_by_us))
        return records
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _failure_message(
    hosts: Sequence[str], codes: list[int | None], errors: dict[int, dict[str, Any]], tmp: str, timeout_s: float,
    reaped_by_us: set[int],
) -> str:
    """Name the rank that failed first: one killed by a signal (not by us), else the one its peers blame."""
    killed = [r for r, c in enumerate(codes) if c is not None and c < 0 and r not in errors and r not in reaped_by_us]
    blamed: dict[int, int] = {}
    for rec in errors.values():
        peer = rec.get("peer")
        if isinstance(peer, int):
            blamed[peer] = blamed.get(peer, 0) + 1
    silent = [r for r, c in enumerate(codes)
              if c not in (0, None) and r not in errors and r not in killed and r not in reaped_by_us]
    if killed:
        culprit = killed[0]
        why = f"rank {culprit} ({hosts[culprit]}) died: {_describe_exit(codes[culprit])}"
    elif blamed:
        # follow the blame: a rank that itself blames another is a victim, not the cause
        accusers = {r for r, rec in errors.items() if isinstance(rec.get("peer"), int)}
        roots = [r for r in blamed if r not in accusers] or list(blamed)
        culprit = max(roots, key=lambda r: (blamed[r], -r))
        why = f"rank {culprit} ({hosts[culprit]}) failed or hung: {blamed[culprit]} peer(s) lost it"
    elif errors:
        culprit = min(errors)
        why = f"rank {culprit} ({hosts[culprit]}) failed: {errors[culprit].get('error')}"
    elif silent:
        culprit = silent[0]
        stderr = ""
        try:
            with open(os.path.join(tmp, f"rank{culprit}.err"), encoding="utf-8", errors="replace") as fh:
                stderr = fh.read().strip().splitlines()[-1:][0] if fh else ""
        except (OSError, IndexError):
            pass
        why = f"rank {culprit} ({hosts[culprit]}) failed: {_describe_exit(codes[culprit])} {stderr}".strip()
    elif reaped_by_us:
        culprit = min(reaped_by_us)
        stuck = ", ".join(f"{r} ({hosts[r]})" for r in sorted(reaped_by_us))
        why = f"rank(s) {stuck} did not finish within the timeout of {timeout_s:g}s and were killed"
    else:
        culprit = 0
        why = f"agents did not finish within the timeout of {timeout_s:g}s"
    details = "; ".join(f"rank {r}: {rec.get('error')}" for r, rec in sorted(errors.items()) if r != culprit)
    return why + (f" (others: {details})" if details else "")


# ---------------------------------------------------------------------------
# predictions


def path_fn_for(plan: Plan) -> PathFn:
    """The analytic model's view of a plan: site pair -> PathParams (cached)."""
    cache: dict[tuple[str, str], Any] = {}

    def path(src: str, dst: str) -> Any:
        key = (src, dst)
        if key not in cache:
            cache[key] = plan.path_params(src, dst)  # type: ignore[attr-defined]
        return cache[key]

    return path


def _sites_for(hosts: Sequence[str], site_of: Callable[[str], str]) -> list[str]:
    return [site_of(h) for h in hosts]


def predict(params: TrainingParams, plan: Plan, *, hosts: Sequence[str], time_scale: float = 1.0) -> dict[str, Any]:
    """The analytic model's step time for ``params`` on ``hosts`` of ``plan`` (pure, no root).

    ``time_scale`` is accepted for symmetry with run(); predictions are always in
    real (unscaled) time, which is what records hold after dividing by k.
    """
    sites = _sites_for(hosts, lambda h: plan.host(h).site)
    tcp = TcpAssumptions(cc=params.cc or "bbr", streams=params.streams,
                         window_bytes=params.sock_buf_bytes or DEFAULT_WINDOW_BYTES)
    return training_step_time(params, sites, path_fn_for(plan), tcp=tcp)


def run(
    net: Network,
    params: TrainingParams,
    *,
    hosts: Sequence[str] | dict[str, Sequence[str]],
    seed: int,
    timeout_s: float,
    progress: Callable[[str], None] | None = None,
    plan: Plan | None = None,
    on_start: Callable[[list[subprocess.Popen[bytes]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``params.steps`` steps of the pattern on ``hosts`` (ordered ranks); one record per step per rank.

    Each record carries ``predicted_step_time_s`` when a plan is known (the
    network's ``.plan`` or ``plan``): the model's figure beside the measurement.
    """
    if isinstance(hosts, dict):
        raise AgentError("training takes an ordered list of rank hosts, not a role mapping")
    hosts = list(hosts)
    if params.pattern == "pipeline" and len(hosts) < 2:
        raise AgentError("the pipeline pattern needs at least two ranks (stages)")
    sites = [net.host_site(h) for h in hosts]
    try:
        schedule(params.algorithm, max(1, params.grad_bytes), sites)
    except ScheduleError as exc:
        raise AgentError(f"algorithm {params.algorithm!r}: {exc}") from exc
    job = params.job()
    job["start_margin_s"] = _start_margin_s(net, hosts)
    records = run_agents(
        net, "train", hosts, job, seed=seed, timeout_s=timeout_s, cc=params.cc, streams=params.streams,
        sock_buf_bytes=params.sock_buf_bytes, progress=progress, on_start=on_start,
    )
    model_plan = plan or getattr(net, "unscaled_plan", None) or getattr(net, "plan", None)
    prediction = None
    if model_plan is not None:
        try:
            prediction = predict(params, model_plan, hosts=hosts)
        except (KeyError, AttributeError) as exc:
            log.info("no prediction: %s", exc)
    for rec in records:
        rec["n_ranks"] = len(hosts)
        rec["backend"] = net.backend
        if prediction is not None:
            key = "outer_step_time_s" if rec.get("outer_sync") else "step_time_s"
            rec["predicted_step_time_s"] = prediction.get(key, prediction["step_time_s"])
    return records


def _start_margin_s(net: Network, hosts: Sequence[str]) -> float:
    """Time for a barrier release to reach every rank: the plan's worst RTT, scaled, plus slack."""
    plan = getattr(net, "plan", None)
    worst_ms = 0.0
    if plan is not None:
        sites = {net.host_site(h) for h in hosts}
        for a in sites:
            for b in sites:
                try:
                    worst_ms = max(worst_ms, plan.path_params(a, b).rtt_ms)
                except (KeyError, AttributeError):
                    pass
    return 0.03 + 1.5 * worst_ms / 1e3


# ---------------------------------------------------------------------------
# collective sweep (corridor bench collective)


def run_collective_sweep(
    net: Network,
    *,
    hosts: Sequence[str],
    algorithm: str,
    sizes_bytes: Sequence[int],
    iters: int = 5,
    warmup: int | None = None,
    min_time_s: float = 0.0,
    seed: int = 0,
    timeout_s: float = 600.0,
    cc: str | None = None,
    streams: int = 1,
    sock_buf_bytes: int | None = None,
    path_fn: PathFn | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Time ``algorithm`` at each size on ``hosts``; one ``collective`` record per size.

    Each size runs back to back after one synchronised start (every rank starts
    at the same instant of rank 0's clock): at least ``iters`` runs and more
    until ``min_time_s`` has passed. time_s is the slowest rank's median run
    (mean_time_s its mean); algbw and busbw
    follow nccl-tests; ``predicted_time_s`` comes from the analytic model when
    ``path_fn`` (or the network's plan) is given.
    """
    if algorithm not in ALGORITHMS:
        raise AgentError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    hosts = list(hosts)
    sites = [net.host_site(h) for h in hosts]
    try:
        schedule(algorithm, 1 << 20, sites)
    except ScheduleError as exc:
        raise AgentError(f"algorithm {algorithm!r}: {exc}") from exc
    job: dict[str, Any] = {
        "algorithm": algorithm,
        "sizes_bytes": [int(s) for s in sizes_bytes],
        "iters": iters,
        "warmup": warmup,
        "min_time_s": min_time_s,
        "start_margin_s": _start_margin_s(net, hosts),
    }
    rank_records = run_agents(
        net, "collective", hosts, job, seed=seed, timeout_s=timeout_s, cc=cc, streams=streams,
        sock_buf_bytes=sock_buf_bytes, progress=progress,
    )
    if path_fn is None:
        plan = getattr(net, "unscaled_plan", None) or getattr(net, "plan", None)
        path_fn = path_fn_for(plan) if plan is not None else None
    tcp = TcpAssumptions(cc=cc or "bbr", streams=streams, window_bytes=sock_buf_bytes or DEFAULT_WINDOW_BYTES)
    n = len(hosts)
    out = []
    for size in job["sizes_bytes"]:
        rows = [r for r in rank_records if r.get("kind") == "collective_rank" and r["size_bytes"] == size]
        if len(rows) != n:
            raise AgentError(f"size {size}: expected {n} rank records, got {len(rows)}")
        # each rank's median iteration (robust to one iteration caught by BBR's ProbeRTT or a
        # scheduling hiccup), then the slowest rank, as the collective is done when all are
        t = max(stats.median(r["times_s"]) for r in rows)
        mean_t = max(r["time_s"] for r in rows)
        algbw = size * 8 / t / 1e9 if t > 0 else 0.0
        rec: dict[str, Any] = {
            "kind": "collective",
            "algorithm": algorithm,
            "size_bytes": size,
            "n_ranks": n,
            "iters": rows[0]["iters"],
            "time_s": t,
            "mean_time_s": mean_t,
            "algbw_gbps": algbw,
            "busbw_gbps": algbw * busbw_factor(algorithm, n),
            "wan_bytes": sum(r["wan_bytes"] for r in rows),
            "cc": rows[0].get("cc"),
            "streams": streams,
            "time_scale": rows[0].get("time_scale", 1.0),
            "backend": net.backend,
            "predicted_time_s": None,
            "predicted_wan_bytes": None,
        }
        if path_fn is not None:
            pred = collective_time(algorithm, size, sites, path_fn, tcp=tcp)
            rec["predicted_time_s"] = pred.time_s
            rec["predicted_latency_s"] = pred.latency_s
            rec["predicted_wan_bytes"] = pred.wan_bytes
            rec["error_pct"] = 100.0 * (t - pred.time_s) / pred.time_s if pred.time_s > 0 else None
        out.append(rec)
    return out


def params_dict(params: TrainingParams) -> dict[str, Any]:
    """The resolved parameters, for a run manifest."""
    return asdict(params)


def summarize_steps(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-run figures from ``train_step`` records: a step's time is its slowest rank's.

    Returns steps, mean and median step time, mean exposed communication, WAN
    bytes per step (all ranks), and the prediction where records carry one.
    """
    by_step: dict[int, list[Mapping[str, Any]]] = {}
    for rec in records:
        if rec.get("kind") == "train_step":
            by_step.setdefault(int(rec["step"]), []).append(rec)
    if not by_step:
        raise AgentError("no train_step records to summarise")
    step_times = sorted(max(r["step_time_s"] for r in rows) for rows in by_step.values())
    exposed = [max(r["exposed_comm_s"] for r in rows) for rows in by_step.values()]
    wan = [sum(r["wan_bytes"] for r in rows) for rows in by_step.values()]
    preds = [r["predicted_step_time_s"] for rows in by_step.values() for r in rows if "predicted_step_time_s" in r]
    n = len(step_times)
    return {
        "steps": n,
        "mean_step_time_s": sum(step_times) / n,
        "median_step_time_s": step_times[n // 2] if n % 2 else (step_times[n // 2 - 1] + step_times[n // 2]) / 2,
        "mean_exposed_comm_s": sum(exposed) / n,
        "wan_bytes_per_step": sum(wan) / n,
        "mean_predicted_step_time_s": sum(preds) / len(preds) if preds else None,
    }
