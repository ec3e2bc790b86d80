"""Placement verdicts: does a workload tolerate being placed across this corridor?

Stage: analysis (pure; reads a run directory, never re-runs anything, needs
neither root nor Mininet). For each workload and each placement other than the
local baseline, at each combination of WAN sweep values, the samples of every
repetition are pooled and handed to the workload's kind
(:mod:`corridor.workloads.registry`), which compares them with the same
workload on the local baseline (same seed, same non-WAN sweep values) and with
its SLO, on 95 % confidence intervals:

- training: median step time (mean, for patterns with outer syncs) and the slowdown against local;
- inference: TTFT and TPOT at the SLO's percentile and goodput; when the
  baseline itself misses the SLO, the placement is judged by its slowdown
  against the baseline instead (capacity, not placement);
- tenant groups: the victim workload's figures while sharing the corridor,
  judged by its SLO and compared with the victim running alone.

A row is "inconclusive" when its interval spans a limit, and says how many
samples would decide it. Each row carries the analytic model's figure for the
same statistic, flagged when it differs from the measurement by more than
15 %, and the distance at which the model says the workload stops tolerating
(recorded by the runner as ``prediction`` records).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from corridor.results import records as schema
from corridor.results.rundir import RunDir
from corridor.spec.experiment import LOCAL_PLACEMENT, WAN_AXES
from corridor.stats import percentile
from corridor.workloads import registry
from corridor.workloads.kind import MODEL_AGREEMENT, NO_DATA, VERDICT_ORDER, Judgement
from corridor.workloads.training.kind import step_samples

__all__ = ["NO_DATA", "VERDICT_ORDER", "Verdict", "compute_verdicts", "percentile", "slo_of", "step_times_s"]


@dataclass(frozen=True)
class Verdict:
    """One row of the verdict table: the compared statistic with its interval, against a baseline and an SLO."""

    workload: str  # the workload, or "VICTIM with OTHERS" for a tenant group
    group: str  # workload or tenant-group name (the point's group)
    kind: str  # "training", "inference" or "tenants"
    type: str
    placement: str
    corridor: str  # the WAN sweep values in words
    sweep: dict[str, Any]
    rtt_ms: float | None
    path_km: float | None
    metric: str  # "median step time", "TTFT p99"
    unit: str
    baseline_label: str  # "local" or "alone"
    baseline: float | None
    measured: float | None
    slo: float | None
    verdict: str
    reason: str
    model: float | None = None
    model_verdict: str | None = None
    stop_km: float | None = None
    stop_note: str = ""
    n: int = 0
    n_baseline: int = 0
    ci_low: float | None = None
    ci_high: float | None = None
    baseline_ci_low: float | None = None
    baseline_ci_high: float | None = None
    slowdown: float | None = None
    slowdown_ci_low: float | None = None
    slowdown_ci_high: float | None = None
    needed_n: int | None = None
    capacity_limited: bool = False
    model_error: float | None = None  # (model - measured) / measured
    stop_rate_mbps: float | None = None  # the model: below this WAN rate it stops tolerating at this distance
    mechanism: str = ""  # which corridor term dominates, in numbers
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def step_times_s(records: Iterable[Mapping[str, Any]]) -> list[float]:
    """Per-step time (the slowest rank of each step, per point), warm-up step dropped; in step order."""
    return step_samples(list(records))[0]


def slo_of(workload: Mapping[str, Any]) -> Any:
    """The SLO dataclass of a workload as the manifest stores it."""
    return registry.get(str(workload.get("kind"))).slo_from_manifest(workload.get("slo", {}))


def _wan_key(point: Mapping[str, Any]) -> tuple[Any, ...]:
    sweep = point.get("sweep", {})
    return tuple(sweep.get(a) for a in WAN_AXES)


def _host_key(point: Mapping[str, Any]) -> tuple[Any, ...]:
    sweep = point.get("sweep", {})
    return tuple(sweep.get(a) for a in ("cc", "time_scale", "backend"))


def _fmt_ms(value: float) -> str:
    return f"{value:,.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"


def compute_verdicts(run: RunDir) -> list[Verdict]:
    """Every verdict of a run, in experiment order (workloads, then tenant groups)."""
    exp = run.experiment
    workloads = {w["name"]: w for w in exp.get("workloads", [])}
    tenants = {t["name"]: t for t in exp.get("tenants", [])}
    placements = [p["name"] for p in exp.get("placements", [])]
    # (placement, group, wan, host) -> finished point ids (repetitions pooled)
    cells: dict[tuple[Any, ...], list[str]] = {}
    order: list[tuple[Any, ...]] = []
    unhealthy: dict[tuple[Any, ...], list[str]] = {}
    for pid, marker in run.points.items():
        key = (str(marker.get("placement")), str(marker.get("group")), _wan_key(marker), _host_key(marker))
        health = marker.get("link_health")
        if isinstance(health, Mapping) and health.get("ok") is False:
            # a point whose link misbehaved is evidence of the emulator, not of the corridor: never judged
            bad = [name for name, h in (health.get("links") or {}).items() if not (h or {}).get("ok", True)]
            unhealthy.setdefault(key, []).append(f"{pid}: link {', '.join(bad) or '?'} misbehaved")
            continue
        cells.setdefault(key, []).append(pid)
    for planned in [*run.planned_points, *run.points.values()]:
        key = (str(planned.get("placement")), str(planned.get("group")), _wan_key(planned), _host_key(planned))
        if key not in order:
            order.append(key)
    by_point: dict[str, list[dict[str, Any]]] = {}
    for record in run.records:
        record_point = record.get("point_id")
        if record_point is not None:
            by_point.setdefault(str(record_point), []).append(record)

    def records_for(key: tuple[Any, ...] | None, workload: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for pid in cells.get(key, []) if key is not None else []:
            out.extend(r for r in by_point.get(pid, []) if r.get("workload") == workload)
        return out

    def failures(key: tuple[Any, ...] | None) -> list[str]:
        if key is None:
            return []
        return [str(run.points[p].get("error") or "failed") for p in cells.get(key, [])
                if run.points[p].get("status") != "ok"] + [f"not judged: {u}" for u in unhealthy.get(key, [])]

    def prediction(key: tuple[Any, ...], workload: str) -> dict[str, Any]:
        for r in records_for(key, workload):
            if r.get("kind") == schema.PREDICTION:
                return r
        return {}

    def plan_of(key: tuple[Any, ...]) -> dict[str, Any]:
        for pid in cells.get(key, []):
            return dict(run.points[pid].get("plan") or {})
        return {}

    def judge(w: Mapping[str, Any], label: str, group: str, placement: str, key: tuple[Any, ...],
              measured_key: tuple[Any, ...], measured_workload: str, base_key: tuple[Any, ...] | None,
              base_label: str, *, kind_label: str | None = None) -> Verdict:
        kind = registry.get(str(w.get("kind")))
        slo = kind.slo_from_manifest(w.get("slo", {}))
        measured = kind.samples(records_for(measured_key, measured_workload), slo)
        j = kind.judge(slo, measured, kind.samples(records_for(base_key, measured_workload), slo),
                       baseline_label=base_label)
        pred, plan = prediction(key, measured_workload), plan_of(key)
        mechanism = kind.explain(j, measured, pred, plan) if base_label == "local" else ""
        return _verdict(w, label, group, placement, key, j, base_label, pred, plan,
                        failures(key) + failures(base_key), kind_label=kind_label, mechanism=mechanism)

    verdicts: list[Verdict] = []
    local_keys = [k for k in order if k[0] == LOCAL_PLACEMENT]
    for key in order:
        placement, group = str(key[0]), str(key[1])
        if key not in cells and key not in unhealthy:
            continue
        if group in workloads and placement != LOCAL_PLACEMENT:
            local_key = next((k for k in local_keys if k[1] == group and k[3] == key[3]), None)
            verdicts.append(judge(workloads[group], group, group, placement, key, key, group, local_key, "local"))
        elif group in tenants:
            victim = str(tenants[group]["victim"])
            others = [w for w in tenants[group]["workloads"] if w != victim]
            alone_key = (placement, victim, key[2], key[3])
            label = f"{victim} with {', '.join(others)}"
            verdicts.append(judge(workloads[victim], label, group, placement, key, key, victim, alone_key, "alone",
                                  kind_label="tenants"))
    order_index = {p: i for i, p in enumerate(placements)}
    return sorted(verdicts, key=lambda v: (v.kind == "tenants", order_index.get(v.placement, 0)))


def _model_value(j: Judgement, pred: Mapping[str, Any]) -> float | None:
    """The model's figure for the row's statistic, in the row's unit (ms).

    Kinds name the compared statistic ``statistic_s`` among their model figures;
    runs recorded before that carried only the step time or TTFT.
    """
    keys: tuple[str, ...] = ("model_statistic_s",
                             "model_step_time_s" if j.metric.endswith("step time") else "model_ttft_s")
    if j.metric == "mean step time":
        # a row judged on its mean step (outer syncs); runs recorded before that stored the median as statistic
        keys = ("model_mean_step_time_s", *keys)
    for key in keys:
        value = pred.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value) * 1e3
    return None


def _verdict(w: Mapping[str, Any], label: str, group: str, placement: str, key: tuple[Any, ...], j: Judgement,
             base_label: str, pred: Mapping[str, Any], plan: Mapping[str, Any], failed: Sequence[str], *,
             kind_label: str | None, mechanism: str = "") -> Verdict:
    sweep = dict(zip(WAN_AXES, key[2], strict=True))
    # the model predicts a workload alone: beside a tenant row (the victim sharing the corridor) it would be
    # compared with a figure it never claimed, so it is left out there
    model = _model_value(j, pred) if kind_label != "tenants" else None
    reason = j.reason
    verdict = j.verdict
    model_error = None
    if model is not None and j.value:
        model_error = (model - j.value) / j.value
        if abs(model_error) > MODEL_AGREEMENT:
            reason += f"; the model ({_fmt_ms(model)}) differs from the measurement by {model_error * 100:+.0f} %"
    if failed:
        reason += "; failed points: " + "; ".join(sorted(set(failed)))[:300]
        if verdict != NO_DATA and j.n == 0:
            verdict = NO_DATA
    return Verdict(
        workload=label, group=group, kind=kind_label or str(w.get("kind")), type=str(w.get("type")),
        placement=placement, corridor=_corridor_label(sweep, plan), sweep=sweep,
        rtt_ms=plan.get("max_rtt_ms"), path_km=plan.get("max_path_km"), metric=j.metric, unit=j.unit,
        baseline_label=base_label, baseline=j.baseline, measured=j.value, slo=j.slo, verdict=verdict,
        reason=reason, model=model, model_verdict=pred.get("model_verdict"), stop_km=pred.get("stop_km"),
        stop_note=str(pred.get("note", "") or pred.get("error", "") or ""), n=j.n, n_baseline=j.baseline_n,
        ci_low=j.low, ci_high=j.high, baseline_ci_low=j.baseline_low, baseline_ci_high=j.baseline_high,
        slowdown=j.ratio, slowdown_ci_low=j.ratio_low, slowdown_ci_high=j.ratio_high, needed_n=j.needed_n,
        capacity_limited=j.capacity_limited, model_error=model_error, stop_rate_mbps=pred.get("stop_rate_mbps"),
        mechanism=mechanism, extra=dict(j.extra),
    )


def _corridor_label(sweep: Mapping[str, Any], plan: Mapping[str, Any]) -> str:
    parts = []
    # the distances topo show prints for the same links: great circle, and fibre where the model derived it
    gc, fibre = plan.get("great_circle_km"), plan.get("fibre_km")
    if sweep.get("distance_km") is not None:  # the swept distance is fibre length (delay at 4.90 us/km)
        parts.append(f"{float(sweep['distance_km']):,.0f} km fibre")
    elif gc:
        parts.append(f"{gc:,.0f} km great circle" + (f" ({fibre:,.0f} km fibre)" if fibre else ""))
    elif fibre:
        parts.append(f"{fibre:,.0f} km fibre")
    rtt = plan.get("max_rtt_ms")
    if rtt:
        parts.append(f"RTT {rtt:.1f} ms")
    rate = plan.get("min_rate_mbps")
    if rate:
        from corridor.spec.units import format_rate

        parts.append(format_rate(float(rate)))
    loss = float(plan.get("path_loss") or 0.0)
    if loss:
        parts.append(f"loss {loss:g}")
    if sweep.get("delay_scale") is not None:
        parts.append(f"delay x{sweep['delay_scale']:g}")
    return ", ".join(parts) or "as specified"


# -- output -------------------------------------------------------------------------


def summary_paragraph(verdicts: Sequence[Verdict]) -> str:
    """A few sentences written from the verdicts' numbers: what tolerates, what does not and why, what is open."""
    rows = [v for v in verdicts if v.kind != "tenants" and v.verdict != NO_DATA]
    if not rows:
        return "No workload has a verdict yet: no point with data finished."
    by: dict[str, list[Verdict]] = {}
    for v in rows:
        by.setdefault(v.verdict, []).append(v)
    sentences: list[str] = []
    corridor = rows[0].corridor
    if len({v.corridor for v in rows}) == 1 and corridor != "as specified":
        sentences.append(f"Across the corridor ({corridor}):")

    def figure(v: Verdict) -> str:
        if v.slowdown is not None and v.metric.endswith("step time"):
            return f"{v.workload} ({(v.slowdown - 1) * 100:+.0f} % {v.metric})"
        if v.measured is not None and v.slo:
            return f"{v.workload} ({v.metric} {v.measured:,.0f} ms of a {v.slo:,.0f} ms SLO)"
        return v.workload

    for word, lead in (("tolerates", "tolerate remote placement"), ("marginal", "are marginal"),
                       ("does not tolerate", "do not tolerate it")):
        group = by.get(word, [])
        if group:
            sentences.append(f"{', '.join(figure(v) for v in group)} {lead}.")
    for v in by.get("does not tolerate", []):
        if v.mechanism:
            sentences.append(f"{v.workload}: {v.mechanism.split('; ')[0]}; {v.mechanism.split('; ')[-1]}.")
    capacity = [v.workload for v in rows if v.capacity_limited]
    if capacity:
        sentences.append(f"The local baseline itself misses the SLO for {', '.join(capacity)}: capacity, not "
                         "placement, and those rows judge the placement by its slowdown against the baseline.")
    open_rows = by.get("inconclusive", [])
    if open_rows:
        more = ", ".join(f"{v.workload} (about {v.needed_n} samples)" if v.needed_n else v.workload
                         for v in open_rows)
        sentences.append(f"Still undecided: {more}.")
    off = [v for v in rows if v.model_error is not None and abs(v.model_error) > MODEL_AGREEMENT]
    if off:
        sentences.append("The model differs from the measurement by more than 15 % for "
                         + ", ".join(f"{v.workload} ({(v.model_error or 0.0) * 100:+.0f} %)" for v in off) + ".")
    else:
        sentences.append("The model agrees with every measured row within 15 %.")
    return " ".join(sentences)


