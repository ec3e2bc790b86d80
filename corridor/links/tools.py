"""ping and iperf3 for link fidelity: argv builders and the parsers of their output.

Stage: emulation, pure part. Nothing here runs a command: the builders return
argv lists that the callers (``corridor check``, ``corridor bench link``, the
netem self-test, the pytest helpers) run where they need to, and the parsers
read captured text, so unit tests feed them recorded tool output. This is the
only ping parser and the only iperf3 parser in corridor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from corridor.errors import EmulationError

IPERF_PORT = 5201
#: Socket buffer a UDP test asks both ends for: a receiver descheduled for a moment on a busy
#: machine must not overflow its default 208 KiB buffer and count host drops as link loss.
UDP_SOCKET_BUFFER_BYTES = 8 * 1024 * 1024
#: The kernel's caps on what a socket may ask for; iperf3 fails a test whose ``-w`` exceeds them.
SOCKET_BUFFER_LIMITS = ("/proc/sys/net/core/rmem_max", "/proc/sys/net/core/wmem_max")
#: Seconds of TCP intervals a goodput figure skips: the first unomitted interval absorbs what the
#: reader had not drained when omission ended (or, without omission, the slow start).
TCP_SKIP_S = 1.0
#: Intervals shorter than this (the stub iperf3 reports at the end of a test) are not steady state.
MIN_INTERVAL_S = 0.5

_PING_TIME = re.compile(r"time[=<]([\d.]+) ms")


# -- argv builders ----------------------------------------------------------------
def ping_argv(
    dest: str, *, count: int, interval_s: float = 0.01, wait_s: float = 5.0, payload_bytes: int | None = None
) -> list[str]:
    """``count`` echoes to ``dest`` every ``interval_s``; ``payload_bytes`` None keeps ping's 56."""
    argv = ["ping", "-n", "-c", str(count), "-i", f"{interval_s:g}"]
    if payload_bytes is not None:
        argv += ["-s", str(payload_bytes)]
    return [*argv, "-W", f"{wait_s:g}", dest]


def iperf_server_argv(bind: str, *, port: int = IPERF_PORT) -> list[str]:
    """A one-off server bound to ``bind`` that prints its own (the receiver's) JSON report."""
    return ["iperf3", "-s", "-1", "-B", bind, "-p", str(port), "--json"]


def iperf_tcp_argv(
    dest: str, *, duration_s: float, omit_s: float = 0.0, port: int = IPERF_PORT, reverse: bool = False,
    congestion: str | None = None,
) -> list[str]:
    """One TCP flow to ``dest`` (from it with ``reverse``), the first ``omit_s`` seconds omitted.

    ``congestion`` None keeps the system's congestion control.
    """
    argv = ["iperf3", "-c", dest, "-p", str(port), "-t", f"{duration_s:g}", "-O", f"{omit_s:g}", "--json"]
    if reverse:
        argv.append("-R")
    if congestion:
        argv += ["-C", congestion]
    return argv


def udp_socket_buffer_bytes(limits: Sequence[str] = SOCKET_BUFFER_LIMITS) -> int:
    """The socket buffer a UDP test asks for: :data:`UDP_SOCKET_BUFFER_BYTES`, or less where the kernel caps it.

    iperf3 checks that it got what ``-w`` asked for and fails the test (exit status 0, an
    ``error`` in its JSON) where ``net.core.rmem_max`` or ``wmem_max`` is lower, as it is on a
    stock kernel (208 KiB). These limits are global, so the caller's view is every namespace's.
    """
    wanted = UDP_SOCKET_BUFFER_BYTES
    for path in limits:
        try:
            with open(path, encoding="ascii") as handle:
                wanted = min(wanted, int(handle.read().split()[0]))
        except (OSError, ValueError, IndexError):
            continue  # no such limit here: ask for the default and let iperf3 say if it is refused
    return wanted


def iperf_udp_argv(dest: str, *, rate_mbps: float, packets: int, size_bytes: int, port: int = IPERF_PORT,
                   socket_buffer_bytes: int | None = None) -> list[str]:
    """UDP stream of ``packets`` datagrams of ``size_bytes`` at ``rate_mbps``.

    ``-w`` sizes both ends' socket buffers (iperf3 passes it to the server), so host drops
    are not counted as link loss; None asks for :func:`udp_socket_buffer_bytes`.
    """
    if socket_buffer_bytes is None:
        socket_buffer_bytes = udp_socket_buffer_bytes()
    return [
        "iperf3", "-c", dest, "-p", str(port), "-u", "-b", f"{rate_mbps:.6g}M", "-l", str(size_bytes),
        "-k", str(packets), "-w", str(socket_buffer_bytes), "--json",
    ]


def iperf_udp_flood_argv(dest: str, *, rate_mbps: float, duration_s: float, port: int = IPERF_PORT) -> list[str]:
    """UDP at ``rate_mbps`` for ``duration_s``, to keep a link's queue full; its report is not read."""
    return ["iperf3", "-c", dest, "-p", str(port), "-u", "-b", f"{rate_mbps:.6g}M", "-t", f"{duration_s:g}"]


