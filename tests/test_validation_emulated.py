"""The emulated Table 4 cells: naming, measured utilisation from records, and the comparison with the model."""

from __future__ import annotations

from typing import Any

import pytest

from corridor.validation.emulated import (
    EmulatedRunError,
    cell_of,
    compare_run,
    measured_utilisation,
    scale_pairs,
    scale_rows,
)


def _steps(wall_s: list[float], *, compute_s: float = 0.1, workload: str = "table4-1B-diloco-80",
           placement: str = "two-workers", scale: float = 15.5) -> list[dict[str, Any]]:
    out = []
    for rank_extra in (0.0, 0.01):  # the slowest rank's step counts
        for i, wall in enumerate(wall_s):
            out.append({"kind": "train_step", "point_id": f"{placement}|x", "step": i, "step_time_s": wall + rank_extra,
                        "compute_time_s": compute_s, "workload": workload, "placement": placement, "scale": scale})
    return out


@pytest.mark.parametrize(("name", "message"), [
    ("dp", "does not name a Table 4 cell"),
    ("table4-2B-diloco-80", "does not name a Table 4 cell"),
    ("table4-1B-diloco-70", "70 % is not a Table 4 column"),
])
def test_bad_cell_names(name: str, message: str) -> None:
    with pytest.raises(EmulatedRunError, match=message):
        cell_of(name)


def test_cell_of_reads_the_published_figure() -> None:
    assert cell_of("table4-1B-diloco-80") == ("1B", "diloco", 0.8, 6.2)


def test_measured_utilisation_uses_the_slowest_rank() -> None:
    cu, n = measured_utilisation(_steps([0.1] * 99 + [2.68]))
    assert n == 100
    assert cu == pytest.approx(10.0 / (99 * 0.11 + 2.69))
    with pytest.raises(EmulatedRunError):
        measured_utilisation([])


def test_compare_run_against_the_model() -> None:
    manifest = {"experiment": {"overrides": {"rate": "6.2Gbit", "delay": "5ms"},
                               "workloads": [{"name": "table4-1B-diloco-80"}]}}
    # DiLoCo 1B at 6.2 Gbit/s: 2 GB outer gradient takes 2.58 s every 100 steps of 0.1 s -> about 79.5 %
    good = _steps([0.1] * 99 + [2.6], compute_s=0.1) + _steps([0.1] * 100, placement="local")
    cells = compare_run([{**r, "step_time_s": r["step_time_s"] - (0.01 if r["step_time_s"] > 0.1 else 0)}
                         for r in good], manifest)
    (cell,) = cells
    assert cell.model == pytest.approx(0.79, abs=0.02)
    assert cell.agrees and cell.scale == 15.5 and cell.emulated_mbps == pytest.approx(400, rel=0.01)
    slow = compare_run(_steps([0.2] * 100), manifest)[0]  # half the utilisation: outside 15 %
    assert not slow.agrees
    with pytest.raises(EmulatedRunError, match="overrides"):
        compare_run([], {"experiment": {"overrides": {}}})


def test_one_cell_at_two_scales_is_paired_with_itself() -> None:
    manifest = {"experiment": {"overrides": {"rate": "6.2Gbit", "delay": "5ms"},
                               "workloads": [{"name": "table4-1B-diloco-80"}]}}
    at_s = compare_run(_steps([0.1] * 99 + [2.6], scale=15.5), manifest)
    at_4s = compare_run(_steps([0.1] * 99 + [2.7], scale=62.0), manifest)
    off = compare_run(_steps([0.2] * 100, scale=62.0), manifest)
    (pair,) = scale_pairs(at_4s + at_s)  # smaller scale first, whatever the order given
    assert (pair.scale_a, pair.scale_b) == (15.5, 62.0)
    assert pair.difference == pytest.approx(at_4s[0].measured / at_s[0].measured - 1)
    assert pair.agrees
    assert not scale_pairs(at_s + off)[0].agrees
    assert scale_pairs(at_s + at_s) == []  # the same scale twice is no scale comparison
    (row,) = scale_rows(scale_pairs(at_s + at_4s))
    assert row["note"] == "within 5%"
