"""Topology specs: YAML files under ``topologies/`` loaded into frozen, validated dataclasses.

Stage: spec (pure). This is where a user's words become numbers. Every value is
checked on load and every problem raises :class:`corridor.errors.SpecError`
naming the file, the dotted key and what is allowed; nothing is silently
ignored or guessed. Unit strings go through :mod:`corridor.spec.units` only. The
place table (:mod:`corridor.geography.geo`) and the model's parameter and fibre types
(:mod:`corridor.geography.fibre`) are read here only as data, to check names and ranges.

Schema (every key but ``sites`` optional)::

    name: xinjiang-coastal            # default: the file's stem
    description: one line
    model:                            # knobs of corridor.geography.fibre (defaults shown)
      route_slack: 1.3                #   fibre km per great-circle km along a waypoint route
      stretch: 1.6                    #   the same for a link with no route or distance
      fibre: smf                      #   smf | hollow-core
      amplifier_spacing: 80km
      regen_spacing: 600km
      amplifier_delay: 0.15us
      regen_delay: 100us
      switch_delay: 1us
    fabric:                           # the site fabrics (every site; a site's own fabric: overrides)
      host_rate: 10Gbit               #   each host's link to its site switch (default below)
      delay: 10us                     #   one way across a site: host - switch - host
    defaults:                         # per-link settings every link inherits
      rate: 1Gbit
      loss: 1e-6
      jitter: 10us
      queue: 1bdp                     # bytes ("6MB"), packets ("1000p") or a BDP multiple ("1.5bdp")
    places:                           # extra waypoints (besides corridor.geography.geo.PLACES)
      mycity: {lat: 36.0, lon: 100.0}
    sites:
      urumqi:                         # a site name; also its place unless `place:` says otherwise
        code: urm                     # <= 4 lower-case letters/digits, used in Linux names
        kind: gpu                     # gpu | hub | city | waypoint (default: the place's kind)
        hosts: {gpu: 2, client: 1}    # roles gpu, client, store
        place: urumqi                 # optional
        lat: 43.83                    # optional, with lon: overrides the place
        lon: 87.62
        fabric: {host_rate: 400Gbit}  # optional, this site's fabric
    links:
      - between: [urumqi, beijing]
        name: urumqi-beijing          # default: "<a>-<b>"
        route: [turpan, hami, ...]    # waypoints between the ends; or distance: 3500km; or delay: 20ms
        rate: 1Gbit
        loss: 1e-5                    # or burst_loss: {p_good_to_bad, p_bad_to_good, loss_good, loss_bad}
        jitter: 50us
        queue: 1bdp
        fibre: smf
        layer: optical                # optical | private-ip | public-internet (default: none, plain fibre)
        reverse: {rate: 100Mbit}      # b->a overrides: rate, loss, burst_loss, jitter, queue, delay

With none of ``route``/``distance``/``delay`` the link is the great circle times
``model.stretch``. A ``layer`` adds that layer's overhead to the delay (see
:mod:`corridor.geography.fibre`) and supplies the link's default loss and jitter, which
the link's own ``loss``/``jitter`` still override; with no layer a link is plain
fibre plus equipment, as it always was.

A site's fabric (its hosts' links to the site switch, and the switch to the
site router) is never slower than the WAN links the site's hosts use unless the
spec says so: without ``host_rate`` it is the faster of 10 Gbit/s (what the
emulated veth links carry on a small machine) and the fastest WAN link at the
site. The emulation does not shape the fabric; the model counts it in every path.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from corridor import CHECKOUT_ROOT
from corridor.errors import SpecError, UnitError
from corridor.geography import geo
from corridor.geography.fibre import FIBRES, LAYERS, ModelParams
from corridor.links.contract import MTU_BYTES, GilbertElliott
from corridor.spec import units
from corridor.spec.validate import describe_value, did_you_mean
from corridor.spec.yamlio import load_yaml, loads_yaml

#: Host roles and the short form used in host names (``urm-gpu1``, ``cty-cli1``).
ROLES: dict[str, str] = {"gpu": "gpu", "client": "cli", "store": "sto"}

MAX_HOSTS_PER_SITE = 16
MAX_HOSTS = 64
#: Sites are 10.i.0.0/24 and links 10.255.k.0/30, so both stay below 255.
MAX_SITES = 100
MAX_LINKS = 250
MAX_WAYPOINTS = 50

MAX_DELAY_MS = 10_000.0
MAX_JITTER_MS = 1_000.0
MIN_RATE_MBPS = 0.001
MAX_RATE_MBPS = 10_000_000.0  # 10 Tbit/s, about a third of a fully lit fibre
MAX_DISTANCE_KM = 40_075.0  # once round the equator
MAX_QUEUE_BYTES = 1_000_000_000
MAX_QUEUE_PACKETS = 1_000_000
MAX_BDP_MULTIPLE = 100.0

NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
CODE_RE = re.compile(r"[a-z][a-z0-9]{0,3}")
_BDP_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*[xX]?\s*bdp\s*$", re.IGNORECASE)

TOP_KEYS = ("name", "description", "model", "fabric", "defaults", "places", "sites", "links")
MODEL_KEYS = (
    "route_slack",
    "stretch",
    "fibre",
    "amplifier_spacing",
    "regen_spacing",
    "amplifier_delay",
    "regen_delay",
    "switch_delay",
)
DIRECTION_KEYS = ("rate", "loss", "burst_loss", "jitter", "queue")
DEFAULT_KEYS = (*DIRECTION_KEYS, "fibre")
SITE_KEYS = ("code", "kind", "hosts", "place", "lat", "lon", "label", "fabric")
FABRIC_KEYS = ("host_rate", "delay")
#: A site fabric's one-way delay is microseconds; more than this is a WAN, not a site.
MAX_FABRIC_DELAY_MS = 10.0
PLACE_KEYS = ("lat", "lon", "label")
LINK_KEYS = ("between", "name", "route", "distance", "delay", *DIRECTION_KEYS, "fibre", "layer", "reverse")
REVERSE_KEYS = (*DIRECTION_KEYS, "delay")
BURST_KEYS = ("p_good_to_bad", "p_bad_to_good", "loss_good", "loss_bad")


# -- dataclasses -------------------------------------------------------------


@dataclass(frozen=True)
class QueueSpec:
    """A queue limit as written: ``amount`` bytes, packets, or a multiple of the link's BDP."""

    amount: float
    unit: str  # "bytes", "packets" or "bdp"

    def text(self) -> str:
        if self.unit == "bdp":
            return f"{self.amount:g}bdp"
        if self.unit == "packets":
            return f"{int(self.amount)}p"
        return f"{int(self.amount)}B"


