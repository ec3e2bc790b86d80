"""The run directory: the contract between running an experiment and analysing it.

Stage: records. Layout::

    RUN/manifest.json   written once when the run starts: format_version, the full
                        resolved experiment, the planned points, versions, host,
                        kernel, time, the requested link backend
    RUN/records.jsonl   one JSON object per line, appended and fsynced point by point:
                        {"kind": "run_session", ...}  each start or resume
                        workload records ("train_step", "collective", "request",
                        "link_sample", ...) carrying "point_id"
                        {"kind": "point", ...}        written last for each finished point,
                                                      with backend, backend_reason, status
    RUN/summary.json    rewritten by the runner at the end of each session
    RUN/derived/        analysis output (verdicts, figures, report); analysis never
                        writes anywhere else inside RUN
    RUN/.lock           held (flock) by the one process writing the run

A point counts as finished only once its ``point`` record is on disk, and its
workload records are written in the same fsynced append just before it, so a
killed run never leaves half a point that ``resume`` would miss or repeat:
``resume`` cuts the records back to the last ``point`` marker, dropping a
partial last line and the records of a point whose marker never landed.
The manifest carries a hash of the resolved experiment so that ``resume``
refuses an experiment that changed since the run started.

Files are written with explicit modes, temporaries never follow a link, and a
run is only created in a new or empty directory that this user (or root) owns.

Readers refuse a newer ``format_version`` and read or refuse older ones with a
message saying what to do (:data:`_UPGRADERS`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import socket
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from corridor import __version__
from corridor.errors import RunDirError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
SUMMARY = "summary.json"
DERIVED = "derived"
#: Lock file inside RUN, held with flock by the process writing the run.
LOCK = ".lock"
#: Manifest key holding the sha256 of the resolved experiment (see :func:`experiment_sha256`).
EXPERIMENT_HASH = "experiment_sha256"
#: Mode of every file written into a run directory (it is read by analysis as any user).
FILE_MODE = 0o644
#: Record kind marking a finished point.
POINT_KIND = "point"
#: Record kind marking each start or resume of a run ("session" is taken by agentic workload records).
SESSION_KIND = "run_session"

#: format_version -> function turning an older manifest+records into the current shape.
#: Version 1 is the first released format; older (pre-release) run directories are refused.
_UPGRADERS: dict[int, Callable[[dict[str, Any], list[dict[str, Any]]], tuple[dict[str, Any], list[dict[str, Any]]]]]
_UPGRADERS = {}


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def environment() -> dict[str, Any]:
    """Host, kernel and versions, for the manifest and each session record."""
    versions: dict[str, str] = {"corridor": __version__, "python": platform.python_version()}
    for name in ("numpy", "matplotlib", "PyYAML", "click"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        import mininet  # type: ignore[import-not-found]

        versions["mininet"] = str(getattr(mininet, "VERSION", "?"))
    except ImportError:
        versions["mininet"] = "not installed"
    uname = platform.uname()
    return {
        "host": socket.gethostname(),
        "kernel": f"{uname.system} {uname.release}",
        "machine": uname.machine,
        "cpus": os.cpu_count(),
        "versions": versions,
        "time_utc": utc_now(),
    }


class RunWriter:
    """Appends to a run directory. Create with :meth:`create` or :meth:`resume`.

    The writer holds the run directory's lock (:data:`LOCK`) from then until
    :meth:`close` or the end of the process, so a second process cannot write
    the same run at the same time.
    """

    def __init__(self, path: str, manifest: dict[str, Any], done: dict[str, dict[str, Any]]) -> None:
        self.path = path
        self.manifest = manifest
        self._done = done

    @classmethod
    def create(cls, path: str, manifest: Mapping[str, Any]) -> RunWriter:
        """Start a new run directory; refuses one that already holds a run or is not ours to write."""
        if os.path.exists(os.path.join(path, MANIFEST)):
            raise RunDirError(
                f"{path} already holds a run; continue it with --resume or choose another --out directory"
            )
        _check_new_out(path)
        os.makedirs(path, exist_ok=True)
        _lock(path)
        if os.path.exists(os.path.join(path, MANIFEST)):  # another process created it while we checked
            raise RunDirError(
                f"{path} already holds a run; continue it with --resume or choose another --out directory"
            )
        full = {"format_version": FORMAT_VERSION, "created_utc": utc_now(), **environment(), **manifest}
        experiment = manifest.get("experiment")
        if isinstance(experiment, Mapping):
            full[EXPERIMENT_HASH] = experiment_sha256(experiment)
        _write_json_atomic(os.path.join(path, MANIFEST), full)
        os.close(_open_nofollow(os.path.join(path, RECORDS), os.O_WRONLY | os.O_APPEND | os.O_CREAT))
        return cls(path, full, {})

    @classmethod
    def resume(cls, path: str) -> RunWriter:
        """Reopen a run directory to continue it; the points already finished are kept.

        Takes the lock, then cuts the records back to the last finished point
        (see :func:`truncate_to_last_point`) before reading them.
        """
        if not os.path.isdir(path):
            raise RunDirError(f"{path} is not a directory; give the run directory that `corridor run` wrote")
        if not os.path.exists(os.path.join(path, MANIFEST)):
            raise RunDirError(f"{path} has no {MANIFEST}; it is not a corridor run directory")
        _lock(path)
        try:
            truncate_to_last_point(path)
            run = read_run(path)
            if run.format_version != FORMAT_VERSION:
                raise RunDirError(
                    f"{path} is format version {run.format_version}; resume needs version {FORMAT_VERSION}. "
                    "Start a new run instead."
                )
        except BaseException:
            _unlock(path)
            raise
        return cls(path, run.manifest, dict(run.points))

    def close(self) -> None:
        """Release the run directory's lock (the end of the process releases it too)."""
        _unlock(self.path)

    def done_points(self) -> set[str]:
        """Ids of points finished (whatever their status) in any session."""
        return set(self._done)

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append records as JSON lines and fsync before returning."""
        lines = "".join(json.dumps(dict(r), sort_keys=True, default=_json_default) + "\n" for r in records)
        if not lines:
            return
        try:
            fd = _open_nofollow(os.path.join(self.path, RECORDS), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            with open(fd, "a", encoding="utf-8") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            # A full disk or a failing device: what landed may end in a partial line, which resume cuts off.
            raise RunDirError(f"cannot write {os.path.join(self.path, RECORDS)}: {exc.strerror or exc}; the points "
                              "finished before are kept: fix the cause (free space), then continue with --resume"
                              ) from exc

    def finish_point(self, point_id: str, records: Iterable[Mapping[str, Any]], info: Mapping[str, Any]) -> None:
        """Write a point's workload records and its ``point`` marker in one fsynced append."""
        if point_id in self._done:
            raise RunDirError(f"point {point_id} is already finished in {self.path}; it must not run twice")
        marker = {"kind": POINT_KIND, "point_id": point_id, "finished_utc": utc_now(), **info}
        tagged = [{**dict(r), "point_id": point_id} for r in records]
        self.append([*tagged, marker])
        self._done[point_id] = marker

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        path = os.path.join(self.path, SUMMARY)
        try:
            _write_json_atomic(path, {"format_version": FORMAT_VERSION, **summary})
        except OSError as exc:
            raise RunDirError(f"cannot write {path}: {exc.strerror or exc}; fix the cause (free space), then "
                              "continue with --resume, which rewrites it") from exc


