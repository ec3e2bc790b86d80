"""Corridor's nodes and links on a cluster's servers, through Mininet's own cluster support.

Stage: emulation (root here and on the servers). Mininet's cluster edition
(``mininet.examples.cluster``) turns any node class into one that runs on
another server with :class:`RemoteMixin` (the node's shell is ``mnexec`` in a
new namespace there, reached over ssh; commands attach to it with ``mnexec -a``)
and links across servers with :class:`RemoteLink`. corridor uses both as they
are meant to be extended, and changes only what its own contract needs:

- **ssh as the cluster file says**: the server's key, port, user and
  known_hosts file (:func:`corridor.cluster.ssh.ssh_options`), every remote
  command quoted once for the server's shell, and ``sudo -n`` only for a login
  other than root. Mininet's own ssh line assumes the coordinator's user,
  default keys and sudo on both ends.
- **Processes tied to the run**: a process started in a remote node runs under
  :mod:`corridor.cluster.leash`, so it ends when its ssh session does (when the
  run stops it, or when ``corridor clean`` ends that session on the coordinator);
  the interpreter is the server's own (``python`` in the cluster file).
- **VXLAN links** (:class:`VxlanLink`): a link whose two nodes are on different
  servers rides a VXLAN tunnel with a VNI of its own (Mininet's SSH tunnels name
  every tunnel ``tap9``, and this kernel has no GRE), its MTU set from the
  network between the servers.
- **The wire's files** (:class:`RemoteWireNode`): the delay line writes its
  statistics on its server; the wire reads them there over ssh.

corridor places every node on a server (:mod:`corridor.cluster.placer`); the
coordinator holds none, so each node class here is remote.
"""

from __future__ import annotations

import logging
import os
import re
import select
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from mininet.examples.cluster import RemoteLink, RemoteMixin
from mininet.link import Link
from mininet.node import Node

from corridor.cluster.logins import ShellLogins
from corridor.cluster.spec import ServerSpec
from corridor.cluster.ssh import SSH_FAILED, mux_refused, ssh_options
from corridor.emulation.nodes import CorridorHost, SiteBridge, SiteRouter, WireNode
from corridor.errors import EmulationError
from corridor.links.engine import NATIVE_BINARY

log = logging.getLogger(__name__)

#: The module that keeps a remote process no longer than its ssh session.
LEASH_MODULE = "corridor.cluster.leash"
#: Environment a remote process gets from the coordinator's (the rest is the server's own).
PASSED_ENV = ("PYTHONUNBUFFERED",)
ENGINE_MODULE = "corridor.links.engine"
#: VXLAN's IANA port, and its overhead on an IPv4 underlay (outer IP 20, UDP 8, VXLAN 8, inner Ethernet 14).
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50
#: The MTU every emulated interface has on one machine; a tunnel that cannot carry it lowers the network's.
EMULATED_MTU = 1500
#: Underlay MTUs read so far, by (server login, peer address): one pair of servers needs one look.
_UNDERLAY_MTU: dict[tuple[str, str], int] = {}
#: What ends a command's output in a node's shell, before its exit status.
_STATUS_MARK = "__corridor_status="
#: Milliseconds between looks at a node's ssh client while waiting for its shell's output.
SESSION_POLL_MS = 200
#: Seconds a command run on a server's own namespace may take.
SERVER_COMMAND_TIMEOUT_S = 30.0


def node_ssh_argv(server: ServerSpec, words: Sequence[str], *, known_hosts: str | None, tty: bool,
                  sudo: bool, shared: bool = False) -> list[str]:
    """The local argv that runs ``words`` on ``server``: one quoted command line, a terminal only for a shell.

    ``shared``: a session on the server's master connection when one is up (for short commands).
    """
    remote = ["sudo", "-n", "--", *words] if sudo else list(words)
    return ["ssh", *ssh_options(server, known_hosts=known_hosts, shared=shared), "-tt" if tty else "-T", "--",
            server.destination, shlex.join(remote)]


def shell_logins(known_hosts: str | None) -> ShellLogins:
    """Logins ahead for a network's node shells, on the ssh line :meth:`ServerMixin._popen` gives a shell."""
    return ShellLogins(lambda server, words: node_ssh_argv(server, words, known_hosts=known_hosts, tty=True,
                                                           sudo=server.user != "root"))


