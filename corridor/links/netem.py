"""The ``netem`` link backend as pure argv builders: tc commands for one wire node.

Stage: plan -> emulation boundary (pure). Nothing here runs a command; the
emulation layer executes the lists, inside the wire node's network namespace.

A WAN link is a "wire" node with two interfaces, ``intf_a`` and ``intf_b``.
:func:`wire_setup_argv` makes the node a two-port cable: every frame received
on one interface is redirected (ingress qdisc, u32 match-all, ``mirred egress
redirect``) to the other one's egress. No bridge, so no MAC learning, no STP
and no bridge netfilter; no IP forwarding, so the wire has no addresses and
sends nothing of its own (``addrgenmode none`` keeps IPv6 quiet too).
Direction ``a_to_b`` leaves through ``intf_b`` and ``b_to_a`` through
``intf_a``; :func:`egress_argv` shapes one egress, so delay is applied once
per direction.

Per egress, three qdiscs hold the link contract (DESIGN.md, "Link semantics")::

    root 1:   tbf     rate R, burst from R, peakrate/mtu (splits super-frames); stab -14
      10:     netem   delay D, jitter J (ordered), loss p or Gilbert-Elliott, limit N packets
        20:   bfifo   limit Q bytes (pfifo limit n when the contract counts packets)

- **Rate R (tbf, root).** tbf takes 64-bit rates, so rates above 1 Gbit/s work
  (Mininet's TCLink drops them). Its burst is R x ``BURST_S`` (2 ms of traffic,
  at least 16 full frames), not Mininet's fixed 15 KB: a bucket smaller than
  the timer slack of the dequeue path loses tokens on every late wakeup, which
  costs throughput at corridor rates (15 KB is 120 us at 1 Gbit/s). The peak bucket (``peakrate`` 10 x R, ``mtu``
  2,048 bytes: one frame) is there for its side effect: tbf then splits every GSO/TSO
  super-frame into single segments on enqueue, so loss below hits one segment,
  as on a real wire, whatever offloads the senders keep on.
- **Delay D, jitter J, loss p (netem, child of tbf).** netem applies loss on
  enqueue and holds each packet for D (+- J, uniform). Plain netem jitter
  reorders, because its time-ordered queue sorts by each packet's own send
  time. With ``rate`` set, netem instead schedules each packet no earlier than
  the one before it (``max(previous, now + D +- J) + size/rate``), so jitter
  stays bounded and order is kept. The contract's ``reorder`` flag turns that
  off. The netem rate is 10 x R, so it never throttles; it only orders.
  Gilbert-Elliott loss uses ``loss gemodel p r 1-h 1-k`` and, when given,
  replaces the plain random loss (its mean loss is the contract's rate). netem's ``limit``
  (packets, default 1000) counts the packets it holds, so it is sized from
  R x (D + J + Q/R) in full-size packets, doubled for bursts faster than R and
  smaller packets. A 1 Gbit/s, 22.5 ms link with a 45 ms-RTT queue gives
  11,250, against about 3,750 full-size packets in flight per RTT: netem never
  drops for want of room, only the contract's queue does.
- **Drop-tail queue Q (bfifo, child of netem).** netem moves every packet whose
  delay has elapsed into its child, and tbf pulls from there as tokens allow,
  so the packets waiting for the rate stage sit in this fifo and overflow drops
  at Q bytes, as the contract says. The queue sits after the delay instead of
  before it; for a fifo behind a constant delay the departure times are the
  same, and loss removes packets before they take queue space instead of
  after, which changes nothing measurable at corridor loss rates.
- **Bytes counted are IP bytes.** ``stab overhead -14`` on the root (the
  kernel takes a size table only there) makes each packet's length its IP
  length, which every qdisc below reuses: the contract's serialisation time is
  that of the IP packet, so neither R nor Q counts the Ethernet header. One
  exception: segments that tbf cuts from a super-frame are counted at frame
  length, 14 bytes more per 1,500 (0.9 % slower). Hosts that keep TSO/GSO off
  on their interfaces get exact accounting; with offloads on, loss and order
  are still exact and only that 0.9 % remains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from corridor.errors import CorridorError, EmulationError
from corridor.links.contract import MTU_BYTES, LinkDirection

#: Bytes in front of the IP packet in a frame on a veth (no VLAN tag).
ETH_HEADER_BYTES = 14
#: The token bucket holds this much time of traffic at the link rate...
BURST_S = 0.002
#: ...and at least this many full frames, so slow links survive a late timer too.
BURST_MIN_FRAMES = 16
#: tbf's peak rate as a multiple of the link rate: high enough never to bind.
PEAK_RATE_FACTOR = 10
#: netem's ordering rate as a multiple of the link rate (see module docstring).
ORDER_RATE_FACTOR = 10
#: netem's limit in packets is this multiple of the full-size packets it can hold.
NETEM_LIMIT_HEADROOM = 2
#: netem's own default; never go below it.
NETEM_LIMIT_FLOOR = 1000
#: tbf's peak bucket: one frame with room to spare; a GSO super-frame is longer and gets split.
PEAK_MTU_BYTES = 2048

_HANDLE_RATE = "1:"
_HANDLE_NETEM = "10:"
_HANDLE_QUEUE = "20:"


def _rate_arg(rate_bps: float) -> str:
    return f"{int(round(rate_bps))}bit"


def _time_arg(duration_ms: float) -> str:
    return f"{int(round(duration_ms * 1000))}us"


def _percent_arg(fraction: float) -> str:
    return f"{fraction * 100:.6g}%"


def burst_bytes(direction: LinkDirection) -> int:
    """Token bucket size: ``BURST_S`` of traffic at the link rate, at least ``BURST_MIN_FRAMES`` full frames."""
    return max(int(math.ceil(direction.rate_bps * BURST_S / 8)), BURST_MIN_FRAMES * MTU_BYTES)


def queue_limit_bytes(direction: LinkDirection) -> int:
    """The contract's drop-tail queue in bytes (packets x MTU when the contract counts packets)."""
    if direction.queue_packets is not None:
        return direction.queue_packets * MTU_BYTES
    return direction.queue_bytes


