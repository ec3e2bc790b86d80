"""The plan: the exact network a spec turns into, before anything runs.

Stage: plan (pure). A :class:`Plan` lists every node (hosts, one router and one
switch per site, one wire node per WAN link), every interface name, every
address and static route, and the per-direction :class:`LinkDirection` of every
WAN link. The emulation stage only executes what is written here, so the whole
network can be inspected (``corridor topo show``) and unit-tested without root.

Shape of the emulated network::

    host --+                                              +-- host
    host --+-- site switch -- site router -- wire -- site router -- site switch --+-- host
                 (bridge)     (ip_forward)   (WAN link:            ...
                                              delay line or netem)

Addressing: site *i* (1-based, in spec order) is ``10.i.0.0/24`` with its router
at ``10.i.0.254``; WAN link *k* is the transit subnet ``10.255.k.0/30`` (``.1`` on
the router of end A, ``.2`` on end B). Routes follow the lowest one-way delay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corridor.errors import CorridorError
from corridor.links.contract import LinkDirection, default_queue_bytes

#: The default site fabric: each host's link to its site switch, and one way across the site. The planner
#: raises the rate to the fastest WAN link at the site (see corridor.spec.topospec); the emulation leaves it unshaped.
LAN_RATE_MBPS = 10_000.0
LAN_ONE_WAY_MS = 0.01


@dataclass(frozen=True)
class HostPlan:
    """A traffic endpoint (GPU server, client, store) inside a site."""

    name: str  # Linux/Mininet node name, <= 10 chars, e.g. "urm-gpu1"
    site: str
    role: str  # "gpu", "client", "store"
    ip: str  # "10.1.0.1"
    prefix_len: int
    gateway: str  # the site router's LAN address
    intf: str  # "urm-gpu1-eth0"


@dataclass(frozen=True)
class Route:
    """A static route on a site router: ``dest`` via ``via`` out of ``intf``."""

    dest: str  # "10.2.0.0/24"
    via: str
    intf: str


@dataclass(frozen=True)
class SitePlan:
    name: str  # "urumqi"
    code: str  # "urm"
    lat: float
    lon: float
    kind: str  # "gpu", "city", "hub"
    subnet: str  # "10.1.0.0/24"
    switch: str  # "urm-s"
    router: str  # "urm-r"
    router_lan_ip: str  # "10.1.0.254"
    router_lan_intf: str
    routes: tuple[Route, ...]
    hosts: tuple[HostPlan, ...]
    #: The site fabric: every host's link to the switch (and the switch to the router) runs at this rate.
    host_rate_mbps: float = LAN_RATE_MBPS
    fabric_one_way_ms: float = LAN_ONE_WAY_MS  # host - switch - host, one way
    fabric_source: str = "default"  # "spec", "site" (the site's own fabric:) or "default" / "default (WAN)"


@dataclass(frozen=True)
class LinkDerivation:
    """How the model arrived at a WAN link's one-way delay, for an engineer to check."""

    source: str  # "route", "distance", "great-circle" or "explicit-delay"
    great_circle_km: float | None
    path_km: float | None  # fibre length after slack/stretch
    stretch: float | None  # path_km / great_circle_km
    waypoints: tuple[str, ...]
    fibre: str
    us_per_km: float | None
    propagation_ms: float
    amplifiers: int
    regenerators: int
    switches: int
    equipment_ms: float
    one_way_ms: float  # (propagation_ms + equipment_ms + layer_ms) x delay_scale
    delay_scale: float = 1.0  # a sweep's multiplier (override_links(delay_scale=...)); 1.0 otherwise
    route_points: tuple[tuple[float, float], ...] = ()  # (lat, lon) from end A through waypoints to end B
    layer: str | None = None  # network layer (corridor.geography.fibre.LAYERS); None: plain fibre
    layer_ms: float = 0.0  # the layer's overhead, included in one_way_ms


@dataclass(frozen=True)
class WanLinkPlan:
    """One WAN link between the routers of sites ``a`` and ``b``, through ``wire``."""

    name: str  # "urumqi-beijing"
    index: int  # k in 10.255.k.0/30
    a: str  # site name
    b: str
    wire: str  # wire node name, e.g. "wurmbj"
    wire_intf_a: str  # wire interface facing a's router; a<-b traffic leaves here
    wire_intf_b: str  # wire interface facing b's router; a->b traffic leaves here
    router_intf_a: str
    router_intf_b: str
    ip_a: str  # "10.255.1.1"
    ip_b: str
    a_to_b: LinkDirection
    b_to_a: LinkDirection
    derivation: LinkDerivation

    @property
    def rtt_ms(self) -> float:
        """Idle round trip across this link alone: both one-way delays, no queueing."""
        return self.a_to_b.delay_ms + self.b_to_a.delay_ms


