"""``corridor run/verdicts/plot/report/export/predict`` through click's CliRunner, on the fake workloads."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_experiment_fakes import (  # noqa: F401
    CALLS,
    FAKE_EXPERIMENT,
    fake_network_factory,
    fake_plan_builder,
    use_fakes,
    write_experiment,
)

from corridor.cli import cli
from corridor.workloads import runner

pytestmark = pytest.mark.usefixtures("use_fakes")


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setattr(runner, "plan_for", fake_plan_builder)
    monkeypatch.setattr(runner, "default_network_factory", fake_network_factory)
    return write_experiment(tmp_path)


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def run_dir(fake_env: str, tmp_path: Path) -> str:
    out = str(tmp_path / "run")
    result = _invoke("run", fake_env, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_run_prints_the_verdict_table_and_saves_it(run_dir: str) -> None:
    derived = os.path.join(run_dir, "derived")
    assert sorted(os.listdir(derived)) == ["verdicts.csv", "verdicts.json", "verdicts.md"]
    result = _invoke("verdicts", run_dir)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["workload", "placement", "verdict", "n", "metric", "measured", "[95", "%", "CI]"]
    assert "does not tolerate" in result.output and "chat with dp" in result.output
    wide = _invoke("verdicts", run_dir, "--wide")
    assert wide.output.splitlines()[0].split() == [
        "workload", "placement", "corridor", "verdict", "n", "metric", "measured", "[95", "%", "CI]", "model",
        "stops", "tolerating", "at", "reason"]


@pytest.mark.parametrize("columns", [80, 100, 120])
def test_the_default_verdict_table_fits_the_terminal(run_dir: str, columns: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    result = _invoke("verdicts", run_dir)
    assert result.exit_code == 0
    assert max(len(line) for line in result.output.splitlines()) <= columns
    assert len(result.output.splitlines()) > 5


def test_run_json_and_progress(fake_env: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", fake_env, "--out", str(tmp_path / "j"), "--json"])
    assert result.exit_code == 0, result.output
    start = result.output.index('{\n  "format_version"')
    rows = json.loads(result.output[start:result.output.rindex("}") + 1])["verdicts"]
    assert {r["verdict"] for r in rows} <= {"tolerates", "marginal", "does not tolerate"}
    assert "[12/12]" in result.output or "[11/12]" in result.output  # progress lines (stderr is mixed in)


def test_run_refuses_to_overwrite_and_resume_skips_everything(run_dir: str, fake_env: str) -> None:
    again = _invoke("run", fake_env, "--out", run_dir)
    assert again.exit_code == 2 and "--resume" in again.output
    before = _invoke("verdicts", run_dir, "--json").output
    CALLS.update(count=0, log=[])
    resumed = _invoke("run", fake_env, "--out", run_dir, "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert CALLS["count"] == 0
    assert _invoke("verdicts", run_dir, "--json").output == before


def test_ctrl_c_keeps_finished_points_and_says_how_to_resume(fake_env: str, tmp_path: Path) -> None:
    CALLS.update(interrupt_after=3)
    out = str(tmp_path / "cut")
    result = CliRunner().invoke(cli, ["run", fake_env, "--out", out])
    assert result.exit_code == 130
    assert "finished points are kept" in result.output and "--resume" in result.output
    CALLS.update(interrupt_after=None)
    assert _invoke("run", fake_env, "--out", out, "--resume").exit_code == 0


def test_plot_report_export(run_dir: str, tmp_path: Path) -> None:
    plotted = _invoke("plot", run_dir, "-o", str(tmp_path / "figs"), "--json")
    assert plotted.exit_code == 0
    assert "verdict-heatmap" in json.loads(plotted.output)["files"]
    reported = _invoke("report", run_dir, "--json")
    assert reported.exit_code == 0
    assert os.path.exists(json.loads(reported.output)["html"])
    exported = _invoke("export", run_dir, "--csv", "--json")
    assert exported.exit_code == 0
    written = json.loads(exported.output)["files"]
    requests = next(p for p in written if p.endswith("records-request.csv"))
    with open(requests) as handle:
        rows = list(csv.DictReader(handle))
    with open(os.path.join(run_dir, "records.jsonl")) as handle:
        recorded = [json.loads(line) for line in handle if '"kind": "request"' in line]
    assert len(rows) == written[requests] == len(recorded)
    assert float(rows[0]["ttft_s"]) == pytest.approx(recorded[0]["ttft_s"])
    assert any(p.endswith("points.csv") for p in written) and any(p.endswith("verdicts.csv") for p in written)


def test_predict_is_labelled_model_only(fake_env: str) -> None:
    result = _invoke("predict", fake_env)
    assert result.exit_code == 0
    assert result.output.startswith("MODEL ONLY")
    as_json = json.loads(_invoke("predict", fake_env, "--json").output)
    assert as_json["model_only"] is True
    assert all(row["model_only"] for row in as_json["rows"])
    dp = [r for r in as_json["rows"] if r["workload"] == "dp"]
    assert [round(r["model_step_time_s"], 4) for r in dp] == [0.1196, 0.1641]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["run", "no-such-experiment"], 2, "no experiment file"),
        (["plot", "/nonexistent/run"], 2, "not a directory"),
        (["report", "/"], 2, "no manifest.json"),
        (["export", "/", "--csv"], 2, "no manifest.json"),
        (["verdicts", "/"], 2, "no manifest.json"),
        (["predict", "no-such-experiment"], 2, "no experiment file"),
    ],
)
def test_user_errors_exit_2_with_a_sentence(args: list[str], code: int, words: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code
    assert words in result.output
    assert "Traceback" not in result.output


def test_a_newer_run_directory_is_refused(run_dir: str) -> None:
    path = os.path.join(run_dir, "manifest.json")
    with open(path) as handle:
        manifest = json.load(handle)
    manifest["format_version"] += 1
    with open(path, "w") as handle:
        json.dump(manifest, handle)
    result = CliRunner().invoke(cli, ["plot", run_dir])
    assert result.exit_code == 2 and "newer than this corridor reads" in result.output


def test_model_only_experiment_refuses_to_run(fake_env: str, tmp_path: Path) -> None:
    path = write_experiment(tmp_path, FAKE_EXPERIMENT + "model_only: true\n", "model.yaml")
    result = CliRunner().invoke(cli, ["run", path, "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "corridor predict" in result.output


def test_a_network_that_fails_to_build_stops_the_run_for_a_later_resume(fake_env: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from corridor.errors import EmulationError

    def broken(plan: Any, *, backend: str, time_scale: float, seed: int) -> Any:
        if plan.wan_links:
            raise EmulationError("building the two-site network failed: no delay line")
        return fake_network_factory(plan, backend=backend, time_scale=time_scale, seed=seed)

    monkeypatch.setattr(runner, "default_network_factory", broken)
    out = str(tmp_path / "broken")
    result = CliRunner().invoke(cli, ["run", fake_env, "--out", out])
    assert result.exit_code == 1
    assert "no delay line" in result.output and "--resume" in result.output
    with open(os.path.join(out, "records.jsonl")) as handle:
        markers = [json.loads(line) for line in handle if '"kind": "point"' in line]
    assert {m["placement"] for m in markers} == {"local"} and all(m["status"] == "ok" for m in markers)
    monkeypatch.setattr(runner, "default_network_factory", fake_network_factory)
    assert _invoke("run", fake_env, "--out", out, "--resume").exit_code == 0
    with open(os.path.join(out, "records.jsonl")) as handle:
        ids = [json.loads(line)["point_id"] for line in handle if '"kind": "point"' in line]
    assert len(ids) == len(set(ids)) == 12
