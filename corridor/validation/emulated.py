"""Streaming DiLoCo Table 4 cells emulated as scale models: measured compute utilisation beside the model's.

Stage: analysis (pure: reads run directories, runs nothing). The experiments
under ``experiments/validation/`` each run one cell of Table 4 (arXiv
2501.18512) across the two-site corridor at the cell's bandwidth, as a scale
model (``scale:``, corridor.planning.scale): every size divided by ``s``, times kept.
A workload named ``table4-SIZE-METHOD-PCT`` says which cell it is. The
measured compute utilisation is compute time over step time of the slowest
rank, summed over every step of the remote placement; the model's is
:func:`corridor.analytic.diloco.utilisation` of the cell's method at the
link's full-scale rate, with the ring's two one-way delays as latency.

What the agents express: data parallel is the ``allreduce`` pattern (bucketed,
overlapping backward); DiLoCo is the ``diloco`` pattern with H inner steps;
streaming DiLoCo is the ``streaming-diloco`` pattern, which runs the model's
own schedule (fragments in turn, one all-reduce per layer, overlap of tau
steps; :func:`corridor.analytic.diloco.walk_steps`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corridor.analytic.diloco import TABLE4_METHODS, utilisation
from corridor.errors import CorridorError
from corridor.spec.units import parse_duration_ms, parse_rate_mbps
from corridor.validation.streaming_diloco import SIZES, SOURCE, TABLE4_GBPS, TARGETS

#: Measured and modelled utilisation must agree within this (relative) for the acceptance.
AGREEMENT = 0.15
#: The same cell emulated at two scale factors must measure within this (relative) of each other.
SCALE_AGREEMENT = 0.05

_NAME_RE = re.compile(r"table4-(?P<size>\d+B)-(?P<method>[a-z0-9-]+)-(?P<pct>\d+)")


class EmulatedRunError(CorridorError):
    """A run directory does not hold an emulated Table 4 cell corridor can compare."""


@dataclass(frozen=True)
class EmulatedCell:
    """One emulated cell: the published bandwidth, the scale, and the two utilisations."""

    workload: str
    size: str
    method: str
    target: float
    published_gbps: float
    scale: float
    emulated_mbps: float
    one_way_ms: float
    steps: int
    measured: float
    model: float

    @property
    def error(self) -> float:
        return self.measured / self.model - 1.0

    @property
    def agrees(self) -> bool:
        return abs(self.error) <= AGREEMENT


def cell_of(name: str) -> tuple[str, str, float, float]:
    """``table4-1B-diloco-80`` -> (size, method, target, published Gbit/s); EmulatedRunError otherwise."""
    m = _NAME_RE.fullmatch(name)
    if m is None or m["size"] not in TABLE4_GBPS or m["method"] not in TABLE4_GBPS[m["size"]]:
        raise EmulatedRunError(f"workload {name!r} does not name a Table 4 cell (table4-SIZE-METHOD-PCT, "
                               f"sizes {', '.join(TABLE4_GBPS)}, methods {', '.join(TABLE4_METHODS)})")
    target = int(m["pct"]) / 100
    if target not in TARGETS:
        raise EmulatedRunError(f"workload {name!r}: {m['pct']} % is not a Table 4 column "
                               f"({', '.join(f'{t:.0%}' for t in TARGETS)})")
    return m["size"], m["method"], target, TABLE4_GBPS[m["size"]][m["method"]][TARGETS.index(target)]


def measured_utilisation(records: Sequence[Mapping[str, Any]]) -> tuple[float, int]:
    """Compute time over step time, per step the slowest rank, summed over every step; and the step count."""
    step: dict[tuple[str, int], tuple[float, float]] = {}
    for r in records:
        if r.get("kind") != "train_step" or r.get("step_time_s") is None:
            continue
        key = (str(r.get("point_id")), int(r.get("step", 0)))
        wall, compute = float(r["step_time_s"]), float(r.get("compute_time_s") or 0.0)
        if key not in step or wall > step[key][0]:
            step[key] = (wall, compute)
    if not step:
        raise EmulatedRunError("no train_step records on the remote placement")
    wall_s = sum(w for w, _ in step.values())
    return sum(c for _, c in step.values()) / wall_s, len(step)


def compare_run(records: Sequence[Mapping[str, Any]], manifest: Mapping[str, Any]) -> list[EmulatedCell]:
    """Every Table 4 workload of one run directory (its manifest and records), measured against the model."""
    exp = manifest.get("experiment") or {}
    overrides = exp.get("overrides") or {}
    if "rate" not in overrides or "delay" not in overrides:
        raise EmulatedRunError("the experiment must set the cell's rate and the link's delay in overrides")
    full_mbps = parse_rate_mbps(overrides["rate"])
    one_way_ms = parse_duration_ms(overrides["delay"])
    out: list[EmulatedCell] = []
    for w in exp.get("workloads", []):
        name = str(w.get("name"))
        size, method, target, published = cell_of(name)
        remote = [r for r in records if r.get("workload") == name and r.get("placement") != "local"]
        measured, steps = measured_utilisation(remote)
        scales = {float(r.get("scale", 1.0)) for r in remote if r.get("kind") == "train_step"}
        scale = max(scales) if scales else 1.0
        latency_s = 2 * one_way_ms / 1e3  # a ring of two workers: 2(R-1) one-way delays
        model = utilisation(SIZES[size], TABLE4_METHODS[method], full_mbps / 1e3, latency_s=latency_s)
        out.append(EmulatedCell(name, size, method, target, published, scale, full_mbps / scale, one_way_ms,
                                steps, measured, model))
    return out


def compare_run_dir(path: str) -> list[EmulatedCell]:
    """:func:`compare_run` on a run directory."""
    from corridor.results.rundir import read_run

    run = read_run(path)
    return compare_run(run.records, run.manifest)


def rows(cells: Sequence[EmulatedCell]) -> list[dict[str, Any]]:
    """The cells as the suite's rows (source, case, published, model, emulated, error)."""
    return [{
        "case": f"Table 4 {c.size} {c.method} {c.target:.0%} (emulated)",
        "source": SOURCE,
        "published": f"{c.target:.0%} at {c.published_gbps:g} Gbit/s",
        "model": f"{c.model:.1%}",
        "emulated": f"{c.measured:.1%}",
        "error": c.error,
        "note": (f"scale 1/{c.scale:g}: {c.emulated_mbps:.4g} Mbit/s emulated, {c.one_way_ms:g} ms one way, "
                 f"{c.steps} steps; {'within' if c.agrees else 'outside'} {AGREEMENT:.0%}"),
    } for c in cells]


