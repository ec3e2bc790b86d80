"""Analytic model of gradient-sync traffic: collective and training-step times on a corridor.

Stage: model (pure: no root, no network, no I/O). It walks the same schedules
the agents execute (:func:`corridor.agent.collectives.schedule`, pure data), so
prediction and measurement move the same bytes between the same ranks.

One flow of ``b`` bytes from rank i to rank j over the path between their sites
(``PathParams``: bottleneck rate R, one-way delay d, RTT, loss p):

- bandwidth term: per TCP connection the rate is the least of
  * its share of the bottleneck's payload rate, R · MSS/(MSS + headers) /
    (connections crossing it at once),
  * the window limit, window / RTT (socket buffer, or autotuning's ceiling),
  * the loss limit (Mathis et al.), MSS / RTT · C / sqrt(p), C = sqrt(3/2) for
    reno, CUBIC's response function for cubic; BBR does not back off on random
    loss, so none for bbr;
  a flow split over s parallel streams gets s of those;
- latency term: d (the last byte's trip) plus a fixed per-step software cost;
- slow start (cold connections only: first use, or idle longer than the RTO
  with ``tcp_slow_start_after_idle``): the window opens from 10 segments,
  doubling once per RTT, until it reaches the rate × RTT it needs; the bytes
  sent in those rounds go at the slow-start pace.

The loss limit is a long-run figure: a loss-based sender reaches it only after
many loss events. A run of a few dozen steps that sees a loss every 10^5
packets spends most of its steps on the window slow start left it with, cut by
each loss since: leaving slow start, the window overshoots the path (BDP plus
the bottleneck queue) and is cut once (x0.7 for cubic, x0.5 for reno); then
every 1/p packets cut it again, while CUBIC's cubic function (or reno's one
segment per RTT) regrows it over the time the connection is busy. So training
step times are walked step by step with that window (:func:`window_trajectory`)
and the predicted figure is the median over the steps after the first, the
statistic the verdict compares; ``steady_step_time_s`` keeps the long-run
(loss-limited) figure.

Steps are combined in a max-plus recurrence, not by adding worst cases: each
rank's clock advances when its own sends have left (b/rate) and its receives
have arrived (sender's clock + d + b/rate). A ring therefore runs at
max(b/R, (sum of one-way delays around the ring)/n) per step, which is what the
measurement shows. Schedules too large to walk (thousands of ranks) walk the
first repetitions of each step and extrapolate the steady increment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corridor.agent.collectives import ALGORITHMS, Step, bytes_sent, schedule
from corridor.planning.plan import PathParams

PathFn = Callable[[str, str], PathParams]

MSS_BYTES = 1448
INITIAL_CWND_SEGMENTS = 10
#: Window assumed when the socket buffers are left to autotuning (tcp_rmem max 16 MiB; about half is window).
DEFAULT_WINDOW_BYTES = 8 * 1024 * 1024
MATHIS_C = math.sqrt(1.5)
#: Linux's minimum retransmission timeout: idle longer than RTO restarts slow start.
RTO_MIN_S = 0.2
#: Walk at most this many flow-steps before extrapolating.
_WALK_BUDGET = 400_000
#: CUBIC's constants (RFC 8312): window growth C (segments/s^3) and the multiplicative decrease.
CUBIC_C = 0.4
BETA = {"cubic": 0.7, "reno": 0.5}


@dataclass(frozen=True)
class TcpAssumptions:
    """How the model's TCP behaves."""

    cc: str = "bbr"
    streams: int = 1
    window_bytes: int = DEFAULT_WINDOW_BYTES
    mss_bytes: int = MSS_BYTES
    initial_cwnd_segments: int = INITIAL_CWND_SEGMENTS
    warm: bool = True
    step_overhead_s: float = 100e-6
    #: IP + TCP header bytes per segment (20 + 20 + 12 of timestamps): the link charges them, TCP's payload does not.
    header_bytes: int = 52
    #: Rate assumed when a path reports none (0): a LAN without shaping.
    unshaped_rate_mbps: float = 10_000.0
    #: Apply the long-run loss limit (off while a step walk tracks the window itself).
    loss_limited: bool = True


