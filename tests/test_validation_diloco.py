"""The DiLoCo training model (corridor.analytic.diloco) and its check against Streaming DiLoCo's Table 4."""

from __future__ import annotations

import pytest

from corridor.analytic.diloco import (
    TABLE4_METHODS,
    DilocoModelError,
    SyncMethod,
    TrainedModel,
    bandwidth_for,
    fragments,
    utilisation,
)
from corridor.validation.streaming_diloco import GRID_STEP, TABLE4_GBPS, compare, summary

SMALL = TrainedModel(1e9, 24, 0.1)


def test_table4_acceptance() -> None:
    cells = compare()
    s = summary(cells)
    assert s["cells"] == 75
    assert s["share_one_step"] >= 0.80, [(c.size, c.method, c.target, c.ratio) for c in cells if not c.within_one_step]
    assert s["within_two_steps"] == 75


def test_grid_step_is_about_21_percent() -> None:
    assert GRID_STEP == pytest.approx(1.207, abs=0.002)
    assert sum(len(rows) for rows in TABLE4_GBPS.values()) == 15


def test_data_parallel_by_hand() -> None:
    # 1B bf16, two workers: 16 Gbit per step; at 16 Gbit/s the link needs 1 s against a 0.1 s step.
    # Reductions queue behind one another from the first layer's backward (1/24 of 2/3 of the step),
    # and the next forward starts when the last lands: wall = F + b_layer + 1 s.
    cu = utilisation(SMALL, TABLE4_METHODS["data-parallel"], 16.0)
    wall = 0.1 / 3 + 0.2 / 3 / 24 + 1.0
    assert cu == pytest.approx(0.1 / wall, rel=1e-6)


def test_utilisation_grows_with_bandwidth_and_fp4_needs_less() -> None:
    method = TABLE4_METHODS["streaming-overlap"]
    cus = [utilisation(SMALL, method, bw) for bw in (0.5, 2, 8, 32, 128)]
    assert cus == sorted(cus) and cus[0] < 0.5 and cus[-1] > 0.99
    bf16 = bandwidth_for(SMALL, method, 0.9)
    fp4 = bandwidth_for(SMALL, TABLE4_METHODS["streaming-overlap-fp4"], 0.9)
    assert fp4 < bf16 / 2


def test_bandwidth_for_inverts_utilisation() -> None:
    method = TABLE4_METHODS["diloco"]
    bw = bandwidth_for(SMALL, method, 0.8)
    assert utilisation(SMALL, method, bw) >= 0.8 > utilisation(SMALL, method, bw * 0.99)


def test_latency_can_put_a_target_out_of_reach() -> None:
    with pytest.raises(DilocoModelError, match="out of reach"):
        bandwidth_for(SMALL, TABLE4_METHODS["data-parallel"], 0.99, latency_s=0.05)


def test_fragments_strided_and_sequential() -> None:
    strided = fragments(24, SyncMethod("s", inner_steps=100, fragment_layers=3))
    assert len(strided) == 8 and strided[0] == (1, 9, 17)
    seq = fragments(24, SyncMethod("q", inner_steps=100, fragment_layers=3, pattern="sequential"))
    assert seq[0] == (1, 2, 3) and sorted(x for f in seq for x in f) == list(range(1, 25))


def test_more_workers_send_more() -> None:
    two = bandwidth_for(SMALL, SyncMethod("dp2", workers=2), 0.5)
    eight = bandwidth_for(SMALL, SyncMethod("dp8", workers=8), 0.5)
    assert eight / two == pytest.approx((2 * 7 / 8) / (2 * 1 / 2), rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inner_steps": 0}, "inner_steps must be at least 1"),
        ({"fragment_layers": 0}, "fragment_layers must be at least 1"),
        ({"pattern": "random"}, "unknown pattern 'random'"),
        ({"inner_steps": 10, "overlap_steps": 10}, "overlap_steps must be"),
        ({"precision": "fp8"}, "unknown precision 'fp8'; allowed: fp32, bf16, int8, fp4"),
        ({"workers": 1}, "at least 2 workers"),
    ],
)
def test_bad_methods(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DilocoModelError, match=message):
        SyncMethod("bad", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("args", [(0, 24, 0.1), (1e9, 0, 0.1), (1e9, 24, 0.0)])
def test_bad_shapes(args: tuple[float, int, float]) -> None:
    with pytest.raises(DilocoModelError, match="model shape needs"):
        TrainedModel(*args)


def test_reductions_run_one_at_a_time_latency_included() -> None:
    """Per-layer all-reduces do not overlap in flight: 24 layers at 10 ms each add about 240 ms per step."""
    method = TABLE4_METHODS["data-parallel"]
    fast = 1e6  # Gbit/s: serialisation is negligible, latency is all that is left
    step_s = SMALL.step_time_s
    with_latency = utilisation(SMALL, method, fast, latency_s=0.010)
    hidden_s = step_s * SMALL.backward_fraction  # the backward pass the first reductions hide behind
    expected = step_s / (step_s + SMALL.layers * 0.010 - hidden_s + step_s * SMALL.backward_fraction / SMALL.layers)
    assert with_latency == pytest.approx(expected, rel=0.01)
    assert utilisation(SMALL, method, fast) > 0.99