def remote_process_words(argv: Sequence[str], *, node_pid: int, python: str,
                         env: dict[str, str] | None = None, stop_at_stdin_end: bool = False) -> list[str]:
    """What a server runs for a process in the node whose shell is ``node_pid`` there.

    ``mnexec -a`` enters the node's namespace, the leash ties the process to its
    ssh session, and the coordinator's interpreter, as the first word, becomes the
    server's. The compiled delay line is named by its path here, which need not be
    its path (or its build) there, so the server resolves its own engine
    (``python -m corridor.links.engine exec``). Not ``-d`` as on one machine: mnexec then forks when it leads its
    process group, as it does at the top of an ssh session, and its parent's exit
    would end the session (and the process's stdin) at once. With
    ``stop_at_stdin_end`` the process is ended (SIGTERM) when the coordinator
    closes its stdin, and what it writes meanwhile still comes back.
    """
    words = [str(w) for w in argv]
    if not words:
        raise EmulationError("a remote process needs a command")
    if words[0] == sys.executable:
        words[0] = python
    elif os.path.basename(words[0]) == NATIVE_BINARY.name:
        words[:1] = [python, "-m", ENGINE_MODULE, "exec"]
    passed = {k: v for k, v in (env or {}).items() if k in PASSED_ENV}
    passed.setdefault("PYTHONUNBUFFERED", "1")
    return ["mnexec", "-a", str(node_pid), "env", *(f"{k}={v}" for k, v in sorted(passed.items())), python,
            "-m", LEASH_MODULE, *(["--stop-at-stdin-end"] if stop_at_stdin_end else []), "--", *words]


def _names_a_file(word: str) -> bool:
    """``@PATH`` naming a file here: the agents' way to take a configuration (``--config @FILE``)."""
    return word.startswith("@") and os.path.isabs(word[1:]) and os.path.isfile(word[1:])


def _argv_of(args: tuple[Any, ...]) -> list[str]:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return [str(a) for a in args[0]]
    if len(args) == 1 and isinstance(args[0], str):
        return args[0].split()
    return [str(a) for a in args]


