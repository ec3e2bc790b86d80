"""ssh to a cluster's servers: the argv lists, and the one function that runs them.

Stage: emulation. Every command corridor sends to a server goes through here.
:func:`ssh_argv` and :func:`remote_command` are pure (tested without a network);
:func:`run_ssh` is the only place that executes ssh. Logins are by key only
(``BatchMode=yes``: never a password prompt that would hang a run), with the
cluster's ``known_hosts`` file when it names one (then a server whose host key
is not in it is refused), otherwise ssh's own files with trust on first use.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from corridor.cluster.spec import ClusterSpec, ServerSpec

log = logging.getLogger(__name__)

#: ssh's exit status when the connection itself failed (remote commands' own statuses are passed through).
SSH_FAILED = 255
#: Seconds ssh waits for the TCP connection and the server's greeting.
CONNECT_TIMEOUT_S = 5


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


def ssh_options(server: ServerSpec, *, known_hosts: str | None = None,
                connect_timeout_s: int = CONNECT_TIMEOUT_S) -> list[str]:
    """The ssh options every call to ``server`` uses: its key alone, no prompts, a bounded connect."""
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
    return options


def remote_command(argv: Sequence[str], *, sudo: bool = False) -> str:
    """One shell-quoted command line for the server's login shell; ``sudo`` runs it with ``sudo -n``."""
    if not argv:
        raise ValueError("a remote command needs at least one word")
    words = ["sudo", "-n", "--", *argv] if sudo else list(argv)
    return shlex.join(words)


def ssh_argv(server: ServerSpec, argv: Sequence[str], *, known_hosts: str | None = None, sudo: bool = False,
             connect_timeout_s: int = CONNECT_TIMEOUT_S) -> list[str]:
    """The local argv that runs ``argv`` on ``server`` (quoted once, for the remote shell)."""
    return ["ssh", *ssh_options(server, known_hosts=known_hosts, connect_timeout_s=connect_timeout_s),
            "--", server.destination, remote_command(argv, sudo=sudo)]


def run_ssh(cluster: ClusterSpec, server: ServerSpec, argv: Sequence[str], *, sudo: bool = False,
            stdin_text: str | None = None, timeout_s: float = 60.0) -> SshResult:
    """Run ``argv`` on ``server`` and wait; a failed login is ``connected == False``, never an exception."""
    local = ssh_argv(server, argv, known_hosts=cluster.known_hosts_path, sudo=sudo)
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
