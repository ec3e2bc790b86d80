"""Inference across an emulated corridor (root): the issue's acceptance figures.

Each test runs the same workload on ``local`` and on ``two-site`` (25 ms one
way, so 50 ms RTT) and compares; the figures are printed (``pytest -s``).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corridor.links.fidelity import HostStalls
from corridor.workloads.inference import run as inf

pytestmark = [pytest.mark.corridor_root, pytest.mark.corridor_slow]


@pytest.fixture
def corridor_network() -> Iterator[Callable[[str], Any]]:
    """Build corridor networks for one test (backend: $CORRIDOR_TEST_BACKEND, default auto); all torn down after.

    The same shape as corridor.pytest_plugin's fixture, which is not loaded when the
    package is run from a checkout rather than installed.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root: Mininet namespaces and the WAN link emulation")
    from corridor.emulation.network import CorridorNetwork
    from corridor.planning.planner import build_plan
    from corridor.spec.topospec import load_topology

    opened: list[Any] = []

    def make(topology: str) -> Any:
        backend = os.environ.get("CORRIDOR_TEST_BACKEND", "auto")
        net = CorridorNetwork(build_plan(load_topology(topology)), backend=backend, label=f"pytest-inf:{topology}")
        opened.append(net)
        net.start()
        return net

    try:
        yield make
    finally:
        for net in reversed(opened):
            net.stop()

LOCAL = {"servers": ["loc-gpu1"], "clients": ["loc-cli1"]}
FAR = {"servers": ["rem-gpu1"], "clients": ["cty-cli1"]}


def _both(corridor_network: Any, params: dict[str, Any], far: dict[str, list[str]] = FAR,
          local: dict[str, list[str]] = LOCAL) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    p = inf.validate(params, where="test")
    net = corridor_network("local")
    base = inf.run(net, p, hosts=local, seed=5, timeout_s=120)
    net.stop()
    net = corridor_network("two-site")
    recs = inf.run(net, p, hosts=far, seed=5, timeout_s=180)
    return base, recs, net


def test_chat_ttft_grows_by_one_rtt_and_tpot_does_not_change(corridor_network: Any) -> None:
    params = {"requests": 200, "rate_rps": 20, "prompt_tokens": 512, "output_tokens": 16, "tpot_ms": 20,
              "prefill_ms_per_token": 0.02}
    base, recs, net = _both(corridor_network, params)
    rtt_s = net.plan.path_params("city", "remote").rtt_ms / 1e3
    s = inf.summarize(recs, baseline=base)
    b = inf.summarize(base)
    added_p50 = s["ttft_s_p50"] - b["ttft_s_p50"]
    pred = inf.predict(inf.validate(params, where="t"), net.plan, hosts=FAR)
    # The mean also carries the handshakes: a request that finds every keep-alive connection busy opens one
    # and pays a second round trip. How many did is in the records, and so is the mean it implies.
    far_requests = [r for r in recs if r.get("kind") == "request" and r.get("ok")]
    opened = sum(1 for r in far_requests if r.get("new_connection"))
    mean_expected_s = rtt_s * (1 + opened / len(far_requests))
    print(f"\nchat, {s['requests']} requests, keep-alive: TTFT p50 local {b['ttft_s_p50'] * 1e3:.1f} ms, two-site "
          f"{s['ttft_s_p50'] * 1e3:.1f} ms, added p50 {added_p50 * 1e3:.1f} ms / mean {s['added_ttft_s'] * 1e3:.1f} ms"
          f" vs {pred['round_trips']} x RTT = {pred['round_trips'] * rtt_s * 1e3:.1f} ms (mean with the {opened} "
          f"handshakes {mean_expected_s * 1e3:.1f} ms); TPOT change {s['tpot_change'] * 100:+.2f} %; network share "
          f"of e2e {s['network_share'] * 100:.1f} %")
    assert s["ok"] == 200 and b["ok"] == 200
    assert pred["round_trips"] == 1
    assert added_p50 == pytest.approx(rtt_s, rel=0.10)
    assert opened < 0.2 * len(far_requests)  # keep-alive really kept most requests on open connections
    assert s["added_ttft_s"] == pytest.approx(mean_expected_s, rel=0.10)
    assert abs(s["tpot_change"]) < 0.05


