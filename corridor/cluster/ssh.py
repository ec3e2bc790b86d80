"""ssh to a cluster's servers: the argv lists, and the one function that runs them.

Stage: emulation. Every command corridor sends to a server goes through here.
:func:`ssh_argv` and :func:`remote_command` are pure (tested without a network);
:func:`run_ssh` is the only place that executes ssh. Logins are by key only
(``BatchMode=yes``: never a password prompt that would hang a run), with the
cluster's ``known_hosts`` file when it names one (then a server whose host key
is not in it is refused), otherwise ssh's own files with trust on first use.

Short commands can share one connection per server (:class:`SharedConnections`,
ssh's own multiplexing): while a network is up, each server has one master
connection, and a command sent with ``shared=True`` opens a session on it
instead of logging in again (a login costs a key exchange, several round
trips; a session on a live connection costs one). Long-lived sessions (node
shells, leashed processes) keep a login of their own, since a server's sshd
caps the sessions one connection may carry (``MaxSessions``, 10 by default). A
shared command whose session the master could not open runs again on a login
of its own, so sharing can only make a command faster, never fail it.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corridor.cluster.spec import ClusterSpec, ServerSpec

log = logging.getLogger(__name__)

#: ssh's exit status when the connection itself failed (remote commands' own statuses are passed through).
SSH_FAILED = 255
#: Seconds ssh waits for the TCP connection and the server's greeting.
CONNECT_TIMEOUT_S = 5
#: Seconds a master connection has to come up before commands go without it.
MASTER_UP_TIMEOUT_S = 10.0
#: What ssh says when a shared connection could not carry a session (then the command is sent again, alone).
MUX_REFUSED = ("mux_client", "control socket", "session open refused", "controlpath")

#: Control sockets of the master connections up now, by (login, port).
_SHARED: dict[tuple[str, int], str] = {}
_SHARED_LOCK = threading.Lock()


@dataclass(frozen=True)
class SshResult:
    """What one ssh call gave back."""

    server: str
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def connected(self) -> bool:
        """Whether ssh got as far as running the remote command."""
        return not self.timed_out and self.returncode != SSH_FAILED

    def why_not_connected(self) -> str:
        """One line on why the login failed, from ssh's own last words."""
        if self.timed_out:
            return "ssh did not finish in time"
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"ssh exited {self.returncode}"


def shared_socket(server: ServerSpec) -> str | None:
    """The control socket of ``server``'s master connection, if one is up."""
    with _SHARED_LOCK:
        return _SHARED.get((server.destination, server.port))


def ssh_options(server: ServerSpec, *, known_hosts: str | None = None,
                connect_timeout_s: int = CONNECT_TIMEOUT_S, shared: bool = False,
                master_socket: str | None = None) -> list[str]:
    """The ssh options every call to ``server`` uses: its key alone, no prompts, a bounded connect.

    ``shared``: a session on the server's master connection when one is up (ssh logs
    in alone when the socket is gone); otherwise never a multiplexed session, whatever
    the user's own ssh configuration says. ``master_socket``: the options of a master
    connection listening there.
    """
    socket = shared_socket(server) if shared else None
    options = [
        "-i", server.key_path,
        "-p", str(server.port),
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "PasswordAuthentication=no",
        "-o", f"ConnectTimeout={connect_timeout_s}",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        "-o", "LogLevel=ERROR",
    ]
    if known_hosts is not None:
        options += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                    "-o", "StrictHostKeyChecking=yes"]
    else:
        options += ["-o", "StrictHostKeyChecking=accept-new"]
    if master_socket is not None:
        options += ["-o", "ControlMaster=yes", "-o", f"ControlPath={master_socket}", "-o", "ControlPersist=no"]
    elif socket is not None:
        options += ["-o", "ControlMaster=no", "-o", f"ControlPath={socket}"]
    else:
        options += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    return options


def mux_refused(returncode: int, stderr: str) -> bool:
    """Whether a shared command failed because its connection could not carry it (it never ran)."""
    lowered = stderr.lower()
    return returncode == SSH_FAILED and any(words in lowered for words in MUX_REFUSED)


def remote_command(argv: Sequence[str], *, sudo: bool = False) -> str:
    """One shell-quoted command line for the server's login shell; ``sudo`` runs it with ``sudo -n``."""
    if not argv:
        raise ValueError("a remote command needs at least one word")
    words = ["sudo", "-n", "--", *argv] if sudo else list(argv)
    return shlex.join(words)


