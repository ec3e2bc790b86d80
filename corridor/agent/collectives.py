"""Collective algorithms as schedules of flows, and their execution on an agent.

Stage: workload run (standard library only). A schedule is pure data: a list of
:class:`Step` s, each a set of concurrent :class:`Flow` s (src rank, dst rank,
bytes) repeated ``repeat`` times. The agent executes its own part of every step
(post its sends and receives, wait for them); the analytic model
(:mod:`corridor.workloads.training.model`) walks the same schedule, so measured and
predicted runs move exactly the same bytes between the same ranks.

Algorithms (``n`` ranks, ``S`` bytes):

- ``ring`` all-reduce: reduce-scatter then all-gather, 2(n-1) steps of S/n; the
  ring visits ranks site by site, so it crosses each site boundary once per
  direction.
- ``hierarchical`` all-reduce: ring reduce-scatter inside each site (S/g per
  step), members hand their shard to the site leader, ring all-reduce among the
  leaders across the WAN (2(m-1) steps of S/m), leaders hand shards back, ring
  all-gather inside each site. WAN bytes: 2(m-1)·S in total against about
  2·m·S·(n-1)/n for the flat ring.
- ``halving_doubling`` all-reduce (Rabenseifner): recursive-halving
  reduce-scatter and recursive-doubling all-gather, 2·log2(n) steps; n must be a
  power of two.
- ``all_gather`` and ``reduce_scatter``: ring, n-1 steps of S/n.
- ``parameter_server``: every rank pushes S to rank 0, rank 0 sends S back.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corridor.agent.runtime import Agent

#: nccl-tests bus-bandwidth factor per collective, as a function of n (DESIGN.md).
BUSBW_FACTORS = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
    "send_recv": lambda n: 1.0,
}

#: algorithm name -> the collective it implements (for the busbw factor)
ALGORITHMS: dict[str, str] = {
    "ring": "all_reduce",
    "hierarchical": "all_reduce",
    "halving_doubling": "all_reduce",
    "all_gather": "all_gather",
    "reduce_scatter": "reduce_scatter",
    "parameter_server": "reduce",
    "all_to_all": "all_to_all",
}


class ScheduleError(ValueError):
    """An algorithm cannot run on this rank layout."""


@dataclass(frozen=True)
class Flow:
    src: int
    dst: int
    size_bytes: int


@dataclass(frozen=True)
class Step:
    """Concurrent flows; the whole step runs ``repeat`` times in a row."""

    flows: tuple[Flow, ...]
    repeat: int = 1


def busbw_factor(algorithm: str, n: int) -> float:
    return BUSBW_FACTORS[ALGORITHMS[algorithm]](n)


def site_groups(sites: list[str]) -> list[list[int]]:
    """Ranks grouped by site, sites in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for rank, site in enumerate(sites):
        groups.setdefault(site, []).append(rank)
    return list(groups.values())


def ring_order(sites: list[str]) -> list[int]:
    """Ranks ordered site by site, so a ring crosses each site boundary once."""
    return [r for group in site_groups(sites) for r in group]


