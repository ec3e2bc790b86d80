"""``corridor export RUN --flent``: link samples as Flent data files that Flent itself opens and plots."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_experiment_fakes import run_fake, use_fakes  # noqa: F401

from corridor.cli import cli
from corridor.results.flent import (
    FLENT_FORMAT_VERSION,
    FLENT_TEST,
    SERIES_DOWN,
    SERIES_PING,
    SERIES_UP,
    link_flent_data,
    queue_delay_ms,
    throughput_mbps,
)
from corridor.workloads import runner

pytestmark = pytest.mark.usefixtures("use_fakes")


@pytest.fixture
def fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(runner, "LINK_SAMPLE_INTERVAL_S", 0.01)
    return run_fake(tmp_path, "run")


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _records(run_dir: str) -> list[dict[str, Any]]:
    with open(os.path.join(run_dir, "records.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _flent_exe() -> str | None:
    beside = Path(sys.executable).parent / "flent"
    return str(beside) if beside.exists() else shutil.which("flent")


def test_throughput_is_the_byte_counter_difference_over_time() -> None:
    t = [0.0, 0.5, 1.0, 1.5, 2.0]
    counters: list[float | None] = [0.0, 62_500.0, 187_500.0, 100.0, None]
    # 62,500 B in 0.5 s = 1 Mbit/s; 125,000 B in 0.5 s = 2 Mbit/s; a counter that goes back or is missing: no value
    assert throughput_mbps(t, counters) == pytest.approx([None, 1.0, 2.0, None, None])


def test_queue_delay_is_queue_bytes_over_the_rate() -> None:
    # 125,000 B at 1,000 Mbit/s drain in 1 ms
    assert queue_delay_ms([0.0, 125_000.0, None], 1000.0) == pytest.approx([0.0, 1.0, None])
    assert queue_delay_ms([125_000.0], None) == [None]


def test_ping_series_is_planned_rtt_plus_both_queues_and_null_where_missing() -> None:
    samples = [
        {"t_s": 0.0, "a_to_b.bytes": 0, "a_to_b.queue_bytes": 0, "b_to_a.bytes": 0, "b_to_a.queue_bytes": 0},
        {"t_s": 0.2, "a_to_b.bytes": 250_000, "a_to_b.queue_bytes": 250_000, "b_to_a.bytes": 25_000,
         "b_to_a.queue_bytes": 125_000},
        {"t_s": 0.4, "a_to_b.bytes": 500_000, "b_to_a.bytes": 50_000, "b_to_a.queue_bytes": 0},
    ]
    point = {"point_id": "p1", "started_utc": "2026-01-02T03:04:05Z",
             "plan": {"wan_links": [{"name": "l1", "a": "remote", "b": "city", "rate_mbps": 1000.0,
                                     "rtt_ms": 40.0}]}}
    data = link_flent_data(samples, link="l1", point=point, title="t")
    assert data["version"] == FLENT_FORMAT_VERSION
    assert data["x_values"] == [0.0, 0.2, 0.4]
    assert data["results"][SERIES_UP] == pytest.approx([None, 10.0, 10.0])
    assert data["results"][SERIES_DOWN] == pytest.approx([None, 1.0, 1.0])
    assert data["results"][SERIES_PING] == pytest.approx([40.0, 43.0, None])
    assert data["metadata"]["NAME"] == FLENT_TEST
    assert data["metadata"]["TIME"] == "2026-01-02T03:04:05.000000Z"
    assert data["metadata"]["STEP_SIZE"] == pytest.approx(0.2)
    # raw values keep only the present values, stamped in unix seconds from the point's start
    assert [r["val"] for r in data["raw_values"][SERIES_PING]] == pytest.approx([40.0, 43.0])
    assert data["raw_values"][SERIES_PING][1]["t"] == pytest.approx(1767323045.2)


def test_export_flent_writes_one_file_per_point_and_link_from_the_records(fake_run: str, tmp_path: Path) -> None:
    out = tmp_path / "flent"
    result = _invoke("export", fake_run, "--flent", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)["files"]
    assert written and all(p.endswith(".flent.gz") for p in written)
    samples = [r for r in _records(fake_run) if r["kind"] == "link_sample"]
    keys = {(r["point_id"], r["link"]) for r in samples}
    assert len(written) == len(keys)
    checked = 0
    for path, rows in written.items():
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
        assert set(data) >= {"version", "metadata", "x_values", "results", "raw_values"}
        assert rows == len(data["x_values"])
        pid = data["metadata"]["TEST_PARAMETERS"]["corridor_point_id"]
        mine = sorted((r for r in samples if r["point_id"] == pid), key=lambda r: r["t_s"])
        assert data["x_values"] == [r["t_s"] for r in mine]
        for name, values in data["results"].items():
            assert len(values) == len(data["x_values"]), name
        b = [r["a_to_b.tx_bytes"] for r in mine]
        t = [r["t_s"] for r in mine]
        expected = [None] + [(b[i] - b[i - 1]) * 8 / 1e6 / (t[i] - t[i - 1]) for i in range(1, len(b))]
        assert data["results"][SERIES_UP] == pytest.approx(expected)
        checked += 1
    assert checked == len(keys)


def test_export_without_a_format_still_writes_csv(fake_run: str, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    result = _invoke("export", fake_run, "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)["files"]
    assert any(p.endswith("points.csv") for p in written)
    assert not any(p.endswith(".flent.gz") for p in written)


def test_export_flent_without_link_samples_exits_2_and_says_why(fake_run: str, tmp_path: Path) -> None:
    path = os.path.join(fake_run, "records.jsonl")
    kept = [r for r in _records(fake_run) if r["kind"] != "link_sample"]
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in kept)
    result = CliRunner().invoke(cli, ["export", fake_run, "--flent", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "no link_sample records" in result.output


def test_flent_opens_the_export_and_renders_a_plot(fake_run: str, tmp_path: Path) -> None:
    flent = _flent_exe()
    if flent is None:
        pytest.skip("flent is not installed (pip install flent, or Debian's flent package)")
    result = _invoke("export", fake_run, "--flent", "-o", str(tmp_path / "flent"), "--json")
    assert result.exit_code == 0, result.output
    data_file = sorted(json.loads(result.output)["files"])[0]
    png = tmp_path / "totals.png"
    done = subprocess.run([flent, "-i", data_file, "-p", "totals", "-o", str(png)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MPLBACKEND": "Agg"}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert png.exists() and png.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
