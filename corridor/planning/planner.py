"""The plan builder: a validated topology spec in, the exact network to build out.

Stage: plan (pure). :func:`build_plan` names every node and interface, assigns
addresses, derives each WAN link's one-way delay from the corridor model,
sizes queues from the bandwidth-delay product, and writes static routes that
follow the lowest one-way delay (Dijkstra from every site). See
:mod:`corridor.planning.plan` for the shape of the result.

Linux names (all interface names are at most 15 characters, the kernel's limit):
host ``<code>-<role><n>`` (``urm-gpu1``, ``cty-cli1``), switch ``<code>-s``,
router ``<code>-r``, wire ``w<codeA><codeB>``; interfaces ``<node>-eth<i>``.
On a router ``eth0`` faces the site switch and ``eth1..`` the WAN links in spec
order; on a wire ``eth0`` faces end A and ``eth1`` end B.
"""

from __future__ import annotations

import heapq
import logging

from corridor.errors import CorridorError, SpecError
from corridor.geography import geo
from corridor.geography.fibre import derive_distance, derive_explicit, derive_great_circle, derive_route
from corridor.links.contract import MTU_BYTES, LinkDirection, default_queue_bytes
from corridor.planning.plan import (
    LAN_ONE_WAY_MS,
    LAN_RATE_MBPS,
    HostPlan,
    LinkDerivation,
    Plan,
    Route,
    SitePlan,
    WanLinkPlan,
)
from corridor.spec.topospec import ROLES, DirectionSpec, LinkSpec, SiteSpec, TopologySpec, wire_name

log = logging.getLogger(__name__)

#: Linux limits an interface name to 15 characters (IFNAMSIZ 16 with the NUL).
MAX_IFNAME = 15


def host_name(code: str, role: str, n: int) -> str:
    return f"{code}-{ROLES[role]}{n}"


def switch_name(code: str) -> str:
    return f"{code}-s"


def router_name(code: str) -> str:
    return f"{code}-r"


def intf_name(node: str, i: int) -> str:
    name = f"{node}-eth{i}"
    assert len(name) <= MAX_IFNAME, f"interface name {name!r} is longer than {MAX_IFNAME} characters"
    return name


def _place(site: SiteSpec) -> geo.Place:
    return geo.Place(site.name, site.label, site.lat, site.lon, site.kind)


def _derivation(spec: TopologySpec, link: LinkSpec) -> LinkDerivation:
    a, b = _place(spec.site(link.a)), _place(spec.site(link.b))
    params = spec.model
    if link.delay_ms is not None:
        return derive_explicit(
            a, b, link.delay_ms, fibre_name=link.fibre, delay_scale=link.delay_scale, layer_name=link.layer
        )
    if link.distance_km is not None:
        return derive_distance(
            a, b, link.distance_km, fibre_name=link.fibre, params=params, delay_scale=link.delay_scale,
            layer_name=link.layer,
        )
    if link.route is not None:
        sites = {s.name: _place(s) for s in spec.sites}
        waypoints = []
        for name in link.route:
            place = geo.lookup(name, spec.places) or sites.get(name)
            if place is None:  # spec validation already refused this
                raise SpecError(f"unknown waypoint {name!r}", path=spec.path, key=f"links[{link.name}].route")
            waypoints.append(place)
        return derive_route(
            a, b, waypoints, fibre_name=link.fibre, params=params, delay_scale=link.delay_scale,
            layer_name=link.layer,
        )
    return derive_great_circle(
        a, b, fibre_name=link.fibre, params=params, delay_scale=link.delay_scale, layer_name=link.layer
    )


def _queue_bytes(direction: DirectionSpec, rate_mbps: float, rtt_ms: float) -> tuple[int, int | None]:
    q = direction.queue
    if q.unit == "bdp":
        return default_queue_bytes(rate_mbps, rtt_ms, bdp_multiple=q.amount), None
    if q.unit == "packets":
        return max(int(q.amount) * MTU_BYTES, MTU_BYTES), int(q.amount)
    return int(q.amount), None