@dataclass(frozen=True)
class ScalePair:
    """One cell emulated at two scale factors: a scale model is sound where both measure the same."""

    workload: str
    scale_a: float
    measured_a: float
    scale_b: float
    measured_b: float

    @property
    def difference(self) -> float:
        """The larger scale's measurement over the smaller's, minus one."""
        return self.measured_b / self.measured_a - 1.0

    @property
    def agrees(self) -> bool:
        return abs(self.difference) <= SCALE_AGREEMENT


def scale_pairs(cells: Sequence[EmulatedCell]) -> list[ScalePair]:
    """Every two emulations of one cell at different scales (smaller scale first), in the order given."""
    out: list[ScalePair] = []
    for i, a in enumerate(cells):
        for b in cells[i + 1:]:
            if a.workload == b.workload and a.scale != b.scale:
                lo, hi = (a, b) if a.scale < b.scale else (b, a)
                out.append(ScalePair(a.workload, lo.scale, lo.measured, hi.scale, hi.measured))
    return out


def scale_rows(pairs: Sequence[ScalePair]) -> list[dict[str, Any]]:
    """The pairs as rows: the cell, both scales and measurements, and their difference."""
    return [{
        "case": p.workload,
        "scale_a": p.scale_a, "measured_a": p.measured_a,
        "scale_b": p.scale_b, "measured_b": p.measured_b,
        "difference": p.difference,
        "note": f"{'within' if p.agrees else 'outside'} {SCALE_AGREEMENT:.0%}",
    } for p in pairs]
