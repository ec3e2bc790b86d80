"""Map of a corridor plan: sites on longitude/latitude, WAN links labelled with one-way delay.

Stage: plots (pure; matplotlib with the Agg backend, no display needed). Drawn
to stay readable in black and white: site kinds differ by marker shape, link
kinds by line style, and labels sit on white boxes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from corridor.errors import CorridorError  # noqa: E402
from corridor.geography.geo import polyline_km  # noqa: E402
from corridor.planning.plan import Plan, WanLinkPlan  # noqa: E402

#: File formats :func:`draw_map` writes, by suffix.
FORMATS: tuple[str, ...] = ("png", "svg", "pdf")

# Marker, face colour, size per site kind: shapes carry the meaning, colours only help.
_SITE_STYLE: dict[str, tuple[str, str, float]] = {
    "gpu": ("s", "black", 11.0),
    "hub": ("^", "0.55", 12.0),
    "city": ("o", "white", 11.0),
    "waypoint": ("D", "0.8", 8.0),
}
_KIND_LABEL = {"gpu": "GPU site", "hub": "hub / cluster", "city": "city", "waypoint": "transit site"}


Point = tuple[float, float]  # (lat, lon)


def _segment_key(p: Point, q: Point) -> frozenset[tuple[float, float]]:
    return frozenset(((round(p[0], 3), round(p[1], 3)), (round(q[0], 3), round(q[1], 3))))


def _label_spots(
    links: list[tuple[WanLinkPlan, tuple[Point, ...]]], span: tuple[float, float], obstacles: list[Point]
) -> dict[str, Point]:
    """Where to put each link's delay label: on the stretch of fibre it shares with the fewest other
    links (routes often share a corridor), away from ``obstacles`` (sites and their labels) and from
    labels already placed."""
    usage: dict[frozenset[tuple[float, float]], int] = {}
    for _, points in links:
        for p, q in zip(points, points[1:], strict=False):
            key = _segment_key(p, q)
            usage[key] = usage.get(key, 0) + 1
    min_dlat, min_dlon = span[0] * 0.05, span[1] * 0.12
    placed: dict[str, Point] = {}
    taken = list(obstacles)
    for link, points in links:
        candidates: list[tuple[float, Point]] = []
        for p, q in zip(points, points[1:], strict=False):
            shared = usage[_segment_key(p, q)]
            length = polyline_km((p, q))
            for t in (0.5, 0.3, 0.7, 0.15, 0.85):
                spot = (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))
                crowd = sum(1 for o in taken if abs(o[0] - spot[0]) < min_dlat and abs(o[1] - spot[1]) < min_dlon)
                candidates.append((crowd * 1000 + shared * 100 - min(length, 2000) / 40 + abs(t - 0.5), spot))
        placed[link.name] = min(candidates)[1] if candidates else points[0]
        taken.append(placed[link.name])
    return placed


def _site_label_sides(plan: Plan, span: tuple[float, float]) -> dict[str, tuple[int, int]]:
    """Which side of its marker each site's label goes: (+1 right / -1 left, +1 above / -1 below).

    Up and to the right unless that box would cover another site or a label already placed.
    """
    box_lat, box_lon = span[0] * 0.1, span[1] * 0.3
    boxes: list[tuple[float, float, float, float]] = []  # lat0, lat1, lon0, lon1
    sides: dict[str, tuple[int, int]] = {}
    for site in plan.sites:
        others = [(o.lat, o.lon) for o in plan.sites if o.name != site.name]
        choice = (1, 1)
        for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            lat0, lat1 = sorted((site.lat, site.lat + dy * box_lat))
            lon0, lon1 = sorted((site.lon, site.lon + dx * box_lon))
            hits_site = any(lat0 <= la <= lat1 and lon0 <= lo <= lon1 for la, lo in others)
            hits_box = any(lat0 < b1 and b0 < lat1 and lon0 < c1 and c0 < lon1 for b0, b1, c0, c1 in boxes)
            if not hits_site and not hits_box:
                choice = (dx, dy)
                break
        dx, dy = choice
        lat0, lat1 = sorted((site.lat, site.lat + dy * box_lat))
        lon0, lon1 = sorted((site.lon, site.lon + dx * box_lon))
        boxes.append((lat0, lat1, lon0, lon1))
        sides[site.name] = choice
    return sides


def _delay_label(link: WanLinkPlan) -> str:
    ab, ba = link.a_to_b.delay_ms, link.b_to_a.delay_ms
    if abs(ab - ba) < 0.005:
        return f"{ab:.1f} ms"
    return f"{ab:.1f}/{ba:.1f} ms"


#: Pixels kept clear around every label (at :data:`DPI`) when labels are nudged apart.
LABEL_GAP_PX = 4.0
DPI = 130


def label_box(label: Annotation, gap_px: float = 0.0, renderer: Any = None) -> Bbox:
    """A label's extent on the canvas in pixels (its text and the white box behind it), grown by ``gap_px``.

    With ``renderer``, measured where the label is now, without drawing the figure; without, as last drawn.
    """
    box = label.get_window_extent(renderer)
    patch = label.get_bbox_patch()
    if patch is not None:
        if renderer is not None:
            label.update_bbox_position_size(renderer)
        box = Bbox.union([box, patch.get_window_extent(renderer)])
    return box.expanded(1.0, 1.0).padded(gap_px)


def _overlap(a: Bbox, b: Bbox) -> tuple[float, float]:
    return min(a.x1, b.x1) - max(a.x0, b.x0), min(a.y1, b.y1) - max(a.y0, b.y0)


def repel_labels(fig: Figure, labels: Sequence[Annotation], *, gap_px: float = LABEL_GAP_PX,
                 rounds: int = 300, fixed: Callable[[], Sequence[Bbox]] | None = None) -> int:
    """Nudge ``labels`` (annotations placed in offset points) apart until no two boxes overlap.

    Greedy: each round, every overlapping pair is pushed apart along the axis where they overlap
    least, half each way (a label moves away from its neighbour, the anchor stays); a label on one
    of the ``fixed`` boxes (pixels: markers, a side table) moves off it alone. Returns the number of
    rounds that moved something.

    Labels and obstacles are measured once: a label placed in offset points keeps its size when it
    moves, so its box is translated by each shift rather than measured again (measuring text is most
    of a map's drawing time).
    """
    to_points = 72.0 / fig.dpi
    moved_rounds = 0
    fig.canvas.draw()  # fixes the layout; after this labels are measured without redrawing
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [label_box(label, gap_px / 2, renderer) for label in labels]
    obstacles = list(fixed()) if fixed is not None else []
    for _ in range(rounds):
        shifts = [[0.0, 0.0] for _ in labels]
        for i, obstacle in itertools.product(range(len(labels)), obstacles):
            ox, oy = _overlap(boxes[i], obstacle)
            if ox > 0 and oy > 0 and rounds_left_for_fixed(moved_rounds, rounds):
                if ox < oy:
                    shifts[i][0] += (ox + 0.5) * (1 if boxes[i].x0 + boxes[i].x1 >= obstacle.x0 + obstacle.x1 else -1)
                else:
                    shifts[i][1] += (oy + 0.5) * (1 if boxes[i].y0 + boxes[i].y1 >= obstacle.y0 + obstacle.y1 else -1)
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                ox, oy = _overlap(boxes[i], boxes[j])
                if ox <= 0 or oy <= 0:
                    continue
                if ox < oy:
                    step = (ox / 2 + 0.5) * (1 if boxes[i].x0 + boxes[i].x1 >= boxes[j].x0 + boxes[j].x1 else -1)
                    shifts[i][0] += step
                    shifts[j][0] -= step
                else:
                    step = (oy / 2 + 0.5) * (1 if boxes[i].y0 + boxes[i].y1 >= boxes[j].y0 + boxes[j].y1 else -1)
                    shifts[i][1] += step
                    shifts[j][1] -= step
        if not any(dx or dy for dx, dy in shifts):
            break
        moved_rounds += 1
        for k, (label, (dx, dy)) in enumerate(zip(labels, shifts, strict=True)):
            if dx or dy:
                x, y = label.xyann
                label.xyann = (x + dx * to_points, y + dy * to_points)
                boxes[k] = boxes[k].translated(dx, dy)
    return moved_rounds


def rounds_left_for_fixed(moved: int, rounds: int) -> bool:
    # Markers give way in the last third of the rounds: labels clear of each other matter most.
    return moved < rounds * 2 // 3


def draw_map(plan: Plan, path: str | Path, *, title: str | None = None) -> Path:
    """Draw ``plan`` to ``path`` (.png, .svg or .pdf) and return the path."""
    out = Path(path)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise CorridorError(f"cannot draw a map as {out.name!r}; use one of {', '.join('.' + f for f in FORMATS)}")
    fig, _ = map_figure(plan, title=title)
    try:
        fig.savefig(out, format=fmt, dpi=DPI)
    finally:
        plt.close(fig)
    return out


def map_figure(plan: Plan, *, title: str | None = None) -> tuple[Figure, list[Annotation]]:
    """The map of ``plan`` and its labels (sites, link delays, waypoints), laid out so none covers another.

    The caller closes the figure (``plt.close``).
    """
    labels: dict[str, str] = plan.meta.get("labels", {})
    site_xy = {s.name: (s.lon, s.lat) for s in plan.sites}
    placed: list[Annotation] = []

    fig, ax = plt.subplots(figsize=(13, 7.5), dpi=DPI)
    try:
        lons = [s.lon for s in plan.sites]
        lats = [s.lat for s in plan.sites]
        waypoints: dict[tuple[float, float], str] = {}
        drawn: list[tuple[WanLinkPlan, tuple[Point, ...]]] = []
        for link in plan.wan_links:
            d = link.derivation
            points = d.route_points or (
                (site_xy[link.a][1], site_xy[link.a][0]),
                (site_xy[link.b][1], site_xy[link.b][0]),
            )
            lats += [p[0] for p in points]
            lons += [p[1] for p in points]
            explicit = d.source == "explicit-delay"
            ax.plot(
                [p[1] for p in points],
                [p[0] for p in points],
                linestyle="--" if explicit else "-",
                color="0.35" if explicit else "black",
                linewidth=1.4,
                zorder=2,
            )
            for name, p in zip(d.waypoints, points[1:-1], strict=False):
                waypoints[p] = name
            drawn.append((link, points))
        span = (max(lats) - min(lats) or 1.0, max(lons) - min(lons) or 1.0)
        codes = {s.name: s.code for s in plan.sites}
        sides = _site_label_sides(plan, span)
        obstacles = [(s.lat, s.lon) for s in plan.sites]
        for s in plan.sites:  # a site label covers about 0.2 of the map's width beside its marker
            dx, dy = sides[s.name]
            obstacles += [(s.lat + span[0] * 0.04 * dy, s.lon + span[1] * f * dx) for f in (0.05, 0.12, 0.19)]
        for link_name, (lat, lon) in _label_spots(drawn, span, obstacles).items():
            wl = plan.link(link_name)
            placed.append(ax.annotate(
                f"{codes[wl.a]}-{codes[wl.b]} {_delay_label(wl)}",
                (lon, lat),
                xytext=(0, 0),
                textcoords="offset points",
                ha="center",
                va="center",
                fontsize=8,
                zorder=5,
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "0.3", "linewidth": 0.6},
            ))
        for (lat, lon), name in waypoints.items():
            if (lon, lat) in site_xy.values():
                continue
            ax.plot(lon, lat, marker=".", color="0.4", markersize=5, zorder=3)
            placed.append(ax.annotate(name, (lon, lat), xytext=(3, -9), textcoords="offset points", fontsize=6.5,
                                      color="0.35", style="italic", zorder=3))
        kinds_seen: list[str] = []
        for s in plan.sites:
            marker, face, size = _SITE_STYLE.get(s.kind, ("o", "white", 10.0))
            ax.plot(s.lon, s.lat, marker=marker, markerfacecolor=face, markeredgecolor="black", markersize=size,
                    markeredgewidth=1.3, linestyle="none", zorder=6)
            hosts = len(s.hosts)
            text = f"{labels.get(s.name, s.name)} ({s.code})" + (f"\n{hosts} host{'s' * (hosts != 1)}" if hosts else "")
            dx, dy = sides[s.name]
            placed.append(ax.annotate(
                text, (s.lon, s.lat), xytext=(8 * dx, 6 if dy > 0 else -8), textcoords="offset points",
                fontsize=9.5, fontweight="bold", zorder=7, ha="left" if dx > 0 else "right",
                va="bottom" if dy > 0 else "top",
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.7}))
            if s.kind not in kinds_seen:
                kinds_seen.append(s.kind)

        pad_lon = max(2.0, (max(lons) - min(lons)) * 0.08)
        pad_lat = max(1.5, (max(lats) - min(lats)) * 0.1)
        left_labels = any(sides[s.name][0] < 0 for s in plan.sites)
        ax.set_xlim(min(lons) - pad_lon * (2.5 if left_labels else 1.0), max(lons) + pad_lon * 2.5)
        ax.set_ylim(min(lats) - pad_lat, max(lats) + pad_lat * 1.6)
        # Equirectangular with the true east-west scale at the map's middle latitude.
        ax.set_aspect(1 / math.cos(math.radians((min(lats) + max(lats)) / 2)))
        ax.set_xlabel("longitude (degrees E)")
        ax.set_ylabel("latitude (degrees N)")
        ax.grid(True, color="0.85", linewidth=0.6, zorder=0)

        handles = [
            Line2D([], [], marker=_SITE_STYLE[k][0], markerfacecolor=_SITE_STYLE[k][1], markeredgecolor="black",
                   linestyle="none", markersize=9, label=_KIND_LABEL[k])
            for k in kinds_seen if k in _SITE_STYLE
        ]
        sources = {link.derivation.source for link in plan.wan_links}
        if sources - {"explicit-delay"}:
            handles.append(Line2D([], [], color="black", linestyle="-", label="fibre (modelled delay)"))
        if "explicit-delay" in sources:
            handles.append(Line2D([], [], color="0.35", linestyle="--", label="link with given delay"))
        if waypoints:
            handles.append(Line2D([], [], marker=".", color="0.4", linestyle="none", label="route waypoint"))
        if handles:
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False)
        if plan.wan_links:
            width = max(len(link.name) for link in plan.wan_links)
            table = "\n".join(f"{link.name:<{width}}  {_delay_label(link):>9}" for link in plan.wan_links)
            side_table = ax.text(1.02, 0.62, "one-way delay\n" + table, transform=ax.transAxes, fontsize=8,
                                 family="monospace", va="top", ha="left")
        description = plan.meta.get("description", "")
        ax.set_title(title or (f"{plan.name}\n{description}" if description else plan.name), fontsize=11)
        fig.tight_layout()
        # after the layout, which moves the axes: offsets are in points, so nudging keeps its result
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]

        def fixed_boxes() -> list[Bbox]:
            boxes = [side_table.get_window_extent(renderer)] if plan.wan_links else []
            for s in plan.sites:  # a marker's box: its size in points, about the site
                half = _SITE_STYLE.get(s.kind, ("o", "white", 10.0))[2] / 2 * fig.dpi / 72
                x, y = ax.transData.transform((s.lon, s.lat))
                boxes.append(Bbox.from_extents(x - half, y - half, x + half, y + half))
            return boxes

        repel_labels(fig, placed, fixed=fixed_boxes)
    except BaseException:
        plt.close(fig)
        raise
    return fig, placed
