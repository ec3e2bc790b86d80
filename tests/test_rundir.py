"""The run directory: written once, appended point by point, read back or refused by format version."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from corridor.errors import RunDirError
from corridor.results.rundir import FORMAT_VERSION, MANIFEST, RECORDS, RunWriter, derived_dir, read_run


def _new(tmp_path: Path) -> RunWriter:
    return RunWriter.create(str(tmp_path / "run"), {"experiment": {"name": "t"}, "points": [{"point_id": "a"}]})


def test_manifest_carries_format_host_kernel_versions(tmp_path: Path) -> None:
    writer = _new(tmp_path)
    manifest = json.loads((tmp_path / "run" / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    for key in ("host", "kernel", "versions", "created_utc", "experiment"):
        assert key in manifest
    assert manifest["versions"]["corridor"]
    assert writer.done_points() == set()


def test_points_round_trip_and_never_run_twice(tmp_path: Path) -> None:
    writer = _new(tmp_path)
    writer.finish_point("a", [{"kind": "request", "ttft_s": 0.1}], {"status": "ok"})
    run = read_run(writer.path)
    assert list(run.points) == ["a"]
    assert run.for_point("a", "request") == [{"kind": "request", "ttft_s": 0.1, "point_id": "a"}]
    with pytest.raises(RunDirError, match="must not run twice"):
        writer.finish_point("a", [], {"status": "ok"})
    resumed = RunWriter.resume(writer.path)
    assert resumed.done_points() == {"a"}


def test_create_refuses_an_existing_run(tmp_path: Path) -> None:
    _new(tmp_path)
    with pytest.raises(RunDirError, match="--resume"):
        _new(tmp_path)


def test_a_cut_short_last_line_is_ignored_with_a_warning(tmp_path: Path) -> None:
    writer = _new(tmp_path)
    writer.finish_point("a", [{"kind": "x"}], {"status": "ok"})
    with open(os.path.join(writer.path, RECORDS), "a") as handle:
        handle.write('{"kind": "request", "ttft')
    run = read_run(writer.path)
    assert list(run.points) == ["a"]
    assert any("cut short" in w for w in run.warnings)


def test_a_damaged_middle_line_is_refused(tmp_path: Path) -> None:
    writer = _new(tmp_path)
    with open(os.path.join(writer.path, RECORDS), "a") as handle:
        handle.write("not json\n" + json.dumps({"kind": "x"}) + "\n")
    with pytest.raises(RunDirError, match="line 1 is not JSON"):
        read_run(writer.path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": FORMAT_VERSION + 1}, "newer than this corridor reads"),
        ({"format_version": 0}, "older than any this corridor reads"),
        ({"format_version": None}, "pre-release"),
        ({"format_version": "1"}, "pre-release"),
    ],
)
def test_format_versions_other_than_ours_are_refused_clearly(tmp_path: Path, change: dict[str, Any],
                                                             message: str) -> None:
    writer = _new(tmp_path)
    path = os.path.join(writer.path, MANIFEST)
    manifest = json.loads(Path(path).read_text())
    manifest.update(change)
    if change["format_version"] is None:
        del manifest["format_version"]
    Path(path).write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match=message):
        read_run(writer.path)


def test_an_older_format_with_an_upgrader_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from corridor.results import rundir
    def upgrade(manifest: dict[str, Any], records: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Any]]:
        return {**manifest, "upgraded": True}, records

    monkeypatch.setitem(rundir._UPGRADERS, 0, upgrade)
    writer = _new(tmp_path)
    path = os.path.join(writer.path, MANIFEST)
    Path(path).write_text(json.dumps({**json.loads(Path(path).read_text()), "format_version": 0}))
    run = read_run(writer.path)
    assert run.manifest["upgraded"] is True
    assert any("upgrader" in w for w in run.warnings)
    with pytest.raises(RunDirError, match="resume needs version"):
        RunWriter.resume(writer.path)


@pytest.mark.parametrize(
    ("setup", "message"),
    [("missing", "not a directory"), ("empty", "no manifest.json"), ("garbage", "damaged"),
     ("list", "not a JSON object")],
)
def test_not_a_run_directory(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "r"
    if setup != "missing":
        path.mkdir()
    if setup == "garbage":
        (path / MANIFEST).write_text("{")
    if setup == "list":
        (path / MANIFEST).write_text("[]")
    with pytest.raises(RunDirError, match=message):
        read_run(str(path))


def test_derived_output_goes_to_its_own_folder(tmp_path: Path) -> None:
    writer = _new(tmp_path)
    assert derived_dir(writer.path) == os.path.join(writer.path, "derived")
    assert os.path.isdir(os.path.join(writer.path, "derived"))
    assert derived_dir(writer.path, str(tmp_path / "elsewhere")) == str(tmp_path / "elsewhere")
