"""A data-parallel training step walked across an outage: which exchange the fault catches, and what it costs.

Stage: model (pure: no root, no network, no I/O). :mod:`corridor.analytic.faults`
says what TCP does to *one* transmission that an outage catches. A step is
many: each gradient bucket is a collective of several rounds, every round's
flows wait on the round before, and the outage catches whichever round is on
the wire when it starts, or the first one sent into it. This module replays
the step's own schedule (:class:`StepPlan`, written by the training model with
every prediction as ``predicted.step_plan``, JSON text) on a clock, with the outage on the same clock, and returns
the step's time with and without it. The difference is the step's stall.

Each WAN connection keeps the state the outage leaves it in:

- A round handed to the link before the outage is delivered (the link keeps
  what it admitted), but ACKs that would leave the receiver during the outage
  are lost: the connection then has data outstanding, and its retransmission
  timer runs from that data's send time (``anchor``).
- A round handed to the link during the outage is lost. It is sent again on
  the sender's schedule: the loss probe 2·srtt (plus TCP_TIMEOUT_MIN) after
  it went out, or at the anchor's retransmission timeout if that is sooner,
  then the timer one RTO later, doubling (:func:`retries_from`); the first retry at or after the link's return gets
  through (as :func:`corridor.analytic.faults.first_through_s` has it, with timer slack).
- Through the probe, the probe's SACK comes back a round trip later and fast
  recovery resends what was lost. With the whole flight lost, proportional rate
  reduction sends one segment per segment delivered: one the first round trip,
  about half a segment more each round trip after (:func:`conservation_rounds`).
  A 50 ms outage that loses four 346-segment rounds costs about 70 round trips,
  four seconds, not one. Through a timeout, the window is one
  segment and the round is resent in slow start up to half what was in flight
  (``ssthresh``), then one segment more per round trip: a 362-segment round
  takes nine round trips instead of one. That is the term a single
  transmission's model lacks.

A protection switch is an outage followed by a longer path for ``hold_s``:
every send in that time travels ``new_one_way_s``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from corridor.analytic.faults import PTO_MIN_S, RTO_MAX_S, linux_rto_s

#: Give up walking a retry chain after this many back-offs.
_MAX_RETRIES = 15


@dataclass(frozen=True)
class Path:
    """One direction between two ranks' sites: one-way delay, payload rate, whether it crosses the WAN."""

    one_way_s: float
    rate_bps: float  # TCP payload bits per second
    wan: bool


@dataclass(frozen=True)
class StepPlan:
    """A bucketed data-parallel step as the model walks it (:meth:`to_json` goes into the prediction record).

    Bucket ``j`` is ready ``fwd_s + (j + 1)·bwd_s/buckets`` into the step and
    runs after the one before it; ``rounds`` are the collective's rounds, each a
    tuple of flows (src rank, dst rank, bytes) and a repeat count.
    """

    fwd_s: float
    bwd_s: float
    buckets: int
    n_ranks: int
    rounds: tuple[tuple[tuple[tuple[int, int, int], ...], int], ...]
    paths: Mapping[tuple[int, int], Path]
    mss_bytes: int = 1448
    overhead_s: float = 100e-6

    def to_json(self) -> dict[str, Any]:
        return {
            "fwd_s": self.fwd_s, "bwd_s": self.bwd_s, "buckets": self.buckets, "n_ranks": self.n_ranks,
            "rounds": [[[list(f) for f in flows], repeat] for flows, repeat in self.rounds],
            "paths": [[src, dst, p.one_way_s, p.rate_bps, p.wan] for (src, dst), p in sorted(self.paths.items())],
            "mss_bytes": self.mss_bytes, "overhead_s": self.overhead_s,
        }

    def to_text(self) -> str:
        """:meth:`to_json` as compact JSON text: a prediction record holds scalars only."""
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> StepPlan:
        """The plan :meth:`to_text` wrote; raises ValueError (also on bad JSON), KeyError or TypeError."""
        data = json.loads(text)
        if not isinstance(data, Mapping):
            raise ValueError("a step plan is a JSON object")
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepPlan:
        """The plan a prediction record carries; raises KeyError, TypeError or ValueError on a malformed one."""
        rounds = tuple((tuple((int(f[0]), int(f[1]), int(f[2])) for f in flows), int(repeat))
                       for flows, repeat in data["rounds"])
        paths = {(int(src), int(dst)): Path(float(one_way), float(rate), bool(wan))
                 for src, dst, one_way, rate, wan in data["paths"]}
        n = int(data["n_ranks"])
        for flows, _ in rounds:
            for src, dst, _size in flows:
                if not (0 <= src < n and 0 <= dst < n) or (src, dst) not in paths:
                    raise ValueError(f"the step plan has a flow {src}->{dst} without a path")
        return cls(float(data["fwd_s"]), float(data["bwd_s"]), int(data["buckets"]), n, rounds, paths,
                   int(data.get("mss_bytes", 1448)), float(data.get("overhead_s", 100e-6)))

    @property
    def compute_s(self) -> float:
        return self.fwd_s + self.bwd_s


