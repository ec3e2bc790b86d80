"""Geography and fibre to one-way delay: the delay derivation a topology link is built from.

Stage: model (pure). Given two places and how the link is described (a waypoint
route, a fibre distance, nothing but the end points, or an explicit delay) it
derives the one-way delay and records every step in a
:class:`corridor.planning.plan.LinkDerivation`, so an engineer can redo the sum by hand.

The sum, for one direction::

    one_way_ms = path_km x us_per_km / 1000                      (propagation)
               + amplifiers x 0.15 us + regenerators x 100 us    (line equipment)
               + switches x 1 us                                 (a data-centre switch per end)

``path_km`` is the fibre length: the waypoint legs times the route slack (1.3,
the median conduit/great-circle ratio over 120 US city pairs in Bozkurt et al.,
"Dissecting Latency in the Internet's Fiber Infrastructure"), or the great
circle times the default stretch (1.6) where no route is given. The default
stretch is calibrated on the one measured Chinese corridor: Zhongwei-Beijing
is 8-10 ms one way (Chinanews 2022); 1,009 km x 1.6 x 4.90 us/km plus equipment
gives 8.1 ms, and the same defaults give Urumqi-Beijing 19.5 ms.

Regeneration every 600 km: long-haul 400G wavelengths (16QAM-class, in service
since 2024) reach roughly 600-1,000 km before they need electrical regeneration,
and carrier backbones terminate traffic electrically at provincial nodes spaced
about as far apart along these routes (Urumqi-Hami 530 km, Hami-Jiuquan 450 km,
Jiuquan-Lanzhou 680 km); so one OEO/FEC site per 600 km is the conservative end.
At 100 us each it adds 0.1 ms per 600 km, about 3 % of the propagation delay.

Network layers. A link may say which layer carries it (``layer:`` in the
topology): ``optical`` (a dedicated wavelength), ``private-ip`` (a carrier's
private IP backbone) or ``public-internet``. A layered link given only by its
ends takes the calibrated stretch :data:`LAYER_STRETCH` instead of the default
stretch, and each layer adds its overhead on top of fibre and equipment::

    layer_ms = fixed_ms + (detour - 1) x (propagation + equipment)

``detour`` is the IP layer's longer path (traffic climbs to provincial core
routers and back rather than following the shortest fibre) and ``fixed_ms``
its forwarding and queueing. Stretch, detours and fixed parts are fitted to the
CAICT Q1 2024 hub-cluster latencies by :mod:`corridor.validation.latency`,
which recomputes the fit and checks these constants against it. A link with no
layer keeps the plain fibre model above, so existing presets do not move.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from corridor.errors import CorridorError
from corridor.geography.geo import Place, distance_km, polyline_km
from corridor.planning.plan import LinkDerivation

#: Speed of light in vacuum, km/s.
C_KM_PER_S = 299_792.458


@dataclass(frozen=True)
class Fibre:
    """A fibre kind, described by its group index at 1550 nm."""

    name: str
    group_index: float
    description: str

    @property
    def us_per_km(self) -> float:
        """One-way propagation delay per km of this fibre, in microseconds."""
        return self.group_index / C_KM_PER_S * 1e6


#: Fibre kinds by name (explicit registry).
FIBRES: dict[str, Fibre] = {
    "smf": Fibre("smf", 1.468, "standard single-mode fibre (G.652), group index 1.468 at 1550 nm"),
    "hollow-core": Fibre("hollow-core", 1.003, "hollow-core fibre, light at about 99.7 % of c"),
}


@dataclass(frozen=True)
class ModelParams:
    """The knobs of the corridor model; a spec's ``model:`` block changes them."""

    route_slack: float = 1.3
    default_stretch: float = 1.6
    fibre: str = "smf"
    amplifier_spacing_km: float = 80.0
    amplifier_us: float = 0.15
    regen_spacing_km: float = 600.0
    regen_us: float = 100.0
    switch_us: float = 1.0
    switches_per_link: int = 2


DEFAULT_MODEL = ModelParams()

#: Fibre km per great-circle km for a layered link given only by its ends: fitted
#: to the CAICT Q1 2024 optical-layer mean and max over the 45 hub-cluster pairs
#: (corridor.validation.latency.fit_layers recomputes it). Larger than the 1.6 of
#: unlayered links because it also absorbs the detours of real conduits between
#: inland clusters, which CAICT measured and the Zhongwei-Beijing figure does not show.
LAYER_STRETCH = 1.84


@dataclass(frozen=True)
class NetworkLayer:
    """What carries a WAN link: its overhead over the fibre and its default loss and jitter."""

    name: str
    description: str
    detour: float  # path multiplier over the optical route (1.0: none)
    fixed_ms: float  # forwarding and queueing at the ends, one way
    loss: float  # default random loss, one direction
    jitter_ms: float  # default jitter, one direction

    def overhead_ms(self, optical_ms: float) -> float:
        """One-way delay this layer adds to a path whose optical delay is ``optical_ms``."""
        return self.fixed_ms + (self.detour - 1.0) * optical_ms


