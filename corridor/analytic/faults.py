"""Analytic model of link faults: how long a TCP transfer stalls across a cut or a protection switch.

Stage: model (pure: no root, no network, no I/O). The emulated link drops what
enters it while it is down (both directions) and delivers what was already on
the wire, as a cut fibre does. A bulk TCP flow crossing an outage that starts
at t = 0 and lasts T on a path of one-way delay D (RTT 2D before, 2D' after):

- The receiver gets the last data sent before the cut at D; ACKs already on the
  way back reach the sender until D, so the oldest unacknowledged segment was
  sent at -D.
- Linux arms a tail loss probe (TLP, RFC 8985) at 2·srtt after the last ACK,
  and the retransmission timer at the oldest unacknowledged segment's send
  time plus RTO, where RTO = srtt + max(4·rttvar, RTO_min) with RTO_min 200 ms
  (``tcp_set_rto``: the variance term is floored at RTO_min, so a 50 ms path
  has an RTO of about 250 ms, not 200 ms). Each timeout doubles the RTO: the
  retransmissions go at -D + RTO, then 2·RTO later, 4·RTO later, ...
- Data flows again with the first transmission that enters the link after it is
  back. A probe (new data past the hole) costs one more round trip: its SACK
  returns at 2D' and the lost data is retransmitted at once (RACK), reaching the
  receiver D' later. A timeout retransmission is the missing data itself and
  reaches the receiver D' after it is sent.

The *stall* is the receiver's gap in in-order data: from D (the last data
before the cut) to the first data after it. A 50 ms protection switch on a
50 ms RTT path recovers through the probe (about 2·srtt + 3·D' ≈ 190 ms); a
2 s cut sits through RTO back-off (retransmissions at 0.225, 0.725, 1.725 and
3.725 s: a stall of about 3.7 s, not 2 s). After a switch every later round
trip is 2·(D' - D) longer.

Most of a workload's transfers are not window-limited flows. A request on an
idle keep-alive connection, or a collective's next chunk after its peer
acknowledged the last one, is new data sent *into* the outage by a sender with
nothing else outstanding: :func:`idle_sender_stall` retries it on its own
schedule from its own send time (:func:`idle_retries_s`: the loss probe, then
the timer re-armed and doubling, so 0.25, 0.5, 1.0, 2.0 s on a 50 ms path for
one segment and 0.102, 0.352, 0.852, 1.852 s for more), and a new connection's
SYN on Linux's (:func:`syn_retries_s`: once a second four times, then
doubling). A 2 s cut then costs a one-segment request 2.0 s, not 3.7 s, if it
started sending in the cut's first second. Timers fire up to
:data:`TIMER_SLACK` of their time late, so a retry just before the link's
return may come through with it (:func:`first_through_s` with ``slack``) or
wait a whole back-off more.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Linux's TCP_RTO_MIN and TCP_RTO_MAX.
RTO_MIN_S = 0.200
RTO_MAX_S = 120.0
#: Linux's TCP_TIMEOUT_MIN: the shortest loss-probe timeout.
PTO_MIN_S = 0.002
#: Give up predicting after this many back-offs (the connection would have been reset long before).
MAX_RETRANSMISSIONS = 15
#: How late a TCP timer may fire, as a fraction of its timeout: Linux's timer wheel files a timer in the
#: level whose granule is about an eighth of its timeout and fires it at the granule's end, never early.
#: A back-off chain re-arms from each firing, so a retry can come that much after its nominal time.
TIMER_SLACK = 0.125

CUT_EVENTS = ("cut", "protection-switch")


@dataclass(frozen=True)
class StallPrediction:
    """What one event does to a bulk TCP flow crossing it; times are seconds after the event starts."""

    event: str
    stall_s: float | None  # receiver's gap in in-order data; None: no outage (a degradation)
    via: str  # "probe", "rto", "in-flight" (data after a short outage), "none"
    rto_s: float
    resume_sent_s: float | None  # when the transmission that gets through was sent
    retransmissions_s: tuple[float, ...]  # timeout retransmissions up to the one that got through
    extra_rtt_s: float  # added to every round trip after the event (protection path, delay step)


def linux_rto_s(srtt_s: float, rttvar_s: float = 0.0, rto_min_s: float = RTO_MIN_S) -> float:
    """Linux's retransmission timeout: srtt + max(4·rttvar, RTO_min), at most 120 s."""
    return min(srtt_s + max(4.0 * rttvar_s, rto_min_s), RTO_MAX_S)


