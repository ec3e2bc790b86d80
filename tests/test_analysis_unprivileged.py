"""Analysis without root after a root run: the README's `verdicts`, `plot`, `report`, `export` as a normal user.

A run made with ``sudo corridor run`` belongs to the user who started it (SUDO_UID), and
no analysis command crashes on a run directory it cannot write: it writes to ``-o DIR``,
or says where it could not write and exits 2; ``verdicts`` still prints its table.
The root tests build a small fake run (no network) and run the commands under setpriv as
``nobody``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_experiment_fakes import fake_network_factory, fake_plan_builder, run_fake, use_fakes, write_experiment  # noqa: F401

from corridor.cli import cli
from corridor.emulation.api import package_env
from corridor.results import rundir
from corridor.workloads import runner

NOBODY = 65534
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]

pytestmark = pytest.mark.usefixtures("use_fakes")


def _as_root() -> str | None:
    if os.geteuid() != 0:
        return "needs root to make a root-owned run and to switch to an unprivileged user"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux) to run commands as an unprivileged user"
    return None


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder the unprivileged user can read (pytest's own tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="corridor-unpriv-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as_nobody(scratch: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = scratch / "home"
    home.mkdir(exist_ok=True)
    os.chown(home, NOBODY, NOBODY)
    env = {**package_env(), "HOME": str(home), "MPLCONFIGDIR": str(home / "mpl"), "COLUMNS": "200"}
    for name in ("SUDO_UID", "SUDO_GID", "SUDO_USER", "SUDO_COMMAND"):
        env.pop(name, None)
    return subprocess.run([*SETPRIV, sys.executable, "-m", "corridor", *args], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _nobody_folder(scratch: Path, name: str) -> Path:
    path = scratch / name
    path.mkdir()
    os.chown(path, NOBODY, NOBODY)
    return path


def _owners(path: Path) -> set[int]:
    return {os.lstat(p).st_uid for p in [path, *path.rglob("*")]}


# -- without root: the same decisions, with "not writable" simulated -------------------------------------


@pytest.fixture
def fake_run(tmp_path: Path) -> str:
    return run_fake(tmp_path)


@pytest.fixture
def derived_not_writable(monkeypatch: pytest.MonkeyPatch, fake_run: str) -> str:
    """RUN/derived cannot be created, as for a run directory that belongs to root."""
    real_makedirs = os.makedirs

    def makedirs(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).startswith(os.path.join(fake_run, rundir.DERIVED)):
            raise PermissionError(13, "Permission denied", str(path))
        real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", makedirs)
    return fake_run


def test_verdicts_print_the_table_when_the_run_is_not_writable(derived_not_writable: str) -> None:
    result = CliRunner().invoke(cli, ["verdicts", derived_not_writable])
    assert result.exit_code == 0, result.output
    assert "does not tolerate" in result.stdout
    assert "the table was not saved" in result.stderr
    assert f"cannot write to {os.path.join(derived_not_writable, 'derived')} (Permission denied)" in result.stderr
    assert "-o DIR" in result.stderr
    assert not os.path.exists(os.path.join(derived_not_writable, "derived"))


@pytest.mark.parametrize(("command", "where"), [(["plot"], "derived/figures"), (["report"], "derived"),
                                               (["export", "--csv"], "derived/export")])
def test_analysis_says_where_it_could_not_write_and_exits_2(derived_not_writable: str, command: list[str],
                                                            where: str) -> None:
    result = CliRunner().invoke(cli, [*command, derived_not_writable])
    assert result.exit_code == 2, result.output
    assert f"cannot write to {os.path.join(derived_not_writable, where)} (Permission denied)" in result.output
    assert "write somewhere else with -o DIR" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["verdicts"], ["plot"], ["report"], ["export", "--csv"]])
def test_analysis_writes_to_out_when_the_run_is_not_writable(derived_not_writable: str, tmp_path: Path,
                                                             command: list[str]) -> None:
    out = tmp_path / "elsewhere"
    result = CliRunner().invoke(cli, [*command, derived_not_writable, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out))


def test_an_out_folder_that_cannot_be_written_is_refused(fake_run: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: (str(path) != str(out) or not mode & os.W_OK)
                        and real_access(path, mode))
    for command in (["verdicts"], ["plot"], ["report"], ["export", "--csv"]):
        result = CliRunner().invoke(cli, [*command, fake_run, "-o", str(out)])
        assert result.exit_code == 2, (command, result.output)
        assert f"cannot write to {out} (not writable by this user); give -o a folder you can write" in result.output


def test_sudo_owner_reads_sudo_uid_only_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_UID", "1000")
    monkeypatch.setenv("SUDO_GID", "1001")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert rundir.sudo_owner() == (1000, 1001)
    monkeypatch.setenv("SUDO_GID", "")
    assert rundir.sudo_owner() == (1000, -1)
    for uid in ("0", "", "abc", "-5"):
        monkeypatch.setenv("SUDO_UID", uid)
        assert rundir.sudo_owner() is None
    monkeypatch.setenv("SUDO_UID", "1000")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert rundir.sudo_owner() is None


# -- as root: the real thing, under setpriv ---------------------------------------------------------------


@pytest.mark.corridor_root
def test_analysis_of_a_root_run_as_an_unprivileged_user(scratch: Path) -> None:
    reason = _as_root()
    if reason:
        pytest.skip(reason)
    run = Path(run_fake(scratch))
    assert _owners(run) == {0}
    derived = run / "derived"

    table = _as_nobody(scratch, "verdicts", str(run))
    assert table.returncode == 0, table.stderr
    assert "does not tolerate" in table.stdout and "Traceback" not in table.stderr
    assert f"cannot write to {derived}" in table.stderr and "-o DIR" in table.stderr

    for command, where in ((["plot"], derived / "figures"), (["report"], derived),
                           (["export", "--csv"], derived / "export")):
        refused = _as_nobody(scratch, *command, str(run))
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        assert f"cannot write to {where} (Permission denied)" in refused.stderr
        assert "write somewhere else with -o DIR" in refused.stderr and "Traceback" not in refused.stderr

    # -o DIR works for every command (CliRunner tests above); the two fast ones are enough here.
    out = _nobody_folder(scratch, "analysis")
    for command, sub, expected in ((["verdicts"], "v", "verdicts.csv"), (["export", "--csv"], "e", "points.csv")):
        done = _as_nobody(scratch, *command, str(run), "-o", str(out / sub))
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert expected in os.listdir(out / sub), (command, os.listdir(out / sub))

    given = _as_nobody(scratch, "plot", str(run), "-o", str(run / "mine"))
    assert given.returncode == 2 and "give -o a folder you can write" in given.stderr
    assert _owners(run) == {0} and not derived.exists()


@pytest.mark.corridor_root
@pytest.mark.corridor_slow
def test_a_sudo_run_belongs_to_the_invoking_user(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = _as_root()
    if reason:
        pytest.skip(reason)
    monkeypatch.setattr(runner, "plan_for", fake_plan_builder)
    monkeypatch.setattr(runner, "default_network_factory", fake_network_factory)
    monkeypatch.setenv("SUDO_UID", str(NOBODY))
    monkeypatch.setenv("SUDO_GID", str(NOBODY))
    experiment = write_experiment(scratch)
    monkeypatch.chdir(scratch)
    result = CliRunner().invoke(cli, ["run", experiment])  # the default out: ./runs/NAME-TIME, runs/ made now
    assert result.exit_code == 0, result.output
    runs = scratch / "runs"
    (run,) = runs.iterdir()
    assert (run / "derived" / "verdicts.csv").exists()
    assert _owners(runs) == {NOBODY}
    assert {os.lstat(p).st_gid for p in run.rglob("*")} == {NOBODY}

    # The README's next steps, without sudo, into the run's own derived folder.
    for command, expected in ((["verdicts"], "verdicts.csv"), (["plot"], "figures"), (["report"], "report.html"),
                              (["export", "--csv"], "export")):
        done = _as_nobody(scratch, *command, str(run))
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert expected in os.listdir(run / "derived")
        assert "not saved" not in done.stderr


@pytest.mark.corridor_root
def test_giving_a_run_away_never_follows_links(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = _as_root()
    if reason:
        pytest.skip(reason)
    outside = scratch / "outside"
    outside.mkdir()
    secret, linked = outside / "secret", outside / "linked"
    secret.write_text("root's")
    linked.write_text("root's too")
    run = scratch / "run"
    (run / "derived").mkdir(parents=True)
    (run / "records.jsonl").write_text("{}\n")
    (run / "derived" / "verdicts.csv").write_text("x\n")
    (run / "to-secret").symlink_to(secret)
    (run / "to-outside").symlink_to(outside, target_is_directory=True)
    os.link(linked, run / "hardlink")
    os.mkfifo(run / "fifo")
    kept = scratch / "kept-by-other"
    kept.write_text("")
    os.chown(kept, 4242, 4242)
    os.link(kept, run / "other-users")

    monkeypatch.setenv("SUDO_UID", str(NOBODY))
    monkeypatch.setenv("SUDO_GID", str(NOBODY))
    changed = rundir.give_to_invoking_user(str(run))
    assert changed == 4  # run, derived, records.jsonl, derived/verdicts.csv
    for path in (run, run / "derived", run / "records.jsonl", run / "derived" / "verdicts.csv"):
        assert (os.lstat(path).st_uid, os.lstat(path).st_gid) == (NOBODY, NOBODY), path
    for path in (secret, linked, outside, run / "to-secret", run / "to-outside", run / "fifo"):
        assert os.lstat(path).st_uid == 0, path
    assert os.lstat(kept).st_uid == 4242
    assert stat.S_ISFIFO(os.lstat(run / "fifo").st_mode)

    monkeypatch.delenv("SUDO_UID")
    assert rundir.give_to_invoking_user(str(outside)) == 0
    assert _owners(outside) == {0}