def truncate_to_last_point(path: str) -> int:
    """Cut ``RUN/records.jsonl`` back to the end of its last ``point`` marker; returns the lines dropped.

    After the last marker only complete session records (no ``point_id``) are
    kept: the records of a point whose marker never landed, and a partial last
    line, are dropped, so a rerun of that point does not merge with them. The
    file is fsynced before returning.
    """
    records_path = os.path.join(path, RECORDS)
    try:
        fd = _open_nofollow(records_path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    with open(fd, "r+b") as handle:
        data = handle.read()
        lines = data.split(b"\n")
        complete, partial = lines[:-1], lines[-1]
        cut = 0  # byte offset just after the last marker line
        offset = 0
        last_marker = -1
        for index, line in enumerate(complete):
            offset += len(line) + 1
            if b'"point"' in line and _record_kind(line) == POINT_KIND:
                cut, last_marker = offset, index
        kept: list[bytes] = []
        dropped = 1 if partial.strip() else 0
        for line in complete[last_marker + 1:]:
            record = _parse_record(line)
            if record is not None and "point_id" not in record:
                kept.append(line + b"\n")
            elif line.strip():
                dropped += 1
        tail = b"".join(kept)
        if data[cut:] == tail:
            return 0
        handle.seek(cut)
        handle.truncate(cut)
        handle.write(tail)
        handle.flush()
        os.fsync(handle.fileno())
    log.warning("%s: dropped %d record line(s) after the last finished point (the run was cut short while "
                "writing); those points run again", path, dropped)
    return dropped


def _record_kind(line: bytes) -> str | None:
    record = _parse_record(line)
    return None if record is None else str(record.get("kind"))


def _parse_record(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def experiment_sha256(experiment: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved experiment, leaving out only its file path (``source``)."""
    content = {k: v for k, v in experiment.items() if k != "source"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=_json_default, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def check_same_experiment(path: str, manifest: Mapping[str, Any], experiment: Mapping[str, Any]) -> None:
    """Refuse to resume ``path`` with an experiment whose resolved content differs from its manifest's.

    The message names the top-level keys and the workloads that changed. A
    manifest written before the hash existed is accepted with a warning.
    """
    stored_hash = manifest.get(EXPERIMENT_HASH)
    if stored_hash is None:
        log.warning("%s has no experiment hash in its manifest (written by an older corridor); "
                    "resuming without checking that the experiment is unchanged", path)
        return
    if stored_hash == experiment_sha256(experiment):
        return
    before = manifest.get("experiment")
    before = dict(before) if isinstance(before, Mapping) else {}
    after = json.loads(json.dumps(dict(experiment), default=_json_default))
    changes: list[str] = []
    for key in sorted(set(before) | set(after)):
        if key in ("source", "raw", "workloads") or before.get(key) == after.get(key):
            continue
        changes.append(key)
    old_w = {str(w.get("name")): w for w in before.get("workloads", []) if isinstance(w, Mapping)}
    new_w = {str(w.get("name")): w for w in after.get("workloads", []) if isinstance(w, Mapping)}
    for name in sorted(set(old_w) | set(new_w)):
        if name not in new_w:
            changes.append(f"workload {name} (removed)")
        elif name not in old_w:
            changes.append(f"workload {name} (added)")
        elif old_w[name] != new_w[name]:
            fields = sorted(k for k in set(old_w[name]) | set(new_w[name])
                            if old_w[name].get(k) != new_w[name].get(k))
            changes.append(f"workload {name} ({', '.join(fields)})")
    if before.get("workloads") != after.get("workloads") and not any(c.startswith("workload ") for c in changes):
        changes.append("workloads (order)")
    if not changes:
        changes.append("the experiment file's content (raw)")
    raise RunDirError(
        f"{path} was started from a different experiment: changed {'; '.join(changes)}. Resume it with the "
        "experiment as it was when the run started, or start a new run with another --out"
    )


@dataclass
class RunDir:
    """A run directory as read back: manifest, records, finished points, summary."""

    path: str
    format_version: int
    manifest: dict[str, Any]
    records: list[dict[str, Any]]
    points: dict[str, dict[str, Any]]
    summary: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    def for_point(self, point_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("point_id") == point_id and (kind is None or r.get("kind") == kind)]

    @property
    def planned_points(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("points", []))

    @property
    def experiment(self) -> dict[str, Any]:
        return dict(self.manifest.get("experiment", {}))


def read_run(path: str) -> RunDir:
    """Read a run directory; refuses newer formats and pre-release ones, with what to do."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise RunDirError(f"{path} is not a directory; give the run directory that `corridor run` wrote")
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError as exc:
        raise RunDirError(f"{path} has no {MANIFEST}; it is not a corridor run directory") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{manifest_path} is damaged ({exc}); the run cannot be analysed") from exc
    if not isinstance(manifest, dict):
        raise RunDirError(f"{manifest_path} is not a JSON object; it is not a corridor run manifest")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise RunDirError(
            f"{path} has no format_version in its manifest: it was written by a pre-release corridor "
            f"whose format this version ({__version__}, format {FORMAT_VERSION}) cannot read; re-run the experiment"
        )
    if version > FORMAT_VERSION:
        raise RunDirError(
            f"{path} is run-directory format {version}, newer than this corridor reads ({FORMAT_VERSION}); "
            "upgrade corridor to analyse it"
        )
    records, warnings = _read_records(os.path.join(path, RECORDS))
    if version < FORMAT_VERSION:
        if version not in _UPGRADERS:
            raise RunDirError(
                f"{path} is run-directory format {version}, older than any this corridor reads "
                f"(supported: {', '.join(map(str, sorted({FORMAT_VERSION, *_UPGRADERS})))}); re-run the experiment"
            )
        manifest, records = _UPGRADERS[version](manifest, records)
        warnings.append(f"read format {version} through the upgrader to format {FORMAT_VERSION}")
    points: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("kind") == POINT_KIND:
            pid = str(record.get("point_id"))
            if pid in points:
                warnings.append(f"point {pid} is marked finished twice; the later marker is kept")
            points[pid] = record
    summary = None
    summary_path = os.path.join(path, SUMMARY)
    if os.path.exists(summary_path):
        try:
            with open(summary_path, encoding="utf-8") as handle:
                summary = json.load(handle)
        except (OSError, json.JSONDecodeError) as exc:
            warnings.append(f"{SUMMARY} unreadable ({exc}); ignored")
    for warning in warnings:
        log.warning("%s: %s", path, warning)
    return RunDir(path=path, format_version=version, manifest=manifest, records=records, points=points,
                  summary=summary, warnings=warnings)


def derived_dir(run_path: str, out: str | None = None) -> str:
    """Where analysis writes: ``out`` if given, else ``RUN/derived`` (created)."""
    folder = out if out is not None else os.path.join(run_path, DERIVED)
    os.makedirs(folder, exist_ok=True)
    return folder


def sudo_owner() -> tuple[int, int] | None:
    """``(uid, gid)`` of the user who ran this process through sudo, or None (not root, or not sudo)."""
    if os.geteuid() != 0:
        return None
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if not uid.isdigit() or int(uid) == 0:
        return None
    return int(uid), int(gid) if gid.isdigit() else -1


def give_to_invoking_user(path: str, *, recursive: bool = True) -> int:
    """Under sudo, hand ``path`` (and, with ``recursive``, what root wrote inside it) to the invoking user.

    A run started with ``sudo corridor run`` then belongs to the user who started it, so
    analysis, moving and deleting it need no root. Does nothing unless this process is root
    with SUDO_UID set; returns how many entries changed owner. Only directories and regular
    files owned by root change: a symbolic link is never followed, and a file with a second
    hard link is left alone (it could be a link to a file outside the run). Each entry is
    opened without following links and changed through that descriptor, children before
    their directory, so nothing can be swapped in between the check and the change.
    """
    owner = sudo_owner()
    if owner is None:
        return 0
    changed = 0
    if recursive and os.path.isdir(path) and not os.path.islink(path):
        for _root, dirs, files, root_fd in os.fwalk(path, topdown=False, follow_symlinks=False):
            for name in [*files, *dirs]:
                changed += _chown_root_entry(name, root_fd, owner)
    parent, name = os.path.split(os.path.abspath(path))
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        changed += _chown_root_entry(name, parent_fd, owner)
    finally:
        os.close(parent_fd)
    return changed


def _chown_root_entry(name: str, dir_fd: int, owner: tuple[int, int]) -> int:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            return 0  # links, sockets, fifos, devices: never ours to give away
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        log.warning("could not hand %s to the invoking user: %s", name, exc)
        return 0
    try:
        info = os.fstat(fd)
        if info.st_uid != 0 or not (stat.S_ISDIR(info.st_mode) or (stat.S_ISREG(info.st_mode)
                                                                  and info.st_nlink == 1)):
            return 0
        os.fchown(fd, *owner)
        return 1
    except OSError as exc:
        log.warning("could not hand %s to the invoking user: %s", name, exc)
        return 0
    finally:
        os.close(fd)


def _read_records(path: str) -> tuple[list[dict[str, Any]], list[str]]:
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    if not os.path.exists(path):
        return records, [f"{RECORDS} is missing; no points were finished"]
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number >= len(lines) - 1:
                # A run killed mid-write leaves at most one partial last line; its point has no marker yet.
                warnings.append(f"{RECORDS} line {number} is cut short (run interrupted while writing); ignored")
                continue
            raise RunDirError(f"{path} line {number} is not JSON ({exc.msg}); the run directory is damaged") from exc
        if not isinstance(record, dict) or "kind" not in record:
            raise RunDirError(f"{path} line {number} is not a record (a JSON object with a 'kind')")
        records.append(record)
    return records, warnings


def _write_json_atomic(path: str, data: Mapping[str, Any]) -> None:
    tmp = path + ".tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = _open_nofollow(tmp, flags)
    except FileExistsError:
        # Left by a killed writer, or planted: remove the name itself (never what it points to), then retry.
        os.unlink(tmp)
        fd = _open_nofollow(tmp, flags)
    with open(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=_json_default)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _open_nofollow(path: str, flags: int) -> int:
    """Open without following a final symlink; new files get :data:`FILE_MODE` whatever the umask."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunDirError(f"{path} is a symbolic link; a run directory holds only its own files. "
                              "Remove the link or choose another --out directory") from exc
        raise
    if flags & os.O_CREAT:
        os.fchmod(fd, FILE_MODE)
    return fd


def _check_new_out(path: str) -> None:
    """Refuse an existing ``--out`` that is not a directory, not empty, or owned by another non-root user."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if not os.path.isdir(path):
        raise RunDirError(f"{path} exists and is not a directory; choose another --out directory")
    if info.st_uid not in (0, os.geteuid()):
        raise RunDirError(f"{path} is owned by another user (uid {info.st_uid}); a run is only written into a "
                          "directory of yours. Choose another --out directory")
    leftovers = sorted(set(os.listdir(path)) - {LOCK, MANIFEST + ".tmp"})  # what a killed create leaves
    if leftovers:
        raise RunDirError(f"{path} exists, is not empty ({', '.join(leftovers[:3])}"
                          f"{', ...' if len(leftovers) > 3 else ''}) and holds no run; "
                          "choose a new or empty --out directory")


#: Lock files this process holds, by the real path of their run directory.
_HELD_LOCKS: dict[str, int] = {}


def _lock(path: str) -> None:
    """Take RUN's lock for this process (a second take in the same process is a no-op)."""
    key = os.path.realpath(path)
    if key in _HELD_LOCKS:
        return
    fd = _open_nofollow(os.path.join(path, LOCK), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirError(
            f"another corridor process is writing {path}; wait for it to finish or stop it "
            "(then `corridor clean`) before resuming"
        ) from None
    _HELD_LOCKS[key] = fd


def _unlock(path: str) -> None:
    fd = _HELD_LOCKS.pop(os.path.realpath(path), None)
    if fd is not None:
        os.close(fd)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)
