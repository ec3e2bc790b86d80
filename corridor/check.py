"""``corridor check``: measure every WAN link against its configuration.

Stage: workload run (root) for :func:`check_network`; the argv builders,
parsers and the tolerance arithmetic are pure and unit-tested with captured
tool output. Each WAN link is measured router to router over its own transit
subnet, so the measurement crosses exactly that wire and nothing else:

- RTT: ``ping`` (many samples, 10 ms apart), median and p99 against the
  configured a->b plus b->a delay plus the ping packets' serialisation;
- throughput: one TCP flow with ``iperf3`` (buffers sized for the path by the
  network, the first seconds of slow start omitted) against the TCP goodput
  the configured rate allows after Ethernet/IP/TCP headers;
- loss: UDP with ``iperf3`` at a fraction of the rate, measured loss against
  the configured loss with a binomial tolerance.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from corridor.errors import EmulationError
from corridor.links.contract import LinkDirection
from corridor.plan import WanLinkPlan

#: The link contract counts IP bytes (both backends): a full TCP segment is a 1,500-byte IP packet
#: carrying 1,448 bytes of payload (IP 20 + TCP 20 + timestamp option 12 of header).
TCP_PAYLOAD_BYTES = 1448
TCP_PACKET_BYTES = 1500
PING_PACKET_BYTES = 84  # 56 bytes of data + ICMP 8 + IP 20
IPERF_PORT = 5201


@dataclass(frozen=True)
class Tolerances:
    """How far a measurement may stray before the link fails the check."""

    rtt_fraction: float = 0.02
    rtt_floor_ms: float = 0.3
    #: Added on top, for machines whose timers fire late (a qemu guest without KVM: 2-5 ms).
    rtt_allowance_ms: float = 0.0
    throughput_low: float = 0.90
    throughput_high: float = 1.03
    loss_sigmas: float = 4.0
    loss_floor: float = 0.0005


@dataclass
class Measurement:
    """One quantity of one link: configured (expected), measured, error and verdict."""

    link: str
    metric: str
    unit: str
    expected: float
    measured: float | None
    low: float
    high: float
    detail: str = ""
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.ok = self.measured is not None and self.low <= self.measured <= self.high

    @property
    def error_pct(self) -> float | None:
        if self.measured is None or self.expected == 0:
            return None
        return (self.measured - self.expected) / self.expected * 100.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_pct"] = self.error_pct
        return data


# -- argv builders ----------------------------------------------------------------
def ping_argv(dest: str, *, count: int, interval_s: float = 0.01) -> list[str]:
    return ["ping", "-n", "-c", str(count), "-i", f"{interval_s:g}", "-W", "5", dest]


def iperf_server_argv(bind: str, *, port: int = IPERF_PORT) -> list[str]:
    return ["iperf3", "-s", "-1", "-B", bind, "-p", str(port), "--json"]


def iperf_tcp_argv(dest: str, *, duration_s: float, omit_s: float, port: int = IPERF_PORT) -> list[str]:
    return ["iperf3", "-c", dest, "-p", str(port), "-t", f"{duration_s:g}", "-O", f"{omit_s:g}", "--json"]


def iperf_udp_argv(dest: str, *, rate_mbps: float, packets: int, size_bytes: int, port: int = IPERF_PORT,
                   socket_buffer_bytes: int = 8 * 1024 * 1024) -> list[str]:
    """UDP stream of ``packets`` datagrams. ``-w`` sizes both ends' socket buffers (iperf3 passes it to
    the server), so a receiver that is descheduled for a moment on a busy machine does not overflow
    its default 208 KiB buffer and count host drops as link loss."""
    return [
        "iperf3", "-c", dest, "-p", str(port), "-u", "-b", f"{rate_mbps:.6g}M", "-l", str(size_bytes),
        "-k", str(packets), "-w", str(socket_buffer_bytes), "--json",
    ]


# -- parsers -----------------------------------------------------------------------
_PING_TIME = re.compile(r"time[=<]([\d.]+) ms")


def parse_ping(output: str) -> list[float]:
    """RTT samples in ms from ping's per-reply lines."""
    return [float(m.group(1)) for m in _PING_TIME.finditer(output)]


