"""Inference analytic model, parameter validation, schedules and run summaries (pure, no root)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from corridor.errors import AgentError, SpecError
from corridor.planning.planner import build_plan
from corridor.spec.topospec import load_topology
from corridor.workloads.inference import model as analytic
from corridor.workloads.inference import run as inf


def test_kv_cache_of_a_70b_shape_is_320_kib_per_token() -> None:
    shape = analytic.MODELS["70b"]
    assert shape.kv_bytes_per_token == 320 * 1024
    assert analytic.kv_bytes_per_token(80, 8, 128, 2) == 327680
    assert analytic.kv_cache_bytes(8192, shape) == 8192 * 327680  # about 2.7 GB, as DESIGN.md says
    assert 2.6e9 < analytic.kv_cache_bytes(8192, shape) < 2.8e9


def test_prefill_time_is_two_flops_per_parameter_per_token() -> None:
    # 70B params, 1000 tokens, 989 TFLOP/s at 50 % MFU: 1.4e14 / 4.945e14 s
    assert analytic.prefill_time_s(1000, 70e9, peak_tflops=989, mfu=0.5) == pytest.approx(0.28311, rel=1e-4)
    with pytest.raises(ValueError):
        analytic.prefill_time_s(1, 1e9, peak_tflops=0, mfu=0.5)


def test_ttft_round_trips_and_transfer_time() -> None:
    assert analytic.protocol_round_trips(new_connection=False) == 1
    assert analytic.protocol_round_trips(new_connection=True) == 2
    assert analytic.ttft_s(round_trips=2, rtt_s=0.05, prefill_s=0.1, queueing_s=0.01) == pytest.approx(0.21)
    # 2.68 GB over 1 Gbit/s: 21.5 s of serialisation, plus one way and slow-start rounds
    kv = analytic.kv_cache_bytes(8192, analytic.MODELS["70b"])
    t = analytic.transfer_time_s(kv, rate_mbps=1000, one_way_s=0.025, rtt_s=0.05)
    rounds = analytic.slow_start_rounds(kv, 1000, 0.05)
    assert rounds == math.ceil(math.log2(1e9 / 8 * 0.05 / 1448 / 10))
    carried = 10 * (2**rounds - 1) * 1448
    goodput_bps = 1e9 * 1448 / 1500
    assert t == pytest.approx(kv * 8 / goodput_bps + 0.025 + rounds * 0.05 - carried * 8 / goodput_bps)
    assert analytic.transfer_time_s(kv, rate_mbps=1000, one_way_s=0.025, rtt_s=0.05, warm=True) < t
    # a small transfer finishes inside slow start: one round
    assert analytic.slow_start_rounds(1000, 1000, 0.05) == 1
    assert analytic.e2e_s(0.3, 11, 0.02) == pytest.approx(0.5)
    assert analytic.chain_e2e_s(10, 0.5, 9, 0.05) == pytest.approx(5.45)


def test_percentile_interpolates() -> None:
    assert analytic.percentile([1, 2, 3, 4], 50) == 2.5
    assert analytic.percentile([5], 99) == 5
    assert math.isnan(analytic.percentile([], 50))


BAD_PARAMS: list[tuple[dict[str, Any], str]] = [
    ({"pattern": "video"}, "pattern"),
    ({"arrival": "sometimes"}, "arrival"),
    ({"requests": 0}, "requests"),
    ({"requests": 2.5}, "requests"),
    ({"rate_rps": -1}, "rate_rps"),
    ({"rate_rps": "fast"}, "rate_rps"),
    ({"tpot_ms": "20 parsecs"}, "tpot_ms"),
    ({"mfu": 1.5}, "mfu"),
    ({"model": "1t"}, "model"),
    ({"prompt_tokens": -3}, "prompt_tokens"),
    ({"colour": "blue"}, "colour"),
    ({"arrival": "trace"}, "trace"),
    ({"trace": "x.csv"}, "arrival"),
    ({"pattern": "batch"}, "arrival"),
    ({"arrival": "trace", "trace": "x.csv", "trace_format": "excel"}, "trace_format"),
    ({"slo_ttft_s": 0.5}, "slo_ttft_s"),  # the SLO belongs in the slo block, where the verdict reads it
    ({"nice": -40}, "nice"),
    ({"connection": "pigeon"}, "connection"),
]


@pytest.mark.parametrize("params, key", BAD_PARAMS, ids=[k for _, k in BAD_PARAMS])
def test_bad_params_name_the_key(params: dict[str, Any], key: str) -> None:
    with pytest.raises(SpecError) as info:
        inf.validate(params, where="exp.yaml")
    assert info.value.key == key
    assert "exp.yaml" in str(info.value)


def test_params_take_bare_numbers_in_the_named_unit_and_defaults() -> None:
    p = inf.validate({"tpot_ms": 30, "think_time_s": 0.5}, where="x")
    assert p.tpot_ms == 30.0 and p.think_time_s == 0.5
    assert p.pattern == "chat" and p.rate_rps > 0
    assert set(inf.PATTERNS) == {"chat", "agentic", "batch", "rag", "disagg"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tpot_ms": "20s"},
         r"'20s' has a unit, but tpot_ms is already in milliseconds.*drop the unit.*tpot_ms: 20000"),
        ({"tpot_ms": "30ms"}, r"tpot_ms is already in milliseconds.*tpot_ms: 30 for"),
        ({"think_time_s": "500ms"}, r"think_time_s is already in seconds.*think_time_s: 0.5 for"),
        ({"trace_window_s": "1min"}, r"trace_window_s is already in seconds"),
        ({"prefill_base_ms": "2 parsecs"}, r"drop the unit and write a bare number$"),
    ],
)
def test_unit_named_params_refuse_a_unit_in_the_value(params: dict[str, Any], message: str) -> None:
    key = next(iter(params))
    with pytest.raises(SpecError, match=message) as info:
        inf.validate(params, where="exp.yaml")
    assert info.value.key == key


def test_schedules_are_seeded_and_shaped() -> None:
    p = inf.validate({"requests": 2000, "rate_rps": 50, "length_dist": "exponential"}, where="x")
    a = list(inf.schedule(p, seed=1))
    assert a == list(inf.schedule(p, seed=1)) and a != list(inf.schedule(p, seed=2))
    gaps = [y["t_s"] - x["t_s"] for x, y in zip(a, a[1:], strict=False)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 50, rel=0.1)
    assert sum(s["prompt_tokens"] for s in a) / len(a) == pytest.approx(512, rel=0.1)
    bursty = inf.validate({"requests": 500, "rate_rps": 100, "arrival": "bursty", "burst_on_s": 1,
                           "burst_off_s": 2}, where="x")
    assert all(s["t_s"] % 3.0 < 1.0 for s in inf.schedule(bursty, seed=1))
    uniform = inf.validate({"requests": 4, "rate_rps": 2, "arrival": "uniform"}, where="x")
    assert [s["t_s"] for s in inf.schedule(uniform, seed=1)] == [0, 0.5, 1.0, 1.5]


def test_schedule_from_a_trace_applies_window_speed_and_cap(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:17:{i:02d}.5000000,{100 + i},{1 + i}\n" for i in range(10)))
    p = inf.validate({"arrival": "trace", "trace": str(trace), "trace_start_s": 2, "trace_speed": 4,
                      "requests": 3}, where="x")
    s = list(inf.schedule(p, seed=0))
    assert [x["t_s"] for x in s] == [0.0, 0.25, 0.5]
    assert [x["prompt_tokens"] for x in s] == [102, 103, 104]


def _plan(name: str) -> Any:
    return build_plan(load_topology(name))


def test_predict_chat_two_site_vs_local() -> None:
    p = inf.validate({"prompt_tokens": 1000, "output_tokens": 11, "tpot_ms": 20}, where="x")
    far = inf.predict(p, _plan("two-site"), hosts={"servers": ["rem-gpu1"], "clients": ["cty-cli1"]})
    near = inf.predict(p, _plan("local"), hosts={"servers": ["loc-gpu1"], "clients": ["loc-cli1"]})
    assert far["round_trips"] == 1 and far["rtt_s"] == pytest.approx(0.05)
    assert far["ttft_unloaded_s"] - near["ttft_unloaded_s"] == pytest.approx(0.05 - near["rtt_s"])
    assert far["tpot_s"] == near["tpot_s"] == 0.02
    assert far["e2e_unloaded_s"] == pytest.approx(far["ttft_unloaded_s"] + 10 * 0.02)
    # the simulated percentile adds queueing on top of the one-request figure, never less
    assert far["ttft_s"] >= far["ttft_unloaded_s"] - 1e-9 and far["ttft_p50_s"] <= far["ttft_p99_s"]
    fresh = inf.predict(inf.validate({"connection": "per_request"}, where="x"), _plan("two-site"),
                        hosts={"servers": ["rem-gpu1"], "clients": ["cty-cli1"]})
    assert fresh["round_trips"] == 2 and "handshake" in fresh["round_trips_are"]


def test_predict_agentic_chain_is_ten_fold() -> None:
    p = inf.validate({"pattern": "agentic", "calls": 10}, where="x")
    out = inf.predict(p, _plan("two-site"), hosts={"servers": ["rem-gpu1"], "clients": ["cty-cli1"]})
    assert out["network_session_s"] == pytest.approx(10 * 0.05)
    assert out["session_e2e_s"] == pytest.approx(10 * out["e2e_unloaded_s"])


def test_predict_disagg_kv_transfer_follows_link_rate() -> None:
    p = inf.validate({"pattern": "disagg", "model": "70b", "prompt_tokens": 8192}, where="x")
    out = inf.predict(p, _plan("two-site"), hosts={"servers": ["cty-gpu1"], "prefill": ["rem-gpu1"],
                                                   "clients": ["cty-cli1"]})
    assert out["kv_bytes"] == 8192 * 327680
    assert out["kv_transfer_s"] == pytest.approx(out["kv_bytes"] * 8 / 1e9 * 1500 / 1448, rel=0.03)


@pytest.mark.parametrize("hosts, words", [
    (["a", "b"], "servers"),
    ({"servers": ["a"]}, "clients"),
    ({"servers": ["a"], "clients": ["b"], "gpus": ["c"]}, "unknown host group"),
])
def test_bad_host_groups(hosts: Any, words: str) -> None:
    p = inf.validate({}, where="x")
    with pytest.raises(AgentError, match=words):
        inf.predict(p, _plan("two-site"), hosts=hosts)


def test_pattern_host_needs() -> None:
    with pytest.raises(AgentError, match="prefill"):
        inf.predict(inf.validate({"pattern": "disagg"}, where="x"), _plan("two-site"),
                    hosts={"servers": ["rem-gpu1"], "clients": ["cty-cli1"]})
    with pytest.raises(AgentError, match="stores"):
        inf.predict(inf.validate({"pattern": "rag"}, where="x"), _plan("two-site"),
                    hosts={"servers": ["rem-gpu1"], "clients": ["cty-cli1"]})


def _req(ttft: float, tpot: float | None, e2e: float, ok: bool = True, sched: float = 0.0,
         lag: float = 0.0) -> dict[str, Any]:
    return {"kind": "request", "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e, "ok": ok, "t_sched_s": sched,
            "t_send_s": sched + lag, "gap_max_s": tpot}


def test_summarize_percentiles_goodput_and_network_share() -> None:
    recs = [_req(0.1 * (i + 1), 0.05, 1.0 + 0.1 * i, sched=i, lag=0.001 * (i % 2)) for i in range(10)]
    recs.append(_req(0.1, None, 0.1, ok=False))
    s = inf.summarize(recs, {"ttft_s": 0.35, "tpot_s": 0.1})
    assert s["requests"] == 11 and s["ok"] == 10 and s["errors"] == 1
    assert s["ttft_s_p50"] == pytest.approx(0.55)
    assert s["goodput_fraction"] == pytest.approx(3 / 11)
    assert s["sched_error_p99_s"] == pytest.approx(0.001)
    base = [_req(0.05 * (i + 1), 0.05, 0.5 + 0.1 * i) for i in range(10)]
    s2 = inf.summarize(recs, baseline=base)
    assert s2["added_ttft_s"] == pytest.approx(0.55 - 0.275)
    assert s2["tpot_change"] == pytest.approx(0.0)
    assert s2["network_share"] == pytest.approx(0.5 / 1.45)
    assert s2["slo_ttft_s"] == 0.25  # DistServe's chat default


def test_summarize_sessions_and_throughput() -> None:
    recs: list[dict[str, Any]] = [_req(0.1, 0.01, 0.2) for _ in range(4)]
    recs += [{"kind": "session", "e2e_s": 2.0, "ok": True}, {"kind": "session", "e2e_s": 4.0, "ok": True}]
    recs += [{"kind": "throughput", "duration_s": 2.0, "requests": 4, "output_tokens": 100}]
    s = inf.summarize(recs)
    assert s["sessions"] == 2 and s["session_e2e_s_p50"] == 3.0
    assert s["throughput_rps"] == 2.0 and s["throughput_tokens_per_s"] == 50.0
    assert inf.traffic_totals([{"kind": "traffic", "messages_sent": 3, "bytes_sent": 10},
                               {"kind": "traffic", "messages_sent": 2, "bytes_sent": 5}]) == (5, 15)


def test_predict_rag_and_tool_calls_cross_to_the_store_site() -> None:
    plan = _plan("two-site")
    rag = inf.validate({"pattern": "rag", "rag_fanout": 4, "rag_doc_bytes": 125000, "rag_doc_tokens": 100},
                       where="x")
    out = inf.predict(rag, plan, hosts={"servers": ["cty-gpu1"], "clients": ["cty-cli1"], "stores": ["rem-gpu1"]})
    # one RTT to the remote store plus 4 x 125 kB at 1 Gbit/s
    assert out["retrieval_s"] == pytest.approx(0.05 + 4e-3, rel=1e-6)
    assert out["session_e2e_s"] == pytest.approx(out["retrieval_s"] + out["e2e_unloaded_s"])
    assert out["prefill_s"] == pytest.approx(rag.prefill_s(512 + 400))
    agent = inf.validate({"pattern": "agentic", "calls": 5, "tool_service_ms": 10}, where="x")
    out = inf.predict(agent, plan, hosts={"servers": ["cty-gpu1"], "clients": ["cty-cli1"], "stores": ["rem-gpu1"]})
    assert out["network_session_s"] == pytest.approx(5 * out["rtt_s"] + 4 * 0.05)
    assert out["session_e2e_s"] == pytest.approx(5 * out["e2e_unloaded_s"] + 4 * (0.05 + 0.01))