@dataclass(frozen=True)
class Plan:
    """Everything needed to build one emulated corridor network."""

    name: str
    source: str  # file path or "preset:NAME"
    sites: tuple[SitePlan, ...]
    wan_links: tuple[WanLinkPlan, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    # -- lookups ---------------------------------------------------------
    def site(self, name: str) -> SitePlan:
        for site in self.sites:
            if site.name == name or site.code == name:
                return site
        raise KeyError(name)

    def hosts(self, *, site: str | None = None, role: str | None = None) -> list[HostPlan]:
        found: list[HostPlan] = []
        for s in self.sites:
            if site is not None and site not in (s.name, s.code):
                continue
            found.extend(h for h in s.hosts if role is None or h.role == role)
        return found

    def host(self, name: str) -> HostPlan:
        for s in self.sites:
            for h in s.hosts:
                if h.name == name:
                    return h
        raise KeyError(name)

    def link(self, name: str) -> WanLinkPlan:
        for link in self.wan_links:
            if link.name == name:
                return link
        raise KeyError(name)

    # -- paths -----------------------------------------------------------
    def path(self, src_site: str, dst_site: str) -> list[tuple[WanLinkPlan, str]]:
        """The WAN links a packet from ``src_site`` to ``dst_site`` crosses, with the direction of each.

        Follows the static routes written in the plan (the lowest one-way delay),
        so it is the path traffic takes. Sites may be given by name or code; a
        path inside one site is ``[]``. Raises KeyError for an unknown site and
        CorridorError when the sites are not connected.
        """
        src, dst = self.site(src_site), self.site(dst_site)
        hops: list[tuple[WanLinkPlan, str]] = []
        here = src
        while here.name != dst.name:
            route = next((r for r in here.routes if r.dest == dst.subnet), None)
            if route is None or len(hops) > len(self.wan_links):
                raise CorridorError(f"no route from site {src.name!r} to site {dst.name!r}")
            for link in self.wan_links:
                if link.a == here.name and link.router_intf_a == route.intf:
                    hops.append((link, "a_to_b"))
                    here = self.site(link.b)
                    break
                if link.b == here.name and link.router_intf_b == route.intf:
                    hops.append((link, "b_to_a"))
                    here = self.site(link.a)
                    break
            else:
                raise CorridorError(f"route on {here.router} toward {dst.subnet} leaves by unknown {route.intf}")
        return hops

    def path_params(self, src_site: str, dst_site: str) -> PathParams:
        """End-to-end figures from ``src_site`` to ``dst_site`` (see :class:`PathParams`)."""
        src, dst = self.site(src_site), self.site(dst_site)
        forward = self.path(src.name, dst.name)
        # the hosts' fabric links are on every path: a WAN path is never faster than its ends' fabrics
        host_rate = min(src.host_rate_mbps, dst.host_rate_mbps)
        if not forward:
            return PathParams(
                src_site=src.name,
                dst_site=dst.name,
                rate_mbps=host_rate,
                one_way_ms=src.fabric_one_way_ms,
                rtt_ms=2 * src.fabric_one_way_ms,
                loss=0.0,
                queue_bytes=default_queue_bytes(host_rate, 2 * src.fabric_one_way_ms),
                jitter_ms=0.0,
                wan_links=(),
            )
        dirs = [getattr(link, direction) for link, direction in forward]
        back = [getattr(link, direction) for link, direction in self.path(dst.name, src.name)]
        # The fabrics' microseconds are left out of a WAN path's delay: the WAN figures stay the plan's own.
        one_way_ms = sum(d.delay_ms for d in dirs)
        bottleneck = min(dirs, key=lambda d: d.rate_mbps)
        delivered = 1.0
        for d in dirs:
            delivered *= 1.0 - (d.burst_loss.mean_loss() if d.burst_loss is not None else d.loss)
        return PathParams(
            src_site=src.name,
            dst_site=dst.name,
            rate_mbps=min(bottleneck.rate_mbps, host_rate),
            one_way_ms=one_way_ms,
            rtt_ms=one_way_ms + sum(d.delay_ms for d in back),
            loss=1.0 - delivered,
            queue_bytes=bottleneck.queue_bytes,
            jitter_ms=sum(d.jitter_ms for d in dirs),
            wan_links=tuple(link.name for link, _ in forward),
        )


@dataclass(frozen=True)
class PathParams:
    """The end-to-end path between two sites, as the analytic model sees it.

    ``rate_mbps`` is the bottleneck, ``one_way_ms`` the sum of link delays in
    this direction, ``rtt_ms`` the idle round trip (both directions),
    ``loss`` the combined loss probability, ``queue_bytes`` the bottleneck WAN
    queue. The rate counts the hosts' fabric links at both ends as well as the
    WAN links. A path inside one site has ``wan_links == ()`` and the site
    fabric's figures.
    """

    src_site: str
    dst_site: str
    rate_mbps: float
    one_way_ms: float
    rtt_ms: float
    loss: float
    queue_bytes: int
    jitter_ms: float
    wan_links: tuple[str, ...]
