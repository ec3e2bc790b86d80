"""What the command line prints: tables that fit 100 columns, strict versioned JSON, one option vocabulary.

Every command here needs no root: predict, topo list/show, trace info,
validate, verdicts/report on a fake run, and the table printers of check and
the benchmarks fed with made-up results.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from test_experiment_fakes import run_fake, use_fakes  # noqa: F401

from corridor.cli import cli, hoist_verbose
from corridor.cli.bench_collective import table_lines
from corridor.cli.bench_link import report_lines
from corridor.cli.jsonout import json_text
from corridor.cli.system import check_table_lines
from corridor.cli.table import Column, fit_lines, render
from corridor.spec.topospec import list_presets

WIDTH = 100

AZURE = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
         "2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n")


@pytest.fixture
def azure_trace(tmp_path: Path) -> str:
    path = tmp_path / "azure.csv"
    path.write_text(AZURE)
    return str(path)


@pytest.fixture
def fake_run(tmp_path: Path, use_fakes: None) -> str:  # noqa: F811
    return run_fake(tmp_path)


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _run(args: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _too_wide(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > WIDTH]


# -- tables fit 100 columns ----------------------------------------------------------------------------


def _table_commands() -> list[list[str]]:
    commands = [["predict"], ["predict", "experiments/distance-sweep.yaml"], ["topo", "list"], ["validate"]]
    commands += [["topo", "show", name] for name in list_presets()]
    return commands


@pytest.mark.parametrize("args", _table_commands(), ids=" ".join)
def test_every_table_fits_100_columns(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    output = _run(args, monkeypatch)
    assert len(output.splitlines()) > 3
    assert _too_wide(output) == []


def test_wide_shows_what_the_default_leaves_out(monkeypatch: pytest.MonkeyPatch) -> None:
    narrow = _run(["predict"], monkeypatch)
    wide = _run(["predict", "--wide"], monkeypatch)
    assert "--wide shows them" in narrow
    assert "local model" not in narrow.splitlines()[2] and "local model" in wide.splitlines()[2]
    assert max(len(line) for line in wide.splitlines()) > WIDTH  # the whole table, unwrapped


def test_trace_info_fits(azure_trace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    output = _run(["trace", "info", azure_trace], monkeypatch)
    assert "requests      2" in output and _too_wide(output) == []


def test_verdicts_fit(fake_run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _too_wide(_run(["verdicts", fake_run], monkeypatch)) == []


def test_benchmark_and_check_printers_fit() -> None:
    long_detail = "median of 200 pings, 2 % tolerance plus the allowance, " * 3
    results = [type("R", (), {"link": "urumqi-shanghai-protection-path", "metric": "rtt_ms", "expected": 46.2,
                              "measured": 46.9, "error_pct": 1.5, "ok": True, "unit": "ms",
                              "detail": long_detail})()]
    lines = check_table_lines(results, width=WIDTH)
    assert all(len(line) <= WIDTH for line in lines) and "46.2" in lines[1]
    record = {"size_bytes": 268435456, "time_s": 12.3456, "algbw_gbps": 0.174, "busbw_gbps": 0.261,
              "predicted_time_s": 12.0, "error_pct": 2.9, "wan_bytes": 402653184}
    assert all(len(line) <= WIDTH for line in table_lines([record] * 3))
    bench = {"rate_mbps": 2000.0, "delay_ms": 25.0, "duration_s": 10.0, "congestion": "cubic", "bare_mbps": 9000.0,
             "shaped_mbps": 1900.0, "shaped_of_configured": 0.95, "ratio": 0.21, "rtt_median_ms": 50.2,
             "rtt_configured_ms": 50.0, "rtt_error_pct": 0.4, "jitter_p50_ms": 0.01, "jitter_p99_ms": 0.2,
             "delayline_late_us_p99": 40.0, "queue_delay_measured_ms": 25.1, "queue_delay_expected_ms": 25.0,
             "queue_bytes": 6250000, "queue_rate_mbps": 2000.0, "queue_delay_error_pct": 0.4}
    assert any(len(line) > WIDTH for line in report_lines(bench))  # the raw lines are long ...
    assert all(len(line) <= WIDTH for line in fit_lines(report_lines(bench), width=WIDTH))  # ... fitted they fit


@pytest.mark.parametrize("width", [40, 60, 100])
def test_render_wraps_and_drops_to_fit(width: int) -> None:
    columns = [Column("name"), Column("note", wrap=True, min_width=10), Column("extra", drop_order=1)]
    rows = [["a", "word " * 40, "x" * 30], ["bb", "short", "y"]]
    lines = render(columns, rows, width=width)
    assert all(len(line) <= width for line in lines)
    assert " ".join(" ".join(lines).split()).count("word") == 40  # wrapped, not cut
    dropped = "extra" not in lines[0]
    assert dropped == (width < 60)
    assert render(columns, rows, width=width, wide=True)[0].split() == ["name", "note", "extra"]


# -- JSON: strict and versioned -------------------------------------------------------------------------


def _check_json(args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
    doc = _strict_json(result.output)
    assert isinstance(doc, dict) and next(iter(doc)) == "format_version", args
    assert doc["format_version"] >= 1
    return doc


def test_every_json_output_is_strict_and_versioned(azure_trace: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    for args in (["predict", "--json"], ["topo", "list", "--json"], ["topo", "show", "two-site", "--json"],
                 ["validate", "--json"], ["trace", "info", azure_trace, "--json"],
                 ["trace", "info", str(empty), "--json"]):
        _check_json(args)


def test_analysis_json_is_strict_and_versioned(fake_run: str, tmp_path: Path) -> None:
    assert _check_json(["verdicts", fake_run, "--json"])["verdicts"]
    assert _check_json(["report", fake_run, "-o", str(tmp_path / "rep"), "--json"])["html"].endswith(".html")


def test_an_empty_trace_window_prints_null_not_nan(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    result = CliRunner().invoke(cli, ["trace", "info", str(empty), "--json"])
    assert "NaN" not in result.output
    doc = _strict_json(result.output)
    assert doc["requests"] == 0 and doc["prompt_tokens"]["p50"] is None


def test_json_text_turns_non_finite_numbers_into_null() -> None:
    doc = _strict_json(json_text({"a_ms": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}}))
    assert doc == {"format_version": 1, "a_ms": None, "b": [None, 1.5], "c": {"d": None}}


def test_bench_collective_json_lines_each_carry_the_version() -> None:
    result = CliRunner().invoke(cli, ["bench", "collective", "--local", "--sizes", "64KiB,128KiB", "--iters", "1",
                                      "--min-time", "0s", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    assert len(lines) == 2
    assert all(_strict_json(line)["format_version"] == 1 for line in lines)


# -- one option vocabulary --------------------------------------------------------------------------------


def _walk(group: click.Group, prefix: str = "corridor") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += _walk(command, path)
    return found


COMMANDS = _walk(cli)
_DURATION_NAMES = {"duration", "timeout", "min_time", "gap", "start", "window", "budget", "rtt_allowance"}


def test_the_walk_sees_every_command() -> None:
    names = {path for path, _ in COMMANDS}
    assert {"corridor run", "corridor topo map", "corridor bench link", "corridor trace convert",
            "corridor schema"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_option_vocabulary(path: str, command: click.Command) -> None:
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        spellings = set(param.opts) | set(param.secondary_opts)
        assert "--output" not in spellings, f"{path}: write -o/--out, not --output"
        assert "--congestion" not in spellings, f"{path}: write --cc for congestion control"
        if "--out" in spellings or "-o" in spellings:
            assert {"-o", "--out"} <= spellings, f"{path}: an output path is -o/--out, got {param.opts}"
        if isinstance(param.type, click.Path) and not param.type.exists:  # a path to write, not one to read
            assert "--out" in spellings, f"{path}: an output path option {param.opts} should be -o/--out"
        name = (param.name or "").removesuffix("_s").removesuffix("_ms").removesuffix("_text")
        if name in _DURATION_NAMES:
            # the unit is in the value (a Duration or a string read by corridor.spec.units), never a bare float
            assert not isinstance(param.type, (click.types.FloatParamType, click.types.IntParamType)), (
                f"{path}: {param.opts} is a duration; parse it with corridor.spec.units (e.g. 6s)")
        assert "-v" not in spellings or path == "corridor", f"{path}: -v is the global --verbose"


@pytest.mark.parametrize(("args", "message"), [
    (["trace", "convert", "x.pcap", "-o", "y.jsonl", "--gap", "2"], "no unit"),
    (["bench", "link", "--duration", "10"], "no unit"),
    (["bench", "link", "--duration", "500ms"], "least allowed"),
])
def test_durations_need_their_unit(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize(("args", "expected"), [
    (["topo", "list", "-v"], ["-v", "topo", "list"]),
    (["-vv", "predict", "--json"], ["-vv", "predict", "--json"]),
    (["predict", "x.yaml", "--verbose"], ["--verbose", "predict", "x.yaml"]),
    (["exec", "h1", "--", "ping", "-v"], ["exec", "h1", "--", "ping", "-v"]),
    (["exec", "h1", "ls", "-v"], ["exec", "h1", "ls", "-v"]),
])
def test_verbose_after_the_subcommand(args: list[str], expected: list[str]) -> None:
    assert hoist_verbose(args) == expected


def test_verbose_after_the_subcommand_turns_on_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    calls: list[int] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: calls.append(kw["level"]))
    assert CliRunner().invoke(cli, ["topo", "list", "-vv"]).exit_code == 0
    assert calls == [logging.DEBUG]


# -- tab completion -------------------------------------------------------------------------------------


def _completions(args: list[str], incomplete: str) -> list[tuple[str, str]]:
    from click.shell_completion import ShellComplete

    complete = ShellComplete(cli, {}, "corridor", "_CORRIDOR_COMPLETE")
    return [(item.value, item.type) for item in complete.get_completions(args, incomplete)]


def test_topologies_and_experiments_tab_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ("two-site", "plain") in _completions(["topo", "show"], "two")
    assert ("xinjiang-coastal", "plain") not in _completions(["topo", "show"], "two")
    assert ("quickstart", "plain") in _completions(["predict"], "q")
    assert ("distance-sweep", "plain") in _completions(["run"], "")
    assert ("my.yaml", "file") in _completions(["check"], "my.yaml")  # a path: the shell completes files
    (tmp_path / "mine.yaml").write_text((Path(__file__).parent.parent / "topologies" / "two-site.yaml").read_text())
    monkeypatch.setenv("CORRIDOR_TOPOLOGIES", str(tmp_path))
    assert ("mine", "plain") in _completions(["up"], "mi")