@dataclass(frozen=True)
class Outage:
    """The link down from ``start_s`` (on the step's clock) for ``length_s``; then ``new_one_way_s`` for ``hold_s``."""

    start_s: float
    length_s: float
    new_one_way_s: float | None = None
    hold_s: float = 0.0

    @property
    def end_s(self) -> float:
        return self.start_s + self.length_s

    def one_way_s(self, path: Path, at_s: float) -> float:
        if self.new_one_way_s is not None and path.wan and self.end_s <= at_s < self.end_s + self.hold_s:
            return self.new_one_way_s
        return path.one_way_s


def retries_from(sent_s: float, anchor_s: float, srtt_s: float, rto_s: float) -> list[float]:
    """Absolute times a round first sent at ``sent_s`` is sent again, the oldest unacknowledged data sent at
    ``anchor_s`` (<= ``sent_s``): the loss probe 2·srtt + TCP_TIMEOUT_MIN after the send, or when the pending
    retransmission timer (one RTO after the anchor) would fire if that is sooner; then the timer one RTO after
    the probe, doubling. With the anchor at the send this is
    :func:`corridor.analytic.faults.idle_retries_s` for several segments."""
    at = min(sent_s + 2.0 * srtt_s + PTO_MIN_S, anchor_s + rto_s)
    out = [at]
    timeout = rto_s
    for _ in range(_MAX_RETRIES):
        at += timeout
        out.append(at)
        timeout = min(2.0 * timeout, RTO_MAX_S)
    return out


def slow_start_s(segments: float, rtt_s: float, *, cwnd: float, ssthresh: float) -> tuple[float, float]:
    """How long a window of ``cwnd`` segments takes to send ``segments`` (doubling up to ``ssthresh``, then one
    more a round trip), from the first segment's send to the last one's, and the window the round after it has."""
    sent, rounds = 0.0, 0
    window = max(1.0, cwnd)
    while sent + window < segments:
        sent += window
        rounds += 1
        window = window * 2.0 if window < ssthresh else window + 1.0
    return rounds * rtt_s, window * 2.0 if window < ssthresh else window + 1.0


#: Segments a fast recovery adds to what it sends each round trip. With the whole flight lost, Linux's
#: proportional rate reduction sends one segment for each one the receiver reports delivered, plus one for each
#: ACK that advances the cumulative ACK; the receiver ACKs every second segment. A capture of a 50 ms outage that
#: dropped a 1,381-segment flight showed the retransmissions starting at one a round trip and growing by about
#: this much (0.43 a round trip over 50 round trips; docs/model.md, Faults).
RECOVERY_GROWTH = 0.5


def conservation_rounds(lost_segments: float, growth: float = RECOVERY_GROWTH) -> int:
    """Round trips a fast recovery takes to resend ``lost_segments`` when all of the flight was lost: one segment
    the first, ``growth`` more each round trip after (packet conservation, Linux's PRR)."""
    rounds, sent, window = 0, 0.0, 1.0
    while sent < lost_segments:
        sent += window
        window += growth
        rounds += 1
    return max(1, rounds)


@dataclass
class _Recovery:
    """A connection's lost data on its way again: when the retry got through, how, and what it carries."""

    through_s: float
    by_probe: bool
    one_way_s: float
    segments: float = 0.0
    in_flight: float = 0.0  # segments out when the timer fired: ssthresh is half of it


