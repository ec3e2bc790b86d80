"""The ``inference`` workload kind: LLM serving judged by TTFT and TPOT at the SLO's percentile.

Stage: spec/analysis plug-in (pure at import; the agents are imported only in
:meth:`InferenceKind.run`). The compared statistics are TTFT and TPOT at the
SLO's percentile over the successful requests of every repetition, each with a
95 % bootstrap interval, and goodput (the share of all requests, failed ones
included, within both SLOs) with its Wilson interval.

Two cases:

- the local baseline meets the SLO: the placement is judged against the SLO on
  the intervals (tolerates when the whole interval is within
  ``marginal_fraction`` of the SLO, marginal when wholly between that and the
  SLO, does not tolerate when wholly over it, otherwise inconclusive);
- the baseline itself misses the SLO (its interval wholly over it, or its
  goodput wholly under the target): that is a capacity problem, not a placement
  one, so the placement is judged by its slowdown against the baseline on the
  same percentile, with :data:`CAPACITY_SLOWDOWN` as the limits, and the row says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from corridor import stats
from corridor.workloads.kind import (
    DOES_NOT_TOLERATE,
    INCONCLUSIVE,
    MARGINAL,
    NO_DATA,
    STALL_THRESHOLD_S,
    TOLERATES,
    Judgement,
    ModuleBackedKind,
    combine,
    interval_verdict,
)
from corridor.workloads.placement import role_hosts
from corridor.workloads.training.kind import needed_samples

_SLO_KEYS = {"ttft", "tpot", "percentile", "goodput", "marginal_fraction"}
#: When the baseline misses the SLO, the placement tolerates while it adds at most 10 % to the baseline's
#: percentile and is marginal up to 50 % (the same defaults as training's slowdown limits).
CAPACITY_SLOWDOWN = (1.10, 1.50)


@dataclass(frozen=True)
class InferenceSlo:
    """Inference tolerates a corridor while the TTFT/TPOT percentile and goodput meet the SLO.

    Within the SLO but above ``marginal_fraction`` of it is "marginal".
    Defaults are DistServe's 13B chat SLO (TTFT 0.25 s, TPOT 0.1 s).
    """

    ttft_ms: float = 250.0
    tpot_ms: float = 100.0
    percentile: float = 99.0
    goodput: float = 0.90
    marginal_fraction: float = 0.80

    def judge(self, ttft_ms: float, tpot_ms: float | None, goodput: float | None = None) -> str:
        """Point figures (ms, fraction) -> verdict; the model's verdict uses this."""
        over = ttft_ms > self.ttft_ms or (tpot_ms is not None and tpot_ms > self.tpot_ms)
        if over or (goodput is not None and goodput < self.goodput):
            return DOES_NOT_TOLERATE
        near = ttft_ms > self.marginal_fraction * self.ttft_ms or (
            tpot_ms is not None and tpot_ms > self.marginal_fraction * self.tpot_ms
        )
        return MARGINAL if near else TOLERATES


def _fmt(ms: float) -> str:
    return f"{ms:,.0f} ms" if abs(ms) >= 10 else f"{ms:.1f} ms"


def _signed(ms: float) -> str:
    return ("+" if ms >= 0 else "-") + _fmt(abs(ms))


