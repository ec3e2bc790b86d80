"""Run state on disk, so ``corridor clean`` can remove exactly what a dead run left.

Stage: emulation (root). Each network a corridor process builds gets a
directory ``/run/corridor/<pid>-<n>/`` with ``state.json`` (the owner pid and
its start time, every node's shell pid, every process started in a host) and
``netns/``: one file per node onto which that node's network namespace is
bind-mounted, the way ``ip netns`` pins namespaces. The pin makes each
namespace identifiable for as long as the files exist, even after every
recorded process is gone and only an unrecorded descendant still lives there,
and no inode can be reused by somebody else's namespace meanwhile.

Cleaning a run therefore means: end every process whose ``/proc/PID/ns/net``
is one of the pinned namespaces, then unmount the pins; the namespaces and all
their interfaces vanish with them. Nothing is matched by name pattern or by a
broad ``pkill``, and the root namespace is never touched. A recorded pid is
signalled only when both its start time and its namespace match the record
(an unknown start time means "not ours"), and each state entry is judged on
its own: a malformed one is reported and skipped.

Named scratch namespaces (``corridor-*``: the netem probe, the self-test, the
link benchmark) record their owner in ``STATE_ROOT/scratch-netns/NAME.json``
before they are made, and scratch directories under /tmp carry their owner in
their name (:func:`scratch_dir_prefix`); clean leaves those of a live owner
alone unless asked to take everything.

The state root lives under /run (tmpfs, root only); directories are made 0700
and files 0600 whatever the umask, since these files decide what clean kills.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corridor.errors import EmulationError

log = logging.getLogger(__name__)

STATE_ROOT = Path(os.environ.get("CORRIDOR_STATE_DIR", "/run/corridor"))
#: The state root must be under /run; only tests that point it into their tmp_path set this.
ALLOW_STATE_ROOT_OUTSIDE_RUN = False
#: Named scratch namespaces made by probes and benchmarks carry this prefix.
NETNS_PREFIX = "corridor-"
#: Where ``ip netns`` keeps its named namespaces.
NETNS_DIR = Path("/run/netns")
#: Folder under STATE_ROOT with one ``NAME.json`` (owner pid, start time) per named scratch namespace.
SCRATCH_OWNERS = "scratch-netns"
#: Where workloads make their scratch directories (``corridor-agents-PID-TICKS-*``).
SCRATCH_TMP_DIR = Path(tempfile.gettempdir())
#: Scratch directory kinds clean looks for, as made by :func:`scratch_dir_prefix`.
SCRATCH_DIR_KINDS = ("agents", "inf", "replay", "mpi", "cost")
_SCRATCH_DIR = re.compile(rf"^corridor-(?:{'|'.join(SCRATCH_DIR_KINDS)})-(\d+)-(\d+)-")
DIR_MODE = 0o700
FILE_MODE = 0o600

_WRITE_LOCK = threading.Lock()


def proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone.

    A zombie is gone: it has exited and holds nothing, it only waits for its parent
    (a run killed with SIGKILL whose parent has not reaped it yet must not pass for
    a live owner).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def pid_alive(pid: int, start_ticks: int | None) -> bool:
    """``pid`` runs and started at ``start_ticks``; an unknown start time is never taken for a match."""
    if start_ticks is None:
        return False
    current = proc_start_ticks(pid)
    return current is not None and current == start_ticks


def state_root() -> Path:
    """The state root, checked to be under /run (where only root writes and nothing survives a reboot)."""
    root = STATE_ROOT
    if not ALLOW_STATE_ROOT_OUTSIDE_RUN:
        real = os.path.realpath(root)
        if os.path.commonpath([real, "/run"]) != "/run" or real == "/run":
            raise EmulationError(
                f"the corridor state directory {root} is not under /run; its files decide what "
                "`corridor clean` ends, so they live on root's tmpfs. Unset CORRIDOR_STATE_DIR or point it "
                "at a folder under /run"
            )
    return root


def _private_dir(path: Path) -> None:
    """Make ``path`` (or take an existing one of ours) with mode 0700, never through a symlink."""
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path):
        raise EmulationError(f"{path} is not a plain directory; remove it so corridor can keep its state there")
    if info.st_uid != os.geteuid():
        raise EmulationError(f"{path} belongs to uid {info.st_uid}, not to this user; remove it so corridor "
                             "can keep its state there")
    os.chmod(path, DIR_MODE)


def _write_private_json(path: Path, data: Any) -> None:
    """Write JSON atomically with mode 0600, never following a planted link."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, FILE_MODE)
    except FileExistsError:
        os.unlink(tmp)
        fd = os.open(tmp, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    with open(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def scratch_dir_prefix(kind: str, *, pid: int | None = None) -> str:
    """Prefix for a scratch directory under /tmp naming its owner: ``corridor-KIND-PID-TICKS-``.

    ``pid`` defaults to this process. ``corridor clean`` removes such a
    directory once its owner is gone.
    """
    if kind not in SCRATCH_DIR_KINDS:
        raise ValueError(f"unknown scratch directory kind {kind!r}; add it to SCRATCH_DIR_KINDS")
    owner = os.getpid() if pid is None else pid
    return f"corridor-{kind}-{owner}-{proc_start_ticks(owner) or 0}-"


def record_scratch_netns(name: str) -> None:
    """Record this process as the owner of named scratch namespace ``name``; call before creating it.

    Best effort: when the record cannot be written (no root, no /run) the
    namespace counts as a leftover for ``corridor clean``, as before owners
    were recorded.
    """
    try:
        owners = state_root() / SCRATCH_OWNERS
        _private_dir(state_root())
        _private_dir(owners)
        _write_private_json(owners / f"{name}.json",
                            {"owner_pid": os.getpid(), "owner_start_ticks": proc_start_ticks(os.getpid())})
    except (OSError, EmulationError) as exc:
        log.warning("could not record the owner of scratch namespace %s (%s); `corridor clean` may remove it "
                    "while it is in use", name, exc)


def forget_scratch_netns(name: str) -> None:
    """Drop the owner record of a scratch namespace this process has deleted."""
    try:
        (state_root() / SCRATCH_OWNERS / f"{name}.json").unlink()
    except (OSError, EmulationError):
        pass


def _mount(*args: str) -> bool:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log.warning("mount %s failed: %s", " ".join(args), result.stderr.strip())
    return result.returncode == 0


@dataclass
class RunState:
    """The on-disk record of one live network (safe to update from several threads)."""

    directory: Path

    @property
    def path(self) -> Path:
        return self.directory / "state.json"

    @property
    def netns_dir(self) -> Path:
        return self.directory / "netns"

    @classmethod
    def create(cls, label: str) -> RunState:
        root = state_root()
        _private_dir(root)
        n = 0
        while True:
            directory = root / f"{os.getpid()}-{n}"
            try:
                directory.mkdir(mode=DIR_MODE)
                break
            except FileExistsError:
                n += 1
        os.chmod(directory, DIR_MODE)
        state = cls(directory)
        state.netns_dir.mkdir(mode=DIR_MODE)
        os.chmod(state.netns_dir, DIR_MODE)
        state.write(
            {
                "owner_pid": os.getpid(),
                "owner_start_ticks": proc_start_ticks(os.getpid()),
                "label": label,
                "created": time.time(),
                "nodes": {},
            }
        )
        return state

    def read(self) -> dict[str, Any]:
        with open(self.path) as f:
            data: dict[str, Any] = json.load(f)
        return data

    def write(self, data: dict[str, Any]) -> None:
        with _WRITE_LOCK:
            self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        _write_private_json(self.path, data)

    def record_node(self, name: str, pid: int) -> None:
        """A Mininet node: pin its namespace first, then record its shell."""
        pin = self.netns_dir / name
        pin.touch(mode=FILE_MODE)
        if not _mount("--bind", f"/proc/{pid}/ns/net", str(pin)):
            pin.unlink()
        self._record(name, pid)

    def record_process(self, label: str, pid: int) -> None:
        """A process started inside a node (agent, delay line, iperf3): its namespace is already pinned."""
        self._record(label, pid)

    def _record(self, name: str, pid: int) -> None:
        entry = {"pid": pid, "start_ticks": proc_start_ticks(pid), "netns": netns_inode(pid)}
        with _WRITE_LOCK:  # read-modify-write: tenants start processes from several threads
            data = self.read()
            data["nodes"][name] = entry
            self._write(data)

    def pinned_inodes(self) -> set[int]:
        inodes = set()
        if self.netns_dir.is_dir():
            for pin in self.netns_dir.iterdir():
                try:
                    inode = pin.stat().st_ino
                except OSError:
                    continue
                # An unmounted pin is a plain tmpfs file; only nsfs inodes are namespaces.
                if os.path.ismount(pin):
                    inodes.add(inode)
        root_ns = netns_inode(1)
        inodes.discard(root_ns if root_ns is not None else -1)
        return inodes

    def end_processes(self, *, spare: set[int] | None = None) -> list[int]:
        """End every process in this run's namespaces, except the pids in ``spare``."""
        inodes = self.pinned_inodes()
        if not inodes:
            return []
        spare = spare or set()
        killed = _end([p for p in _pids_in_netns(inodes) if p not in spare])
        # A process may have forked while we were signalling: one more pass.
        killed += _end([p for p in _pids_in_netns(inodes) if p not in spare], grace_s=0.5)
        return killed

    def release(self) -> None:
        """Unpin every namespace (they vanish once no process is left in them) and delete the directory."""
        if self.netns_dir.is_dir():
            for pin in self.netns_dir.iterdir():
                if os.path.ismount(pin):
                    subprocess.run(["umount", "-l", str(pin)], capture_output=True, check=False)
        _rmtree(self.directory)


@dataclass
class CleanReport:
    runs: list[str]
    killed: list[int]
    skipped_live: list[str]
    netns_removed: list[str]
    problems: list[str] = field(default_factory=list)
    dirs_removed: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)  # the state directories' names of the runs removed
    files_removed: list[str] = field(default_factory=list)  # state files a killed writer left half-written

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "run_ids": self.run_ids,
            "killed_pids": self.killed,
            "skipped_live_runs": self.skipped_live,
            "netns_removed": self.netns_removed,
            "problems": self.problems,
            "dirs_removed": self.dirs_removed,
            "files_removed": self.files_removed,
        }


