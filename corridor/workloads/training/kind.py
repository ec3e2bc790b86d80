"""The ``training`` workload kind: gradient synchronisation judged by step time against the local baseline.

Stage: spec/analysis plug-in (pure at import; the agents are imported only in
:meth:`TrainingKind.run`). The compared statistic is the MEDIAN step time: per
step the slowest rank (a step ends when every rank has its gradients), the first
step of each point dropped as warm-up when a point has three or more, steps of
every repetition pooled. The slowdown is the ratio of the placement's median to
the baseline's, with a 95 % bootstrap interval; the SLO's ``max_slowdown`` and
``marginal_slowdown`` are judged on that interval (:func:`interval_verdict`).

The median, not the mean: DiLoCo's outer sync every H steps, a ProbeRTT pause or
a host stall make one step long; the median is the step a job sees most, and the
model predicts it (``median_step_time_s``; the amortised mean is reported beside).
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
    interval_verdict,
)
from corridor.workloads.placement import balanced_hosts

_SLO_KEYS = {"max_slowdown", "marginal_slowdown"}


@dataclass(frozen=True)
class TrainingSlo:
    """Training tolerates a corridor while step time stays within ``max_slowdown`` x local."""

    max_slowdown: float = 1.10
    marginal_slowdown: float = 1.50

    def judge(self, slowdown: float) -> str:
        """A slowdown (placement / local) as a point figure -> tolerates, marginal or does not tolerate."""
        if slowdown <= self.max_slowdown:
            return TOLERATES
        if slowdown <= self.marginal_slowdown:
            return MARGINAL
        return DOES_NOT_TOLERATE


def step_samples(records: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[bool], list[int]]:
    """Per-step times (slowest rank), whether the host stalled any rank in that step, and the steps' WAN bytes.

    Steps are in point then step order; the first step of each point with three
    or more is dropped as warm-up.
    """
    times, stalled, wan_bytes, _, _ = step_samples_with_syncs(records)
    return times, stalled, wan_bytes


def step_samples_with_syncs(records: Sequence[Mapping[str, Any]]
                            ) -> tuple[list[float], list[bool], list[int], list[bool], list[int]]:
    """:func:`step_samples` and, per step, whether it carried an outer sync (DiLoCo's, a streaming fragment's)
    and which point (repetition) it belongs to, numbered from 0 in point order."""
    by_step: dict[tuple[str, int], float] = {}
    stall: dict[tuple[str, int], float] = {}
    wan: dict[tuple[str, int], int] = {}
    outer: dict[tuple[str, int], bool] = {}
    for r in records:
        if r.get("kind") != "train_step" or r.get("step_time_s") is None:
            continue
        key = (str(r.get("point_id")), int(r.get("step", 0)))
        by_step[key] = max(by_step.get(key, 0.0), float(r["step_time_s"]))
        stall[key] = max(stall.get(key, 0.0), float(r.get("sched_stall_s") or 0.0))
        wan[key] = wan.get(key, 0) + int(r.get("wan_bytes") or 0)
        outer[key] = outer.get(key, False) or bool(r.get("outer_sync"))
    times: list[float] = []
    stalled: list[bool] = []
    wan_bytes: list[int] = []
    syncs: list[bool] = []
    points: list[int] = []
    for index, point in enumerate(sorted({k[0] for k in by_step})):
        steps = sorted(k[1] for k in by_step if k[0] == point)
        if len(steps) >= 3:
            steps = steps[1:]
        for s in steps:
            times.append(by_step[(point, s)])
            stalled.append(stall[(point, s)] > STALL_THRESHOLD_S)
            wan_bytes.append(wan[(point, s)])
            syncs.append(outer[(point, s)])
            points.append(index)
    return times, stalled, wan_bytes, syncs, points


def _labels(samples: Mapping[str, list[float]], n: int) -> list[float] | None:
    """The repetition of each of ``n`` steps, or None where the samples do not say (one per step)."""
    labels = samples.get("repetition")
    return list(labels) if labels is not None and len(labels) == n else None


def _strata(times: Sequence[float], syncs: Sequence[float]) -> list[list[float]]:
    """Steps as two strata for the mean's interval: ordinary steps, and steps that carried an outer sync."""
    flags = list(syncs) + [0.0] * max(0, len(times) - len(syncs))
    pairs = list(zip(times, flags, strict=False))
    return [[t for t, o in pairs if not o], [t for t, o in pairs if o]]


