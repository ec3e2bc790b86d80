"""Units as users write them, end to end: command-line options and experiment files refuse what tc or iperf3
would read differently, and accept the long durations the docs promise."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from corridor.cli import cli
from corridor.errors import SpecError
from corridor.spec.experiment import MAX_TIMEOUT_S, load_experiment

EXPERIMENT = """\
name: units
topology: two-site
placements:
  - name: local
  - name: far
    servers: [remote]
    clients: [city]
    ranks: [remote, city]
workloads:
  - name: dp
    type: allreduce
    params: {steps: 2, compute_time: 10ms, grad_size: 4MB}
    timeout: 90s
  - name: chat
    type: chat
    params: {requests: 4, rate_rps: 10, tpot_ms: 20}
    slo: {ttft: 250ms, tpot: 100ms}
"""


def _experiment(tmp_path: Path, old: str = "", new: str = "") -> str:
    assert old in EXPERIMENT
    path = tmp_path / "units.yaml"
    path.write_text(EXPERIMENT.replace(old, new, 1), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    "args",
    [
        ["check", "two-site", "--rate", "10mbps"],
        ["bench", "link", "--rate", "10mbps"],
        ["bench", "collective", "--rate", "10mbps", "--sizes", "1MB"],
    ],
    ids=["check", "bench-link", "bench-collective"],
)
def test_tc_byte_rate_is_refused_on_the_command_line(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "tc reads mbps as megabytes per second" in result.output
    assert "write 10mbit for 10 megabits per second, or 80mbit for tc's 10mbps" in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bench", "collective", "--sizes", "32Mb"], "write 4MB for 32Mb, or 32MB if you meant megabytes"),
        (["bench", "collective", "--sizes", "1MB", "--socket-buffer", "64Mb"], "write 8MB for 64Mb"),
    ],
    ids=["sizes", "socket-buffer"],
)
def test_bit_sized_size_is_refused_on_the_command_line(args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "in bits" in result.output and words in result.output


def test_the_base_experiment_loads(tmp_path: Path) -> None:
    exp = load_experiment(_experiment(tmp_path))
    assert exp.workload("chat").params.tpot_ms == 20.0
    assert exp.workload("dp").params.grad_bytes == 4_000_000


@pytest.mark.parametrize(("text", "seconds"), [("2h", 7200.0), ("90min", 5400.0), ("24h", 86400.0), ("1s", 1.0)])
def test_long_workload_timeouts_are_accepted(tmp_path: Path, text: str, seconds: float) -> None:
    exp = load_experiment(_experiment(tmp_path, "timeout: 90s", f"timeout: {text}"))
    assert exp.workload("dp").timeout_s == seconds <= MAX_TIMEOUT_S


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ("timeout: 90s", "timeout: 25h", "workloads[0].timeout", r"from 1s to 86400s \(24h\)"),
        ("timeout: 90s", "timeout: 500ms", "workloads[0].timeout", "from 1s to"),
        ("timeout: 90s", "timeout: -1s", "workloads[0].timeout", "must not be negative"),
        ("timeout: 90s", "timeout: 90", "workloads[0].timeout", "has no unit"),
        ("tpot_ms: 20", "tpot_ms: 20s", "tpot_ms", "tpot_ms is already in milliseconds.*tpot_ms: 20000"),
        ("tpot_ms: 20", "tpot_ms: -20", "tpot_ms", "must be positive"),
        ("grad_size: 4MB", "grad_size: 32Mb", "grad_size", "in bits.*write 4MB for 32Mb"),
        ("grad_size: 4MB", "grad_size: -4MB", "grad_size", "must not be negative"),
        ("compute_time: 10ms", "compute_time: -10ms", "compute_time", "must not be negative"),
        ("tpot: 100ms", "tpot: -1ms", "workloads[1].slo.tpot", "must not be negative"),
    ],
)
def test_bad_units_in_experiments_name_the_key(tmp_path: Path, old: str, new: str, key: str, words: str) -> None:
    with pytest.raises(SpecError, match=words) as info:
        load_experiment(_experiment(tmp_path, old, new))
    assert info.value.key is not None and info.value.key.endswith(key)
