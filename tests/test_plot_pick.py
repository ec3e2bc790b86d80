"""``corridor plot RUN -p NAME -o FILE.pdf|svg|png``: chosen figures, format from the file's extension."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_experiment_fakes import CALLS, FakeInferenceKind, FakeTrainingKind, run_fake, use_fakes  # noqa: F401

from corridor.cli import cli
from corridor.results.plots import build_figures
from corridor.results.rundir import read_run
from corridor.workloads import registry, runner

pytestmark = pytest.mark.usefixtures("use_fakes")


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    # one fake run for the module; the fakes are registered only while it is made
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.KINDS, "training", FakeTrainingKind())
        patch.setitem(registry.KINDS, "inference", FakeInferenceKind())
        patch.setattr(runner, "LINK_SAMPLE_INTERVAL_S", 0.01)
        CALLS.update(count=0, interrupt_after=None, log=[])
        return run_fake(tmp_path_factory.mktemp("plotpick"), "run")


def _plot(*args: str) -> Any:
    return CliRunner().invoke(cli, ["plot", *args])


def test_one_named_figure_as_pdf(fake_run: str, tmp_path: Path) -> None:
    out = tmp_path / "fig" / "x.pdf"
    result = _plot(fake_run, "-p", "verdict-heatmap", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["files"] == {"verdict-heatmap": [str(out)]}
    assert out.read_bytes().startswith(b"%PDF")


def test_two_named_figures_as_png_get_one_file_each(fake_run: str, tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    result = _plot(fake_run, "-p", "verdict-heatmap", "-p", "link-remote-city", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)["files"]
    assert list(written) == ["verdict-heatmap", "link-remote-city"]
    for paths in written.values():
        assert Path(paths[0]).read_bytes()[:4] == b"\x89PNG"
    assert not out.exists()


def test_svg_from_the_extension(fake_run: str, tmp_path: Path) -> None:
    out = tmp_path / "x.SVG"
    result = _plot(fake_run, "-p", "link-remote-city", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert b"<svg" in out.read_bytes()[:2000]


def test_unknown_figure_name_lists_the_run_s_figures(fake_run: str, tmp_path: Path) -> None:
    result = _plot(fake_run, "-p", "no-such-figure", "-o", str(tmp_path / "x.pdf"))
    assert result.exit_code == 2
    assert "no-such-figure" in result.output
    for data in build_figures(read_run(fake_run)):
        assert data.name in result.output
    assert not (tmp_path / "x.pdf").exists()


def test_a_folder_still_gets_png_and_svg_of_the_chosen_figure(fake_run: str, tmp_path: Path) -> None:
    result = _plot(fake_run, "-p", "verdict-heatmap", "-o", str(tmp_path / "figs"), "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)["files"]
    assert list(written) == ["verdict-heatmap"]
    assert sorted(Path(p).suffix for p in written["verdict-heatmap"]) == [".png", ".svg"]
