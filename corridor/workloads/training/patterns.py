"""Training patterns: each is one object that gives both the agents' step and the model's prediction of it.

Stage: workload plug-in, shared by the agents (standard library only, inside
the emulated hosts) and the analytic model (pure). A pattern's
:meth:`TrainingPattern.agent_step` is what every rank does in one training step
(sleeps standing in for GPU compute, and the real communication of the
schedule, :func:`corridor.agent.collectives.schedule`), and its
:meth:`TrainingPattern.predict` walks the same schedule through the analytic
model (:mod:`corridor.workloads.training.model`), so agent and model cannot drift
apart. Adding a pattern is one class here and one entry in :data:`PATTERNS`.

Patterns (a workload's ``type``):

- ``allreduce``: data parallel. Backward compute is cut into ``buckets``
  slices; each finished slice hands its gradient bucket to the communication
  thread, which all-reduces it (``algorithm``) while backward continues, as DDP
  does. Exposed communication is what is left after compute ends.
- ``parameter_server``: the same buckets pushed to rank 0 and pulled back.
- ``pipeline``: rank i is stage i; ``microbatches`` per step in a 1F1B schedule;
  activations go forward and gradients backward (``activation_bytes`` each).
- ``fsdp``: ``layers`` buckets; forward all-gathers each layer's parameters one
  layer ahead of compute, backward all-gathers again and reduce-scatters each
  layer's gradients after its backward.
- ``diloco``: ``inner_steps`` local steps with no communication, then a blocking
  outer all-reduce of ``outer_bytes`` (already int8/int4-sized).
- ``streaming-diloco``: Streaming DiLoCo (arXiv 2501.18512). Inner steps as
  DiLoCo's, but the outer gradient goes in fragments of ``fragment_layers``
  layers (strided or sequential), one fragment every H / P steps. Each layer of
  a fragment is handed to the communication thread as its backward pass ends
  (one all-reduce per layer, one at a time); with ``overlap_steps`` tau the
  exchange runs while the next tau steps compute, and step t + tau + 1 waits
  for what is left of it; without overlap each layer's next forward waits for
  its own reduction. The last step waits for every exchange still in flight.
- ``moe-alltoall``: expert parallel (mixture of experts). Each of ``layers`` MoE
  layers dispatches its tokens to the experts on every rank and combines the
  results (two all-to-alls of ``activation_bytes`` per rank) in the forward
  pass and again in the backward pass, blocking compute; the dense gradients
  (``grad_bytes``) are all-reduced at the end of the step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from corridor.agent.collectives import Step, execute, schedule
from corridor.analytic.diloco import SyncMethod, fragments, sync_plan, walk_steps


@dataclass
class StepContext:
    """What a rank knows while it runs one step (wall-clock seconds, already multiplied by the time scale)."""

    agent: Any  # corridor.agent.runtime.Agent
    job: dict[str, Any]
    worker: Any  # the rank's communication thread (submit/wait/busy_s)
    step: int
    sites: list[str]
    compute_s: float
    fwd_s: float
    bwd_s: float
    grad_bytes: int
    algorithm: str
    sleep: Callable[[float], None]
    #: kept from one step to the next of this rank (a pattern's exchanges in flight)
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepTimes:
    """A rank's own view of one step: communication busy time, the part compute did not hide, outer sync."""

    comm_s: float
    exposed_s: float
    outer_sync: bool = False


class TrainingPattern(Protocol):
    name: str
    description: str

    def agent_step(self, ctx: StepContext) -> StepTimes:
        """Run one training step on this rank (inside the emulated host)."""
        ...

    def predict(self, params: Any, sites: list[str], path_fn: Any, tcp: Any) -> dict[str, Any]:
        """The model's figures for one step: ``step_time_s``, ``compute_s``, ``comm_s``, ``exposed_comm_s``,
        ``wan_bytes`` (all ranks, one step) and pattern-specific extras."""
        ...


def _model() -> Any:
    from corridor.workloads.training import model as training
    return training


#: Ranks up to which a prediction carries its step's schedule (``step_plan``) for the fault model's walk.
STEP_PLAN_MAX_RANKS = 64


