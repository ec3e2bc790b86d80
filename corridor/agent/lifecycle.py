"""The one lifecycle of every agent process: config, READY, records, DONE, stop, watchdog, exit status.

Stage: workload run (inside each host; standard library only). Every role,
whether it joins a training mesh (``train``, ``collective``) or serves and
sends LLM requests (``inference-server``, ``inference-client``,
``inference-store``, ``message-replay``), starts through
``python -m corridor.agent ROLE --config JSON`` and speaks the same protocol
to the runner that started it:

- **config**: one JSON object, inline or ``@path`` (runners write a 0600 file:
  a mesh config holds the run's secret, and ``ps`` shows command lines);
- **stdout** is the channel back: ``READY <port>`` once the role accepts
  connections (:func:`say_ready`), then its records, one JSON object per line
  (:func:`emit`), and ``DONE`` once its work is finished (:func:`say_done`;
  records may still follow until it exits);
- **stdin** is the stop signal: a role ends when its stdin closes
  (:func:`on_stdin_closed`), so an agent never outlives the runner that
  started it, and a runner stops every role the same way;
- its nice value (and, for a client, a real-time priority) is raised where
  allowed (:func:`raise_priority`), a watchdog ends it once its time limit is
  past (:func:`start_watchdog`), and it exits with one of the statuses below.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

#: Exit statuses every role uses (1 is left to Python's own uncaught exceptions).
EXIT_OK = 0
EXIT_BAD_CONFIG = 2
EXIT_FAILURE = 3
EXIT_TIMEOUT = 4
EXIT_STOPPED = 5  # stdin closed before the role's work was done

_stdout_lock = threading.Lock()


def _say(line: str) -> None:
    with _stdout_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def say_ready(port: int) -> None:
    """Tell the runner this role accepts connections on ``port``."""
    _say(f"READY {int(port)}")


def emit(record: dict[str, Any]) -> None:
    """Send one record to the runner (thread-safe: a line is never interleaved with another)."""
    _say(json.dumps(record, separators=(",", ":")))


def say_done() -> None:
    """Tell the runner this role's work is finished (it still exits on its own, or when stdin closes)."""
    _say("DONE")


def on_stdin_closed(callback: Callable[[], None]) -> None:
    """Call ``callback`` (from a daemon thread) once stdin reaches end of file: the runner's stop signal."""

    def wait() -> None:
        # the raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader makes
        # the interpreter abort at exit when the role ends before its stdin does
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        callback()

    threading.Thread(target=wait, name="corridor-stdin", daemon=True).start()


def raise_priority(nice: int = 0, realtime_priority: int = 0) -> None:
    """Lower this process's nice value and ask for SCHED_FIFO when allowed (kept as is otherwise).

    An agent's timestamps are the measurement: on a busy machine a sender that
    waits for a CPU sends late. The kernel's real-time throttling (95 % by
    default) keeps a runaway loop from taking a whole core.
    """
    if nice < 0:
        try:
            os.nice(nice)
        except OSError:
            pass
    if realtime_priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime_priority))
        except (OSError, AttributeError):
            pass


def start_watchdog(limit_s: float, what: str, *, last_words: Callable[[], None] | None = None) -> None:
    """End this process with :data:`EXIT_TIMEOUT` after ``limit_s``, whatever it is doing.

    ``last_words`` runs first (e.g. a record saying which rank timed out).
    """

    def bite() -> None:
        time.sleep(max(0.0, limit_s))
        try:
            if last_words is not None:
                # in a thread of its own: a last word stuck on a full pipe must not keep the process alive
                words = threading.Thread(target=last_words, name="corridor-last-words", daemon=True)
                words.start()
                words.join(2.0)
            sys.stderr.write(f"corridor agent ({what}): still running after {limit_s:g} s; exiting\n")
            sys.stderr.flush()
        finally:
            os._exit(EXIT_TIMEOUT)

    threading.Thread(target=bite, name="corridor-watchdog", daemon=True).start()