class ServerMixin(RemoteMixin):  # type: ignore[misc]
    """A corridor node on one of the cluster's servers (a :class:`RemoteMixin` with corridor's ssh)."""

    def __init__(self, name: str, *, cluster_server: ServerSpec, server_ip: str, known_hosts: str | None = None,
                 files_dir: str | None = None, logins: ShellLogins | None = None, **params: Any) -> None:
        self.server_spec = cluster_server
        self.known_hosts = known_hosts
        self.files_dir = files_dir
        self.logins = logins
        super().__init__(name, server=cluster_server.name, user=cluster_server.user, serverIP=server_ip, **params)

    # -- how Mininet reaches the server ------------------------------------------
    def _popen(self, cmd: Any, sudo: bool = True, tt: bool = True, shared: bool = False,
               **params: Any) -> subprocess.Popen[Any]:
        if not self.isRemote:
            popen: subprocess.Popen[Any] = super()._popen(cmd, sudo=sudo, tt=tt, **params)
            return popen
        words = cmd.split() if isinstance(cmd, str) else [str(w) for w in cmd]
        ahead = self._login_ahead(words, params)
        if ahead is not None:
            return ahead
        argv = node_ssh_argv(self.server_spec, words, known_hosts=self.known_hosts, tty=tt,
                             sudo=sudo and self.server_spec.user != "root", shared=shared)
        # a process group of its own, as RemoteMixin gives it: the coordinator's Ctrl-C is not the node's,
        # and Mininet ends a node by signalling its shell's group (without preexec_fn, which threads make unsafe)
        params.pop("preexec_fn", None)
        params["process_group"] = 0
        return Node._popen(self, argv, **params)  # type: ignore[no-any-return]

    def _login_ahead(self, words: list[str], params: dict[str, Any]) -> subprocess.Popen[Any] | None:
        """The node's shell logged in ahead of the build (:mod:`corridor.cluster.logins`), when Mininet's
        ``startShell`` asks for it; None for any other command, or without one.

        ``startShell`` opens a terminal for the shell and starts it on that terminal's
        far end; the login ahead has a terminal of its own, which takes the place of
        Mininet's (the same descriptor numbers), so Mininet reads the shell as its own.
        """
        logins, master, slave = self.logins, getattr(self, "master", None), getattr(self, "slave", None)
        if logins is None or master is None or slave is None or params.get("stdin") != slave:
            return None
        login = logins.take(self.name, words)
        if login is None:
            return None
        os.dup2(login.master, master)
        os.dup2(login.slave, slave)
        os.close(login.master)
        os.close(login.slave)
        return login.process

    # -- noticing the end of the node's ssh session --------------------------------
    # Mininet reads a node's shell through a pty whose other end it keeps open itself, so when
    # the ssh client exits (the server, or the way to it, gone) the read never sees an end and
    # a command's wait lasts for good. Here the waits look at the ssh client between short polls:
    # once it has exited and its last output is read, the node counts as ended, its command as
    # finished, and Mininet ignores later commands to it (as for any node whose shell is gone).

    def _session_over(self) -> bool:
        shell: Any = getattr(self, "shell", None)
        return bool(self.isRemote and shell is not None and shell.poll() is not None)

    def _has_input(self, timeout_ms: int) -> bool:
        """Whether the shell has output to read within ``timeout_ms`` (input only: Mininet's own poll also
        reports the pty as writable, so it is always ready)."""
        fd = self.stdout.fileno()
        if getattr(self, "_input_fd", None) != fd:
            self._input_poll = select.poll()
            self._input_poll.register(fd, select.POLLIN | select.POLLPRI)
            self._input_fd = fd
        return bool(self._input_poll.poll(timeout_ms))

    def waitReadable(self, timeoutms: float | None = None) -> Any:  # noqa: N802 - Mininet's name
        if not self.isRemote or self.shell is None or self.readbuf:
            return super().waitReadable(timeoutms)
        deadline = None if timeoutms is None else time.monotonic() + timeoutms / 1000.0
        while True:
            slice_ms = SESSION_POLL_MS if deadline is None else max(0, min(
                SESSION_POLL_MS, int((deadline - time.monotonic()) * 1000)))
            if self._has_input(slice_ms) or self._session_over():
                return [(self.stdout.fileno(), select.POLLIN)]
            if deadline is not None and time.monotonic() >= deadline:
                return []

    def read(self, size: int = 1024) -> str:
        shell: Any = getattr(self, "shell", None)
        if self.isRemote and shell is None and not self.readbuf:
            return ""  # the session ended before: nothing more will come
        if self.readbuf or not self._session_over() or self._has_input(0):
            text: str = super().read(size)
            return text
        log.warning("%s: the ssh session to server %s ended (exit %s): the node is gone", self.name, self.server,
                    shell.returncode)
        self.waiting = False
        self.shell = None
        return ""

    def popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        """A process in this node's namespace on its server, leashed to its ssh session."""
        if not self.isRemote:
            popen: subprocess.Popen[Any] = super().popen(*args, **kwargs)
            return popen
        env = kwargs.pop("env", None)
        stop_at_stdin_end = bool(kwargs.pop("stop_at_stdin_end", False))
        for ignored in ("mncmd", "shell", "cwd"):
            kwargs.pop(ignored, None)
        kwargs.setdefault("stdin", subprocess.DEVNULL)  # never the coordinator's own stdin
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        argv = [self._upload(word[1:]) if _names_a_file(word) else word for word in _argv_of(args)]
        words = remote_process_words(argv, node_pid=int(self.pid), python=self.server_spec.python, env=env,
                                     stop_at_stdin_end=stop_at_stdin_end)
        return self._popen(words, tt=False, **kwargs)

    def _upload(self, path: str) -> str:
        """Copy a file an argument names as ``@PATH`` (an agent's config) to the server; ``@`` + its path there."""
        if self.files_dir is None:
            raise EmulationError(f"{self.name}: no folder on {self.server} to copy {path} to")
        with open(path, "rb") as handle:
            content = handle.read()
        there = f"{self.files_dir}/{self.name}-{os.path.basename(path)}"
        done = self.server_run(["sh", "-c", 'umask 077 && mkdir -p -- "$1" && cat > "$2"', "sh", self.files_dir,
                                there], input_bytes=content)
        if done.returncode != 0:
            raise EmulationError(f"{self.name}: cannot copy {path} to {self.server}: {done.stderr.strip()}")
        return "@" + there

    def shell_run(self, argv: Sequence[str]) -> tuple[int, str]:
        """Run a short command in the node's own shell on its server: (exit status, output with stderr).

        The shell is Mininet's, reached over the ssh session the node already has, so
        this costs no login; it is for configuration from one thread, as Mininet's
        ``cmd`` is.
        """
        said = self.cmd(f"{shlex.join(argv)} 2>&1; echo \"{_STATUS_MARK}$?\"")
        if said is None:
            raise EmulationError(f"{self.name}: lost server {self.server} ({self.server_spec.destination}): the "
                                 "node's ssh session has ended")
        text = said.replace("\r", "")
        head, mark, tail = text.rpartition(_STATUS_MARK)
        if not mark:
            raise EmulationError(f"{self.name} on {self.server}: no exit status from `{shlex.join(argv)}`: "
                                 f"{text.strip()[-300:]}")
        try:
            status = int(tail.split()[0])
        except (ValueError, IndexError):
            raise EmulationError(f"{self.name} on {self.server}: unreadable exit status {tail[:40]!r}") from None
        return status, head.strip()

    def server_run(self, argv: Sequence[str], *, timeout_s: float = SERVER_COMMAND_TIMEOUT_S,
                   input_bytes: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the server's own namespace and wait; an ssh failure is an EmulationError.

        On the server's shared connection when one is up; a session it refused is sent again alone.
        """
        done = self._server_run_once(argv, timeout_s=timeout_s, input_bytes=input_bytes, shared=True)
        if mux_refused(done.returncode, done.stderr):
            log.debug("%s: the shared connection to %s refused a session; logging in alone", self.name, self.server)
            done = self._server_run_once(argv, timeout_s=timeout_s, input_bytes=input_bytes, shared=False)
        if done.returncode == SSH_FAILED:
            words = done.stderr.strip().splitlines()
            raise EmulationError(f"{self.name}: lost server {self.server} ({self.server_spec.destination}): "
                                 f"ssh: {words[-1] if words else 'exit 255'}")
        return done

    def _server_run_once(self, argv: Sequence[str], *, timeout_s: float, input_bytes: bytes | None,
                         shared: bool) -> subprocess.CompletedProcess[str]:
        proc = self._popen(list(argv), tt=False, shared=shared,
                           stdin=subprocess.DEVNULL if input_bytes is None else subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(input=input_bytes, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise EmulationError(f"{self.name} on {self.server}: `{shlex.join(argv)}` did not finish within "
                                 f"{timeout_s:g} s") from None
        return subprocess.CompletedProcess(list(argv), proc.returncode, out.decode(errors="replace"),
                                           err.decode(errors="replace"))

    def underlay_mtu(self, peer_ip: str) -> int:
        """The MTU of this server's interface toward ``peer_ip`` (where a tunnel's packets leave)."""
        key = (self.server_spec.destination, peer_ip)
        if key not in _UNDERLAY_MTU:
            _UNDERLAY_MTU[key] = self._read_underlay_mtu(peer_ip)
        return _UNDERLAY_MTU[key]

    def _read_underlay_mtu(self, peer_ip: str) -> int:
        route = self.server_run(["ip", "-o", "route", "get", peer_ip])
        match = re.search(r"\bdev (\S+)", route.stdout)
        if route.returncode != 0 or match is None:
            raise EmulationError(f"server {self.server} has no route to {peer_ip}: {route.stderr.strip()}")
        mtu = self.server_run(["cat", f"/sys/class/net/{match.group(1)}/mtu"])
        try:
            return int(mtu.stdout.strip())
        except ValueError:
            raise EmulationError(f"server {self.server}: cannot read the MTU of {match.group(1)}") from None


class RemoteCorridorHost(ServerMixin, CorridorHost):
    """A traffic host on a server."""


class RemoteSiteRouter(ServerMixin, SiteRouter):
    """A site's router on a server."""


