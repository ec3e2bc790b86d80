"""What a network needs to be built across a cluster's servers, decided before anything is built.

Stage: emulation (measures over ssh; the rest is pure). :func:`prepare_cluster`
places the plan on the servers (:mod:`corridor.cluster.placer`), measures one
VXLAN tunnel per pair of servers that a link crosses (:mod:`corridor.cluster.tunnels`),
refuses a link its tunnel cannot carry (a ClusterError naming each, before
anything runs), and gives each wire its link's directions less the one-way
delay of the tunnels the link rides, so the link end to end keeps the delay
its plan asks for. The result, :class:`ClusterLayout`, carries the parameters
:class:`corridor.emulation.topo.CorridorTopo` puts on each node and what a run
records about where everything ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from corridor.cluster.placer import ServerPlacement, place
from corridor.cluster.spec import ClusterSpec, ServerSpec
from corridor.cluster.ssh import run_ssh
from corridor.cluster.tunnels import CrossLinkVerdict, TunnelMeasurement, judge_cross_links, measure_tunnel, server_ip
from corridor.errors import ClusterError
from corridor.links.contract import LinkDirection
from corridor.planning.plan import Plan

#: Where wires keep their delay line's files on a server (one folder per run, named like the run's state).
REMOTE_STATE_ROOT = "/run/corridor-cluster"

Measure = Callable[[ClusterSpec, ServerSpec, ServerSpec], TunnelMeasurement]

#: Tunnels this process has measured, by the two servers' logins: an experiment builds a network per
#: point, and the network between two servers does not change from one point to the next.
_MEASURED: dict[tuple[str, int, str, int], TunnelMeasurement] = {}


def _pair_key(a: ServerSpec, b: ServerSpec) -> tuple[str, int, str, int]:
    return (a.destination, a.port, b.destination, b.port)


def measure_once(cluster: ClusterSpec, a: ServerSpec, b: ServerSpec) -> TunnelMeasurement:
    """:func:`measure_tunnel`, once per pair of servers for the life of this process."""
    key = _pair_key(a, b)
    if key not in _MEASURED:
        _MEASURED[key] = measure_tunnel(cluster, a, b)
    return _MEASURED[key]


@dataclass(frozen=True)
class ClusterLayout:
    """A plan placed on a cluster, with its tunnels measured and its wires' delays set."""

    cluster: ClusterSpec
    placement: ServerPlacement
    tunnels: tuple[TunnelMeasurement, ...]
    verdicts: tuple[CrossLinkVerdict, ...]
    wire_directions: dict[str, tuple[LinkDirection, LinkDirection]]
    tunnel_ms: dict[str, float]  # link -> one-way delay its tunnels take (0 for a link inside one server)
    server_ips: dict[str, str]

    def node_params(self) -> dict[str, dict[str, Any]]:
        """Each node's parameters for :class:`corridor.cluster.remote.ServerMixin`."""
        out: dict[str, dict[str, Any]] = {}
        for node, server in self.placement.nodes:
            spec = self.cluster.server(server)
            out[node] = {"cluster_server": spec, "server_ip": self.server_ips[server],
                         "known_hosts": self.cluster.known_hosts_path}
        return out

    @staticmethod
    def remote_state_dir(run_id: str) -> str:
        return f"{REMOTE_STATE_ROOT}/{run_id}"

    def remove_remote_state(self, run_id: str) -> list[str]:
        """Remove the run's folder (delay-line statistics, agents' configurations) on every server it used.

        Returns one line per server that could not be reached or cleaned; the run goes on regardless.
        """
        problems = []
        for name in self.server_ips:
            server = self.cluster.server(name)
            done = run_ssh(self.cluster, server, ["rm", "-rf", "--", self.remote_state_dir(run_id)],
                           sudo=server.user != "root", timeout_s=30.0)
            if not done.connected or done.returncode != 0:
                problems.append(f"{name}: {done.why_not_connected() if not done.connected else done.stderr.strip()}")
        return problems

    def tunnel_share(self, link: str) -> float:
        """The one-way delay this link's tunnels take (ms)."""
        return self.tunnel_ms.get(link, 0.0)

    def describe(self) -> dict[str, Any]:
        """What a run records: the cluster file, where each node ran, and each tunnel as measured."""
        return {"cluster": self.cluster.source, "transport": "vxlan",
                "placement": self.placement.as_dict(),
                "tunnels": [t.as_dict() for t in self.tunnels],
                "cross_links": [v.as_dict() for v in self.verdicts],
                "tunnel_ms": dict(self.tunnel_ms)}


