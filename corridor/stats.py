"""Statistics shared by every stage: one percentile, one median, bootstrap confidence intervals.

Stage: pure helper (imports nothing of corridor). Every figure the
project prints or judges that is a percentile of samples comes from
:func:`percentile` here, so a p99 means the same thing in ``check``, ``bench``,
``trace info``, the workload summaries and the verdict table.

Definition: linear interpolation between closest ranks (numpy's default,
"method 7" of Hyndman and Fan), with ``q`` in percent from 0 to 100.
:func:`percentile`, :func:`median` and :func:`mean` use the standard library
only, so agents and the delay line (which start in emulated hosts without
numpy) share them; the bootstrap intervals use numpy.

Confidence intervals are percentile bootstrap intervals: resample the samples
with replacement, compute the statistic on each resample, take the 2.5th and
97.5th percentile of those values. For a ratio of two independent samples
(remote over local) both are resampled independently. The resampling is seeded,
so the same samples always give the same interval.

Samples that come in clusters sharing a cause (the steps of one repetition
share its links' loss draw and its TCP windows) are resampled in two stages
(:func:`bootstrap_clustered`): the clusters with replacement, then the samples
within each drawn cluster. Pooling them as if every sample were its own draw
gives an interval narrower than the spread between clusters.

A mean over samples of known kinds in a fixed proportion (a training run's
ordinary steps and its outer-sync steps, one every H by design) is resampled
within each kind (:func:`bootstrap_strata_mean`): a resample keeps the
run's count of each kind, so its interval is the spread of the steps, not of
how many syncs a draw happened to catch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: Bootstrap resamples per interval: the interval's ends move by well under 1 % between seeds at this count.
BOOTSTRAP_RESAMPLES = 2000
#: Confidence level of every interval the project reports.
CONFIDENCE = 0.95
_SEED = 20261201


def _array(values: Sequence[float]) -> np.ndarray:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError("expected a flat sequence of numbers")
    return arr


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks; NaN for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be from 0 to 100, got {q!r}")
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Iterable[float]) -> float:
    """The 50th percentile; NaN for no values."""
    return percentile(values, 50.0)


def mean(values: Iterable[float]) -> float:
    items = [float(v) for v in values]
    return math.fsum(items) / len(items) if items else math.nan


#: The median absolute deviation times this estimates a normal distribution's standard deviation.
MAD_TO_SIGMA = 1.4826


def robust_sigma(values: Iterable[float], center: float | None = None) -> float:
    """A standard deviation that a few outliers do not move: 1.4826 x the median absolute deviation from
    ``center`` (the values' own median when None); NaN for no values."""
    items = [float(v) for v in values]
    if not items:
        return math.nan
    middle = median(items) if center is None else float(center)
    return MAD_TO_SIGMA * median(abs(v - middle) for v in items)


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95 % confidence interval and the sample count behind it."""

    value: float
    low: float
    high: float
    n: int

    @property
    def half_width_rel(self) -> float:
        """Half the interval's width relative to the value (0.05 = +/- 5 %); inf when undefined."""
        if not self.value or not all(math.isfinite(x) for x in (self.value, self.low, self.high)):
            return math.inf
        return (self.high - self.low) / 2.0 / abs(self.value)

    def as_dict(self, prefix: str = "") -> dict[str, float | int | None]:
        def clean(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {f"{prefix}value": clean(self.value), f"{prefix}ci_low": clean(self.low),
                f"{prefix}ci_high": clean(self.high), f"{prefix}n": self.n}


def _statistic(kind: str, q: float | None) -> Callable[[np.ndarray], np.ndarray]:
    """A function of a (resamples x n) array giving the statistic per row."""
    import numpy as np

    if kind == "mean":
        return lambda a: a.mean(axis=-1)
    if kind == "percentile" and q is not None:
        return lambda a: np.percentile(a, q, axis=-1)
    raise ValueError(f"unknown statistic {kind!r}")


def _resample(arr: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    idx = rng.integers(0, arr.size, size=(resamples, arr.size))
    return arr[idx]


def bootstrap(values: Sequence[float], *, q: float | None = 50.0, stat: str = "percentile",
              resamples: int = BOOTSTRAP_RESAMPLES, seed: int = _SEED) -> Estimate:
    """A statistic of ``values`` (a percentile ``q``, or the mean) with its 95 % bootstrap interval."""
    return bootstrap_clustered(values, None, q=q, stat=stat, resamples=resamples, seed=seed)


def bootstrap_ratio(numerator: Sequence[float], denominator: Sequence[float], *, q: float | None = 50.0,
                    stat: str = "percentile", resamples: int = BOOTSTRAP_RESAMPLES, seed: int = _SEED) -> Estimate:
    """stat(numerator) / stat(denominator) with a 95 % interval, both samples resampled independently.

    ``n`` is the smaller of the two sample counts.
    """
    return bootstrap_clustered_ratio(numerator, None, denominator, None, q=q, stat=stat, resamples=resamples,
                                     seed=seed)


def _interval(value: float, boots: np.ndarray, n: int) -> Estimate:
    """``value`` with the 95 % interval its resampled values ``boots`` give."""
    import numpy as np

    alpha = (1.0 - CONFIDENCE) / 2.0 * 100.0
    return Estimate(value, float(np.percentile(boots, alpha)), float(np.percentile(boots, 100.0 - alpha)), n)


def _clusters(values: Sequence[float], clusters: Sequence[object] | None) -> list[np.ndarray]:
    """``values`` split by their cluster label, in order of first appearance (one group without labels)."""
    import numpy as np

    arr = _array(values)
    if clusters is None:
        return [arr]
    if len(clusters) != arr.size:
        raise ValueError(f"{len(clusters)} cluster labels for {arr.size} values")
    groups: dict[object, list[float]] = {}
    for value, label in zip(arr.tolist(), clusters, strict=True):
        groups.setdefault(label, []).append(value)
    return [np.asarray(g, dtype=float) for g in groups.values()] or [arr]


def _resample_clustered(groups: list[np.ndarray], stat: str, q: float | None, rng: np.random.Generator,
                        resamples: int) -> np.ndarray:
    """The statistic of ``resamples`` two-stage resamples: clusters with replacement, then values within each."""
    import numpy as np

    if len(groups) < 2:
        return _statistic(stat, q)(_resample(groups[0], rng, resamples))
    sizes = np.array([g.size for g in groups])
    padded = np.full((len(groups), int(sizes.max())), np.nan)
    for i, g in enumerate(groups):
        padded[i, : g.size] = g
    drawn = rng.integers(0, len(groups), size=(resamples, len(groups)))
    drawn_sizes = sizes[drawn][..., None]
    within = (rng.random((resamples, len(groups), padded.shape[1])) * drawn_sizes).astype(int)
    values = padded[drawn[..., None], within]
    values[np.arange(padded.shape[1]) >= drawn_sizes] = np.nan  # a smaller cluster draws only its own count
    flat = values.reshape(resamples, -1)
    if stat == "mean":
        return np.nanmean(flat, axis=1)
    if stat == "percentile" and q is not None:
        return row_percentile(flat, q)
    raise ValueError(f"unknown statistic {stat!r}")


def row_percentile(rows: np.ndarray, q: float) -> np.ndarray:
    """:func:`percentile` of each row's values, NaN marking no value: numpy's nanpercentile, without its loop."""
    import numpy as np

    counts = np.count_nonzero(~np.isnan(rows), axis=1)
    ordered = np.sort(rows, axis=1)  # NaN sorts to the end
    rank = (counts - 1) * q / 100.0
    below = np.floor(rank).astype(int)
    above = np.minimum(below + 1, counts - 1)
    index = np.arange(rows.shape[0])
    low, high = ordered[index, below], ordered[index, above]
    return low + (high - low) * (rank - below)


def bootstrap_clustered(values: Sequence[float], clusters: Sequence[object] | None, *, q: float | None = 50.0,
                        stat: str = "percentile", resamples: int = BOOTSTRAP_RESAMPLES,
                        seed: int = _SEED) -> Estimate:
    """:func:`bootstrap` of ``values`` whose samples come in ``clusters`` (one label per value).

    With two or more clusters each resample draws the clusters with replacement and
    then the values within each drawn cluster, so the interval holds the spread
    between clusters; with one (or no labels) it resamples the values alone.
    """
    import numpy as np

    groups = _clusters(values, clusters)
    arr = np.concatenate(groups)
    if arr.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = float(_statistic(stat, q)(arr[None, :])[0])
    if arr.size == 1:
        return Estimate(value, math.nan, math.nan, 1)
    return _interval(value, _resample_clustered(groups, stat, q, np.random.default_rng(seed), resamples),
                     int(arr.size))


def bootstrap_clustered_ratio(numerator: Sequence[float], numerator_clusters: Sequence[object] | None,
                              denominator: Sequence[float], denominator_clusters: Sequence[object] | None, *,
                              q: float | None = 50.0, stat: str = "percentile",
                              resamples: int = BOOTSTRAP_RESAMPLES, seed: int = _SEED) -> Estimate:
    """:func:`bootstrap_ratio` with each side resampled as :func:`bootstrap_clustered` does."""
    import numpy as np

    a_groups, b_groups = _clusters(numerator, numerator_clusters), _clusters(denominator, denominator_clusters)
    a, b = np.concatenate(a_groups), np.concatenate(b_groups)
    if a.size == 0 or b.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    n = int(min(a.size, b.size))
    fn = _statistic(stat, q)
    den = float(fn(b[None, :])[0])
    value = float(fn(a[None, :])[0]) / den if den else math.nan
    if a.size == 1 or b.size == 1:
        return Estimate(value, math.nan, math.nan, n)
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = (_resample_clustered(a_groups, stat, q, rng, resamples)
                  / _resample_clustered(b_groups, stat, q, rng, resamples))
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return Estimate(value, math.nan, math.nan, n)
    return _interval(value, ratios, n)


def _strata_mean_boots(strata: Sequence[Sequence[float]], rng: np.random.Generator, resamples: int,
                       weights: Sequence[float] | None = None) -> tuple[float, np.ndarray, int]:
    """The mean of all samples, its resampled values (each stratum resampled on its own), and the count.

    ``weights`` (one per stratum, default its size) is how many steps each stratum stands for: a stratum
    thinned of some samples still counts for what it was.
    """
    import numpy as np

    pairs = [(_array(s), float(w)) for s, w in zip(strata, weights or [len(s) for s in strata], strict=True)]
    pairs = [(a, w) for a, w in pairs if a.size and w > 0]
    n = sum(int(a.size) for a, _ in pairs)
    total_w = sum(w for _, w in pairs)
    if n == 0:
        return math.nan, np.array([]), 0
    value = sum(w * float(a.mean()) for a, w in pairs) / total_w
    boots = np.zeros(resamples)
    for a, w in pairs:
        boots += w * a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    return value, boots / total_w, n


def bootstrap_strata_mean(strata: Sequence[Sequence[float]], *, weights: Sequence[float] | None = None,
                          resamples: int = BOOTSTRAP_RESAMPLES, seed: int = _SEED) -> Estimate:
    """The mean of every sample of ``strata`` with a 95 % interval from resampling each stratum on its own."""
    import numpy as np

    value, boots, n = _strata_mean_boots(strata, np.random.default_rng(seed), resamples, weights)
    if n < 2:
        return Estimate(value, math.nan, math.nan, n)
    return _interval(value, boots, n)


def bootstrap_strata_mean_ratio(numerator: Sequence[Sequence[float]], denominator: Sequence[Sequence[float]], *,
                                weights: tuple[Sequence[float], Sequence[float]] | None = None,
                                resamples: int = BOOTSTRAP_RESAMPLES, seed: int = _SEED) -> Estimate:
    """mean(numerator) / mean(denominator), each a set of strata resampled as :func:`bootstrap_strata_mean` does."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a, a_boots, na = _strata_mean_boots(numerator, rng, resamples, weights[0] if weights else None)
    b, b_boots, nb = _strata_mean_boots(denominator, rng, resamples, weights[1] if weights else None)
    if na == 0 or nb == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = a / b if b else math.nan
    if na < 2 or nb < 2:
        return Estimate(value, math.nan, math.nan, min(na, nb))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = a_boots / b_boots
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return Estimate(value, math.nan, math.nan, min(na, nb))
    return _interval(value, ratios, min(na, nb))


def samples_for_width(estimate: Estimate, target_rel: float) -> int | None:
    """Samples needed for the interval's relative half-width to shrink to ``target_rel``.

    An interval narrows as 1/sqrt(n), so n' = n * (current / target)^2. None when
    the current width is undefined (fewer than two samples, a zero value).
    """
    width = estimate.half_width_rel
    if estimate.n < 2 or not math.isfinite(width) or target_rel <= 0:
        return None
    if width <= target_rel:
        return estimate.n
    return int(math.ceil(estimate.n * (width / target_rel) ** 2))


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (goodput); (nan, nan) for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    z = 1.959963984540054
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