class DataParallel:
    """Bucketed gradient all-reduce (or parameter server) overlapping backward compute."""

    def __init__(self, name: str, description: str, algorithm: str | None = None) -> None:
        self.name = name
        self.description = description
        self._algorithm = algorithm  # fixed for the parameter server, else the workload's

    def _algo(self, algorithm: str) -> str:
        return self._algorithm or algorithm

    def agent_step(self, ctx: StepContext) -> StepTimes:
        n_buckets = max(1, int(ctx.job.get("buckets", 4)))
        bucket_steps = schedule(self._algo(ctx.algorithm), -(-ctx.grad_bytes // n_buckets), ctx.sites)
        busy0 = ctx.worker.busy_s
        ctx.sleep(ctx.fwd_s)
        events = []
        for _ in range(n_buckets):
            ctx.sleep(ctx.bwd_s / n_buckets)
            events.append(ctx.worker.submit(bucket_steps))
        t_compute_end = time.monotonic()
        for ev in events:
            ctx.worker.wait(ev)
        return StepTimes(ctx.worker.busy_s - busy0, time.monotonic() - t_compute_end)

    def predict(self, params: Any, sites: list[str], path_fn: Any, tcp: Any) -> dict[str, Any]:
        m = _model()
        compute = float(params.compute_s)
        fwd = compute * float(params.forward_fraction)
        bwd = compute - fwd
        rto = m.rto_s(sites, path_fn)
        nb = max(1, int(params.buckets))
        algo = self._algo(params.algorithm)
        bucket = -(-int(params.grad_bytes) // nb)
        idle_gap = fwd + bwd / nb  # from the end of one step's last bucket to the next step's first

        def bucketed(with_tcp: Any) -> tuple[float, float, int]:
            warm = m.collective_time(algo, bucket, sites, path_fn, tcp=replace(with_tcp, warm=True))
            first = warm if idle_gap < rto else m.collective_time(algo, bucket, sites, path_fn,
                                                                  tcp=replace(with_tcp, warm=False))
            done = 0.0
            for j in range(nb):
                ready = fwd + (j + 1) * bwd / nb
                done = max(ready, done) + (first.time_s if j == 0 else warm.time_s)
            return max(compute, done), first.time_s + (nb - 1) * warm.time_s, warm.wan_bytes * nb

        steady, steady_comm, wan_bytes = bucketed(tcp)
        out: dict[str, Any] = {"step_time_s": steady, "compute_s": compute, "comm_s": steady_comm,
                               "exposed_comm_s": steady - compute, "wan_bytes": wan_bytes,
                               "steady_step_time_s": steady}
        if max(1, int(tcp.streams)) == 1 and len(sites) <= STEP_PLAN_MAX_RANKS:
            # the step's own schedule, for the fault model's walk of a step an outage catches
            # (corridor.analytic.stepwalk; one connection per rank pair, as the walk assumes)
            from corridor.analytic.stepwalk import plan_from_schedule

            out["step_plan"] = plan_from_schedule(
                fwd_s=fwd, bwd_s=bwd, buckets=nb, rounds=schedule(algo, bucket, sites), sites=sites,
                path_of=path_fn, mss_bytes=tcp.mss_bytes, header_bytes=tcp.header_bytes,
                overhead_s=tcp.step_overhead_s).to_text()
        lossy = m.lossiest_wan_path(sites, path_fn)
        steps = int(getattr(params, "steps", 0) or 0)
        if lossy is not None and tcp.cc in m.BETA and steps >= 2:
            conns = m.wan_connections(schedule(algo, bucket, sites), sites)
            packets = wan_bytes / max(1, conns) / tcp.mss_bytes
            cache: dict[int, tuple[float, float]] = {}

            def at(window_bytes: float) -> tuple[float, float]:
                key = int(window_bytes // tcp.mss_bytes)
                if key not in cache:
                    step_s, comm_s, _ = bucketed(replace(tcp, loss_limited=False,
                                                         window_bytes=max(tcp.mss_bytes, key * tcp.mss_bytes)))
                    cache[key] = (step_s, comm_s)
                return cache[key]

            windows = m.window_trajectory(lossy, packets, steps, lambda w: at(w)[1], tcp)
            walked = [at(w)[0] for w in windows]
            step = m.median(walked)
            out.update({"step_time_s": step, "exposed_comm_s": step - compute,
                        "comm_s": m.median([at(w)[1] for w in windows]),
                        "first_step_time_s": walked[0], "last_step_time_s": walked[-1],
                        "step_statistic": f"median of steps 2..{steps}"})
        return out


class FullySharded:
    name = "fsdp"
    description = "fully sharded: per-layer all-gather of parameters and reduce-scatter of gradients"

    def agent_step(self, ctx: StepContext) -> StepTimes:
        layers = max(1, int(ctx.job.get("layers", 4)))
        layer_bytes = -(-ctx.grad_bytes // layers)
        ag = schedule("all_gather", layer_bytes, ctx.sites)
        rs = schedule("reduce_scatter", layer_bytes, ctx.sites)
        busy0 = ctx.worker.busy_s
        blocked = 0.0
        pending = [ctx.worker.submit(ag)]
        for layer in range(layers):
            if layer + 1 < layers:
                pending.append(ctx.worker.submit(ag))
            tb = time.monotonic()
            ctx.worker.wait(pending[layer])
            blocked += time.monotonic() - tb
            ctx.sleep(ctx.fwd_s / layers)
        back = [ctx.worker.submit(ag)]
        rs_events = []
        for i in range(layers):
            if i + 1 < layers:
                back.append(ctx.worker.submit(ag))
            tb = time.monotonic()
            ctx.worker.wait(back[i])
            blocked += time.monotonic() - tb
            ctx.sleep(ctx.bwd_s / layers)
            rs_events.append(ctx.worker.submit(rs))
        t_compute_end = time.monotonic()
        for ev in rs_events:
            ctx.worker.wait(ev)
        return StepTimes(ctx.worker.busy_s - busy0, time.monotonic() - t_compute_end + blocked)

    def predict(self, params: Any, sites: list[str], path_fn: Any, tcp: Any) -> dict[str, Any]:
        m = _model()
        compute = float(params.compute_s)
        fwd = compute * float(params.forward_fraction)
        bwd = compute - fwd
        layers = max(1, int(params.layers))
        lb = -(-int(params.grad_bytes) // layers)
        warm = replace(tcp, warm=True)
        ag_p = m.collective_time("all_gather", lb, sites, path_fn, tcp=warm)
        rs_p = m.collective_time("reduce_scatter", lb, sites, path_fn, tcp=warm)
        ag = ag_p.time_s
        t = 0.0
        # forward: AG(l) queued one layer ahead of compute
        ag_done = [0.0] * layers
        free = ag_done[0] = ag
        for layer in range(layers):
            if layer + 1 < layers:
                free = ag_done[layer + 1] = max(t, free) + ag
            t = max(t, ag_done[layer]) + fwd / layers
        back_done = [0.0] * layers
        free = back_done[0] = max(t, free) + ag
        for i in range(layers):
            if i + 1 < layers:
                free = back_done[i + 1] = max(t, free) + ag
            t = max(t, back_done[i]) + bwd / layers
            free = max(t, free) + rs_p.time_s
        step = max(t, free)
        wan = (ag_p.wan_bytes * 2 + rs_p.wan_bytes) * layers
        return {"step_time_s": step, "compute_s": compute, "comm_s": layers * (2 * ag + rs_p.time_s),
                "exposed_comm_s": step - compute, "wan_bytes": wan}


class Pipeline:
    name = "pipeline"
    description = "pipeline parallel: 1F1B, activations forward and gradients backward between stages"

    def agent_step(self, ctx: StepContext) -> StepTimes:
        engine = ctx.agent.engine
        assert engine is not None
        stage, n = ctx.agent.rank, ctx.agent.n
        m = max(1, int(ctx.job.get("microbatches", 4)))
        act = int(ctx.job.get("activation_bytes", 1 << 20))
        f_mb, b_mb = ctx.fwd_s / m, ctx.bwd_s / m
        blocked = 0.0
        sends = []

        def forward() -> None:
            nonlocal blocked
            if stage > 0:
                tb = time.monotonic()
                engine.wait([engine.recv(stage - 1, act)])
                blocked += time.monotonic() - tb
            ctx.sleep(f_mb)
            if stage < n - 1:
                sends.append(engine.send(stage + 1, act))

        def backward() -> None:
            nonlocal blocked
            if stage < n - 1:
                tb = time.monotonic()
                engine.wait([engine.recv(stage + 1, act)])
                blocked += time.monotonic() - tb
            ctx.sleep(b_mb)
            if stage > 0:
                sends.append(engine.send(stage - 1, act))

        warmup = min(n - stage - 1, m)
        for _ in range(warmup):
            forward()
        for _ in range(m - warmup):
            forward()
            backward()
        for _ in range(warmup):
            backward()
        tb = time.monotonic()
        engine.wait(sends)
        blocked += time.monotonic() - tb
        return StepTimes(blocked, blocked)

    def predict(self, params: Any, sites: list[str], path_fn: Any, tcp: Any) -> dict[str, Any]:
        """1F1B on stages 0..n-1: each stage's ops in schedule order, each waiting for its input to arrive."""
        m_ = _model()
        compute = float(params.compute_s)
        fwd = compute * float(params.forward_fraction)
        bwd = compute - fwd
        n = len(sites)
        m = max(1, int(params.microbatches))
        act = int(params.activation_bytes)
        f_mb, b_mb = fwd / m, bwd / m
        ops: list[list[tuple[str, int]]] = []
        for s in range(n):
            warmup = min(n - s - 1, m)
            seq = [("F", i) for i in range(warmup)]
            fi, bi = warmup, 0
            for _ in range(m - warmup):
                seq.append(("F", fi))
                fi += 1
                seq.append(("B", bi))
                bi += 1
            seq.extend(("B", bi + i) for i in range(warmup))
            ops.append(seq)
        hop = []
        for s in range(n - 1):
            _, a_fwd = m_.flow_time_s(act, path_fn(sites[s], sites[s + 1]), max(1, tcp.streams), tcp)
            _, a_bwd = m_.flow_time_s(act, path_fn(sites[s + 1], sites[s]), max(1, tcp.streams), tcp)
            hop.append((a_fwd, a_bwd))
        arrive_f: dict[tuple[int, int], float] = {}  # (stage, mb) -> activation arrival at stage
        arrive_b: dict[tuple[int, int], float] = {}  # (stage, mb) -> gradient arrival at stage
        clock = [0.0] * n
        pos = [0] * n
        blocked = [0.0] * n
        progress = True
        while progress:
            progress = False
            for s in range(n):
                while pos[s] < len(ops[s]):
                    kind, mb = ops[s][pos[s]]
                    if kind == "F":
                        dep = 0.0 if s == 0 else arrive_f.get((s, mb))
                    else:
                        dep = 0.0 if s == n - 1 else arrive_b.get((s, mb))
                    if dep is None:
                        break
                    start = max(clock[s], dep)
                    blocked[s] += start - clock[s]
                    clock[s] = start + (f_mb if kind == "F" else b_mb) + tcp.step_overhead_s
                    if kind == "F" and s < n - 1:
                        arrive_f[(s + 1, mb)] = clock[s] + hop[s][0]
                    if kind == "B" and s > 0:
                        arrive_b[(s - 1, mb)] = clock[s] + hop[s - 1][1]
                    pos[s] += 1
                    progress = True
        step = max(clock)
        wan = sum(2 * m * act for s in range(n - 1) if sites[s] != sites[s + 1])
        return {"step_time_s": step, "compute_s": compute, "comm_s": max(blocked), "exposed_comm_s": step - compute,
                "wan_bytes": wan}


class DiLoCo:
    name = "diloco"
    description = "local SGD: inner steps without communication, outer all-reduce every H steps"

    def agent_step(self, ctx: StepContext) -> StepTimes:
        ctx.sleep(ctx.compute_s)
        t_compute_end = time.monotonic()
        inner = max(1, int(ctx.job.get("inner_steps", 10)))
        blocked = 0.0
        outer = False
        if (ctx.step + 1) % inner == 0:
            outer = True
            tb = time.monotonic()
            execute(ctx.agent, schedule(ctx.algorithm, int(ctx.job.get("outer_bytes", ctx.grad_bytes)), ctx.sites))
            blocked += time.monotonic() - tb
        return StepTimes(blocked, time.monotonic() - t_compute_end, outer)

    def predict(self, params: Any, sites: list[str], path_fn: Any, tcp: Any) -> dict[str, Any]:
        m = _model()
        compute = float(params.compute_s)
        warm = compute * params.inner_steps < m.rto_s(sites, path_fn)
        outer = m.collective_time(params.algorithm, int(params.outer_bytes), sites, path_fn,
                                  tcp=replace(tcp, warm=warm))
        h = max(1, int(params.inner_steps))
        return {"step_time_s": compute, "compute_s": compute, "comm_s": 0.0, "exposed_comm_s": 0.0, "wan_bytes": 0,
                "outer_step_time_s": compute + outer.time_s, "outer_comm_s": outer.time_s,
                "outer_wan_bytes": outer.wan_bytes, "mean_step_time_s": compute + outer.time_s / h,
                "compute_utilisation": compute / (compute + outer.time_s / h) if compute > 0 else 0.0}


class StreamingDiLoCo:
    """Streaming DiLoCo: fragments of the outer gradient exchanged in turn, each overlapping later inner steps."""

    name = "streaming-diloco"
    description = ("Streaming DiLoCo: inner steps without communication; the outer gradient in fragments of "
                   "layers, one every H/P steps, each exchanged while the next overlap_steps steps compute")

    @staticmethod
    def method(job_or_params: Any, workers: int) -> SyncMethod:
        """The schedule's knobs as the analytic model takes them (:mod:`corridor.analytic.diloco`)."""
        def get(key: str, default: Any) -> Any:
            if isinstance(job_or_params, dict):
                return job_or_params.get(key, default)
            return getattr(job_or_params, key, default)

        return SyncMethod("streaming-diloco", inner_steps=max(1, int(get("inner_steps", 10))),
                          fragment_layers=max(1, int(get("fragment_layers", 1))),
                          pattern=str(get("fragment_order", "strided")),
                          overlap_steps=int(get("overlap_steps", 0)), workers=max(2, workers))

    def agent_step(self, ctx: StepContext) -> StepTimes:
        job, state = ctx.job, ctx.state
        layers = max(1, int(job.get("layers", 4)))
        method = self.method(job, len(ctx.sites))
        if "plan" not in state:
            layer_bytes = -(-int(job.get("outer_bytes", ctx.grad_bytes)) // layers)
            state.update(plan=sync_plan(layers, method), need={}, due={},
                         reduction=schedule(ctx.algorithm, layer_bytes, ctx.sites))
        need: dict[int, Any] = state["need"]
        due: dict[int, list[Any]] = state["due"]
        busy0 = ctx.worker.busy_s
        waited = 0.0
        outer = False

        def wait(event: Any) -> None:
            nonlocal waited, outer
            t = time.monotonic()
            ctx.worker.wait(event)
            waited += time.monotonic() - t
            outer = True

        # overlapped exchanges sent tau + 1 steps ago are needed before this step starts
        for event in due.pop(ctx.step, []):
            wait(event)
        # forward, layer by layer where a layer's own reduction (no overlap) is still in flight
        f_layer = ctx.fwd_s / layers
        done = 0.0
        for layer in sorted(need):
            ctx.sleep(max(0.0, (layer - 1) * f_layer - done))
            done = max(done, (layer - 1) * f_layer)
            wait(need.pop(layer))
        ctx.sleep(ctx.fwd_s - done)
        # backward from the top layer down; a fragment's layer goes to the comm thread as its backward ends
        b_layer = ctx.bwd_s / layers
        done = 0.0
        sent = []
        for layer in sorted((n for frag in state["plan"].get(ctx.step % method.inner_steps, ()) for n in frag),
                            reverse=True):
            ready = (layers - layer + 1) * b_layer
            ctx.sleep(ready - done)
            done = ready
            sent.append((layer, ctx.worker.submit(state["reduction"])))
        ctx.sleep(ctx.bwd_s - done)
        if method.overlap_steps:
            due.setdefault(ctx.step + method.overlap_steps + 1, []).extend(ev for _, ev in sent)
        else:
            need.update(sent)
        if ctx.step == int(job.get("steps", 0)) - 1:
            # the run ends here: every exchange still in flight finishes, as a trainer's last sync does
            for event in [*need.values(), *(ev for events in due.values() for ev in events)]:
                wait(event)
            need.clear()
            due.clear()
        return StepTimes(ctx.worker.busy_s - busy0, waited, outer)

    def predict(self, params: Any, sites: list[str], path_fn: Any, tcp: Any) -> dict[str, Any]:
        m = _model()
        compute = float(params.compute_s)
        layers = max(1, int(params.layers))
        method = self.method(params, len(sites))
        layer_bytes = -(-int(params.outer_bytes) // layers)
        warm = m.collective_time(params.algorithm, layer_bytes, sites, path_fn, tcp=replace(tcp, warm=True))
        frags = fragments(layers, method)
        n_frags = len(frags)
        # fragments go every H / P steps: a connection idle longer than its RTO starts over in slow start
        # (the first reduction of a step that sends; the rest follow on a warm connection)
        gap_s = compute * method.inner_steps / max(1, n_frags)
        first = warm if gap_s < m.rto_s(sites, path_fn) else m.collective_time(
            params.algorithm, layer_bytes, sites, path_fn, tcp=replace(tcp, warm=False))
        durations = walk_steps(layers, compute, method, warm.time_s, first_layer_s=first.time_s,
                               backward_fraction=1.0 - float(params.forward_fraction)) if compute > 0 else [0.0]
        mean = sum(durations) / len(durations)
        sends = sync_plan(layers, method).values()
        comm = sum(first.time_s + (sum(len(f) for f in fs) - 1) * warm.time_s for fs in sends) / method.inner_steps
        wan = warm.wan_bytes * layers / method.inner_steps
        return {"step_time_s": m.median(durations), "compute_s": compute, "comm_s": comm,
                "exposed_comm_s": mean - compute, "wan_bytes": int(wan), "mean_step_time_s": mean,
                "outer_step_time_s": max(durations), "fragment_layer_s": warm.time_s,
                "fragment_first_layer_s": first.time_s, "fragments": n_frags,
                "compute_utilisation": compute / mean if mean > 0 else 0.0,
                "step_statistic": "steady-state walk: step_time_s its median, mean_step_time_s its mean "
                                  "(the verdict's statistic for outer syncs)"}


class ExpertParallel:
    """Mixture of experts across sites: token dispatch and combine as all-to-alls that block compute."""

    name = "moe-alltoall"
    description = ("expert parallel: per MoE layer, all-to-all token dispatch and combine in forward and "
                   "backward, then a dense-gradient all-reduce")

    def _a2a(self, job_or_params: Any, sites: list[str]) -> list[Step]:
        act = int(job_or_params["activation_bytes"] if isinstance(job_or_params, dict)
                  else job_or_params.activation_bytes)
        return schedule("all_to_all", act, sites)

    def agent_step(self, ctx: StepContext) -> StepTimes:
        layers = max(1, int(ctx.job.get("layers", 4)))
        a2a = self._a2a(ctx.job, ctx.sites)
        blocked = 0.0
        comm = 0.0
        for phase_s in (ctx.fwd_s, ctx.bwd_s):
            for _ in range(layers):
                ctx.sleep(phase_s / layers / 2)
                for _ in range(2):  # dispatch, then combine: the expert compute waits for its tokens
                    tb = time.monotonic()
                    execute(ctx.agent, a2a)
                    blocked += time.monotonic() - tb
                ctx.sleep(phase_s / layers / 2)
        comm += blocked
        t_compute_end = time.monotonic()
        if ctx.grad_bytes > 0:
            tb = time.monotonic()
            execute(ctx.agent, schedule(ctx.algorithm, ctx.grad_bytes, ctx.sites))
            comm += time.monotonic() - tb
        return StepTimes(comm, blocked + time.monotonic() - t_compute_end)

    def predict(self, params: Any, sites: list[str], path_fn: Any, tcp: Any) -> dict[str, Any]:
        m = _model()
        compute = float(params.compute_s)
        layers = max(1, int(params.layers))
        warm = replace(tcp, warm=True)
        a2a = m.collective_time("all_to_all", int(params.activation_bytes), sites, path_fn, tcp=warm)
        dense = (m.collective_time(params.algorithm, int(params.grad_bytes), sites, path_fn, tcp=warm)
                 if int(params.grad_bytes) > 0 else None)
        blocked = 2 * 2 * layers * a2a.time_s  # forward and backward, dispatch and combine, every layer
        dense_s = dense.time_s if dense else 0.0
        step = compute + blocked + dense_s
        wan = 4 * layers * a2a.wan_bytes + (dense.wan_bytes if dense else 0)
        return {"step_time_s": step, "compute_s": compute, "comm_s": blocked + dense_s,
                "exposed_comm_s": step - compute, "wan_bytes": wan, "alltoall_s": a2a.time_s,
                "alltoalls_per_step": 4 * layers}


#: Every training pattern, by the name a workload's ``type`` gives.
PATTERNS: dict[str, TrainingPattern] = {p.name: p for p in (
    DataParallel("allreduce", "data parallel: bucketed gradient all-reduce overlapping backward compute"),
    DataParallel("parameter_server", "data parallel: bucketed push to and pull from a parameter server on rank 0",
                 algorithm="parameter_server"),
    Pipeline(),
    FullySharded(),
    DiLoCo(),
    StreamingDiLoCo(),
    ExpertParallel(),
)}
