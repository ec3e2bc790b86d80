"""A Mininet ``Topo`` made from a :class:`corridor.planning.plan.Plan`.

Stage: emulation. The Topo stays pure data (names, node classes, option dicts),
as Mininet intends: :class:`corridor.emulation.network.CorridorNetwork` and
``sudo mn --custom topologies/corridor_topos.py`` both make it real.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mininet.topo import Topo

from corridor.emulation.nodes import CorridorHost, SiteBridge, SiteRouter, WireNode
from corridor.planning.plan import Plan, WanLinkPlan

#: Smallest TCP buffer maximum we give a host (bytes); the kernel default elsewhere is often 4-6 MiB.
MIN_TCP_BUFFER_BYTES = 16 * 1024 * 1024
#: Largest we allow, whatever the plan says (bytes).
MAX_TCP_BUFFER_BYTES = 512 * 1024 * 1024


def tcp_buffer_bytes(plan: Plan) -> int:
    """TCP buffer maximum for every host: twice the largest path BDP, so one flow can fill any path.

    Sized from the plan's worst-case path (sum of one-way delays both ways, bottleneck rate) plus
    every queue on it, because a flow that fills a queue has that much more in flight.
    """
    largest = 0
    names = [site.name for site in plan.sites]
    for src in names:
        for dst in names:
            if src == dst:
                continue
            path = plan.path_params(src, dst)
            in_flight = path.rate_mbps * 1e6 / 8 * path.rtt_ms / 1e3 + path.queue_bytes
            largest = max(largest, int(in_flight))
    return int(min(max(2 * largest, MIN_TCP_BUFFER_BYTES), MAX_TCP_BUFFER_BYTES))


def host_sysctls(plan: Plan) -> dict[str, str]:
    """Per-namespace TCP settings of every traffic host, recorded with each run."""
    buf = tcp_buffer_bytes(plan)
    return {
        "net.ipv4.tcp_rmem": f"4096 131072 {buf}",
        "net.ipv4.tcp_wmem": f"4096 16384 {buf}",
        # A finished flow must not hand its cwnd/ssthresh to the next one: every run starts cold.
        "net.ipv4.tcp_no_metrics_save": "1",
    }


def scale_plan(plan: Plan, time_scale: float) -> Plan:
    """Time scaling by k: WAN rates / k, delays and jitter x k; the bandwidth-delay product is unchanged."""
    if time_scale == 1.0:
        return plan
    links = []
    for link in plan.wan_links:
        directions = []
        for d in (link.a_to_b, link.b_to_a):
            directions.append(
                replace(d, rate_mbps=d.rate_mbps / time_scale, delay_ms=d.delay_ms * time_scale,
                        jitter_ms=d.jitter_ms * time_scale)
            )
        links.append(replace(link, a_to_b=directions[0], b_to_a=directions[1]))
    return replace(plan, wan_links=tuple(links), meta={**plan.meta, "time_scale": time_scale})


class CorridorTopo(Topo):
    """Sites (bridge + router + hosts) and one wire node per WAN link.

    On a cluster, ``remote`` gives each node's server parameters (see
    :class:`corridor.cluster.remote.ServerMixin`) and each node takes its class's
    remote variant; ``remote_state_dir`` is where wires keep their delay line's
    files on their servers, and ``wire_directions`` replaces a link's two
    directions in its wire (a cross-server link's delay, less its tunnels').
    """

    def build(  # type: ignore[override]
        self, plan: Plan, backend: str = "userspace", state_dir: str = "/run/corridor", seed: int = 1,
        remote: Mapping[str, Mapping[str, Any]] | None = None, remote_state_dir: str | None = None,
        wire_directions: Mapping[str, tuple[Any, Any]] | None = None, **_: Any
    ) -> None:
        self._remote = dict(remote or {})
        self._remote_state_dir = remote_state_dir
        self._wire_directions = dict(wire_directions or {})
        sysctls = host_sysctls(plan)
        for site in plan.sites:
            self.addSwitch(site.switch, cls=self._cls(site.switch, SiteBridge), **self._where(site.switch))
            routes = [(r.dest, r.via, r.intf) for r in site.routes]
            self.addHost(site.router, cls=self._cls(site.router, SiteRouter), ip=None, routes=routes,
                         **self._where(site.router))
            self.addLink(
                site.router,
                site.switch,
                intfName1=site.router_lan_intf,
                params1={"ip": f"{site.router_lan_ip}/{site.subnet.split('/')[1]}"},
            )
            for host in site.hosts:
                self.addHost(
                    host.name,
                    cls=self._cls(host.name, CorridorHost),
                    ip=f"{host.ip}/{host.prefix_len}",
                    defaultRoute=f"via {host.gateway}",
                    sysctls=sysctls,
                    **self._where(host.name),
                )
                self.addLink(host.name, site.switch, intfName1=host.intf)
        for index, link in enumerate(plan.wan_links):
            self._add_wan_link(plan, link, backend, state_dir, seed + index)

    def _cls(self, name: str, cls: type) -> type:
        if name not in self._remote:
            return cls
        from corridor.cluster.remote import REMOTE_CLASSES

        return REMOTE_CLASSES[cls]

    def _where(self, name: str) -> dict[str, Any]:
        if name not in self._remote:
            return {}
        return {**self._remote[name], "files_dir": self._remote_state_dir}

    def _add_wan_link(self, plan: Plan, link: WanLinkPlan, backend: str, state_dir: str, seed: int) -> None:
        site_a, site_b = plan.site(link.a), plan.site(link.b)
        prefix = "/30"
        a_to_b, b_to_a = self._wire_directions.get(link.wire, (link.a_to_b, link.b_to_a))
        files_dir = self._remote_state_dir if link.wire in self._remote and self._remote_state_dir else state_dir
        self.addHost(
            link.wire,
            cls=self._cls(link.wire, WireNode),
            ip=None,
            backend=backend,
            a_to_b=a_to_b,
            b_to_a=b_to_a,
            intf_a=link.wire_intf_a,
            intf_b=link.wire_intf_b,
            stats_path=os.path.join(files_dir, f"{link.wire}.stats.json"),
            log_path=os.path.join(state_dir, f"{link.wire}.stats.json.log"),
            seed=seed,
            network_lines=len(plan.wan_links),
            **self._where(link.wire),
        )
        self.addLink(
            site_a.router, link.wire, intfName1=link.router_intf_a, intfName2=link.wire_intf_a,
            params1={"ip": link.ip_a + prefix},
        )
        self.addLink(
            link.wire, site_b.router, intfName1=link.wire_intf_b, intfName2=link.router_intf_b,
            params2={"ip": link.ip_b + prefix},
        )
