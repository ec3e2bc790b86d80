"""Run a command on a server for no longer than the ssh session that started it.

Stage: emulation (runs on a server, started over ssh by
:class:`corridor.cluster.remote.ServerMixin`). ssh without a terminal gives a
remote command no signal when the client goes away: a delay line or an iperf3
server would outlive the run that started it, holding its namespace. The leash
starts the command with its own stdin, stdout and stderr (so an agent's
protocol passes through untouched) and watches its stdout for a hang-up: when
the ssh session ends, sshd closes the other end of that pipe, and the leash ends
the command (SIGTERM, then SIGKILL after :data:`GRACE_S`). Otherwise it waits
for the command and exits with its status (128 + N for a command ended by
signal N, as a shell reports it).

With ``--stop-at-stdin-end`` the command gets no stdin; the leash reads its
own, and at its end (the coordinator closed its side, as a way to say stop)
ends the command the same way and exits with the command's status. A command
that flushes on SIGTERM, such as tcpdump writing a capture to stdout, then
delivers all of it.

Usage: ``python -m corridor.cluster.leash [--stop-at-stdin-end] -- ARGV...``
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence

#: Seconds a command has to exit after SIGTERM before SIGKILL.
GRACE_S = 3.0
#: How often the leash looks at its command between hang-up checks (ms).
POLL_MS = 200
#: The exit status when the session went away first (the command's own status is lost with it).
HUNG_UP = 129


def _end(child: subprocess.Popen[bytes]) -> int:
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return child.wait()
    try:
        return child.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return child.wait()


def _status(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    stdin_stops = words[:1] == ["--stop-at-stdin-end"]
    if stdin_stops:
        words = words[1:]
    if words[:1] == ["--"]:
        words = words[1:]
    if not words:
        print("usage: python -m corridor.cluster.leash [--stop-at-stdin-end] -- ARGV...", file=sys.stderr)
        return 2
    try:
        # its own process group, so the end reaches what the command started too
        child = subprocess.Popen(words, start_new_session=True, stdin=subprocess.DEVNULL if stdin_stops else None)
    except OSError as exc:
        print(f"leash: cannot start {words[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    watch = select.poll()
    out_fd, in_fd = sys.stdout.fileno(), sys.stdin.fileno()
    watch.register(out_fd, 0)  # POLLERR and POLLHUP are always reported: the reader went away
    if stdin_stops:
        watch.register(in_fd, select.POLLIN)
    while True:
        returncode = child.poll()
        if returncode is not None:
            return _status(returncode)
        try:
            events = watch.poll(POLL_MS)
        except InterruptedError:
            continue
        for fd, _event in events:
            if fd == out_fd:
                _end(child)
                return HUNG_UP
            if not os.read(in_fd, 4096):  # the end of stdin: stop the command and keep its own status
                watch.unregister(in_fd)
                return _status(_end(child))


if __name__ == "__main__":
    sys.exit(main())
