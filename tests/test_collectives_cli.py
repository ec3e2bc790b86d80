"""``corridor bench collective``: size parsing, the table and JSON, on loopback (no root)."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from corridor.cli import cli
from corridor.cli.bench_collective import parse_sizes


@pytest.mark.parametrize(
    ("text", "sizes"),
    [
        ("64KiB..256KiB", [65536, 131072, 262144]),
        ("1MB,4MB", [1_000_000, 4_000_000]),
        ("1MiB..1MiB", [1 << 20]),
    ],
)
def test_parse_sizes(text, sizes):
    assert parse_sizes(text) == sizes


@pytest.mark.parametrize("text", ["", "4MB..1MB", "0B..1MB", "12 furlongs", "1MB,-2MB", "10"])
def test_parse_sizes_rejects(text):
    with pytest.raises(click.BadParameter):
        parse_sizes(text)


def test_local_table_has_nccl_tests_columns():
    result = CliRunner().invoke(cli, ["bench", "collective", "--local", "--sizes", "64KiB,128KiB", "--iters", "1",
                                      "--min-time", "0s", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    header = next(line for line in lines if "busbw" in line)
    for column in ("size", "count", "time_ms", "algbw_Gbps", "busbw_Gbps", "pred_ms", "err_%"):
        assert column in header
    assert any(line.split()[1] == "16384" for line in lines if line.strip().startswith("65.5KB"))


def test_local_json_records():
    result = CliRunner().invoke(cli, ["bench", "collective", "--local", "--sizes", "256KiB", "--iters", "1",
                                      "--min-time", "0s", "--algorithm", "hierarchical", "--json"])
    assert result.exit_code == 0, result.output
    recs = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert len(recs) == 1
    rec = recs[0]
    assert rec["kind"] == "collective" and rec["algorithm"] == "hierarchical" and rec["n_ranks"] == 4
    assert rec["busbw_gbps"] == pytest.approx(rec["algbw_gbps"] * 1.5)
    assert rec["wan_bytes"] == rec["predicted_wan_bytes"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ranks", "nosuch,rem-gpu1"], "no host 'nosuch'"),
        (["--ranks", "rem-gpu1"], "at least two ranks"),
        (["--sizes", "5 furlongs"], "furlongs"),
        (["--socket-buffer", "lots"], "socket-buffer"),
        (["--algorithm", "halving_doubling", "--ranks", "rem-gpu1,rem-gpu2,cty-gpu1"], "power-of-two"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_sentence(args, message):
    result = CliRunner().invoke(cli, ["bench", "collective", "--local", *args])
    assert result.exit_code != 0
    assert message in result.output
