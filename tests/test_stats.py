"""The one statistics module: percentile semantics, and intervals that cover the truth as often as they claim."""

from __future__ import annotations

import math

import numpy as np
import pytest

from corridor import stats
from corridor.workloads.kind import DOES_NOT_TOLERATE, INCONCLUSIVE, MARGINAL, TOLERATES, combine, interval_verdict
from corridor.workloads.training.kind import needed_samples


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
    ([5.0], 99, 5.0),
    ([1.0, 2.0, 3.0, 4.0, 5.0], 0, 1.0),
    ([1.0, 2.0, 3.0, 4.0, 5.0], 100, 5.0),
    ([10.0, 20.0], 90, 19.0),
])
def test_percentile_interpolates_linearly(values: list[float], q: float, expected: float) -> None:
    assert stats.percentile(values, q) == pytest.approx(expected)
    assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_nothing_is_nan_and_bad_q_is_refused() -> None:
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError, match="0 to 100"):
        stats.percentile([1.0], 101)


def _coverage(trials: int, make: object) -> float:
    hits = 0
    for i in range(trials):
        truth, est = make(np.random.default_rng(1000 + i))  # type: ignore[operator]
        hits += est.low <= truth <= est.high
    return hits / trials


def test_median_interval_covers_the_true_median_95_percent_of_the_time() -> None:
    # 1,000 simulated samples of 101 step times from a skewed (log-normal) distribution
    def make(rng: np.random.Generator) -> tuple[float, stats.Estimate]:
        sample = rng.lognormal(mean=0.0, sigma=0.5, size=101)
        return 1.0, stats.bootstrap(sample, q=50, resamples=1000, seed=int(rng.integers(1 << 30)))

    coverage = _coverage(1000, make)
    assert 0.93 <= coverage <= 0.97, coverage


def test_p90_interval_covers_the_true_p90() -> None:
    def make(rng: np.random.Generator) -> tuple[float, stats.Estimate]:
        sample = rng.exponential(scale=1.0, size=300)
        return math.log(10.0), stats.bootstrap(sample, q=90, resamples=1000, seed=int(rng.integers(1 << 30)))

    coverage = _coverage(1000, make)
    assert 0.93 <= coverage <= 0.97, coverage


def test_ratio_interval_covers_the_true_slowdown() -> None:
    # remote steps 1.3x the local ones: the ratio of medians is 1.3 exactly
    def make(rng: np.random.Generator) -> tuple[float, stats.Estimate]:
        local = rng.lognormal(mean=0.0, sigma=0.3, size=120)
        remote = 1.3 * rng.lognormal(mean=0.0, sigma=0.3, size=120)
        return 1.3, stats.bootstrap_ratio(remote, local, q=50, resamples=1000, seed=int(rng.integers(1 << 30)))

    coverage = _coverage(1000, make)
    assert 0.93 <= coverage <= 0.97, coverage


def test_intervals_are_reproducible_and_narrow_with_more_samples() -> None:
    rng = np.random.default_rng(3)
    small = rng.normal(10.0, 1.0, size=30)
    large = rng.normal(10.0, 1.0, size=3000)
    assert stats.bootstrap(small) == stats.bootstrap(small)
    assert stats.bootstrap(large).half_width_rel < stats.bootstrap(small).half_width_rel / 5


def test_one_sample_has_no_interval() -> None:
    est = stats.bootstrap([3.0])
    assert est.value == 3.0 and math.isnan(est.low) and est.n == 1
    assert stats.samples_for_width(est, 0.05) is None


def test_wilson_interval() -> None:
    low, high = stats.wilson_interval(95, 100)
    assert low == pytest.approx(0.888, abs=0.002) and high == pytest.approx(0.978, abs=0.002)
    assert all(math.isnan(x) for x in stats.wilson_interval(0, 0))


# -- the verdict rule at the interval boundaries (limits 1.10 and 1.50) ------------------------------------------

@pytest.mark.parametrize(("low", "high", "expected"), [
    (1.00, 1.10, TOLERATES),  # the whole interval within the allowance, touching it
    (1.00, 1.1001, INCONCLUSIVE),  # just over: could be marginal
    (1.1001, 1.50, MARGINAL),  # wholly between the limits
    (1.10, 1.20, INCONCLUSIVE),  # touching the allowance from above is not wholly over it
    (1.5001, 2.0, DOES_NOT_TOLERATE),  # wholly over the limit
    (1.50, 2.0, INCONCLUSIVE),  # touching the limit: could still be marginal
    (1.05, 1.60, INCONCLUSIVE),  # spans both limits
    (math.nan, math.nan, INCONCLUSIVE),  # no interval (one sample)
])
def test_interval_rule_at_the_boundaries(low: float, high: float, expected: str) -> None:
    assert interval_verdict(low, high, 1.10, 1.50) == expected


