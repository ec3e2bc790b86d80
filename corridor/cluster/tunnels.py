"""Tunnels between a cluster's servers: a VXLAN tunnel made, measured and removed before anything runs.

Stage: emulation (root on the servers, over ssh). A link that crosses servers (a
site router on one server, its link's wire on another: see
:mod:`corridor.cluster.placer`) will ride a tunnel between the two servers, so
the tunnel's own delay and rate come before the link's. :func:`measure_tunnel`
makes a VXLAN tunnel between scratch namespaces on two servers (the VXLAN
device is made in each server's own namespace, where its UDP socket stays, and
moved into the scratch one), times it with ping, measures it with one iperf3
TCP flow, and removes it whatever happened. :func:`judge_cross_links` holds
each cross-server link against the tunnel between its two servers: a tunnel
that carries less than the link's rate is refused, and otherwise the tunnel's
one-way delay is what the wire's delay has to give up for the link to keep its
contract.

The argv and script builders and the judging are pure; only
:func:`measure_tunnel` runs anything, and only through
:func:`corridor.cluster.ssh.run_ssh`.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from corridor.cluster.spec import ClusterSpec, ServerSpec
from corridor.cluster.ssh import SshResult, run_ssh
from corridor.errors import ClusterError
from corridor.links.tools import parse_ping, ping_argv

#: VXLAN's IANA port, and the overlay's addresses inside the scratch namespaces (seen nowhere else).
VXLAN_PORT = 4789
OVERLAY = ("10.251.0.1", "10.251.0.2")
PINGS = 20
IPERF_SECONDS = 3
IPERF_PORT = 5301
#: A link may use at most this share of its tunnel's measured rate: the tunnel also carries the
#: link's framing (50 bytes of VXLAN per packet) and the measurement has its own noise.
TUNNEL_HEADROOM = 0.9


@dataclass(frozen=True)
class TunnelMeasurement:
    """One VXLAN tunnel between two servers, as measured."""

    server_a: str
    server_b: str
    transport: str
    rtt_ms: float
    throughput_mbps: float

    @property
    def one_way_ms(self) -> float:
        return self.rtt_ms / 2.0

    def as_dict(self) -> dict[str, Any]:
        return {"server_a": self.server_a, "server_b": self.server_b, "transport": self.transport,
                "rtt_ms": self.rtt_ms, "one_way_ms": self.one_way_ms, "throughput_mbps": self.throughput_mbps}


@dataclass(frozen=True)
class CrossLinkVerdict:
    """A cross-server link held against its tunnel."""

    link: str
    servers: tuple[str, str]
    rate_mbps: float
    delay_ms: float
    tunnel: TunnelMeasurement
    ok: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"link": self.link, "servers": list(self.servers), "rate_mbps": self.rate_mbps,
                "delay_ms": self.delay_ms, "tunnel": self.tunnel.as_dict(), "ok": self.ok, "reason": self.reason}


def server_ip(server: ServerSpec) -> str:
    """The server's address as an IPv4 address (a name is resolved here, on the coordinator)."""
    try:
        return socket.gethostbyname(server.address)
    except OSError as exc:
        raise ClusterError(f"cannot resolve server {server.name}'s address {server.address}: {exc}") from exc


def tunnel_setup_script(*, netns: str, device: str, vni: int, remote_ip: str, overlay_ip: str) -> str:
    """POSIX sh that makes one end: a scratch namespace holding a VXLAN device to ``remote_ip``."""
    return "\n".join([
        "set -e",
        f"ip netns add {netns}",
        f"ip link add {device} type vxlan id {vni} remote {remote_ip} dstport {VXLAN_PORT}",
        f"ip link set {device} netns {netns}",
        f"ip -n {netns} addr add {overlay_ip}/30 dev {device}",
        f"ip -n {netns} link set {device} up",
        f"ip -n {netns} link set lo up",
    ])


def tunnel_names(pid: int | None = None) -> tuple[str, str, int]:
    """(scratch namespace, device, VNI) for a measurement by this process: names clean can tell as ours."""
    pid = os.getpid() if pid is None else pid
    return f"corridor-tun-{pid}", f"ctun{pid % 100000}", 4000 + pid % 10000