def outage_stall(
    outage_s: float,
    rtt_s: float,
    *,
    new_rtt_s: float | None = None,
    srtt_s: float | None = None,
    rttvar_s: float = 0.0,
    rto_min_s: float = RTO_MIN_S,
    tlp: bool = True,
    event: str = "cut",
    last_send_s: float | None = None,
) -> StallPrediction:
    """The stall of a bulk flow across an outage of ``outage_s`` on a path of ``rtt_s`` (``new_rtt_s`` after).

    ``srtt_s`` is the sender's smoothed RTT when the outage starts (default the
    path's RTT; a sender that fills a queue sees more). ``last_send_s`` is when
    the sender stops sending new data: a window-limited sender stops with the
    last ACK, at D (the default); a paced or application-limited sender with
    spare window goes on until that window is used up. While it still sends
    when the link is back, new data gets through at once; otherwise the probe
    goes 2·srtt after its last send, and the retransmission timer fires at the
    oldest segment's send time plus RTO, but not before the probe (Linux re-arms
    it after a probe).
    """
    if outage_s < 0 or rtt_s < 0:
        raise ValueError("an outage and an RTT cannot be negative")
    one_way = rtt_s / 2.0
    after = one_way if new_rtt_s is None else new_rtt_s / 2.0
    srtt = rtt_s if srtt_s is None else srtt_s
    rto = linux_rto_s(srtt, rttvar_s, rto_min_s)
    extra = 0.0 if new_rtt_s is None else new_rtt_s - rtt_s
    back = outage_s
    if outage_s <= 0:
        return StallPrediction(event, 0.0, "none", rto, None, (), extra)
    last_send = one_way if last_send_s is None else max(last_send_s, 0.0)
    if back <= last_send:
        # The sender still sends new data when the link is back; its SACKs start the recovery at once.
        sent = back
        return StallPrediction(event, sent + 3 * after - one_way, "in-flight", rto, sent, (), extra)
    first_rto = -one_way + rto
    retx: list[float] = []
    if tlp:
        probe = last_send + max(2.0 * srtt, PTO_MIN_S)
        if probe < first_rto and back <= probe:
            return StallPrediction(event, probe + 3 * after - one_way, "probe", rto, probe, (), extra)
        first_rto = max(first_rto, probe)
    at, timeout = first_rto, rto
    for _ in range(MAX_RETRANSMISSIONS):
        retx.append(at)
        if at >= back:
            return StallPrediction(event, at + after - one_way, "rto", rto, at, tuple(retx), extra)
        timeout = min(2.0 * timeout, RTO_MAX_S)
        at += timeout
    return StallPrediction(event, None, "rto", rto, None, tuple(retx), extra)


#: Linux's TCP_TIMEOUT_INIT: the first SYN retransmission timeout.
SYN_TIMEOUT_S = 1.0
#: Linux's net.ipv4.tcp_syn_linear_timeouts default (6.7 and later): the first four SYN retries come 1 s
#: apart instead of doubling. Older kernels back off exponentially from the start (0).
SYN_LINEAR_TIMEOUTS = 4


def idle_retries_s(srtt_s: float, rttvar_s: float = 0.0, rto_min_s: float = RTO_MIN_S, *,
                   segments: int = 1) -> tuple[float, ...]:
    """When a lost transmission is sent again, in seconds after its first send, by a sender with nothing else out.

    For a request on an idle keep-alive connection, or a collective's next chunk
    after its peer acknowledged the last: Linux's loss probe
    (``tcp_schedule_loss_probe``) waits 2·srtt, plus RTO_min when the
    transmission is one segment and plus TCP_TIMEOUT_MIN (2 ms) when it is
    several, or the RTO if that comes sooner; the probe re-arms the
    retransmission timer one RTO later, and every timeout doubles it. On a 50 ms
    path: 0.25, 0.5, 1.0, 2.0 s for one segment; 0.102, 0.352, 0.852, 1.852 s for
    a request of two segments or a chunk.
    """
    rto = linux_rto_s(srtt_s, rttvar_s, rto_min_s)
    at = min(2.0 * srtt_s + (rto_min_s if segments <= 1 else PTO_MIN_S), rto)
    out = [at]
    timeout = rto
    for _ in range(MAX_RETRANSMISSIONS):
        at += timeout
        out.append(at)
        timeout = min(2.0 * timeout, RTO_MAX_S)
    return tuple(out)