@dataclass(frozen=True)
class CollectivePrediction:
    algorithm: str
    size_bytes: int
    n_ranks: int
    time_s: float
    latency_s: float  # the same schedule with zero-byte flows: the latency term alone
    bandwidth_s: float  # time_s - latency_s
    wan_bytes: int
    total_bytes: int
    per_step: list[float] = field(default_factory=list, repr=False)


def connection_rate_bps(path: PathParams, connections: int, tcp: TcpAssumptions) -> float:
    """Throughput of one TCP connection sharing the path's bottleneck with ``connections`` in all."""
    rate_mbps = path.rate_mbps if path.rate_mbps > 0 else tcp.unshaped_rate_mbps
    payload_share = tcp.mss_bytes / (tcp.mss_bytes + tcp.header_bytes)
    share = rate_mbps * 1e6 * payload_share / max(1, connections)
    rtt_s = path.rtt_ms / 1e3
    if rtt_s <= 0:
        return share
    window = tcp.window_bytes * 8 / rtt_s
    limits = [share, window]
    loss_limit = loss_limited_bps(path.loss, rtt_s, tcp)
    if loss_limit is not None:
        limits.append(loss_limit)
    return min(limits)


def loss_limited_bps(loss: float, rtt_s: float, tcp: TcpAssumptions) -> float | None:
    """Steady-state throughput under random loss ``loss``; None when the congestion control ignores it.

    reno: Mathis, MSS/RTT · sqrt(3/2)/sqrt(p). cubic: the larger of that and
    CUBIC's response function (RFC 8312 §5.1: average window
    (C(3+β)/(4(1-β)))^(1/4) · RTT^(3/4)/p^(3/4) segments, C=0.4, β=0.7).
    bbr: not loss-driven below its 20 % loss threshold.
    """
    if loss <= 0 or rtt_s <= 0 or tcp.cc == "bbr" or not tcp.loss_limited:
        return None
    mathis = tcp.mss_bytes * 8 / rtt_s * MATHIS_C / math.sqrt(loss)
    if tcp.cc != "cubic":
        return mathis
    c, beta = 0.4, 0.7
    window_segments = (c * (3 + beta) / (4 * (1 - beta))) ** 0.25 * rtt_s**0.75 / loss**0.75
    return max(mathis, window_segments * tcp.mss_bytes * 8 / rtt_s)


def slow_start_extra_s(size_bytes: float, rate_bps: float, rtt_s: float, tcp: TcpAssumptions) -> float:
    """Extra time a cold connection needs to move ``size_bytes`` versus one already at ``rate_bps``."""
    if rtt_s <= 0 or size_bytes <= 0:
        return 0.0
    target = rate_bps / 8 * rtt_s  # bytes per RTT at full rate
    cwnd = float(tcp.initial_cwnd_segments * tcp.mss_bytes)
    sent = 0.0
    t = 0.0
    while cwnd < target and sent + cwnd < size_bytes:
        sent += cwnd
        cwnd *= 2
        t += rtt_s
    # time the warm connection would have spent on the bytes sent during slow start
    return max(0.0, t - sent * 8 / rate_bps)


def flow_time_s(
    size_bytes: float, path: PathParams, connections: int, tcp: TcpAssumptions, *, warm: bool | None = None
) -> tuple[float, float]:
    """(sender busy time, time until the last byte arrives) for one flow on ``path``."""
    streams = max(1, tcp.streams)
    conn_rate = connection_rate_bps(path, connections, tcp)
    rate = conn_rate * streams
    ser = size_bytes * 8 / rate if size_bytes > 0 else 0.0
    arrive = path.one_way_ms / 1e3 + ser
    if not (tcp.warm if warm is None else warm):
        arrive += slow_start_extra_s(size_bytes / streams, conn_rate, path.rtt_ms / 1e3, tcp)
    return ser, arrive