def _pids_in_netns(inodes: set[int]) -> list[int]:
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        inode = netns_inode(int(entry))
        if inode is not None and inode in inodes:
            found.append(int(entry))
    return found


def _end(pids: list[int], *, grace_s: float = 2.0) -> list[int]:
    """SIGTERM, then SIGKILL whatever is left after ``grace_s``. Returns the pids signalled."""
    starts = {pid: proc_start_ticks(pid) for pid in pids}
    signalled = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_running(p, starts[p]) for p in signalled):
        time.sleep(0.05)
    for pid in signalled:
        if _running(pid, starts[pid]):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return signalled


def _running(pid: int, start_ticks: int | None) -> bool:
    """Alive and not a zombie (a zombie holds no namespace; its new parent reaps it)."""
    if not pid_alive(pid, start_ticks):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class _BadState(ValueError):
    """A state entry clean cannot trust; the message says why."""


def clean(*, include_live: bool = False) -> CleanReport:
    """Remove what dead corridor runs left behind (and live ones too with ``include_live``).

    Each state entry is handled on its own: one that cannot be read or trusted
    is reported in ``problems`` and left in place, and the rest go on.
    """
    report = CleanReport(runs=[], killed=[], skipped_live=[], netns_removed=[])
    root = state_root()
    if root.is_dir():
        for directory in sorted(root.iterdir()):
            if directory.name == SCRATCH_OWNERS:
                continue
            try:
                _clean_entry(directory, include_live, report)
            except (_BadState, OSError) as exc:
                problem = f"{directory.name}: {exc}; left in place (remove it by hand once you have checked it)"
                log.warning("clean: %s", problem)
                report.problems.append(problem)
    report.netns_removed = remove_scratch_netns(include_live=include_live, report=report)
    report.dirs_removed = remove_scratch_dirs(include_live=include_live)
    return report


