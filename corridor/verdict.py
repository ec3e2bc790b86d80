"""Placement verdicts: does a workload tolerate being placed across this corridor?

Stage: analysis (pure; reads a run directory, never re-runs anything, needs
neither root nor Mininet nor the workload modules). For each workload and each
placement other than the local baseline, at each combination of WAN sweep
values, the metric that matters is compared with the same workload on the
local baseline (same seed, same non-WAN sweep values) and with its SLO:

- training: step time (per step, the slowest rank; the mean over steps, so
  DiLoCo's outer sync every H steps is amortised; the first step dropped as
  warm-up when there are three or more); the slowdown
  against local is judged by the workload's ``max_slowdown`` and
  ``marginal_slowdown``; compute utilisation is reported alongside;
- inference: TTFT and TPOT at the SLO's percentile and goodput (the share of
  all requests that succeeded within both SLOs), judged against the SLO;
- tenant groups: the victim workload's figures while sharing the corridor,
  judged by its SLO and compared with the victim running alone.

Each verdict carries the analytic model's figure and the distance at which the
model says the workload stops tolerating the corridor (recorded by the runner
as ``prediction`` records).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from corridor.experiment import (
    DOES_NOT_TOLERATE,
    LOCAL_PLACEMENT,
    MARGINAL,
    TOLERATES,
    WAN_AXES,
    InferenceSlo,
    TrainingSlo,
)
from corridor.rundir import RunDir

NO_DATA = "no data"
#: Ordering for tables and the heatmap (worst last).
VERDICT_ORDER = (TOLERATES, MARGINAL, DOES_NOT_TOLERATE, NO_DATA)


@dataclass(frozen=True)
class Measurement:
    """Figures of one workload pooled over the repetitions of one placement and sweep combination."""

    kind: str  # "training" or "inference"
    n: int  # steps or requests measured
    step_time_s: float | None = None
    utilisation: float | None = None
    comm_time_s: float | None = None
    ttft_ms: float | None = None  # at the SLO percentile
    ttft_p50_ms: float | None = None
    tpot_ms: float | None = None
    goodput: float | None = None
    failed: int = 0
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """One row of the verdict table."""

    workload: str  # the workload, or "VICTIM with OTHERS" for a tenant group
    group: str  # workload or tenant-group name (the point's group)
    kind: str  # "training", "inference" or "tenants"
    type: str
    placement: str
    corridor: str  # the WAN sweep values in words
    sweep: dict[str, Any]
    rtt_ms: float | None
    path_km: float | None
    metric: str  # "step time", "TTFT p99"
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
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), the one used everywhere in analysis."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def step_times_s(records: Iterable[Mapping[str, Any]]) -> list[float]:
    """Per-step time (the slowest rank of each step, per point), warm-up step dropped; in step order."""
    by_step: dict[tuple[Any, int], float] = {}
    for r in records:
        if r.get("kind") != "train_step" or r.get("step_time_s") is None:
            continue
        key = (r.get("point_id"), int(r.get("step", 0)))
        by_step[key] = max(by_step.get(key, 0.0), float(r["step_time_s"]))
    out: list[float] = []
    for point in sorted({k[0] for k in by_step}, key=str):
        steps = sorted(k[1] for k in by_step if k[0] == point)
        if len(steps) >= 3:
            steps = steps[1:]
        out.extend(by_step[(point, s)] for s in steps)
    return out


def measure_training(records: Sequence[Mapping[str, Any]]) -> Measurement:
    steps = step_times_s(records)
    rows = [r for r in records if r.get("kind") == "train_step"]
    if not steps:
        collectives = [float(r["time_s"]) for r in records if r.get("kind") == "collective" and r.get("time_s")]
        if collectives:
            return Measurement("training", len(collectives), step_time_s=float(np.median(collectives)))
        return Measurement("training", 0)
    compute = sum(float(r.get("compute_time_s") or 0.0) for r in rows)
    total = sum(float(r.get("step_time_s") or 0.0) for r in rows)
    comm = [float(r["comm_time_s"]) for r in rows if r.get("comm_time_s") is not None]
    return Measurement(
        "training",
        len(steps),
        step_time_s=float(np.mean(steps)),
        utilisation=compute / total if total > 0 else None,
        comm_time_s=float(np.median(comm)) if comm else None,
    )


def measure_inference(records: Sequence[Mapping[str, Any]], slo: InferenceSlo) -> Measurement:
    requests = [r for r in records if r.get("kind") == "request"]
    if not requests:
        return Measurement("inference", 0)
    ok = [r for r in requests if r.get("ok") and r.get("ttft_s") is not None]
    ttft = [float(r["ttft_s"]) * 1e3 for r in ok]
    tpot = [float(r["tpot_s"]) * 1e3 for r in ok if r.get("tpot_s") is not None]
    good = sum(
        1
        for r in ok
        if float(r["ttft_s"]) * 1e3 <= slo.ttft_ms
        and (r.get("tpot_s") is None or float(r["tpot_s"]) * 1e3 <= slo.tpot_ms)
    )
    errors = tuple(sorted({str(r.get("error")) for r in requests if not r.get("ok") and r.get("error")}))[:3]
    return Measurement(
        "inference",
        len(requests),
        ttft_ms=percentile(ttft, slo.percentile) if ttft else None,
        ttft_p50_ms=percentile(ttft, 50) if ttft else None,
        tpot_ms=percentile(tpot, slo.percentile) if tpot else None,
        goodput=good / len(requests),
        failed=len(requests) - len(ok),
        errors=errors,
    )


def slo_of(workload: Mapping[str, Any]) -> TrainingSlo | InferenceSlo:
    """The SLO dataclass of a workload as the manifest stores it."""
    if workload.get("kind") == "training":
        return TrainingSlo(**workload.get("slo", {}))
    return InferenceSlo(**workload.get("slo", {}))


def _wan_key(point: Mapping[str, Any]) -> tuple[Any, ...]:
    sweep = point.get("sweep", {})
    return tuple(sweep.get(a) for a in WAN_AXES)


def _host_key(point: Mapping[str, Any]) -> tuple[Any, ...]:
    sweep = point.get("sweep", {})
    return tuple(sweep.get(a) for a in ("cc", "time_scale", "backend"))


def _fmt_ms(value: float) -> str:
    return f"{value:.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"


def _signed_ms(value: float) -> str:
    return ("+" if value >= 0 else "-") + _fmt_ms(abs(value))


def compute_verdicts(run: RunDir) -> list[Verdict]:
    """Every verdict of a run, in experiment order (workloads, then tenant groups)."""
    exp = run.experiment
    workloads = {w["name"]: w for w in exp.get("workloads", [])}
    tenants = {t["name"]: t for t in exp.get("tenants", [])}
    placements = [p["name"] for p in exp.get("placements", [])]
    # (placement, group, wan, host) -> finished point ids (repetitions pooled)
    cells: dict[tuple[Any, ...], list[str]] = {}
    order: list[tuple[Any, ...]] = []
    for pid, marker in run.points.items():
        key = (str(marker.get("placement")), str(marker.get("group")), _wan_key(marker), _host_key(marker))
        if key not in cells:
            cells[key] = []
        cells[key].append(pid)
    for planned in run.planned_points:
        key = (str(planned.get("placement")), str(planned.get("group")), _wan_key(planned), _host_key(planned))
        if key not in order:
            order.append(key)
    by_point: dict[str, list[dict[str, Any]]] = {}
    for record in run.records:
        record_point = record.get("point_id")
        if record_point is not None:
            by_point.setdefault(str(record_point), []).append(record)

    def records_for(key: tuple[Any, ...], workload: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for pid in cells.get(key, []):
            out.extend(r for r in by_point.get(pid, []) if r.get("workload") == workload)
        return out

    def measure(key: tuple[Any, ...], workload: str) -> Measurement:
        w = workloads[workload]
        recs = records_for(key, workload)
        slo = slo_of(w)
        m = measure_training(recs) if isinstance(slo, TrainingSlo) else measure_inference(recs, slo)
        failures = [run.points[p].get("error") for p in cells.get(key, []) if run.points[p].get("status") != "ok"]
        if failures:
            m = Measurement(**{**asdict(m), "errors": tuple(str(f) for f in failures if f) + m.errors})
        return m

    def prediction(key: tuple[Any, ...], workload: str) -> dict[str, Any]:
        for r in records_for(key, workload):
            if r.get("kind") == "prediction":
                return r
        return {}

    def plan_of(key: tuple[Any, ...]) -> dict[str, Any]:
        for pid in cells.get(key, []):
            return dict(run.points[pid].get("plan") or {})
        return {}

    verdicts: list[Verdict] = []
    local_keys = {k for k in order if k[0] == LOCAL_PLACEMENT}
    for key in order:
        placement, group, wan, host = str(key[0]), str(key[1]), key[2], key[3]
        if group in workloads and placement != LOCAL_PLACEMENT:
            local_key = next((k for k in local_keys if k[1] == group and k[3] == host), None)
            baseline = measure(local_key, group) if local_key else Measurement(workloads[group]["kind"], 0)
            verdicts.append(_judge(workloads[group], group, group, placement, key, measure(key, group), baseline,
                                   "local", prediction(key, group), plan_of(key)))
        elif group in tenants:
            victim = str(tenants[group]["victim"])
            others = [w for w in tenants[group]["workloads"] if w != victim]
            alone_key = (placement, victim, wan, host)
            label = f"{victim} with {', '.join(others)}"
            verdicts.append(_judge(workloads[victim], label, group, placement, key, measure(key, victim),
                                   measure(alone_key, victim), "alone", prediction(key, victim), plan_of(key),
                                   kind="tenants"))
    order_index = {p: i for i, p in enumerate(placements)}
    return sorted(verdicts, key=lambda v: (v.kind == "tenants", order_index.get(v.placement, 0)))


def _judge(
    w: Mapping[str, Any],
    label: str,
    group: str,
    placement: str,
    key: tuple[Any, ...],
    m: Measurement,
    base: Measurement,
    base_label: str,
    pred: Mapping[str, Any],
    plan: Mapping[str, Any],
    *,
    kind: str | None = None,
) -> Verdict:
    slo = slo_of(w)
    sweep = dict(zip(WAN_AXES, key[2], strict=True))
    corridor = _corridor_label(sweep, plan)
    common: dict[str, Any] = {
        "workload": label, "group": group, "kind": kind or str(w.get("kind")), "type": str(w.get("type")),
        "placement": placement, "corridor": corridor, "sweep": sweep,
        "rtt_ms": plan.get("max_rtt_ms"), "path_km": plan.get("max_path_km"),
        "baseline_label": base_label, "n": m.n,
        "stop_km": pred.get("stop_km"), "stop_note": str(pred.get("note", "") or pred.get("error", "") or ""),
        "model_verdict": pred.get("model_verdict"),
    }
    if isinstance(slo, TrainingSlo):
        common.update(metric="step time", unit="ms", slo=None, model=_ms(pred.get("model_step_time_s")))
        if m.step_time_s is None or base.step_time_s is None:
            why = "; ".join(m.errors or base.errors) or "no step records"
            return Verdict(**common, baseline=_ms(base.step_time_s), measured=_ms(m.step_time_s), verdict=NO_DATA,
                           reason=f"no data ({'baseline' if m.step_time_s else 'measurement'}): {why}")
        slowdown = m.step_time_s / base.step_time_s
        verdict = slo.judge(slowdown)
        allowance = (slo.max_slowdown - 1) * 100
        where = {TOLERATES: f"within the {allowance:.0f} % allowance",
                 MARGINAL: f"over the {allowance:.0f} % allowance, within {(slo.marginal_slowdown - 1) * 100:.0f} %",
                 DOES_NOT_TOLERATE: f"over the {(slo.marginal_slowdown - 1) * 100:.0f} % limit"}[verdict]
        reason = (f"step time {_fmt_ms(m.step_time_s * 1e3)} vs {_fmt_ms(base.step_time_s * 1e3)} {base_label} "
                  f"({(slowdown - 1) * 100:+.1f} %), {where}")
        if m.utilisation is not None:
            reason += f"; compute utilisation {m.utilisation * 100:.0f} %"
        return Verdict(**common, baseline=base.step_time_s * 1e3, measured=m.step_time_s * 1e3, verdict=verdict,
                       reason=reason, extra={"slowdown": slowdown, "utilisation": m.utilisation,
                                             "local_utilisation": base.utilisation})
    metric = f"TTFT p{slo.percentile:g}"
    common.update(metric=metric, unit="ms", slo=slo.ttft_ms, model=_ms(pred.get("model_ttft_s")))
    if m.ttft_ms is None:
        why = "; ".join(m.errors) or "no successful requests"
        return Verdict(**common, baseline=base.ttft_ms, measured=None, verdict=NO_DATA, reason=f"no data: {why}")
    verdict = slo.judge(m.ttft_ms, m.tpot_ms, m.goodput)
    parts = []
    if base.ttft_ms is not None:
        parts.append(f"{metric} {_signed_ms(m.ttft_ms - base.ttft_ms)} vs {base_label} "
                     f"({_fmt_ms(m.ttft_ms)} vs {_fmt_ms(base.ttft_ms)})")
    else:
        parts.append(f"{metric} {_fmt_ms(m.ttft_ms)} ({base_label} baseline missing)")
    parts[-1] += (", within" if m.ttft_ms <= slo.ttft_ms else ", over") + f" the {_fmt_ms(slo.ttft_ms)} SLO"
    if base_label == "alone" and m.ttft_p50_ms is not None and base.ttft_p50_ms is not None:
        # The median shows a shared queue's steady cost even where the tail is dominated by noise.
        parts.append(f"median {_signed_ms(m.ttft_p50_ms - base.ttft_p50_ms)} vs alone")
    if m.tpot_ms is not None:
        within = "within" if m.tpot_ms <= slo.tpot_ms else "over"
        parts.append(f"TPOT p{slo.percentile:g} {_fmt_ms(m.tpot_ms)} ({within} {_fmt_ms(slo.tpot_ms)})")
    if m.goodput is not None:
        parts.append(f"goodput {m.goodput * 100:.0f} %" + (" (below target)" if m.goodput < slo.goodput else ""))
    if m.failed:
        parts.append(f"{m.failed} of {m.n} requests failed")
    return Verdict(**common, baseline=base.ttft_ms, measured=m.ttft_ms, verdict=verdict, reason="; ".join(parts),
                   extra={"tpot_ms": m.tpot_ms, "baseline_tpot_ms": base.tpot_ms, "goodput": m.goodput,
                          "baseline_goodput": base.goodput, "ttft_p50_ms": m.ttft_p50_ms,
                          "baseline_ttft_p50_ms": base.ttft_p50_ms})


def _ms(seconds: Any) -> float | None:
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds):
        return float(seconds) * 1e3
    return None


def _corridor_label(sweep: Mapping[str, Any], plan: Mapping[str, Any]) -> str:
    parts = []
    km = plan.get("max_path_km")
    if km:
        parts.append(f"{km:,.0f} km")
    rtt = plan.get("max_rtt_ms")
    if rtt:
        parts.append(f"RTT {rtt:.1f} ms")
    rate = plan.get("min_rate_mbps")
    if rate:
        from corridor.units import format_rate

        parts.append(format_rate(float(rate)))
    loss = float(plan.get("path_loss") or 0.0)
    if loss:
        parts.append(f"loss {loss:g}")
    if sweep.get("delay_scale") is not None:
        parts.append(f"delay x{sweep['delay_scale']:g}")
    return ", ".join(parts) or "as specified"


# -- output -------------------------------------------------------------------------

TABLE_COLUMNS = ("workload", "placement", "corridor", "verdict", "reason", "model", "stops tolerating at")


def table_rows(verdicts: Sequence[Verdict]) -> list[dict[str, str]]:
    rows = []
    for v in verdicts:
        model = ""
        if v.model is not None:
            model = f"{v.metric.split()[0]} {_fmt_ms(v.model)}" + (f" ({v.model_verdict})" if v.model_verdict else "")
        if v.stop_km:
            stop = f"{v.stop_km:,.0f} km"
        else:
            stop = v.stop_note.replace("model: ", "") or "-"
        rows.append({"workload": v.workload, "placement": v.placement, "corridor": v.corridor, "verdict": v.verdict,
                     "reason": v.reason, "model": model or "-", "stops tolerating at": stop})
    return rows


def format_table(verdicts: Sequence[Verdict], *, width: int = 60) -> str:
    """A plain-text table for the terminal (the reason wraps at ``width``)."""
    rows = table_rows(verdicts)
    if not rows:
        return "(no verdicts: no finished points)"
    import textwrap

    cols = list(TABLE_COLUMNS)
    wrapped = [{c: textwrap.wrap(r[c], width) if c == "reason" else [r[c]] for c in cols} for r in rows]
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
               "baseline_label", "baseline", "measured", "slo", "verdict", "reason", "model", "model_verdict",
               "stop_km", "stop_note", "n")


def to_csv(verdicts: Sequence[Verdict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_COLUMNS, "extra"], lineterminator="\n")
    writer.writeheader()
    for v in verdicts:
        d = v.as_dict()
        writer.writerow({**{c: d[c] for c in CSV_COLUMNS}, "extra": json.dumps(d["extra"], sort_keys=True)})
    return buffer.getvalue()


def to_json(verdicts: Sequence[Verdict]) -> str:
    return json.dumps([v.as_dict() for v in verdicts], indent=2, sort_keys=True)
