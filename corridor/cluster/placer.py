"""The placer: which server of a cluster runs each site and each WAN link's wire node.

Stage: plan (pure). :func:`place` takes a :class:`~corridor.planning.plan.Plan` and a
:class:`~corridor.cluster.spec.ClusterSpec` and returns a frozen
:class:`ServerPlacement`. The rules:

- A site goes to one server whole (hosts, switch, router), so the LAN never
  crosses servers. A link that crosses servers is always the veth between a site
  router and a wire node, never anything inside a site.
- The cost is one core per busy link direction: the wire node of a link runs that
  link's delay line (or its netem), and each direction carrying traffic keeps a
  core busy. Every direction counts as busy unless the caller says which are.
- A server with ``cores`` never gets more busy link directions than it has
  cores; when the whole cluster has too few, or no server has room for a wire,
  :class:`~corridor.errors.PlacementError` names the shortfall.
- Pinned sites go where the cluster file says. Other sites, busiest first, are
  spread so each server's expected link load (half of each of its sites' links'
  busy directions) stays within its share of the cores, rounded up; within that
  a site joins the server holding most of its neighbours, so fewer links cross.
- Wires, busiest first, go to the server that keeps the balance: each server is
  held to its share of the busy directions (rounded up), and within that a wire
  goes beside its sites, so fewer veths cross servers. A wire that fits nowhere
  within its share goes to the least loaded server with room.

The result is deterministic for the same plan and cluster file.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from corridor.cluster.spec import ClusterSpec, ServerSpec
from corridor.errors import CorridorError, PlacementError, SpecError
from corridor.planning.plan import Plan, WanLinkPlan

#: The two directions of a WAN link, as :meth:`corridor.planning.plan.Plan.path` names them.
DIRECTIONS = ("a_to_b", "b_to_a")


@dataclass(frozen=True)
class WirePlacement:
    """Where one WAN link's wire node (and so its delay line) runs."""

    link: str
    wire: str
    server: str
    busy_directions: tuple[str, ...]  # the directions counted as one core each

    def as_dict(self) -> dict[str, Any]:
        return {"link": self.link, "wire": self.wire, "server": self.server,
                "busy_directions": list(self.busy_directions)}


@dataclass(frozen=True)
class CrossLink:
    """A veth of the plan whose two ends run on different servers: a site router to a link's wire."""

    link: str
    side: str  # "a" or "b": which end of the link the router belongs to
    router: str
    router_intf: str
    router_server: str
    wire: str
    wire_intf: str
    wire_server: str

    def as_dict(self) -> dict[str, Any]:
        return {"link": self.link, "side": self.side, "router": self.router, "router_intf": self.router_intf,
                "router_server": self.router_server, "wire": self.wire, "wire_intf": self.wire_intf,
                "wire_server": self.wire_server}


@dataclass(frozen=True)
class ServerLoad:
    """What one server was given."""

    server: str
    cores: int | None
    busy_directions: int
    sites: tuple[str, ...]
    wires: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "cores": self.cores, "busy_directions": self.busy_directions,
                "sites": list(self.sites), "wires": list(self.wires)}


