"""Node shells logged in ahead of a cluster network's build (corridor.cluster.logins); no root, no servers.

Each login here is a local ``sh`` standing in for the ssh line: it writes Mininet's prompt when it is "in".
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from mininet.examples.cluster import RemoteMixin
from mininet.node import Node

from corridor.cluster.logins import PROMPT, ShellLogins, node_shell_words
from corridor.cluster.remote import RemoteCorridorHost, ServerMixin
from corridor.cluster.spec import ServerSpec


def _server(name: str) -> ServerSpec:
    return ServerSpec(name=name, address=f"{name}.example", user="root", key_path="/nonexistent/key")


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class _Capture(Exception):
    def __init__(self, cmd: list[str]) -> None:
        super().__init__(cmd)
        self.cmd = cmd


class _CapturingNode(RemoteMixin, Node):  # type: ignore[misc]
    def _popen(self, cmd: list[str], **params: object) -> None:
        raise _Capture(list(cmd))


def test_the_shell_words_are_what_mininet_runs_for_a_remote_node() -> None:
    # Mininet's own startShell, as RemoteMixin calls it for a node on a server, up to the point it starts it
    node = object.__new__(_CapturingNode)
    node.name, node.inNamespace, node.shell, node.isRemote = "rem-gpu1", True, None, True
    try:
        with pytest.raises(_Capture) as caught:
            node.startShell()
    finally:
        for fd in (getattr(node, "master", None), getattr(node, "slave", None)):
            if fd is not None:
                os.close(fd)
    assert caught.value.cmd == node_shell_words("rem-gpu1")


def _fake_ssh(script: str) -> object:
    """argv_for: run ``script`` under sh with the node's name and the server's in $1 and $2."""
    def argv_for(server: ServerSpec, words: Sequence[str]) -> list[str]:
        return ["sh", "-c", script, "sh", words[-1].split(":", 1)[1], server.name]
    return argv_for


def test_every_node_logs_in_at_most_at_once_per_server_and_takes_its_own(tmp_path: Path) -> None:
    running = tmp_path / "running"
    running.mkdir()
    log = tmp_path / "log"
    # each login: marks itself running on its server, writes how many of that server's are, takes a while,
    # unmarks itself, then writes the prompt and stays (as a shell does)
    script = (f'mkdir -p {running}/"$2"; touch {running}/"$2"/"$1"; '
              f'echo "$2 $(ls {running}/"$2" | wc -l)" >> {log}; sleep 0.3; rm {running}/"$2"/"$1"; '
              f"printf '\\177'; exec sleep 30")
    logins = ShellLogins(_fake_ssh(script), at_once=3)  # type: ignore[arg-type]
    nodes = [(f"n{i}", _server("s1" if i % 2 else "s2")) for i in range(12)]
    recorded: list[tuple[str, str, int]] = []
    logins.start(nodes, record=lambda node, server, pid: recorded.append((node, server, pid)))
    try:
        assert logins.started == 12 and len(recorded) == 12
        assert {(n, s) for n, s, _ in recorded} == {(n, s.name) for n, s in nodes}
        counts = [int(line.split()[1]) for line in log.read_text().splitlines()]
        assert len(counts) == 12
        assert max(counts) <= 3, counts  # never more than at_once logging in to one server
        assert max(counts) >= 2, counts  # and they do log in together
        login = logins.take("n3", node_shell_words("n3"))
        assert login is not None and login.node == "n3" and login.server == "s1"
        assert os.read(login.master, 16) == PROMPT.encode()  # the prompt is there for Mininet to read
        assert logins.take("n3", node_shell_words("n3")) is None  # taken once
        login.end()
        # a node asking for another command gets none, and that login ends
        other = logins._ready["n4"]
        assert logins.take("n4", ["bash"]) is None
        assert other.process.poll() is not None and not _fd_open(other.master)
        assert logins.taken == 1 and logins.describe()["started"] == 12
    finally:
        left = list(logins._ready.values())
        logins.close()
    assert left and all(login.process.poll() is not None for login in left)
    assert not any(_fd_open(login.master) or _fd_open(login.slave) for login in left)
    assert logins.take("n5", node_shell_words("n5")) is None


def test_a_failed_login_is_left_to_mininet_and_a_silent_one_waits_no_longer_than_allowed(tmp_path: Path) -> None:
    script = 'case "$1" in bad) exit 255;; mute) exec sleep 30;; esac; printf "\\177"; exec sleep 30'
    logins = ShellLogins(_fake_ssh(script), wait_s=1.0)  # type: ignore[arg-type]
    pids: dict[str, int] = {}
    began = time.monotonic()
    logins.start([("good", _server("s1")), ("bad", _server("s1")), ("mute", _server("s2"))],
                 record=lambda node, server, pid: pids.__setitem__(node, pid))
    took = time.monotonic() - began
    try:
        assert took >= 1.0  # it waited for the silent one until the deadline, not past it by much
        assert took < 10.0
        assert logins.take("bad", node_shell_words("bad")) is None
        assert logins.take("mute", node_shell_words("mute")) is None
        _take_and_end(logins, "good")
    finally:
        logins.close()
    for node in ("bad", "mute"):
        assert not os.path.exists(f"/proc/{pids[node]}") or _zombie_or_gone(pids[node])


def test_a_server_whose_login_fails_gets_no_more_logins_ahead() -> None:
    # one at a time: s1's first login fails, so its other nodes are left to Mininet; s2's go on
    script = 'case "$1" in bad) exit 255;; esac; printf "\\177"; exec sleep 30'
    logins = ShellLogins(_fake_ssh(script), at_once=1)  # type: ignore[arg-type]
    begun: list[str] = []
    logins.start([("bad", _server("s1")), ("n1", _server("s1")), ("n2", _server("s1")),
                  ("ok1", _server("s2")), ("ok2", _server("s2"))],
                 record=lambda node, server, pid: begun.append(node))
    try:
        assert sorted(begun) == ["bad", "ok1", "ok2"], begun
        assert logins.started == 3
        assert logins.take("n1", node_shell_words("n1")) is None
        _take_and_end(logins, "ok2")
    finally:
        logins.close()


def _take_and_end(logins: ShellLogins, node: str) -> None:
    """``node`` takes the login begun for it (there must be one), which then ends as an unused one would."""
    login = logins.take(node, node_shell_words(node))
    assert login is not None, f"no login was waiting for {node}"
    login.end()


def _zombie_or_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_an_interrupted_start_ends_every_login_it_began(tmp_path: Path) -> None:
    logins = ShellLogins(_fake_ssh("sleep 0.2; printf '\\177'; exec sleep 30"))  # type: ignore[arg-type]
    pids: list[int] = []

    def record(node: str, server: str, pid: int) -> None:
        pids.append(pid)
        if len(pids) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        logins.start([(f"n{i}", _server("s1")) for i in range(6)], record=record)
    assert len(pids) == 3
    deadline = time.monotonic() + 10
    while not all(_zombie_or_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_zombie_or_gone(pid) for pid in pids)
    assert len(logins._ready) == 0


def test_the_node_reads_the_login_through_the_terminal_mininet_opened() -> None:
    import pty

    logins = ShellLogins(_fake_ssh("printf '\\177'; exec sleep 30"))  # type: ignore[arg-type]
    logins.start([("rem-gpu1", _server("s1"))])
    # what Mininet's startShell has done when it asks for the shell: a terminal of its own
    master, slave = pty.openpty()
    node = object.__new__(RemoteCorridorHost)
    node.name, node.logins, node.master, node.slave = "rem-gpu1", logins, master, slave
    try:
        # another command (not the shell on Mininet's terminal) is not the login's
        assert ServerMixin._login_ahead(node, node_shell_words("rem-gpu1"), {"stdin": subprocess.PIPE}) is None
        process = ServerMixin._login_ahead(node, node_shell_words("rem-gpu1"), {"stdin": slave})
        assert process is not None and process.poll() is None
        poller = select.poll()
        poller.register(master, select.POLLIN)
        assert poller.poll(5000)
        assert os.read(master, 16) == PROMPT.encode()  # Mininet's descriptor now reads the login's shell
        process.terminate()
        process.wait(timeout=10)
    finally:
        os.close(master)
        os.close(slave)
        logins.close()