def parse_iperf_tcp(output: str) -> float:
    """Steady-state receiver goodput in Mbit/s from the server's ``iperf3 --json`` of a TCP test.

    The server's own end summary divides every byte, the omitted slow-start ones included,
    by the unomitted time, and its first unomitted interval absorbs whatever the reader had
    not yet drained when omission ended. So: the full-length unomitted intervals after the
    first one; the end summary only when a test is too short to have them.
    """
    data = _iperf_json(output)
    intervals = [i["sum"] for i in data.get("intervals", []) if not i["sum"].get("omitted")]
    steady = [i for i in intervals[1:] if i["seconds"] >= 0.5]
    if steady:
        return sum(i["bytes"] for i in steady) * 8 / sum(i["seconds"] for i in steady) / 1e6
    end = data.get("end", {})
    received = end.get("sum_received") or end.get("sum")
    if not received:
        raise EmulationError("iperf3 reported no received totals")
    return float(received["bits_per_second"]) / 1e6


def parse_iperf_udp(output: str) -> tuple[int, int]:
    """(lost, total) datagrams from ``iperf3 --json`` of a UDP test (receiver side)."""
    data = _iperf_json(output)
    end = data.get("end", {})
    summary = end.get("sum_received") or end.get("sum")
    if not summary:
        raise EmulationError("iperf3 reported no UDP totals")
    return int(summary["lost_packets"]), int(summary["packets"])


