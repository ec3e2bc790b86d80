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

A point counts as finished only once its ``point`` record is on disk, and its
workload records are written in the same fsynced append just before it, so a
killed run never leaves half a point that ``resume`` would miss or repeat.

Readers refuse a newer ``format_version`` and read or refuse older ones with a
message saying what to do (:data:`_UPGRADERS`).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import socket
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
    """Appends to a run directory. Create with :meth:`create` or :meth:`resume`."""

    def __init__(self, path: str, manifest: dict[str, Any], done: dict[str, dict[str, Any]]) -> None:
        self.path = path
        self.manifest = manifest
        self._done = done

    @classmethod
    def create(cls, path: str, manifest: Mapping[str, Any]) -> RunWriter:
        """Start a new run directory; refuses one that already holds a run."""
        if os.path.exists(os.path.join(path, MANIFEST)):
            raise RunDirError(
                f"{path} already holds a run; continue it with --resume or choose another --out directory"
            )
        os.makedirs(path, exist_ok=True)
        full = {"format_version": FORMAT_VERSION, "created_utc": utc_now(), **environment(), **manifest}
        _write_json_atomic(os.path.join(path, MANIFEST), full)
        open(os.path.join(path, RECORDS), "a", encoding="utf-8").close()
        return cls(path, full, {})

    @classmethod
    def resume(cls, path: str) -> RunWriter:
        """Reopen a run directory to continue it; the points already finished are kept."""
        run = read_run(path)
        if run.format_version != FORMAT_VERSION:
            raise RunDirError(
                f"{path} is format version {run.format_version}; resume needs version {FORMAT_VERSION}. "
                "Start a new run instead."
            )
        return cls(path, run.manifest, dict(run.points))

    def done_points(self) -> set[str]:
        """Ids of points finished (whatever their status) in any session."""
        return set(self._done)

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append records as JSON lines and fsync before returning."""
        lines = "".join(json.dumps(dict(r), sort_keys=True, default=_json_default) + "\n" for r in records)
        if not lines:
            return
        with open(os.path.join(self.path, RECORDS), "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())

    def finish_point(self, point_id: str, records: Iterable[Mapping[str, Any]], info: Mapping[str, Any]) -> None:
        """Write a point's workload records and its ``point`` marker in one fsynced append."""
        if point_id in self._done:
            raise RunDirError(f"point {point_id} is already finished in {self.path}; it must not run twice")
        marker = {"kind": POINT_KIND, "point_id": point_id, "finished_utc": utc_now(), **info}
        tagged = [{**dict(r), "point_id": point_id} for r in records]
        self.append([*tagged, marker])
        self._done[point_id] = marker

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        _write_json_atomic(os.path.join(self.path, SUMMARY), {"format_version": FORMAT_VERSION, **summary})


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
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=_json_default)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)