DEFAULT_QUEUE = QueueSpec(1.0, "bdp")


@dataclass(frozen=True)
class FabricSpec:
    """A site fabric as the spec gives it; None leaves the value to the planner's default."""

    host_rate_mbps: float | None = None  # each host's link to the site switch
    delay_ms: float | None = None  # one way across the site (host - switch - host)

    def merged(self, over: FabricSpec | None) -> FabricSpec:
        """This fabric with the values ``over`` gives replacing ours."""
        if over is None:
            return self
        return FabricSpec(
            host_rate_mbps=over.host_rate_mbps if over.host_rate_mbps is not None else self.host_rate_mbps,
            delay_ms=over.delay_ms if over.delay_ms is not None else self.delay_ms,
        )


@dataclass(frozen=True)
class DirectionSpec:
    """One direction of a link as the spec asks for it (delay comes from the link unless ``delay_ms`` is set)."""

    rate_mbps: float
    loss: float = 0.0
    jitter_ms: float = 0.0
    queue: QueueSpec = DEFAULT_QUEUE
    burst_loss: GilbertElliott | None = None
    delay_ms: float | None = None  # a per-direction delay (asymmetric link); None: the link's


@dataclass(frozen=True)
class SiteSpec:
    name: str
    code: str
    kind: str
    label: str
    lat: float
    lon: float
    place: str | None  # the geo place it stands on, None when lat/lon were given
    hosts: tuple[tuple[str, int], ...]  # (role, count) in ROLES order, zero counts left out
    fabric: FabricSpec | None = None  # this site's own fabric settings, over the topology's

    @property
    def host_count(self) -> int:
        return sum(n for _, n in self.hosts)


@dataclass(frozen=True)
class LinkSpec:
    """A WAN link between sites ``a`` and ``b``; ``forward`` is a->b, ``reverse`` b->a."""

    name: str
    a: str
    b: str
    route: tuple[str, ...] | None  # waypoint place names between the ends
    distance_km: float | None
    delay_ms: float | None
    fibre: str | None
    forward: DirectionSpec
    reverse: DirectionSpec
    delay_scale: float = 1.0
    layer: str | None = None  # network layer (corridor.geography.fibre.LAYERS); None: plain fibre


