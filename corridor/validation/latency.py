"""CAICT Q1 2024 hub-cluster latencies and the fit of corridor's network layers to them.

Stage: analysis/model (pure). The CAICT computing-network quality monitoring
bulletin for Q1 2024 reports the latency between China's national hub-cluster
cities per network layer (all three operators; best case for the IP layers).
It does not say one way or round trip; the farthest cluster pairs are about
1,780 km apart on the great circle, whose fibre floor alone is 8.7 ms one way,
so a 17.1 ms round trip would need fibre shorter than the straight line: the
figures are read as one way.

The pair set is every pair of the ten national data-centre clusters of
East-Data-West-Computing (45 pairs): Zhangjiakou, the Yangtze River Delta
demonstration zone, Wuhu, Shaoguan, Tianfu, Chongqing, Horinger, Gui'an,
Qingyang and Zhongwei. Coordinates are those of :data:`corridor.geography.geo.PLACES`
(city centres, DESIGN.md for the western hubs); Tianfu is represented by
Chengdu (the Tianfu New Area lies about 30 km south of the centre, well inside
the model's resolution) and the demonstration zone by its centre
(Qingpu-Wujiang-Jiashan). Which pairs CAICT probed is not published; all
cluster pairs is the assumption.

The fit (:func:`fit_layers`), per layer, on the model's one-way delays:

- optical: the great-circle stretch s (fibre km per great-circle km) with no
  fixed overhead. Two figures, mean and max, and one physical parameter: s is
  chosen so the relative errors of mean and max are equal and opposite (an
  exact two-parameter fit needs a negative fixed delay, which no equipment
  has);
- private IP and public Internet: ``delay = fixed + detour x optical`` with
  fixed >= 0; where the exact solution of the two equations has fixed >= 0 it
  is taken, otherwise fixed = 0 and the detour balances the two errors.

The constants in :mod:`corridor.geography.fibre` (``LAYER_STRETCH``, ``LAYERS``) are this
fit rounded; the tests check both that they reproduce CAICT within 10 % and
that they match a fresh fit.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from corridor.geography import geo
from corridor.geography.fibre import LAYER_STRETCH, LAYERS, ModelParams, derive_great_circle, floor_ms
from corridor.stats import median

#: Where the figures come from.
SOURCE = "CAICT computing-network quality monitoring bulletin, Q1 2024 (hub-cluster cities, all operators)"

#: Published one-way latency per layer, ms: (mean, max).
CAICT_Q1_2024_MS: dict[str, tuple[float, float]] = {
    "optical": (9.7, 17.1),
    "private-ip": (14.6, 23.9),
    "public-internet": (16.7, 28.7),
}

#: The ten national data-centre clusters (corridor.geography.geo keys; Tianfu as Chengdu).
HUB_CLUSTERS: tuple[str, ...] = (
    "zhangjiakou", "yrd", "wuhu", "shaoguan", "chengdu", "chongqing", "horinger", "guian", "qingyang", "zhongwei",
)

#: Policy target: hub-to-hub latency at most this multiple of the theoretical (fibre straight-line) value.
POLICY_RATIO = 1.5


@dataclass(frozen=True)
class LayerFit:
    """One layer's fitted parameters and what they give on the pair set."""

    layer: str
    stretch: float  # great-circle stretch of the fibre under it
    detour: float
    fixed_ms: float
    mean_ms: float
    max_ms: float
    published_mean_ms: float
    published_max_ms: float
    median_policy_ratio: float  # median over pairs of delay / fibre straight-line delay

    @property
    def mean_error(self) -> float:
        return self.mean_ms / self.published_mean_ms - 1.0

    @property
    def max_error(self) -> float:
        return self.max_ms / self.published_max_ms - 1.0


def hub_pairs(clusters: tuple[str, ...] = HUB_CLUSTERS) -> list[tuple[geo.Place, geo.Place]]:
    """Every unordered pair of the clusters, as places."""
    places = [geo.PLACES[name] for name in clusters]
    return list(itertools.combinations(places, 2))