def netem_limit_packets(direction: LinkDirection) -> int:
    """netem's queue limit: R x (D + J + Q/R) in full-size packets, with headroom."""
    queueing_s = queue_limit_bytes(direction) * 8 / direction.rate_bps
    hold_s = (direction.delay_ms + direction.jitter_ms) / 1e3 + queueing_s
    packets = direction.rate_bps * hold_s / 8 / MTU_BYTES
    return max(NETEM_LIMIT_FLOOR, int(math.ceil(packets * NETEM_LIMIT_HEADROOM)))


def _loss_args(direction: LinkDirection) -> list[str]:
    ge = direction.burst_loss
    if ge is not None:
        # iproute2's order: p (good->bad), r (bad->good), 1-h (loss in bad), 1-k (loss in good).
        return [
            "loss",
            "gemodel",
            _percent_arg(ge.p_good_to_bad),
            _percent_arg(ge.p_bad_to_good),
            _percent_arg(ge.loss_bad),
            _percent_arg(ge.loss_good),
        ]
    if direction.loss > 0:
        return ["loss", "random", _percent_arg(direction.loss)]
    return []


def wire_setup_argv(intf_a: str, intf_b: str) -> list[list[str]]:
    """Commands (run in the wire namespace) that make it a two-port cable between the interfaces."""
    argv: list[list[str]] = []
    for intf in (intf_a, intf_b):
        argv.append(["ip", "link", "set", "dev", intf, "addrgenmode", "none"])
        # GRO would glue received segments back into super-frames; keep them single.
        argv.append(["ethtool", "-K", intf, "gro", "off"])
        argv.append(["ip", "link", "set", "dev", intf, "up"])
    for src, dst in ((intf_a, intf_b), (intf_b, intf_a)):
        argv.append(["tc", "qdisc", "add", "dev", src, "handle", "ffff:", "ingress"])
        argv.append(
            [
                "tc", "filter", "add", "dev", src, "parent", "ffff:", "protocol", "all", "prio", "1",
                "u32", "match", "u32", "0", "0",
                "action", "mirred", "egress", "redirect", "dev", dst,
            ]
        )  # fmt: skip
    return argv