def cross_link_rows(plan: Plan, placement: ServerPlacement) -> list[tuple[str, str, str, float, float]]:
    """``(link, router's server, wire's server, rate Mbit/s, one-way delay ms)`` for each crossing.

    The rate is the faster direction's and the delay the shorter one's: the tunnel
    must carry the one and leave room in the other.
    """
    rows = []
    for cross in placement.cross_links:
        link = plan.link(cross.link)
        rate = max(link.a_to_b.rate_mbps, link.b_to_a.rate_mbps)
        delay = min(link.a_to_b.delay_ms, link.b_to_a.delay_ms)
        rows.append((cross.link, cross.router_server, cross.wire_server, rate, delay))
    return rows


def tunnel_delays(placement: ServerPlacement, tunnels: dict[frozenset[str], TunnelMeasurement]) -> dict[str, float]:
    """Each link's one-way tunnel delay: the sum over its crossings (one per side whose site is elsewhere)."""
    out: dict[str, float] = {}
    for cross in placement.cross_links:
        tunnel = tunnels[frozenset((cross.router_server, cross.wire_server))]
        out[cross.link] = out.get(cross.link, 0.0) + tunnel.one_way_ms
    return out


def less_tunnels(plan: Plan, tunnel_ms: dict[str, float]) -> dict[str, tuple[LinkDirection, LinkDirection]]:
    """Each crossing link's two directions with its tunnels' one-way delay taken off the wire's."""
    out = {}
    for link in plan.wan_links:
        share = tunnel_ms.get(link.name, 0.0)
        if share <= 0.0:
            continue
        out[link.wire] = (replace(link.a_to_b, delay_ms=link.a_to_b.delay_ms - share),
                          replace(link.b_to_a, delay_ms=link.b_to_a.delay_ms - share))
    return out


def prepare_cluster(plan: Plan, cluster: ClusterSpec, *, measure: Measure = measure_once,
                    say: Callable[[str], None] | None = None) -> ClusterLayout:
    """Place ``plan`` (already time-scaled) on ``cluster``, measure its tunnels, and judge every crossing link."""
    placement = place(plan, cluster)
    rows = cross_link_rows(plan, placement)
    measured: dict[frozenset[str], TunnelMeasurement] = {}
    for _link, s1, s2, _rate, _delay in rows:
        pair = frozenset((s1, s2))
        if pair not in measured:
            a, b = cluster.server(s1), cluster.server(s2)
            if say is not None and not (measure is measure_once and _pair_key(a, b) in _MEASURED):
                say(f"measuring the VXLAN tunnel between {s1} and {s2}")
            measured[pair] = measure(cluster, a, b)
    verdicts = judge_cross_links(rows, measured)
    refused = [v for v in verdicts if not v.ok]
    if refused:
        raise ClusterError("these links cannot cross servers as placed: "
                           + "; ".join(f"{v.link}: {v.reason}" for v in refused))
    tunnel_ms = tunnel_delays(placement, measured)
    for link in plan.wan_links:  # two crossings can take more than one crossing's check allowed
        share = tunnel_ms.get(link.name, 0.0)
        shortest = min(link.a_to_b.delay_ms, link.b_to_a.delay_ms)
        if share >= shortest:
            raise ClusterError(f"{link.name}'s tunnels take {share:.3f} ms one way, not less than its own "
                               f"{shortest:g} ms; pin its wire beside one of its sites in the cluster file")
    used = {server for _node, server in placement.nodes}
    ips = {s.name: server_ip(s) for s in cluster.servers if s.name in used}
    return ClusterLayout(cluster=cluster, placement=placement, tunnels=tuple(measured.values()),
                         verdicts=tuple(verdicts), wire_directions=less_tunnels(plan, tunnel_ms),
                         tunnel_ms=tunnel_ms, server_ips=ips)
