"""Resume after a cut-short write, the run-directory lock, the experiment content check, and safe files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_experiment_fakes import FAKE_EXPERIMENT, run_fake, use_fakes  # noqa: F401

from corridor.errors import RunDirError
from corridor.results import rundir
from corridor.results.rundir import MANIFEST, RECORDS, SUMMARY, RunWriter, read_run

REPO = Path(__file__).resolve().parent.parent


def _new(tmp_path: Path) -> RunWriter:
    return RunWriter.create(str(tmp_path / "run"), {"experiment": {"name": "t"}, "points": []})


def _lines(path: str) -> list[dict[str, Any]]:
    with open(os.path.join(path, RECORDS), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# -- gap 1: a cut-short write ---------------------------------------------------------


def test_resume_drops_a_partial_line_and_the_records_of_an_unfinished_point(tmp_path: Path) -> None:
    writer = _new(tmp_path)
    writer.append([{"kind": "run_session", "session": 1}])
    writer.finish_point("a", [{"kind": "request", "n": i} for i in range(3)], {"status": "ok"})
    # a kill in the middle of point b's append: two complete lines, then half a line
    with open(os.path.join(writer.path, RECORDS), "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"kind": "request", "point_id": "b", "n": 0}) + "\n")
        handle.write(json.dumps({"kind": "request", "point_id": "b", "n": 1}) + "\n")
        handle.write('{"kind": "request", "point_id": "b", "n"')
    writer.close()
    resumed = RunWriter.resume(writer.path)
    resumed.append([{"kind": "run_session", "session": 2}])
    resumed.finish_point("b", [{"kind": "request", "n": 7}], {"status": "ok"})
    run = read_run(writer.path)
    assert set(run.points) == {"a", "b"}
    assert [r["n"] for r in run.for_point("b", "request")] == [7]
    assert [r["n"] for r in run.for_point("a", "request")] == [0, 1, 2]
    assert run.warnings == []
    assert [r["session"] for r in run.of_kind("run_session")] == [1, 2]


def test_resume_keeps_a_session_record_written_after_the_last_point(tmp_path: Path) -> None:
    writer = _new(tmp_path)
    writer.finish_point("a", [], {"status": "ok"})
    writer.append([{"kind": "run_session", "session": 2}])
    with open(os.path.join(writer.path, RECORDS), "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"kind": "request", "point_id": "b"}) + "\n")
    writer.close()
    RunWriter.resume(writer.path).close()
    kinds = [(r["kind"], r.get("point_id")) for r in _lines(writer.path)]
    assert kinds == [("point", "a"), ("run_session", None)]


def test_resume_of_a_run_with_no_finished_point_empties_the_records(tmp_path: Path) -> None:
    writer = _new(tmp_path)
    with open(os.path.join(writer.path, RECORDS), "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"kind": "request", "point_id": "a"}) + "\n" + '{"kind": "re')
    writer.close()
    RunWriter.resume(writer.path).close()
    assert _lines(writer.path) == []


# -- gap 5: two writers at once -----------------------------------------------------------


def test_a_second_process_cannot_resume_a_run_being_written(tmp_path: Path) -> None:
    writer = _new(tmp_path)
    writer.close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom corridor.results.rundir import RunWriter\n"
         f"w = RunWriter.resume({writer.path!r})\nprint('holding', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(RunDirError, match="another corridor process is writing"):
            RunWriter.resume(writer.path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    RunWriter.resume(writer.path).close()


def test_the_lock_is_released_by_close_and_held_by_a_live_writer(tmp_path: Path) -> None:
    import fcntl

    writer = _new(tmp_path)
    fd = os.open(os.path.join(writer.path, rundir.LOCK), os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        writer.close()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunDirError, match="another corridor process is writing"):
            RunWriter.resume(writer.path)
    finally:
        os.close(fd)


# -- gap 5: a changed experiment ------------------------------------------------------------


@pytest.mark.usefixtures("use_fakes")
def test_resume_refuses_a_changed_experiment_and_names_the_change(tmp_path: Path) -> None:
    path = run_fake(tmp_path, "run")
    changed = FAKE_EXPERIMENT.replace("seed: 7", "seed: 8").replace("ttft: 250ms", "ttft: 300ms")
    with pytest.raises(RunDirError) as info:
        run_fake(tmp_path, "run", changed, resume=True)
    message = str(info.value)
    assert "changed seed" in message and "workload chat (slo)" in message
    assert "workload dp" not in message and "workload diloco" not in message
    assert len(read_run(path).of_kind("run_session")) == 1


@pytest.mark.usefixtures("use_fakes")
def test_resume_accepts_the_same_experiment_from_another_file(tmp_path: Path) -> None:
    run_fake(tmp_path, "run")
    other = tmp_path / "moved"
    other.mkdir()
    run_fake(other, str(tmp_path / "run"), resume=True)
    assert len(read_run(str(tmp_path / "run")).of_kind("run_session")) == 2


@pytest.mark.usefixtures("use_fakes")
def test_an_old_manifest_without_a_hash_resumes_with_a_warning(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    path = run_fake(tmp_path, "run")
    manifest_path = os.path.join(path, MANIFEST)
    manifest = json.loads(Path(manifest_path).read_text())
    del manifest["experiment_sha256"]
    Path(manifest_path).write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        run_fake(tmp_path, "run", FAKE_EXPERIMENT.replace("seed: 7", "seed: 8"), resume=True)
    assert any("no experiment hash" in r.getMessage() for r in caplog.records)


# -- gap 4: files written as root --------------------------------------------------------------


def test_a_planted_temporary_link_is_never_followed(tmp_path: Path) -> None:
    writer = _new(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(victim, os.path.join(writer.path, SUMMARY + ".tmp"))
    writer.write_summary({"status": "complete"})
    assert victim.read_text() == "precious\n"
    assert json.loads(Path(writer.path, SUMMARY).read_text())["status"] == "complete"
    assert oct(os.stat(os.path.join(writer.path, SUMMARY)).st_mode & 0o777) == oct(0o644)


def test_create_refuses_a_non_empty_directory_that_holds_no_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(RunDirError, match="not empty"):
        RunWriter.create(str(out), {"points": []})
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_create_accepts_an_existing_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    RunWriter.create(str(out), {"points": []}).close()
    assert os.path.exists(out / MANIFEST)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_create_refuses_a_directory_owned_by_another_user(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    os.chown(out, 54321, 54321)
    with pytest.raises(RunDirError, match="owned by another user"):
        RunWriter.create(str(out), {"points": []})