def ssh_argv(server: ServerSpec, argv: Sequence[str], *, known_hosts: str | None = None, sudo: bool = False,
             connect_timeout_s: int = CONNECT_TIMEOUT_S, shared: bool = False) -> list[str]:
    """The local argv that runs ``argv`` on ``server`` (quoted once, for the remote shell)."""
    return ["ssh", *ssh_options(server, known_hosts=known_hosts, connect_timeout_s=connect_timeout_s,
                                shared=shared),
            "--", server.destination, remote_command(argv, sudo=sudo)]


def run_ssh(cluster: ClusterSpec, server: ServerSpec, argv: Sequence[str], *, sudo: bool = False,
            stdin_text: str | None = None, timeout_s: float = 60.0) -> SshResult:
    """Run ``argv`` on ``server`` and wait; a failed login is ``connected == False``, never an exception.

    On the server's master connection when one is up (a command refused a session there
    is sent again on a login of its own).
    """
    result = _run_ssh_once(cluster, server, argv, sudo=sudo, stdin_text=stdin_text, timeout_s=timeout_s,
                           shared=True)
    if shared_socket(server) is not None and mux_refused(result.returncode, result.stderr):
        log.debug("ssh %s: the shared connection refused a session (%s); logging in alone", server.name,
                  result.why_not_connected())
        result = _run_ssh_once(cluster, server, argv, sudo=sudo, stdin_text=stdin_text, timeout_s=timeout_s,
                               shared=False)
    return result


def _run_ssh_once(cluster: ClusterSpec, server: ServerSpec, argv: Sequence[str], *, sudo: bool,
                  stdin_text: str | None, timeout_s: float, shared: bool) -> SshResult:
    local = ssh_argv(server, argv, known_hosts=cluster.known_hosts_path, sudo=sudo, shared=shared)
    log.debug("ssh %s: %s", server.name, shlex.join(local))
    try:
        done = subprocess.run(local, input=stdin_text if stdin_text is not None else "", capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        return SshResult(server.name, tuple(local), SSH_FAILED, _text(exc.stdout), _text(exc.stderr),
                         timed_out=True)
    except OSError as exc:  # no ssh client on this machine
        return SshResult(server.name, tuple(local), SSH_FAILED, "", f"cannot run ssh: {exc.strerror or exc}")
    return SshResult(server.name, tuple(local), done.returncode, done.stdout, done.stderr)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


class SharedConnections:
    """One master ssh connection per server, for the life of a network (``ssh -M -N``).

    :meth:`open` starts them and registers their control sockets, so that shared
    commands (:func:`run_ssh`, a node's ``server_run``) use them; :meth:`close`
    ends them. A master that does not come up within :data:`MASTER_UP_TIMEOUT_S`
    is ended and its server's commands log in alone, as without sharing. Each
    master's pid goes to ``record`` as it starts, so ``corridor clean`` ends one
    that a killed run left.
    """

    def __init__(self, cluster: ClusterSpec, directory: Path) -> None:
        self.cluster = cluster
        self.directory = directory
        self.masters: dict[str, tuple[ServerSpec, subprocess.Popen[bytes], str]] = {}

    def open(self, servers: Iterable[ServerSpec], *, record: Callable[[str, int], None] | None = None) -> list[str]:
        """Start a master for each server; the names of those that came up."""
        started = []
        for index, server in enumerate(servers):
            if shared_socket(server) is not None:
                continue  # another network in this process shares one already
            socket = str(self.directory / f"ssh-{index}.sock")
            argv = ["ssh", *ssh_options(server, known_hosts=self.cluster.known_hosts_path, master_socket=socket),
                    "-N", "-T", "--", server.destination]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
            if record is not None:
                record(server.name, proc.pid)
            started.append((server, proc, socket))
        deadline = time.monotonic() + MASTER_UP_TIMEOUT_S
        up = []
        for server, proc, socket in started:
            while proc.poll() is None and not os.path.exists(socket) and time.monotonic() < deadline:
                time.sleep(0.02)
            if proc.poll() is None and os.path.exists(socket):
                with _SHARED_LOCK:
                    _SHARED[(server.destination, server.port)] = socket
                self.masters[server.name] = (server, proc, socket)
                up.append(server.name)
            else:
                why = _last_line(proc) or "it did not come up in time"
                _stop_master(proc)
                log.warning("no shared ssh connection to %s (%s); its commands log in one by one", server.name, why)
        return up

    def close(self) -> None:
        """End every master (their sessions are over by now); commands log in alone again."""
        masters, self.masters = self.masters, {}
        for server, proc, socket in masters.values():
            with _SHARED_LOCK:
                if _SHARED.get((server.destination, server.port)) == socket:
                    del _SHARED[(server.destination, server.port)]
            _stop_master(proc)
            try:
                os.unlink(socket)
            except OSError:
                pass


def _stop_master(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def _last_line(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None or proc.stderr is None:
        return ""
    lines = proc.stderr.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"ssh exited {proc.returncode}"
