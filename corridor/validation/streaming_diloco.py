"""Streaming DiLoCo, Table 4: bandwidth needed for a compute utilisation, published and modelled.

Stage: analysis/model (pure). Source: Douillard et al., "Streaming DiLoCo with
overlapping communication: Towards a Distributed Free Lunch", arXiv
2501.18512v1 (January 2025), Table 4 (appendix): Gbit/s between two workers
needed to reach 50/80/90/95/99 % compute utilisation, five methods, three model
sizes. The cells are points of the simulator's logarithmic bandwidth grid, so a
cell is the first grid point at or above the true threshold; neighbouring grid
points are about 21 % apart (:data:`GRID_STEP`, from the data-parallel 1B row,
whose 50 % and 99 % cells are ten points apart).

Read from the source: sizes (1B, 10B, 100B), layers (24, 48, 108), step times
(0.1, 0.8, 4.9 s), H = 100, fragments of 3 layers, strided pattern, overlap of
one inner step (tau = 1, the paper's main setting), FP4 for the last method.
Assumed: two workers (the paper's main experiments), a ring all-reduce (each
worker sends 2(R-1)/R of the bytes), bf16 for every exchange but FP4 (the
FP4-to-bf16 ratio of the table's own cells is about 4), backward twice the
forward, no latency, and fragments sent evenly spread over the H steps.

A model figure counts as "within one step" of a cell when the ratio of the two
is at most 1.21 either way, "within two" at most 1.21^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from corridor.analytic.diloco import TABLE4_METHODS, TrainedModel, bandwidth_for

SOURCE = "Streaming DiLoCo (Douillard et al., arXiv 2501.18512v1), Table 4"

TARGETS: tuple[float, ...] = (0.50, 0.80, 0.90, 0.95, 0.99)

#: Model sizes: label -> (parameters, layers, step time s).
SIZES: dict[str, TrainedModel] = {
    "1B": TrainedModel(1e9, 24, 0.1),
    "10B": TrainedModel(10e9, 48, 0.8),
    "100B": TrainedModel(100e9, 108, 4.9),
}

#: Published cells, Gbit/s, for TARGETS in order: size -> method -> cells.
TABLE4_GBPS: dict[str, dict[str, tuple[float, ...]]] = {
    "1B": {
        "data-parallel": (86.8, 152.6, 184.2, 222.3, 569.0),
        "diloco": (1.4, 6.2, 13.3, 23.3, 86.8),
        "streaming": (1.4, 5.2, 9.1, 16.0, 28.1),
        "streaming-overlap": (1.4, 4.3, 6.2, 9.1, 11.0),
        "streaming-overlap-fp4": (0.4, 0.9, 1.7, 2.0, 3.0),
    },
    "10B": {
        "data-parallel": (104.8, 222.3, 222.3, 268.3, 471.5),
        "diloco": (1.7, 7.5, 16.0, 33.9, 104.8),
        "streaming": (1.7, 5.2, 9.1, 13.3, 19.3),
        "streaming-overlap": (1.7, 3.6, 5.2, 6.2, 7.5),
        "streaming-overlap-fp4": (0.4, 0.9, 1.4, 1.4, 1.7),
    },
    "100B": {
        "data-parallel": (184.2, 323.8, 390.7, 390.7, 471.5),
        "diloco": (3.0, 11.0, 23.3, 49.4, 184.2),
        "streaming": (2.4, 6.2, 9.1, 11.0, 19.3),
        "streaming-overlap": (1.7, 3.6, 4.3, 5.2, 5.2),
        "streaming-overlap-fp4": (0.5, 0.9, 1.1, 1.1, 1.4),
    },
}

#: Ratio between neighbouring grid points: 86.8 and 569.0 Gbit/s (1B data parallel) are ten points apart.
GRID_STEP = (569.0 / 86.8) ** 0.1
ONE_STEP = 1.21
TWO_STEPS = ONE_STEP**2


@dataclass(frozen=True)
class Cell:
    """One cell of Table 4 beside the model's figure."""

    size: str
    method: str
    target: float
    published_gbps: float
    model_gbps: float

    @property
    def ratio(self) -> float:
        """Model over published."""
        return self.model_gbps / self.published_gbps

    @property
    def grid_steps(self) -> float:
        """How many grid points the model lies from the cell (positive: the model needs more)."""
        return math.log(self.ratio) / math.log(GRID_STEP)

    @property
    def within_one_step(self) -> bool:
        return 1 / ONE_STEP <= self.ratio <= ONE_STEP

    @property
    def within_two_steps(self) -> bool:
        return 1 / TWO_STEPS <= self.ratio <= TWO_STEPS


def compare() -> list[Cell]:
    """Every cell of Table 4 with the model's bandwidth for the same target (75 cells)."""
    cells: list[Cell] = []
    for size, rows in TABLE4_GBPS.items():
        shape = SIZES[size]
        for method, published in rows.items():
            for target, gbps in zip(TARGETS, published, strict=True):
                model = bandwidth_for(shape, TABLE4_METHODS[method], target)
                cells.append(Cell(size, method, target, gbps, model))
    return cells


def summary(cells: list[Cell]) -> dict[str, float]:
    """Counts and shares of cells within one and two grid steps."""
    n = len(cells)
    one = sum(c.within_one_step for c in cells)
    two = sum(c.within_two_steps for c in cells)
    return {"cells": n, "within_one_step": one, "within_two_steps": two,
            "share_one_step": one / n if n else 0.0, "share_two_steps": two / n if n else 0.0}