def _clean_entry(directory: Path, include_live: bool, report: CleanReport) -> None:
    if directory.is_symlink() or not directory.is_dir():
        raise _BadState("not a run state directory (a stray file in the state root)")
    state = RunState(directory)
    data = _read_state(state)
    if data is None:
        if time.time() - directory.stat().st_mtime < 60:
            return  # a run being created right now has no state file yet
        data = {"nodes": {}}
    else:
        owner_alive = pid_alive(data["owner_pid"], data["owner_start_ticks"])
        if owner_alive and not include_live:
            report.skipped_live.append(f"{directory.name} (pid {data['owner_pid']}, {data.get('label', '')})")
            return
    # Recorded processes by pid first (one may still be entering its namespace), then the sweep.
    recorded = [n["pid"] for k, n in data["nodes"].items() if k.startswith("proc:") and _verified(n)]
    report.killed += _end(recorded)
    report.killed += state.end_processes()
    state.release()
    report.runs.append(f"{directory.name} ({data.get('label', 'no state file')})")
    report.run_ids.append(directory.name)


def _read_state(state: RunState) -> dict[str, Any] | None:
    """The state file checked field by field; None when there is none yet; _BadState when untrustworthy."""
    try:
        data = state.read()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise _BadState(f"state.json is unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise _BadState("state.json is not a JSON object")
    for key in ("owner_pid", "owner_start_ticks"):
        if not _is_int(data.get(key)):
            raise _BadState(f"state.json has no valid {key}")
    nodes = data.get("nodes")
    if not isinstance(nodes, dict):
        raise _BadState("state.json has no 'nodes' mapping")
    for name, node in nodes.items():
        if not isinstance(node, dict) or not _is_int(node.get("pid")):
            raise _BadState(f"state.json node {name!r} has no valid pid")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _verified(node: dict[str, Any]) -> bool:
    """A recorded process is ours only if its start time and its namespace both still match."""
    pid = node["pid"]
    start, netns = node.get("start_ticks"), node.get("netns")
    if not _is_int(start) or not _is_int(netns):
        return False
    return pid_alive(pid, start) and netns_inode(pid) == netns


def _scratch_owner_alive(name: str) -> bool | None:
    """Whether the recorded owner of scratch namespace ``name`` runs; None when none is recorded."""
    path = STATE_ROOT / SCRATCH_OWNERS / f"{name}.json"
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or not _is_int(data.get("owner_pid")):
        return False
    start = data.get("owner_start_ticks")
    return pid_alive(data["owner_pid"], start if _is_int(start) else None)


def _netns_pids(name: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def _netns_del(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def remove_scratch_netns(*, include_live: bool = False, report: CleanReport | None = None) -> list[str]:
    """Delete named namespaces with the project prefix (probes, benchmarks) and end their processes.

    A namespace whose recorded owner still runs is left alone unless ``include_live``;
    one with no owner record is a leftover and goes.
    """
    removed: list[str] = []
    owners = STATE_ROOT / SCRATCH_OWNERS
    if NETNS_DIR.is_dir():
        for entry in sorted(NETNS_DIR.iterdir()):
            if not entry.name.startswith(NETNS_PREFIX):
                continue
            if _scratch_owner_alive(entry.name) and not include_live:
                if report is not None:
                    report.skipped_live.append(f"namespace {entry.name} (its owner process is alive)")
                continue
            _end(_netns_pids(entry.name))
            _netns_del(entry.name)
            removed.append(entry.name)
            _unlink_quietly(owners / f"{entry.name}.json")
    if owners.is_dir():
        for record in sorted(owners.glob("*.json")):
            # An owner record without its namespace: the owner died between recording and creating it.
            if not (NETNS_DIR / record.stem).exists() and not _scratch_owner_alive(record.stem):
                _unlink_quietly(record)
        for partial in sorted(owners.glob("*.tmp")):
            if _abandoned_temporary(partial):
                _unlink_quietly(partial)
                if report is not None:
                    report.files_removed.append(str(partial))
    return removed


#: A temporary of :func:`_write_private_json`: ``NAME.PID.THREAD.tmp``, renamed into place once written.
_TEMPORARY = re.compile(r"^.+\.(\d+)\.\d+\.tmp$")
#: A write takes milliseconds; a temporary this old whose writer is gone was cut short by a kill.
ABANDONED_TEMPORARY_S = 60.0


def _abandoned_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary whose writer died before renaming it (it is old and its pid is gone)."""
    match = _TEMPORARY.match(path.name)
    if match is None or path.is_symlink() or not path.is_file():
        return False
    try:
        age_s = time.time() - path.stat().st_mtime
    except OSError:
        return False
    return age_s > ABANDONED_TEMPORARY_S and proc_start_ticks(int(match.group(1))) is None


def remove_scratch_dirs(*, include_live: bool = False) -> list[str]:
    """Delete ``/tmp/corridor-KIND-PID-TICKS-*`` scratch directories whose owner is gone.

    Only plain directories of this user whose name carries an owner are
    considered; one without an owner in its name is not ours to judge.
    """
    removed: list[str] = []
    if not SCRATCH_TMP_DIR.is_dir():
        return removed
    for entry in sorted(SCRATCH_TMP_DIR.iterdir()):
        match = _SCRATCH_DIR.match(entry.name)
        if match is None:
            continue
        try:
            info = os.lstat(entry)
        except OSError:
            continue
        if entry.is_symlink() or not os.path.isdir(entry) or info.st_uid != os.geteuid():
            continue
        if pid_alive(int(match.group(1)), int(match.group(2))) and not include_live:
            continue
        try:
            _rmtree(entry)
        except OSError as exc:
            log.warning("clean: could not remove %s: %s", entry, exc)
            continue
        removed.append(str(entry))
    return removed


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _rmtree(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink() and not os.path.ismount(child):
            _rmtree(child)
        else:
            child.unlink()
    directory.rmdir()