@dataclass(frozen=True)
class TopologySpec:
    """A validated topology. ``path`` is where it came from (for messages); ``source`` as recorded."""

    name: str
    description: str
    path: str
    source: str  # "preset:NAME" or the file path
    model: ModelParams
    places: tuple[geo.Place, ...]
    sites: tuple[SiteSpec, ...]
    links: tuple[LinkSpec, ...]
    overrides: tuple[str, ...] = ()  # what override_links changed, in order, for the record
    fabric: FabricSpec = FabricSpec()  # the topology-wide site fabric (a site's own fabric: overrides it)

    def site(self, name: str) -> SiteSpec:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def link(self, name: str) -> LinkSpec:
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record of the resolved spec (numbers in the units their keys name)."""
        return dataclasses.asdict(self)


# -- helpers -----------------------------------------------------------------


class _Ctx:
    """Where we are in the file, for error messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str | None, message: str) -> NoReturn:
        raise SpecError(message, path=self.path, key=key)

    def mapping(self, value: object, key: str, what: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(key, f"expected a mapping of {what}, got {describe_value(value)}")
        for k in value:
            if not isinstance(k, str):
                self.fail(key, f"keys must be names, got {k!r}")
        return value

    def keys(self, value: Mapping[str, Any], key: str | None, allowed: Sequence[str]) -> None:
        for k in value:
            if k not in allowed:
                self.fail(_join(key, k), f"unknown key {k!r}; {did_you_mean(k, allowed)}allowed: {', '.join(allowed)}")

    def unit(self, fn: Any, value: object, key: str) -> Any:
        try:
            return fn(value)
        except UnitError as exc:
            self.fail(key, str(exc))

    def number(self, value: object, key: str, lo: float, hi: float, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"expected a number ({what}, {lo:g} to {hi:g}), got {value!r}")
        number = float(value)
        if not (math.isfinite(number) and lo <= number <= hi):
            self.fail(key, f"{value!r} is out of range; {what} must be between {lo:g} and {hi:g}")
        return number

    def name(self, value: object, key: str, what: str) -> str:
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            self.fail(
                key,
                f"{what} {value!r} is not a safe name: use 1-32 lower-case letters, digits, '-' or '_', "
                "starting with a letter (it ends up in Linux and shell names)",
            )
        return value


def wire_name(code_a: str, code_b: str) -> str:
    """Linux name of the wire node of a link between sites with these codes (at most 9 chars)."""
    return f"w{code_a}{code_b}"


def _join(prefix: str | None, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key





def _suggest(name: str, options: Iterable[str]) -> str:
    near = difflib.get_close_matches(name, list(options), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""


# -- field parsers -------------------------------------------------------------


def _rate(ctx: _Ctx, value: object, key: str) -> float:
    rate_mbps: float = ctx.unit(units.parse_rate_mbps, value, key)
    if not MIN_RATE_MBPS <= rate_mbps <= MAX_RATE_MBPS:
        ctx.fail(key, f"rate {value!r} is out of range; allowed 1kbit to 10Tbit")
    return rate_mbps


def _delay(ctx: _Ctx, value: object, key: str, what: str = "delay", hi: float = MAX_DELAY_MS) -> float:
    delay_ms: float = ctx.unit(units.parse_duration_ms, value, key)
    if delay_ms < 0:
        ctx.fail(key, f"{what} {value!r} must not be negative")
    if delay_ms > hi:
        ctx.fail(key, f"{what} {value!r} is absurd; allowed 0 to {hi / 1000:g}s")
    return delay_ms


def _fraction(ctx: _Ctx, value: object, key: str, *, allow_one: bool = False) -> float:
    p: float = ctx.unit(units.parse_fraction, value, key)
    if p < 0 or p > 1 or (p == 1 and not allow_one):
        allowed = "0 to 1 (or 0% to 100%)" if allow_one else "0 up to but not including 1 (e.g. 1e-5 or '0.1%')"
        ctx.fail(key, f"{value!r} is out of range; allowed {allowed}")
    return p


def _queue(ctx: _Ctx, value: object, key: str) -> QueueSpec:
    if isinstance(value, str):
        match = _BDP_RE.match(value)
        if match:
            multiple = float(match.group(1))
            if not 0 < multiple <= MAX_BDP_MULTIPLE:
                ctx.fail(key, f"queue {value!r}: a BDP multiple must be above 0 and at most {MAX_BDP_MULTIPLE:g}")
            return QueueSpec(multiple, "bdp")
    try:
        amount, unit = units.parse_queue(value)
    except UnitError as exc:
        ctx.fail(key, f"{exc}; a queue is bytes ('6MB'), packets ('1000p') or a BDP multiple ('1.5bdp')")
    if unit == "packets":
        if not 1 <= amount <= MAX_QUEUE_PACKETS:
            ctx.fail(key, f"queue {value!r} is out of range; allowed 1 to {MAX_QUEUE_PACKETS} packets")
    elif not MTU_BYTES <= amount <= MAX_QUEUE_BYTES:
        ctx.fail(key, f"queue {value!r} is out of range; allowed {MTU_BYTES}B (one packet) to 1GB")
    return QueueSpec(float(amount), unit)


def _burst(ctx: _Ctx, value: object, key: str) -> GilbertElliott:
    data = ctx.mapping(value, key, "Gilbert-Elliott parameters")
    ctx.keys(data, key, BURST_KEYS)
    for required in ("p_good_to_bad", "p_bad_to_good"):
        if required not in data:
            ctx.fail(_join(key, required), f"missing; burst_loss needs {', '.join(BURST_KEYS[:2])}")
    probs = {k: _fraction(ctx, data[k], _join(key, k), allow_one=True) for k in data}
    model = GilbertElliott(
        p_good_to_bad=probs["p_good_to_bad"],
        p_bad_to_good=probs["p_bad_to_good"],
        loss_good=probs.get("loss_good", 0.0),
        loss_bad=probs.get("loss_bad", 1.0),
    )
    if model.p_good_to_bad > 0 and model.p_bad_to_good == 0:
        ctx.fail(_join(key, "p_bad_to_good"), "is 0, so the link would stay in the bad state for ever; use > 0")
    if model.mean_loss() >= 1:
        ctx.fail(key, f"mean loss {model.mean_loss():g} leaves nothing delivered; it must be below 1")
    return model


def _fibre(ctx: _Ctx, value: object, key: str) -> str:
    if not isinstance(value, str) or value not in FIBRES:
        ctx.fail(key, f"unknown fibre {value!r}; allowed: {', '.join(FIBRES)}")
    return value


def _layer(ctx: _Ctx, value: object, key: str) -> str:
    if not isinstance(value, str) or value not in LAYERS:
        ctx.fail(key, f"unknown network layer {value!r}; allowed: {', '.join(LAYERS)} "
                      "(or leave it out for plain fibre)")
    return value


def _direction_layer(ctx: _Ctx, data: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Parse the direction settings present in one block (defaults, link or reverse)."""
    layer: dict[str, Any] = {}
    if "rate" in data:
        layer["rate_mbps"] = _rate(ctx, data["rate"], _join(prefix, "rate"))
    if "loss" in data:
        layer["loss"] = _fraction(ctx, data["loss"], _join(prefix, "loss"))
    if "jitter" in data:
        layer["jitter_ms"] = _delay(ctx, data["jitter"], _join(prefix, "jitter"), "jitter", MAX_JITTER_MS)
    if "queue" in data:
        layer["queue"] = _queue(ctx, data["queue"], _join(prefix, "queue"))
    if "burst_loss" in data:
        if layer.get("loss"):
            ctx.fail(_join(prefix, "burst_loss"), "give either loss or burst_loss in one block, not both")
        layer["burst_loss"] = _burst(ctx, data["burst_loss"], _join(prefix, "burst_loss"))
        layer["loss"] = 0.0
    elif "loss" in data:
        layer["burst_loss"] = None
    return layer


# -- sections ----------------------------------------------------------------


def _fabric(ctx: _Ctx, value: object, key: str) -> FabricSpec:
    data = ctx.mapping(value, key, "site fabric settings")
    ctx.keys(data, key, FABRIC_KEYS)
    rate = _rate(ctx, data["host_rate"], f"{key}.host_rate") if "host_rate" in data else None
    delay = (_delay(ctx, data["delay"], f"{key}.delay", "fabric delay", MAX_FABRIC_DELAY_MS)
             if "delay" in data else None)
    return FabricSpec(host_rate_mbps=rate, delay_ms=delay)


def _model(ctx: _Ctx, value: object) -> ModelParams:
    if value is None:
        return ModelParams()
    data = ctx.mapping(value, "model", "model parameters")
    ctx.keys(data, "model", MODEL_KEYS)
    kw: dict[str, Any] = {}
    if "route_slack" in data:
        kw["route_slack"] = ctx.number(data["route_slack"], "model.route_slack", 1.0, 4.0, "route slack")
    if "stretch" in data:
        kw["default_stretch"] = ctx.number(data["stretch"], "model.stretch", 1.0, 4.0, "stretch")
    if "fibre" in data:
        kw["fibre"] = _fibre(ctx, data["fibre"], "model.fibre")
    for key, field_name, lo, hi in (
        ("amplifier_spacing", "amplifier_spacing_km", 10.0, 500.0),
        ("regen_spacing", "regen_spacing_km", 50.0, 10_000.0),
    ):
        if key in data:
            km: float = ctx.unit(units.parse_distance_km, data[key], f"model.{key}")
            if not lo <= km <= hi:
                ctx.fail(f"model.{key}", f"{data[key]!r} is out of range; allowed {lo:g}km to {hi:g}km")
            kw[field_name] = km
    for key, field_name, hi_us in (
        ("amplifier_delay", "amplifier_us", 100.0),
        ("regen_delay", "regen_us", 10_000.0),
        ("switch_delay", "switch_us", 1_000.0),
    ):
        if key in data:
            us = _delay(ctx, data[key], f"model.{key}", key.replace("_", " "), hi_us / 1000) * 1000
            kw[field_name] = us
    return ModelParams(**kw)


def _places(ctx: _Ctx, value: object) -> tuple[geo.Place, ...]:
    if value is None:
        return ()
    data = ctx.mapping(value, "places", "place names to {lat, lon}")
    out = []
    for name, body in data.items():
        key = f"places.{name}"
        ctx.name(name, key, "place name")
        fields = ctx.mapping(body, key, "lat, lon and optional label")
        ctx.keys(fields, key, PLACE_KEYS)
        lat, lon = _latlon(ctx, fields, key, required=True)
        label = fields.get("label", name)
        if not isinstance(label, str):
            ctx.fail(f"{key}.label", f"expected text, got {label!r}")
        out.append(geo.Place(name, label, lat, lon, "waypoint"))
    return tuple(out)


def _latlon(ctx: _Ctx, fields: Mapping[str, Any], key: str, *, required: bool) -> tuple[float, float]:
    has = [k in fields for k in ("lat", "lon")]
    if any(has) and not all(has):
        ctx.fail(key, "give both lat and lon, or neither")
    if not any(has):
        if required:
            ctx.fail(key, "needs lat and lon (degrees)")
        return math.nan, math.nan
    lat = ctx.number(fields["lat"], f"{key}.lat", -90.0, 90.0, "latitude in degrees")
    lon = ctx.number(fields["lon"], f"{key}.lon", -180.0, 180.0, "longitude in degrees")
    return lat, lon


def _hosts(ctx: _Ctx, value: object, key: str) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ()
    data = ctx.mapping(value, key, "role: count (roles: " + ", ".join(ROLES) + ")")
    ctx.keys(data, key, tuple(ROLES))
    out = []
    for role in ROLES:
        if role not in data:
            continue
        count = data[role]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            ctx.fail(f"{key}.{role}", f"expected a whole number of hosts (0 to {MAX_HOSTS_PER_SITE}), got {count!r}")
        if count:
            out.append((role, count))
    total = sum(n for _, n in out)
    if total > MAX_HOSTS_PER_SITE:
        ctx.fail(key, f"too many hosts ({total}); at most {MAX_HOSTS_PER_SITE} per site")
    return tuple(out)


def _sites(ctx: _Ctx, value: object, places: tuple[geo.Place, ...]) -> tuple[SiteSpec, ...]:
    if value is None:
        ctx.fail("sites", "missing; a topology needs at least one site")
    data = ctx.mapping(value, "sites", "site names to site settings")
    if not data:
        ctx.fail("sites", "is empty; a topology needs at least one site")
    if len(data) > MAX_SITES:
        ctx.fail("sites", f"too many sites ({len(data)}); at most {MAX_SITES}")
    out: list[SiteSpec] = []
    codes: dict[str, str] = {}
    for name, body in data.items():
        key = f"sites.{name}"
        ctx.name(name, key, "site name")
        fields = ctx.mapping(body if body is not None else {}, key, "site settings")
        ctx.keys(fields, key, SITE_KEYS)
        lat, lon = _latlon(ctx, fields, key, required=False)
        place_name = fields.get("place", name if math.isnan(lat) else None)
        place = None
        if place_name is not None:
            if not isinstance(place_name, str):
                ctx.fail(f"{key}.place", f"expected a place name, got {place_name!r}")
            place = geo.lookup(place_name, places)
            if place is None:
                known = [p.name for p in places] + list(geo.PLACES)
                ctx.fail(
                    f"{key}.place" if "place" in fields else key,
                    f"unknown place {place_name!r}{_suggest(place_name.lower(), known)}; "
                    "name a known place with `place:` or give lat and lon",
                )
            if math.isnan(lat):
                lat, lon = place.lat, place.lon
        kind = fields.get("kind", place.kind if place else None)
        if kind is None:
            ctx.fail(f"{key}.kind", f"missing; a site with its own lat/lon needs a kind: {', '.join(geo.KINDS)}")
        if kind not in geo.KINDS:
            ctx.fail(f"{key}.kind", f"unknown kind {kind!r}; allowed: {', '.join(geo.KINDS)}")
        code = fields.get("code", re.sub(r"[^a-z0-9]", "", name)[:3])
        if not isinstance(code, str) or not CODE_RE.fullmatch(code):
            ctx.fail(f"{key}.code", f"code {code!r} must be 1-4 lower-case letters or digits, starting with a letter")
        if code in codes:
            ctx.fail(f"{key}.code", f"code {code!r} is already used by site {codes[code]!r}; codes must be unique")
        codes[code] = name
        label = fields.get("label", place.label if place else name)
        if not isinstance(label, str):
            ctx.fail(f"{key}.label", f"expected text, got {label!r}")
        hosts = _hosts(ctx, fields.get("hosts"), f"{key}.hosts")
        fabric = _fabric(ctx, fields["fabric"], f"{key}.fabric") if fields.get("fabric") is not None else None
        out.append(SiteSpec(name, code, kind, label, lat, lon, place.name if place else None, hosts, fabric))
    total = sum(s.host_count for s in out)
    if total > MAX_HOSTS:
        ctx.fail("sites", f"too many hosts in all ({total}); at most {MAX_HOSTS}")
    return tuple(out)


def _links(
    ctx: _Ctx,
    value: object,
    sites: tuple[SiteSpec, ...],
    places: tuple[geo.Place, ...],
    defaults: dict[str, Any],
    default_fibre: str | None,
) -> tuple[LinkSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        ctx.fail("links", f"expected a list of links, got {describe_value(value)}")
    if len(value) > MAX_LINKS:
        ctx.fail("links", f"too many links ({len(value)}); at most {MAX_LINKS}")
    by_name = {s.name: s for s in sites}
    out: list[LinkSpec] = []
    pairs: dict[frozenset[str], str] = {}
    names: set[str] = set()
    wires: dict[str, str] = {}
    for i, body in enumerate(value):
        key = f"links[{i}]"
        fields = ctx.mapping(body, key, "link settings")
        ctx.keys(fields, key, LINK_KEYS)
        between = fields.get("between")
        if between is None:
            ctx.fail(f"{key}.between", "missing; write between: [site_a, site_b]")
        if not isinstance(between, list) or len(between) != 2 or not all(isinstance(s, str) for s in between):
            ctx.fail(f"{key}.between", f"expected two site names like [urumqi, beijing], got {between!r}")
        a, b = between
        for end in (a, b):
            if end not in by_name:
                ctx.fail(f"{key}.between", f"unknown site {end!r}{_suggest(end, by_name)}; sites: {', '.join(by_name)}")
        if a == b:
            ctx.fail(f"{key}.between", f"a link from {a!r} to itself; the two ends must differ")
        name = ctx.name(fields.get("name", f"{a}-{b}"), f"{key}.name", "link name")
        key = f"links[{name}]"
        if name in names:
            ctx.fail(f"{key}.name", f"duplicate link name {name!r}")
        names.add(name)
        pair = frozenset((a, b))
        if pair in pairs:
            ctx.fail(f"{key}.between", f"duplicate link between {a!r} and {b!r} (already link {pairs[pair]!r})")
        pairs[pair] = name
        wire = wire_name(by_name[a].code, by_name[b].code)
        if wire in wires:
            ctx.fail(key, f"wire name {wire!r} clashes with link {wires[wire]!r}; change a site code")
        wires[wire] = name

        given = [k for k in ("route", "distance", "delay") if k in fields]
        if len(given) > 1:
            ctx.fail(key, f"give only one of route, distance or delay (got {' and '.join(given)})")
        route = None
        distance_km = None
        delay_ms = None
        if "route" in fields:
            route = _route(ctx, fields["route"], f"{key}.route", by_name[a], by_name[b], by_name, places)
        if "distance" in fields:
            distance_km = ctx.unit(units.parse_distance_km, fields["distance"], f"{key}.distance")
            assert distance_km is not None
            floor_km = geo.haversine_km(by_name[a].lat, by_name[a].lon, by_name[b].lat, by_name[b].lon)
            if not 0 < distance_km <= MAX_DISTANCE_KM:
                ctx.fail(f"{key}.distance", f"{fields['distance']!r} is out of range; allowed 1km to 40075km")
            if distance_km < floor_km * 0.99:
                ctx.fail(
                    f"{key}.distance",
                    f"{fields['distance']!r} is shorter than the great circle between the sites ({floor_km:,.0f} km); "
                    "fibre cannot be shorter",
                )
        if "delay" in fields:
            delay_ms = _delay(ctx, fields["delay"], f"{key}.delay")
        fibre_name = _fibre(ctx, fields["fibre"], f"{key}.fibre") if "fibre" in fields else default_fibre

        net_layer = _layer(ctx, fields["layer"], f"{key}.layer") if "layer" in fields else None
        layer_defaults: dict[str, Any] = {}
        if net_layer is not None:
            # The layer is more specific than the topology's defaults; the link's own settings win over both.
            layer_defaults = {"loss": LAYERS[net_layer].loss, "burst_loss": None,
                              "jitter_ms": LAYERS[net_layer].jitter_ms}
        link_layer = _direction_layer(ctx, fields, key)
        forward_kw = {**defaults, **layer_defaults, **link_layer}
        reverse_kw = dict(forward_kw)
        reverse_delay = None
        if "reverse" in fields:
            rkey = f"{key}.reverse"
            rev = ctx.mapping(fields["reverse"], rkey, "b->a overrides")
            ctx.keys(rev, rkey, REVERSE_KEYS)
            reverse_kw.update(_direction_layer(ctx, rev, rkey))
            if "delay" in rev:
                reverse_delay = _delay(ctx, rev["delay"], f"{rkey}.delay")
        if "rate_mbps" not in forward_kw:
            ctx.fail(f"{key}.rate", "missing; give the link a rate (e.g. rate: 1Gbit) here or under defaults")
        forward = DirectionSpec(**forward_kw)
        reverse = DirectionSpec(**reverse_kw, delay_ms=reverse_delay)
        link = LinkSpec(name, a, b, route, distance_km, delay_ms, fibre_name, forward, reverse, layer=net_layer)
        _check_jitter(ctx, link, key)
        out.append(link)
    return tuple(out)


def _check_jitter(ctx: _Ctx, link: LinkSpec, key: str) -> None:
    """Jitter is bounded by the delay (no reordering); checkable here where the delay is explicit."""
    for direction, rkey in ((link.forward, key), (link.reverse, f"{key}.reverse")):
        delay = direction.delay_ms if direction.delay_ms is not None else link.delay_ms
        if delay is not None and direction.jitter_ms > delay:
            ctx.fail(
                f"{rkey}.jitter",
                f"jitter {direction.jitter_ms:g} ms exceeds the delay {delay:g} ms; jitter must not exceed the delay",
            )


def _route(
    ctx: _Ctx,
    value: object,
    key: str,
    a: SiteSpec,
    b: SiteSpec,
    sites: Mapping[str, SiteSpec],
    places: tuple[geo.Place, ...],
) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        ctx.fail(key, f"expected a list of waypoint place names like [hami, jiuquan, lanzhou], got {value!r}")
    names = [w.lower() for w in value]
    # The ends may be written out too (the route as a whole); they are implied.
    if names and names[0] in (a.name, a.place):
        names = names[1:]
    if names and names[-1] in (b.name, b.place):
        names = names[:-1]
    if len(names) > MAX_WAYPOINTS:
        ctx.fail(key, f"too many waypoints ({len(names)}); at most {MAX_WAYPOINTS}")
    for i, w in enumerate(names):
        if geo.lookup(w, places) is None and w not in sites:
            known = [p.name for p in places] + list(geo.PLACES) + list(sites)
            ctx.fail(
                key,
                f"unknown waypoint {w!r}{_suggest(w, known)}; use a place from corridor.geography.geo, a site, "
                "or add it under places:",
            )
        if i and names[i - 1] == w:
            ctx.fail(key, f"waypoint {w!r} is repeated")
    return tuple(names)


# -- entry points --------------------------------------------------------------


def parse_topology(data: object, *, path: str, source: str | None = None, default_name: str = "") -> TopologySpec:
    """Validate already-parsed YAML ``data``; ``path`` names it in error messages."""
    ctx = _Ctx(path)
    if data is None:
        ctx.fail(None, "the topology is empty; it needs at least a sites: section")
    top = ctx.mapping(data, "", "topology sections")
    ctx.keys(top, None, TOP_KEYS)
    name = ctx.name(top.get("name", default_name or "topology"), "name", "topology name")
    description = top.get("description", "")
    if not isinstance(description, str):
        ctx.fail("description", f"expected one line of text, got {describe_value(description)}")
    model = _model(ctx, top.get("model"))
    fabric = _fabric(ctx, top["fabric"], "fabric") if top.get("fabric") is not None else FabricSpec()
    defaults: dict[str, Any] = {}
    default_fibre: str | None = None
    if top.get("defaults") is not None:
        dflt = ctx.mapping(top["defaults"], "defaults", "link settings")
        ctx.keys(dflt, "defaults", DEFAULT_KEYS)
        defaults = _direction_layer(ctx, dflt, "defaults")
        if "fibre" in dflt:
            default_fibre = _fibre(ctx, dflt["fibre"], "defaults.fibre")
    places = _places(ctx, top.get("places"))
    sites = _sites(ctx, top.get("sites"), places)
    links = _links(ctx, top.get("links"), sites, places, defaults, default_fibre)
    return TopologySpec(
        name=name,
        description=" ".join(description.split()),
        path=path,
        source=source or path,
        model=model,
        places=places,
        sites=sites,
        links=links,
        fabric=fabric,
    )


def loads_topology(text: str, *, path: str = "<string>", default_name: str = "") -> TopologySpec:
    """Parse and validate YAML text (through :func:`corridor.spec.yamlio.loads_yaml`: bounded, no duplicate keys)."""
    data = loads_yaml(text, path=path)
    return parse_topology(data, path=path, default_name=default_name)


def topologies_dir() -> Path:
    """Where presets live: ``$CORRIDOR_TOPOLOGIES`` or the ``topologies/`` directory next to the package."""
    env = os.environ.get("CORRIDOR_TOPOLOGIES")
    if env:
        return Path(env)
    return Path(CHECKOUT_ROOT) / "topologies"


def list_presets() -> list[str]:
    """Names of the preset topologies, sorted."""
    folder = topologies_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def load_topology(name_or_path: str) -> TopologySpec:
    """Load a preset by name (``"two-site"``) or a YAML file by path, validated."""
    candidate = Path(name_or_path)
    looks_like_file = candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path or candidate.is_file()
    if looks_like_file:
        path = candidate
        source = str(candidate)
    else:
        presets = list_presets()
        if name_or_path not in presets:
            raise SpecError(
                f"unknown topology {name_or_path!r}{_suggest(name_or_path, presets)}; "
                f"presets: {', '.join(presets) or '(none found in ' + str(topologies_dir()) + ')'}; "
                "or give a path to a .yaml file"
            )
        path = topologies_dir() / f"{name_or_path}.yaml"
        source = f"preset:{name_or_path}"
    shown = _display(path)
    data = load_yaml(path, shown=shown)  # bounded size and alias expansion, no duplicate keys
    spec = parse_topology(data, path=shown, default_name=path.stem)
    return dataclasses.replace(spec, source=source)


def override_links(
    spec: TopologySpec,
    *,
    rate: object = None,
    delay: object = None,
    delay_scale: float | None = None,
    loss: object = None,
    jitter: object = None,
    queue: object = None,
    links: Sequence[str] | None = None,
) -> TopologySpec:
    """A copy of ``spec`` with link settings replaced in both directions (for sweeps).

    Values are written as in YAML (``rate="500Mbit"``, ``delay="25ms"``,
    ``loss="0.1%"``, ``queue="2bdp"``); ``delay`` makes the links explicit-delay
    links; ``delay_scale`` multiplies whatever delay the model derives. ``links``
    names the links to change (default: all). Raises SpecError.
    """
    ctx = _Ctx(spec.path)
    known = [link.name for link in spec.links]
    targets = list(known if links is None else links)
    for name in targets:
        if name not in known:
            ctx.fail("override.links", f"unknown link {name!r}{_suggest(name, known)}; links: {', '.join(known)}")
    changes: dict[str, Any] = {}
    said: list[str] = []
    if rate is not None:
        changes["rate_mbps"] = _rate(ctx, rate, "override.rate")
        said.append(f"rate={rate}")
    if loss is not None:
        changes["loss"] = _fraction(ctx, loss, "override.loss")
        changes["burst_loss"] = None
        said.append(f"loss={loss}")
    if jitter is not None:
        changes["jitter_ms"] = _delay(ctx, jitter, "override.jitter", "jitter", MAX_JITTER_MS)
        said.append(f"jitter={jitter}")
    if queue is not None:
        changes["queue"] = _queue(ctx, queue, "override.queue")
        said.append(f"queue={queue}")
    delay_ms = _delay(ctx, delay, "override.delay") if delay is not None else None
    if delay is not None:
        said.append(f"delay={delay}")
    if delay_scale is not None:
        scale = ctx.number(delay_scale, "override.delay_scale", 0.0, 100.0, "delay scale")
        if scale <= 0:
            ctx.fail("override.delay_scale", f"{delay_scale!r} must be above 0")
        said.append(f"delay_scale={delay_scale:g}")
    new_links = []
    for link in spec.links:
        if link.name in targets:
            forward = dataclasses.replace(link.forward, **changes)
            reverse = dataclasses.replace(link.reverse, **changes)
            kw: dict[str, Any] = {"forward": forward, "reverse": reverse}
            if delay_ms is not None:
                kw.update(route=None, distance_km=None, delay_ms=delay_ms)
                kw["forward"] = dataclasses.replace(forward, delay_ms=None)
                kw["reverse"] = dataclasses.replace(reverse, delay_ms=None)
            if delay_scale is not None:
                kw["delay_scale"] = link.delay_scale * float(delay_scale)
            link = dataclasses.replace(link, **kw)
            _check_jitter(ctx, link, f"override (link {link.name})")
        new_links.append(link)
    what = ", ".join(said)
    if links is not None:
        what += f" on {', '.join(targets)}"
    return dataclasses.replace(
        spec, links=tuple(new_links), overrides=spec.overrides + ((what,) if said else ())
    )
