"""Figures of a run, drawn from its run directory alone.

Stage: plots (pure: matplotlib with the Agg backend, no root, no Mininet, no
re-running). Every figure is saved as PNG and SVG and stays readable in black
and white: series differ by line style and marker, not only by shade, and the
verdict heatmap labels every cell in words and hatches it.

:func:`build_figures` returns each figure with the arrays it drew
(:class:`FigureData`), so tests can check that the numbers on the page are the
numbers in the records; :func:`render_run` saves them.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from corridor.errors import CorridorError  # noqa: E402
from corridor.results.mapplot import repel_labels  # noqa: E402
from corridor.results.rundir import RunDir  # noqa: E402
from corridor.results.verdict import Verdict, compute_verdicts, percentile, slo_of, step_times_s  # noqa: E402
from corridor.spec.experiment import LOCAL_PLACEMENT  # noqa: E402
from corridor.stats import bootstrap  # noqa: E402
from corridor.workloads.kind import (  # noqa: E402
    DOES_NOT_TOLERATE,
    INCONCLUSIVE,
    MARGINAL,
    MODEL_AGREEMENT,
    NO_DATA,
    TOLERATES,
)

log = logging.getLogger(__name__)

STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 1)), "x")]
GREYS = ["0.0", "0.35", "0.55", "0.2", "0.45", "0.65"]
VERDICT_SHADE = {TOLERATES: 0.95, MARGINAL: 0.7, INCONCLUSIVE: 0.85, DOES_NOT_TOLERATE: 0.35, NO_DATA: 1.0}
VERDICT_HATCH = {TOLERATES: "", MARGINAL: "//", INCONCLUSIVE: "oo", DOES_NOT_TOLERATE: "xx", NO_DATA: ".."}
FORMATS = ("png", "svg")


@dataclass
class FigureData:
    """A figure, its file stem, a caption, and the series it drew (label -> {"x": [...], "y": [...]})."""

    name: str
    title: str
    caption: str
    figure: Figure
    series: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: series label -> index of the axes (in ``figure.axes``) it is drawn on; absent means the first
    panels: dict[str, int] = field(default_factory=dict)
    #: series label -> the label its legend entry shows, where that differs from the series label
    labels: dict[str, str] = field(default_factory=dict)
    #: how :func:`compare_runs` redraws the series: "lines", "cdf" (CDF beside a CCDF), "" (not comparable)
    kind: str = ""
    #: the SLO limit a CDF marks (ms), so a comparison of runs marks it too
    slo: float | None = None


def _style(i: int) -> dict[str, Any]:
    linestyle, marker = STYLES[i % len(STYLES)]
    return {"linestyle": linestyle, "marker": marker, "color": GREYS[i % len(GREYS)], "markersize": 5,
            "markevery": None, "linewidth": 1.4}


def _legend_outside(fig: Figure, ax: Any, *, fontsize: float = 8, handles_from: Sequence[Any] = ()) -> None:
    """One legend to the right of ``ax`` (the right-most panel), outside every axes, for the lines of
    ``handles_from`` (default: ``ax``); saving with a tight bounding box keeps it on the page."""
    handles: list[Any] = []
    labels: list[str] = []
    for source in handles_from or (ax,):
        for handle, label in zip(*source.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        ax.legend(handles, labels, fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0.0, frameon=False)


def _new(title: str, *, ncols: int = 1, width: float = 6.4) -> tuple[Figure, list[Any]]:
    # Figure objects outside pyplot's registry: nothing is retained after a figure is dropped.
    fig = Figure(figsize=(width * (1 if ncols == 1 else 0.8 * ncols), 4.2))
    axes = fig.subplots(1, ncols, squeeze=False)
    fig.suptitle(title, fontsize=11)
    return fig, list(axes[0])


def _points_by_cell(run: RunDir) -> dict[tuple[str, str, str], list[str]]:
    """(group, placement, corridor label) -> finished point ids, in planned order."""
    cells: dict[tuple[str, str, str], list[str]] = {}
    for planned in run.planned_points:
        pid = planned["point_id"]
        if pid not in run.points:
            continue
        marker = run.points[pid]
        key = (str(marker.get("group")), str(marker.get("placement")), _corridor(marker))
        cells.setdefault(key, []).append(pid)
    return cells


def _corridor(marker: Mapping[str, Any]) -> str:
    plan = marker.get("plan") or {}
    if not plan.get("wan_links") or marker.get("placement") == LOCAL_PLACEMENT:
        return "local"
    rtt = float(plan.get("max_rtt_ms") or 0.0)
    label = f"{float(plan.get('max_path_km') or 0):,.0f} km, RTT {rtt:.0f} ms"
    variant = _variant(marker)
    return f"{label}, {variant}" if variant else label


def _variant(marker: Mapping[str, Any]) -> str:
    """The WAN figures other than distance (rate, loss) that tell apart points at one distance."""
    plan = marker.get("plan") or {}
    if not plan.get("wan_links") or marker.get("placement") == LOCAL_PLACEMENT:
        return ""
    from corridor.spec.units import format_rate

    parts = []
    if plan.get("min_rate_mbps"):
        parts.append(format_rate(float(plan["min_rate_mbps"])))
    if plan.get("path_loss"):
        parts.append(f"loss {float(plan['path_loss']):.2g}")
    return " ".join(parts)


def _by_variant(run: RunDir, cells: Mapping[tuple[str, str, str], list[str]], group: str
                ) -> dict[str, list[list[str]]]:
    """Point-id lists of ``group`` per WAN variant; local baseline cells go into every variant (x = 0)."""
    local: list[list[str]] = []
    out: dict[str, list[list[str]]] = {}
    for key, pids in cells.items():
        if key[0] != group:
            continue
        variant = _variant(run.points[pids[0]])
        if not variant:
            local.append(pids)
        else:
            out.setdefault(variant, []).append(pids)
    if not out:
        return {"": local} if local else {}
    return {variant: local + lists for variant, lists in out.items()}


def _records(run: RunDir, pids: Sequence[str], workload: str, kind: str) -> list[dict[str, Any]]:
    wanted = set(pids)
    return [r for r in run.records if r.get("point_id") in wanted and r.get("workload") == workload
            and r.get("kind") == kind]


def _rtt_km(run: RunDir, pids: Sequence[str]) -> tuple[float, float]:
    plan = run.points[pids[0]].get("plan") or {}
    if run.points[pids[0]].get("placement") == LOCAL_PLACEMENT:
        return 0.0, 0.0
    return float(plan.get("max_rtt_ms") or 0.0), float(plan.get("max_path_km") or 0.0)


def ttft_values_ms(records: Sequence[Mapping[str, Any]]) -> list[float]:
    """TTFT of the successful requests, in ms, sorted (the CDF's x values)."""
    return sorted(float(r["ttft_s"]) * 1e3 for r in records if r.get("ok") and r.get("ttft_s") is not None)


def _draw_cdf(ax_cdf: Any, ax_tail: Any, values: Sequence[float], label: str, style: Mapping[str, Any]
              ) -> list[float]:
    """A step CDF of sorted ``values`` on ``ax_cdf`` and its tail (CCDF, log y) on ``ax_tail``; returns the CDF's y."""
    n = len(values)
    y = (np.arange(1, n + 1) / n).tolist()
    ax_cdf.step(values, y, where="post", label=label, **{**style, "marker": None})
    # 1 - F(x) just below each sample: the largest sample keeps 1/n instead of vanishing on a log axis
    tail = [(n - i) / n for i in range(n)]
    ax_tail.step(values, tail, where="post", label=label, **{**style, "marker": None})
    return y


def _mark_slo(ax_cdf: Any, ax_tail: Any, slo: float, label: str = "SLO") -> None:
    for ax in (ax_cdf, ax_tail):
        ax.axvline(slo, color="0.0", linewidth=0.8, linestyle=(0, (2, 2)))
    ax_cdf.annotate(f"{label} {slo:g} ms", (slo, 0.5), rotation=90, fontsize=8, ha="right", va="center")


def _finish_cdf(data: FigureData, ax_cdf: Any, ax_tail: Any, xlabel: str, slo: float | None) -> None:
    data.slo = slo
    if slo is not None:
        _mark_slo(ax_cdf, ax_tail, slo)
    for ax in (ax_cdf, ax_tail):
        ax.set_xlabel(xlabel)
        ax.grid(True, color="0.85")
    ax_cdf.set_ylabel("fraction of requests")
    ax_cdf.set_ylim(0, 1.02)
    ax_tail.set_yscale("log")
    ax_tail.set_ylabel("fraction slower (CCDF, log)")
    ax_tail.set_title("tail", fontsize=9)
    _legend_outside(data.figure, ax_tail)
    data.figure.tight_layout()


def latency_cdfs(run: RunDir) -> list[FigureData]:
    """One TTFT CDF per inference workload (and per tenant victim), a line per placement and corridor,
    with the tail beside it as a CCDF on a log axis."""
    exp = run.experiment
    figures: list[FigureData] = []
    cells = _points_by_cell(run)
    groups: list[tuple[str, str, str]] = []  # (title, workload, group)
    for w in exp.get("workloads", []):
        if w.get("kind") == "inference":
            groups.append((w["name"], w["name"], w["name"]))
    for t in exp.get("tenants", []):
        victim = t["victim"]
        if any(w["name"] == victim and w.get("kind") == "inference" for w in exp.get("workloads", [])):
            groups.append((f"{victim} sharing with {', '.join(x for x in t['workloads'] if x != victim)}",
                           victim, t["name"]))
    for title, workload, group in groups:
        fig, (ax, ax_tail) = _new(f"TTFT distribution: {title}", ncols=2)
        data = FigureData(f"cdf-ttft-{group}", f"TTFT CDF, {title}",
                          f"Cumulative distribution of time to first token for {title}, one line per placement; "
                          "right: the tail, the fraction of requests slower than x on a log scale.", fig, kind="cdf")
        i = 0
        keys = [k for k in cells if k[0] == group]
        if group != workload:  # a tenant group: also draw the victim alone for comparison
            keys = [k for k in cells if k[0] == workload and k[1] != LOCAL_PLACEMENT] + keys
        for key in keys:
            values = ttft_values_ms(_records(run, cells[key], workload, "request"))
            if not values:
                continue
            label = f"{key[1]} ({key[2]})"
            if group != workload:
                label += " alone" if key[0] == workload else " shared"
            y = _draw_cdf(ax, ax_tail, values, label, _style(i))
            data.series[label] = {"x": values, "y": y}
            i += 1
        if data.series:
            _finish_cdf(data, ax, ax_tail, "time to first token (ms)", _slo_ms(exp, workload))
            figures.append(data)
    return figures


def _slo_ms(exp: Mapping[str, Any], workload: str) -> float | None:
    for w in exp.get("workloads", []):
        if w["name"] == workload and w.get("kind") == "inference":
            return float(w.get("slo", {}).get("ttft_ms", 0.0)) or None
    return None


def training_vs_rtt(run: RunDir) -> FigureData | None:
    """Median step time (95 % CI bars) and compute utilisation against the corridor RTT, a line per workload."""
    exp = run.experiment
    cells = _points_by_cell(run)
    fig, (ax_step, ax_util) = _new("Training across the corridor", ncols=2)
    data = FigureData("training-vs-rtt", "Training step time and utilisation against RTT",
                      "Median step time (slowest rank per step, warm-up dropped; bars: 95 % bootstrap "
                      "interval) and compute utilisation; RTT 0 is the local baseline.", fig, kind="lines")
    i = 0
    for w in exp.get("workloads", []):
        if w.get("kind") != "training":
            continue
        variants = _by_variant(run, cells, w["name"])
        for variant, cell_list in variants.items():
            i = _training_series(run, w["name"], variant if len(variants) > 1 else "", cell_list, data,
                                 ax_step, ax_util, i)
    if not data.series:
        return None
    return _finish_training(data, ax_step, ax_util)


def _training_series(run: RunDir, name: str, variant: str, cell_list: Sequence[Sequence[str]], data: FigureData,
                     ax_step: Any, ax_util: Any, i: int) -> int:
    xs: list[float] = []
    steps: list[float] = []
    lows: list[float] = []
    highs: list[float] = []
    utils: list[float] = []
    for pids in cell_list:
        records = _records(run, pids, name, "train_step")
        st = step_times_s(records)
        if not st:
            continue
        rtt, _ = _rtt_km(run, pids)
        compute = sum(float(r.get("compute_time_s") or 0.0) for r in records)
        total = sum(float(r.get("step_time_s") or 0.0) for r in records)
        xs.append(rtt)
        est = bootstrap(st, q=50)
        steps.append(est.value * 1e3)
        lows.append((est.value - est.low) * 1e3 if math.isfinite(est.low) else 0.0)
        highs.append((est.high - est.value) * 1e3 if math.isfinite(est.high) else 0.0)
        utils.append(compute / total * 100 if total else float("nan"))
    if not xs:
        return i
    order = np.argsort(xs, kind="stable")
    xs = [xs[j] for j in order]
    steps = [steps[j] for j in order]
    lows = [lows[j] for j in order]
    highs = [highs[j] for j in order]
    utils = [utils[j] for j in order]
    label = f"{name} {variant}".strip()
    ax_step.errorbar(xs, steps, yerr=[lows, highs], label=label, capsize=3, **_style(i))
    ax_util.plot(xs, utils, label=label, **_style(i))
    data.series[f"{label} step"] = {"x": xs, "y": steps, "err_low": lows, "err_high": highs}
    data.series[f"{label} utilisation"] = {"x": xs, "y": utils}
    data.panels[f"{label} utilisation"] = 1
    data.labels.update({f"{label} step": label, f"{label} utilisation": label})
    return i + 1


def _finish_training(data: FigureData, ax_step: Any, ax_util: Any) -> FigureData:
    fig = data.figure
    ax_step.set_xlabel("corridor RTT (ms)")
    ax_step.set_ylabel("median step time (ms)")
    ax_util.set_xlabel("corridor RTT (ms)")
    ax_util.set_ylabel("compute utilisation (%)")
    ax_util.set_ylim(0, 105)
    for ax in (ax_step, ax_util):
        ax.grid(True, color="0.85")
    _legend_outside(fig, ax_util, handles_from=(ax_step,))
    fig.tight_layout()
    return data


def inference_vs_distance(run: RunDir) -> FigureData | None:
    """TTFT and TPOT at each workload's SLO percentile against corridor distance (0 = local)."""
    exp = run.experiment
    cells = _points_by_cell(run)
    fig, (ax_ttft, ax_tpot) = _new("Inference across the corridor", ncols=2)
    data = FigureData("inference-vs-distance", "TTFT and TPOT against distance",
                      "TTFT and TPOT at the SLO percentile of each inference workload (bars: 95 % bootstrap "
                      "interval); distance 0 is the local baseline, distance is fibre path length.", fig,
                      kind="lines")
    i = 0
    for w in exp.get("workloads", []):
        if w.get("kind") != "inference":
            continue
        q = float(w.get("slo", {}).get("percentile", 99.0))
        variants = _by_variant(run, cells, w["name"])
        for variant, cell_list in variants.items():
            i = _inference_series(run, w["name"], q, variant if len(variants) > 1 else "", cell_list, data,
                                  ax_ttft, ax_tpot, i)
    if not data.series:
        return None
    return _finish_inference(data, ax_ttft, ax_tpot)


def _inference_series(run: RunDir, name: str, q: float, variant: str, cell_list: Sequence[Sequence[str]],
                      data: FigureData, ax_ttft: Any, ax_tpot: Any, i: int) -> int:
    xs: list[float] = []
    cols: dict[str, list[list[float]]] = {"ttft": [], "tpot": []}  # per point: value, minus, plus
    for pids in cell_list:
        records = _records(run, pids, name, "request")
        ttft = ttft_values_ms(records)
        if not ttft:
            continue
        tpot = [float(r["tpot_s"]) * 1e3 for r in records if r.get("ok") and r.get("tpot_s") is not None]
        xs.append(_rtt_km(run, pids)[1])
        for key, values in (("ttft", ttft), ("tpot", tpot)):
            value = percentile(values, q) if values else float("nan")
            est = bootstrap(values, q=q)
            cols[key].append([value, value - est.low if math.isfinite(est.low) else 0.0,
                              est.high - value if math.isfinite(est.high) else 0.0])
    if not xs:
        return i
    order = np.argsort(xs, kind="stable")
    xs = [xs[j] for j in order]
    label = f"{name} {variant}".strip()
    for key, ax in (("ttft", ax_ttft), ("tpot", ax_tpot)):
        rows = [cols[key][j] for j in order]
        ys = [r[0] for r in rows]
        lows = [max(r[1], 0.0) for r in rows]
        highs = [max(r[2], 0.0) for r in rows]
        ax.errorbar(xs, ys, yerr=[lows, highs], label=f"{label} p{q:g}", capsize=3, **_style(i))
        data.series[f"{label} {key}"] = {"x": xs, "y": ys, "err_low": lows, "err_high": highs}
        data.labels[f"{label} {key}"] = f"{label} p{q:g}"
    data.panels[f"{label} tpot"] = 1
    return i + 1


def _finish_inference(data: FigureData, ax_ttft: Any, ax_tpot: Any) -> FigureData:
    fig = data.figure
    ax_ttft.set_xlabel("corridor distance (km of fibre)")
    ax_ttft.set_ylabel("TTFT (ms)")
    ax_tpot.set_xlabel("corridor distance (km of fibre)")
    ax_tpot.set_ylabel("TPOT (ms)")
    for ax in (ax_ttft, ax_tpot):
        ax.grid(True, color="0.85")
    _legend_outside(fig, ax_tpot, handles_from=(ax_ttft,))
    fig.tight_layout()
    return data


def link_series(samples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Throughput (Mbit/s, from cumulative byte counters) and queue (bytes) series from ``link_sample`` records."""
    out: dict[str, dict[str, list[float]]] = {}
    if len(samples) < 2:
        return out
    t = [float(s["t_s"]) for s in samples]
    fields = sorted({k for s in samples for k, v in s.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)})
    for name in fields:
        values = [s.get(name) for s in samples]
        if any(not isinstance(v, (int, float)) for v in values):
            continue
        vals = [float(v) for v in values]  # type: ignore[arg-type]
        low = name.lower()
        leaf = low.rsplit(".", 1)[-1]
        counter = leaf in ("bytes", "tx_bytes", "rx_bytes", "bytes_sent", "sent_bytes")
        if counter and all(b >= a for a, b in zip(vals, vals[1:], strict=False)):
            rates = [(b - a) * 8 / 1e6 / max(t2 - t1, 1e-9)
                     for a, b, t1, t2 in zip(vals, vals[1:], t, t[1:], strict=False)]
            out[f"{name} rate"] = {"x": t[1:], "y": rates}
        elif leaf in ("queue_bytes", "backlog_bytes", "backlog"):
            out[name] = {"x": t, "y": vals}
    return out


def _link_info(run: RunDir, link: str) -> dict[str, Any]:
    """The link's entry in any point's plan summary (ends and rate), or {} when no point recorded it."""
    for marker in run.points.values():
        for entry in (marker.get("plan") or {}).get("wan_links") or []:
            if entry.get("name") == link:
                return dict(entry)
    return {}


def _direction_title(direction: str, info: Mapping[str, Any]) -> str:
    a, b = info.get("a"), info.get("b")
    if a and b and direction in ("a_to_b", "b_to_a"):
        return f"{a} \u2192 {b}" if direction == "a_to_b" else f"{b} \u2192 {a}"
    return direction.replace("_", " ") or "link"


def link_timeseries(run: RunDir) -> list[FigureData]:
    """Per WAN link and direction: throughput and queueing delay (latency under load) over time.

    Queueing delay is the queue's backlog drained at the link's rate (bytes x 8 / rate), in ms, as
    Flent draws latency under load; one column of panels per direction.
    """
    samples = [r for r in run.records if r.get("kind") == "link_sample"]
    figures: list[FigureData] = []
    for link in sorted({str(s.get("link")) for s in samples}):
        pids = []
        for planned in run.planned_points:
            pid = planned["point_id"]
            if any(s.get("point_id") == pid and s.get("link") == link for s in samples):
                pids.append(pid)
        pids = pids[:6]
        per_point = {pid: link_series([s for s in samples if s.get("point_id") == pid and s.get("link") == link])
                     for pid in pids}
        directions = sorted({name.split(".", 1)[0] if "." in name else "" for series in per_point.values()
                             for name in series})
        if not directions:
            continue
        info = _link_info(run, link)
        rate_mbps = float(info.get("rate_mbps") or 0.0)
        fig = Figure(figsize=(max(6.4, 4.2 * len(directions) + 2.4), 6.4))
        grid = fig.subplots(2, len(directions), squeeze=False, sharex=True)
        fig.suptitle(f"WAN link {link}", fontsize=11)
        data = FigureData(f"link-{link}", f"Link {link}: throughput and queueing delay over time",
                          f"Per direction: throughput from the link's byte counters and queueing delay (backlog "
                          f"x 8 / {rate_mbps:g} Mbit/s) while each point ran (first {len(pids)} points with "
                          "samples).", fig, kind="lines")
        for i, pid in enumerate(pids):
            marker = run.points.get(pid, {})
            label = f"{marker.get('group')} @ {marker.get('placement')}"
            for name, xy in per_point[pid].items():
                col = directions.index(name.split(".", 1)[0] if "." in name else "")
                if name.endswith(" rate"):
                    key, row, drawn = f"{pid} {name}", 0, xy
                elif rate_mbps > 0:
                    key, row = f"{pid} {name.rsplit('.', 1)[0] + '.' if '.' in name else ''}queueing delay", 1
                    drawn = {"x": xy["x"], "y": [b * 8 / (rate_mbps * 1e6) * 1e3 for b in xy["y"]]}
                else:
                    continue
                grid[row][col].plot(drawn["x"], drawn["y"], label=label, **{**_style(i), "markersize": 3})
                data.series[key] = drawn
                data.panels[key] = row * len(directions) + col
                data.labels[key] = f"{label}, {_direction_title(directions[col], info)}"
        if not data.series:
            continue
        for col, direction in enumerate(directions):
            grid[0][col].set_title(_direction_title(direction, info), fontsize=9)
            grid[1][col].set_xlabel("time in point (s)")
            grid[0][col].set_ylabel("throughput (Mbit/s)")
            grid[1][col].set_ylabel("queueing delay (ms)")
            for row in (0, 1):
                grid[row][col].grid(True, color="0.85")
        _legend_outside(fig, grid[0][-1], fontsize=7, handles_from=[ax for row in grid for ax in row])
        fig.tight_layout()
        figures.append(data)
    return figures


def fault_timeseries(run: RunDir) -> list[FigureData]:
    """Per applied fault (``fault`` records): the link's throughput and queueing delay over time, event marked."""
    samples = [r for r in run.records if r.get("kind") == "link_sample"]
    figures: list[FigureData] = []
    for fault in (r for r in run.records if r.get("kind") == "fault"):
        pid, link = fault.get("point_id"), str(fault.get("link"))
        series = link_series([s for s in samples if s.get("point_id") == pid and s.get("link") == link])
        if not series:
            continue
        start = float(fault.get("t_point_s") or fault.get("at_s") or 0.0)
        span = float(fault.get("duration_s") or 0.0)
        rate_mbps = float(fault.get("base_rate_mbps") or 0.0)
        event = str(fault.get("event"))
        marker = run.points.get(str(pid), {})
        fig, (ax_rate, ax_delay) = _new(f"{event} on {link}: {marker.get('group')} @ {marker.get('placement')}",
                                        ncols=2)
        data = FigureData(f"fault-{fault.get('fault_index')}-{event}-{link}-{file_stem(str(pid))}",
                          f"Fault {event} on {link}: throughput and queueing delay",
                          f"Link {link} while point {pid} ran; the shaded band is the {event} "
                          f"({span * 1e3:.0f} ms from {start:.2f} s).", fig)
        i = 0
        for name, xy in series.items():
            if name.endswith(" rate"):
                ax_rate.plot(xy["x"], xy["y"], label=name, **{**_style(i), "markersize": 3})
                data.series[name] = xy
            elif rate_mbps > 0:
                delay = {"x": xy["x"], "y": [b * 8 / (rate_mbps * 1e6) * 1e3 for b in xy["y"]]}
                label = name.replace("queue_bytes", "queueing delay")
                ax_delay.plot(delay["x"], delay["y"], label=label, **{**_style(i), "markersize": 3})
                data.series[label] = delay
            i += 1
        data.series["event"] = {"x": [start, start + span], "y": [0.0, 0.0]}
        for ax in (ax_rate, ax_delay):
            ax.axvspan(start, start + max(span, 0.01), color="0.8", hatch="//", label=event)
            ax.set_xlabel("time in point (s)")
            ax.grid(True, color="0.85")
        _legend_outside(fig, ax_delay, fontsize=6, handles_from=(ax_rate, ax_delay))
        ax_rate.set_ylabel("throughput (Mbit/s)")
        ax_delay.set_ylabel("queueing delay (ms)")
        fig.tight_layout()
        figures.append(data)
    return figures


def _shade_name(shade: float) -> str:
    if shade >= 1.0:
        return "white"
    if shade >= 0.9:
        return "near-white grey"
    if shade >= 0.6:
        return "light grey"
    return "dark grey"


def heatmap_key() -> str:
    """The heatmap's key in words, read from :data:`VERDICT_SHADE` and :data:`VERDICT_HATCH` so it cannot drift."""
    hatch_words = {"": "no hatch", "//": "hatched //", "oo": "hatched oo", "xx": "hatched xx", "..": "dotted"}
    return "; ".join(f"{_shade_name(shade)}, {hatch_words.get(VERDICT_HATCH[verdict], VERDICT_HATCH[verdict])}: "
                     f"{verdict}" for verdict, shade in sorted(VERDICT_SHADE.items(), key=lambda kv: -kv[1]))


def verdict_heatmap(verdicts: Sequence[Verdict]) -> FigureData | None:
    """Workloads by corridor: each cell shaded, hatched and labelled with its verdict."""
    if not verdicts:
        return None
    rows = list(dict.fromkeys(v.workload for v in verdicts))
    cols = list(dict.fromkeys(f"{v.placement}\n{v.corridor}" for v in verdicts))
    fig, (ax,) = _new("Which workloads tolerate the corridor", width=max(6.4, 2.2 * len(cols) + 2.5))
    fig.set_figheight(max(3.0, 0.55 * len(rows) + 1.8))
    grid = np.full((len(rows), len(cols)), np.nan)
    data = FigureData("verdict-heatmap", "Verdicts by workload and corridor",
                      "Each cell: the verdict for a workload at one placement and corridor, named in words; "
                      f"shade and hatch: {heatmap_key()}; a white cell labelled 'not run' was not run.", fig)
    labels: dict[str, dict[str, list[float]]] = {}
    filled = {(rows.index(v.workload), cols.index(f"{v.placement}\n{v.corridor}")) for v in verdicts}
    for r in range(len(rows)):
        for c in range(len(cols)):
            if (r, c) in filled:
                continue
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor="white", edgecolor="0.6",
                                       linewidth=0.5))
            ax.text(c, r, "not run", ha="center", va="center", fontsize=7, color="0.5")
    for v in verdicts:
        r, c = rows.index(v.workload), cols.index(f"{v.placement}\n{v.corridor}")
        grid[r, c] = VERDICT_SHADE[v.verdict]
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor=str(VERDICT_SHADE[v.verdict]),
                                   edgecolor="0.0", hatch=VERDICT_HATCH[v.verdict], linewidth=0.8))
        ax.text(c, r, v.verdict, ha="center", va="center", fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})
        labels.setdefault(v.verdict, {"x": [], "y": []})
        labels[v.verdict]["x"].append(float(c))
        labels[v.verdict]["y"].append(float(r))
    data.series = labels
    ax.set_xlim(-0.5, len(cols) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    ax.set_aspect("auto")
    fig.tight_layout()
    return data


def measured_vs_model(verdicts: Sequence[Verdict]) -> FigureData | None:
    """The metric each verdict judges, measured against the analytic model's figure, with the 1:1 line.

    Log axes: step times (seconds) and TTFT percentiles (milliseconds) share the page without the
    short ones piling up at the origin. The shaded band is where the model counts as agreeing
    (within :data:`MODEL_AGREEMENT` of the measurement); labels are nudged apart so none covers another.
    """
    pairs = [v for v in verdicts if v.model is not None and v.measured is not None
             and float(v.model) > 0 and float(v.measured) > 0]
    if not pairs:
        return None
    fig, (ax,) = _new("Measured against the analytic model")
    data = FigureData("measured-vs-model", "Measured against model",
                      "Each point is one verdict's metric (step time or TTFT percentile, ms) on log axes; on the "
                      f"dashed line the model is exact, in the shaded band it agrees within {MODEL_AGREEMENT:.0%}.",
                      fig)
    metrics = list(dict.fromkeys(v.metric for v in pairs))
    labels = []
    spread = [value for v in pairs for value in (float(v.model), float(v.measured))]  # type: ignore[arg-type]
    middle = math.sqrt(min(spread) * max(spread))  # the log-scale middle: labels right of it read leftwards
    for i, metric in enumerate(metrics):
        rows = [v for v in pairs if v.metric == metric]
        xs = [float(v.model) for v in rows]  # type: ignore[arg-type]
        ys = [float(v.measured) for v in rows]  # type: ignore[arg-type]
        ax.plot(xs, ys, linestyle="none", label=metric, **{k: val for k, val in _style(i).items()
                                                              if k not in ("linestyle",)})
        data.series[metric] = {"x": xs, "y": ys}
        spots: dict[tuple[float, float], list[str]] = {}
        for v, x, y in zip(rows, xs, ys, strict=True):  # rows on one spot share one label
            spots.setdefault((x, y), []).append(f"{v.workload} @ {v.placement}")
        for (x, y), names in spots.items():
            right_half = x > middle  # labels on the right half read leftwards, so none leaves the axes
            labels.append(ax.annotate(", ".join(names), (x, y), fontsize=6, xytext=(-5 if right_half else 5, -3),
                                      textcoords="offset points", ha="right" if right_half else "left"))
    low, high = min(spread) / 1.5, max(spread) * 1.5
    line = np.geomspace(low, high, 50)
    # Measured m agrees with model x when |x - m| <= a * m, i.e. x / (1 + a) <= m <= x / (1 - a).
    ax.fill_between(line, line / (1 + MODEL_AGREEMENT), line / (1 - MODEL_AGREEMENT), color="0.9", linewidth=0,
                    label=f"agrees within {MODEL_AGREEMENT:.0%}")
    ax.plot(line, line, color="0.0", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("model (ms)")
    ax.set_ylabel("measured (ms)")
    ax.grid(True, color="0.85", which="both", linewidth=0.4)
    _legend_outside(fig, ax)
    fig.tight_layout()
    FigureCanvasAgg(fig)  # a canvas that can measure text, for the nudging
    repel_labels(fig, labels)
    return data


def build_figures(run: RunDir, verdicts: Sequence[Verdict] | None = None) -> list[FigureData]:
    """Every figure the run's records support, in report order."""
    if verdicts is None:
        verdicts = compute_verdicts(run)
    out: list[FigureData] = []
    for maybe in (verdict_heatmap(verdicts), training_vs_rtt(run), inference_vs_distance(run)):
        if maybe is not None:
            out.append(maybe)
    out += latency_cdfs(run)
    out += link_timeseries(run)
    out += fault_timeseries(run)
    model = measured_vs_model(verdicts)
    if model is not None:
        out.append(model)
    return out


def run_labels(paths: Sequence[str]) -> list[str]:
    """A short legend name per run directory: its folder name, or the whole path where two names clash."""
    names = [os.path.basename(os.path.normpath(p)) or p for p in paths]
    return [n if names.count(n) == 1 else os.path.normpath(p) for n, p in zip(names, paths, strict=True)]


def compare_runs(runs: Sequence[tuple[str, Sequence[FigureData]]]) -> list[FigureData]:
    """Overlay several runs: one figure per figure name that has per-run series (training against RTT,
    TTFT and TPOT against distance, TTFT CDFs, link throughput and delay), each series labelled
    ``RUN: label``. ``runs`` pairs a run's legend name with its figures (from :func:`build_figures`).

    Runs are told apart by line style, a run's own series by marker (CDFs: runs by shade and width,
    series by line style); a figure name that only some runs have is drawn from those.
    """
    names: list[str] = []
    for _, figures in runs:
        names += [f.name for f in figures if f.kind and f.name not in names]
    out: list[FigureData] = []
    for name in names:
        present = [(label, f) for label, figures in runs for f in figures if f.name == name]
        first = present[0][1]
        source_axes = first.figure.axes
        fig = Figure(figsize=(first.figure.get_figwidth() + 1.5, first.figure.get_figheight()))
        spec = source_axes[0].get_subplotspec() if source_axes else None
        shape = spec.get_gridspec().get_geometry() if spec is not None else (1, max(len(source_axes), 1))
        grid = fig.subplots(*shape, squeeze=False)
        axes = [ax for row in grid for ax in row]
        fig.suptitle(f"{first.figure.get_suptitle()}: {' vs '.join(label for label, _ in present)}", fontsize=11)
        data = FigureData(name, f"{first.title}, {len(present)} runs compared",
                          f"{first.caption} Runs compared: {', '.join(label for label, _ in present)} "
                          + ("(shade and width: run; line style: series within a run)." if first.kind == "cdf"
                             else "(line style: run; marker: series within a run)."), fig, kind=first.kind)
        for r, (run_label, source) in enumerate(present):
            linestyle = STYLES[r % len(STYLES)][0]
            for s, (key, xy) in enumerate(source.series.items()):
                style = {**_style(s), "linestyle": linestyle, "color": GREYS[r % len(GREYS)], "markersize": 4}
                if first.kind == "cdf":  # steps carry no markers: line style tells series apart, shade runs
                    style = {**_style(s), "color": ("0.0", "0.6", "0.3", "0.75")[r % 4], "linewidth": 1.2 + r % 2}
                shown = f"{run_label}: {source.labels.get(key, key)}"
                panel = source.panels.get(key, 0)
                if first.kind == "cdf":
                    _draw_cdf(axes[0], axes[1], xy["x"], shown, style)
                elif "err_low" in xy:
                    axes[panel].errorbar(xy["x"], xy["y"], yerr=[xy["err_low"], xy["err_high"]], label=shown,
                                         capsize=3, **style)
                else:
                    axes[panel].plot(xy["x"], xy["y"], label=shown, **style)
                data.series[f"{run_label}: {key}"] = xy
                data.panels[f"{run_label}: {key}"] = panel
                data.labels[f"{run_label}: {key}"] = shown
        if first.kind == "cdf":  # the SLO line of each run; one line where the runs share their SLO
            slos = {label: f.slo for label, f in present if f.slo is not None}
            for run_label, slo in slos.items():
                _mark_slo(axes[0], axes[1], slo, "SLO" if len(set(slos.values())) == 1 else f"{run_label}: SLO")
                if len(set(slos.values())) == 1:
                    break
            data.slo = next(iter(slos.values())) if len(set(slos.values())) == 1 else None
        for ax, src in zip(axes, source_axes, strict=False):
            ax.set_xlabel(src.get_xlabel())
            ax.set_ylabel(src.get_ylabel())
            ax.set_title(src.get_title(), fontsize=9)
            ax.set_yscale(src.get_yscale())
            if src.get_yscale() == "linear" and first.kind == "cdf":
                ax.set_ylim(src.get_ylim())
            ax.grid(True, color="0.85")
        _legend_outside(fig, axes[shape[1] - 1], fontsize=7, handles_from=axes)
        fig.tight_layout()
        out.append(data)
    return out


def render_run(run: RunDir, out_dir: str, verdicts: Sequence[Verdict] | None = None) -> dict[str, list[str]]:
    """Save every figure as PNG and SVG under ``out_dir``; returns figure name -> file paths."""
    return save_figures(build_figures(run, verdicts), out_dir)


def file_stem(name: str) -> str:
    """A figure name as a portable file name: lower case letters, digits and hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "figure"


def save_figures(figures: Sequence[FigureData], out_dir: str) -> dict[str, list[str]]:
    """Save figures as PNG and SVG under ``out_dir``; returns figure name -> file paths."""
    os.makedirs(out_dir, exist_ok=True)
    written: dict[str, list[str]] = {}
    for data in figures:
        paths = []
        for fmt in FORMATS:
            path = os.path.join(out_dir, f"{file_stem(data.name)}.{fmt}")
            data.figure.savefig(path, dpi=120, bbox_inches="tight", metadata=_metadata(fmt))
            paths.append(path)
        written[data.name] = paths
    return written


def _metadata(fmt: str) -> dict[str, Any]:
    # Fixed metadata keeps re-rendered files identical from run to run.
    if fmt == "svg":
        return {"Date": None}
    if fmt == "png":
        return {"Software": "corridor"}
    return {}



#: Formats ``save_figure_file`` takes from the file name's extension.
FILE_FORMATS = ("pdf", "png", "svg")


class FigureError(CorridorError):
    """A figure asked for by name that the run does not have, or a file format matplotlib is not asked to write."""


def pick_figures(figures: Sequence[FigureData], names: Sequence[str]) -> list[FigureData]:
    """The figures called ``names``, in the order asked (every figure when ``names`` is empty)."""
    if not names:
        return list(figures)
    by_name = {data.name: data for data in figures}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise FigureError(f"this run has no figure {', '.join(repr(n) for n in unknown)}; "
                          f"its figures are: {', '.join(by_name) or 'none'}")
    return [by_name[name] for name in dict.fromkeys(names)]


def save_figure_file(figures: Sequence[FigureData], path: str) -> dict[str, list[str]]:
    """Save figures to ``path`` in the format its extension names (.pdf, .png, .svg).

    Several figures go into one multi-page PDF, or, for PNG and SVG, into one file each
    named ``STEM-FIGURE.EXT`` beside ``path``. Returns figure name -> file paths.
    """
    stem, ext = os.path.splitext(path)
    fmt = ext.lower().lstrip(".")
    if fmt not in FILE_FORMATS:
        raise FigureError(f"cannot tell the format of {path!r} from its extension; end it in "
                          f"{', '.join('.' + f for f in FILE_FORMATS)}, or give a folder")
    if not figures:
        raise FigureError(f"no figure to save to {path}: the run has none drawn from its records")
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    written: dict[str, list[str]] = {}
    if len(figures) == 1 or fmt == "pdf":
        if fmt == "pdf" and len(figures) > 1:
            from matplotlib.backends.backend_pdf import PdfPages

            with PdfPages(path, metadata=_metadata(fmt)) as pages:
                for data in figures:
                    pages.savefig(data.figure, bbox_inches="tight")
                    written[data.name] = [path]
        else:
            figures[0].figure.savefig(path, dpi=120, bbox_inches="tight", format=fmt, metadata=_metadata(fmt))
            written[figures[0].name] = [path]
        return written
    for data in figures:
        one = f"{stem}-{file_stem(data.name)}.{fmt}"
        data.figure.savefig(one, dpi=120, bbox_inches="tight", format=fmt, metadata=_metadata(fmt))
        written[data.name] = [one]
    return written


__all__ = ["FigureData", "FigureError", "build_figures", "compare_runs", "heatmap_key", "pick_figures", "render_run",
           "run_labels", "save_figure_file", "save_figures", "slo_of"]