def syn_retries_s(linear: int = SYN_LINEAR_TIMEOUTS) -> tuple[float, ...]:
    """When a lost SYN is sent again, in seconds after the first: ``linear`` retries 1 s apart, then doubling."""
    out: list[float] = []
    at = 0.0
    for i in range(MAX_RETRANSMISSIONS):
        at += min(SYN_TIMEOUT_S * 2.0 ** max(0, i - max(linear, 1) + 1), RTO_MAX_S)
        out.append(at)
    return tuple(out)


def first_through_s(sent_s: float, outage_s: float, retries_s: tuple[float, ...], *,
                    slack: float = 0.0) -> float | None:
    """When a transmission first sent at ``sent_s`` (outage from 0 to ``outage_s``) enters the link while it is up.

    Sent before the outage: at once (what was on the wire is delivered). Sent
    while it was down: its first retry at or after the outage's end; None when
    the retries run out first. ``slack`` lets each retry fire up to that fraction
    of its time after the send late (:data:`TIMER_SLACK`): a retry that lateness
    could carry past the outage's end then counts, coming through as the link
    returns.
    """
    if sent_s < 0 or sent_s >= outage_s:
        return sent_s
    for retry in retries_s:
        if sent_s + retry * (1.0 + slack) >= outage_s:
            return max(sent_s + retry, outage_s)
    return None


def idle_sender_stall(outage_s: float, rtt_s: float, *, sent_s: float = 0.0, new_rtt_s: float | None = None,
                      srtt_s: float | None = None, rttvar_s: float = 0.0, syn: bool = False, segments: int = 1,
                      slack: float = 0.0, event: str = "cut") -> StallPrediction:
    """The stall of a transmission sent ``sent_s`` into an outage by a sender with nothing else outstanding.

    The counterpart of :func:`outage_stall` (a window-limited bulk flow, whose
    oldest segment went out before the outage): here the lost segment is new
    data sent while the link is down, retried on its own schedule
    (:func:`idle_retries_s`, or :func:`syn_retries_s` for a new connection's
    SYN). The stall is how much later it arrives than it would have without the
    outage: its first retry after the outage, plus any longer path, minus when
    it was sent. ``segments`` and ``slack`` go to :func:`idle_retries_s` and
    :func:`first_through_s`.
    """
    if outage_s < 0 or rtt_s < 0:
        raise ValueError("an outage and an RTT cannot be negative")
    srtt = rtt_s if srtt_s is None else srtt_s
    rto = linux_rto_s(srtt, rttvar_s)
    extra = 0.0 if new_rtt_s is None else new_rtt_s - rtt_s
    retries = syn_retries_s() if syn else idle_retries_s(srtt, rttvar_s, segments=segments)
    through = first_through_s(sent_s, outage_s, retries, slack=slack)
    if through is None:
        return StallPrediction(event, None, "syn" if syn else "rto", rto, None, retries, extra)
    done = tuple(r for r in retries if sent_s + r <= through)
    via = "none" if through == sent_s else ("syn" if syn else ("probe" if len(done) == 1 else "rto"))
    return StallPrediction(event, through - sent_s + extra / 2.0, via, rto, through, done, extra)


def predict_fault(event: str, *, outage_s: float, rtt_ms: float, new_rtt_ms: float | None = None,
                  srtt_ms: float | None = None, rttvar_ms: float = 0.0) -> StallPrediction:
    """The model for one applied fault: an outage (cut, protection switch) or a degradation (no stall)."""
    new_rtt_s = None if new_rtt_ms is None else new_rtt_ms / 1e3
    srtt_s = None if srtt_ms is None else srtt_ms / 1e3
    if event in CUT_EVENTS:
        return outage_stall(outage_s, rtt_ms / 1e3, new_rtt_s=new_rtt_s, srtt_s=srtt_s, rttvar_s=rttvar_ms / 1e3,
                            event=event)
    extra = 0.0 if new_rtt_s is None else new_rtt_s - rtt_ms / 1e3
    rto = linux_rto_s(rtt_ms / 1e3 if srtt_s is None else srtt_s)
    return StallPrediction(event, None, "none", rto, None, (), extra)