def measure_tunnel(cluster: ClusterSpec, a: ServerSpec, b: ServerSpec, *,
                   run: Callable[..., SshResult] = run_ssh) -> TunnelMeasurement:
    """Make a VXLAN tunnel from ``a`` to ``b``, time and measure it, remove it; ClusterError says what failed."""
    netns, device, vni = tunnel_names()
    ends = ((a, server_ip(b), OVERLAY[0]), (b, server_ip(a), OVERLAY[1]))

    def on(server: ServerSpec, argv: Sequence[str], what: str, timeout_s: float = 60.0) -> str:
        result = run(cluster, server, argv, sudo=server.user != "root", timeout_s=timeout_s)
        if not result.connected:
            raise ClusterError(f"{what} on {server.name}: ssh: {result.why_not_connected()}")
        if result.returncode != 0:
            words = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise ClusterError(f"{what} on {server.name} failed (exit {result.returncode}): "
                               f"{words[-1] if words else 'no output'}")
        return result.stdout

    made: list[ServerSpec] = []
    try:
        for server, remote, overlay in ends:
            made.append(server)
            on(server, ["sh", "-c", tunnel_setup_script(netns=netns, device=device, vni=vni, remote_ip=remote,
                                                          overlay_ip=overlay)], "making the VXLAN tunnel")
        pings = on(a, ["ip", "netns", "exec", netns, *ping_argv(OVERLAY[1], count=PINGS, interval_s=0.05,
                                                                 wait_s=2.0)], "pinging through the tunnel")
        rtts = parse_ping(pings)
        if not rtts:
            raise ClusterError(f"no ping came back through the tunnel from {a.name} to {b.name}: the servers "
                               f"may not reach each other on UDP port {VXLAN_PORT}")
        on(b, ["ip", "netns", "exec", netns, "iperf3", "-s", "-1", "-D", "-B", OVERLAY[1], "-p", str(IPERF_PORT)],
           "starting iperf3")
        report = on(a, ["ip", "netns", "exec", netns, "iperf3", "-c", OVERLAY[1], "-p", str(IPERF_PORT),
                        "-t", str(IPERF_SECONDS), "-O", "1", "--json"], "measuring the tunnel with iperf3",
                    timeout_s=IPERF_SECONDS + 60.0)
        throughput = _received_mbps(report)
    finally:
        for server in made:
            run(cluster, server, ["ip", "netns", "del", netns], sudo=server.user != "root", timeout_s=30.0)
    return TunnelMeasurement(a.name, b.name, "vxlan", statistics.median(rtts), throughput)


def _received_mbps(report: str) -> float:
    try:
        data = json.loads(report[report.find("{"):])
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e6
    except (ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"iperf3 through the tunnel gave no received rate: {report[:300]!r}") from exc


def judge_cross_links(cross: Sequence[tuple[str, str, str, float, float]],
                      tunnels: dict[frozenset[str], TunnelMeasurement]) -> list[CrossLinkVerdict]:
    """Each cross-server link ``(link, server, server, rate Mbit/s, one-way delay ms)`` against its tunnel.

    Refused when the link's rate exceeds :data:`TUNNEL_HEADROOM` of the tunnel's
    measured rate, or when the tunnel's one-way delay is more than the link's own
    (the wire cannot give up delay it does not have).
    """
    out = []
    for link, s1, s2, rate, delay in cross:
        tunnel = tunnels[frozenset((s1, s2))]
        usable = TUNNEL_HEADROOM * tunnel.throughput_mbps
        if rate > usable:
            ok, reason = False, (f"the tunnel between {s1} and {s2} carries {tunnel.throughput_mbps:,.0f} Mbit/s "
                                 f"and {link} needs {rate:,.0f} (at most {TUNNEL_HEADROOM:.0%} of the tunnel); "
                                 "place its wire beside one of its sites (pins in the cluster file), or use a "
                                 "faster network between the servers")
        elif tunnel.one_way_ms >= delay:
            ok, reason = False, (f"the tunnel's one-way delay ({tunnel.one_way_ms:.3f} ms) is not less than "
                                 f"{link}'s own ({delay:g} ms), so the link cannot keep its delay")
        else:
            ok, reason = True, (f"the tunnel takes {tunnel.one_way_ms:.3f} ms of {link}'s {delay:g} ms one way "
                                f"({tunnel.one_way_ms / delay:.1%}), which the wire's delay must give up for the "
                                "link to keep its contract")
        out.append(CrossLinkVerdict(link, (s1, s2), rate, delay, tunnel, ok, reason))
    return out
