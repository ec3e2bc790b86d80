"""Unit tests of the userspace backend's builders and stats reader (no root)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from corridor.errors import EmulationError
from corridor.links.contract import GilbertElliott, LinkDirection
from corridor.links.userspace import delayline_argv, parse_stats, prepare_argv, read_stats

FWD = LinkDirection(rate_mbps=1000, delay_ms=22.5, queue_bytes=5_625_000, loss=1e-4)
BACK = LinkDirection(rate_mbps=100, delay_ms=22.5, queue_bytes=562_500, jitter_ms=0.5,
                     burst_loss=GilbertElliott(0.001, 0.25))


def _opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_argv_runs_the_module_with_this_interpreter() -> None:
    argv = delayline_argv("wa", "wb", FWD, BACK, stats_path="/run/x.json", seed=5, engine="python")
    assert argv[:3] == [sys.executable, "-m", "corridor.links.delayline"]
    assert _opt(argv, "--intf-a") == "wa"
    assert _opt(argv, "--intf-b") == "wb"
    assert _opt(argv, "--stats") == "/run/x.json"
    assert _opt(argv, "--seed") == "5"


def test_argv_carries_each_direction_exactly() -> None:
    argv = delayline_argv("wa", "wb", FWD, BACK, stats_path="/s", seed=1)
    assert LinkDirection(**{**json.loads(_opt(argv, "--a-to-b")), "burst_loss": None}) == FWD
    back = json.loads(_opt(argv, "--b-to-a"))
    assert back["burst_loss"] == {"p_good_to_bad": 0.001, "p_bad_to_good": 0.25, "loss_good": 0.0, "loss_bad": 1.0}
    assert back["rate_mbps"] == 100 and back["jitter_ms"] == 0.5


def test_argv_is_understood_by_the_process() -> None:
    from corridor.links.delayline import DirectionConfig, parse_args

    argv = delayline_argv("wa", "wb", FWD, BACK, stats_path="/s", seed=3, engine="python")
    args = parse_args(argv[3:])
    assert DirectionConfig.from_dict(json.loads(args.a_to_b)).rate_bps == 1e9
    assert DirectionConfig.from_dict(json.loads(args.b_to_a)).burst_loss == (0.001, 0.25, 0.0, 1.0)
    assert args.seed == 3


@pytest.mark.parametrize(("a", "b"), [("", "wb"), ("wa", ""), ("same", "same")])
def test_argv_rejects_bad_interfaces(a: str, b: str) -> None:
    with pytest.raises(EmulationError):
        delayline_argv(a, b, FWD, BACK, stats_path="/s", seed=1)


def test_prepare_turns_offloads_on_for_the_interface() -> None:
    cmds = prepare_argv("cou1wa")
    assert all(cmd[:3] == ["ethtool", "-K", "cou1wa"] and cmd[-1] == "on" for cmd in cmds)
    assert {cmd[3] for cmd in cmds} >= {"tso", "gso", "gro"}


def good_stats() -> dict[str, Any]:
    direction = {"packets": 10, "bytes": 15000, "drops_queue": 0, "drops_loss": 1, "queue_bytes": 0,
                 "queue_bytes_max": 3000}
    return {"state": "running", "a_to_b": dict(direction), "b_to_a": dict(direction)}


def test_read_stats_round_trip(tmp_path: Any) -> None:
    path = os.path.join(tmp_path, "s.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(good_stats(), handle)
    assert read_stats(path)["a_to_b"]["drops_loss"] == 1


def test_read_stats_missing_file_says_so(tmp_path: Any) -> None:
    with pytest.raises(EmulationError, match="do not exist"):
        read_stats(os.path.join(tmp_path, "absent.json"))


def test_read_stats_garbage(tmp_path: Any) -> None:
    path = os.path.join(tmp_path, "s.json")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("{half")
    with pytest.raises(EmulationError, match="cannot read"):
        read_stats(path)


def _broken(mutate: Any) -> dict[str, Any]:
    data = good_stats()
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "JSON object"),
        (_broken(lambda d: d.pop("b_to_a")), "b_to_a"),
        (_broken(lambda d: d["a_to_b"].pop("packets")), "packets"),
        (_broken(lambda d: d["a_to_b"].update(bytes=-1)), "bytes"),
        (_broken(lambda d: d["a_to_b"].update(drops_queue="3")), "drops_queue"),
        (_broken(lambda d: d["b_to_a"].update(queue_bytes=True)), "queue_bytes"),
        (_broken(lambda d: d["b_to_a"].update(queue_bytes_max=1.5)), "queue_bytes_max"),
    ],
)
def test_parse_stats_rejects(data: Any, message: str) -> None:
    with pytest.raises(EmulationError, match=message):
        parse_stats(data)


@pytest.mark.parametrize("args", [["--rate", "fast"], ["--delay", "25"], ["--rate", "10MB"], ["--duration", "0s"],
                                  ["--duration", "10"]])
def test_bench_link_bad_options_exit_2(args: list[str]) -> None:
    from corridor.cli import cli

    result = CliRunner().invoke(cli, ["bench", "link", *args])
    assert result.exit_code == 2, result.output


def test_bench_link_report_lines() -> None:
    from corridor.cli.bench_link import report_lines

    result = {"rate_mbps": 2000.0, "delay_ms": 25.0, "duration_s": 10.0, "bare_mbps": 9000.0, "shaped_mbps": 1800.0,
              "shaped_of_configured": 0.9, "ratio": 0.2, "rtt_median_ms": 50.3, "rtt_configured_ms": 50.0,
              "rtt_error_pct": 0.6, "jitter_p50_ms": 0.0, "jitter_p99_ms": 0.3, "delayline_late_us_p99": 120.0,
              "loss_measured": 0.0099, "loss_configured": 0.01, "loss_packets": 52000}
    text = "\n".join(report_lines(result))
    assert "1800.0 Mbit/s" in text and "90.0 % of configured" in text
    assert "error +0.60 %" in text
    assert "0.990 %" in text and "52000 UDP packets" in text
    assert "queueing" not in text


def test_bench_link_without_root_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from corridor.cli import cli

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(cli, ["bench", "link", "--quick"])
    assert result.exit_code == 3
    assert "needs root" in result.output
    assert result.output.strip().count("\n") == 0