def _tbf_argv(verb: str, intf: str, direction: LinkDirection) -> list[str]:
    return [
        "tc", "qdisc", verb, "dev", intf, "root", "handle", _HANDLE_RATE,
        "stab", "overhead", str(-ETH_HEADER_BYTES), "tbf", "rate", _rate_arg(direction.rate_bps),
        "burst", str(burst_bytes(direction)),
        "peakrate", _rate_arg(direction.rate_bps * PEAK_RATE_FACTOR), "mtu", str(PEAK_MTU_BYTES),
        "limit", str(queue_limit_bytes(direction)),
    ]  # fmt: skip


def _netem_argv(verb: str, intf: str, direction: LinkDirection, *, down: bool = False) -> list[str]:
    netem = [
        "tc", "qdisc", verb, "dev", intf, "parent", f"{_HANDLE_RATE}1", "handle", _HANDLE_NETEM,
        "netem", "limit", str(netem_limit_packets(direction)), "delay", _time_arg(direction.delay_ms),
    ]  # fmt: skip
    if direction.jitter_ms > 0:
        netem.append(_time_arg(direction.jitter_ms))
        if not direction.reorder:
            netem += ["rate", _rate_arg(direction.rate_bps * ORDER_RATE_FACTOR)]
    # A cut drops everything that enters, as the userspace delay line does; what is on the wire arrives.
    netem += ["loss", "random", "100%"] if down else _loss_args(direction)
    return netem


def egress_argv(intf: str, direction: LinkDirection) -> list[list[str]]:
    """The tc commands that make ``intf``'s egress one direction of the link contract."""
    queue_bytes = queue_limit_bytes(direction)
    tbf = _tbf_argv("add", intf, direction)
    netem = _netem_argv("add", intf, direction)
    queue = ["tc", "qdisc", "add", "dev", intf, "parent", f"{_HANDLE_NETEM}1", "handle", _HANDLE_QUEUE]
    if direction.queue_packets is not None:
        queue += ["pfifo", "limit", str(direction.queue_packets)]
    else:
        queue += ["bfifo", "limit", str(queue_bytes)]
    return [tbf, netem, queue]


def faulted_direction(base: LinkDirection, state: Mapping[str, Any]) -> tuple[LinkDirection, bool]:
    """One direction under a fault's ``state`` (overrides of ``base``: down, delay_ms, extra_delay_ms,
    rate_mbps, loss; ``{}`` is the link's own), and whether it is down."""
    unknown = sorted(set(state) - {"down", "delay_ms", "extra_delay_ms", "rate_mbps", "loss"})
    if unknown:
        raise EmulationError(f"unknown link state keys {unknown}; use down, delay_ms, extra_delay_ms, rate_mbps, loss")
    delay_ms = float(state.get("delay_ms", base.delay_ms)) + float(state.get("extra_delay_ms", 0.0))
    changes: dict[str, Any] = {"delay_ms": delay_ms, "jitter_ms": base.jitter_ms if base.reorder
                               else min(base.jitter_ms, delay_ms)}
    if state.get("rate_mbps") is not None:
        changes["rate_mbps"] = float(state["rate_mbps"])
    if state.get("loss") is not None:
        changes["loss"] = float(state["loss"])
        changes["burst_loss"] = None
    try:
        return replace(base, **changes), bool(state.get("down", False))
    except CorridorError as exc:
        raise EmulationError(f"a fault cannot put the link into that state: {exc}") from exc


def change_argv(intf: str, direction: LinkDirection, *, down: bool = False) -> list[list[str]]:
    """``tc qdisc change`` commands that put ``intf``'s egress into ``direction`` in place (``down``: drop all).

    The queue (bfifo) stays; tbf is changed with its size table again (a change without ``stab`` would
    drop it), and netem with its limit re-sized for the new delay.
    """
    return [_tbf_argv("change", intf, direction), _netem_argv("change", intf, direction, down=down)]


def teardown_argv(intf: str) -> list[list[str]]:
    """Remove what :func:`wire_setup_argv` and :func:`egress_argv` put on ``intf``.

    Each command fails harmlessly when its qdisc is already gone (for example
    because the interface was deleted); run them without stopping on errors.
    """
    return [
        ["tc", "qdisc", "del", "dev", intf, "root"],
        ["tc", "qdisc", "del", "dev", intf, "ingress"],
    ]