class RemoteSiteBridge(ServerMixin, SiteBridge):
    """A site's LAN bridge on a server."""


class RemoteWireNode(ServerMixin, WireNode):
    """A WAN link's wire on a server: its delay line's files are read there, over ssh."""

    ready_poll_s = 0.05

    def __init__(self, name: str, **params: Any) -> None:
        self._files_lock = threading.Lock()
        super().__init__(name, **params)

    def config(self, stats_path: str | None = None, **params: Any) -> dict[str, Any]:  # type: ignore[override]
        if stats_path is not None and self.isRemote:
            status, said = self.shell_run(["mkdir", "-p", "-m", "0700", "--", os.path.dirname(stats_path)])
            if status != 0:
                raise EmulationError(f"wire {self.name}: cannot make {os.path.dirname(stats_path)} on "
                                     f"{self.server}: {said}")
        result: dict[str, Any] = super().config(stats_path=stats_path, **params)
        return result

    def file_exists(self, path: str) -> bool:
        if not self.isRemote:
            return super().file_exists(path)
        # asked while the wire starts, from the thread that builds the network: the shell answers at once
        return self.shell_run(["test", "-e", path])[0] == 0

    def read_text(self, path: str) -> str:
        if not self.isRemote:
            return super().read_text(path)
        with self._files_lock:
            done = self.server_run(["cat", "--", path])
        if done.returncode != 0:
            if "No such file" in done.stderr:
                return ""
            raise EmulationError(f"wire {self.name}: cannot read {path} on {self.server}: {done.stderr.strip()}")
        return done.stdout

    def remove_file(self, path: str) -> None:
        if not self.isRemote:
            super().remove_file(path)
            return
        self.shell_run(["rm", "-f", "--", path])