def _direction(spec: TopologySpec, direction: DirectionSpec, delay_ms: float, rtt_ms: float, key: str) -> LinkDirection:
    queue_bytes, queue_packets = _queue_bytes(direction, direction.rate_mbps, rtt_ms)
    try:
        return LinkDirection(
            rate_mbps=direction.rate_mbps,
            delay_ms=delay_ms,
            queue_bytes=queue_bytes,
            jitter_ms=direction.jitter_ms,
            loss=direction.loss,
            burst_loss=direction.burst_loss,
            queue_packets=queue_packets,
        )
    except CorridorError as exc:
        raise SpecError(str(exc), path=spec.path, key=key) from None


def _fabric(spec: TopologySpec, site: SiteSpec, wan_links: list[WanLinkPlan]) -> tuple[float, float, str]:
    """(host rate Mbit/s, one-way ms, where the rate came from) of a site's fabric.

    A rate the spec does not give is the faster of the default and the fastest
    WAN link at the site, so the fabric never makes a WAN path look slower than
    the link itself, nor a one-site baseline slower than the corridor.
    """
    fabric = spec.fabric.merged(site.fabric)
    delay_ms = fabric.delay_ms if fabric.delay_ms is not None else LAN_ONE_WAY_MS
    if fabric.host_rate_mbps is not None:
        own = site.fabric is not None and site.fabric.host_rate_mbps is not None
        return fabric.host_rate_mbps, delay_ms, "site" if own else "spec"
    wan = [d.rate_mbps for wl in wan_links if site.name in (wl.a, wl.b) for d in (wl.a_to_b, wl.b_to_a)]
    if wan and max(wan) > LAN_RATE_MBPS:
        return max(wan), delay_ms, "default (WAN)"
    return LAN_RATE_MBPS, delay_ms, "default"


def _shortest_next_hops(edges: dict[int, list[tuple[float, int, int]]], src: int) -> dict[int, tuple[int, int]]:
    """Dijkstra on one-way delay from ``src``: for each reachable site, the (link index, neighbour) of the first hop.

    Ties break on the lower link index, then the lower site index, so plans are deterministic.
    """
    best: dict[int, tuple[float, tuple[int, ...]]] = {src: (0.0, ())}
    first: dict[int, tuple[int, int]] = {}
    heap: list[tuple[float, tuple[int, ...], int, tuple[int, int] | None]] = [(0.0, (), src, None)]
    done: set[int] = set()
    while heap:
        dist, hops, node, hop = heapq.heappop(heap)
        if node in done:
            continue
        done.add(node)
        if hop is not None:
            first[node] = hop
        for delay, link_index, nxt in edges.get(node, []):
            cand = (dist + delay, (*hops, link_index))
            if nxt not in best or cand < best[nxt]:
                best[nxt] = cand
                heapq.heappush(heap, (cand[0], cand[1], nxt, hop if hop is not None else (link_index, nxt)))
    return first


