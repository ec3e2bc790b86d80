"""Node shells logged in to their servers ahead of a network's build, several at once.

Stage: emulation (root here and on the servers). Mininet starts a node's shell
when it creates the node and waits for the shell's prompt before it creates the
next, and a login to a server costs a key exchange and several round trips. On
two servers on this 2-core machine, ten logins took 3.6 s one at a time and
1.5 s together; ``scripts/measure_cluster_build.py`` read two-site (11 shells)
up in 5.03-5.21 s with its shells logged in one after another and in 2.94 s
with them logged in ahead, and xinjiang-coastal (30 shells) in 18.9-19.9 s
against 12.5-12.9 s.

:class:`ShellLogins` starts every node's shell before the build, up to
:data:`LOGINS_AT_ONCE` per server at a time, each on a terminal and an ssh
session of its own, as Mininet's would be: it still ends with its session, and
the session with the coordinator. When Mininet then starts the node's shell,
:class:`corridor.cluster.remote.ServerMixin` hands it the login that is already
in, provided the command Mininet asks for is the one that login runs
(:func:`node_shell_words`); for any other it logs in as before.
"""

from __future__ import annotations

import collections
import logging
import os
import pty
import select
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from corridor.cluster.spec import ServerSpec
from corridor.links.testbed import stop_process

log = logging.getLogger(__name__)

#: Logins to one server in progress at once, at most. sshd's MaxStartups (10:30:100 by default) starts
#: refusing connections that have not yet authenticated once ten are pending.
LOGINS_AT_ONCE = 8
#: How long the logins ahead of a build wait for their prompts; the nodes still waiting are left to Mininet.
LOGIN_WAIT_S = 60.0
#: Seconds a login that is not taken gets to end after SIGTERM, before SIGKILL.
END_GRACE_S = 5.0
#: Mininet's prompt in a node's shell: a line of output has ended when it appears.
PROMPT = chr(127)


def node_shell_words(name: str) -> list[str]:
    """The command Mininet's ``startShell`` runs for a node on a server (``tests/test_cluster_logins.py`` holds
    it to Mininet's own): ``mnexec -cn`` (no inherited descriptors, new namespaces), then an interactive bash
    whose prompt is Mininet's sentinel, named ``mininet:NAME`` for ``ps``."""
    return ["mnexec", "-cn", "env", "PS1=" + PROMPT, "bash", "--norc", "--noediting", "-is", "mininet:" + name]


@dataclass
class Login:
    """One node's shell, started on its server: its terminal's two ends and its ssh client."""

    node: str
    server: str
    words: list[str]
    master: int
    slave: int
    process: subprocess.Popen[bytes]

    def answered(self) -> bool:
        """Whether the shell has written anything yet (its prompt; nothing is read, Mininet reads it)."""
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        return bool(poller.poll(0))

    def end(self) -> None:
        """End the ssh client (and with it the shell on the server) and close the terminal."""
        try:
            stop_process(self.process, END_GRACE_S)
        finally:
            for fd in (self.master, self.slave):
                try:
                    os.close(fd)
                except OSError:
                    pass


#: What a login runs here: the ssh argv for ``words`` on ``server``.
ArgvFor = Callable[[ServerSpec, Sequence[str]], list[str]]


