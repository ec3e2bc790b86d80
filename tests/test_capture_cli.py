"""`corridor capture`: a pcap of a WAN link during a run holds exactly what the agents sent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from corridor.cli import cli

REPO = Path(__file__).resolve().parent.parent


def test_unknown_link_is_refused_before_anything_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["capture", str(REPO / "experiments" / "capture-chat.yaml"),
                                      "--link", "nowhere", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "no network of capture-chat has a WAN link named 'nowhere'" in result.output
    assert "remote-city" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.corridor_root
@pytest.mark.corridor_slow
def test_capture_reproduces_message_count_and_bytes(tmp_path: Path) -> None:
    import subprocess

    from corridor.emulation.api import package_env

    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "corridor", "capture", "experiments/capture-chat.yaml", "--link", "remote-city",
         "--link-backend", "userspace", "--out", str(out), "--json"],
        cwd=REPO, env=package_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    (row,) = summary["captures"]
    assert row["comparable"] and row["match"], row
    assert row["messages"] > 30 and row["bytes"] > 10_000
    assert row["dropped_by_kernel"] == 0
    assert Path(row["pcap"]).stat().st_size > 0
    lines = Path(row["trace"]).read_text().splitlines()
    assert len(lines) == row["messages"]