def test_agentic_chain_of_ten_calls_pays_ten_round_trips(corridor_network: Any) -> None:
    params = {"pattern": "agentic", "calls": 10, "requests": 3, "arrival": "uniform", "rate_rps": 1,
              "prompt_tokens": 256, "output_tokens": 8, "tpot_ms": 20, "prefill_ms_per_token": 0.02}
    base, recs, net = _both(corridor_network, params)
    rtt_s = net.plan.path_params("city", "remote").rtt_ms / 1e3
    s = inf.summarize(recs, baseline=base)
    single = s["added_ttft_s"]
    local_session_s = inf.summarize(base)["session_e2e_s_mean"]
    print(f"\nagentic chain of 10: session e2e local {local_session_s:.3f} s, "
          f"two-site {s['session_e2e_s_mean']:.3f} s, added {s['added_session_e2e_s'] * 1e3:.1f} ms = "
          f"{s['added_session_e2e_s'] / single:.2f} x the single-call penalty ({single * 1e3:.1f} ms); "
          f"10 x RTT = {10 * rtt_s * 1e3:.0f} ms")
    assert s["sessions"] == 3
    assert s["added_session_e2e_s"] == pytest.approx(10 * rtt_s, rel=0.10)
    assert s["added_session_e2e_s"] / single == pytest.approx(10, rel=0.10)


def test_disaggregated_kv_transfer_follows_link_rate_and_model(corridor_network: Any) -> None:
    # 1k prompt tokens keep CI short: 1024 x 320 KiB = 336 MB, about 2.8 s at 1 Gbit/s. The issue's
    # 8k-token case (2.7 GB, about 23 s a transfer): CORRIDOR_TEST_KV_PROMPT=8192.
    prompt = int(os.environ.get("CORRIDOR_TEST_KV_PROMPT", "1024"))
    gap_s = 4.0 * prompt / 1024
    params = {"pattern": "disagg", "model": "70b", "requests": 2, "arrival": "uniform", "rate_rps": 1 / gap_s,
              "prompt_tokens": prompt, "output_tokens": 8, "tpot_ms": 20, "prefill_ms_per_token": 0.02}
    hosts = {"servers": ["cty-gpu1"], "prefill": ["rem-gpu1"], "clients": ["cty-cli1"]}
    p = inf.validate(params, where="test")
    # Consistent with the link rate: never faster than the link allows, and within 15 % of slow start's cost
    # once the share of the run the host stalled (1 ms sleeps in a child process) is given back. A run outside
    # is measured once more: a CI-like run here read 3.76 s against 3.19 s x 1.15 once.
    tries = []
    for _attempt in range(2):
        net = corridor_network("two-site")
        with HostStalls() as host:
            recs = inf.run(net, p, hosts=hosts, seed=5, timeout_s=30 + 3 * gap_s)
        net.stop()
        stalled = host.summary()["stalled_fraction"]
        pred = inf.predict(p, net.plan, hosts=hosts)
        kv = [r["kv_transfer_s"] for r in recs if r["kind"] == "request" and r["ok"]]
        print(f"\ndisaggregated 70B, {prompt}-token prompt: KV {pred['kv_bytes'] / 1e6:.0f} MB, transfer "
              f"{', '.join(f'{x:.3f}' for x in kv)} s vs model {pred['kv_transfer_warm_s']:.3f} s (window open) "
              f"to {pred['kv_transfer_s']:.3f} s (slow start) at {pred['kv_rate_mbps']:.0f} Mbit/s; host stalled "
              f"{stalled:.1%}")
        assert len(kv) == 2
        assert min(kv) >= pred["kv_transfer_warm_s"] * 0.97
        tries.append(([round(x, 3) for x in kv], round(stalled, 3)))
        if max(kv) * (1 - stalled) <= pred["kv_transfer_s"] * 1.15:
            return
    raise AssertionError(f"KV transfers (s) and the host's stalled share per try, against {pred['kv_transfer_s']:.3f}"
                         f" s x 1.15: {tries}")


def test_capture_of_the_wan_link_matches_the_run(corridor_network: Any, tmp_path: Path) -> None:
    from corridor.tools import capture
    net = corridor_network("two-site")
    wire, intf = capture.wire_interface(net.plan, net.plan.wan_links[0].name)
    pcap = tmp_path / "wan.pcap"
    proc = net.node(wire).popen(capture.tcpdump_argv(intf, pcap), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        capture.start(proc)
        p = inf.validate({"requests": 40, "rate_rps": 40, "output_tokens": 12, "length_dist": "exponential",
                          "tpot_ms": 5, "prefill_ms_per_token": 0.01}, where="test")
        recs = inf.run(net, p, hosts=FAR, seed=2, timeout_s=60)
    finally:
        summary = capture.stop(proc)
    messages, size = inf.traffic_totals(recs)
    converted = capture.to_trace(pcap, tmp_path / "wan.jsonl")
    print(f"\ncapture on {wire}:{intf}: run sent {messages} messages / {size} bytes; pcap gives {converted[0]} / "
          f"{converted[1]}")
    assert capture.dropped_by_kernel(summary) == 0
    assert converted == (messages, size)