def optical_delays_ms(stretch: float, pairs: list[tuple[geo.Place, geo.Place]] | None = None) -> list[float]:
    """One-way optical delay of each pair at great-circle ``stretch``: fibre and equipment, no layer overhead."""
    params = ModelParams(default_stretch=stretch)
    return [derive_great_circle(a, b, params=params).one_way_ms for a, b in (pairs or hub_pairs())]


def layer_delays_ms(name: str, pairs: list[tuple[geo.Place, geo.Place]] | None = None) -> list[float]:
    """One-way delay of each pair as corridor.geography.fibre derives it for a link of layer ``name``.

    The shipped constants.
    """
    return [derive_great_circle(a, b, layer_name=name).one_way_ms for a, b in (pairs or hub_pairs())]


def _balanced_scale(values: list[float], mean_ms: float, max_ms: float) -> float:
    """The factor k for which k x values has mean and max errors equal and opposite."""
    mean_v = sum(values) / len(values)
    return 2.0 / (mean_v / mean_ms + max(values) / max_ms)


def fit_stretch(mean_ms: float, max_ms: float, pairs: list[tuple[geo.Place, geo.Place]] | None = None) -> float:
    """Great-circle stretch for which the optical mean and max errors are equal and opposite (bisection)."""
    pairs = pairs or hub_pairs()

    def imbalance(stretch: float) -> float:
        delays = optical_delays_ms(stretch, pairs)
        return (sum(delays) / len(delays)) / mean_ms + max(delays) / max_ms - 2.0

    lo, hi = 1.0, 4.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if imbalance(mid) > 0:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def _policy_ratio(delays: list[float], pairs: list[tuple[geo.Place, geo.Place]]) -> float:
    return median([d / floor_ms(geo.distance_km(a, b)) for d, (a, b) in zip(delays, pairs, strict=True)])


def fit_layers(published: dict[str, tuple[float, float]] | None = None) -> dict[str, LayerFit]:
    """Recompute the layer calibration from the published figures (default: CAICT Q1 2024)."""
    published = published or CAICT_Q1_2024_MS
    pairs = hub_pairs()
    opt_mean, opt_max = published["optical"]
    stretch = fit_stretch(opt_mean, opt_max, pairs)
    optical = optical_delays_ms(stretch, pairs)
    x_mean, x_max = sum(optical) / len(optical), max(optical)
    fits: dict[str, LayerFit] = {}
    for name, (mean_ms, max_ms) in published.items():
        if name == "optical":
            detour, fixed = 1.0, 0.0
        else:
            detour = (max_ms - mean_ms) / (x_max - x_mean)
            fixed = mean_ms - detour * x_mean
            if fixed < 0:
                fixed, detour = 0.0, _balanced_scale(optical, mean_ms, max_ms)
        delays = [fixed + detour * d for d in optical]
        fits[name] = LayerFit(
            layer=name, stretch=stretch, detour=detour, fixed_ms=fixed,
            mean_ms=sum(delays) / len(delays), max_ms=max(delays),
            published_mean_ms=mean_ms, published_max_ms=max_ms,
            median_policy_ratio=_policy_ratio(delays, pairs),
        )
    return fits


def shipped_layers() -> dict[str, LayerFit]:
    """The same comparison for the constants corridor.geography.fibre ships (what a topology with ``layer:`` gets)."""
    pairs = hub_pairs()
    out: dict[str, LayerFit] = {}
    for name, (mean_ms, max_ms) in CAICT_Q1_2024_MS.items():
        delays = layer_delays_ms(name, pairs)
        spec = LAYERS[name]
        out[name] = LayerFit(
            layer=name, stretch=LAYER_STRETCH, detour=spec.detour, fixed_ms=spec.fixed_ms,
            mean_ms=sum(delays) / len(delays), max_ms=max(delays),
            published_mean_ms=mean_ms, published_max_ms=max_ms,
            median_policy_ratio=_policy_ratio(delays, pairs),
        )
    return out