def build_plan(spec: TopologySpec) -> Plan:
    """Turn a validated spec into a :class:`Plan`; raises SpecError for what only shows up here."""
    site_index = {s.name: i for i, s in enumerate(spec.sites)}
    # Router WAN interfaces: eth0 is the LAN; WAN links take eth1.. in spec order.
    next_eth = {s.name: 1 for s in spec.sites}
    wan_links: list[WanLinkPlan] = []
    for k, link in enumerate(spec.links, start=1):
        sa, sb = spec.site(link.a), spec.site(link.b)
        key = f"links[{link.name}]"
        derivation = _derivation(spec, link)
        forward_ms = derivation.one_way_ms
        reverse_ms = link.reverse.delay_ms * link.delay_scale if link.reverse.delay_ms is not None else forward_ms
        rtt_ms = forward_ms + reverse_ms
        a_to_b = _direction(spec, link.forward, forward_ms, rtt_ms, key)
        b_to_a = _direction(spec, link.reverse, reverse_ms, rtt_ms, f"{key}.reverse")
        wire = wire_name(sa.code, sb.code)
        ra, rb = router_name(sa.code), router_name(sb.code)
        wan_links.append(
            WanLinkPlan(
                name=link.name,
                index=k,
                a=sa.name,
                b=sb.name,
                wire=wire,
                wire_intf_a=intf_name(wire, 0),
                wire_intf_b=intf_name(wire, 1),
                router_intf_a=intf_name(ra, next_eth[sa.name]),
                router_intf_b=intf_name(rb, next_eth[sb.name]),
                ip_a=f"10.255.{k}.1",
                ip_b=f"10.255.{k}.2",
                a_to_b=a_to_b,
                b_to_a=b_to_a,
                derivation=derivation,
            )
        )
        next_eth[sa.name] += 1
        next_eth[sb.name] += 1

    edges: dict[int, list[tuple[float, int, int]]] = {}
    for li, wl in enumerate(wan_links):
        ia, ib = site_index[wl.a], site_index[wl.b]
        edges.setdefault(ia, []).append((wl.a_to_b.delay_ms, li, ib))
        edges.setdefault(ib, []).append((wl.b_to_a.delay_ms, li, ia))

    sites: list[SitePlan] = []
    for i, s in enumerate(spec.sites, start=1):
        subnet_base = f"10.{i}.0"
        router = router_name(s.code)
        hosts: list[HostPlan] = []
        n_addr = 1
        for role, count in s.hosts:
            for n in range(1, count + 1):
                name = host_name(s.code, role, n)
                hosts.append(
                    HostPlan(
                        name=name,
                        site=s.name,
                        role=role,
                        ip=f"{subnet_base}.{n_addr}",
                        prefix_len=24,
                        gateway=f"{subnet_base}.254",
                        intf=intf_name(name, 0),
                    )
                )
                n_addr += 1
        routes: list[Route] = []
        for dest, (li, _nxt) in sorted(_shortest_next_hops(edges, i - 1).items()):
            wl = wan_links[li]
            if wl.a == s.name:
                via, intf = wl.ip_b, wl.router_intf_a
            else:
                via, intf = wl.ip_a, wl.router_intf_b
            routes.append(Route(dest=f"10.{dest + 1}.0.0/24", via=via, intf=intf))
        if len(routes) < len(spec.sites) - 1:
            log.info("site %s reaches %d of %d other sites", s.name, len(routes), len(spec.sites) - 1)
        host_rate_mbps, fabric_ms, fabric_source = _fabric(spec, s, wan_links)
        sites.append(
            SitePlan(
                name=s.name,
                code=s.code,
                lat=s.lat,
                lon=s.lon,
                kind=s.kind,
                subnet=f"{subnet_base}.0/24",
                switch=switch_name(s.code),
                router=router,
                router_lan_ip=f"{subnet_base}.254",
                router_lan_intf=intf_name(router, 0),
                routes=tuple(routes),
                hosts=tuple(hosts),
                host_rate_mbps=host_rate_mbps,
                fabric_one_way_ms=fabric_ms,
                fabric_source=fabric_source,
            )
        )
    meta = {
        "description": spec.description,
        "model": {k: v for k, v in vars(spec.model).items()},
        "labels": {s.name: s.label for s in spec.sites},
        "overrides": list(spec.overrides),
    }
    plan = Plan(name=spec.name, source=spec.source, sites=tuple(sites), wan_links=tuple(wan_links), meta=meta)
    _check_names(plan)
    return plan


def _check_names(plan: Plan) -> None:
    """Every node name is unique and every interface name fits the kernel's limit."""
    nodes = [h.name for h in plan.hosts()]
    nodes += [s.switch for s in plan.sites] + [s.router for s in plan.sites] + [w.wire for w in plan.wan_links]
    if len(set(nodes)) != len(nodes):
        dup = sorted({n for n in nodes if nodes.count(n) > 1})
        raise SpecError(f"node names clash: {', '.join(dup)}; change a site code", path=plan.source)
    for name in nodes:
        # Mininet names interfaces <node>-eth<i>; a 10-character node leaves room for "-eth0".."-eth9",
        # and only routers and switches (at most 6 characters) get more interfaces than that.
        assert len(name) <= 10, f"node name {name!r} is longer than 10 characters"
