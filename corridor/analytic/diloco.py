"""Analytic model of cross-site training with infrequent synchronisation: data parallel, DiLoCo, Streaming DiLoCo.

Stage: model (pure: no root, no network, no I/O). It answers two questions for
a model split over ``workers`` sites joined by a link of a given bandwidth:
what fraction of wall time is compute (the compute utilisation, CU), and what
bandwidth reaches a target CU. It covers the knobs of Streaming DiLoCo
(Douillard et al., arXiv 2501.18512): model size and layer count, step time,
inner steps H, fragments of a few layers synchronised in turn (strided or
sequential), overlap of the exchange with the next tau inner steps, and the
precision of the exchanged (outer) gradients (fp32, bf16, int8, fp4).

The schedule is walked layer by layer, as the paper's simulator does (one node
per layer for forward, backward and reduction):

- an inner step is a forward pass (a third of the step time, split evenly over
  the layers) then a backward pass (two thirds), run from the last layer down;
- a layer's gradient (data parallel) or outer gradient (DiLoCo) is ready when
  its backward finishes, and its all-reduce then waits for the link, which
  carries one reduction at a time in the order they became ready (FIFO). Each
  worker sends 2(R-1)/R of the layer's bytes (a ring all-reduce, the
  2N/W (1-1/R) of the companion scaling-law paper, arXiv 2503.09799 appendix A);
- without overlap, the next forward pass of a layer waits for that layer's
  reduction, so reductions hide behind the rest of the backward pass and the
  earlier layers of the next forward pass;
- with overlap tau, a fragment sent at step t is needed only before step
  t + tau + 1 starts, so it has tau whole steps more;
- data parallel synchronises every layer every step; DiLoCo every layer every
  H steps; Streaming DiLoCo fragment p of P every H steps at offset
  floor(p H / P), so one fragment goes every H/P steps.

CU is compute time over wall time in steady state (two cycles of H steps after
two cycles of warm-up). CU grows with bandwidth, so :func:`bandwidth_for`
finds the bandwidth for a target CU by bisection on a log scale.

Not modelled: the bandwidth inside a site (the paper leaves it out too), the
embedding table as its own fragment, and merging (alpha), which changes what is
learnt, not the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from corridor.errors import CorridorError

#: Bits per exchanged value.
PRECISION_BITS: dict[str, int] = {"fp32": 32, "bf16": 16, "int8": 8, "fp4": 4}
PATTERNS = ("strided", "sequential")


class DilocoModelError(CorridorError):
    """A training case or method for the DiLoCo model is out of range."""


@dataclass(frozen=True)
class TrainedModel:
    """The model being trained: parameter count, transformer layers, pure-compute time of one inner step."""

    params: float
    layers: int
    step_time_s: float
    backward_fraction: float = 2.0 / 3.0  # backward is twice the forward's flops

    def __post_init__(self) -> None:
        if self.params <= 0 or self.layers < 1 or self.step_time_s <= 0:
            raise DilocoModelError(
                f"model shape needs params > 0, layers >= 1 and step time > 0 (got {self.params:g}, "
                f"{self.layers}, {self.step_time_s:g} s); give positive values"
            )
        if not 0 < self.backward_fraction < 1:
            raise DilocoModelError(f"backward_fraction {self.backward_fraction:g} must be between 0 and 1 exclusive")


@dataclass(frozen=True)
class SyncMethod:
    """How the workers synchronise. ``inner_steps`` 1 with no fragments is data parallel."""

    name: str
    inner_steps: int = 1
    fragment_layers: int | None = None  # None: the whole model at once
    pattern: str = "strided"
    overlap_steps: int = 0
    precision: str = "bf16"
    workers: int = 2

    def __post_init__(self) -> None:
        if self.inner_steps < 1:
            raise DilocoModelError(f"{self.name}: inner_steps must be at least 1, got {self.inner_steps}")
        if self.fragment_layers is not None and self.fragment_layers < 1:
            raise DilocoModelError(f"{self.name}: fragment_layers must be at least 1, got {self.fragment_layers}")
        if self.pattern not in PATTERNS:
            raise DilocoModelError(f"{self.name}: unknown pattern {self.pattern!r}; allowed: {', '.join(PATTERNS)}")
        if not 0 <= self.overlap_steps < self.inner_steps or (self.inner_steps == 1 and self.overlap_steps):
            raise DilocoModelError(
                f"{self.name}: overlap_steps must be at least 0 and below inner_steps ({self.inner_steps}), "
                f"got {self.overlap_steps}"
            )
        if self.precision not in PRECISION_BITS:
            raise DilocoModelError(
                f"{self.name}: unknown precision {self.precision!r}; allowed: {', '.join(PRECISION_BITS)}"
            )
        if self.workers < 2:
            raise DilocoModelError(f"{self.name}: needs at least 2 workers to synchronise, got {self.workers}")


#: The five methods of Streaming DiLoCo's Table 4 (H = 100, fragments of 3 layers, tau = 1).
TABLE4_METHODS: dict[str, SyncMethod] = {
    "data-parallel": SyncMethod("data-parallel"),
    "diloco": SyncMethod("diloco", inner_steps=100),
    "streaming": SyncMethod("streaming", inner_steps=100, fragment_layers=3),
    "streaming-overlap": SyncMethod("streaming-overlap", inner_steps=100, fragment_layers=3, overlap_steps=1),
    "streaming-overlap-fp4": SyncMethod(
        "streaming-overlap-fp4", inner_steps=100, fragment_layers=3, overlap_steps=1, precision="fp4"
    ),
}


def fragments(layers: int, method: SyncMethod) -> list[tuple[int, ...]]:
    """The layer sets synchronised together (layers numbered 1..layers, input side first)."""
    if method.fragment_layers is None or method.fragment_layers >= layers:
        return [tuple(range(1, layers + 1))]
    count = math.ceil(layers / method.fragment_layers)
    if method.pattern == "sequential":
        return [tuple(range(p * method.fragment_layers + 1, min(layers, (p + 1) * method.fragment_layers) + 1))
                for p in range(count)]
    return [tuple(range(p + 1, layers + 1, count)) for p in range(count)]


def sync_plan(layers: int, method: SyncMethod) -> dict[int, list[tuple[int, ...]]]:
    """Step index within a cycle of H steps (0..H-1) -> fragments sent at the end of that step.

    Fragment p of P goes at the end of step (H - 1 + floor(p H / P)) mod H, so
    the whole model (p = 0) goes on the cycle's last step, as DiLoCo's outer
    step does, and the others follow every H / P steps.
    """
    frags = fragments(layers, method)
    h = method.inner_steps
    plan: dict[int, list[tuple[int, ...]]] = {}
    for p, frag in enumerate(frags):
        step = (h - 1 + (p * h) // len(frags)) % h
        plan.setdefault(step, []).append(frag)
    return plan


def walk_steps(
    layers: int, step_time_s: float, method: SyncMethod, layer_s: float, *, first_layer_s: float | None = None,
    backward_fraction: float = 2.0 / 3.0,
) -> list[float]:
    """Wall time of every step of two cycles of H inner steps, in steady state (after two cycles of warm-up).

    ``layer_s`` is one layer's reduction from the moment the link takes it to
    the moment it is done (serialisation and latency); ``first_layer_s``, where
    given, is the first reduction of each step that sends instead (a connection
    that went idle starts over in slow start). The link carries one reduction
    at a time, in the order they became ready. See the module docstring for the
    schedule; :class:`corridor.workloads.training.patterns.StreamingDiLoCo`
    runs the same schedule in the agents.
    """
    forward_s = step_time_s * (1 - backward_fraction)
    backward_s = step_time_s * backward_fraction
    f_layer, b_layer = forward_s / layers, backward_s / layers
    first_s = layer_s if first_layer_s is None else first_layer_s
    plan = sync_plan(layers, method)
    h = max(method.inner_steps, 1)
    cycles_warm, cycles_measured = 2, 2

    t = 0.0
    link_free = 0.0
    need: dict[int, float] = {}  # layer -> reduction done (non-overlapped: before that layer's next forward)
    deadlines: dict[int, float] = {}  # global step -> all reductions it waits for are done (overlapped)
    durations: list[float] = []
    for step in range((cycles_warm + cycles_measured) * h):
        start = t
        t = max(t, deadlines.pop(step, 0.0))
        # Forward: a layer starts when the one below is done and its own reduction has arrived.
        delay = 0.0
        for layer_no in sorted(need):
            nominal = t + (layer_no - 1) * f_layer
            delay = max(delay, need[layer_no] - nominal)
        need = {}
        t += forward_s + delay
        backward_start = t
        t += backward_s
        # the step's fragments' layers are ready from the top of the network down, and go in that order
        sent = sorted((n for frag in plan.get(step % h, ()) for n in frag), reverse=True)
        for i, layer_no in enumerate(sent):
            ready = backward_start + (layers - layer_no + 1) * b_layer
            done = max(link_free, ready) + (first_s if i == 0 else layer_s)
            link_free = done  # one reduction at a time, latency included
            if method.overlap_steps == 0:
                need[layer_no] = done
            else:
                due = step + method.overlap_steps + 1
                deadlines[due] = max(deadlines.get(due, 0.0), done)
        if step >= cycles_warm * h:
            durations.append(t - start)
    return durations


def utilisation(
    model: TrainedModel, method: SyncMethod, bandwidth_gbps: float, *, latency_s: float = 0.0
) -> float:
    """Compute utilisation (0..1) in steady state at ``bandwidth_gbps`` per worker, one way.

    ``latency_s`` is added to every layer's all-reduce after it leaves the link
    (a ring's 2(R-1) one-way delays, say), and the link takes the next
    reduction only when that one is done: collectives run one at a time, as
    NCCL runs the all-reduces of one stream and corridor's agents run their
    buckets, so 24 per-layer reductions pay 24 latencies. The table this model
    reproduces assumes none.
    """
    if bandwidth_gbps <= 0:
        raise DilocoModelError(f"bandwidth must be above 0 Gbit/s, got {bandwidth_gbps:g}")
    r = method.workers
    bits_per_layer = model.params / model.layers * PRECISION_BITS[method.precision] * 2 * (r - 1) / r
    ser_s = bits_per_layer / (bandwidth_gbps * 1e9)
    durations = walk_steps(model.layers, model.step_time_s, method, ser_s + latency_s,
                           backward_fraction=model.backward_fraction)
    return len(durations) * model.step_time_s / sum(durations)


def bandwidth_for(
    model: TrainedModel,
    method: SyncMethod,
    target: float,
    *,
    latency_s: float = 0.0,
    lo_gbps: float = 1e-4,
    hi_gbps: float = 1e6,
    rel_tol: float = 1e-3,
) -> float:
    """The least bandwidth (Gbit/s) at which :func:`utilisation` reaches ``target``; bisection on a log scale.

    Raises DilocoModelError when even ``hi_gbps`` does not reach it (with
    latency, or a target of 1, some targets are out of reach).
    """
    if not 0 < target < 1:
        raise DilocoModelError(f"target utilisation {target:g} must be between 0 and 1 exclusive")
    if utilisation(model, method, hi_gbps, latency_s=latency_s) < target:
        raise DilocoModelError(
            f"{method.name}: {target:.0%} compute utilisation is out of reach even at {hi_gbps:g} Gbit/s; "
            "lower the target or the latency"
        )
    if utilisation(model, method, lo_gbps, latency_s=latency_s) >= target:
        return lo_gbps
    lo, hi = math.log(lo_gbps), math.log(hi_gbps)
    while hi - lo > rel_tol:
        mid = (lo + hi) / 2
        if utilisation(model, method, math.exp(mid), latency_s=latency_s) >= target:
            hi = mid
        else:
            lo = mid
    return math.exp(hi)