class ShellLogins:
    """The shells of a network's nodes, logged in before Mininet builds it (see the module's text).

    :meth:`start` logs every node in and returns once each has answered (or
    :data:`LOGIN_WAIT_S` has passed); :meth:`take` hands one to its node;
    :meth:`close` ends those not taken. ``argv_for`` builds each login's argv
    (the node's ssh line); ``record`` hears of each login's pid as it starts, so
    that ``corridor clean`` knows it should the run be killed before the node
    takes it.
    """

    def __init__(self, argv_for: ArgvFor, *, at_once: int = LOGINS_AT_ONCE, wait_s: float = LOGIN_WAIT_S) -> None:
        if at_once < 1:
            raise ValueError("at least one login at a time")
        self.argv_for = argv_for
        self.at_once = at_once
        self.wait_s = wait_s
        self._ready: dict[str, Login] = {}
        self.started = 0  # logins begun
        self.taken = 0  # logins a node took as its shell
        self.seconds = 0.0  # how long :meth:`start` took

    def start(self, nodes: Sequence[tuple[str, ServerSpec]],
              record: Callable[[str, str, int], None] | None = None) -> None:
        """Log in ``(node, server)`` pairs, at most :attr:`at_once` per server at a time; wait for each prompt."""
        began = time.monotonic()
        queues: dict[str, collections.deque[tuple[str, ServerSpec]]] = collections.defaultdict(collections.deque)
        for node, server in nodes:
            queues[server.name].append((node, server))
        pending: list[Login] = []
        deadline = began + self.wait_s
        try:
            while True:
                for server_name, queue in queues.items():
                    busy = sum(1 for login in pending if login.server == server_name)
                    while queue and busy < self.at_once:
                        node, server = queue.popleft()
                        login = self._spawn(node, server)
                        pending.append(login)
                        busy += 1
                        if record is not None:
                            record(node, server.name, login.process.pid)
                still = []
                for login in pending:
                    if login.process.poll() is not None:
                        # the login failed (its error, if any, is on its terminal): this server's nodes not yet
                        # begun are left to Mininet, which logs each in itself and reports why, as without this
                        log.debug("%s: the login ahead to %s ended (exit %s)", login.node, login.server,
                                  login.process.returncode)
                        login.end()
                        queues[login.server].clear()
                    elif login.answered():
                        self._ready[login.node] = login
                    else:
                        still.append(login)
                pending = still
                if not pending and not any(queues.values()):
                    break
                if time.monotonic() >= deadline:
                    log.info("%d node shell(s) had not logged in after %.0f s; Mininet logs them in itself",
                             len(pending) + sum(len(q) for q in queues.values()), self.wait_s)
                    break
                self._wait_for_any(pending, deadline)
        except BaseException:
            for login in pending:
                login.end()
            self.close()
            raise
        for login in pending:  # past the deadline: the node logs in on its own
            login.end()
        self.seconds = time.monotonic() - began
        log.info("%d node shell(s) logged in ahead in %.2f s", len(self._ready), self.seconds)

    def _spawn(self, node: str, server: ServerSpec) -> Login:
        words = node_shell_words(node)
        master, slave = pty.openpty()
        try:
            process = subprocess.Popen(self.argv_for(server, words), stdin=slave, stdout=slave, stderr=slave,
                                       close_fds=True, process_group=0)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self.started += 1
        return Login(node, server.name, words, master, slave, process)

    @staticmethod
    def _wait_for_any(pending: Sequence[Login], deadline: float) -> None:
        poller = select.poll()
        for login in pending:
            poller.register(login.master, select.POLLIN)
        # short slices: a login that fails writes nothing, and only its exit says so
        poller.poll(max(0, min(100, int((deadline - time.monotonic()) * 1000))))

    def take(self, node: str, words: Sequence[str]) -> Login | None:
        """The login for ``node`` if it runs ``words`` and is still up; otherwise None (and a stale one ends)."""
        login = self._ready.pop(node, None)
        if login is None:
            return None
        if list(words) != login.words or login.process.poll() is not None:
            log.debug("%s: the login ahead does not fit (%s); logging in anew", node,
                      "ended" if login.process.poll() is not None else "another command")
            login.end()
            return None
        self.taken += 1
        return login

    def close(self) -> None:
        """End every login no node took. Safe to call twice."""
        ready, self._ready = self._ready, {}
        for login in ready.values():
            login.end()

    def describe(self) -> dict[str, float | int]:
        """What a run records: logins begun, logins the nodes took, and the seconds they took together."""
        return {"started": self.started, "taken": self.taken, "seconds": round(self.seconds, 3)}
