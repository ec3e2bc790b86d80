"""``corridor topo map``: no label (site, link delay, waypoint) covers another."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import pytest

from corridor.cli.topo import load_plan
from corridor.results.mapplot import label_box, map_figure, repel_labels


def _overlapping(labels: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    boxes = [(label.get_text(), label_box(label)) for label in labels]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
            if box_a.x0 < box_b.x1 and box_b.x0 < box_a.x1 and box_a.y0 < box_b.y1 and box_b.y0 < box_a.y1]


@pytest.mark.parametrize("preset", ["xinjiang-coastal", "national-hubs"])
def test_no_two_labels_overlap(preset: str) -> None:
    plan = load_plan(preset)
    fig, labels = map_figure(plan)
    try:
        fig.canvas.draw()
        assert len(labels) >= len(plan.sites) + len(plan.wan_links)
        assert _overlapping(labels) == []
    finally:
        plt.close(fig)


def test_repulsion_separates_labels_stacked_on_one_spot() -> None:
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    try:
        labels = [ax.annotate(f"label {i}", (0.5, 0.5), xytext=(0, 0), textcoords="offset points", ha="center",
                              bbox={"boxstyle": "round,pad=0.2", "facecolor": "white"}) for i in range(4)]
        fig.canvas.draw()
        assert len(_overlapping(labels)) == 6  # every pair covers every other before
        assert repel_labels(fig, labels) > 0
        fig.canvas.draw()
        assert _overlapping(labels) == []
        assert all(label.xy == (0.5, 0.5) for label in labels)  # anchors stay where they point
    finally:
        plt.close(fig)