def _chunks(size_bytes: int, parts: int) -> int:
    return -(-size_bytes // parts) if parts else 0


def _ring_steps(order: list[int], chunk_bytes: int, repeat: int) -> list[Step]:
    k = len(order)
    if k < 2 or repeat < 1 or chunk_bytes <= 0:
        return []
    flows = tuple(Flow(order[i], order[(i + 1) % k], chunk_bytes) for i in range(k))
    return [Step(flows, repeat)]


def _ring_steps_many(orders: list[list[int]], size_bytes: int) -> list[Step]:
    """Rings that run side by side (one per site), each g-1 steps of S/g; shorter rings finish early."""
    lengths = sorted({len(o) - 1 for o in orders if len(o) >= 2})
    steps: list[Step] = []
    done = 0
    for until in lengths:  # between two ring lengths the set of live rings does not change
        flows: list[Flow] = []
        for order in orders:
            g = len(order)
            if g - 1 >= until:
                chunk = _chunks(size_bytes, g)
                flows.extend(Flow(order[j], order[(j + 1) % g], chunk) for j in range(g))
        steps.append(Step(tuple(flows), until - done))
        done = until
    return steps


def schedule(algorithm: str, size_bytes: int, sites: list[str]) -> list[Step]:
    """The steps of ``algorithm`` on ranks whose sites are ``sites`` (index = rank)."""
    n = len(sites)
    if n < 1:
        raise ScheduleError("a collective needs at least one rank")
    if size_bytes < 0:
        raise ScheduleError(f"size must be >= 0, got {size_bytes}")
    if n == 1 or size_bytes == 0:
        return []
    if algorithm == "ring":
        return _ring_steps(ring_order(sites), _chunks(size_bytes, n), 2 * (n - 1))
    if algorithm == "all_gather" or algorithm == "reduce_scatter":
        return _ring_steps(ring_order(sites), _chunks(size_bytes, n), n - 1)
    if algorithm == "halving_doubling":
        if n & (n - 1):
            raise ScheduleError(f"halving_doubling needs a power-of-two number of ranks, got {n}")
        order = ring_order(sites)
        steps: list[Step] = []
        rounds = n.bit_length() - 1
        # recursive halving: partner distance n/2, n/4, ... on site-ordered positions,
        # so the first (largest) exchange is the one that crosses sites least often at scale
        for k in range(rounds):
            dist = n >> (k + 1)
            chunk = _chunks(size_bytes, 2 ** (k + 1))
            steps.append(Step(tuple(Flow(order[i], order[i ^ dist], chunk) for i in range(n))))
        steps.extend(reversed(steps))
        return steps
    if algorithm == "parameter_server":
        push = tuple(Flow(r, 0, size_bytes) for r in range(1, n))
        pull = tuple(Flow(0, r, size_bytes) for r in range(1, n))
        return [Step(push), Step(pull)]
    if algorithm == "hierarchical":
        groups = site_groups(sites)
        leaders = [g[0] for g in groups]
        steps = list(_ring_steps_many(groups, size_bytes))  # reduce-scatter in each site
        gather = tuple(Flow(r, g[0], _chunks(size_bytes, len(g))) for g in groups for r in g[1:])
        if gather:
            steps.append(Step(gather))
        steps.extend(_ring_steps(leaders, _chunks(size_bytes, len(leaders)), 2 * (len(leaders) - 1)))
        scatter = tuple(Flow(g[0], r, _chunks(size_bytes, len(g))) for g in groups for r in g[1:])
        if scatter:
            steps.append(Step(scatter))
        steps.extend(_ring_steps_many(groups, size_bytes))  # all-gather in each site
        return steps
    if algorithm == "all_to_all":
        # pairwise exchange: in step k every rank sends its 1/n share to the rank k positions on, so each
        # step keeps every link busy and after n-1 steps every rank has every other rank's share
        chunk = _chunks(size_bytes, n)
        return [Step(tuple(Flow(i, (i + k) % n, chunk) for i in range(n))) for k in range(1, n)]
    raise ScheduleError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


def bytes_sent(steps: list[Step], sites: list[str]) -> tuple[int, int]:
    """(total bytes, bytes between ranks of different sites) a schedule moves."""
    total = wan = 0
    for step in steps:
        for f in step.flows:
            total += f.size_bytes * step.repeat
            if sites[f.src] != sites[f.dst]:
                wan += f.size_bytes * step.repeat
    return total, wan


def execute(agent: Agent, steps: list[Step]) -> None:
    """Run this rank's part of every step (real bytes over the mesh)."""
    engine = agent.engine
    assert engine is not None
    me = agent.rank
    for step in steps:
        sends = [(f.dst, f.size_bytes) for f in step.flows if f.src == me]
        recvs = [(f.src, f.size_bytes) for f in step.flows if f.dst == me]
        if not sends and not recvs:
            continue
        for _ in range(step.repeat):
            engine.exchange(sends, recvs)


_MAX_ITERS = 100


def warmup_iterations(size_bytes: int, requested: int | None) -> int:
    """Untimed runs before timing: as asked, or (None) enough to move 64 MiB, from 2 to 5.

    TCP needs a few round trips at a new burst size before its state (BBR's
    bandwidth estimate, CUBIC's window after the first overshoot) settles;
    small sizes reach that only after several runs, large ones within one.
    """
    if requested is not None:
        return max(0, int(requested))
    return max(2, min(5, -(-(64 << 20) // max(1, size_bytes))))


def role_collective(agent: Agent) -> None:
    """Bench role: for each size, warm up then time ``iters`` back-to-back runs of the algorithm.

    job: {"algorithm": str, "sizes_bytes": [int], "iters": int, "warmup": int | None, "min_time_s": float}
    Timed runs: at least ``iters``, and more (up to 100) until ``min_time_s`` has passed.
    Emits one ``collective_rank`` record per size with this rank's mean time.
    """
    job = agent.cfg.job
    algorithm = job["algorithm"]
    sites = [agent.peers[r].site for r in range(agent.n)]
    k = agent.cfg.time_scale
    for size in job["sizes_bytes"]:
        steps = schedule(algorithm, int(size), sites)
        n_warm = warmup_iterations(int(size), job.get("warmup"))
        t0 = time.monotonic()
        for _ in range(n_warm):
            execute(agent, steps)
        per_run_s = (time.monotonic() - t0) / n_warm if n_warm else 0.0
        # timed runs: at least ``iters``, more until about min_time_s; rank 0 decides from its warm-up
        # pace and tells the others over the control channel before timing starts (a decision taken
        # inside the timed loop would cost every remote rank a WAN crossing per run)
        iters = int(job.get("iters", 3))
        min_time_s = float(job.get("min_time_s", 0.0)) * k
        if per_run_s > 0 and min_time_s > 0:
            iters = max(iters, min(_MAX_ITERS, math.ceil(min_time_s / per_run_s)))
        iters = agent.agree_int(iters)
        wan0 = agent.wan_tx_bytes()
        times = []
        # runs go back to back after one synchronised start, as nccl-tests does: a barrier
        # between them would leave the connections idle long enough for TCP to restart slow start
        t_prev = agent.synced_start(f"size-{size}")
        for _ in range(iters):
            execute(agent, steps)
            t_now = time.monotonic()
            times.append((t_now - t_prev) / k)
            t_prev = t_now
        agent.emit(
            {
                "kind": "collective_rank",
                "algorithm": algorithm,
                "size_bytes": int(size),
                "n_ranks": agent.n,
                "iters": iters,
                "time_s": sum(times) / len(times),
                "times_s": times,
                "wan_bytes": (agent.wan_tx_bytes() - wan0) // max(1, iters),
                "cc": agent.cc_in_use,
                "streams": agent.cfg.streams,
                "time_scale": k,
            }
        )
