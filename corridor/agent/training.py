"""The training role: compute phases (sleeps) and the real communication of each pattern.

Stage: workload run (standard library only). One ``train_step`` record per
step per rank. Compute is a sleep standing in for the GPU, multiplied by the
time scale k; every duration is divided by k before it is recorded.

Patterns (``job["pattern"]``):

- ``allreduce``: data parallel. Backward compute is cut into ``buckets``
  slices; each finished slice hands its gradient bucket to a communication
  thread that all-reduces it (``algorithm``) while backward continues, as DDP
  does. Exposed communication is what is left after compute ends.
- ``parameter_server``: the same buckets pushed to rank 0 and pulled back.
- ``pipeline``: rank i is stage i; ``microbatches`` per step in a 1F1B
  schedule; activations go forward and gradients backward (``activation_bytes``
  each), sends posted asynchronously, receives block.
- ``fsdp``: ``layers`` buckets; forward all-gathers each layer's parameters one
  layer ahead of compute, backward all-gathers again and reduce-scatters the
  gradients of each layer after its backward.
- ``diloco``: ``inner_steps`` local steps with no communication, then a
  blocking outer all-reduce of ``outer_bytes`` (already int8/int4-sized).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from corridor.agent.collectives import Step, execute, schedule
from corridor.agent.runtime import AgentFailure

if TYPE_CHECKING:
    from corridor.agent.runtime import Agent

PATTERN_NAMES = ("allreduce", "parameter_server", "pipeline", "fsdp", "diloco")


class _CommWorker:
    """Runs collectives one after another on its own thread, as a framework's comm stream does."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.q: queue.Queue[tuple[list[Step], threading.Event] | None] = queue.Queue()
        self.busy_s = 0.0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="corridor-comm", daemon=True)
        self.thread.start()

    def submit(self, steps: list[Step]) -> threading.Event:
        ev = threading.Event()
        self.q.put((steps, ev))
        return ev

    def wait(self, ev: threading.Event) -> None:
        while not ev.wait(0.1):
            if self.error is not None:
                break
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.q.put(None)
        if self.error is None:
            self.thread.join(timeout=2.0)

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            steps, ev = item
            if self.error is None:
                t0 = time.monotonic()
                try:
                    execute(self.agent, steps)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                    self.error = exc
                self.busy_s += time.monotonic() - t0
            ev.set()


