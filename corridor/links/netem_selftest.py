"""Fidelity self-test of the netem backend on the running kernel; prints one JSON object.

Stage: emulation (root, needs sch_netem). Run as ``python -m
corridor.links.netem_selftest`` where netem works: inside the virtme-ng VM
(:mod:`corridor.tools.vm`) on a machine whose own kernel lacks it.
``tests/test_netem_vm.py`` runs it and asserts on the JSON.

It builds the link testbed (:mod:`corridor.links.testbed`) with the netem
backend, ``A --veth-- W --veth-- B`` where W is a cable made by
:func:`~corridor.links.netem.wire_setup_argv` and shaped by
:func:`~corridor.links.netem.egress_argv`, and runs the shared fidelity
measurements (:mod:`corridor.links.fidelity`) one link configuration at a
time: idle ping RTT, one iperf3 TCP flow per rate (received rate from the
server's own intervals, ramp-up skipped), UDP loss over many packets counted
by the kernel, and UDP reordering with jitter on. Everything it creates is
removed at the end, also on errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from corridor.errors import EmulationError
from corridor.links.contract import LinkDirection, default_queue_bytes
from corridor.links.fidelity import (
    TimerLateness,
    measure_loss_counted,
    measure_rtt,
    measure_tcp,
    measure_udp,
)
from corridor.links.netem import burst_bytes
from corridor.links.testbed import Testbed, testbed

log = logging.getLogger("corridor.links.netem_selftest")

LOSS_PPS = 4000.0
#: IP 20 + TCP 20 + timestamp option 12: what a packet adds to its MSS worth of payload.
TCP_IP_HEADER_BYTES = 52
#: Pings of the RTT figure go this far apart.
PING_INTERVAL_S = 0.02


def direction(
    rate_mbps: float, delay_ms: float, *, loss: float = 0.0, jitter_ms: float = 0.0, reorder: bool = False
) -> LinkDirection:
    """One direction with the default BDP queue for a symmetric link."""
    return LinkDirection(
        rate_mbps=rate_mbps,
        delay_ms=delay_ms,
        queue_bytes=default_queue_bytes(rate_mbps, 2 * delay_ms),
        loss=loss,
        jitter_ms=jitter_ms,
        reorder=reorder,
    )


def measure_ceiling(bed: Testbed, *, duration_s: int) -> float:
    """Unshaped TCP rate through the wire: what this machine (or VM) can carry at all."""
    bed.clear()
    return measure_tcp(bed, duration_s=duration_s, skip_s=1).goodput_mbps


def measure_rtt_figures(bed: Testbed, *, delay_ms: float, count: int) -> dict[str, Any]:
    """Idle ping RTT with ``delay_ms`` each way, the same path's RTT with no delay as a baseline, and how late
    1 ms sleeps woke meanwhile (``timer_lateness``)."""
    bed.shape(direction(100.0, 0.0), direction(100.0, 0.0))
    baseline = measure_rtt(bed, count=max(1, count // 4), interval_s=PING_INTERVAL_S)
    link = direction(100.0, delay_ms)
    bed.shape(link, link)
    # netem holds each packet on the guest's timers: a starved guest (qemu TCG on a busy host) delays them
    with TimerLateness() as lateness:
        rtt = measure_rtt(bed, count=count, interval_s=PING_INTERVAL_S)
    return {
        "timer_lateness": lateness.summary(absorbed_ms=0.0),
        "configured_rtt_ms": 2 * delay_ms,
        "samples": rtt.samples,
        "median_ms": rtt.median_ms,
        "min_ms": rtt.min_ms,
        "p99_ms": rtt.p99_ms,
        "baseline_median_ms": baseline.median_ms,
    }


def measure_tcp_figures(bed: Testbed, *, rate_mbps: float, delay_ms: float, duration_s: int,
                        skip_s: int) -> dict[str, Any]:
    """One TCP flow through a symmetric link; its goodput as IP rate, read against how starved the machine was."""
    link = direction(rate_mbps, delay_ms)
    bed.shape(link, link)
    with TimerLateness() as lateness:
        flow = measure_tcp(bed, duration_s=duration_s, skip_s=skip_s)
    burst_ms = burst_bytes(link) * 8 / link.rate_bps * 1e3
    ip_mbps = flow.goodput_mbps * (flow.mss_bytes + TCP_IP_HEADER_BYTES) / flow.mss_bytes
    return {
        "rate_mbps": rate_mbps,
        "delay_ms": delay_ms,
        "goodput_mbps": flow.goodput_mbps,
        "mss_bytes": flow.mss_bytes,
        "ip_mbps": ip_mbps,
        "ratio": ip_mbps / rate_mbps,
        "burst_ms": burst_ms,
        "timer_lateness": lateness.summary(absorbed_ms=burst_ms),
    }


def measure_udp_figures(
    bed: Testbed,
    *,
    loss: float,
    packets: int,
    send_mbps: float,
    jitter_ms: float = 0.0,
    delay_ms: float = 5.0,
    reorder: bool = False,
) -> dict[str, Any]:
    """UDP through a link with ``loss`` and ``jitter_ms`` one way: loss and reordering as iperf3 counts them."""
    link = direction(1000.0, delay_ms, loss=loss, jitter_ms=jitter_ms, reorder=reorder)
    bed.shape(link, direction(1000.0, delay_ms))
    counts = measure_udp(bed, rate_mbps=send_mbps, packets=packets, size_bytes=1000)
    return {
        "configured_loss": loss,
        "jitter_ms": jitter_ms,
        "reorder_allowed": reorder,
        "packets": counts.packets,
        "lost": counts.lost,
        "measured_loss": counts.loss,
        "out_of_order": counts.out_of_order,
    }


def measure_loss_figures(bed: Testbed, *, loss: float, packets: int, pps: float,
                         delay_ms: float = 5.0) -> dict[str, Any]:
    """Random loss counted by the kernel at B, with drops elsewhere on the path beside it."""
    link = direction(1000.0, delay_ms, loss=loss)
    bed.shape(link, direction(1000.0, delay_ms))
    counted = measure_loss_counted(bed, packets=packets, pps=pps, settle_s=0.5 + 2 * delay_ms / 1e3)
    return {
        "configured_loss": loss,
        "packets": counted.sent,
        "arrived": counted.arrived,
        "lost": counted.sent - counted.arrived,
        "measured_loss": counted.loss,
        "path_drops": counted.path_drops,
        "pps": pps,
    }


def run_selftest(*, quick: bool = False) -> dict[str, Any]:
    """Build, measure, tear down; returns the figures."""
    started = time.monotonic()
    result: dict[str, Any] = {"kernel": platform.release()}
    try:
        with testbed(str(os.getpid() % 10_000_000), backend="netem", kind="st", rate_mbps=100.0,
                     rtt_ms=50.0) as bed:
            steps: list[tuple[str, Callable[[], Any]]] = [
                ("ceiling_mbps", lambda: measure_ceiling(bed, duration_s=4)),
                ("rtt", lambda: measure_rtt_figures(bed, delay_ms=25.0, count=50 if quick else 200)),
                (
                    "tcp",
                    lambda: [
                        measure_tcp_figures(bed, rate_mbps=rate, delay_ms=25.0, duration_s=5 if quick else 8,
                                            skip_s=2)
                        for rate in (10.0, 100.0)
                    ],
                ),
                ("udp_loss",
                 lambda: measure_loss_figures(bed, loss=0.01, packets=5000 if quick else 50000, pps=LOSS_PPS)),
                (
                    "udp_jitter",
                    lambda: measure_udp_figures(bed, loss=0.0, packets=1000 if quick else 3000, send_mbps=4,
                                                jitter_ms=2.0),
                ),
                (
                    # The control: the same jitter with reordering allowed must reorder, or the check above
                    # proves nothing.
                    "udp_jitter_reorder_allowed",
                    lambda: measure_udp_figures(bed, loss=0.0, packets=1000, send_mbps=4, jitter_ms=2.0,
                                                reorder=True),
                ),
            ]
            for key, step in steps:
                # One failed measurement must not hide the others' figures.
                try:
                    result[key] = step()
                except (EmulationError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
                    result[key] = {"error": str(exc)}
                log.info("%s: %s", key, json.dumps(result[key]))
    except EmulationError as exc:
        result["error"] = str(exc)
    result["duration_s"] = time.monotonic() - started
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corridor.links.netem_selftest", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run, not the acceptance figures)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    result = run_selftest(quick=args.quick)
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
