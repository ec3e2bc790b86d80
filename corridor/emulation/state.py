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
broad ``pkill``, and the root namespace is never touched.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_ROOT = Path(os.environ.get("CORRIDOR_STATE_DIR", "/run/corridor"))
#: Named scratch namespaces made by probes and benchmarks carry this prefix.
NETNS_PREFIX = "corridor-"

_WRITE_LOCK = threading.Lock()


def proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[19])


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def pid_alive(pid: int, start_ticks: int | None) -> bool:
    current = proc_start_ticks(pid)
    return current is not None and (start_ticks is None or current == start_ticks)


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
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        n = 0
        while True:
            directory = STATE_ROOT / f"{os.getpid()}-{n}"
            try:
                directory.mkdir()
                break
            except FileExistsError:
                n += 1
        state = cls(directory)
        state.netns_dir.mkdir()
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
        tmp = self.path.with_suffix(f".{threading.get_ident()}.tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def record_node(self, name: str, pid: int) -> None:
        """A Mininet node: pin its namespace first, then record its shell."""
        pin = self.netns_dir / name
        pin.touch()
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "killed_pids": self.killed,
            "skipped_live_runs": self.skipped_live,
            "netns_removed": self.netns_removed,
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


def clean(*, include_live: bool = False) -> CleanReport:
    """Remove what dead corridor runs left behind (and live ones too with ``include_live``)."""
    report = CleanReport(runs=[], killed=[], skipped_live=[], netns_removed=[])
    if STATE_ROOT.is_dir():
        for directory in sorted(STATE_ROOT.iterdir()):
            state = RunState(directory)
            try:
                data = state.read()
            except (OSError, ValueError):
                data = {}
            if data:
                owner_alive = pid_alive(int(data["owner_pid"]), data.get("owner_start_ticks"))
                if owner_alive and not include_live:
                    report.skipped_live.append(
                        f"{directory.name} (pid {data['owner_pid']}, {data.get('label', '')})"
                    )
                    continue
            elif time.time() - directory.stat().st_mtime < 60:
                continue  # a run being created right now has no state file yet
            # Recorded processes by pid first (one may still be entering its namespace), then the sweep.
            recorded = [int(n["pid"]) for k, n in data.get("nodes", {}).items()
                        if k.startswith("proc:") and pid_alive(int(n["pid"]), n.get("start_ticks"))]
            report.killed += _end(recorded)
            report.killed += state.end_processes()
            state.release()
            report.runs.append(f"{directory.name} ({data.get('label', 'unreadable state')})")
    report.netns_removed = remove_scratch_netns()
    return report


def remove_scratch_netns() -> list[str]:
    """Delete named namespaces with the project prefix (probes, benchmarks) and end their processes."""
    removed: list[str] = []
    netns_dir = Path("/run/netns")
    if not netns_dir.is_dir():
        return removed
    for entry in sorted(netns_dir.iterdir()):
        if not entry.name.startswith(NETNS_PREFIX):
            continue
        pids = subprocess.run(["ip", "netns", "pids", entry.name], capture_output=True, text=True, check=False)
        _end([int(p) for p in pids.stdout.split() if p.isdigit()])
        subprocess.run(["ip", "netns", "del", entry.name], capture_output=True, check=False)
        removed.append(entry.name)
    return removed


def _rmtree(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink() and not os.path.ismount(child):
            _rmtree(child)
        else:
            child.unlink()
    directory.rmdir()
