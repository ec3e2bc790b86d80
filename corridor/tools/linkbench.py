"""Link benchmark: how faithfully the userspace delay line reproduces a configured link.

Stage: emulation (root). Builds the link testbed (:mod:`corridor.links.testbed`,
``A --veth-- W (delay line) --veth-- B`` plus a bare ``A --veth-- B`` pair for
reference) and measures it with the shared fidelity measurements
(:mod:`corridor.links.fidelity`): bare and shaped TCP throughput, RTT against
the configured delay, the jitter the delay line adds, and optionally loss and
queueing delay, each read beside the delay line's own counters. Everything it
creates carries the ``corridor-bench-`` (namespaces) or ``cou`` (interfaces)
prefix and the process id, and is removed on every exit path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corridor.links.contract import MTU_BYTES, LinkDirection, default_queue_bytes
from corridor.links.fidelity import (
    DEFAULT_CONGESTION,
    CpuSteal,
    busy_between,
    measure_queue,
    measure_rtt,
    measure_tcp,
    measure_udp,
    read_proc_stat,
)
from corridor.links.steering import traffic_cpus
from corridor.links.testbed import Testbed, testbed

LOSS_CHECK_QUEUE_BYTES = 32 * 1024 * 1024


def link(rate_mbps: float, delay_ms: float, *, queue_bytes: int | None = None, loss: float = 0.0) -> LinkDirection:
    queue = queue_bytes if queue_bytes is not None else default_queue_bytes(rate_mbps, 2 * delay_ms)
    return LinkDirection(rate_mbps=rate_mbps, delay_ms=delay_ms, queue_bytes=max(queue, MTU_BYTES), loss=loss)


@dataclass(frozen=True)
class BenchResult:
    rate_mbps: float
    delay_ms: float
    duration_s: float
    bare_mbps: float
    shaped_mbps: float
    rtt_configured_ms: float
    rtt_median_ms: float
    rtt_error_pct: float
    jitter_p50_ms: float
    jitter_p99_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.shaped_mbps / self.bare_mbps if self.bare_mbps else float("nan")

    def as_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        data["ratio"] = self.ratio
        data["shaped_of_configured"] = self.shaped_mbps / self.rate_mbps
        data.update(self.extra)
        return data


def run_bench(
    rate_mbps: float, delay_ms: float, duration_s: float, *, checks: bool = True,
    congestion: str | None = DEFAULT_CONGESTION, progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Bare veth vs delay line at ``rate_mbps`` / ``delay_ms`` one way, plus optional loss and queue checks."""
    say = progress or (lambda _msg: None)
    direction = link(rate_mbps, delay_ms)
    with testbed(backend="userspace", rate_mbps=rate_mbps, rtt_ms=2 * delay_ms) as bed:
        say("bare veth throughput and jitter")
        bare = measure_tcp(bed, duration_s=duration_s, congestion=congestion, bare=True).goodput_mbps
        # The host's own scheduling noise, so the delay line's figure can be read against it.
        bare_rtt = measure_rtt(bed, bare=True)
        bed.shape(direction, direction)
        say("idle RTT through the delay line")
        rtt = measure_rtt(bed)
        say("throughput through the delay line")
        # what the hypervisor took meanwhile: a stolen virtual CPU leaves the delay line's departures late
        # and how busy the whole machine was, and whether the line left real time because it needed the core
        switches_before = _switches(bed.stats())
        stat_before = read_proc_stat()
        with CpuSteal() as steal:
            shaped = measure_tcp(bed, duration_s=duration_s, omit_s=2, congestion=congestion).goodput_mbps
        busy = busy_between(stat_before, read_proc_stat())
        everything = bed.stats()
        stats = everything["a_to_b"]
        switches_after = _switches(everything)
        extra: dict[str, Any] = {
            **steal.summary(),
            **busy,
            "delayline_policy_switches": (None if switches_before is None or switches_after is None
                                          else switches_after - switches_before),
            "delayline_late_us_p99": stats["late_us_p99"],
            "steering": _steering_words(bed),
            "bare_jitter_p50_ms": bare_rtt.jitter_p50_ms,
            "bare_jitter_p99_ms": bare_rtt.jitter_p99_ms,
            "delayline_drops_queue": stats["drops_queue"],
            "congestion": congestion or "system default",
        }
        if checks:
            say("loss check (1 %, 50,000 UDP packets)")
            extra.update(loss_check(bed))
            say("queue check")
            extra.update(queue_check(bed))
        rtt_configured = 2 * delay_ms
        return BenchResult(
            rate_mbps=rate_mbps, delay_ms=delay_ms, duration_s=duration_s, bare_mbps=bare, shaped_mbps=shaped,
            rtt_configured_ms=rtt_configured, rtt_median_ms=rtt.median_ms,
            rtt_error_pct=(rtt.median_ms - rtt_configured) / rtt_configured * 100, jitter_p50_ms=rtt.jitter_p50_ms,
            jitter_p99_ms=rtt.jitter_p99_ms, extra=extra,
        )


