"""Inference agents end to end on LocalNetwork (loopback, no root): every pattern, replay, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corridor.emulation.api import LocalNetwork
from corridor.errors import AgentError
from corridor.workloads.inference import run as inf

FAST = {"tpot_ms": 2, "prefill_ms_per_token": 0.01, "prompt_tokens": 128, "output_tokens": 8, "rate_rps": 40,
        "requests": 12}


def _net() -> LocalNetwork:
    return LocalNetwork({"srv": "far", "pre": "near", "cli": "near", "sto": "near"})


def _run(params: dict[str, Any], hosts: dict[str, list[str]], timeout_s: float = 30) -> list[dict[str, Any]]:
    p = inf.validate({**FAST, **params}, where="test")
    return inf.run(_net(), p, hosts=hosts, seed=7, timeout_s=timeout_s)


def _requests(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "request"]


def test_chat_records_have_the_agreed_keys_and_stream_every_token() -> None:
    recs = _run({}, {"servers": ["srv"], "clients": ["cli"]})
    reqs = _requests(recs)
    assert len(reqs) == 12 and all(r["ok"] for r in reqs)
    agreed = {"kind", "pattern", "request_id", "client", "server", "prompt_tokens", "output_tokens", "t_sched_s",
              "t_send_s", "sched_stall_s", "ttft_s", "tpot_s", "e2e_s", "ok", "error", "time_scale"}
    for r in reqs:
        assert agreed <= set(r)
        assert r["server"] == "srv" and r["client"] == "cli"
        assert r["tokens_received"] == r["output_tokens"] == 8
        # the first token follows the prefill; tokens come one decode step apart
        assert r["ttft_s"] >= r["server_prefill_s"] >= 128 * 0.01e-3 * 0.9
        assert r["tpot_s"] == pytest.approx(0.002, rel=0.5)
        # The server sends the last token seven decode steps after the first, which follows the request's
        # arrival and prefill, so the call lasts at least that. (e2e - ttft can be shorter: a host stall that
        # makes the client read the first token late leaves the next ones waiting in its socket.)
        assert r["e2e_s"] >= r["server_prefill_s"] + 7 * 0.002 * 0.999
    # every agent reports what it sent: one request per call; per answer the head, 8 token chunks,
    # the usage chunk, the [DONE] chunk and the end of the body
    traffic = {r["role"]: r for r in recs if r["kind"] == "traffic"}
    assert traffic["inference-client"]["messages_sent"] == 12
    assert traffic["inference-server"]["messages_sent"] == 12 * (1 + 8 + 1 + 1 + 1)
    assert all(r["done_marker"] for r in reqs)


def test_agentic_chain_runs_calls_in_sequence_with_tool_round_trips() -> None:
    recs = _run({"pattern": "agentic", "calls": 4, "requests": 3, "tool_service_ms": 5},
                {"servers": ["srv"], "clients": ["cli"], "stores": ["sto"]})
    sessions = [r for r in recs if r["kind"] == "session"]
    assert len(sessions) == 3 and all(s["ok"] for s in sessions)
    for s in sessions:
        calls = sorted((r for r in _requests(recs) if r["session_id"] == s["session_id"]),
                       key=lambda r: r["call_index"])
        assert [r["call_index"] for r in calls] == [0, 1, 2, 3]
        # each call starts after the previous answer ended (dependent chain)
        for a, b in zip(calls, calls[1:], strict=False):
            assert b["t_send_s"] >= a["t_send_s"] + a["e2e_s"]
        assert s["tool_s"] >= 3 * 0.005
        assert s["e2e_s"] >= sum(r["e2e_s"] for r in calls) + s["tool_s"] * 0.99
    store = next(r for r in recs if r["kind"] == "traffic" and r["role"] == "inference-store")
    assert store["messages_sent"] == 3 * 3


def test_rag_fetches_documents_before_generation() -> None:
    recs = _run({"pattern": "rag", "requests": 4, "rag_fanout": 3, "rag_doc_bytes": 100000, "rag_doc_tokens": 50},
                {"servers": ["srv"], "clients": ["cli"], "stores": ["sto"]})
    reqs = _requests(recs)
    assert all(r["ok"] for r in reqs)
    assert all(r["prompt_tokens"] == 128 + 3 * 50 for r in reqs)
    assert all(r["retrieval_s"] > 0 for r in reqs)
    store = next(r for r in recs if r["kind"] == "traffic" and r["role"] == "inference-store")
    assert store["messages_sent"] == 4 * 3 and store["bytes_sent"] > 4 * 3 * 100000


def test_disagg_moves_the_kv_cache_from_prefill_to_decode() -> None:
    recs = _run({"pattern": "disagg", "model": "70b", "prompt_tokens": 64, "requests": 3},
                {"servers": ["srv"], "prefill": ["pre"], "clients": ["cli"]})
    reqs = _requests(recs)
    assert all(r["ok"] for r in reqs)
    assert all(r["kv_bytes"] == 64 * 327680 for r in reqs)
    assert all(0 < r["kv_transfer_s"] < r["ttft_s"] for r in reqs)
    prefill = [r for r in recs if r["kind"] == "traffic" and r["role"] == "inference-server"]
    assert sum(r["bytes_sent"] for r in prefill) > 3 * 64 * 327680


def test_batch_reports_throughput_closed_loop() -> None:
    recs = _run({"pattern": "batch", "arrival": "closed", "concurrency": 3, "requests": 9},
                {"servers": ["srv"], "clients": ["cli"]})
    s = inf.summarize(recs)
    assert s["ok"] == 9 and s["throughput_rps"] > 0 and s["throughput_tokens_per_s"] == pytest.approx(
        8 * s["throughput_rps"], rel=0.01)


def test_per_request_connections_are_flagged() -> None:
    recs = _run({"connection": "per_request", "requests": 4}, {"servers": ["srv"], "clients": ["cli"]})
    assert all(r["new_connection"] for r in _requests(recs))


def test_server_queue_limit_rejects_and_records_errors() -> None:
    recs = _run({"requests": 6, "rate_rps": 1000, "max_batch": 1, "queue_limit": 0, "output_tokens": 20,
                 "tpot_ms": 10}, {"servers": ["srv"], "clients": ["cli"]})
    reqs = _requests(recs)
    assert any(not r["ok"] and "503" in (r["error"] or "") for r in reqs)
    assert any(r["ok"] for r in reqs)


def test_two_clients_split_the_schedule() -> None:
    net = LocalNetwork({"srv": "a", "c1": "b", "c2": "b"})
    p = inf.validate({**FAST, "requests": 10}, where="t")
    recs = inf.run(net, p, hosts={"servers": ["srv"], "clients": ["c1", "c2"]}, seed=1, timeout_s=30)
    reqs = _requests(recs)
    assert sorted(r["client"] for r in reqs) == ["c1"] * 5 + ["c2"] * 5


def test_time_scale_stretches_compute_and_unscales_records() -> None:
    net = LocalNetwork({"srv": "a", "cli": "b"}, time_scale=3.0)
    p = inf.validate({**FAST, "requests": 3, "tpot_ms": 5}, where="t")
    recs = inf.run(net, p, hosts={"servers": ["srv"], "clients": ["cli"]}, seed=1, timeout_s=30)
    for r in _requests(recs):
        assert r["time_scale"] == 3.0
        assert r["tpot_s"] == pytest.approx(0.005, rel=0.3)


def test_unreachable_server_is_reported_as_request_errors() -> None:
    # a client aimed at a port nothing listens on records failures instead of hanging
    import json
    import subprocess
    import sys

    from corridor.emulation.api import package_env

    cfg = {"servers": [["127.0.0.1", 9]], "schedule": "/dev/null", "warm_connections": 0}
    # stdin stays open while it runs: its end is the agent protocol's stop signal
    proc = subprocess.Popen([sys.executable, "-m", "corridor.agent", "inference-client", "--config",
                             json.dumps(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=package_env())
    try:
        assert proc.stdout is not None
        lines = proc.stdout.read().decode().splitlines()
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
    assert lines[-1] == "DONE"
    assert json.loads(lines[-2])["kind"] == "traffic"


def test_bad_hosts_raise_agent_error_and_leave_nothing_running() -> None:
    p = inf.validate(FAST, where="t")
    with pytest.raises(AgentError, match="clients"):
        inf.run(_net(), p, hosts={"servers": ["srv"]}, seed=1, timeout_s=5)
    with pytest.raises(KeyError):
        inf.run(_net(), p, hosts={"servers": ["nosuch"], "clients": ["cli"]}, seed=1, timeout_s=5)


def test_trace_replay_of_a_generated_mooncake_trace(tmp_path: Path) -> None:
    import json

    trace = tmp_path / "mc.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": 40 * i, "input_length": 100 + i, "output_length": 3 + i % 4,
                                         "hash_ids": [i]}) + "\n" for i in range(20)))
    recs = _run({"arrival": "trace", "trace": str(trace), "trace_speed": 2.0, "requests": 15},
                {"servers": ["srv"], "clients": ["cli"]})
    reqs = sorted(_requests(recs), key=lambda r: r["t_sched_s"])
    assert len(reqs) == 15
    assert [r["t_sched_s"] for r in reqs] == pytest.approx([0.02 * i for i in range(15)])
    assert [r["output_tokens"] for r in reqs] == [3 + i % 4 for i in range(15)]
    assert all(r["ok"] for r in reqs)


def _replay_azure_window(sample: Path) -> dict[str, Any]:
    p = inf.validate({"arrival": "trace", "trace": str(sample), "trace_window_s": 600, "trace_speed": 10,
                      "requests": 100000, "tpot_ms": 1, "prefill_ms_per_token": 0.0005, "warm_connections": 16,
                      "max_batch": 256}, where="test")
    recs = inf.run(LocalNetwork({"srv": "a", "cli": "b"}), p, hosts={"servers": ["srv"], "clients": ["cli"]},
                   seed=1, timeout_s=120)
    s = inf.summarize(recs)
    print(f"\nAzure code trace, first 600 s at x10: {s['requests']} requests, {s['ok']} ok; "
          f"arrival error p50 {s['sched_error_p50_s'] * 1e3:.3f} ms p99 {s['sched_error_p99_s'] * 1e3:.3f} ms "
          f"max {s['sched_error_max_s'] * 1e3:.3f} ms; "
          f"without host stalls p99 {s['sched_error_own_p99_s'] * 1e3:.3f} ms "
          f"max {s['sched_error_own_max_s'] * 1e3:.3f} ms; {s['sched_stalled']} requests delayed by host stalls "
          f"(up to {s['sched_stall_max_s'] * 1e3:.3f} ms); TTFT p50/p90/p99 {s['ttft_s_p50'] * 1e3:.1f}/"
          f"{s['ttft_s_p90'] * 1e3:.1f}/{s['ttft_s_p99'] * 1e3:.1f} ms; TPOT p50/p90/p99 {s['tpot_s_p50'] * 1e3:.2f}/"
          f"{s['tpot_s_p90'] * 1e3:.2f}/{s['tpot_s_p99'] * 1e3:.2f} ms")
    return s


@pytest.mark.corridor_slow
def test_replay_first_ten_minutes_of_the_azure_sample(shared_data: Path) -> None:
    """Acceptance: 10 minutes of the real trace at 10x (about 60 s) keeps arrivals within 1 ms p99.

    A p99 over 1,482 requests is decided by 15 of them, and a shared virtual machine now and
    then does not run the client for several milliseconds: every request of a burst due in
    that gap leaves late, however the client is written. The client measures those host
    stalls (wall time its CPU clock did not count). A run where they delayed more than 1 %
    of the requests cannot show either bound (p50 within 0.1 ms, p99 within 1 ms); the test
    then tries once more and, if the host is still that busy, skips with both runs' figures.
    """
    sample = shared_data / "azure_llm_inference_2023_code.csv"
    if not sample.exists():
        pytest.skip(f"{sample} is absent")
    starved = []
    for _ in range(2):
        s = _replay_azure_window(sample)
        assert s["requests"] == 1482 and s["ok"] == 1482
        assert s["ttft_s_p99"] >= s["ttft_s_p50"] > 0 and s["tpot_s_p50"] > 0
        if s["sched_stalled"] <= 0.01 * s["requests"]:
            assert s["sched_error_p50_s"] < 1e-4
            assert s["sched_error_p99_s"] < 1e-3
            return
        # a CI run had 447 of the 1,482 requests delayed by host stalls: p50 0.110 ms then
        starved.append(f"{s['sched_stalled']} requests delayed by host stalls of up to "
                       f"{s['sched_stall_max_s'] * 1e3:.1f} ms, "
                       f"arrival error p50 {s['sched_error_p50_s'] * 1e3:.3f} ms "
                       f"p99 {s['sched_error_p99_s'] * 1e3:.2f} ms "
                       f"({s['sched_error_own_p50_s'] * 1e3:.3f} ms and "
                       f"{s['sched_error_own_p99_s'] * 1e3:.2f} ms without them)")
    pytest.skip("host too busy to judge a 1 ms p99 (more than 1 % of requests stalled by it) in two runs: "
                + "; ".join(starved))


def test_requests_unanswered_at_the_deadline_are_recorded_as_timeouts() -> None:
    # 200 tokens at 50 ms each cannot finish inside a 3 s run; the runner still returns every request
    p = inf.validate({**FAST, "requests": 2, "output_tokens": 200, "tpot_ms": 50}, where="t")
    recs = inf.run(_net(), p, hosts={"servers": ["srv"], "clients": ["cli"]}, seed=1, timeout_s=8)
    reqs = _requests(recs)
    assert len(reqs) == 2
    assert all(not r["ok"] and "timeout" in r["error"] for r in reqs)
