"""``corridor validate``: one table of published figures beside the model's, and strict JSON."""

from __future__ import annotations

import json

from click.testing import CliRunner

from corridor.cli import cli


def test_validate_table() -> None:
    result = CliRunner().invoke(cli, ["validate", "--wide"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "CAICT" in out and "latency optical mean" in out and "9.7 ms" in out
    assert "Table 4 100B streaming-overlap-fp4" in out and "within one grid step" in out
    assert "SLO mlperf-llama2-70b-interactive" in out and "TTFT 450 ms, TPOT 40 ms at p99" in out


def test_validate_json_is_strict_and_meets_the_targets() -> None:
    result = CliRunner().invoke(cli, ["validate", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert doc["format_version"] == 1
    latency = [r for r in doc["rows"] if r["case"].startswith("latency ")]
    assert len(latency) == 6 and all(abs(r["error"]) <= 0.10 for r in latency)
    summary = doc["streaming_diloco"]["summary"]
    assert summary["cells"] == 75 and summary["share_one_step"] >= 0.8 and summary["within_two_steps"] == 75
    assert {r["case"] for r in doc["rows"] if r["case"].startswith("SLO ")} >= {"SLO mlperf-llama31-405b-server"}


def test_emulate_without_root_says_so_and_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    out = tmp_path / "v"
    result = CliRunner().invoke(cli, ["validate", "--emulate", "-o", str(out)])
    assert result.exit_code == 3, result.output
    assert "needs root" in result.output and "sudo" in result.output and "--emulated" in result.output
    assert not out.exists()


def test_out_without_emulate_is_refused() -> None:
    result = CliRunner().invoke(cli, ["validate", "-o", "somewhere"])
    assert result.exit_code == 2 and "add --emulate" in result.output


def test_emulate_finds_the_three_kinds_of_cell_and_the_twin() -> None:
    from corridor.cli.validate import validation_experiments
    from corridor.spec.experiment import load_experiment

    types = sorted(w.type for f in validation_experiments() for w in load_experiment(f).workloads)
    assert types == ["allreduce", "diloco", "streaming-diloco", "streaming-diloco"]