@dataclass
class _Connection:
    anchor_s: float | None = None  # send time of the oldest data whose ACK the outage lost
    recovery: _Recovery | None = None
    cold: tuple[float, float] | None = None  # (cwnd, ssthresh) a timeout left, for the next round
    last_arrival_s: float = -math.inf


def walk_step(plan: StepPlan, outage: Outage | None = None, *, srtt_s: float | None = None,
              slack: float = 0.0) -> tuple[float, str]:
    """The step's time under ``outage`` (None: without one), and how its worst-hit round came through
    ("probe"; "slow-start": through a timeout; "acks": only ACKs were lost; "none").

    ``srtt_s`` is the WAN connections' smoothed RTT (default twice the WAN one-way delay). ``slack`` lets each
    retry fire up to that fraction late (:data:`corridor.analytic.faults.TIMER_SLACK`).
    """
    wan_one_way = max((p.one_way_s for p in plan.paths.values() if p.wan), default=0.0)
    srtt = 2.0 * wan_one_way if srtt_s is None else srtt_s
    rto = linux_rto_s(srtt)
    conns: dict[tuple[int, int], _Connection] = {}
    rank = {"none": 0, "acks": 1, "probe": 2, "slow-start": 3}
    via = "none"
    clock = [0.0] * plan.n_ranks
    for j in range(plan.buckets):
        ready = plan.fwd_s + (j + 1) * plan.bwd_s / plan.buckets
        clock = [max(ready, c) for c in clock]
        for flows, repeat in plan.rounds:
            for _ in range(repeat):
                new = list(clock)
                for src, dst, size in flows:
                    path = plan.paths[(src, dst)]
                    send = clock[src]
                    ser = size * 8 / path.rate_bps if path.rate_bps > 0 else 0.0
                    if path.wan and outage is not None:
                        conn = conns.setdefault((src, dst), _Connection())
                        arrive, how = _wan_round(send, size, ser, path, outage, conn, srtt, rto, plan.mss_bytes,
                                                 slack)
                        conn.last_arrival_s = arrive
                        via = how if rank[how] > rank[via] else via
                    else:
                        arrive = send + path.one_way_s + ser
                    new[src] = max(new[src], send + ser)
                    new[dst] = max(new[dst], arrive)
                clock = [c + plan.overhead_s for c in new]
    return max(plan.compute_s, max(clock)), via


def _wan_round(send: float, size: int, ser: float, path: Path, outage: Outage, conn: _Connection, srtt: float,
               rto: float, mss: int, slack: float) -> tuple[float, str]:
    """When one round of ``size`` bytes handed to TCP at ``send`` reaches the receiver, and how."""
    segments = max(1, math.ceil(size / mss))
    a, b = outage.start_s, outage.end_s
    recovery = conn.recovery
    if send < a:
        one_way = outage.one_way_s(path, send)
        arrive = send + one_way + ser
        # delivered; the receiver's ACKs leave it over [send + D, send + D + ser]: those in the outage are lost
        if arrive > a and conn.anchor_s is None:
            conn.anchor_s = send
        return arrive, "acks" if arrive > a else "none"
    if recovery is None and send >= b:
        one_way = outage.one_way_s(path, send)
        extra = 0.0
        if conn.cold is not None:
            cwnd, ssthresh = conn.cold
            extra, window = slow_start_s(segments, 2.0 * one_way, cwnd=cwnd, ssthresh=ssthresh)
            conn.cold = None if window >= segments else (window, ssthresh)
        conn.anchor_s = None
        return max(send + extra + one_way + ser, conn.last_arrival_s + ser), "none"
    if recovery is None:
        # handed to the link while it is down: lost, and sent again on the sender's schedule
        anchor = send if conn.anchor_s is None else conn.anchor_s
        for i, retry in enumerate(retries_from(send, anchor, srtt, rto)):
            # a timer fires up to ``slack`` of its time late: one that could reach the return comes through with it
            if send + (retry - send) * (1.0 + slack) >= b:
                recovery = _Recovery(max(retry, b), i == 0, outage.one_way_s(path, max(retry, b)))
                break
        else:
            return math.inf, "slow-start"
        conn.recovery = recovery
        conn.anchor_s = None
    if send >= recovery.through_s:
        # after the recovery: the window it left
        conn.recovery = None
        return _wan_round(send, size, ser, path, outage, conn, srtt, rto, mss, slack)
    # lost, or queued behind lost data: carried by the recovery
    recovery.segments += segments
    recovery.in_flight += segments
    total = recovery.segments
    one_way = recovery.one_way_s
    total_ser = total * mss * 8 / path.rate_bps if path.rate_bps > 0 else 0.0
    if recovery.by_probe:
        # the probe's SACK comes back a round trip later and starts fast recovery of everything lost
        rounds = conservation_rounds(total)
        done = _after_round_trips(recovery.through_s, rounds, path, outage)
        return done + outage.one_way_s(path, done) + min(total_ser, ser * rounds), "probe"
    # a timeout: one segment of window, slow start up to half what was in flight
    ssthresh = max(recovery.in_flight / 2.0, 2.0)
    took, window = slow_start_s(total, 2.0 * one_way, cwnd=1.0, ssthresh=ssthresh)
    conn.cold = (window, ssthresh)
    done = _after_round_trips(recovery.through_s, round(took / (2.0 * one_way)) if one_way > 0 else 0, path, outage)
    return done + outage.one_way_s(path, done) + ser, "slow-start"