#: The remote class for each of corridor's node classes.
REMOTE_CLASSES: dict[type, type] = {
    CorridorHost: RemoteCorridorHost,
    SiteRouter: RemoteSiteRouter,
    SiteBridge: RemoteSiteBridge,
    WireNode: RemoteWireNode,
}


def vxlan_vni(pid: int, index: int) -> int:
    """A VNI for the ``index``-th tunnel of the run in process ``pid``: distinct from measure_tunnel's (4000-13999)."""
    if not 0 <= index < 256:
        raise EmulationError(f"a run can hold at most 256 cross-server links, this one needs {index + 1}")
    return 0x100000 + ((pid % 4096) << 8) + index


class VxlanLink(RemoteLink):  # type: ignore[misc]
    """A link that rides a VXLAN tunnel when its nodes are on different servers, a veth pair otherwise.

    Each end's VXLAN device is made in its server's own namespace (where its UDP
    socket stays) under a temporary name unique to the tunnel, moved into the
    node, then renamed to the interface name the plan gives.
    """

    _made = 0
    _lock = threading.Lock()

    def __init__(self, node1: Any, node2: Any, **kwargs: Any) -> None:
        self.vni: int | None = None
        self.mtu: int | None = None
        super().__init__(node1, node2, **kwargs)

    def makeTunnel(self, node1: Any, node2: Any, intfname1: str, intfname2: str,  # noqa: N802 - Mininet's name
                   addr1: str | None = None, addr2: str | None = None) -> str:
        with VxlanLink._lock:
            index = VxlanLink._made
            VxlanLink._made += 1
        vni = vxlan_vni(os.getpid(), index)
        temp = f"cvx{vni:x}"
        ends = ((node1, node2, intfname1, addr1), (node2, node1, intfname2, addr2))
        mtu = min(EMULATED_MTU, *(node.underlay_mtu(other.serverIP) - VXLAN_OVERHEAD for node, other, _, _ in ends))
        for node, other, name, addr in ends:
            made = node.server_run(["ip", "link", "add", temp, "type", "vxlan", "id", str(vni), "remote",
                                    other.serverIP, "dstport", str(VXLAN_PORT)])
            if made.returncode != 0:
                raise EmulationError(f"cannot make the VXLAN tunnel for {node.name}:{name} on {node.server}: "
                                     f"{made.stderr.strip()}")
            moved = node.server_run(["ip", "link", "set", temp, "netns", str(node.pid)])
            if moved.returncode != 0:
                node.server_run(["ip", "link", "del", temp])
                raise EmulationError(f"cannot move {temp} into {node.name} on {node.server}: {moved.stderr.strip()}")
            words = ["ip", "link", "set", temp, "name", name, "mtu", str(mtu)]
            if addr:
                words += ["address", addr]
            said = node.cmd(shlex.join(words))
            if said is None:
                raise EmulationError(f"{node.name}: lost server {node.server}: the node's ssh session has ended")
            if said.strip():
                raise EmulationError(f"cannot name the tunnel {name} in {node.name}: {said.strip()}")
        self.vni, self.mtu = vni, mtu
        return temp

    def stop(self) -> None:
        if getattr(self, "tunnel", None):
            self.intf1.delete()
            self.intf2.delete()
            self.tunnel: str | None = None
        else:
            Link.stop(self)

    def transport(self) -> str:
        return "vxlan" if getattr(self, "tunnel", None) else "veth"
