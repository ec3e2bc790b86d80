"""Measurement helpers for scripted topology tests (used with the pytest plugin).

Stage: workload run (root). Thin wrappers over the same argv builders and
parsers that ``corridor check`` uses, between any two hosts of a running
network, returning numbers a test can assert on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corridor import stats
from corridor.errors import EmulationError
from corridor.tools.check import (
    iperf_pair,
    iperf_server_argv,
    iperf_tcp_argv,
    iperf_udp_argv,
    parse_iperf_tcp,
    parse_iperf_udp,
    parse_ping,
    percentile,
    ping_argv,
)


@dataclass(frozen=True)
class RttResult:
    samples_ms: tuple[float, ...]
    sent: int

    @property
    def median(self) -> float:
        return stats.median(self.samples_ms)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)

    @property
    def loss(self) -> float:
        return 1.0 - len(self.samples_ms) / self.sent


def rtt_ms(net: Any, src: str, dst: str, *, count: int = 50, interval_s: float = 0.02) -> RttResult:
    """Ping ``dst`` from ``src`` after one echo that resolves ARP along the way."""
    net.run(src, ["ping", "-n", "-c", "1", "-W", "3", net.host_ip(dst)], timeout_s=10)
    result = net.run(src, ping_argv(net.host_ip(dst), count=count, interval_s=interval_s),
                     timeout_s=count * interval_s + 30)
    samples = parse_ping(result.stdout)
    if not samples:
        raise EmulationError(f"no ping replies from {dst} to {src}: {result.stdout[-300:]}")
    return RttResult(tuple(samples), count)


def tcp_goodput_mbps(net: Any, src: str, dst: str, *, duration_s: float = 5.0, omit_s: float = 2.0) -> float:
    """One TCP flow src -> dst with iperf3; receiver-side goodput in Mbit/s."""
    ip = net.host_ip(dst)
    out = iperf_pair(net, server=dst, client=src, server_argv=iperf_server_argv(ip),
                     client_argv=iperf_tcp_argv(ip, duration_s=duration_s, omit_s=omit_s),
                     timeout_s=duration_s + omit_s + 30)
    return parse_iperf_tcp(out)


def udp_loss(net: Any, src: str, dst: str, *, packets: int = 10000, rate_mbps: float = 50.0,
             size_bytes: int = 1200) -> tuple[int, int]:
    """(lost, sent) datagrams of a UDP stream src -> dst."""
    ip = net.host_ip(dst)
    out = iperf_pair(net, server=dst, client=src, server_argv=iperf_server_argv(ip),
                     client_argv=iperf_udp_argv(ip, rate_mbps=rate_mbps, packets=packets, size_bytes=size_bytes),
                     timeout_s=packets * size_bytes * 8 / (rate_mbps * 1e6) + 40)
    return parse_iperf_udp(out)


def run_training(net: Any, params: Mapping[str, Any], ranks: Sequence[str], *, seed: int = 1,
                 timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Run a training workload (see corridor.workloads.training.run) over ``ranks``; returns its records."""
    from corridor.workloads.training import run as training
    validated = training.validate(params, where="test")
    return training.run(net, validated, hosts=list(ranks), seed=seed, timeout_s=timeout_s)


def ring_busbw_mbps(net: Any, ranks: Sequence[str], *, size_bytes: int = 32 * 1024 * 1024, iters: int = 3,
                    algorithm: str = "ring", timeout_s: float = 300.0) -> float:
    """nccl-tests bus bandwidth (Mbit/s) of one collective size over ``ranks``, median of ``iters`` runs."""
    from corridor.workloads.training import run as training
    records = training.run_collective_sweep(net, hosts=list(ranks), algorithm=algorithm, sizes_bytes=[size_bytes],
                                            iters=iters, timeout_s=timeout_s)
    (record,) = [r for r in records if r.get("kind") == "collective"]
    return float(record["busbw_gbps"]) * 1e3


def run_inference(net: Any, params: Mapping[str, Any], hosts: Mapping[str, Sequence[str]], *, seed: int = 1,
                  timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Run an inference workload (see corridor.workloads.inference.run); returns its request records."""
    from corridor.workloads.inference import run as inference
    validated = inference.validate(params, where="test")
    return inference.run(net, validated, hosts={k: list(v) for k, v in hosts.items()}, seed=seed,
                         timeout_s=timeout_s)