def _switches(stats: dict[str, Any]) -> int | None:
    """How often the line's governor has changed its scheduling policy (None: its stats do not say)."""
    scheduling = stats.get("scheduling")
    value = scheduling.get("switches") if isinstance(scheduling, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _steering_words(bed: Testbed) -> str:
    if bed.placement is None:
        return bed.steering_note
    kept = traffic_cpus({bed.placement.cpu})
    return bed.placement.describe() + (f", traffic on CPUs {','.join(map(str, kept))} (exclusive)" if kept else "")


def loss_check(bed: Testbed, *, loss: float = 0.01, packets: int = 50_000, rate_mbps: float = 150.0) -> dict[str, Any]:
    """Send ``packets`` UDP datagrams through a link with ``loss``; returns configured and measured loss."""
    # A queue far larger than any burst: iperf3 catches up after the loaded machine descheduled it by
    # sending a burst at veth speed, and a BDP-sized queue would add drop-tail losses to the random ones.
    lossy = link(1000.0, 2.0, queue_bytes=LOSS_CHECK_QUEUE_BYTES, loss=loss)
    bed.shape(lossy, link(1000.0, 2.0), seed=7)
    length = 1000
    # The receiver counts up to the last datagram it saw, and the last ones are still on the line when the
    # test ends: send whole seconds' worth, rounded up, so at least ``packets`` are counted.
    seconds = math.ceil(packets * length * 8 / (rate_mbps * 1e6))
    sent = math.ceil(seconds * rate_mbps * 1e6 / (length * 8))
    counts = measure_udp(bed, rate_mbps=rate_mbps, packets=sent, size_bytes=length)
    stats = bed.stats()["a_to_b"]
    return {
        "loss_configured": loss,
        "loss_measured": counts.loss if counts.loss is not None else float("nan"),
        "loss_packets": counts.packets,
        "loss_delayline_drops": stats["drops_loss"],
        "loss_delayline_queue_drops": stats["drops_queue"],
    }


def queue_check(
    bed: Testbed, *, rate_mbps: float = 100.0, queue_bytes: int = 250_000, delay_ms: float = 5.0
) -> dict[str, Any]:
    """Saturate a Q-byte queue at rate R with UDP and compare the typical ping delay with Q / R."""
    figures = measure_queue(bed, link(rate_mbps, delay_ms, queue_bytes=queue_bytes))
    stats = bed.stats()["a_to_b"]
    return {
        "queue_bytes": queue_bytes,
        "queue_rate_mbps": rate_mbps,
        "queue_delay_expected_ms": figures.expected_ms,
        "queue_delay_measured_ms": figures.measured_ms,
        "queue_delay_error_pct": figures.error_pct,
        "queue_delay_ping_max_ms": figures.ping_max_ms,
        "queue_delayline_max_ms": stats["queue_delay_ms_max"],
    }
