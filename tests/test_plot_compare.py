"""``corridor plot RUN1 RUN2``, and how every figure is laid out: legends off the data, links per direction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from matplotlib.transforms import Bbox
from test_experiment_fakes import CALLS, FakeInferenceKind, FakeTrainingKind, run_fake, use_fakes  # noqa: F401

from corridor.cli import cli
from corridor.results import plots
from corridor.results.plots import FigureData, build_figures, compare_runs, heatmap_key, run_labels
from corridor.results.rundir import read_run
from corridor.workloads import registry, runner

pytestmark = pytest.mark.usefixtures("use_fakes")

COMPARABLE = {"training-vs-rtt", "inference-vs-distance", "cdf-ttft-chat", "cdf-ttft-chat-with-dp",
              "link-remote-city"}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.KINDS, "training", FakeTrainingKind())
        patch.setitem(registry.KINDS, "inference", FakeInferenceKind())
        patch.setattr(runner, "LINK_SAMPLE_INTERVAL_S", 0.01)
        CALLS.update(count=0, interrupt_after=None, log=[])
        root = tmp_path_factory.mktemp("compare")
        return run_fake(root, "monday"), run_fake(root, "tuesday")


@pytest.fixture(scope="module")
def figures(two_runs: tuple[str, str]) -> dict[str, FigureData]:
    return {f.name: f for f in build_figures(read_run(two_runs[0]))}


def _overlaps(a: Bbox, b: Bbox) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legends(data: FigureData) -> list[Any]:
    return [ax.get_legend() for ax in data.figure.axes if ax.get_legend() is not None] + list(data.figure.legends)


def test_two_runs_overlay_into_one_pdf(two_runs: tuple[str, str], tmp_path: Path) -> None:
    out = tmp_path / "both.pdf"
    result = CliRunner().invoke(cli, ["plot", *two_runs, "-p", "training-vs-rtt", "-p", "cdf-ttft-chat",
                                      "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["files"] == {"training-vs-rtt": [str(out)], "cdf-ttft-chat": [str(out)]}
    assert out.read_bytes().startswith(b"%PDF")
    assert out.read_bytes().count(b"/Type /Page\n") + out.read_bytes().count(b"/Type /Page ") >= 2


def test_two_runs_into_png_folder(two_runs: tuple[str, str], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["plot", *two_runs, "-o", str(tmp_path / "figs"), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)["files"]
    assert set(written) == COMPARABLE  # the heatmap and the model plot belong to one run each
    for paths in written.values():
        assert Path(paths[0]).read_bytes()[:4] == b"\x89PNG"


def test_comparison_series_come_from_both_runs(two_runs: tuple[str, str]) -> None:
    labels = run_labels(list(two_runs))
    assert labels == ["monday", "tuesday"]
    per_run = [build_figures(read_run(path)) for path in two_runs]
    compared = {f.name: f for f in compare_runs(list(zip(labels, per_run, strict=True)))}
    assert set(compared) == COMPARABLE
    for name, data in compared.items():
        for label, figures in zip(labels, per_run, strict=True):
            source = next(f for f in figures if f.name == name)
            ours = {k.split(": ", 1)[1]: xy for k, xy in data.series.items() if k.startswith(f"{label}: ")}
            assert set(ours) == set(source.series), name
            for key, xy in source.series.items():
                assert ours[key]["y"] == pytest.approx(xy["y"], nan_ok=True)
        texts = [t.get_text() for legend in _legends(data) for t in legend.get_texts()]
        assert any(t.startswith("monday: ") for t in texts) and any(t.startswith("tuesday: ") for t in texts)


def test_same_folder_names_are_told_apart_by_path() -> None:
    assert run_labels(["a/run", "b/run", "c/other"]) == ["a/run", "b/run", "other"]


def test_every_legend_lies_outside_every_axes(figures: dict[str, FigureData], two_runs: tuple[str, str]) -> None:
    compared = compare_runs([(label, build_figures(read_run(path)))
                             for label, path in zip(run_labels(list(two_runs)), two_runs, strict=True)])
    checked = 0
    for data in [*figures.values(), *compared]:
        data.figure.draw_without_rendering()
        for legend in _legends(data):
            box = legend.get_window_extent()
            for ax in data.figure.axes:
                assert not _overlaps(box, ax.get_window_extent()), f"{data.name}: legend covers an axes"
            checked += 1
    assert checked >= len(figures) - 1 + len(compared)  # every figure but the heatmap has a legend


def test_link_figure_has_a_panel_per_direction_with_delay_in_ms(figures: dict[str, FigureData],
                                                                two_runs: tuple[str, str]) -> None:
    data = figures["link-remote-city"]
    delay_axes = [ax for ax in data.figure.axes if ax.get_ylabel() == "queueing delay (ms)"]
    rate_axes = [ax for ax in data.figure.axes if ax.get_ylabel() == "throughput (Mbit/s)"]
    assert len(delay_axes) == 2 and len(rate_axes) == 2  # the fakes sample a_to_b and b_to_a
    titles = sorted(ax.get_title() for ax in rate_axes)
    assert all("\u2192" in t and "_" not in t for t in titles) and titles[0] != titles[1]
    # queueing delay = backlog bytes x 8 / the link's rate, in ms
    run = read_run(two_runs[0])
    rate = next(lk["rate_mbps"] for m in run.points.values() for lk in m["plan"]["wan_links"]
                if lk["name"] == "remote-city")
    key = next(k for k in data.series if k.endswith("a_to_b.queueing delay"))
    pid = key.split(" ")[0]
    backlog = [float(r["a_to_b.backlog_bytes"]) for r in run.records
               if r.get("kind") == "link_sample" and r.get("point_id") == pid and r.get("link") == "remote-city"]
    assert data.series[key]["y"] == pytest.approx([b * 8 / (rate * 1e6) * 1e3 for b in backlog])
    assert any(y > 0 for k, xy in data.series.items() if k.endswith("queueing delay") for y in xy["y"])
    legend_texts = [t.get_text() for legend in _legends(data) for t in legend.get_texts()]
    assert legend_texts and not any("tx_bytes" in t or "backlog" in t for t in legend_texts)


def test_cdf_has_a_log_tail_view(figures: dict[str, FigureData]) -> None:
    data = figures["cdf-ttft-chat"]
    cdf_ax, tail_ax = data.figure.axes
    assert tail_ax.get_yscale() == "log" and cdf_ax.get_yscale() == "linear"
    for line, xy in zip(tail_ax.lines, data.series.values(), strict=False):
        n = len(xy["x"])
        assert list(line.get_ydata()) == pytest.approx([(n - i) / n for i in range(n)])


def test_ttft_percentiles_carry_bootstrap_bars(figures: dict[str, FigureData], two_runs: tuple[str, str]) -> None:
    from corridor.stats import bootstrap

    data = figures["inference-vs-distance"]
    xy = data.series["chat ttft"]
    assert len(xy["err_low"]) == len(xy["y"]) and any(e > 0 for e in xy["err_high"])
    assert data.figure.axes[0].containers, "TTFT drawn without error bars"
    run = read_run(two_runs[0])
    local = [pid for pid, m in run.points.items() if m["group"] == "chat" and m["placement"] == "local"]
    values = plots.ttft_values_ms(plots._records(run, local, "chat", "request"))
    est = bootstrap(values, q=99.0)
    assert xy["y"][0] + xy["err_high"][0] == pytest.approx(est.high)


def test_heatmap_caption_matches_its_shading(figures: dict[str, FigureData]) -> None:
    caption = figures["verdict-heatmap"].caption
    assert "white, dotted: no data" in caption
    assert "white tolerates" not in caption
    assert heatmap_key() in caption
    for verdict in plots.VERDICT_SHADE:
        assert verdict in caption


def test_compared_cdfs_mark_the_slo(two_runs: tuple[str, str]) -> None:
    labels = run_labels(list(two_runs))
    per_run = [build_figures(read_run(path)) for path in two_runs]
    source = next(f for f in per_run[0] if f.name == "cdf-ttft-chat")
    assert source.slo is not None
    compared = next(f for f in compare_runs(list(zip(labels, per_run, strict=True))) if f.name == "cdf-ttft-chat")
    assert compared.slo == source.slo
    for ax in compared.figure.axes[:2]:  # the CDF and its tail both carry the SLO line
        assert any(list(line.get_xdata()) == [source.slo, source.slo] for line in ax.lines)
    assert f"SLO {source.slo:g} ms" in [t.get_text() for t in compared.figure.axes[0].texts]
