"""The training role: compute phases (sleeps) and the real communication of each pattern.

Stage: workload run (standard library only). One ``train_step`` record per
step per rank. Compute is a sleep standing in for the GPU, multiplied by the
time scale k; every duration is divided by k before it is recorded.

What a step does is the pattern's (``job["pattern"]``): one object in
:mod:`corridor.workloads.training.patterns` gives both this step and the
model's prediction of it.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from corridor.agent.collectives import Step, execute
from corridor.agent.runtime import AgentFailure
from corridor.workloads.training.patterns import PATTERNS, StepContext

if TYPE_CHECKING:
    from corridor.agent.runtime import Agent

PATTERN_NAMES = tuple(PATTERNS)


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
    state: dict[str, Any] = {}  # the pattern's, from one step to the next
    agent.synced_start("train")
    # one reading ends a step and starts the next: a pattern whose exchanges run on across steps
    # (streaming-diloco) sends bytes between them, and every byte belongs to one step
    wan_end = agent.wan_tx_bytes()
    try:
        for step in range(int(job["steps"])):
            wan0 = wan_end
            stall0 = _run_delay_s()
            t0 = time.monotonic()
            times = PATTERNS[pattern].agent_step(StepContext(
                agent=agent, job=job, worker=worker, step=step, sites=sites, compute_s=compute_s, fwd_s=fwd_s,
                bwd_s=bwd_s, grad_bytes=grad_bytes, algorithm=algorithm, sleep=_sleep, state=state))
            t_end = time.monotonic()
            step_time = (t_end - t0) / k
            comm_busy, exposed, outer = times.comm_s, times.exposed_s, times.outer_sync
            wan_end = agent.wan_tx_bytes()
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
                    "wan_bytes": wan_end - wan0,
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