# -- output -------------------------------------------------------------------------

TABLE_COLUMNS = ("workload", "placement", "corridor", "verdict", "n", "metric", "measured [95 % CI]", "model",
                 "stops tolerating at", "reason")


def _ci(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    if low is None or high is None:
        return _fmt_ms(value)
    return f"{_fmt_ms(value)} [{low:,.0f}-{high:,.0f}]" if value >= 10 else f"{_fmt_ms(value)} [{low:.1f}-{high:.1f}]"


def table_rows(verdicts: Sequence[Verdict]) -> list[dict[str, str]]:
    rows = []
    for v in verdicts:
        model = ""
        if v.model is not None:
            model = _fmt_ms(v.model) + (f" ({v.model_verdict})" if v.model_verdict else "")
        if v.stop_km:
            stop = f"{v.stop_km:,.0f} km"
        else:
            stop = v.stop_note.replace("model: ", "") or "-"
        n = f"{v.n}/{v.n_baseline}" if v.n_baseline else str(v.n)
        measured = _ci(v.measured, v.ci_low, v.ci_high)
        if v.stop_rate_mbps or (v.stop_km and "needs" in v.stop_note):
            stop = v.stop_note.replace("model: ", "")
        rows.append({"workload": v.workload, "placement": v.placement, "corridor": v.corridor,
                     "verdict": v.verdict, "n": n, "metric": v.metric,
                     "measured [95 % CI]": measured, "model": model or "-", "stops tolerating at": stop,
                     "reason": v.reason})
    return rows


COMPACT_COLUMNS = ("workload", "placement", "verdict", "n", "metric", "measured [95 % CI]")


def format_compact(verdicts: Sequence[Verdict], *, columns: int = 100) -> str:
    """The table that fits ``columns``: one row per verdict, the reason and mechanism wrapped beneath it."""
    import textwrap

    rows = table_rows(verdicts)
    if not rows:
        return "(no verdicts: no finished points)"
    cols = list(COMPACT_COLUMNS)
    cells = [{c: r[c] for c in cols} for r in rows]
    widths = {c: max(len(c), *(len(cell[c]) for cell in cells)) for c in cols}

    def over() -> int:
        return sum(widths[c] for c in cols) + 2 * (len(cols) - 1) - columns

    if over() > 0:  # the metric is in each row's reason too: the first thing to go on a narrow terminal
        cols.remove("metric")
    for c, floor in (("placement", 10), ("workload", 10), ("measured [95 % CI]", 12), ("placement", 6),
                     ("workload", 6)):
        if over() > 0:
            widths[c] = max(floor, widths[c] - over())

    def fit(text: str, n: int) -> str:
        return text if len(text) <= n else text[: max(1, n - 1)] + "~"

    lines = ["  ".join(fit(c, widths[c]).ljust(widths[c]) for c in cols).rstrip(),
             "  ".join("-" * widths[c] for c in cols)]
    for v, cell in zip(verdicts, cells, strict=True):
        lines.append("  ".join(fit(cell[c], widths[c]).ljust(widths[c]) for c in cols).rstrip())
        for text in (v.reason, v.mechanism):
            if text:
                lines.extend(textwrap.wrap(text, columns, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)


def format_table(verdicts: Sequence[Verdict], *, width: int = 60) -> str:
    """The wide plain-text table: every column (the reason wraps at ``width``)."""
    rows = table_rows(verdicts)
    if not rows:
        return "(no verdicts: no finished points)"
    import textwrap

    cols = list(TABLE_COLUMNS)
    wrap = {"reason": width, "stops tolerating at": 24, "measured [95 % CI]": 20, "model": 22, "workload": 22,
            "corridor": 20, "metric": 12}
    wrapped = [{c: textwrap.wrap(r[c], wrap[c]) if c in wrap else [r[c]] for c in cols} for r in rows]
    widths = {c: max(len(c), *(max((len(x) for x in w[c]), default=0) for w in wrapped)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols).rstrip(), "  ".join("-" * widths[c] for c in cols)]
    for w in wrapped:
        height = max(len(w[c]) for c in cols)
        for i in range(height):
            lines.append("  ".join((w[c][i] if i < len(w[c]) else "").ljust(widths[c]) for c in cols).rstrip())
    return "\n".join(lines)


def to_markdown(verdicts: Sequence[Verdict]) -> str:
    rows = table_rows(verdicts)
    cols = list(TABLE_COLUMNS)
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |")
    return "\n".join(out) + "\n"


CSV_COLUMNS = ("workload", "group", "kind", "type", "placement", "corridor", "rtt_ms", "path_km", "metric", "unit",
               "baseline_label", "baseline", "baseline_ci_low", "baseline_ci_high", "measured", "ci_low", "ci_high",
               "n", "n_baseline", "slowdown", "slowdown_ci_low", "slowdown_ci_high", "slo", "verdict", "needed_n",
               "capacity_limited", "reason", "mechanism", "model", "model_error", "model_verdict", "stop_km",
               "stop_rate_mbps", "stop_note")


def _flat_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in extra.items():
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                out[f"extra_{key}_{i}"] = item
        elif isinstance(value, Mapping):
            continue
        else:
            out[f"extra_{key}"] = value
    return out


def to_csv(verdicts: Sequence[Verdict]) -> str:
    """One flat row per verdict (extra figures as ``extra_*`` columns, no JSON cells)."""
    rows = []
    for v in verdicts:
        d = v.as_dict()
        rows.append({**{c: d[c] for c in CSV_COLUMNS}, **_flat_extra(d["extra"])})
    extra_cols = sorted({k for r in rows for k in r if k not in CSV_COLUMNS})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_COLUMNS, *extra_cols], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return buffer.getvalue()


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def to_json(verdicts: Sequence[Verdict]) -> str:
    """Strict JSON (no NaN): a list of verdict rows."""
    return json.dumps([_strict(v.as_dict()) for v in verdicts], indent=2, sort_keys=True, allow_nan=False)
