"""Choosing the delay-line program: the compiled one where it is built and current, else Python (no root)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from corridor.errors import EmulationError
from corridor.links import engine
from corridor.links.contract import LinkDirection
from corridor.links.userspace import delayline_argv

LINK = LinkDirection(rate_mbps=1000, delay_ms=5, queue_bytes=1_250_000)


@pytest.fixture
def fake_native(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in native build and source under tmp_path, with no environment overrides."""
    source = tmp_path / "delayline.c"
    source.write_text("/* source */\n")
    binary = tmp_path / "corridor-delayline"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    os.utime(source, (1_000_000, 1_000_000))
    monkeypatch.setattr(engine, "NATIVE_SOURCE", source)
    monkeypatch.setattr(engine, "NATIVE_BINARY", binary)
    monkeypatch.delenv(engine.ENV_ENGINE, raising=False)
    monkeypatch.delenv(engine.ENV_BINARY, raising=False)
    return binary


def test_auto_takes_a_current_native_build(fake_native: Path) -> None:
    chosen = engine.resolve("auto")
    assert chosen.name == "native" and chosen.argv == (str(fake_native),) and chosen.note == ""
    argv = delayline_argv("wa", "wb", LINK, LINK, stats_path="/s", seed=1)
    assert argv[0] == str(fake_native) and argv[1:3] == ["--intf-a", "wa"]


def test_auto_falls_back_to_python_and_says_why(fake_native: Path) -> None:
    fake_native.unlink()
    chosen = engine.resolve()
    assert chosen.name == "python"
    assert chosen.argv == (sys.executable, "-m", "corridor.links.delayline")
    assert "not built" in chosen.note and str(fake_native) in chosen.note


def test_a_build_older_than_its_source_is_not_used(fake_native: Path) -> None:
    os.utime(fake_native, (500_000, 500_000))
    assert engine.resolve().name == "python"
    with pytest.raises(EmulationError, match="older than its source.*libjansson-dev"):
        engine.resolve("native")


def test_the_environment_chooses_and_names_a_binary(fake_native: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(engine.ENV_ENGINE, "python")
    assert engine.resolve().name == "python"
    assert delayline_argv("wa", "wb", LINK, LINK, stats_path="/s", seed=1)[1:3] == ["-m", "corridor.links.delayline"]
    monkeypatch.setenv(engine.ENV_ENGINE, "native")
    other = fake_native.with_name("other-build")
    monkeypatch.setenv(engine.ENV_BINARY, str(other))
    with pytest.raises(EmulationError, match="other-build is not an executable file"):
        engine.resolve()
    fake_native.rename(other)
    assert engine.resolve().argv == (str(other),)


def test_an_unknown_engine_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(engine.ENV_ENGINE, "rust")
    with pytest.raises(EmulationError, match="unknown delay-line engine 'rust'.*auto, native, python"):
        engine.resolve()


def test_a_failed_build_names_the_fix_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "delayline.c"
    source.write_text("this is not C\n")
    monkeypatch.setattr(engine, "NATIVE_SOURCE", source)
    out = tmp_path / "corridor-delayline"
    with pytest.raises(EmulationError, match="(?s)building the native delay line failed.*apt-get install gcc"):
        engine.build(out, compiler="gcc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["delayline.c"]


def test_which_and_build_from_the_command_line(fake_native: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert engine.main(["which"]) == 0
    assert capsys.readouterr().out.startswith(f"native: {fake_native}")
    assert engine.main(["frobnicate"]) == 2
    assert "usage" in capsys.readouterr().err


def test_exec_becomes_the_engine_this_machine_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # how a cluster server starts a link whose argv the coordinator built with its own paths
    import subprocess

    env = {**os.environ, engine.ENV_ENGINE: "python", "PYTHONPATH": str(Path(engine.__file__).parents[2])}
    result = subprocess.run([sys.executable, "-m", "corridor.links.engine", "exec", "--help"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "python -m corridor.links.delayline" in result.stdout and "--intf-a" in result.stdout
    env[engine.ENV_ENGINE] = "rust"
    result = subprocess.run([sys.executable, "-m", "corridor.links.engine", "exec", "--help"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and "unknown delay-line engine 'rust'" in result.stderr
