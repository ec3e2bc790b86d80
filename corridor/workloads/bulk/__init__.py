"""The ``bulk`` workload kind: checkpoint replication and dataset staging across the corridor.

Stage: spec/analysis plug-in (pure at import; iperf3 runs only in
:func:`corridor.workloads.bulk.run.run`). A bulk workload moves ``size`` bytes
with ``streams`` parallel TCP streams, ``transfers`` times one after another,
from GPU hosts to the other side (``checkpoint-replication``: servers' site to
clients' site) or the other way (``dataset-staging``). The compared statistic
is the median completion time, judged against a completion-time window: the
transfer tolerates the corridor while the whole 95 % interval is within
``marginal_fraction`` of the ``deadline``, and does not once it is wholly past it.

Records are ``message`` records (one per transfer: ``src``, ``dst``, ``bytes``,
``completion_s``), so the record schema needs nothing new.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from corridor import stats
from corridor.errors import SpecError, UnitError
from corridor.spec.units import parse_duration_ms, parse_size_bytes
from corridor.spec.validate import check_keys
from corridor.workloads.kind import INCONCLUSIVE, NO_DATA, Judgement, interval_verdict
from corridor.workloads.placement import balanced_hosts
from corridor.workloads.training.kind import needed_samples

PATTERNS: dict[str, str] = {
    "checkpoint-replication": "copy a checkpoint from the GPU site to the other side of the corridor",
    "dataset-staging": "stage a dataset from the users' side onto the GPU site",
}
#: The largest transfer one workload may ask for: a few full 70B checkpoints.
MAX_SIZE_BYTES = 10**13


@dataclass(frozen=True)
class BulkParams:
    pattern: str
    size_bytes: int
    streams: int = 4
    transfers: int = 5
    cc: str | None = None


@dataclass(frozen=True)
class BulkSlo:
    """A transfer tolerates the corridor while it completes within ``deadline_s``."""

    deadline_s: float = 60.0
    marginal_fraction: float = 0.8


_PARAM_KEYS = {"pattern", "size", "streams", "transfers", "cc"}


def validate(params: Mapping[str, Any], *, where: str) -> BulkParams:
    check_keys(params, _PARAM_KEYS, path=where, what="parameter")
    if "size" not in params:
        raise SpecError("is required: the bytes each transfer moves, e.g. 2GB", path=where, key="size")
    try:
        size = parse_size_bytes(params["size"])
    except UnitError as exc:
        raise SpecError(str(exc), path=where, key="size") from exc
    if not 1 <= size <= MAX_SIZE_BYTES:
        raise SpecError(f"must be from 1 byte to {MAX_SIZE_BYTES:.0e} bytes, got {params['size']!r}", path=where,
                        key="size")
    counts: dict[str, int] = {}
    for key, default, high in (("streams", 4, 128), ("transfers", 5, 1000)):
        value = params.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise SpecError(f"must be a whole number from 1 to {high}, got {value!r}", path=where, key=key)
        counts[key] = value
    cc = params.get("cc")
    if cc is not None and cc not in ("bbr", "cubic", "reno"):
        raise SpecError(f"must be one of bbr, cubic, reno, got {cc!r}", path=where, key="cc")
    return BulkParams(pattern=str(params["pattern"]), size_bytes=size, cc=cc, **counts)


def predict_completion_s(params: BulkParams, *, rate_mbps: float, one_way_s: float, rtt_s: float) -> float:
    """Handshake, then each stream's share through slow start at the bottleneck (streams share the rate)."""
    from corridor.workloads.inference.model import transfer_time_s

    share = -(-params.size_bytes // params.streams)
    per_stream_rate = rate_mbps / params.streams
    return rtt_s + transfer_time_s(share, rate_mbps=per_stream_rate, one_way_s=one_way_s, rtt_s=rtt_s)


def _fmt(seconds: float) -> str:
    return f"{seconds:,.2f} s" if seconds < 100 else f"{seconds:,.0f} s"


class BulkKind:
    """Bulk transfers across the corridor (see the module docstring)."""

    name = "bulk"

    def patterns(self) -> Mapping[str, str]:
        return dict(PATTERNS)

    def validate(self, params: Mapping[str, Any], *, where: str) -> BulkParams:
        return validate(params, where=where)

    def scaled(self, params: BulkParams, factor: float) -> BulkParams:
        """Scale model (corridor.planning.scale): each transfer's size / factor."""
        from corridor.planning.scale import scaled_size

        return replace(params, size_bytes=scaled_size(params.size_bytes, factor))

    def parse_slo(self, value: Mapping[str, Any], *, path: str, where: str) -> BulkSlo:
        check_keys(value, {"deadline", "marginal_fraction"}, path=path, where=where)
        try:
            deadline_s = parse_duration_ms(value.get("deadline", "60s")) / 1e3
        except UnitError as exc:
            raise SpecError(str(exc), path=path, key=f"{where}.deadline") from exc
        fraction = value.get("marginal_fraction", 0.8)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.05 <= fraction <= 1.0:
            raise SpecError(f"must be a number from 0.05 to 1, got {fraction!r}", path=path,
                            key=f"{where}.marginal_fraction")
        if deadline_s <= 0:
            raise SpecError("must be a positive duration, e.g. 30s", path=path, key=f"{where}.deadline")
        return BulkSlo(deadline_s=deadline_s, marginal_fraction=float(fraction))

    def slo_from_manifest(self, value: Mapping[str, Any]) -> BulkSlo:
        names = {f.name for f in fields(BulkSlo)}
        return BulkSlo(**{k: v for k, v in value.items() if k in names})

    def hosts(self, plan: Any, placement: Any, workload: Any, *, role_names: Sequence[str] = ()) -> dict[str, str]:
        """One source and one sink host: a GPU host of the servers' site and a host at the clients' site."""
        gpu = balanced_hosts(plan, placement.servers, "gpu", None, placement.name)
        far = balanced_hosts(plan, placement.clients, "client", None, placement.name)
        sink = next((h for h in far if h != gpu[0]), far[-1])
        if workload.params.pattern == "dataset-staging":
            return {"source": sink, "sink": gpu[0]}
        return {"source": gpu[0], "sink": sink}

    def run(self, net: Any, params: Any, *, hosts: Any, seed: int, timeout_s: float,
            progress: Any = None) -> list[dict[str, Any]]:
        from corridor.workloads.bulk.run import run

        return run(net, params, hosts=hosts, seed=seed, timeout_s=timeout_s, progress=progress)

    def predict(self, params: Any, plan: Any, *, hosts: Any, time_scale: float = 1.0, slo: Any = None,
                seed: int | None = None) -> Mapping[str, Any]:
        src, dst = plan.host(hosts["source"]).site, plan.host(hosts["sink"]).site
        path = plan.path_params(src, dst)
        completion = predict_completion_s(params, rate_mbps=path.rate_mbps, one_way_s=path.one_way_ms / 1e3,
                                          rtt_s=path.rtt_ms / 1e3)
        serial = params.size_bytes * 8 / (path.rate_mbps * 1e6)
        return {"completion_s": completion, "serialisation_s": serial, "rtt_s": path.rtt_ms / 1e3,
                "rate_mbps": path.rate_mbps, "size_bytes": params.size_bytes, "streams": params.streams}

    def model_figures(self, predicted: Mapping[str, Any], slo: Any) -> dict[str, float]:
        value = predicted.get("completion_s")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return {"completion_s": float(value), "statistic_s": float(value)}
        return {}

    def model_verdict(self, slo: BulkSlo, remote: Mapping[str, float], local: Mapping[str, float]) -> str | None:
        if "completion_s" not in remote:
            return None
        value = remote["completion_s"]
        return interval_verdict(value, value, slo.marginal_fraction * slo.deadline_s, slo.deadline_s)

    def samples(self, records: Sequence[Mapping[str, Any]], slo: Any) -> dict[str, list[float]]:
        done = [r for r in records if r.get("kind") == "message" and r.get("completion_s") is not None]
        return {"completion_s": [float(r["completion_s"]) for r in done],
                "throughput_mbps": [float(r["bytes"]) * 8 / float(r["completion_s"]) / 1e6 for r in done
                                    if float(r["completion_s"]) > 0]}

    def judge(self, slo: BulkSlo, measured: Mapping[str, list[float]], baseline: Mapping[str, list[float]],
              *, baseline_label: str) -> Judgement:
        times, base = measured.get("completion_s", []), baseline.get("completion_s", [])
        common: dict[str, Any] = {"metric": "median completion", "unit": "ms", "n": len(times),
                                  "baseline_n": len(base), "slo": slo.deadline_s * 1e3}
        if not times:
            return Judgement(NO_DATA, "no completed transfers", value=None, low=None, high=None, baseline=None,
                             baseline_low=None, baseline_high=None, **common)
        est = stats.bootstrap(times, q=50)
        best = stats.bootstrap(base, q=50) if base else None
        limits = (slo.marginal_fraction * slo.deadline_s, slo.deadline_s)
        verdict = interval_verdict(est.low, est.high, *limits) if est.n >= 2 else INCONCLUSIVE
        reason = f"median completion {_fmt(est.value)}"
        if est.n >= 2:
            reason += f" [{_fmt(est.low)}, {_fmt(est.high)}]"
        if best is not None:
            reason += f" vs {_fmt(best.value)} {baseline_label}"
        reason += f", against the {_fmt(slo.deadline_s)} deadline"
        needed = needed_samples(est, limits) if verdict == INCONCLUSIVE else None
        if needed is not None:
            reason += f"; about {needed} transfers would decide"
        tput = measured.get("throughput_mbps", [])
        if tput:
            reason += f"; {stats.median(tput):,.0f} Mbit/s per transfer"

        def ms(x: float | None) -> float | None:
            return x * 1e3 if x is not None and math.isfinite(x) else None

        ratio = stats.bootstrap_ratio(times, base, q=50) if base else None
        return Judgement(verdict, reason, value=est.value * 1e3, low=ms(est.low), high=ms(est.high),
                         baseline=ms(best.value) if best else None, baseline_low=ms(best.low) if best else None,
                         baseline_high=ms(best.high) if best else None,
                         ratio=ratio.value if ratio else None, needed_n=needed, **common)

    def explain(self, j: Judgement, measured: Mapping[str, list[float]], prediction: Mapping[str, Any],
                plan: Mapping[str, Any]) -> str:
        serial = prediction.get("predicted.serialisation_s")
        rtt = prediction.get("predicted.rtt_s")
        if not isinstance(serial, (int, float)) or not isinstance(rtt, (int, float)) or j.value is None:
            return ""
        term = "bytes / rate (bandwidth)" if serial * 1e3 > 4 * rtt * 1e3 else "round trips (distance)"
        return (f"{serial:,.2f} s of serialisation at the bottleneck against a {rtt * 1e3:,.0f} ms RTT: "
                f"the {term} dominates")