#: Layers by name (explicit registry). Detour and fixed parts: the CAICT Q1 2024
#: fit (corridor.validation.latency). Loss and jitter: DESIGN.md's defaults, an
#: OTN wavelength 0-1e-6 and <= 10 us, a carrier IP backbone 1e-5-1e-4 and
#: 50-100 us, the public Internet 1e-3-1e-2 at peak and 1-5 ms (the low ends for
#: loss, since CAICT reports the best case).
LAYERS: dict[str, NetworkLayer] = {
    "optical": NetworkLayer("optical", "a dedicated wavelength (OTN) between the sites", 1.0, 0.0, 1e-6, 0.010),
    "private-ip": NetworkLayer("private-ip", "a carrier's private IP backbone", 1.43, 0.30, 1e-5, 0.075),
    "public-internet": NetworkLayer("public-internet", "the public inter-province Internet", 1.70, 0.0, 1e-3, 2.0),
}


def layer(name: str) -> NetworkLayer:
    """The network layer ``name``; raises CorridorError listing the known layers."""
    try:
        return LAYERS[name]
    except KeyError:
        raise CorridorError(f"unknown network layer {name!r}; known: {', '.join(LAYERS)}") from None


def fibre(name: str) -> Fibre:
    """The fibre kind ``name``; raises CorridorError listing the known kinds."""
    try:
        return FIBRES[name]
    except KeyError:
        raise CorridorError(f"unknown fibre {name!r}; known: {', '.join(FIBRES)}") from None