def _iperf_json(output: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(output)
    except json.JSONDecodeError as exc:
        raise EmulationError(f"iperf3 printed no JSON: {output[:300]!r}") from exc
    if "error" in data:
        raise EmulationError(f"iperf3: {data['error']}")
    return data


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# -- expectations ----------------------------------------------------------------
def expected_rtt_ms(link: WanLinkPlan) -> float:
    """Idle ping RTT across one link: both one-way delays plus both serialisations."""
    a, b = link.a_to_b, link.b_to_a
    return a.delay_ms + b.delay_ms + (a.serialisation_s(PING_PACKET_BYTES) + b.serialisation_s(PING_PACKET_BYTES)) * 1e3


def expected_tcp_goodput_mbps(direction: LinkDirection) -> float:
    """What one saturating TCP flow can deliver: the rate less header overhead, less loss."""
    goodput = direction.rate_mbps * TCP_PAYLOAD_BYTES / TCP_PACKET_BYTES
    return goodput * (1.0 - direction.loss)


def loss_bounds(expected: float, packets: int, tol: Tolerances) -> tuple[float, float]:
    sigma = math.sqrt(max(expected * (1 - expected), 1e-12) / max(packets, 1))
    half = max(tol.loss_sigmas * sigma, tol.loss_floor)
    return max(0.0, expected - half), expected + half


def udp_rate_mbps(direction: LinkDirection) -> float:
    """UDP probe rate: a quarter of the link, at most 50 Mbit/s.

    The loss test measures the configured random loss, so nothing else may drop: not the
    link's queue (a quarter of the rate never fills it) and not the hosts (a few thousand
    datagrams a second is far below what the receiver's socket and the emulator handle).
    """
    return min(direction.rate_mbps * 0.25, 50.0)


# -- running -----------------------------------------------------------------------
@dataclass(frozen=True)
class CheckOptions:
    ping_count: int = 200
    tcp_duration_s: float = 6.0
    tcp_omit_s: float = 2.0
    udp_packets: int = 20000
    udp_size_bytes: int = 1200
    tolerances: Tolerances = Tolerances()
    measure_throughput: bool = True
    measure_loss: bool = True


def check_network(
    net: Any,
    options: CheckOptions = CheckOptions(),
    progress: Callable[[str], None] | None = None,
    links: Sequence[str] | None = None,
) -> list[Measurement]:
    """Measure every WAN link of a running :class:`CorridorNetwork`."""
    results: list[Measurement] = []
    for link in net.plan.wan_links:
        if links and link.name not in links:
            continue
        results.extend(check_link(net, link, options, progress))
    return results


def check_link(
    net: Any, link: WanLinkPlan, options: CheckOptions, progress: Callable[[str], None] | None = None
) -> list[Measurement]:
    say = progress or (lambda _msg: None)
    tol = options.tolerances
    router_a = net.plan.site(link.a).router
    router_b = net.plan.site(link.b).router
    out: list[Measurement] = []

    say(f"{link.name}: RTT ({options.ping_count} pings)")
    # Resolve ARP across the transit subnet first; echoes queued behind it would read one RTT high.
    net.run(router_a, ["ping", "-n", "-c", "1", "-W", "3", link.ip_b], timeout_s=10)
    ping = net.run(router_a, ping_argv(link.ip_b, count=options.ping_count),
                   timeout_s=options.ping_count * 0.05 + 30)
    samples = parse_ping(ping.stdout)
    expected = expected_rtt_ms(link)
    half = max(expected * tol.rtt_fraction, tol.rtt_floor_ms) + tol.rtt_allowance_ms
    received = len(samples)
    if samples:
        median = statistics.median(samples)
        p99 = percentile(samples, 99)
        detail = f"{received}/{options.ping_count} replies, p99 {p99:.3f} ms, jitter p99-p50 {p99 - median:.3f} ms"
    else:
        median = None
        detail = f"no replies: {ping.stdout[-200:]} {ping.stderr[-200:]}"
    out.append(Measurement(link.name, "rtt_median", "ms", expected, median, expected - half, expected + half, detail))

    if options.measure_throughput:
        for src, dst, dst_ip, direction, label in (
            (router_a, router_b, link.ip_b, link.a_to_b, "a_to_b"),
            (router_b, router_a, link.ip_a, link.b_to_a, "b_to_a"),
        ):
            say(f"{link.name}: TCP throughput {label} ({options.tcp_duration_s:g} s)")
            goodput = iperf_pair(
                net, server=dst, client=src,
                server_argv=iperf_server_argv(dst_ip),
                client_argv=iperf_tcp_argv(dst_ip, duration_s=options.tcp_duration_s, omit_s=options.tcp_omit_s),
                timeout_s=options.tcp_duration_s + options.tcp_omit_s + 30,
            )
            exp = expected_tcp_goodput_mbps(direction)
            out.append(Measurement(
                link.name, f"tcp_{label}", "Mbit/s", exp, parse_iperf_tcp(goodput),
                exp * tol.throughput_low, exp * tol.throughput_high,
                f"configured {direction.rate_mbps:g} Mbit/s; expected goodput after headers {exp:.1f}",
            ))

    if options.measure_loss:
        direction = link.a_to_b
        rate = udp_rate_mbps(direction)
        say(f"{link.name}: UDP loss a_to_b ({options.udp_packets} packets at {rate:g} Mbit/s)")
        udp = iperf_pair(
            net, server=router_b, client=router_a,
            server_argv=iperf_server_argv(link.ip_b),
            client_argv=iperf_udp_argv(link.ip_b, rate_mbps=rate, packets=options.udp_packets,
                                       size_bytes=options.udp_size_bytes),
            timeout_s=options.udp_packets * options.udp_size_bytes * 8 / (rate * 1e6) + 40,
        )
        lost, total = parse_iperf_udp(udp)
        measured = lost / total if total else None
        low, high = loss_bounds(direction.loss, total or options.udp_packets, tol)
        out.append(Measurement(link.name, "loss_a_to_b", "fraction", direction.loss, measured, low, high,
                               f"{lost} of {total} datagrams lost"))
    return out


def iperf_pair(
    net: Any, *, server: str, client: str, server_argv: list[str], client_argv: list[str], timeout_s: float
) -> str:
    """Run a one-off iperf3 server and its client; return the server's JSON (the receiver's view)."""
    srv = net.popen(server, server_argv)
    try:
        time.sleep(0.3)
        if srv.poll() is not None:
            _, err = srv.communicate()
            raise EmulationError(f"iperf3 server on {server} exited at once: {err.decode(errors='replace')}")
        result = net.run(client, client_argv, timeout_s=timeout_s)
        if result.returncode != 0:
            raise EmulationError(f"iperf3 client on {client} failed: {result.stdout[-400:]} {result.stderr[-200:]}")
        out, _ = srv.communicate(timeout=15)
        return out.decode(errors="replace")
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