def listening_argv(port: int) -> list[str]:
    """``ss`` listing the TCP sockets listening on ``port`` (no header): empty output until one listens."""
    return ["ss", "-H", "-l", "-t", "-n", "sport", "=", f":{port}"]


# -- parsers -----------------------------------------------------------------------
def parse_ping(output: str) -> list[float]:
    """RTT samples in ms from ping's per-reply lines (``time=50.1 ms``, ``time<1 ms``)."""
    return [float(m.group(1)) for m in _PING_TIME.finditer(output)]


_IPERF_HINTS = {
    "socket buffer size not set correctly": (
        " (the -w it was given exceeds net.core.rmem_max or wmem_max; raise them with sysctl, or ask for less)"),
}


def iperf_reported_error(output: str) -> str | None:
    """The error an ``iperf3 --json`` report states, with a hint where one is known; None when it states none."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or "error" not in data:
        return None
    return f"{data['error']}{_IPERF_HINTS.get(str(data['error']), '')}"


def parse_iperf_json(output: str) -> dict[str, Any]:
    """iperf3's ``--json`` report; an error it reports, or no JSON at all, raises."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError as exc:
        raise EmulationError(f"iperf3 printed no JSON: {output[:300]!r}; run it by hand to see why") from exc
    if not isinstance(data, dict):
        raise EmulationError(f"iperf3 printed JSON that is not a report: {output[:300]!r}")
    failure = iperf_reported_error(output)
    if failure is not None:
        raise EmulationError(f"iperf3: {failure}")
    return data


def parse_iperf_tcp(output: str, *, skip_s: float = TCP_SKIP_S) -> float:
    """Steady-state goodput in Mbit/s from the *receiver's* ``iperf3 --json`` of a TCP test.

    The receiver's end summary divides every byte, the omitted slow-start ones
    included, by the unomitted time. So: the full-length unomitted intervals
    that start ``skip_s`` or later into the unomitted part; the end summary only
    when a test is too short to have them.
    """
    data = parse_iperf_json(output)
    intervals = [i["sum"] for i in data.get("intervals", []) if not i["sum"].get("omitted")]
    steady = [i for i in intervals if i["start"] >= skip_s - 1e-6 and i["seconds"] >= MIN_INTERVAL_S]
    if steady:
        return sum(i["bytes"] for i in steady) * 8 / sum(i["seconds"] for i in steady) / 1e6
    end = data.get("end", {})
    received = end.get("sum_received") or end.get("sum")
    if not received:
        raise EmulationError("iperf3 reported no received totals; was this the receiver's report of a TCP test?")
    return float(received["bits_per_second"]) / 1e6


class UdpCounts(NamedTuple):
    """Datagrams of one UDP test as the receiver counted them: ``lost, packets = counts``."""

    lost: int
    packets: int

    @property
    def received(self) -> int:
        return self.packets - self.lost

    @property
    def loss(self) -> float | None:
        return self.lost / self.packets if self.packets else None


def _udp_totals(output: str) -> tuple[int, int, int]:
    """(packets, lost, out of order) of a UDP test from the server's report.

    The per-stream totals carry the out-of-order count (the client's report has
    only its own, always 0); the summary is the fallback when there are no streams.
    """
    end = parse_iperf_json(output).get("end", {})
    streams = [stream["udp"] for stream in end.get("streams", []) if "udp" in stream]
    if streams:
        return (sum(int(s["packets"]) for s in streams), sum(int(s["lost_packets"]) for s in streams),
                sum(int(s.get("out_of_order", 0)) for s in streams))
    summary: Mapping[str, Any] | None = end.get("sum_received") or end.get("sum")
    if not summary or "packets" not in summary:
        raise EmulationError("iperf3 reported no UDP totals; was this the server's report of a UDP test?")
    return int(summary["packets"]), int(summary["lost_packets"]), int(summary.get("out_of_order", 0))


def parse_iperf_udp(output: str) -> UdpCounts:
    """Lost and sent datagrams from the *server's* ``iperf3 --json`` of a UDP test."""
    packets, lost, _ = _udp_totals(output)
    return UdpCounts(lost=lost, packets=packets)


def parse_iperf_udp_out_of_order(output: str) -> int:
    """Datagrams that arrived out of order, from the *server's* ``iperf3 --json`` of a UDP test."""
    return _udp_totals(output)[2]


def parse_tcp_mss(output: str, default_bytes: int) -> int:
    """The MSS iperf3's client report states, ``default_bytes`` where it states none (or 0)."""
    mss = int(parse_iperf_json(output).get("start", {}).get("tcp_mss_default", 0) or 0)
    return mss or default_bytes


def parse_udp_noports(snmp_text: str) -> int:
    """``Udp: NoPorts`` from /proc/net/snmp: datagrams that arrived for a port nobody listens on."""
    rows = [line.split() for line in snmp_text.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2 or "NoPorts" not in rows[0]:
        raise EmulationError("no Udp NoPorts counter in /proc/net/snmp; is this a Linux network namespace?")
    header, values = rows[0], rows[1]
    return int(values[header.index("NoPorts")])