@dataclass(frozen=True)
class ServerPlacement:
    """The placer's answer: every node of the plan on a server, and the veths that cross servers."""

    topology: str
    cluster: str  # the cluster file
    sites: tuple[tuple[str, str], ...]  # (site, server), plan order
    wires: tuple[WirePlacement, ...]  # plan order
    nodes: tuple[tuple[str, str], ...]  # every node name of the plan (host, switch, router, wire) to its server
    cross_links: tuple[CrossLink, ...]
    loads: tuple[ServerLoad, ...]  # cluster file order

    def server_of(self, name: str) -> str:
        """The server that runs node, site or link ``name``; KeyError when the plan has no such name."""
        for site, server in self.sites:
            if site == name:
                return server
        for wire in self.wires:
            if name in (wire.link, wire.wire):
                return wire.server
        for node, server in self.nodes:
            if node == name:
                return server
        raise KeyError(name)

    def load(self, server: str) -> ServerLoad:
        for load in self.loads:
            if load.server == server:
                return load
        raise KeyError(server)

    def as_dict(self) -> dict[str, Any]:
        return {"topology": self.topology, "cluster": self.cluster,
                "sites": dict(self.sites), "wires": [w.as_dict() for w in self.wires],
                "nodes": dict(self.nodes), "cross_links": [c.as_dict() for c in self.cross_links],
                "servers": [load.as_dict() for load in self.loads]}

    def lines(self) -> list[str]:
        """The assignment as plain text: one block per server, then the veths that cross servers."""
        out = [f"placement of {self.topology} over {len(self.loads)} servers ({self.cluster})"]
        for load in self.loads:
            cores = "cores not stated" if load.cores is None else f"{load.cores} cores"
            out.append(f"  {load.server}: {load.busy_directions} busy link directions, {cores}")
            out.append(f"    sites: {', '.join(load.sites) or '-'}")
            out.append(f"    wires: {', '.join(load.wires) or '-'}")
        out.append(f"  cross-server links: {len(self.cross_links)}")
        for c in self.cross_links:
            out.append(f"    {c.link}: {c.router_intf} on {c.router_server} <-> {c.wire_intf} on {c.wire_server}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _busy_by_link(plan: Plan, busy: Iterable[tuple[str, str]] | None) -> dict[str, tuple[str, ...]]:
    if busy is None:
        return {link.name: DIRECTIONS for link in plan.wan_links}
    chosen: dict[str, set[str]] = {link.name: set() for link in plan.wan_links}
    for name, direction in busy:
        if name not in chosen:
            raise CorridorError(f"busy link {name!r} is not a WAN link of {plan.name}; its links are "
                                f"{', '.join(chosen) or 'none'}")
        if direction not in DIRECTIONS:
            raise CorridorError(f"busy direction {direction!r} of link {name!r} must be one of "
                                f"{', '.join(DIRECTIONS)}")
        chosen[name].add(direction)
    return {name: tuple(d for d in DIRECTIONS if d in dirs) for name, dirs in chosen.items()}


def _weights(servers: tuple[ServerSpec, ...]) -> dict[str, float]:
    """Each server's share of the work: its cores, or the median stated core count when it states none."""
    stated = [s.cores for s in servers if s.cores is not None]
    fallback = float(statistics.median(stated)) if stated else 1.0
    return {s.name: float(s.cores) if s.cores is not None else fallback for s in servers}


def pins_within(plan: Plan, cluster: ClusterSpec) -> ClusterSpec:
    """``cluster`` with only the pins that name a site of ``plan`` (by name or code).

    An experiment's placements may use other topologies than its own (the one-site
    ``local`` baseline): its pins were checked against its own topology
    (:func:`place`), and a plan without the pinned site just places freely.
    """
    kept = []
    for site_name, server in cluster.pins:
        try:
            plan.site(site_name)
        except KeyError:
            continue
        kept.append((site_name, server))
    return dataclasses.replace(cluster, pins=tuple(kept))


def _pinned_sites(plan: Plan, cluster: ClusterSpec) -> dict[str, str]:
    pinned: dict[str, str] = {}
    for site_name, server in cluster.pins:
        try:
            site = plan.site(site_name)
        except KeyError:
            raise SpecError(f"{plan.name} has no site {site_name!r}; its sites are "
                            f"{', '.join(s.name for s in plan.sites)}", path=cluster.source,
                            key=f"pins.{site_name}") from None
        if site.name in pinned and pinned[site.name] != server:
            raise SpecError(f"site {site.name!r} is pinned twice (by name and by code {site.code!r}) to "
                            f"{pinned[site.name]!r} and {server!r}; keep one pin", path=cluster.source,
                            key=f"pins.{site_name}")
        pinned[site.name] = server
    return pinned


def _check_total(plan: Plan, cluster: ClusterSpec, busy: dict[str, tuple[str, ...]]) -> None:
    total = sum(len(d) for d in busy.values())
    if any(s.cores is None for s in cluster.servers):
        return  # a server without a stated core count has no limit
    cores = sum(s.cores or 0 for s in cluster.servers)
    if total > cores:
        each = ", ".join(f"{s.name} {s.cores}" for s in cluster.servers)
        raise PlacementError(
            f"{plan.name} has {total} busy link directions and each needs a core, but the servers in "
            f"{cluster.source} have {cores} cores in all ({each}); add at least {total - cores} cores or "
            "another server, or run fewer links at once")


def place(plan: Plan, cluster: ClusterSpec, *, busy: Iterable[tuple[str, str]] | None = None) -> ServerPlacement:
    """Assign every site and every wire of ``plan`` to a server of ``cluster``.

    ``busy`` names the link directions that carry traffic, as ``(link, "a_to_b" | "b_to_a")``;
    ``None`` counts both directions of every link. Raises SpecError for a pin to a site the plan
    lacks and PlacementError when the cores cannot carry the busy directions.
    """
    busy_by_link = _busy_by_link(plan, busy)
    _check_total(plan, cluster, busy_by_link)
    order = {s.name: i for i, s in enumerate(cluster.servers)}
    weight = _weights(cluster.servers)
    cores = {s.name: s.cores for s in cluster.servers}

    # -- sites: pins first, then the busiest sites where their expected link load fits best --
    site_server = _pinned_sites(plan, cluster)
    expected = {s.name: 0.0 for s in plan.sites}
    for link in plan.wan_links:
        half = len(busy_by_link[link.name]) / 2
        expected[link.a] += half
        expected[link.b] += half
    site_load = {name: 0.0 for name in order}
    site_count = {name: 0 for name in order}
    for site_name, server in site_server.items():
        site_load[server] += expected[site_name]
        site_count[server] += 1
    plan_index = {s.name: i for i, s in enumerate(plan.sites)}
    weight_sum = sum(weight.values())
    site_share = {n: math.ceil(sum(expected.values()) * weight[n] / weight_sum) for n in order}

    def affinity(site: str, server: str) -> float:
        """Busy directions between ``site`` and the sites already on ``server``: wires that need not cross."""
        total = 0.0
        for link in plan.wan_links:
            other = link.b if link.a == site else link.a if link.b == site else None
            if other is not None and site_server.get(other) == server:
                total += len(busy_by_link[link.name])
        return total

    for site in sorted((s for s in plan.sites if s.name not in site_server),
                       key=lambda s: (-expected[s.name], plan_index[s.name])):
        e = expected[site.name]
        within = [n for n in order if site_load[n] + e <= site_share[n]]
        if within:
            best = min(within, key=lambda n: (-affinity(site.name, n), (site_load[n] + e) / weight[n],
                                              site_count[n], order[n]))
        else:
            best = min(order, key=lambda n: ((site_load[n] + e) / weight[n], site_count[n], order[n]))
        site_server[site.name] = best
        site_load[best] += expected[site.name]
        site_count[best] += 1

    # -- wires: busiest first, within each server's share, beside their sites where possible --
    total_busy = sum(len(d) for d in busy_by_link.values())
    share = {n: math.ceil(total_busy * weight[n] / weight_sum) for n in order}
    load = {n: 0 for n in order}
    wire_server: dict[str, str] = {}
    link_index = {link.name: i for i, link in enumerate(plan.wan_links)}

    def crossings(link: WanLinkPlan, server: str) -> int:
        return int(site_server[link.a] != server) + int(site_server[link.b] != server)

    def room(server: str, need: int) -> bool:
        limit = cores[server]
        return limit is None or load[server] + need <= limit

    for link in sorted(plan.wan_links, key=lambda k: (-len(busy_by_link[k.name]),
                                                     site_server[k.a] != site_server[k.b], link_index[k.name])):
        need = len(busy_by_link[link.name])
        within = [n for n in order if room(n, need) and load[n] + need <= share[n]]
        if within:
            best = min(within, key=lambda n: (crossings(link, n), (load[n] + need) / weight[n], order[n]))
        else:
            fits = [n for n in order if room(n, need)]
            if not fits:
                free = ", ".join(f"{n} {(cores[n] or 0) - load[n]}" for n in order)
                raise PlacementError(
                    f"no server has {need} free cores for the wire of link {link.name!r} ({plan.name}); free "
                    f"cores: {free} (a wire runs both directions of its link on one server); add cores or a server "
                    f"to {cluster.source}")
            best = min(fits, key=lambda n: ((load[n] + need) / weight[n], crossings(link, n), order[n]))
        wire_server[link.name] = best
        load[best] += need

    return _result(plan, cluster, site_server, wire_server, busy_by_link, load)


def _result(plan: Plan, cluster: ClusterSpec, site_server: dict[str, str], wire_server: dict[str, str],
            busy_by_link: dict[str, tuple[str, ...]], load: dict[str, int]) -> ServerPlacement:
    nodes: list[tuple[str, str]] = []
    for site in plan.sites:
        server = site_server[site.name]
        nodes.extend((host.name, server) for host in site.hosts)
        nodes.extend([(site.switch, server), (site.router, server)])
    wires = tuple(WirePlacement(link=k.name, wire=k.wire, server=wire_server[k.name],
                                busy_directions=busy_by_link[k.name]) for k in plan.wan_links)
    nodes.extend((w.wire, w.server) for w in wires)
    cross: list[CrossLink] = []
    for k in plan.wan_links:
        for side, site_name, router_intf, wire_intf in (("a", k.a, k.router_intf_a, k.wire_intf_a),
                                                         ("b", k.b, k.router_intf_b, k.wire_intf_b)):
            if site_server[site_name] != wire_server[k.name]:
                cross.append(CrossLink(link=k.name, side=side, router=plan.site(site_name).router,
                                       router_intf=router_intf, router_server=site_server[site_name],
                                       wire=k.wire, wire_intf=wire_intf, wire_server=wire_server[k.name]))
    loads = tuple(ServerLoad(server=s.name, cores=s.cores, busy_directions=load[s.name],
                             sites=tuple(p.name for p in plan.sites if site_server[p.name] == s.name),
                             wires=tuple(w.wire for w in wires if w.server == s.name))
                  for s in cluster.servers)
    return ServerPlacement(topology=plan.name, cluster=cluster.source,
                     sites=tuple((p.name, site_server[p.name]) for p in plan.sites), wires=wires,
                     nodes=tuple(nodes), cross_links=tuple(cross), loads=loads)
