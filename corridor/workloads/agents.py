"""The runners' handle on an agent process of any role, and the paced senders' statistics.

Stage: workload run. Every role (``train``, ``collective``, ``inference-server``,
``inference-client``, ``inference-store``, ``message-replay``: see
:mod:`corridor.agent`) starts the same way, with ``python -m corridor.agent ROLE
--config @FILE`` in an emulated host, and speaks the protocol of
:mod:`corridor.agent.lifecycle`: ``READY <port>`` once it accepts connections,
records as JSON lines, ``DONE`` when its work is finished, an end when its stdin
closes. :class:`AgentProcess` is the one handle every runner uses on such a
process: training's ranks, inference's servers, clients and stores, the message
replay's hosts and ``corridor bench cost``'s start-up timing.
:func:`sched_error_stats` and :func:`percentile_stats` are the per-run figures
of the paced senders, shared by the inference and message-replay runners.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from corridor.emulation.api import Network, package_env, python_argv
from corridor.errors import AgentError
from corridor.stats import percentile

log = logging.getLogger(__name__)

#: The module every agent starts through (one entry point, one role table).
AGENT_MODULE = "corridor.agent"

_serial = itertools.count()


class AgentProcess:
    """One started agent process: its host, role, READY port, records and stderr file.

    The config goes to the agent as a file only its owner reads, ``NAME.json`` in
    ``workdir`` (a training config holds the run's secret, and ``ps`` shows
    command lines), with stderr beside it in ``NAME.err``. A reader thread
    collects stdout: the ``READY`` port and when it came, ``DONE``, and every
    other line as a record.
    """

    def __init__(self, net: Network, host: str, role: str, config: Mapping[str, Any], workdir: str,
                 *, name: str | None = None) -> None:
        self.host = host
        self.role = role
        stem = name or f"{role}-{host}-{next(_serial)}"
        self.config_path = os.path.join(workdir, stem + ".json")
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(dict(config), handle, separators=(",", ":"))
        self.err_path = os.path.join(workdir, stem + ".err")
        self.err: IO[bytes] = open(self.err_path, "wb")  # noqa: SIM115 - closed in close()
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.done = threading.Event()  # set by DONE, and by the end of its output (so no one waits forever)
        self.said_done = False
        self.port: int | None = None
        self.ready_at: float | None = None
        self.started_at = time.monotonic()
        argv = python_argv(AGENT_MODULE, role, "--config", "@" + self.config_path)
        try:
            self.proc = net.popen(host, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                  env=package_env())
        except BaseException:
            self.err.close()
            raise
        self._reader = threading.Thread(target=self._read, name=f"agent-{stem}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("READY "):
                self.port = int(line.split()[1])
                self.ready_at = time.monotonic()
                self._ready.set()
            elif line == "DONE":
                self.said_done = True
                self.done.set()
            elif line:
                self.lines.append(line)
        self._ready.set()
        self.done.set()

    @property
    def ready_after_s(self) -> float | None:
        """Seconds from the start to ``READY`` (None before it, or if it never came)."""
        return None if self.ready_at is None else self.ready_at - self.started_at

    def wait_ready(self, timeout_s: float) -> int:
        """The port the agent said READY on; AgentError naming the host if it exits or takes too long."""
        self._ready.wait(timeout_s)
        if self.port is None:
            raise AgentError(f"{self.role} on {self.host} did not start within {timeout_s:g}s: {self.stderr_tail()}")
        return self.port

    def poll(self) -> int | None:
        return self.proc.poll()

    def stderr_tail(self, limit: int = 600) -> str:
        """The exit status (when it has one) and the end of the agent's stderr."""
        self.err.flush()
        try:
            with open(self.err_path, "rb") as f:
                text = f.read()[-limit:].decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        rc = self.proc.poll()
        return (f"exit status {rc}; " if rc is not None else "") + (text or "no error output")

    def records(self) -> list[dict[str, Any]]:
        """Every record line the agent printed (call once it has exited)."""
        self._reader.join(timeout=5.0)
        out = []
        for line in self.lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s on %s printed a non-JSON line: %.200s", self.role, self.host, line)
        return out

    def close_stdin(self) -> None:
        """The stop signal of the agent protocol."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def kill(self) -> bool:
        """SIGKILL the agent by its pid if it still runs; whether it did."""
        if self.proc.poll() is not None:
            return False
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close stdin (the stop signal), then terminate and kill by pid if it lingers."""
        self.close_stdin()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=2.0)

    def close(self) -> None:
        self.err.close()
        self.close_stdin()


def sched_error_stats(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How far sends left from their scheduled times, and how much of that the host caused.

    ``sched_error_*``: |t_send - t_sched| percentiles over records that have both.
    An agent's pacer also records ``sched_stall_s``: the part of a late send's
    lateness during which the host did not run the sending thread (another
    task or an interrupt on its CPU, a virtual CPU descheduled), seen as wall
    time its CPU clock did not count. ``sched_error_own_*`` takes that share
    out: what is left is the replay's own work (a host that only slows the CPU
    down still shows there). ``sched_stalled`` counts sends the host delayed by
    0.1 ms or more.
    """
    timed = [r for r in records if r.get("t_sched_s") is not None and r.get("t_send_s") is not None]
    err = [abs(float(r["t_send_s"]) - float(r["t_sched_s"])) for r in timed]
    stall = [float(r.get("sched_stall_s") or 0.0) for r in timed]
    own = [max(e - st, 0.0) for e, st in zip(err, stall, strict=True)]
    return {"sched_error_p50_s": percentile(err, 50), "sched_error_p99_s": percentile(err, 99),
            "sched_error_max_s": max(err) if err else math.nan,
            "sched_error_own_p50_s": percentile(own, 50), "sched_error_own_p99_s": percentile(own, 99),
            "sched_error_own_max_s": max(own) if own else math.nan,
            "sched_stall_max_s": max(stall) if stall else math.nan,
            "sched_stalled": sum(1 for st in stall if st >= 1e-4)}


def percentile_stats(values: Sequence[float], prefix: str) -> dict[str, float]:
    """p50, p90, p99 and mean of ``values`` as ``{prefix}_p50`` ... ``{prefix}_mean`` (NaN when empty)."""
    return {f"{prefix}_p50": percentile(values, 50), f"{prefix}_p90": percentile(values, 90),
            f"{prefix}_p99": percentile(values, 99),
            f"{prefix}_mean": sum(values) / len(values) if values else math.nan}