def _fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:,.0f} ms" if abs(ms) >= 10 else f"{ms:.1f} ms"


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f} %" if abs(ratio - 1) >= 0.1 else f"{(ratio - 1) * 100:+.1f} %"


def needed_samples(est: stats.Estimate, boundaries: Sequence[float]) -> int | None:
    """Samples per side for ``est``'s interval to clear the nearest boundary (None if undefined)."""
    if est.n < 2 or not all(math.isfinite(x) for x in (est.value, est.low, est.high)):
        return None
    gap = min(abs(est.value - b) for b in boundaries)
    half = (est.high - est.low) / 2.0
    if half <= 0:
        return est.n
    if gap <= 0:
        return None  # the value sits on a boundary: no finite count decides it
    return int(math.ceil(est.n * (half / gap) ** 2))


class TrainingKind(ModuleBackedKind):
    """Distributed-training gradient synchronisation (see the module docstring)."""

    name = "training"

    def module(self) -> ModuleType:
        """The run-time module (agents, processes); imported only when a workload runs or is predicted."""
        from corridor.workloads.training import run as training
        return training

    def scaled(self, params: Any, factor: float) -> Any:
        """Scale model (corridor.planning.scale): gradients, activations and socket buffers / factor; compute kept."""
        from corridor.planning.scale import scaled_size

        buf = params.sock_buf_bytes
        return dataclasses.replace(
            params,
            grad_bytes=scaled_size(params.grad_bytes, factor),
            activation_bytes=scaled_size(params.activation_bytes, factor),
            # a socket buffer below a few packets is no window at all; the kernel's own floor is 4 KiB
            sock_buf_bytes=scaled_size(buf, factor, floor=4096) if buf is not None else None,
        )

    def parse_slo(self, value: Mapping[str, Any], *, path: str, where: str) -> TrainingSlo:
        from corridor.spec.experiment import _float, _unknown

        _unknown(value, _SLO_KEYS, path, where)
        max_slowdown = _float(value.get("max_slowdown", 1.10), path, f"{where}.max_slowdown", 1.0, 100.0)
        marginal = _float(value.get("marginal_slowdown", max(1.5, max_slowdown)), path,
                          f"{where}.marginal_slowdown", max_slowdown, 1000.0)
        return TrainingSlo(max_slowdown=max_slowdown, marginal_slowdown=marginal)

    def slo_from_manifest(self, value: Mapping[str, Any]) -> TrainingSlo:
        names = {f.name for f in dataclasses.fields(TrainingSlo)}
        return TrainingSlo(**{k: v for k, v in value.items() if k in names})

    def hosts(self, plan: Any, placement: Any, workload: Any, *, role_names: Sequence[str] = ()) -> list[str]:
        """The ordered rank list: GPU hosts of ``placement.ranks``, balanced across sites by ``max_ranks``."""
        return balanced_hosts(plan, placement.ranks, "gpu", workload.max_ranks, placement.name)

    def predict(self, params: Any, plan: Any, *, hosts: Any, time_scale: float = 1.0, slo: Any = None,
                seed: int | None = None) -> Mapping[str, Any]:
        return dict(self.module().predict(params, plan, hosts=hosts, time_scale=time_scale))

    def model_figures(self, predicted: Mapping[str, Any], slo: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        # a pattern with outer syncs is judged on its mean step (see judge), so its model figure is the mean
        synced = "outer_step_time_s" in predicted and "mean_step_time_s" in predicted
        order = ("mean_step_time_s",) if synced else (
            "median_step_time_s", "step_time_s", "mean_step_time_s", "predicted_step_time_s")
        for key in order:
            value = predicted.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out["step_time_s"] = float(value)
                out["statistic_s"] = float(value)
                break
        mean = predicted.get("mean_step_time_s")
        if isinstance(mean, (int, float)) and not isinstance(mean, bool) and math.isfinite(mean):
            out["mean_step_time_s"] = float(mean)
        compute = predicted.get("compute_s")
        per_step = out.get("mean_step_time_s") or out.get("step_time_s")
        if isinstance(compute, (int, float)) and not isinstance(compute, bool) and per_step:
            out["utilisation"] = float(compute) / per_step
        return out

    def model_verdict(self, slo: TrainingSlo, remote: Mapping[str, float], local: Mapping[str, float]) -> str | None:
        if "step_time_s" not in remote or not local.get("step_time_s"):
            return None
        return slo.judge(remote["step_time_s"] / local["step_time_s"])

    def samples(self, records: Sequence[Mapping[str, Any]], slo: Any) -> dict[str, list[float]]:
        times, stalled, wan, syncs, points = step_samples_with_syncs(records)
        if not times:
            # `bench collective` points: one record per size, its time is the figure
            times = [float(r["time_s"]) for r in records if r.get("kind") == "collective" and r.get("time_s")]
            stalled = [False] * len(times)
            wan = [0] * len(times)
            syncs = [False] * len(times)
            points = [0] * len(times)
        rows = [r for r in records if r.get("kind") == "train_step"]
        compute = sum(float(r.get("compute_time_s") or 0.0) for r in rows)
        total = sum(float(r.get("step_time_s") or 0.0) for r in rows)
        return {"step_time_s": times, "stalled": [1.0 if s else 0.0 for s in stalled],
                "wan_bytes": [float(w) for w in wan], "outer_sync": [1.0 if o else 0.0 for o in syncs],
                # the repetition each step came from: its steps share a loss draw (stats.bootstrap_clustered)
                "repetition": [float(p) for p in points],
                # a scale model's records are at full scale, its plan's rates at the emulated one
                "scale": [max((float(r.get("scale") or 1.0) for r in rows), default=1.0)],
                "utilisation": [compute / total] if total > 0 else []}

    def explain(self, j: Judgement, measured: Mapping[str, list[float]], prediction: Mapping[str, Any],
                plan: Mapping[str, Any]) -> str:
        return explain_training(j, measured, prediction, plan)

    def judge(self, slo: TrainingSlo, measured: Mapping[str, list[float]], baseline: Mapping[str, list[float]],
              *, baseline_label: str) -> Judgement:
        steps, base = measured.get("step_time_s", []), baseline.get("step_time_s", [])
        syncs, base_syncs = measured.get("outer_sync", []), baseline.get("outer_sync", [])
        # Outer syncs (DiLoCo every H steps, a streaming fragment every H/P) leave most steps pure compute:
        # a median would never see them. Such a workload is judged on its mean step, in which each sync is
        # amortised as in training, with each kind of step resampled on its own (corridor.stats).
        synced = any(syncs) or any(base_syncs)
        statistic = "mean" if synced else "median"
        common: dict[str, Any] = {"metric": f"{statistic} step time", "unit": "ms", "n": len(steps),
                                  "baseline_n": len(base)}
        if not steps or not base:
            missing = "measurement" if not steps else baseline_label + " baseline"
            return Judgement(NO_DATA, f"no step records ({missing})", value=None, low=None, high=None,
                             baseline=None, baseline_low=None, baseline_high=None, **common)

        whole = _strata(steps, syncs), _strata(base, base_syncs)
        reps, base_reps = _labels(measured, len(steps)), _labels(baseline, len(base))

        def estimates(a: Sequence[float], a_syncs: Sequence[float], a_reps: Sequence[float] | None,
                      b: Sequence[float], b_syncs: Sequence[float], b_reps: Sequence[float] | None
                      ) -> tuple[stats.Estimate, stats.Estimate, stats.Estimate]:
            if synced:
                sa, sb = _strata(a, a_syncs), _strata(b, b_syncs)
                # each kind of step counts for as many steps as the run had of it, however many are left
                wa, wb = [len(x) for x in whole[0]], [len(x) for x in whole[1]]
                return (stats.bootstrap_strata_mean(sa, weights=wa), stats.bootstrap_strata_mean(sb, weights=wb),
                        stats.bootstrap_strata_mean_ratio(sa, sb, weights=(wa, wb)))
            # a repetition's steps share its links' loss draw: repetitions are resampled, then steps within
            return (stats.bootstrap_clustered(a, a_reps, q=50), stats.bootstrap_clustered(b, b_reps, q=50),
                    stats.bootstrap_clustered_ratio(a, a_reps, b, b_reps, q=50))

        est, best, ratio = estimates(steps, syncs, reps, base, base_syncs, base_reps)
        if ratio.n >= 2:
            verdict = interval_verdict(ratio.low, ratio.high, slo.max_slowdown, slo.marginal_slowdown)
        else:
            verdict = INCONCLUSIVE
        allowance = (slo.max_slowdown - 1) * 100
        limit = (slo.marginal_slowdown - 1) * 100
        where = {TOLERATES: f"within the {allowance:.0f} % allowance",
                 MARGINAL: f"over the {allowance:.0f} % allowance, within the {limit:.0f} % limit",
                 DOES_NOT_TOLERATE: f"over the {limit:.0f} % limit",
                 INCONCLUSIVE: f"the interval spans the {allowance:.0f} % allowance or the {limit:.0f} % limit"}
        reason = (f"{statistic} step {_fmt_ms(est.value)} vs {_fmt_ms(best.value)} {baseline_label}: "
                  f"{_pct(ratio.value)}")
        if math.isfinite(ratio.low):
            reason += f" [{_pct(ratio.low)}, {_pct(ratio.high)}]"
        reason += f", {where[verdict]}"
        needed = needed_samples(ratio, (slo.max_slowdown, slo.marginal_slowdown)) if verdict == INCONCLUSIVE else None
        if needed is not None:
            reason += f"; about {needed} steps per side would decide"
        extra: dict[str, Any] = {"slowdown": ratio.value, "mean_step_time_ms": stats.mean(steps) * 1e3,
                                 "baseline_mean_step_time_ms": stats.mean(base) * 1e3}
        util = measured.get("utilisation") or []
        if util:
            extra["utilisation"] = util[0]
            reason += f"; compute utilisation {util[0] * 100:.0f} %"
        base_util = baseline.get("utilisation") or []
        extra["local_utilisation"] = base_util[0] if base_util else None
        stalled = measured.get("stalled", [])
        base_stalled = baseline.get("stalled", [])
        n_stalled = int(sum(stalled)) + int(sum(base_stalled))
        extra["stalled_steps"] = n_stalled
        if n_stalled:
            # A sync step waits on the network, and its comm thread's wait for a CPU reads as a stall: with
            # outer syncs only the ordinary steps are left out, or the syncs themselves would go.
            def kept(flags: Sequence[float], outer: Sequence[float], n: int) -> list[bool]:
                out = [not f for f in flags] + [True] * max(0, n - len(flags))
                if synced:
                    out = [k or bool(o) for k, o in zip(out, list(outer) + [0.0] * (n - len(outer)), strict=False)]
                return out

            keep, keep_base = kept(stalled, syncs, len(steps)), kept(base_stalled, base_syncs, len(base))
            n_stalled = keep.count(False) + keep_base.count(False)
            clean = [t for t, k in zip(steps, keep, strict=False) if k]
            clean_base = [t for t, k in zip(base, keep_base, strict=False) if k]
            if n_stalled and len(clean) >= 2 and len(clean_base) >= 2:
                def kept_labels(labels: Sequence[float] | None, flags: Sequence[bool]) -> list[float] | None:
                    return None if labels is None else [x for x, k in zip(labels, flags, strict=False) if k]

                r2 = estimates(clean, [o for o, k in zip(syncs, keep, strict=False) if k], kept_labels(reps, keep),
                               clean_base, [o for o, k in zip(base_syncs, keep_base, strict=False) if k],
                               kept_labels(base_reps, keep_base))[2]
                extra["slowdown_without_stalls"] = r2.value
                extra["verdict_without_stalls"] = interval_verdict(r2.low, r2.high, slo.max_slowdown,
                                                                   slo.marginal_slowdown)
                noun = ("ordinary " if synced else "") + ("step" if n_stalled == 1 else "steps")
                reason += (f"; without the {n_stalled} {noun} the host stalled: {_pct(r2.value)}, "
                           f"{extra['verdict_without_stalls']}")
        return Judgement(verdict, reason, value=est.value * 1e3, low=_ms(est.low), high=_ms(est.high),
                         baseline=best.value * 1e3, baseline_low=_ms(best.low), baseline_high=_ms(best.high),
                         ratio=ratio.value, ratio_low=_finite(ratio.low), ratio_high=_finite(ratio.high),
                         needed_n=needed, extra=extra, **common)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _ms(seconds: float) -> float | None:
    return seconds * 1e3 if math.isfinite(seconds) else None



def explain_training(j: Judgement, measured: Mapping[str, list[float]], prediction: Mapping[str, Any],
                     plan: Mapping[str, Any]) -> str:
    """Per step: compute, WAN bytes / rate and round trips x RTT, and which of the two corridor terms dominates.

    The round trips are read off the measurement: the step's time over the
    baseline, less the transfer time, in RTTs.
    """
    if j.value is None or j.baseline is None:
        return ""
    rtt_ms = plan.get("max_rtt_ms")
    rate = plan.get("min_rate_mbps")
    wan = [b for b in measured.get("wan_bytes", []) if b > 0]
    if not rtt_ms or not rate:
        return ""
    if j.metric.startswith("mean"):
        # a row judged on its mean step: the bytes of an average step, outer syncs amortised with it
        every = measured.get("wan_bytes", [])
        wan_bytes = stats.mean(every) if every else 0.0
    else:
        wan_bytes = stats.median(wan) if wan else 0.0
    scale = (measured.get("scale") or [1.0])[0]
    rate = float(rate) * scale  # full scale, as the bytes are
    # the ranks' bytes go both ways across the corridor: each direction carries about half at the link's rate
    transfer_ms = wan_bytes / 2 * 8 / (float(rate) * 1e6) * 1e3
    added_ms = j.value - j.baseline
    trips = max(0.0, (added_ms - transfer_ms) / float(rtt_ms))
    latency_ms = trips * float(rtt_ms)
    at_scale = f" (full scale; 1/{scale:g} emulated)" if scale > 1 else ""
    parts = [f"per step {wan_bytes / 1e6:,.1f} MB cross the WAN: {transfer_ms:,.0f} ms at "
             f"{float(rate):,.0f} Mbit/s{at_scale}", f"{added_ms:+,.0f} ms over {j.baseline:,.0f} ms local"]
    within_noise = j.ratio_low is not None and j.ratio_high is not None and j.ratio_low <= 1.0 <= j.ratio_high
    if added_ms <= 0.02 * j.baseline or within_noise:
        parts.append("the corridor adds no cost the samples can tell from zero"
                     + (": the transfers hide behind compute" if wan_bytes else ""))
    else:
        parts.append(f"about {trips:.1f} round trips of {float(rtt_ms):.0f} ms")
        dominant = "the round trips (distance)" if latency_ms > transfer_ms else "the bytes / rate (bandwidth)"
        parts.append(f"{dominant} dominate")
    return "; ".join(parts)