def _equipment(path_km: float, params: ModelParams) -> tuple[int, int, int, float]:
    """Amplifier, regenerator and switch counts along ``path_km`` of fibre, and their delay in ms.

    Amplifiers and regenerators sit at every full spacing along the fibre (a
    regeneration site also amplifies, but counting both is a 0.15 us error).
    """
    amplifiers = int(path_km // params.amplifier_spacing_km)
    regenerators = int(path_km // params.regen_spacing_km)
    switches = params.switches_per_link
    equipment_us = amplifiers * params.amplifier_us + regenerators * params.regen_us + switches * params.switch_us
    return amplifiers, regenerators, switches, equipment_us / 1e3


def _derive(
    source: str,
    great_circle_km: float,
    path_km: float,
    waypoints: tuple[str, ...],
    fibre_name: str,
    params: ModelParams,
    delay_scale: float,
    route_points: tuple[tuple[float, float], ...],
    layer_name: str | None = None,
) -> LinkDerivation:
    kind = fibre(fibre_name)
    propagation_ms = path_km * kind.us_per_km / 1e3
    amplifiers, regenerators, switches, equipment_ms = _equipment(path_km, params)
    layer_ms = layer(layer_name).overhead_ms(propagation_ms + equipment_ms) if layer_name else 0.0
    return LinkDerivation(
        source=source,
        great_circle_km=great_circle_km,
        path_km=path_km,
        stretch=path_km / great_circle_km if great_circle_km > 0 else None,
        waypoints=waypoints,
        fibre=fibre_name,
        us_per_km=kind.us_per_km,
        propagation_ms=propagation_ms,
        amplifiers=amplifiers,
        regenerators=regenerators,
        switches=switches,
        equipment_ms=equipment_ms,
        one_way_ms=(propagation_ms + equipment_ms + layer_ms) * delay_scale,
        delay_scale=delay_scale,
        route_points=route_points,
        layer=layer_name,
        layer_ms=layer_ms,
    )


def derive_route(
    a: Place,
    b: Place,
    waypoints: Sequence[Place],
    *,
    fibre_name: str | None = None,
    params: ModelParams = DEFAULT_MODEL,
    delay_scale: float = 1.0,
    layer_name: str | None = None,
) -> LinkDerivation:
    """A link along explicit waypoints: great-circle legs through them, times the route slack."""
    points = tuple((p.lat, p.lon) for p in (a, *waypoints, b))
    path_km = polyline_km(points) * params.route_slack
    return _derive(
        "route",
        distance_km(a, b),
        path_km,
        tuple(p.name for p in waypoints),
        fibre_name or params.fibre,
        params,
        delay_scale,
        points,
        layer_name,
    )


def derive_great_circle(
    a: Place,
    b: Place,
    *,
    fibre_name: str | None = None,
    params: ModelParams = DEFAULT_MODEL,
    delay_scale: float = 1.0,
    layer_name: str | None = None,
) -> LinkDerivation:
    """A link given only by its ends: the great circle times the default stretch (a layered link: LAYER_STRETCH)."""
    gc_km = distance_km(a, b)
    stretch = LAYER_STRETCH if layer_name else params.default_stretch
    return _derive(
        "great-circle",
        gc_km,
        gc_km * stretch,
        (),
        fibre_name or params.fibre,
        params,
        delay_scale,
        ((a.lat, a.lon), (b.lat, b.lon)),
        layer_name,
    )


def derive_distance(
    a: Place,
    b: Place,
    path_km: float,
    *,
    fibre_name: str | None = None,
    params: ModelParams = DEFAULT_MODEL,
    delay_scale: float = 1.0,
    layer_name: str | None = None,
) -> LinkDerivation:
    """A link with a known fibre length (from a carrier's route map, say)."""
    return _derive(
        "distance",
        distance_km(a, b),
        path_km,
        (),
        fibre_name or params.fibre,
        params,
        delay_scale,
        ((a.lat, a.lon), (b.lat, b.lon)),
        layer_name,
    )


def derive_explicit(
    a: Place,
    b: Place,
    delay_ms: float,
    *,
    fibre_name: str | None = None,
    delay_scale: float = 1.0,
    layer_name: str | None = None,
) -> LinkDerivation:
    """A link whose one-way delay is given outright; nothing is derived, the distance is shown for context.

    A layer is recorded but adds nothing: the given delay is already end to end.
    """
    return LinkDerivation(
        source="explicit-delay",
        great_circle_km=distance_km(a, b),
        path_km=None,
        stretch=None,
        waypoints=(),
        fibre=fibre_name or "-",
        us_per_km=None,
        propagation_ms=delay_ms,
        amplifiers=0,
        regenerators=0,
        switches=0,
        equipment_ms=0.0,
        one_way_ms=delay_ms * delay_scale,
        delay_scale=delay_scale,
        route_points=((a.lat, a.lon), (b.lat, b.lon)),
        layer=layer_name,
    )


def floor_ms(great_circle_km: float, fibre_name: str = "smf") -> float:
    """The physical lower bound: the great circle in this fibre, no equipment."""
    return great_circle_km * fibre(fibre_name).us_per_km / 1e3


def explain(d: LinkDerivation) -> list[str]:
    """The derivation as lines of text, one step per line, for ``corridor topo show``."""
    if d.source == "explicit-delay":
        if math.isclose(d.delay_scale, 1.0):
            lines = [f"one-way delay given explicitly: {d.one_way_ms:.3f} ms"]
        else:
            lines = [f"one-way delay given explicitly: {d.propagation_ms:.3f} ms x scale {d.delay_scale:g}"
                     f" = {d.one_way_ms:.3f} ms"]
        if d.great_circle_km:
            gc_km = d.great_circle_km
            lines.append(f"(for context: great circle {gc_km:,.0f} km, smf floor {floor_ms(gc_km):.2f} ms)")
        return lines
    assert d.path_km is not None and d.us_per_km is not None
    lines = []
    gc = d.great_circle_km or 0.0
    if d.source == "route":
        via = " - ".join(d.waypoints) if d.waypoints else "(direct)"
        legs_km = polyline_km(d.route_points) if len(d.route_points) > 1 else d.path_km
        stretch = f" ({d.stretch:.2f} x great circle {gc:,.0f} km)" if d.stretch else ""
        lines.append(
            f"route via {via}: legs {legs_km:,.0f} km x slack {d.path_km / legs_km:.2f}"
            f" = fibre {d.path_km:,.0f} km{stretch}"
        )
    elif d.source == "great-circle":
        lines.append(f"great circle {gc:,.0f} km x default stretch {d.stretch:.2f} = fibre {d.path_km:,.0f} km")
    else:
        stretch = f" ({d.stretch:.2f} x great circle {gc:,.0f} km)" if d.stretch else ""
        lines.append(f"fibre distance given: {d.path_km:,.0f} km{stretch}")
    lines.append(
        f"propagation: {d.path_km:,.0f} km x {d.us_per_km:.3f} us/km ({d.fibre}) = {d.propagation_ms:.3f} ms"
    )
    lines.append(
        f"equipment: {d.amplifiers} amplifiers + {d.regenerators} regenerators + {d.switches} switches"
        f" = {d.equipment_ms:.3f} ms"
    )
    if d.layer:
        spec = layer(d.layer)
        lines.append(
            f"layer {d.layer}: {spec.fixed_ms:g} ms fixed + detour x{spec.detour:g} on"
            f" {d.propagation_ms + d.equipment_ms:.3f} ms = {d.layer_ms:.3f} ms"
        )
    total = d.propagation_ms + d.equipment_ms + d.layer_ms
    if not math.isclose(d.delay_scale, 1.0):
        lines.append(f"one way: {total:.3f} ms x scale {d.delay_scale:g} = {d.one_way_ms:.3f} ms")
    else:
        lines.append(f"one way: {d.one_way_ms:.3f} ms")
    return lines
