"""Replaying generic message traces (and captures converted to them) across a network (loopback, no root)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corridor.emulation.api import LocalNetwork
from corridor.errors import TraceError
from corridor.traces import ReplayWindow
from corridor.workloads.replay import run as replay


def _trace(tmp_path: Path, rows: list[tuple[float, str, str, int, str]]) -> Path:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"time_s": t, "src": s, "dst": d, "bytes": b, "kind": k}) + "\n"
                            for t, s, d, b, k in rows))
    return path


def test_replay_delivers_every_message_at_its_time(tmp_path: Path) -> None:
    rows = [(0.00, "a", "b", 1000, "request"), (0.02, "b", "a", 50, "token"), (0.04, "b", "a", 50, "token"),
            (0.05, "a", "c", 3_000_000, "kv"), (0.10, "c", "a", 10, "ack"), (0.10, "a", "b", 0, "empty")]
    net = LocalNetwork({"a": "x", "b": "y", "c": "y"})
    recs = replay.replay_messages(net, str(_trace(tmp_path, rows)), timeout_s=30, start_delay_s=0.5)
    msgs = sorted((r for r in recs if r["kind"] == "message"), key=lambda r: r["seq"])
    assert [(m["src"], m["dst"], m["bytes"], m["msg_kind"]) for m in msgs] == [(s, d, b, k) for _, s, d, b, k in rows]
    assert [m["t_sched_s"] for m in msgs] == pytest.approx([r[0] for r in rows])
    assert all(m["latency_s"] is not None and m["latency_s"] >= 0 for m in msgs if m["bytes"])
    assert msgs[-1]["t_done_s"] is None  # a zero-byte message has nothing to arrive
    traffic = {r["host"]: r for r in recs if r["kind"] == "traffic"}
    assert traffic["a"]["bytes_sent"] == 3_001_000 and traffic["a"]["messages_sent"] == 3
    s = replay.summarize_messages(recs)
    assert s["messages"] == 6 and s["delivered"] == 5 and s["bytes"] == 3_001_110
    assert s["sched_error_p99_s"] < 0.05


def test_replay_maps_capture_endpoints_by_address(tmp_path: Path) -> None:
    rows = [(0.0, "10.1.0.1:40000", "10.2.0.1:8000", 300, "http-request"),
            (0.01, "10.2.0.1:8000", "10.1.0.1:40000", 120, "http-head"),
            (0.02, "10.2.0.1:8000", "10.1.0.1:40000", 40, "http-chunk")]
    net = LocalNetwork({"cli": "x", "srv": "y"})
    recs = replay.replay_messages(net, str(_trace(tmp_path, rows)), endpoints={"10.1.0.1": "cli", "10.2.0.1": "srv"},
                               window=ReplayWindow(speed=2.0), timeout_s=30, start_delay_s=0.3)
    msgs = sorted((r for r in recs if r["kind"] == "message"), key=lambda r: r["seq"])
    assert [(m["src"], m["dst"]) for m in msgs] == [("cli", "srv"), ("srv", "cli"), ("srv", "cli")]
    assert [m["t_sched_s"] for m in msgs] == pytest.approx([0.0, 0.005, 0.01])


def test_unmapped_endpoint_names_file_and_line(tmp_path: Path) -> None:
    path = _trace(tmp_path, [(0.0, "a", "b", 1, "x"), (0.1, "a", "zz", 1, "x")])
    with pytest.raises(TraceError, match=r"m\.jsonl:2: endpoint 'zz'"):
        replay.replay_messages(LocalNetwork({"a": "x", "b": "y"}), str(path), timeout_s=10)
