"""Scale-model emulation: a corridor at real rates, emulated with every rate and size divided by one factor.

Stage: plan (pure: no root, no network). Real corridors carry hundreds of
Gbit/s to Tbit/s; this machine's emulated links carry about 2 Gbit/s. A case at
real rates is emulated as a scale model: every link rate, queue size, message,
gradient, KV cache and socket buffer is divided by one factor ``s`` while every
delay and compute time stays as it is. Transfer time against compute time, and
window against bandwidth-delay product, are then the same as at full scale, so
the times the agents measure are the full-scale times. Packet size (the MTU)
and TCP's initial window do not scale; docs/model.md says what that does to the
measured figure.

This module owns the factor: :func:`auto_scale` (the smallest factor that fits
every WAN link into the backend's capacity), :func:`scale_plan` (the plan the
network is built from, carrying ``s`` in ``plan.meta``), :func:`scaled_params`
(the kind's parameters, through its optional ``scaled`` method) and
:func:`full_scale_record` (a record's bytes and rates multiplied back by ``s``).
It is distinct from the time scale ``k`` of a sweep, which stretches delays.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from corridor.errors import SpecError
from corridor.links.contract import MTU_BYTES
from corridor.planning.plan import Plan

#: The rate one emulated WAN link is asked to carry when ``scale: auto`` picks ``s``. Source: DESIGN.md's
#: `corridor bench link` figures on this machine (userspace delay line, one TCP flow, 25 ms one way): 1.93
#: Gbit/s at 2 Gbit/s configured with departure lateness p99 2.1 ms, but 15 ms at 10 Gbit/s; several links share
#: two cores, so 1.5 Gbit/s per link leaves headroom. The kernel's netem is at least as fast, so the same target
#: is used for every backend (a backend chosen at run time by ``auto`` is not known when the plan is built).
FIT_RATE_MBPS = 1500.0

#: The key in ``Plan.meta`` that carries the factor a plan was scaled by.
META_KEY = "scale"

#: Record fields in these units are sizes or rates, reported at full scale (multiplied back by ``s``).
_SIZE_RATE_SUFFIXES = ("_bytes", "_mbps", "_gbps", "_bps", "_bytes_per_token")
_SIZE_RATE_NAMES = ("bytes", "algbw", "busbw")


def auto_scale(rates_mbps: Iterable[float], *, fit_mbps: float = FIT_RATE_MBPS) -> float:
    """The factor that brings the fastest WAN link to at most ``fit_mbps``: 1 when all fit already.

    Rounded up to two significant figures (400 Gbit/s -> 270, not 266.67) so
    the factor reads as a plain number in tables and manifests.
    """
    fastest = max((float(r) for r in rates_mbps), default=0.0)
    if fit_mbps <= 0:
        raise SpecError(f"the fit target must be a positive rate, got {fit_mbps:g} Mbit/s")
    needed = fastest / fit_mbps
    if needed <= 1.0:
        return 1.0
    digits = 10 ** (math.floor(math.log10(needed)) - 1)
    return float(math.ceil(round(needed / digits, 9)) * digits)


def plan_scale(plan: Plan) -> float:
    """The factor a plan was scaled by (1 for a plan at full scale)."""
    return float(plan.meta.get(META_KEY, 1.0))


def scale_plan(plan: Plan, factor: float) -> Plan:
    """The plan with every rate and queue divided by ``factor``; delays, jitter and loss unchanged.

    WAN directions keep at least one full-size packet of queue (the contract's
    floor); site fabrics are divided too, so the model's LAN term scales with
    the rest. The factor is recorded in ``plan.meta``.
    """
    if not (factor >= 1.0 and math.isfinite(factor)):
        raise SpecError(f"a scale factor is a number of at least 1, got {factor!r}")
    if factor == 1.0:
        return plan
    links = []
    for link in plan.wan_links:
        links.append(dataclasses.replace(
            link,
            a_to_b=_scale_direction(link.a_to_b, factor),
            b_to_a=_scale_direction(link.b_to_a, factor),
        ))
    sites = tuple(dataclasses.replace(site, host_rate_mbps=site.host_rate_mbps / factor) for site in plan.sites)
    meta = {**plan.meta, META_KEY: plan_scale(plan) * factor}
    return dataclasses.replace(plan, sites=sites, wan_links=tuple(links), meta=meta)


def _scale_direction(direction: Any, factor: float) -> Any:
    queue_packets = direction.queue_packets
    if queue_packets is not None:
        queue_packets = max(1, int(round(queue_packets / factor)))
    return dataclasses.replace(
        direction,
        rate_mbps=direction.rate_mbps / factor,
        queue_bytes=max(MTU_BYTES, int(round(direction.queue_bytes / factor))),
        queue_packets=queue_packets,
    )


def scaled_size(size_bytes: int, factor: float, *, floor: int = 1) -> int:
    """A size divided by the factor, rounded, never below ``floor`` bytes."""
    return max(floor, int(round(size_bytes / factor)))


def scaled_params(kind: Any, params: Any, factor: float) -> Any:
    """A kind's parameters at scale ``factor``, through its optional ``scaled(params, factor)`` method."""
    if factor == 1.0:
        return params
    method = getattr(kind, "scaled", None)
    if method is None:
        raise SpecError(f"workload kind {getattr(kind, 'name', kind)!r} cannot be emulated as a scale model "
                        f"(it has no scaled method); remove the experiment's scale key")
    return method(params, factor)


def full_scale_record(record: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """A measured record at full scale: sizes (``*_bytes``, ``bytes``) and rates (``*_mbps`` ...) times ``factor``.

    Times are unchanged (a scale model keeps them). The record gains
    ``scale`` (the factor) so a reader can tell a scaled measurement from a
    full-scale one; nested values and non-numbers are left as they are.
    """
    if factor == 1.0:
        return dict(record)
    out: dict[str, Any] = {}
    for key, value in record.items():
        if _is_size_or_rate(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = value * factor
            out[key] = int(round(value)) if isinstance(record[key], int) else value
        else:
            out[key] = value
    out[META_KEY] = factor
    return out


def _is_size_or_rate(key: str) -> bool:
    return key in _SIZE_RATE_NAMES or key.endswith(_SIZE_RATE_SUFFIXES)
