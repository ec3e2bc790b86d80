"""What every agent process does around its role: priority, a watchdog, and its exit statuses.

Stage: workload run (inside each host; standard library only). Every role,
whether it joins a training mesh (``train``, ``collective``) or serves and
sends LLM requests (``inference-server``, ``inference-client``,
``inference-store``, ``message-replay``), starts through
``python -m corridor.agent ROLE --config JSON`` and gets the same lifecycle:
its nice value (and, for a client, a real-time priority) raised where allowed,
a watchdog that ends it once its time limit is past so an agent never outlives
its run, and the same exit statuses.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

#: Exit statuses every role uses (1 is left to Python's own uncaught exceptions).
EXIT_OK = 0
EXIT_BAD_CONFIG = 2
EXIT_FAILURE = 3
EXIT_TIMEOUT = 4


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
                last_words()
            sys.stderr.write(f"corridor agent ({what}): still running after {limit_s:g} s; exiting\n")
            sys.stderr.flush()
        finally:
            os._exit(EXIT_TIMEOUT)

    threading.Thread(target=bite, name="corridor-watchdog", daemon=True).start()
