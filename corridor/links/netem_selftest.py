"""Fidelity self-test of the netem backend on the running kernel; prints one JSON object.

Stage: emulation (root, needs sch_netem). Run as ``python -m
corridor.links.netem_selftest`` where netem works: inside the virtme-ng VM
(:mod:`corridor.vm`) on a machine whose own kernel lacks it.
``tests/test_netem_vm.py`` runs it and asserts on the JSON.

It builds ``A --veth-- W --veth-- B`` from three scratch namespaces, makes W
a wire with :func:`~corridor.links.netem.wire_setup_argv` and shapes it with
:func:`~corridor.links.netem.egress_argv`, then measures, one link
configuration at a time: idle ping RTT, one iperf3 TCP flow per rate
(received rate from the server's own intervals, ramp-up skipped), UDP loss
over many packets, and UDP reordering with jitter on. Everything it creates is
removed at the end, also on errors. Tool output is parsed by pure functions
so unit tests can feed them captured text.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from corridor import stats
from corridor.errors import EmulationError
from corridor.links.contract import LinkDirection, default_queue_bytes
from corridor.links.netem import burst_bytes, egress_argv, teardown_argv, wire_setup_argv

log = logging.getLogger("corridor.links.netem_selftest")

ADDR_A = "10.77.0.1"
ADDR_B = "10.77.0.2"
PREFIX_LEN = 24
IPERF_PORT = 5277
COMMAND_TIMEOUT_S = 60.0
#: The UDP loss sender sleeps this often to hold its packet rate.
SEND_PACING_S = 0.005
#: A port nobody listens on in B: arrivals are counted by the kernel (Udp NoPorts), no receiver process needed.
DISCARD_PORT = 9
LOSS_PPS = 4000.0
DEFAULT_MSS_BYTES = 1448
#: IP 20 + TCP 20 + timestamp option 12: what a packet adds to its MSS worth of payload.
TCP_IP_HEADER_BYTES = 52


@dataclass(frozen=True)
class Names:
    """Namespaces and interfaces of one self-test (interface prefix ``con``, pid-unique)."""

    ns_a: str
    ns_w: str
    ns_b: str
    if_a: str = "conA0"
    if_wa: str = "conWa"
    if_wb: str = "conWb"
    if_b: str = "conB0"

    @classmethod
    def for_pid(cls, pid: int) -> Names:
        return cls(ns_a=f"corridor-st-a-{pid}", ns_w=f"corridor-st-w-{pid}", ns_b=f"corridor-st-b-{pid}")


def _run(argv: Sequence[str], *, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise EmulationError(f"command failed ({proc.returncode}): {' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def _in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def build(names: Names) -> None:
    """Create the three namespaces, the two veth pairs, addresses and the wire."""
    from corridor.emulation.state import record_scratch_netns

    for ns in (names.ns_a, names.ns_w, names.ns_b):
        record_scratch_netns(ns)  # so `corridor clean` leaves it alone while this process lives
        _run(["ip", "netns", "add", ns])
        _run(_in_ns(ns, ["ip", "link", "set", "lo", "up"]))
    _run(["ip", "link", "add", names.if_a, "netns", names.ns_a, "type", "veth", "peer", "name", names.if_wa,
          "netns", names.ns_w])  # fmt: skip
    _run(["ip", "link", "add", names.if_b, "netns", names.ns_b, "type", "veth", "peer", "name", names.if_wb,
          "netns", names.ns_w])  # fmt: skip
    for ns, intf, addr in ((names.ns_a, names.if_a, ADDR_A), (names.ns_b, names.if_b, ADDR_B)):
        _run(_in_ns(ns, ["ip", "link", "set", "dev", intf, "addrgenmode", "none"]))  # no IPv6 chatter in counts
        _run(_in_ns(ns, ["ip", "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", intf]))
        _run(_in_ns(ns, ["ip", "link", "set", intf, "up"]))
        # The host setting recommended for the netem backend: single segments, exact IP-byte accounting.
        _run(_in_ns(ns, ["ethtool", "-K", intf, "tso", "off", "gso", "off"]))
    for argv in wire_setup_argv(names.if_wa, names.if_wb):
        _run(_in_ns(names.ns_w, argv))


def shape(names: Names, a_to_b: LinkDirection, b_to_a: LinkDirection) -> None:
    """(Re)configure both directions of the wire."""
    for intf, direction in ((names.if_wb, a_to_b), (names.if_wa, b_to_a)):
        subprocess.run(_in_ns(names.ns_w, teardown_argv(intf)[0]), capture_output=True, check=False)
        for argv in egress_argv(intf, direction):
            _run(_in_ns(names.ns_w, argv))


def destroy(names: Names) -> None:
    """Remove the namespaces (their veths go with them); never raises."""
    from corridor.emulation.state import forget_scratch_netns

    for ns in (names.ns_a, names.ns_w, names.ns_b):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        forget_scratch_netns(ns)


def parse_ping_rtts_ms(output: str) -> list[float]:
    """RTTs in ms from ``ping`` output lines such as ``... time=50.3 ms``."""
    rtts = []
    for line in output.splitlines():
        if "time=" in line:
            value = line.split("time=", 1)[1].split()[0]
            rtts.append(float(value))
    return rtts


def parse_iperf_received_mbps(server_json: dict[str, Any], *, skip_s: float) -> float:
    """Receiver rate from an iperf3 server report, skipping the first ``skip_s`` seconds (ramp-up)."""
    total_bytes = 0.0
    total_s = 0.0
    for interval in server_json.get("intervals", []):
        summary = interval["sum"]
        if summary["start"] < skip_s - 1e-6 or summary["seconds"] < 0.5:
            continue
        total_bytes += summary["bytes"]
        total_s += summary["seconds"]
    if total_s <= 0:
        raise EmulationError("iperf3 server report has no intervals after the ramp-up")
    return total_bytes * 8 / total_s / 1e6


def parse_iperf_udp(server_json: dict[str, Any]) -> tuple[int, int, int]:
    """(packets, lost, out of order) from an iperf3 UDP *server* report.

    The client's report repeats the server's loss count but not its
    out-of-order count (the client's own is always 0), so only the server's
    report can show reordering.
    """
    end = server_json.get("end", {})
    udp_streams = [stream["udp"] for stream in end.get("streams", []) if "udp" in stream]
    if not udp_streams:
        raise EmulationError(f"iperf3 UDP report has no stream totals: {json.dumps(server_json)[-800:]}")
    packets = sum(int(stream["packets"]) for stream in udp_streams)
    lost = sum(int(stream["lost_packets"]) for stream in udp_streams)
    out_of_order = sum(int(stream.get("out_of_order", 0)) for stream in udp_streams)
    return packets, lost, out_of_order


def _iperf(names: Names, client_args: Sequence[str], *, timeout_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one iperf3 test from A to B; returns (client report, server report)."""
    server = subprocess.Popen(
        _in_ns(names.ns_b, ["iperf3", "-s", "-1", "-J", "-p", str(IPERF_PORT)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        client = subprocess.run(
            _in_ns(names.ns_a, ["iperf3", "-c", ADDR_B, "-p", str(IPERF_PORT), "-J", *client_args]),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        out, err = server.communicate(timeout=timeout_s)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    if client.returncode != 0 or server.returncode != 0:
        raise EmulationError(
            f"iperf3 failed: client {client.stdout[-500:]} {client.stderr[-300:]}; server {err[-300:]}"
        )
    client_report: dict[str, Any] = json.loads(client.stdout)
    server_report: dict[str, Any] = json.loads(out)
    return client_report, server_report


def parse_udp_noports(snmp_text: str) -> int:
    """``Udp: NoPorts`` from /proc/net/snmp: datagrams that arrived for a port nobody listens on."""
    rows = [line.split() for line in snmp_text.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2:
        raise EmulationError("no Udp lines in /proc/net/snmp")
    header, values = rows[0], rows[1]
    return int(values[header.index("NoPorts")])


def _udp_noports(ns: str) -> int:
    return parse_udp_noports(_run(_in_ns(ns, ["cat", "/proc/net/snmp"])))


def _link_stats(ns: str, intf: str) -> dict[str, Any]:
    data = json.loads(_run(_in_ns(ns, ["ip", "-s", "-j", "link", "show", "dev", intf])))
    stats: dict[str, Any] = data[0]["stats64"]
    return stats


def send_udp(dst: str, port: int, *, count: int, pps: float, size_bytes: int) -> int:
    """Send ``count`` datagrams at about ``pps`` to a closed port; returns how many the kernel accepted."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = bytes(size_bytes)
    sent = 0
    batch = max(1, int(pps * SEND_PACING_S))
    started = time.monotonic()
    try:
        while sent < count:
            for _ in range(min(batch, count - sent)):
                try:
                    sock.sendto(payload, (dst, port))
                    sent += 1
                except OSError as exc:  # ENOBUFS: a local queue is full; back off and retry
                    if exc.errno != errno.ENOBUFS:
                        raise
                    time.sleep(SEND_PACING_S)
            wait_s = started + sent / pps - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
    finally:
        sock.close()
    return sent


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


def measure_ceiling(names: Names, *, duration_s: int) -> float:
    """Unshaped TCP rate through the wire: what this machine (or VM) can carry at all."""
    for intf in (names.if_wa, names.if_wb):
        subprocess.run(_in_ns(names.ns_w, teardown_argv(intf)[0]), capture_output=True, check=False)
    _, server_report = _iperf(names, ["-t", str(duration_s)], timeout_s=duration_s + 30)
    return parse_iperf_received_mbps(server_report, skip_s=1)


def _ping_rtts_ms(names: Names, count: int) -> list[float]:
    out = _run(_in_ns(names.ns_a, ["ping", "-n", "-c", str(count), "-i", "0.02", ADDR_B]), timeout_s=count * 0.2 + 30)
    return parse_ping_rtts_ms(out)[1:]  # the first one also pays for ARP


def measure_rtt(names: Names, *, delay_ms: float, count: int) -> dict[str, Any]:
    """Idle ping RTT with ``delay_ms`` each way, and the same path's RTT with no delay as a baseline."""
    shape(names, direction(100.0, 0.0), direction(100.0, 0.0))
    baseline = _ping_rtts_ms(names, count // 4)
    link = direction(100.0, delay_ms)
    shape(names, link, link)
    rtts = sorted(_ping_rtts_ms(names, count))
    return {
        "configured_rtt_ms": 2 * delay_ms,
        "samples": len(rtts),
        "median_ms": stats.median(rtts),
        "min_ms": rtts[0],
        "p99_ms": rtts[min(len(rtts) - 1, len(rtts) * 99 // 100)],
        "baseline_median_ms": stats.median(baseline),
    }


class TimerLateness:
    """How late 1 ms sleeps wake up while a measurement runs: how starved this (virtual) machine is.

    tbf holds its rate only if its dequeue path wakes within one bucket's worth
    of time; a guest whose timers fire tens of milliseconds late (qemu TCG on a
    busy host) loses tokens, and then the figure measures the machine, not the link.
    """

    def __init__(self, *, realtime_priority: int = 0) -> None:
        self._late_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._rt = realtime_priority

    def _loop(self) -> None:
        if self._rt > 0:
            # a real-time sleeper sees the machine's stalls, not its turn behind other threads here
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self._rt))
            except OSError:
                pass
        while not self._stop.is_set():
            before = time.monotonic()
            time.sleep(0.001)
            self._late_ms.append((time.monotonic() - before) * 1e3 - 1.0)

    def __enter__(self) -> TimerLateness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self, *, absorbed_ms: float) -> dict[str, float]:
        """Percentiles, and the share of the time stalled beyond ``absorbed_ms`` (what a bucket covers)."""
        ordered = sorted(self._late_ms) or [0.0]
        elapsed_ms = sum(1.0 + late for late in self._late_ms) or 1.0
        stalled_ms = sum(max(0.0, late - absorbed_ms) for late in self._late_ms)
        return {
            "p50_ms": ordered[len(ordered) // 2],
            "p99_ms": ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)],
            "max_ms": ordered[-1],
            "stalled_fraction": stalled_ms / elapsed_ms,
        }


def measure_tcp(names: Names, *, rate_mbps: float, delay_ms: float, duration_s: int, skip_s: int) -> dict[str, Any]:
    link = direction(rate_mbps, delay_ms)
    shape(names, link, link)
    with TimerLateness() as lateness:
        client_report, server_report = _iperf(names, ["-t", str(duration_s)], timeout_s=duration_s + 30)
    goodput_mbps = parse_iperf_received_mbps(server_report, skip_s=skip_s)
    mss_bytes = int(client_report.get("start", {}).get("tcp_mss_default", DEFAULT_MSS_BYTES))
    burst_ms = burst_bytes(link) * 8 / link.rate_bps * 1e3
    ip_mbps = goodput_mbps * (mss_bytes + TCP_IP_HEADER_BYTES) / mss_bytes
    return {
        "rate_mbps": rate_mbps,
        "delay_ms": delay_ms,
        "goodput_mbps": goodput_mbps,
        "mss_bytes": mss_bytes,
        "ip_mbps": ip_mbps,
        "ratio": ip_mbps / rate_mbps,
        "burst_ms": burst_ms,
        "timer_lateness": lateness.summary(absorbed_ms=burst_ms),
    }


def measure_udp(
    names: Names,
    *,
    loss: float,
    packets: int,
    send_mbps: float,
    jitter_ms: float = 0.0,
    delay_ms: float = 5.0,
    reorder: bool = False,
) -> dict[str, Any]:
    link = direction(1000.0, delay_ms, loss=loss, jitter_ms=jitter_ms, reorder=reorder)
    shape(names, link, direction(1000.0, delay_ms))
    size_bytes = 1000
    _, report = _iperf(
        names,
        ["-u", "-b", f"{send_mbps}M", "-l", str(size_bytes), "-k", str(packets)],
        timeout_s=packets * size_bytes * 8 / (send_mbps * 1e6) + 60,
    )
    packets_seen, lost, out_of_order = parse_iperf_udp(report)
    return {
        "configured_loss": loss,
        "jitter_ms": jitter_ms,
        "reorder_allowed": reorder,
        "packets": packets_seen,
        "lost": lost,
        "measured_loss": lost / packets_seen if packets_seen else None,
        "out_of_order": out_of_order,
    }


def measure_loss(names: Names, *, loss: float, packets: int, pps: float, delay_ms: float = 5.0) -> dict[str, Any]:
    """Random loss counted by the kernel at B (Udp NoPorts), so no receiver process limits the packet rate.

    Drops anywhere else on the path (a full veth backlog when the machine is
    starved) are read from the interface counters and reported beside it.
    """
    link = direction(1000.0, delay_ms, loss=loss)
    shape(names, link, direction(1000.0, delay_ms))
    arrived_before = _udp_noports(names.ns_b)
    stats_before = {intf: _link_stats(ns, intf) for ns, intf in _path_interfaces(names)}
    sender = [sys.executable, "-m", "corridor.links.netem_selftest", "send", "--dst", ADDR_B]
    sender += ["--port", str(DISCARD_PORT), "--count", str(packets), "--pps", str(pps)]
    sent = int(json.loads(_run(_in_ns(names.ns_a, sender), timeout_s=packets / pps * 4 + 60))["sent"])
    time.sleep(0.5 + 2 * delay_ms / 1e3)  # let the last packets through the delay
    arrived = _udp_noports(names.ns_b) - arrived_before
    path_drops = 0
    for ns, intf in _path_interfaces(names):
        after = _link_stats(ns, intf)
        before = stats_before[intf]
        path_drops += after["tx"]["dropped"] - before["tx"]["dropped"]
        path_drops += after["rx"]["dropped"] - before["rx"]["dropped"]
    return {
        "configured_loss": loss,
        "packets": sent,
        "arrived": arrived,
        "lost": sent - arrived,
        "measured_loss": (sent - arrived) / sent if sent else None,
        "path_drops": path_drops,
        "pps": pps,
    }


def _path_interfaces(names: Names) -> list[tuple[str, str]]:
    return [(names.ns_a, names.if_a), (names.ns_w, names.if_wa), (names.ns_w, names.if_wb), (names.ns_b, names.if_b)]


def run_selftest(*, quick: bool = False) -> dict[str, Any]:
    """Build, measure, tear down; returns the figures."""
    names = Names.for_pid(os.getpid())
    started = time.monotonic()
    result: dict[str, Any] = {"kernel": platform.release()}
    destroy(names)
    try:
        build(names)
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("ceiling_mbps", lambda: measure_ceiling(names, duration_s=4)),
            ("rtt", lambda: measure_rtt(names, delay_ms=25.0, count=50 if quick else 200)),
            (
                "tcp",
                lambda: [
                    measure_tcp(names, rate_mbps=rate, delay_ms=25.0, duration_s=5 if quick else 8, skip_s=2)
                    for rate in (10.0, 100.0)
                ],
            ),
            ("udp_loss", lambda: measure_loss(names, loss=0.01, packets=5000 if quick else 50000, pps=LOSS_PPS)),
            (
                "udp_jitter",
                lambda: measure_udp(names, loss=0.0, packets=1000 if quick else 3000, send_mbps=4, jitter_ms=2.0),
            ),
            (
                # The control: the same jitter with reordering allowed must reorder, or the check above proves nothing.
                "udp_jitter_reorder_allowed",
                lambda: measure_udp(names, loss=0.0, packets=1000, send_mbps=4, jitter_ms=2.0, reorder=True),
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
    finally:
        destroy(names)
    result["duration_s"] = time.monotonic() - started
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corridor.links.netem_selftest", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run, not the acceptance figures)")
    sub = parser.add_subparsers(dest="command")
    send = sub.add_parser("send", help="(internal) the UDP loss sender, run inside namespace A")
    send.add_argument("--dst", required=True)
    send.add_argument("--port", type=int, required=True)
    send.add_argument("--count", type=int, required=True)
    send.add_argument("--pps", type=float, required=True)
    send.add_argument("--size", type=int, default=200, help="UDP payload bytes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.command == "send":
        sent = send_udp(args.dst, args.port, count=args.count, pps=args.pps, size_bytes=args.size)
        sys.stdout.write(json.dumps({"sent": sent}) + "\n")
        return 0
    result = run_selftest(quick=args.quick)
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
