"""Named networks that outlive one command: ``corridor up``, ``corridor exec`` and ``corridor down``.

Stage: emulation (root). A session is a :class:`CorridorNetwork` held open by
the ``corridor up`` process until that process gets Ctrl-C, SIGTERM or SIGHUP
(``corridor down`` sends SIGTERM). Its record is ``session.json`` inside the
network's own run state directory (``/run/corridor/<pid>-<n>/``, see
:mod:`corridor.emulation.state`), beside the pinned namespaces, so:

- ``corridor exec HOST -- CMD`` needs no Mininet object and no help from the
  ``up`` process: it opens the host's pin ``netns/HOST``, joins that network
  namespace (setns), gives itself a UTS namespace whose host name is the
  emulated host's name (so tools that identify nodes by host name, such as
  mpirun, tell the hosts apart), and execs the command in place: stdin,
  stdout, stderr and the exit status are the command's own.
- a killed ``up`` leaves an ordinary dead run behind, which ``corridor clean``
  removes like any other (processes started by ``exec`` live in the pinned
  namespaces and are ended with them); ``corridor down`` of a dead session
  does the same for that run alone.

Nothing here matches processes by name: ``down`` signals the recorded owner
only when its start time still matches, and sweeps by namespace inode.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from corridor.emulation.state import (
    FILE_MODE,
    RunState,
    netns_inode,
    pid_alive,
    proc_start_ticks,
    state_root,
)
from corridor.errors import EmulationError, NeedsRootError
from corridor.planning.plan import Plan

log = logging.getLogger(__name__)

#: The session record inside a run's state directory.
SESSION_FILE = "session.json"
#: Format of SESSION_FILE; readers refuse newer ones.
SESSION_FORMAT = 1
#: Label prefix of a session's run state, shown by ``corridor clean``.
LABEL_PREFIX = "up "
#: Session names: what fits a file name and a shell word.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUTS = 0x04000000


@dataclass(frozen=True)
class SessionHost:
    """One traffic host of a running session."""

    name: str
    site: str
    role: str
    ip: str


@dataclass(frozen=True)
class SessionInfo:
    """What ``session.json`` records about a running network."""

    name: str
    topology: str
    backend: str
    backend_reason: str
    run_dir: Path
    owner_pid: int
    owner_start_ticks: int | None
    hosts: tuple[SessionHost, ...]
    #: The site LAN subnets the traffic hosts live in (for tools that pick interfaces by subnet).
    subnets: tuple[str, ...]
    created: float

    def host(self, name: str) -> SessionHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise EmulationError(
            f"no host {name!r} in network {self.name}; its hosts are {', '.join(h.name for h in self.hosts)}"
        )

    def resolve(self, node: str) -> str:
        """A node name for ``node``: a node name as given, or the host whose address ``node`` is.

        Lets tools that address hosts by IP (an mpirun hostfile of addresses needs no
        name lookups, which the emulated hosts cannot do) name them to ``exec``.
        """
        for host in self.hosts:
            if host.ip == node:
                return host.name
        return node

    def node_names(self) -> list[str]:
        """Every node with a pinned namespace (hosts, routers, bridges, wires)."""
        pins = self.run_dir / "netns"
        return sorted(p.name for p in pins.iterdir()) if pins.is_dir() else []

    def netns_path(self, node: str) -> Path:
        """The pinned network namespace of ``node`` (a host, or any other node of the network)."""
        pin = self.run_dir / "netns" / node
        if not NAME_PATTERN.match(node) or not os.path.ismount(pin):
            raise EmulationError(
                f"network {self.name} has no node {node!r}; its hosts are {', '.join(h.name for h in self.hosts)}"
            )
        return pin

    def owner_alive(self) -> bool:
        return pid_alive(self.owner_pid, self.owner_start_ticks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": SESSION_FORMAT,
            "name": self.name,
            "topology": self.topology,
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "run_dir": str(self.run_dir),
            "owner_pid": self.owner_pid,
            "owner_start_ticks": self.owner_start_ticks,
            "hosts": [{"name": h.name, "site": h.site, "role": h.role, "ip": h.ip} for h in self.hosts],
            "subnets": list(self.subnets),
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Any, run_dir: Path) -> SessionInfo:
        """Parse a session record; raises ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        fmt = data.get("format")
        if not isinstance(fmt, int) or fmt > SESSION_FORMAT:
            raise ValueError(f"format {fmt!r} is not one this corridor reads (up to {SESSION_FORMAT}); "
                             "use the corridor version that made it")
        try:
            hosts = tuple(SessionHost(str(h["name"]), str(h["site"]), str(h["role"]), str(h["ip"]))
                          for h in data["hosts"])
            start = data["owner_start_ticks"]
            return cls(
                name=str(data["name"]), topology=str(data["topology"]), backend=str(data["backend"]),
                backend_reason=str(data["backend_reason"]), run_dir=run_dir, owner_pid=int(data["owner_pid"]),
                owner_start_ticks=int(start) if start is not None else None, hosts=hosts,
                subnets=tuple(str(s) for s in data["subnets"]), created=float(data["created"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"missing or malformed field ({exc})") from exc


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise EmulationError(
            f"session name {name!r} is not usable; use letters, digits, '.', '_' and '-' (up to 63, "
            "starting with a letter or digit)"
        )
    return name


def read_session(run_dir: Path) -> SessionInfo | None:
    """The session recorded in ``run_dir``, or None when that run is not a session (or not one yet)."""
    path = run_dir / SESSION_FILE
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: unreadable (%s)", path, exc)
        return None
    try:
        return SessionInfo.from_dict(data, run_dir)
    except ValueError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


def list_sessions(*, include_dead: bool = False) -> list[SessionInfo]:
    """Sessions recorded under the state root, oldest first; those whose ``up`` died only with ``include_dead``."""
    root = state_root()
    found: list[SessionInfo] = []
    if not root.is_dir():
        return found
    for directory in root.iterdir():
        if directory.is_symlink() or not directory.is_dir():
            continue
        info = read_session(directory)
        if info is not None and (include_dead or info.owner_alive()):
            found.append(info)
    return sorted(found, key=lambda s: s.created)


def find_session(name: str | None = None) -> SessionInfo:
    """The running session called ``name``, or the only running one when ``name`` is None."""
    live = list_sessions()
    if name is not None:
        for info in live:
            if info.name == name:
                return info
        dead = [s for s in list_sessions(include_dead=True) if s.name == name]
        if dead:
            raise EmulationError(
                f"network {name}'s `corridor up` process (pid {dead[0].owner_pid}) is gone; remove what it left "
                f"with `corridor down {name}` or `corridor clean`, then start it again"
            )
        raise EmulationError(f"no network named {name!r} is up; running: "
                             f"{', '.join(s.name for s in live) or 'none'} (start one with `corridor up`)")
    if not live:
        raise EmulationError("no network is up; start one with `corridor up TOPOLOGY`")
    if len(live) > 1:
        raise EmulationError(f"{len(live)} networks are up ({', '.join(s.name for s in live)}); "
                             "name one with --session")
    return live[0]


def _hosts_of(plan: Plan) -> tuple[SessionHost, ...]:
    return tuple(SessionHost(h.name, h.site, h.role, h.ip) for h in plan.hosts())


def _subnets_of(plan: Plan) -> tuple[str, ...]:
    return tuple(sorted({site.subnet for site in plan.sites if site.hosts}))


def _run_dir_of(label: str) -> Path:
    """The state directory this process's network just created under ``label``."""
    me, ticks = os.getpid(), proc_start_ticks(os.getpid())
    matches = []
    for directory in state_root().iterdir():
        try:
            with open(directory / "state.json") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if (isinstance(data, dict) and data.get("owner_pid") == me and data.get("owner_start_ticks") == ticks
                and data.get("label") == label):
            matches.append(directory)
    if len(matches) != 1:
        raise EmulationError(f"found {len(matches)} run state directories for {label!r} under {state_root()}, "
                             "expected one; run `corridor clean` and try again")
    return matches[0]


@contextmanager
def open_session(plan: Plan, *, name: str, backend: str = "auto", seed: int = 1) -> Iterator[tuple[Any, SessionInfo]]:
    """Build ``plan`` as session ``name`` and record it; torn down when the block exits, whatever happened.

    Yields the :class:`CorridorNetwork` (for in-process use) and the
    :class:`SessionInfo` that ``corridor exec`` reads.
    """
    from corridor.emulation.network import CorridorNetwork, require_root

    check_name(name)
    require_root("`corridor up`")
    for other in list_sessions():
        if other.name == name:
            raise EmulationError(f"a network named {name} is already up (pid {other.owner_pid}); take it down "
                                 f"with `corridor down {name}` or choose another --name")
    label = f"{LABEL_PREFIX}{name}"
    with CorridorNetwork(plan, backend=backend, seed=seed, label=label) as net:
        run_dir = _run_dir_of(label)
        info = SessionInfo(
            name=name, topology=plan.name, backend=net.backend, backend_reason=net.backend_reason, run_dir=run_dir,
            owner_pid=os.getpid(), owner_start_ticks=proc_start_ticks(os.getpid()), hosts=_hosts_of(plan),
            subnets=_subnets_of(plan), created=time.time(),
        )
        _write_session(info)
        yield net, info


def _write_session(info: SessionInfo) -> None:
    path = info.run_dir / SESSION_FILE
    tmp = path.with_name(f"{SESSION_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    with open(fd, "w") as f:
        json.dump(info.as_dict(), f, indent=1)
    os.replace(tmp, path)


def hold() -> None:
    """Block until Ctrl-C, SIGTERM or SIGHUP; each arrives as KeyboardInterrupt so the network unwinds.

    SIGTERM is already turned into an exception by the open network; SIGHUP (the
    terminal went away) is added here so a closed terminal takes the network down.
    """
    def on_hangup(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGHUP, on_hangup)
    try:
        while True:
            signal.pause()
    finally:
        signal.signal(signal.SIGHUP, old)


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def enter_host(info: SessionInfo, node: str, *, set_hostname: bool = True) -> None:
    """Move this process into ``node``'s network namespace (and a UTS namespace named after it).

    ``node`` is a node name or a host's address.

    Call only in a process that is about to exec the user's command.
    """
    if os.geteuid() != 0:
        raise NeedsRootError("`corridor exec` needs root to enter a network namespace; run it again with sudo")
    if not info.owner_alive():
        raise EmulationError(
            f"network {info.name}'s `corridor up` process (pid {info.owner_pid}) is gone; remove what it left with "
            f"`corridor down {info.name}` or `corridor clean`"
        )
    node = info.resolve(node)
    pin = info.netns_path(node)
    libc = _libc()
    fd = os.open(pin, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise EmulationError(f"could not enter {node}'s network namespace ({os.strerror(err)}); is {pin} "
                                 "still a namespace pin? Run `corridor down` and `corridor up` again")
    finally:
        os.close(fd)
    if set_hostname:
        encoded = node.encode()
        if libc.unshare(_CLONE_NEWUTS) != 0 or libc.sethostname(encoded, len(encoded)) != 0:
            err = ctypes.get_errno()
            raise EmulationError(f"could not name the command's host {node} ({os.strerror(err)}); "
                                 "pass --keep-hostname to run it under this machine's host name")


def _finished(info: SessionInfo) -> bool:
    """The ``up`` process has exited: gone, or a zombie its parent has not reaped yet."""
    if not info.owner_alive():
        return True
    try:
        with open(f"/proc/{info.owner_pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _end_owner(info: SessionInfo, *, timeout_s: float) -> bool:
    """SIGTERM the ``up`` process and wait for it to finish its teardown; True if it is gone."""
    if _finished(info):
        return True
    try:
        os.kill(info.owner_pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _finished(info) and not info.run_dir.exists():
            return True
        time.sleep(0.1)
    return _finished(info)


def take_down(info: SessionInfo, *, timeout_s: float = 60.0) -> list[int]:
    """End session ``info``: its ``up`` process tears the network down; whatever a dead one left goes here.

    Returns the pids this call ended itself (empty when the owner cleaned up).
    """
    if not _end_owner(info, timeout_s=timeout_s):
        raise EmulationError(f"network {info.name}'s `corridor up` (pid {info.owner_pid}) did not exit within "
                             f"{timeout_s:g} s of SIGTERM; end it with kill -9 {info.owner_pid}, then run "
                             "`corridor clean`")
    if not info.run_dir.exists():
        return []
    state = RunState(info.run_dir)
    killed = state.end_processes()
    state.release()
    return killed


def processes_in(info: SessionInfo) -> list[int]:
    """Pids living in the session's pinned namespaces (for tests and ``down``'s report)."""
    inodes = RunState(info.run_dir).pinned_inodes()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and netns_inode(int(entry)) in inodes:
            found.append(int(entry))
    return found