def _after_round_trips(start_s: float, rounds: int, path: Path, outage: Outage) -> float:
    """When ``rounds`` round trips begun at ``start_s`` end, each on the path the link has when it starts: a
    protection path held for less than a recovery lasts gives way to the link's own delay part of the way."""
    at = start_s
    for _ in range(rounds):
        at += 2.0 * outage.one_way_s(path, at)
    return at


def stall_s(plan: StepPlan, outage: Outage, *, srtt_s: float | None = None, slack: float = 0.0
            ) -> tuple[float, str]:
    """How much longer the step holding ``outage`` takes than the same step without it, and how it came through."""
    base, _ = walk_step(plan, None, srtt_s=srtt_s)
    hit, via = walk_step(plan, outage, srtt_s=srtt_s, slack=slack)
    return hit - base, via


def calibrated(plan: StepPlan, step_s: float) -> StepPlan:
    """``plan`` with the per-round overhead that makes its step without an outage last ``step_s``.

    The agents' rounds cost more than the model's 100 µs (Python, scheduling, a
    busy host), and where a step's time goes decides which round an outage
    catches: a cut 0.23 s into a measured 0.34 s step falls in the second
    bucket's ring, but after the end of the model's 0.25 s step. The walk of a
    measured step is therefore stretched to that point's median step. A median
    at or below the walk's own leaves the plan as it is.
    """
    base, _ = walk_step(plan)
    if not math.isfinite(step_s) or step_s <= base:
        return plan
    rounds = sum(repeat for _, repeat in plan.rounds) * plan.buckets
    low, high = plan.overhead_s, plan.overhead_s + (step_s - base) / max(1, rounds) * 4.0
    for _ in range(40):
        mid = (low + high) / 2.0
        if walk_step(replace(plan, overhead_s=mid))[0] < step_s:
            low = mid
        else:
            high = mid
    return replace(plan, overhead_s=(low + high) / 2.0)


def plan_from_schedule(*, fwd_s: float, bwd_s: float, buckets: int, rounds: Sequence[Any], sites: Sequence[str],
                       path_of: Any, mss_bytes: int, header_bytes: int, overhead_s: float = 100e-6) -> StepPlan:
    """A :class:`StepPlan` from a collective's steps (``corridor.agent.collectives.Step``) and the model's paths
    (``path_of(src_site, dst_site)`` -> PathParams; an unshaped path counts at 10 Gbit/s)."""
    payload = mss_bytes / (mss_bytes + header_bytes)
    paths: dict[tuple[int, int], Path] = {}
    out_rounds = []
    for step in rounds:
        flows = tuple((f.src, f.dst, int(f.size_bytes)) for f in step.flows)
        for src, dst, _ in flows:
            if (src, dst) not in paths:
                p = path_of(sites[src], sites[dst])
                rate = (p.rate_mbps if p.rate_mbps > 0 else 10_000.0) * 1e6 * payload
                paths[(src, dst)] = Path(p.one_way_ms / 1e3, rate, bool(p.wan_links))
        out_rounds.append((flows, int(step.repeat)))
    return StepPlan(fwd_s, bwd_s, buckets, len(sites), tuple(out_rounds), paths, mss_bytes, overhead_s)
