"""The link contract: what one direction of an emulated WAN link must do.

Stage: plan (pure). One direction is a drop-tail queue of ``queue_bytes`` (or
``queue_packets``) drained at ``rate_mbps``, then a wire of one-way delay
``delay_ms`` with bounded jitter ``jitter_ms`` (no reordering unless
``reorder`` is set) and random loss ``loss`` (optionally Gilbert-Elliott
bursts). Every backend (netem, userspace) takes exactly these numbers, and
both count IP bytes: a packet's serialisation time is its IP length over R,
and Q holds IP bytes (the Ethernet header is not part of the link).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from corridor.errors import CorridorError

MTU_BYTES = 1500


@dataclass(frozen=True)
class GilbertElliott:
    """Two-state burst loss: Good/Bad states with per-packet transition probabilities."""

    p_good_to_bad: float
    p_bad_to_good: float
    loss_good: float = 0.0
    loss_bad: float = 1.0

    def mean_loss(self) -> float:
        """Stationary loss rate of the chain."""
        total = self.p_good_to_bad + self.p_bad_to_good
        if total == 0:
            return self.loss_good
        share_bad = self.p_good_to_bad / total
        return (1 - share_bad) * self.loss_good + share_bad * self.loss_bad


@dataclass(frozen=True)
class LinkDirection:
    """One direction of a WAN link. ``rate_mbps`` is bits per second / 1e6."""

    rate_mbps: float
    delay_ms: float
    queue_bytes: int
    jitter_ms: float = 0.0
    loss: float = 0.0
    burst_loss: GilbertElliott | None = None
    queue_packets: int | None = None
    reorder: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not (self.rate_mbps > 0 and math.isfinite(self.rate_mbps)):
            raise CorridorError(f"link rate must be positive, got {self.rate_mbps} Mbit/s")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise CorridorError("link delay and jitter must not be negative")
        if self.jitter_ms > self.delay_ms and not self.reorder:
            raise CorridorError(
                f"jitter {self.jitter_ms} ms exceeds delay {self.delay_ms} ms; jitter is bounded by the delay"
            )
        if not 0 <= self.loss < 1:
            raise CorridorError(f"loss must be in [0, 1), got {self.loss}")
        if self.queue_bytes < MTU_BYTES:
            raise CorridorError(f"queue of {self.queue_bytes} bytes cannot hold one {MTU_BYTES}-byte packet")

    @property
    def rate_bps(self) -> float:
        return self.rate_mbps * 1e6

    def serialisation_s(self, size_bytes: int) -> float:
        """Time to put ``size_bytes`` of IP packet on the wire at this rate."""
        return size_bytes * 8 / self.rate_bps

    def max_queueing_ms(self) -> float:
        """Delay a packet sees behind a full queue: Q / R."""
        return self.queue_bytes * 8 / self.rate_bps * 1e3

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra", None)
        return data


def bdp_bytes(rate_mbps: float, rtt_ms: float) -> int:
    """Bandwidth-delay product R x RTT in bytes."""
    return int(math.ceil(rate_mbps * 1e6 * rtt_ms / 1e3 / 8))


def default_queue_bytes(rate_mbps: float, rtt_ms: float, *, bdp_multiple: float = 1.0) -> int:
    """Drop-tail queue sized from the bandwidth-delay product, never from a packet count.

    At least 64 full-size packets, so very short links still absorb a burst.
    """
    return max(int(bdp_bytes(rate_mbps, rtt_ms) * bdp_multiple), 64 * MTU_BYTES)
