"""The validation suite: every published case beside corridor's model figure, as rows for ``corridor validate``.

Stage: analysis/model (pure). :func:`run_suite` recomputes the model side of
each case (the latency layers, Streaming DiLoCo's Table 4, the SLO presets) and
returns plain rows; the CLI only prints them. Runs in about a second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from corridor.spec.slo_presets import SLO_PRESETS
from corridor.validation import latency, streaming_diloco

#: Version of the ``corridor validate --json`` document.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Row:
    """One compared figure: ``error`` is model over published minus one (None where no single figure applies)."""

    case: str
    source: str
    published: str
    model: str
    error: float | None
    note: str = ""


def _geomean(values: Iterable[float]) -> float:
    logs = [math.log(v) for v in values]
    return math.exp(sum(logs) / len(logs))


def latency_rows() -> list[Row]:
    rows = []
    for name, fit in latency.shipped_layers().items():
        ratio = f"median {fit.median_policy_ratio:.2f}x the fibre straight line (policy: {latency.POLICY_RATIO}x)"
        rows.append(Row(f"latency {name} mean", latency.SOURCE, f"{fit.published_mean_ms:.1f} ms",
                        f"{fit.mean_ms:.1f} ms", fit.mean_error, ratio))
        rows.append(Row(f"latency {name} max", latency.SOURCE, f"{fit.published_max_ms:.1f} ms",
                        f"{fit.max_ms:.1f} ms", fit.max_error, ""))
    return rows


def diloco_rows(cells: list[streaming_diloco.Cell]) -> list[Row]:
    rows = []
    for size in streaming_diloco.TABLE4_GBPS:
        for method in streaming_diloco.TABLE4_GBPS[size]:
            group = [c for c in cells if c.size == size and c.method == method]
            one = sum(c.within_one_step for c in group)
            rows.append(Row(
                f"Table 4 {size} {method}", streaming_diloco.SOURCE,
                "/".join(f"{c.published_gbps:g}" for c in group) + " Gbit/s",
                "/".join(f"{c.model_gbps:.3g}" for c in group) + " Gbit/s",
                _geomean(c.ratio for c in group) - 1.0,
                f"{one}/{len(group)} within one grid step; error: geometric mean of model/published",
            ))
    summary = streaming_diloco.summary(cells)
    rows.append(Row(
        "Table 4 cells within one grid step", streaming_diloco.SOURCE, ">= 80 % (target)",
        f"{summary['share_one_step']:.0%} ({summary['within_one_step']:.0f}/{summary['cells']:.0f})", None,
        f"within two steps: {summary['within_two_steps']:.0f}/{summary['cells']:.0f}",
    ))
    return rows


def slo_rows() -> list[Row]:
    return [
        Row(f"SLO {p.name}", p.source, f"TTFT {p.ttft_ms:g} ms, TPOT {p.tpot_ms:g} ms at p{p.percentile:g}",
            f"slo: {p.name}", 0.0, "preset carries the published limits")
        for p in SLO_PRESETS.values()
    ]


def run_suite() -> dict[str, Any]:
    """The whole suite as a JSON-able document (strict JSON: no NaN or infinity)."""
    cells = streaming_diloco.compare()
    rows = latency_rows() + diloco_rows(cells) + slo_rows()
    return {
        "format_version": FORMAT_VERSION,
        "rows": [asdict(r) for r in rows],
        "streaming_diloco": {
            "summary": streaming_diloco.summary(cells),
            "grid_step": streaming_diloco.GRID_STEP,
            "cells": [{**asdict(c), "ratio": c.ratio, "grid_steps": c.grid_steps,
                       "within_one_step": c.within_one_step, "within_two_steps": c.within_two_steps}
                      for c in cells],
        },
        "latency_fit": {name: asdict(f) for name, f in latency.fit_layers().items()},
    }