def _step_costs(step: Step, sites: list[str], path_fn: PathFn, tcp: TcpAssumptions, scale: float,
                warm: bool = True) -> list[tuple[int, int, float, float]]:
    """Per flow of a step: (src, dst, sender busy, arrival delay); ``scale`` multiplies bytes."""
    conns: dict[tuple[Any, ...], int] = {}
    keys: list[list[tuple[Any, ...]]] = []
    streams = max(1, tcp.streams)
    for f in step.flows:
        a, b = sites[f.src], sites[f.dst]
        path = path_fn(a, b)
        fk: list[tuple[Any, ...]] = [("wan", link, a, b) for link in path.wan_links] or [("lan", f.src)]
        keys.append(fk)
        for k in fk:
            conns[k] = conns.get(k, 0) + streams
    out = []
    for f, fk in zip(step.flows, keys, strict=True):
        path = path_fn(sites[f.src], sites[f.dst])
        share = max(conns[k] for k in fk) // streams * streams
        ser, arrive = flow_time_s(f.size_bytes * scale, path, share, tcp, warm=warm)
        out.append((f.src, f.dst, ser, arrive))
    return out


def _walk(steps: list[Step], n: int, sites: list[str], path_fn: PathFn, tcp: TcpAssumptions, scale: float
          ) -> tuple[float, list[float]]:
    """Max-plus walk of the schedule; a cold connection pays slow start on its first use only."""
    clock = [0.0] * n
    per_step: list[float] = []
    used: set[tuple[int, int]] = set()
    for step in steps:
        warm_costs = _step_costs(step, sites, path_fn, tcp, scale, warm=True)
        cold_costs = warm_costs if tcp.warm else _step_costs(step, sites, path_fn, tcp, scale, warm=False)
        involved = {c[0] for c in warm_costs} | {c[1] for c in warm_costs}
        before = max(clock)
        reps = step.repeat
        budget_reps = max(2, _WALK_BUDGET // max(1, len(warm_costs)))
        walk_reps = min(reps, budget_reps)
        last_inc = 0.0
        for _ in range(walk_reps):
            prev_max = max(clock)
            new = list(clock)
            for warm_cost, cold_cost in zip(warm_costs, cold_costs, strict=True):
                src, dst = warm_cost[0], warm_cost[1]
                _, _, ser, arrive = warm_cost if (src, dst) in used else cold_cost
                new[src] = max(new[src], clock[src] + ser)
                new[dst] = max(new[dst], clock[src] + arrive)
            used.update((c[0], c[1]) for c in warm_costs)
            for r in involved:
                new[r] += tcp.step_overhead_s
            clock = new
            last_inc = max(clock) - prev_max
        if reps > walk_reps:
            extra = (reps - walk_reps) * last_inc
            clock = [c + extra for c in clock]
        per_step.append(max(clock) - before)
    return max(clock) if clock else 0.0, per_step


def collective_time(
    algorithm: str,
    size_bytes: int,
    sites: list[str],
    path_fn: PathFn,
    *,
    tcp: TcpAssumptions | None = None,
) -> CollectivePrediction:
    """Predicted time of one ``algorithm`` collective of ``size_bytes`` on ranks at ``sites``.

    ``sites[i]`` is rank i's site; ``path_fn(src_site, dst_site)`` gives the
    path (``Plan.path_params`` or a table of PathParams).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    tcp = tcp or TcpAssumptions()
    n = len(sites)
    steps = schedule(algorithm, size_bytes, sites)
    total, wan = bytes_sent(steps, sites)
    t, per_step = _walk(steps, n, sites, path_fn, tcp, 1.0)
    lat, _ = _walk(steps, n, sites, path_fn, tcp, 0.0)
    return CollectivePrediction(algorithm, size_bytes, n, t, lat, max(0.0, t - lat), wan, total, per_step)


def busbw_ceiling_gbps(path: PathParams, tcp: TcpAssumptions | None = None) -> float:
    """The bus bandwidth a bandwidth-bound ring can reach across ``path``: its per-flow rate."""
    tcp = tcp or TcpAssumptions()
    return connection_rate_bps(path, 1, tcp) * max(1, tcp.streams) / 1e9


def rto_s(sites: list[str], path_fn: PathFn) -> float:
    worst = max((path_fn(a, b).rtt_ms for a in set(sites) for b in set(sites)), default=0.0)
    return RTO_MIN_S + worst / 1e3


def window_trajectory(path: PathParams, packets_per_step: float, steps: int, busy_s: Callable[[float], float],
                      tcp: TcpAssumptions) -> list[float]:
    """Congestion window (bytes) of one loss-based connection at the start of each step after the first.

    The first step ends slow start by overshooting the path (BDP plus the
    bottleneck queue), which costs one cut; afterwards a loss comes every
    ``1/p`` packets (``packets_per_step`` per step) and each cuts the window by
    beta, and the window regrows over the time the connection is busy
    (``busy_s(window)``: the step's communication time with that window) by
    CUBIC's cubic function or reno's segment per RTT. Expected values, not a
    random draw: the median step of a run sits near this path.
    """
    beta = BETA.get(tcp.cc, 0.7)
    mss = tcp.mss_bytes
    rtt_s = path.rtt_ms / 1e3
    rate_bps = (path.rate_mbps if path.rate_mbps > 0 else tcp.unshaped_rate_mbps) * 1e6
    ceiling = tcp.window_bytes / mss
    w_max = min((rate_bps / 8 * rtt_s + path.queue_bytes) / mss, ceiling)
    w = max(beta * w_max, tcp.initial_cwnd_segments)
    since_loss_s = 0.0
    debt = 0.0  # expected losses not yet taken
    out: list[float] = []
    for _ in range(max(0, steps - 1)):
        out.append(w * mss)
        busy = busy_s(w * mss)
        debt += packets_per_step * path.loss
        since_loss_s += busy
        if tcp.cc == "cubic":
            k = (w_max * (1 - beta) / CUBIC_C) ** (1 / 3)
            grown = CUBIC_C * (since_loss_s - k) ** 3 + w_max
        else:
            grown = w + (busy / rtt_s if rtt_s > 0 else 0.0)
        w = min(max(w, grown), ceiling)
        while debt >= 1.0:
            debt -= 1.0
            w_max = w
            w = max(beta * w, 2.0)
            since_loss_s = 0.0
    return out


def training_step_time(params: Any, sites: list[str], path_fn: PathFn, *, tcp: TcpAssumptions | None = None
                       ) -> dict[str, Any]:
    """Predicted step time of a training workload (``TrainingParams``-like ``params``) on ranks at ``sites``.

    The pattern (:mod:`corridor.workloads.training.patterns`) walks the same
    schedule its agents run. Returns ``step_time_s``, ``compute_s``, ``comm_s``,
    ``exposed_comm_s``, ``wan_bytes`` (all ranks, one step) and the pattern's
    extras: for diloco ``outer_step_time_s`` and ``mean_step_time_s``; for
    bucketed data parallelism with a loss-based congestion control on a lossy
    path, ``step_time_s`` is the median over steps 2..``params.steps`` of the
    step walk (see the module docstring), ``steady_step_time_s`` the long-run
    loss-limited step and ``first_step_time_s``/``last_step_time_s`` the ends
    of the walk.
    """
    from corridor.workloads.training.patterns import PATTERNS

    if params.pattern not in PATTERNS:
        raise ValueError(f"unknown training pattern {params.pattern!r}")
    return PATTERNS[params.pattern].predict(params, sites, path_fn, tcp or TcpAssumptions())


def median(values: list[float]) -> float:
    from corridor.stats import median

    return median(values)


def lossiest_wan_path(sites: list[str], path_fn: PathFn) -> PathParams | None:
    """The WAN path between the ranks' sites with the most loss (then the longest RTT); None if lossless."""
    paths = [path_fn(a, b) for a in dict.fromkeys(sites) for b in dict.fromkeys(sites) if a != b]
    lossy = [p for p in paths if p.wan_links and p.loss > 0]
    return max(lossy, key=lambda p: (p.loss, p.rtt_ms)) if lossy else None


def wan_connections(steps: list[Step], sites: list[str]) -> int:
    """Distinct rank-to-rank connections of a schedule that cross between sites."""
    return len({(f.src, f.dst) for st in steps for f in st.flows if sites[f.src] != sites[f.dst]})