def baseline_word(j: Judgement) -> str:
    return "the baseline" if j.capacity_limited else "local"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class InferenceKind(ModuleBackedKind):
    """LLM serving: chat, agentic chains, RAG, batch, disaggregated prefill/decode, request traces."""

    name = "inference"

    def module(self) -> ModuleType:
        """The run-time module (agents, processes); imported only when a workload runs or is predicted."""
        from corridor.workloads.inference import run as inference
        return inference

    def scaled(self, params: Any, factor: float) -> Any:
        """Scale model (corridor.planning.scale): KV bytes per token (through the model shape) and the tool, RAG and
        prompt payloads / factor; token counts, compute and time per output token kept."""
        from corridor.planning.scale import scaled_size

        return dataclasses.replace(
            params,
            kv_scale=params.kv_scale * factor,
            prompt_bytes_per_token=scaled_size(params.prompt_bytes_per_token, factor),
            tool_request_bytes=scaled_size(params.tool_request_bytes, factor),
            tool_response_bytes=scaled_size(params.tool_response_bytes, factor),
            rag_doc_bytes=scaled_size(params.rag_doc_bytes, factor),
        )

    def parse_slo(self, value: Mapping[str, Any], *, path: str, where: str) -> InferenceSlo:
        from corridor.spec.experiment import _duration_ms, _float, _unknown

        _unknown(value, _SLO_KEYS, path, where)
        return InferenceSlo(
            ttft_ms=_duration_ms(value.get("ttft", "250ms"), path, f"{where}.ttft", 0.001, 3_600_000.0),
            tpot_ms=_duration_ms(value.get("tpot", "100ms"), path, f"{where}.tpot", 0.001, 3_600_000.0),
            percentile=_float(value.get("percentile", 99), path, f"{where}.percentile", 1.0, 100.0),
            goodput=_float(value.get("goodput", 0.9), path, f"{where}.goodput", 0.0, 1.0),
            marginal_fraction=_float(value.get("marginal_fraction", 0.8), path, f"{where}.marginal_fraction",
                                     0.05, 1.0),
        )

    def slo_from_manifest(self, value: Mapping[str, Any]) -> InferenceSlo:
        names = {f.name for f in dataclasses.fields(InferenceSlo)}
        return InferenceSlo(**{k: v for k, v in value.items() if k in names})

    def hosts(self, plan: Any, placement: Any, workload: Any, *, role_names: Sequence[str] = ()) -> Any:
        return role_hosts(plan, placement, workload.max_ranks, role_names)

    def predict(self, params: Any, plan: Any, *, hosts: Any, time_scale: float = 1.0, slo: Any = None,
                seed: int | None = None) -> Mapping[str, Any]:
        """The serving simulation over the workload's own seeded schedule, at the SLO's percentile."""
        percentile = getattr(slo, "percentile", None)
        return dict(self.module().predict(params, plan, hosts=hosts, time_scale=time_scale, percentile=percentile,
                                          seed=seed))

    def model_figures(self, predicted: Mapping[str, Any], slo: Any) -> dict[str, float]:
        """TTFT and TPOT at the SLO's percentile where the model gives it, else its central figure."""
        pct = f"p{getattr(slo, 'percentile', 50.0):g}"
        out: dict[str, float] = {}
        for name in ("ttft", "tpot"):
            for key in (f"{name}_{pct}_s", f"{name}_s", f"{name}_p50_s", f"{name}_mean_s", f"predicted_{name}_s"):
                value = predicted.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    out[f"{name}_s"] = float(value)
                    out[f"{name}_is_percentile"] = 1.0 if key.endswith(f"_{pct}_s") else 0.0
                    break
        if "ttft_s" in out:
            out["statistic_s"] = out["ttft_s"]
        return out

    def model_verdict(self, slo: InferenceSlo, remote: Mapping[str, float], local: Mapping[str, float]) -> str | None:
        if "ttft_s" not in remote:
            return None
        tpot = remote.get("tpot_s")
        local_ttft = local.get("ttft_s")
        if local_ttft is not None and local_ttft * 1e3 > slo.ttft_ms:
            # the model's baseline misses the SLO too: judge the placement by its slowdown, as the verdict does
            ratio = remote["ttft_s"] / local_ttft if local_ttft > 0 else math.inf
            low, high = CAPACITY_SLOWDOWN
            return TOLERATES if ratio <= low else MARGINAL if ratio <= high else DOES_NOT_TOLERATE
        return slo.judge(remote["ttft_s"] * 1e3, tpot * 1e3 if tpot is not None else None)

    def samples(self, records: Sequence[Mapping[str, Any]], slo: Any) -> dict[str, list[float]]:
        requests = [r for r in records if r.get("kind") == "request"]
        ok = [r for r in requests if r.get("ok") and r.get("ttft_s") is not None]
        ttft = [float(r["ttft_s"]) * 1e3 for r in ok]
        tpot = [float(r["tpot_s"]) * 1e3 for r in ok if r.get("tpot_s") is not None]
        good = [1.0 if (r in ok and float(r["ttft_s"]) * 1e3 <= slo.ttft_ms
                        and (r.get("tpot_s") is None or float(r["tpot_s"]) * 1e3 <= slo.tpot_ms)) else 0.0
                for r in requests]
        stalled = [1.0 if float(r.get("sched_stall_s") or 0.0) > STALL_THRESHOLD_S else 0.0 for r in ok]
        return {"ttft_ms": ttft, "tpot_ms": tpot, "good": good, "stalled": stalled,
                "failed": [1.0 for r in requests if not (r.get("ok") and r.get("ttft_s") is not None)]}

    def explain(self, j: Judgement, measured: Mapping[str, list[float]], prediction: Mapping[str, Any],
                plan: Mapping[str, Any]) -> str:
        """TTFT over the baseline in round trips of the corridor's RTT, and the KV cache's bytes / rate."""
        rtt_ms = plan.get("max_rtt_ms")
        if j.value is None or j.baseline is None or not rtt_ms:
            return ""
        added = j.value - j.baseline
        kv = prediction.get("predicted.kv_bytes")
        kv_rate = prediction.get("predicted.kv_rate_mbps")
        kv_ms = 0.0
        kv_mb = 0.0
        if isinstance(kv, (int, float)) and isinstance(kv_rate, (int, float)) and kv_rate > 0:
            kv_ms = kv * 8 / (kv_rate * 1e6) * 1e3
            kv_mb = kv / 1e6
        trips = max(0.0, added - kv_ms) / float(rtt_ms)
        parts = [f"{j.metric} {added:+,.0f} ms over {baseline_word(j)}"]
        if kv_ms:
            parts.append(f"the KV cache, {kv_mb:,.0f} MB at {kv_rate:,.0f} Mbit/s, takes at least {kv_ms:,.0f} ms")
        parts.append(f"{'the rest is ' if kv_ms else ''}about {trips:.1f} round trips of {float(rtt_ms):.0f} ms")
        if kv_ms:
            parts.append("the KV transfer (bandwidth) dominates" if kv_ms > trips * float(rtt_ms)
                         else "the round trips (distance) dominate")
        if j.slo:
            parts.append(f"{j.value / j.slo * 100:.0f} % of the {j.slo:,.0f} ms SLO")
        return "; ".join(parts)

    def judge(self, slo: InferenceSlo, measured: Mapping[str, list[float]], baseline: Mapping[str, list[float]],
              *, baseline_label: str) -> Judgement:
        q = slo.percentile
        metric = f"TTFT p{q:g}"
        ttft, base_ttft = measured.get("ttft_ms", []), baseline.get("ttft_ms", [])
        good = measured.get("good", [])
        common: dict[str, Any] = {"metric": metric, "unit": "ms", "n": len(good), "baseline_n":
                                  len(baseline.get("good", [])), "slo": slo.ttft_ms}
        if not ttft:
            return Judgement(NO_DATA, "no successful requests", value=None, low=None, high=None, baseline=None,
                             baseline_low=None, baseline_high=None, **common)
        est = stats.bootstrap(ttft, q=q)
        tpot = measured.get("tpot_ms", [])
        tpot_est = stats.bootstrap(tpot, q=q) if tpot else None
        base = stats.bootstrap(base_ttft, q=q) if base_ttft else None
        base_tpot = baseline.get("tpot_ms", [])
        base_tpot_est = stats.bootstrap(base_tpot, q=q) if base_tpot else None
        g_low, g_high = stats.wilson_interval(int(sum(good)), len(good))
        goodput = sum(good) / len(good) if good else math.nan
        base_good = baseline.get("good", [])
        bg_low, bg_high = stats.wilson_interval(int(sum(base_good)), len(base_good))
        extra: dict[str, Any] = {"tpot_ms": tpot_est.value if tpot_est else None,
                                 "tpot_ci_ms": [_finite(tpot_est.low), _finite(tpot_est.high)] if tpot_est else None,
                                 "baseline_tpot_ms": base_tpot_est.value if base_tpot_est else None,
                                 "goodput": goodput, "goodput_ci": [_finite(g_low), _finite(g_high)],
                                 "baseline_goodput": sum(base_good) / len(base_good) if base_good else None,
                                 "ttft_p50_ms": stats.median(ttft),
                                 "baseline_ttft_p50_ms": stats.median(base_ttft) if base_ttft else None,
                                 "failed": int(sum(measured.get("failed", [])))}
        capacity = False
        if base is not None and base.n >= 2:
            misses = (math.isfinite(base.low) and base.low > slo.ttft_ms) or (
                base_tpot_est is not None and math.isfinite(base_tpot_est.low) and base_tpot_est.low > slo.tpot_ms
            ) or (math.isfinite(bg_high) and bg_high < slo.goodput)
            capacity = bool(misses)
        parts: list[str] = []
        ratio = stats.bootstrap_ratio(ttft, base_ttft, q=q) if base_ttft else None
        needed: int | None = None
        if capacity and ratio is not None:
            low, high = CAPACITY_SLOWDOWN
            verdicts = [interval_verdict(ratio.low, ratio.high, low, high)]
            tpot_ratio = stats.bootstrap_ratio(tpot, base_tpot, q=q) if tpot and base_tpot else None
            if tpot_ratio is not None:
                verdicts.append(interval_verdict(tpot_ratio.low, tpot_ratio.high, low, high))
            verdict = combine(verdicts)
            assert base is not None
            parts.append(f"the {baseline_label} baseline misses the SLO ({metric} {_fmt(base.value)} vs "
                         f"{_fmt(slo.ttft_ms)}): capacity, not placement")
            parts.append(f"{metric} {_fmt(est.value)} vs {_fmt(base.value)} {baseline_label}: "
                         f"{(ratio.value - 1) * 100:+.0f} % [{(ratio.low - 1) * 100:+.0f}, "
                         f"{(ratio.high - 1) * 100:+.0f} %] (limit +{(low - 1) * 100:.0f} %)")
            if verdict == INCONCLUSIVE:
                needed = needed_samples(ratio, CAPACITY_SLOWDOWN)
        else:
            limit_ok = slo.marginal_fraction * slo.ttft_ms
            verdicts = [interval_verdict(est.low, est.high, limit_ok, slo.ttft_ms)] if est.n >= 2 else [INCONCLUSIVE]
            if tpot_est is not None and tpot_est.n >= 2:
                verdicts.append(interval_verdict(tpot_est.low, tpot_est.high, slo.marginal_fraction * slo.tpot_ms,
                                                 slo.tpot_ms))
            if math.isfinite(g_high) and g_high < slo.goodput:
                verdicts.append(DOES_NOT_TOLERATE)
            elif math.isfinite(goodput) and goodput < slo.goodput:
                verdicts.append(INCONCLUSIVE)
            verdict = combine(verdicts)
            head = f"{metric} {_fmt(est.value)} [{_fmt(est.low)}, {_fmt(est.high)}]" if est.n >= 2 else \
                f"{metric} {_fmt(est.value)}"
            if base is not None:
                head += f", {_signed(est.value - base.value)} vs {baseline_label}"
            where = "within" if est.value <= slo.ttft_ms else "over"
            parts.append(f"{head}, {where} the {_fmt(slo.ttft_ms)} SLO")
            if verdict == INCONCLUSIVE and est.n >= 2:
                needed = needed_samples(est, (limit_ok, slo.ttft_ms))
        if baseline_label == "alone" and base_ttft:
            parts.append(f"median {_signed(stats.median(ttft) - stats.median(base_ttft))} vs alone")
        if tpot_est is not None:
            within = "within" if tpot_est.value <= slo.tpot_ms else "over"
            parts.append(f"TPOT p{q:g} {_fmt(tpot_est.value)} ({within} {_fmt(slo.tpot_ms)})")
        if good:
            parts.append(f"goodput {goodput * 100:.0f} %" + (" (below target)" if goodput < slo.goodput else ""))
        if extra["failed"]:
            parts.append(f"{extra['failed']} of {len(good)} requests failed")
        if needed is not None:
            parts.append(f"about {needed} requests per side would decide")
        stalled = measured.get("stalled", [])
        n_stalled = int(sum(stalled))
        extra["stalled_requests"] = n_stalled
        if n_stalled and len(stalled) == len(ttft):
            clean = [t for t, s in zip(ttft, stalled, strict=True) if not s]
            if len(clean) >= 2:
                c = stats.bootstrap(clean, q=q)
                extra["ttft_without_stalls_ms"] = c.value
                noun = "request" if n_stalled == 1 else "requests"
                parts.append(f"without the {n_stalled} {noun} the host stalled: {metric} {_fmt(c.value)}")
        return Judgement(verdict, "; ".join(parts), value=est.value, low=_finite(est.low), high=_finite(est.high),
                         baseline=base.value if base else None, baseline_low=_finite(base.low) if base else None,
                         baseline_high=_finite(base.high) if base else None,
                         ratio=ratio.value if ratio else None, ratio_low=_finite(ratio.low) if ratio else None,
                         ratio_high=_finite(ratio.high) if ratio else None, needed_n=needed,
                         capacity_limited=capacity, extra=extra, **common)
