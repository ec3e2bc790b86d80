"""Analytic model of gradient sync: bandwidth, latency, window, loss and slow-start terms, and scale."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from corridor.planning.plan import PathParams
from corridor.workloads.training.model import (
    MSS_BYTES,
    TcpAssumptions,
    busbw_ceiling_gbps,
    collective_time,
    connection_rate_bps,
    flow_time_s,
    slow_start_extra_s,
    training_step_time,
)

WAN = PathParams("a", "b", 200.0, 25.0, 50.0, 0.0, 1_250_000, 0.0, ("a-b",))
PAYLOAD = 1448 / 1500  # TCP payload per IP byte the link charges
LAN = PathParams("a", "a", 10_000.0, 0.01, 0.02, 0.0, 100_000, 0.0, ())


def paths(wan: PathParams = WAN, lan: PathParams = LAN):
    def fn(src: str, dst: str) -> PathParams:
        return lan if src == dst else wan

    return fn


SITES = ["a", "a", "b", "b"]


def test_ring_large_size_reaches_wan_rate():
    size = 256 * 2**20
    pred = collective_time("ring", size, SITES, paths())
    busbw_mbps = size * 8 / pred.time_s * 1.5 / 1e6
    assert 0.97 * 200 * PAYLOAD < busbw_mbps <= 200 * PAYLOAD


def test_small_sizes_are_latency_bound():
    pred = collective_time("ring", 64 * 1024, SITES, paths())
    # two WAN crossings per trip round a 4-rank ring: 2 x 25 ms / 4 per step, 6 steps
    assert pred.latency_s == pytest.approx(6 * 50e-3 / 4, rel=0.05)
    assert pred.latency_s / pred.time_s > 0.9


def test_latency_term_grows_with_delay():
    slow = PathParams("a", "b", 200.0, 50.0, 100.0, 0.0, 0, 0.0, ("a-b",))
    assert collective_time("ring", 1000, SITES, paths(slow)).latency_s > 1.9 * collective_time(
        "ring", 1000, SITES, paths()).latency_s


def test_hierarchical_predicts_fewer_wan_bytes_and_less_time():
    ring = collective_time("ring", 64 * 2**20, SITES, paths())
    hier = collective_time("hierarchical", 64 * 2**20, SITES, paths())
    assert hier.wan_bytes < ring.wan_bytes
    assert hier.time_s < ring.time_s


def test_window_limit():
    tcp = TcpAssumptions(window_bytes=64 * 1024)
    assert connection_rate_bps(WAN, 1, tcp) == pytest.approx(64 * 1024 * 8 / 0.05)


def test_mathis_limit_for_loss_based_cc_only():
    lossy = PathParams("a", "b", 10_000.0, 25.0, 50.0, 1e-4, 0, 0.0, ("a-b",))
    reno = connection_rate_bps(lossy, 1, TcpAssumptions(cc="reno"))
    assert reno == pytest.approx(MSS_BYTES * 8 / 0.05 * math.sqrt(1.5) / math.sqrt(1e-4))
    cubic = connection_rate_bps(lossy, 1, TcpAssumptions(cc="cubic"))
    assert cubic >= reno  # CUBIC's response function is never below Reno's (TCP-friendly region)
    assert connection_rate_bps(lossy, 1, TcpAssumptions(cc="bbr")) > 10 * cubic


def test_parallel_streams_beat_a_window_limit():
    tcp1 = TcpAssumptions(window_bytes=256 * 1024, streams=1)
    tcp4 = TcpAssumptions(window_bytes=256 * 1024, streams=4)
    big = PathParams("a", "b", 1000.0, 25.0, 50.0, 0.0, 0, 0.0, ("a-b",))
    t1 = flow_time_s(10**8, big, 1, tcp1)[1]
    t4 = flow_time_s(10**8, big, 4, tcp4)[1]
    assert t4 < t1 / 3


def test_bottleneck_is_shared_between_concurrent_flows():
    assert connection_rate_bps(WAN, 4, TcpAssumptions()) == pytest.approx(50e6 * PAYLOAD)


def test_slow_start_costs_rounds_on_a_cold_connection():
    extra = slow_start_extra_s(10**7, 200e6 * PAYLOAD, 0.05, TcpAssumptions())
    # 10 segments doubling to 1.25 MB per RTT: about 7 rounds
    assert 0.2 < extra < 0.4
    cold = flow_time_s(10**7, WAN, 1, TcpAssumptions(), warm=False)[1]
    warm = flow_time_s(10**7, WAN, 1, TcpAssumptions(), warm=True)[1]
    assert cold == pytest.approx(warm + extra)


def test_ceiling():
    assert busbw_ceiling_gbps(WAN) == pytest.approx(0.2 * PAYLOAD)


def test_thousands_of_gpus_at_400g():
    wan = PathParams("w", "e", 400_000.0, 12.0, 24.0, 0.0, 0, 0.0, ("w-e",))
    lan = PathParams("w", "w", 3_200_000.0, 0.005, 0.01, 0.0, 0, 0.0, ())
    sites = ["w"] * 2048 + ["e"] * 2048
    ring = collective_time("ring", 10**9, sites, paths(wan, lan))
    hier = collective_time("hierarchical", 10**9, sites, paths(wan, lan))
    assert ring.n_ranks == 4096
    # flat ring: two boundary edges x 2(n-1)/n x S; hierarchy: 2(m-1) x S
    assert hier.wan_bytes == pytest.approx(ring.wan_bytes / 2, rel=0.01)
    # the flat ring pays ~2n steps of latency; the hierarchy only a few WAN crossings
    assert hier.time_s < ring.time_s


def _params(**kw):
    base = dict(pattern="allreduce", compute_s=0.2, forward_fraction=1 / 3, grad_bytes=8_000_000, algorithm="ring",
                buckets=4, microbatches=4, activation_bytes=1_000_000, layers=4, inner_steps=10,
                outer_bytes=8_000_000)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.mark.parametrize("pattern", ["allreduce", "parameter_server", "fsdp", "pipeline", "diloco"])
def test_step_is_at_least_compute_and_remote_is_slower(pattern):
    remote = training_step_time(_params(pattern=pattern), SITES, paths())
    local = training_step_time(_params(pattern=pattern), ["a"] * 4, paths())
    key = "outer_step_time_s" if pattern == "diloco" else "step_time_s"
    assert remote[key] >= 0.2
    assert remote[key] > local[key]
    assert remote["exposed_comm_s"] >= 0


def test_buckets_overlap_backward():
    one = training_step_time(_params(buckets=1, compute_s=2.0), SITES, paths())
    four = training_step_time(_params(buckets=4, compute_s=2.0), SITES, paths())
    assert four["exposed_comm_s"] < one["exposed_comm_s"]
    assert one["step_time_s"] == pytest.approx(2.0 + one["comm_s"], rel=1e-6)


def test_latency_bound_buckets_queue_behind_each_other():
    tiny = training_step_time(_params(grad_bytes=1000), SITES, paths())
    # each bucket costs the ring's latency (6 steps x 12.5 ms); four of them queue on one comm stream
    assert tiny["step_time_s"] == pytest.approx(0.2 / 3 + 0.4 / 3 / 4 + 4 * 0.075, rel=0.05)


def test_diloco_communicates_h_times_less():
    p = _params(pattern="diloco", inner_steps=100, outer_bytes=4_000_000)
    pred = training_step_time(p, SITES, paths())
    sync = training_step_time(_params(grad_bytes=8_000_000), SITES, paths())
    assert pred["mean_step_time_s"] < sync["step_time_s"]
    assert 0.9 < pred["compute_utilisation"] <= 1.0


def test_unknown_pattern():
    with pytest.raises(ValueError, match="unknown training pattern"):
        training_step_time(_params(pattern="gossip"), SITES, paths())


def test_cold_connections_pay_slow_start_once():
    warm = collective_time("ring", 8 * 2**20, SITES, paths(), tcp=TcpAssumptions(warm=True))
    cold = collective_time("ring", 8 * 2**20, SITES, paths(), tcp=TcpAssumptions(warm=False))
    first_chunk = 2 * 2**20
    once = slow_start_extra_s(first_chunk, connection_rate_bps(WAN, 1, TcpAssumptions()), 0.05, TcpAssumptions())
    assert cold.time_s > warm.time_s
    # paid on the first of the six steps, not on every one
    assert cold.time_s - warm.time_s < 2 * once