def _run_delay_s() -> float:
    """Seconds this process's threads have spent runnable but not running (kernel schedstat run_delay).

    The difference over a step is the time the host kept the agent off the CPU
    while it wanted to run: a stall of the machine, not of the network. 0.0 where
    the kernel does not expose it.
    """
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat", encoding="ascii") as handle:
                total += int(handle.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def _sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def role_train(agent: Agent) -> None:
    """Run ``job["steps"]`` training steps of ``job["pattern"]`` and emit ``train_step`` records."""
    job: dict[str, Any] = agent.cfg.job
    pattern = job["pattern"]
    if pattern not in PATTERN_NAMES:
        raise AgentFailure(f"unknown training pattern {pattern!r}")
    k = agent.cfg.time_scale
    sites = [agent.peers[r].site for r in range(agent.n)]
    compute_s = float(job["compute_s"]) * k
    fwd_s = compute_s * float(job.get("forward_fraction", 1 / 3))
    bwd_s = compute_s - fwd_s
    grad_bytes = int(job.get("grad_bytes", 0))
    algorithm = job.get("algorithm", "ring")
    worker = _CommWorker(agent)
    agent.synced_start("train")
    try:
        for step in range(int(job["steps"])):
            wan0 = agent.wan_tx_bytes()
            busy0 = worker.busy_s
            stall0 = _run_delay_s()
            t0 = time.monotonic()
            blocked_s = 0.0
            outer = False
            if pattern in ("allreduce", "parameter_server"):
                n_buckets = max(1, int(job.get("buckets", 4)))
                algo = algorithm if pattern == "allreduce" else "parameter_server"
                bucket_steps = schedule(algo, -(-grad_bytes // n_buckets), sites)
                _sleep(fwd_s)
                events = []
                for _ in range(n_buckets):
                    _sleep(bwd_s / n_buckets)
                    events.append(worker.submit(bucket_steps))
                t_compute_end = time.monotonic()
                for ev in events:
                    worker.wait(ev)
            elif pattern == "fsdp":
                layers = max(1, int(job.get("layers", 4)))
                layer_bytes = -(-grad_bytes // layers)
                ag = schedule("all_gather", layer_bytes, sites)
                rs = schedule("reduce_scatter", layer_bytes, sites)
                pending = [worker.submit(ag)]
                for layer in range(layers):
                    if layer + 1 < layers:
                        pending.append(worker.submit(ag))
                    tb = time.monotonic()
                    worker.wait(pending[layer])
                    blocked_s += time.monotonic() - tb
                    _sleep(fwd_s / layers)
                back = [worker.submit(ag)]
                rs_events = []
                for i in range(layers):
                    if i + 1 < layers:
                        back.append(worker.submit(ag))
                    tb = time.monotonic()
                    worker.wait(back[i])
                    blocked_s += time.monotonic() - tb
                    _sleep(bwd_s / layers)
                    rs_events.append(worker.submit(rs))
                t_compute_end = time.monotonic()
                for ev in rs_events:
                    worker.wait(ev)
            elif pattern == "pipeline":
                blocked_s = _pipeline_step(agent, job, fwd_s, bwd_s)
                t_compute_end = time.monotonic()
            else:  # diloco
                _sleep(compute_s)
                t_compute_end = time.monotonic()
                inner = max(1, int(job.get("inner_steps", 10)))
                if (step + 1) % inner == 0:
                    outer = True
                    tb = time.monotonic()
                    execute(agent, schedule(algorithm, int(job.get("outer_bytes", grad_bytes)), sites))
                    blocked_s += time.monotonic() - tb
            t_end = time.monotonic()
            step_time = (t_end - t0) / k
            comm_busy = worker.busy_s - busy0
            if pattern == "pipeline" or pattern == "diloco":
                comm_busy = blocked_s
            exposed = (t_end - t_compute_end) + (blocked_s if pattern == "fsdp" else 0.0)
            if pattern == "pipeline":
                exposed = blocked_s
            agent.emit(
                {
                    "kind": "train_step",
                    "pattern": pattern,
                    "algorithm": algorithm,
                    "step": step,
                    "step_time_s": step_time,
                    "compute_time_s": compute_s / k,
                    "comm_time_s": comm_busy / k,
                    "exposed_comm_s": exposed / k,
                    "wan_bytes": agent.wan_tx_bytes() - wan0,
                    "outer_sync": outer,
                    "sched_stall_s": (_run_delay_s() - stall0) / k,
                    "t_start_s": (t0 + agent.clock_offset_s) / k,
                    "time_scale": k,
                }
            )
    finally:
        worker.stop()
    if worker.error is not None:
        raise worker.error


def _pipeline_step(agent: Agent, job: dict[str, Any], fwd_s: float, bwd_s: float) -> float:
    """One 1F1B step on this stage; returns seconds spent blocked on communication."""
    engine = agent.engine
    assert engine is not None
    stage, n = agent.rank, agent.n
    m = max(1, int(job.get("microbatches", 4)))
    act = int(job.get("activation_bytes", 1 << 20))
    f_mb, b_mb = fwd_s / m, bwd_s / m
    blocked = 0.0
    sends = []

    def forward() -> None:
        nonlocal blocked
        if stage > 0:
            tb = time.monotonic()
            engine.wait([engine.recv(stage - 1, act)])
            blocked += time.monotonic() - tb
        _sleep(f_mb)
        if stage < n - 1:
            sends.append(engine.send(stage + 1, act))

    def backward() -> None:
        nonlocal blocked
        if stage < n - 1:
            tb = time.monotonic()
            engine.wait([engine.recv(stage + 1, act)])
            blocked += time.monotonic() - tb
        _sleep(b_mb)
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
    return blocked
