"""Figures: every one is produced from a copied run directory, and the numbers drawn are the records'."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_experiment_fakes import run_fake, use_fakes  # noqa: F401

from corridor.results.plots import build_figures, render_run
from corridor.results.rundir import read_run
from corridor.results.verdict import compute_verdicts
from corridor.workloads import runner

pytestmark = pytest.mark.usefixtures("use_fakes")

EXPECTED = {"verdict-heatmap", "training-vs-rtt", "inference-vs-distance", "cdf-ttft-chat", "cdf-ttft-chat-with-dp",
            "link-remote-city", "measured-vs-model"}


@pytest.fixture
def copied_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(runner, "LINK_SAMPLE_INTERVAL_S", 0.01)
    original = run_fake(tmp_path, "original")
    copy = str(tmp_path / "elsewhere" / "copied")
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # nothing may refer back to where the run was made
    return copy


def _raw_records(run_dir: str) -> list[dict[str, Any]]:
    with open(os.path.join(run_dir, "records.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _digest(run_dir: str) -> dict[str, str]:
    out = {}
    for name in ("manifest.json", "records.jsonl", "summary.json"):
        with open(os.path.join(run_dir, name), "rb") as handle:
            out[name] = hashlib.sha256(handle.read()).hexdigest()
    return out


def test_every_figure_is_drawn_from_a_copied_run_without_mininet(copied_run: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mininet", None)  # importing it would now fail
    before = _digest(copied_run)
    out = str(tmp_path / "figs")
    written = render_run(read_run(copied_run), out)
    assert set(written) == EXPECTED
    for paths in written.values():
        assert sorted(os.path.splitext(p)[1] for p in paths) == [".png", ".svg"]
        for path in paths:
            assert os.path.getsize(path) > 2000
    with open(written["verdict-heatmap"][0], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert _digest(copied_run) == before  # plotting never writes into the run's own files


def test_cdf_lines_are_the_recorded_ttfts(copied_run: str) -> None:
    raw = _raw_records(copied_run)
    points = {r["point_id"]: r for r in raw if r["kind"] == "point"}
    figures = {f.name: f for f in build_figures(read_run(copied_run))}
    cdf = figures["cdf-ttft-chat"]
    assert len(cdf.series) == 3  # local and two distances
    for label, xy in cdf.series.items():
        placement = label.split(" (")[0]
        km = label.split("(")[1].split(" km")[0] if "km" in label else None
        ids = [pid for pid, p in points.items() if p["group"] == "chat" and p["placement"] == placement
               and (km is None or f"{p['plan']['max_path_km']:,.0f}" == km)]
        expected = sorted(r["ttft_s"] * 1e3 for r in raw if r.get("point_id") in ids and r["kind"] == "request")
        assert xy["x"] == pytest.approx(expected)
        assert xy["y"][-1] == 1.0 and len(xy["y"]) == len(expected)
    drawn = cdf.figure.axes[0].lines
    assert any(np.allclose(line.get_xdata(), xy["x"]) for line in drawn for xy in cdf.series.values())


def test_training_line_is_the_median_slowest_rank_step_per_rtt(copied_run: str) -> None:
    raw = _raw_records(copied_run)
    points = {r["point_id"]: r for r in raw if r["kind"] == "point"}
    data = {f.name: f for f in build_figures(read_run(copied_run))}["training-vs-rtt"]
    expected_x, expected_y = [], []
    for pid, point in points.items():
        if point["group"] != "dp":
            continue
        steps: dict[int, float] = {}
        for r in raw:
            if r.get("point_id") == pid and r["kind"] == "train_step":
                steps[r["step"]] = max(steps.get(r["step"], 0.0), r["step_time_s"])
        kept = [steps[s] for s in sorted(steps)[1:]]
        expected_x.append(point["plan"]["max_rtt_ms"] if point["placement"] != "local" else 0.0)
        expected_y.append(float(np.median(kept)) * 1e3)  # the median the verdict compares
    order = np.argsort(expected_x)
    assert data.series["dp step"]["x"] == pytest.approx([expected_x[i] for i in order])
    assert data.series["dp step"]["y"] == pytest.approx([expected_y[i] for i in order])
    line = data.figure.axes[0].lines[0]
    assert np.allclose(line.get_ydata(), data.series["dp step"]["y"])


def test_link_throughput_comes_from_the_byte_counters(copied_run: str) -> None:
    raw = _raw_records(copied_run)
    data = {f.name: f for f in build_figures(read_run(copied_run))}["link-remote-city"]
    key = next(k for k in data.series if k.endswith("a_to_b.tx_bytes rate"))
    pid = key.split(" ")[0]
    samples = [r for r in raw if r["kind"] == "link_sample" and r["point_id"] == pid]
    t = [s["t_s"] for s in samples]
    b = [s["a_to_b.tx_bytes"] for s in samples]
    expected = [(b[i + 1] - b[i]) * 8 / 1e6 / (t[i + 1] - t[i]) for i in range(len(b) - 1)]
    assert data.series[key]["y"] == pytest.approx(expected)


def test_heatmap_and_model_plot_follow_the_verdicts(copied_run: str) -> None:
    run = read_run(copied_run)
    verdicts = compute_verdicts(run)
    figures = {f.name: f for f in build_figures(run, verdicts)}
    cells = sum(len(xy["x"]) for xy in figures["verdict-heatmap"].series.values())
    assert cells == len(verdicts)
    assert len(figures["verdict-heatmap"].series["does not tolerate"]["x"]) == sum(
        v.verdict == "does not tolerate" for v in verdicts)
    model = figures["measured-vs-model"].series["median step time"]
    measured = sorted(v.measured or 0.0 for v in verdicts if v.metric == "median step time")
    assert sorted(model["y"]) == pytest.approx(measured)


def test_each_wan_rate_gets_its_own_line_starting_at_the_local_baseline(tmp_path: Path) -> None:
    from test_experiment_fakes import FAKE_EXPERIMENT

    swept = "  distance: [1000km, 3268km]\n  rate: [1Gbit, 100Mbit]"
    text = FAKE_EXPERIMENT.replace("  distance: [1000km, 3268km]", swept)
    run = read_run(run_fake(tmp_path, text=text))
    data = {f.name: f for f in build_figures(run)}["training-vs-rtt"]
    lines = {k: v for k, v in data.series.items() if k.startswith("dp ") and k.endswith(" step")}
    assert sorted(lines) == ["dp 100Mbit step", "dp 1Gbit step"]
    for xy in lines.values():
        assert xy["x"] == pytest.approx([0.0, 9.8, 32.026], abs=0.01)


def test_model_plot_spreads_labels_over_decades_without_overlap() -> None:
    """Step times of seconds beside TTFTs of milliseconds: log axes, and no label covers another."""
    from test_map_labels import _overlapping

    from corridor.results.plots import measured_vs_model
    from corridor.results.verdict import Verdict

    def row(workload: str, placement: str, metric: str, model: float, measured: float) -> Verdict:
        return Verdict(workload=workload, group=workload, kind="training", type="dp", placement=placement,
                       corridor="", sweep={}, rtt_ms=None, path_km=None, metric=metric, unit="ms",
                       baseline_label="local", baseline=None, measured=measured, slo=None, verdict="tolerates",
                       reason="", model=model)

    rows = [row(f"w{i}", place, "TTFT p99", 20.0 + i + j, 21.0 + i) for i in range(4)
            for j, place in enumerate(("local", "remote"))]
    rows += [row("dp", place, "median step time", 4000.0, 4100.0) for place in ("local", "remote")]
    data = measured_vs_model(rows)
    assert data is not None
    ax = data.figure.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    labels = [child for child in ax.texts if child.get_text().startswith(("w", "dp"))]
    assert len(labels) == 9  # the two dp rows on one spot share a label
    assert "dp @ local, dp @ remote" in [label.get_text() for label in labels]
    data.figure.canvas.draw()
    assert _overlapping(labels) == []
