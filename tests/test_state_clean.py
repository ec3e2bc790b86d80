"""`corridor clean`'s decisions: which pids it may signal, which entries it skips, what it leaves alone.

These run without root: the state root, the named-namespace folder and the
scratch folder point into tmp_path, and the `ip netns` calls are replaced, so
nothing outside the test is looked at or touched. The pids involved are
processes the test itself starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corridor.emulation import state as state_mod
from corridor.errors import EmulationError


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """State root, /run/netns and /tmp stand-ins inside tmp_path; `ip netns` calls recorded, not run."""
    calls: list[tuple[str, str]] = []
    paths = {"state": tmp_path / "state", "netns": tmp_path / "netns", "tmp": tmp_path / "tmp"}
    paths["netns"].mkdir()
    paths["tmp"].mkdir()
    monkeypatch.setattr(state_mod, "STATE_ROOT", paths["state"])
    monkeypatch.setattr(state_mod, "ALLOW_STATE_ROOT_OUTSIDE_RUN", True)
    monkeypatch.setattr(state_mod, "NETNS_DIR", paths["netns"])
    monkeypatch.setattr(state_mod, "SCRATCH_TMP_DIR", paths["tmp"])
    monkeypatch.setattr(state_mod, "_netns_pids", lambda name: calls.append(("pids", name)) or [])

    def netns_del(name: str) -> None:
        calls.append(("del", name))
        (paths["netns"] / name).unlink()

    monkeypatch.setattr(state_mod, "_netns_del", netns_del)
    return {**paths, "calls": calls}


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process of the test's own that clean must not signal."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_state(root: Path, name: str, data: Any) -> Path:
    directory = root / name
    (directory / "netns").mkdir(parents=True)
    (directory / "state.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return directory


def _dead_owner_state(nodes: dict[str, Any]) -> dict[str, Any]:
    return {"owner_pid": _dead_pid(), "owner_start_ticks": 1, "label": "two-site", "nodes": nodes}


def test_an_unknown_start_time_is_never_taken_for_alive() -> None:
    me = os.getpid()
    assert state_mod.pid_alive(me, state_mod.proc_start_ticks(me))
    assert not state_mod.pid_alive(me, None)
    assert not state_mod.pid_alive(me, (state_mod.proc_start_ticks(me) or 0) + 1)


def test_a_zombie_is_not_alive() -> None:
    # a child that exited and was not reaped yet: what a run killed with SIGKILL is until its parent waits
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    ticks = state_mod.proc_start_ticks(child.pid)
    assert child.stdin is not None
    child.stdin.close()  # now it exits
    deadline = time.monotonic() + 10
    while state_mod.proc_start_ticks(child.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert ticks is not None and os.path.exists(f"/proc/{child.pid}")  # still there, as a zombie
        assert not state_mod.pid_alive(child.pid, ticks)
    finally:
        child.wait()


def test_clean_never_signals_a_recorded_pid_without_a_start_time(roots: dict[str, Any],
                                                                 sleeper: subprocess.Popen[bytes]) -> None:
    netns = state_mod.netns_inode(sleeper.pid)
    nodes = {"proc:agent": {"pid": sleeper.pid, "start_ticks": None, "netns": netns}}
    directory = _write_state(roots["state"], "99999-0", _dead_owner_state(nodes))
    report = state_mod.clean()
    assert sleeper.poll() is None, "clean signalled a pid whose start time it never verified"
    assert sleeper.pid not in report.killed
    assert not directory.exists()


def test_clean_never_signals_a_recorded_pid_in_another_namespace(roots: dict[str, Any],
                                                                 sleeper: subprocess.Popen[bytes]) -> None:
    nodes = {"proc:agent": {"pid": sleeper.pid, "start_ticks": state_mod.proc_start_ticks(sleeper.pid),
                            "netns": (state_mod.netns_inode(sleeper.pid) or 0) + 1}}
    _write_state(roots["state"], "99999-0", _dead_owner_state(nodes))
    state_mod.clean()
    assert sleeper.poll() is None


def test_clean_ends_a_verified_recorded_pid(roots: dict[str, Any], sleeper: subprocess.Popen[bytes]) -> None:
    nodes = {"proc:agent": {"pid": sleeper.pid, "start_ticks": state_mod.proc_start_ticks(sleeper.pid),
                            "netns": state_mod.netns_inode(sleeper.pid)}}
    _write_state(roots["state"], "99999-0", _dead_owner_state(nodes))
    report = state_mod.clean()
    assert sleeper.wait(timeout=10) is not None
    assert sleeper.pid in report.killed


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"label": "no owner", "nodes": {}}),
        json.dumps({"owner_pid": "x", "owner_start_ticks": 1, "nodes": {}}),
        json.dumps({"owner_pid": 5, "owner_start_ticks": 1, "nodes": []}),
        json.dumps({"owner_pid": 5, "owner_start_ticks": 1, "nodes": {"proc:a": {"pid": "x"}}}),
    ],
)
def test_a_malformed_state_file_is_reported_and_skipped(roots: dict[str, Any], bad: str) -> None:
    broken = _write_state(roots["state"], "11111-0", bad)
    good = _write_state(roots["state"], "99999-0", _dead_owner_state({}))
    report = state_mod.clean()
    assert broken.exists() and not good.exists()
    assert any("11111-0" in p for p in report.problems)
    assert any("99999-0" in r for r in report.runs)


def test_a_stray_file_in_the_state_root_is_reported_and_skipped(roots: dict[str, Any]) -> None:
    roots["state"].mkdir()
    (roots["state"] / "notes.txt").write_text("hello\n")
    good = _write_state(roots["state"], "99999-0", _dead_owner_state({}))
    report = state_mod.clean()
    assert (roots["state"] / "notes.txt").exists() and not good.exists()
    assert any("notes.txt" in p for p in report.problems)


def test_scratch_namespaces_of_a_live_owner_are_left_alone_without_all(roots: dict[str, Any]) -> None:
    state_mod.record_scratch_netns("corridor-probe-live")
    (roots["netns"] / "corridor-probe-live").touch()
    (roots["netns"] / "corridor-probe-orphan").touch()  # no owner recorded
    (roots["netns"] / "corridor-bench-dead-A").touch()
    owners = state_mod.STATE_ROOT / state_mod.SCRATCH_OWNERS
    (owners / "corridor-bench-dead-A.json").write_text(json.dumps({"owner_pid": _dead_pid(),
                                                                   "owner_start_ticks": 1}))
    (roots["netns"] / "somebody-else").touch()
    report = state_mod.clean()
    deleted = [name for what, name in roots["calls"] if what == "del"]
    assert sorted(deleted) == ["corridor-bench-dead-A", "corridor-probe-orphan"]
    assert report.netns_removed == deleted
    assert any("corridor-probe-live" in s for s in report.skipped_live)
    assert not (owners / "corridor-bench-dead-A.json").exists()
    assert (owners / "corridor-probe-live.json").exists()
    roots["calls"].clear()
    state_mod.clean(include_live=True)
    assert [name for what, name in roots["calls"] if what == "del"] == ["corridor-probe-live"]


def test_a_scratch_record_cut_short_by_a_kill_is_removed_once_its_writer_is_gone(roots: dict[str, Any]) -> None:
    # A process killed while it recorded a scratch namespace left NAME.PID.THREAD.tmp beside the records, and
    # clean kept it for ever. A live writer's, or one written in the last minute, is left alone.
    owners = state_mod.STATE_ROOT / state_mod.SCRATCH_OWNERS
    state_mod.record_scratch_netns("corridor-probe-live")
    old = time.time() - 3600
    dead_old = owners / f"corridor-probe-1.json.{_dead_pid()}.140015613489216.tmp"
    live_old = owners / f"corridor-probe-2.json.{os.getpid()}.1.tmp"
    dead_new = owners / f"corridor-probe-3.json.{_dead_pid()}.1.tmp"
    stray = owners / "notes.tmp"  # not a temporary of ours: no writer in its name
    for path in (dead_old, live_old, dead_new, stray):
        path.write_text('{"owner_pid": 1')
    for path in (dead_old, live_old, stray):
        os.utime(path, (old, old))
    report = state_mod.clean()
    assert not dead_old.exists() and report.files_removed == [str(dead_old)]
    assert live_old.exists() and dead_new.exists() and stray.exists()
    assert (owners / "corridor-probe-live.json").exists()


def test_agent_scratch_directories_of_dead_owners_are_removed(roots: dict[str, Any]) -> None:
    tmp: Path = roots["tmp"]
    dead = tmp / f"{state_mod.scratch_dir_prefix('agents', pid=_dead_pid())}abc"
    dead.mkdir()
    (dead / "rank0.jsonl").write_text("")
    live = Path(state_mod.scratch_dir_prefix("agents") + "def")
    live = tmp / live.name
    live.mkdir()
    unknown = tmp / "corridor-agents-xyz"  # no owner in the name: not ours to judge
    unknown.mkdir()
    link_target = tmp / "elsewhere"
    link_target.mkdir()
    planted = tmp / f"{state_mod.scratch_dir_prefix('agents', pid=_dead_pid())}lnk"
    planted.symlink_to(link_target)
    report = state_mod.clean()
    assert not dead.exists() and live.exists() and unknown.exists() and link_target.exists()
    assert report.dirs_removed == [str(dead)]


def test_state_files_get_private_modes_whatever_the_umask(roots: dict[str, Any]) -> None:
    old = os.umask(0)
    try:
        run = state_mod.RunState.create("modes")
        run.record_process("proc:me", os.getpid())
        state_mod.record_scratch_netns("corridor-probe-modes")
    finally:
        os.umask(old)
    root: Path = roots["state"]
    for path in (root, run.directory, run.netns_dir, root / state_mod.SCRATCH_OWNERS):
        assert path.stat().st_mode & 0o777 == 0o700, path
    for path in (run.path, root / state_mod.SCRATCH_OWNERS / "corridor-probe-modes.json"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    run.release()


def test_a_state_root_outside_run_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(state_mod, "STATE_ROOT", tmp_path / "state")
    with pytest.raises(EmulationError, match="under /run"):
        state_mod.RunState.create("outside")
    with pytest.raises(EmulationError, match="CORRIDOR_STATE_DIR"):
        state_mod.clean()
    assert not (tmp_path / "state").exists()