def test_combining_criteria() -> None:
    assert combine([TOLERATES, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([INCONCLUSIVE, DOES_NOT_TOLERATE]) == DOES_NOT_TOLERATE
    assert combine([TOLERATES, MARGINAL]) == MARGINAL
    assert combine([TOLERATES, TOLERATES]) == TOLERATES


def test_samples_needed_to_decide_an_inconclusive_row() -> None:
    # 1.12 +/- 0.04 against a 1.10 limit: the half-width must shrink to 0.02, so 4x the samples
    est = stats.Estimate(1.12, 1.08, 1.16, 50)
    assert needed_samples(est, (1.10, 1.50)) == 200
    assert needed_samples(stats.Estimate(1.10, 1.0, 1.2, 50), (1.10, 1.50)) is None  # on the limit


def test_robust_sigma_is_the_scaled_median_absolute_deviation_and_ignores_an_outlier() -> None:
    from corridor import stats

    values = [1.0, 2.0, 3.0, 4.0, 100.0]  # deviations from the median 3: 2, 1, 0, 1, 97 -> MAD 1
    assert stats.robust_sigma(values) == pytest.approx(1.4826)
    assert stats.robust_sigma(values, center=2.0) == pytest.approx(1.4826 * 1.0)  # 1, 0, 1, 2, 98 -> 1
    assert math.isnan(stats.robust_sigma([]))


def _repetitions(rng: np.random.Generator, *, spread: float, reps: int = 5, steps: int = 19,
                 scale: float = 1.0) -> tuple[list[float], list[int]]:
    """Steps of ``reps`` repetitions: each repetition's own level (a loss draw), steps scattered about it."""
    values: list[float] = []
    labels: list[int] = []
    for rep in range(reps):
        level = scale * (1.0 + rng.normal(0.0, spread))
        values += list(level + scale * rng.normal(0.0, 0.05, size=steps))
        labels += [rep] * steps
    return values, labels


def test_clustered_interval_covers_the_median_when_repetitions_differ_and_the_pooled_one_does_not() -> None:
    # Five repetitions of 19 steps, each repetition at its own level (sd 0.3) with steps close about it (sd
    # 0.05), as the quickstart's dp-allreduce rounds read 0.87-1.94 s: the median over repetitions is 1.0.
    rng = np.random.default_rng(5)
    pooled = clustered = 0
    trials = 200
    for _ in range(trials):
        values, labels = _repetitions(rng, spread=0.3)
        seed = int(rng.integers(1 << 30))
        p = stats.bootstrap(values, resamples=500, seed=seed)
        c = stats.bootstrap_clustered(values, labels, resamples=500, seed=seed)
        pooled += p.low <= 1.0 <= p.high
        clustered += c.low <= 1.0 <= c.high
        assert c.value == p.value and c.n == p.n == len(values)
    assert pooled / trials < 0.5, pooled / trials
    assert clustered / trials >= 0.85, clustered / trials


def test_clustered_ratio_covers_the_true_slowdown_when_repetitions_differ() -> None:
    rng = np.random.default_rng(11)
    covered = 0
    trials = 200
    for _ in range(trials):
        remote, remote_reps = _repetitions(rng, spread=0.3, scale=1.3)
        local, local_reps = _repetitions(rng, spread=0.02)
        est = stats.bootstrap_clustered_ratio(remote, remote_reps, local, local_reps, resamples=500,
                                              seed=int(rng.integers(1 << 30)))
        covered += est.low <= 1.3 <= est.high
    assert covered / trials >= 0.85, covered / trials


def test_one_cluster_or_no_labels_is_the_plain_bootstrap() -> None:
    rng = np.random.default_rng(2)
    a, b = list(rng.normal(2.0, 0.2, size=40)), list(rng.normal(1.0, 0.1, size=40))
    assert stats.bootstrap_clustered(a, [7] * len(a)) == stats.bootstrap(a)
    assert stats.bootstrap_clustered(a, None, q=90) == stats.bootstrap(a, q=90)
    assert stats.bootstrap_clustered_ratio(a, None, b, [0] * len(b)) == stats.bootstrap_ratio(a, b)
    with pytest.raises(ValueError, match="3 cluster labels for 40 values"):
        stats.bootstrap_clustered(a, [0, 1, 2])


@pytest.mark.parametrize("q", [0.0, 10.0, 50.0, 90.0, 99.0, 100.0])
def test_row_percentile_is_numpys_percentile_of_each_rows_values(q: float) -> None:
    rng = np.random.default_rng(int(q))
    rows = rng.random((50, 12))
    for i, keep in enumerate(rng.integers(1, 13, size=50)):
        rows[i, keep:] = np.nan
        rows[i] = rng.permutation(rows[i])
    expected = [np.percentile(r[~np.isnan(r)], q) for r in rows]
    assert stats.row_percentile(rows, q) == pytest.approx(expected)
