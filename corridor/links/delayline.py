"""The userspace delay line: one process that is a WAN link.

Stage: emulation (runs inside a link's "wire" network namespace). Standard
library only, so ``python -m corridor.links.delayline`` starts fast anywhere.

Frames arriving on interface A leave on interface B (direction ``a_to_b``) and
the other way round. Per direction a frame passes a drop-tail queue of
``queue_bytes`` (or ``queue_packets``) drained at ``rate_mbps``, then a wire of
one-way ``delay_ms`` with bounded jitter (departures never overtake each other
unless ``reorder`` is set), then random loss, optionally Gilbert-Elliott bursts.

Speed comes from moving GSO super-frames: both AF_PACKET sockets use
PACKET_VNET_HDR and the interfaces keep TSO/GSO on, so one recv/send carries up
to 64 KB of TCP segments. The shaper still accounts every segment at its own IP
size, and loss or a queue overflow that hits part of a super-frame splits it
into single segments (checksums left to the kernel via NEEDS_CSUM) so only the
chosen segments disappear. Departures are timed with a timerfd (through ctypes;
Python 3.11 has no os.timerfd) with microsecond resolution. Arrival times are
the kernel's receive stamps (SO_TIMESTAMPNS), so a frame that waited in the
socket while the process was busy still counts that wait as queueing. The
process runs as SCHED_FIFO (like netem, which runs in softirq context, the link
must not queue behind the traffic it carries).

Measured on the 2-core development VM (``corridor bench link``): one TCP flow
through 2 Gbit/s and 25 ms carries 1.8-1.9 Gbit/s; the same loop with offloads
off and one 1500-byte frame per syscall carried 0.68 Gbit/s.

Departures stay on time under load because the loop's own work per frame is
small and never sits in front of a due departure: a super-frame is admitted in
one step (:meth:`Shaper.offer_whole`) rather than one Python call per segment,
a wake-up sends what is due before it reads, a batch of reads stops when the
next departure comes due, and the stats thread gets pre-encoded bytes so it
never holds the GIL while the loop waits in a system call. :class:`LoopStats`
publishes where the rest of the lateness comes from (the timer's wake-up, the
loop's longest busy stretch).

Everything that decides (queue, rate, delay, jitter, loss, segmentation) lives
in pure functions and the :class:`Shaper` class so that tests drive it with
synthetic arrival times; :func:`main` is only the socket plumbing.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import errno
import gc
import heapq
import json
import logging
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("corridor.links.delayline")

#: Ethernet header bytes in front of the IP packet (VLAN tags add 4).
ETH_HEADER_BYTES = 14
#: Largest frame one recv can return: a 64 KB GSO frame plus headers, with room for BIG TCP.
RECV_BUFFER_BYTES = 262144 + 64
SOCKET_BUFFER_BYTES = 64 * 1024 * 1024
STATS_INTERVAL_S = 0.2
#: A super-frame whose serialisation takes longer than this is released segment by segment.
SPLIT_SERIALISATION_S = 0.002
#: Kernel arrival stamps further back than this are not trusted (see Direction.receive).
MAX_RX_LAG_S = 1.0
#: Departures this close to now are sent at once rather than armed on the timer.
TIMER_GRANULARITY_S = 20e-6
#: Frames read from one socket before due departures are sent.
RECEIVE_BATCH = 8
#: Batches per wake-up: under an endless flood the loop still publishes stats and checks interfaces.
MAX_RECEIVE_ROUNDS = 256
#: Longest the loop waits for the GIL while the stats thread holds it (Python's default is 5 ms).
GIL_SWITCH_INTERVAL_S = 50e-6
#: Lateness histogram: 10 us bins up to 10 ms, then 1 ms bins up to 1 s (the last bin holds the rest).
LATE_FINE_BIN_US = 10
LATE_COARSE_BIN_US = 1000
LATE_BINS = 1000

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("=qq")
TIMESTAMP_CMSG_BYTES = socket.CMSG_SPACE(TIMESPEC.size)

VNET_HDR = struct.Struct("<BBHHHH")
VNET_F_NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
IPPROTO_TCP = 6
IPPROTO_UDP = 17
PLAIN_VNET = VNET_HDR.pack(0, GSO_NONE, 0, 0, 0, 0)

#: SCHED_FIFO priority of the process: above ordinary tasks and above workload agents that use a low
#: real-time priority themselves (FIFO tasks of equal priority do not preempt each other, and the link
#: must not wait for the traffic it carries), below kernel interrupt threads (50).
REALTIME_PRIORITY = 20

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_ARGS = 2


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class DirectionConfig:
    """One direction's parameters in SI units (the process's view of LinkDirection)."""

    rate_bps: float
    delay_s: float
    queue_bytes: int
    jitter_s: float = 0.0
    loss: float = 0.0
    queue_packets: int | None = None
    reorder: bool = False
    #: Gilbert-Elliott (p_good_to_bad, p_bad_to_good, loss_good, loss_bad), or None.
    burst_loss: tuple[float, float, float, float] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DirectionConfig:
        """Build from ``LinkDirection.as_dict()`` (rate_mbps, delay_ms, ...)."""
        ge = data.get("burst_loss")
        burst = None
        if ge:
            burst = (
                float(ge["p_good_to_bad"]),
                float(ge["p_bad_to_good"]),
                float(ge.get("loss_good", 0.0)),
                float(ge.get("loss_bad", 1.0)),
            )
        packets = data.get("queue_packets")
        return cls(
            rate_bps=float(data["rate_mbps"]) * 1e6,
            delay_s=float(data["delay_ms"]) / 1e3,
            queue_bytes=int(data["queue_bytes"]),
            jitter_s=float(data.get("jitter_ms", 0.0)) / 1e3,
            loss=float(data.get("loss", 0.0)),
            queue_packets=int(packets) if packets is not None else None,
            reorder=bool(data.get("reorder", False)),
            burst_loss=burst,
        )


# --------------------------------------------------------------------------- pure frame helpers


@dataclass(frozen=True)
class FrameInfo:
    """What the shaper needs to know about one received frame."""

    #: IP bytes of each segment the frame stands for (one entry unless it is a GSO frame).
    segment_sizes: tuple[int, ...]
    #: Offset of the L4 header and the full header length (L2+L3+L4), for splitting; 0 when unknown.
    l4_offset: int = 0
    header_bytes: int = 0
    gso_size: int = 0
    gso_type: int = GSO_NONE


def l3_offset(frame: bytes | memoryview) -> int:
    """Offset of the IP header: 14, or 18 behind one VLAN tag."""
    if len(frame) >= 18 and frame[12] == 0x81 and frame[13] == 0x00:
        return ETH_HEADER_BYTES + 4
    return ETH_HEADER_BYTES


class MalformedFrame(ValueError):
    """A frame whose headers cannot be parsed: the delay line drops it and counts it as ``malformed``."""


#: Most segments one GSO frame may stand for: 256 KB (BIG TCP) cut into 128-byte segments. The kernel's own
#: segments are far larger; a frame claiming more is garbage that would only burn the loop's time.
MAX_GSO_SEGMENTS = 2048
#: Largest IP packet a segment may become (the IPv4 total-length and IPv6 payload-length fields are 16 bits).
MAX_SEGMENT_IP_BYTES = 65535
#: Offset of the checksum field inside a TCP header (what csum_offset must say for a TCP GSO frame).
TCP_CSUM_OFFSET = 16


def frame_info(frame: bytes | memoryview, vnet: tuple[int, int, int, int, int, int] | None) -> FrameInfo:
    """Segment sizes of a frame as it will appear on the wire, from its virtio-net header.

    A GSO frame of payload P with headers H (L3+L4) and segment size M stands for
    ceil(P / M) packets of H + M bytes (the last one shorter); each is counted at
    its own IP size, which is what the rate limit must charge.

    Raises :class:`MalformedFrame` for a frame that cannot be forwarded as it
    claims: a checksum request past its end, an unknown GSO type, a GSO frame
    with segment size 0, an IP or TCP/UDP header that is truncated, of the wrong
    version or inconsistent with ``csum_start``, or segments that cannot exist.
    A plain frame (no GSO) is never parsed beyond its length, so anything else
    passes unchanged, as a wire would carry it.
    """
    l3 = l3_offset(frame)
    size = len(frame)
    ip_bytes = max(size - l3, 1)
    if vnet is None:
        return FrameInfo((ip_bytes,))
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_off = vnet
    needs_csum = bool(flags & VNET_F_NEEDS_CSUM)
    if needs_csum and csum_start + csum_off + 2 > size:
        raise MalformedFrame(f"checksum at {csum_start}+{csum_off} lies past the frame's {size} bytes")
    base = gso_type & ~GSO_ECN
    if base == GSO_NONE:
        return FrameInfo((ip_bytes,))
    if base not in (GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4):
        raise MalformedFrame(f"unknown GSO type {gso_type}")
    if gso_size == 0:
        raise MalformedFrame("GSO frame with segment size 0")
    l4 = _checked_l4_offset(frame, l3, base, csum_start if needs_csum else None)
    if base in (GSO_TCPV4, GSO_TCPV6):
        if needs_csum and csum_off != TCP_CSUM_OFFSET:
            raise MalformedFrame(f"TCP GSO frame with checksum offset {csum_off}, not {TCP_CSUM_OFFSET}")
        if l4 + 20 > size:
            raise MalformedFrame("TCP header truncated")
        data_offset = frame[l4 + 12] >> 4
        if data_offset < 5:
            raise MalformedFrame(f"TCP data offset {data_offset} is below 5")
        header = l4 + data_offset * 4
    else:
        header = l4 + 8
    if header > size:
        raise MalformedFrame(f"headers end at byte {header}, past the frame's {size} bytes")
    payload = size - header
    if header - l3 + min(gso_size, payload) > MAX_SEGMENT_IP_BYTES:
        raise MalformedFrame(f"segments of {header - l3 + gso_size} IP bytes cannot exist")
    if payload <= gso_size:
        return FrameInfo((ip_bytes,), l4, header, gso_size, gso_type)
    full, rest = divmod(payload, gso_size)
    if full + (1 if rest else 0) > MAX_GSO_SEGMENTS:
        raise MalformedFrame(f"GSO frame would be {full + (1 if rest else 0)} segments of {gso_size} bytes")
    seg = header - l3 + gso_size
    sizes = [seg] * full
    if rest:
        sizes.append(header - l3 + rest)
    return FrameInfo(tuple(sizes), l4, header, gso_size, gso_type)


def _checked_l4_offset(frame: bytes | memoryview, l3: int, base: int, csum_start: int | None) -> int:
    """Offset of the L4 header of a GSO frame, checked against its IP header (and ``csum_start`` when given)."""
    size = len(frame)
    if size < l3 + 20:
        raise MalformedFrame("IP header truncated")
    version = frame[l3] >> 4
    if version == 4:
        if base == GSO_TCPV6:
            raise MalformedFrame("IPv6 TCP GSO frame carries an IPv4 packet")
        ihl = frame[l3] & 0x0F
        if ihl < 5:
            raise MalformedFrame(f"IPv4 header length {ihl} is below 5")
        l4 = l3 + ihl * 4
        if csum_start is not None and csum_start != l4:
            raise MalformedFrame(f"csum_start {csum_start} is not the L4 header at {l4}")
        protocol = frame[l3 + 9]
        if protocol != (IPPROTO_TCP if base == GSO_TCPV4 else IPPROTO_UDP):
            raise MalformedFrame(f"GSO type {base} frame carries IP protocol {protocol}")
    elif version == 6:
        if base == GSO_TCPV4:
            raise MalformedFrame("IPv4 TCP GSO frame carries an IPv6 packet")
        if size < l3 + 40:
            raise MalformedFrame("IPv6 header truncated")
        l4 = l3 + 40
        if csum_start is not None:
            # Extension headers sit between the fixed header and L4, in multiples of 8 bytes.
            if csum_start < l4 or (csum_start - l4) % 8:
                raise MalformedFrame(f"csum_start {csum_start} is not an L4 header behind IPv6")
            l4 = csum_start
    else:
        raise MalformedFrame(f"GSO frame with IP version {version}")
    if l4 > size:
        raise MalformedFrame("L4 header lies past the frame")
    return l4


def _csum_add(total: int, data: bytes | memoryview) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\0"
    for (word,) in struct.iter_unpack("!H", data):
        total += word
    return total


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4_header_checksum(header: bytes | bytearray) -> int:
    """RFC 791 header checksum of ``header`` with its checksum field treated as zero."""
    data = bytes(header[:10]) + b"\0\0" + bytes(header[12:])
    return (~_fold(_csum_add(0, data))) & 0xFFFF


def split_tcp_gso(frame: bytes, info: FrameInfo, keep: list[bool]) -> list[bytes]:
    """Cut a TCP GSO frame into its segments and return the kept ones, each with a vnet header.

    Each segment gets its own sequence number, IP length (and, for IPv4, ID and
    header checksum) and flags as the kernel's own segmentation would set them
    (CWR only on the first, FIN/PSH only on the last). Its TCP checksum field is
    seeded with the pseudo-header sum and marked NEEDS_CSUM, so the kernel
    finishes it.
    """
    l3 = l3_offset(frame)
    l4, header = info.l4_offset, info.header_bytes
    mss = info.gso_size
    head = frame[:header]
    payload = memoryview(frame)[header:]
    count = len(info.segment_sizes)
    is_v4 = frame[l3] >> 4 == 4
    (seq0,) = struct.unpack_from("!I", frame, l4 + 4)
    flags0 = frame[l4 + 13]
    ip_id0 = struct.unpack_from("!H", frame, l3 + 4)[0] if is_v4 else 0
    if is_v4:
        pseudo = _csum_add(0, frame[l3 + 12 : l3 + 20]) + 6
    else:
        pseudo = _csum_add(0, frame[l3 + 8 : l3 + 40]) + 6
    vnet = VNET_HDR.pack(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, l4, 16)
    out: list[bytes] = []
    for index in range(count):
        if not keep[index]:
            continue
        data = payload[index * mss : (index + 1) * mss]
        seg = bytearray(head)
        l4_bytes = header - l4 + len(data)
        struct.pack_into("!I", seg, l4 + 4, (seq0 + index * mss) & 0xFFFFFFFF)
        flags = flags0
        if index > 0:
            flags &= ~0x80
        if index < count - 1:
            flags &= ~0x09
        seg[l4 + 13] = flags
        if is_v4:
            struct.pack_into("!HH", seg, l3 + 2, l4 - l3 + l4_bytes, (ip_id0 + index) & 0xFFFF)
            struct.pack_into("!H", seg, l3 + 10, ipv4_header_checksum(seg[l3:l4]))
        else:
            struct.pack_into("!H", seg, l3 + 4, l4 - l3 - 40 + l4_bytes)
        struct.pack_into("!H", seg, l4 + 16, _fold(pseudo + l4_bytes))
        out.append(vnet + bytes(seg) + bytes(data))
    return out


# --------------------------------------------------------------------------- the shaper (pure)


class Shaper:
    """Queue, rate, delay, jitter and loss of one direction, driven by arrival times.

    The queue is a fluid model of the bottleneck: the serialiser is busy until
    ``tx_free_s``, so the bytes still waiting at time t are (tx_free_s - t) x R.
    A segment that would push that backlog past ``queue_bytes`` is dropped
    (drop-tail); otherwise it finishes serialising at
    max(tx_free_s, arrival) + size / R and departs delay (+ jitter) later, but
    never before the previous departure (no reordering).
    """

    def __init__(self, config: DirectionConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.tx_free_s = 0.0
        self.last_departure_s = 0.0
        self.ge_bad = False
        #: Finish times of segments in the queue, kept only for packet-count limits.
        self._in_queue: collections.deque[float] = collections.deque()
        self.queue_bytes_max = 0.0
        self.queue_delay_max_s = 0.0
        self.queue_delay_sum_s = 0.0
        self.admitted = 0
        self.drops_queue = 0
        self.drops_loss = 0
        #: Segments that arrived while the link was down (a fault: see :func:`apply_state`).
        self.drops_down = 0
        self.down = False
        self._plain_loss = config.loss > 0 or config.burst_loss is not None

    def reconfigure(self, config: DirectionConfig, *, down: bool = False) -> None:
        """Run on ``config`` from now on (a fault or its end): segments already admitted keep their times.

        The fluid queue carries over: what waits is drained at the new rate. A delay step moves only later
        departures, and never ahead of earlier ones (no reordering), so a shorter delay compresses.
        """
        self.config = config
        self.down = down
        self._plain_loss = config.loss > 0 or config.burst_loss is not None

    def backlog_bytes(self, now_s: float) -> float:
        """Bytes waiting in (or being serialised from) the queue at ``now_s``."""
        return max(0.0, self.tx_free_s - now_s) * self.config.rate_bps / 8

    def _admit(self, now_s: float, size_bytes: int) -> float | None:
        cfg = self.config
        start = self.tx_free_s if self.tx_free_s > now_s else now_s
        backlog = (start - now_s) * cfg.rate_bps / 8
        if backlog + size_bytes > cfg.queue_bytes + 0.5:  # half a byte absorbs float rounding
            self.drops_queue += 1
            return None
        if cfg.queue_packets is not None:
            queue = self._in_queue
            while queue and queue[0] <= now_s:
                queue.popleft()
            if len(queue) >= cfg.queue_packets:
                self.drops_queue += 1
                return None
        finish = start + size_bytes * 8 / cfg.rate_bps
        if cfg.queue_packets is not None:
            self._in_queue.append(finish)
        self.tx_free_s = finish
        waited = start - now_s
        self.admitted += 1
        self.queue_delay_sum_s += waited
        if waited > self.queue_delay_max_s:
            self.queue_delay_max_s = waited
        if backlog + size_bytes > self.queue_bytes_max:
            self.queue_bytes_max = backlog + size_bytes
        return finish

    def offer_one(self, now_s: float, size_bytes: int) -> float | None:
        """:meth:`offer` for a frame of one segment, without the lists."""
        if self.down:
            self.drops_down += 1
            return None
        finish = self._admit(now_s, size_bytes)
        if finish is not None and self._plain_loss and self.lose():
            return None
        return finish

    def offer_whole(self, now_s: float, segment_sizes: tuple[int, ...], total_bytes: int) -> float | None:
        """Admit every segment of a super-frame at once; its last finish time, or None to go segment by segment.

        The fast path of :meth:`offer` (which costs a Python call per segment: 44 of them for a
        64 KB frame, most of the delay line's time at 10 Gbit/s). It applies only when the
        outcome cannot differ from :meth:`offer`'s: the link is up, no random loss is drawn,
        no packet-count limit applies and the whole frame fits the byte queue. Segments are
        those :func:`frame_info` produces: all but the last of one size. Returns None, having
        changed nothing, when any of that does not hold.
        """
        cfg = self.config
        count = len(segment_sizes)
        if self.down or self._plain_loss or cfg.queue_packets is not None or count < 2:
            return None
        first = segment_sizes[0]
        if segment_sizes.count(first) < count - 1:
            return None
        start = self.tx_free_s if self.tx_free_s > now_s else now_s
        backlog = (start - now_s) * cfg.rate_bps / 8
        if backlog + total_bytes > cfg.queue_bytes + 0.5:
            return None
        seconds_per_byte = 8 / cfg.rate_bps
        finish = start + total_bytes * seconds_per_byte
        self.tx_free_s = finish
        waited = start - now_s
        # Segment k waits for the k full segments ahead of it: sum over k of k x first bytes.
        self.admitted += count
        self.queue_delay_sum_s += count * waited + first * (count - 1) * count / 2 * seconds_per_byte
        last_waited = waited + (total_bytes - segment_sizes[-1]) * seconds_per_byte
        if last_waited > self.queue_delay_max_s:
            self.queue_delay_max_s = last_waited
        if backlog + total_bytes > self.queue_bytes_max:
            self.queue_bytes_max = backlog + total_bytes
        return finish

    def lose(self) -> bool:
        """One per-segment loss decision (uniform, then Gilbert-Elliott if configured)."""
        cfg = self.config
        rng = self.rng
        lost = cfg.loss > 0 and rng.random() < cfg.loss
        if cfg.burst_loss is not None:
            p_gb, p_bg, loss_good, loss_bad = cfg.burst_loss
            state_loss = loss_bad if self.ge_bad else loss_good
            if state_loss > 0 and rng.random() < state_loss:
                lost = True
            if self.ge_bad:
                if rng.random() < p_bg:
                    self.ge_bad = False
            elif rng.random() < p_gb:
                self.ge_bad = True
        if lost:
            self.drops_loss += 1
        return lost

    def departure(self, finish_s: float) -> float:
        """When a segment that finished serialising at ``finish_s`` leaves the wire."""
        cfg = self.config
        depart = finish_s + cfg.delay_s
        if cfg.jitter_s > 0:
            depart += self.rng.uniform(-cfg.jitter_s, cfg.jitter_s)
        if cfg.reorder:
            return depart
        if depart < self.last_departure_s:
            depart = self.last_departure_s
        self.last_departure_s = depart
        return depart

    def offer(self, now_s: float, segment_sizes: tuple[int, ...] | list[int]) -> list[float | None]:
        """Decide the fate of each segment of a frame arriving at ``now_s``.

        Returns, per segment, its finish-of-serialisation time, or None when the
        queue dropped it or loss took it. Call :meth:`departure` with a finish
        time to get its departure.
        """
        if self.down:
            self.drops_down += len(segment_sizes)
            return [None] * len(segment_sizes)
        result: list[float | None] = []
        for size in segment_sizes:
            finish = self._admit(now_s, size)
            if finish is not None and self._plain_loss and self.lose():
                finish = None
            result.append(finish)
        return result

    def release_times(self, now_s: float, segment_sizes: tuple[int, ...] | list[int]) -> list[float]:
        """Departure times for a burst of segments (test helper: drops become NaN)."""
        out = []
        for finish in self.offer(now_s, segment_sizes):
            out.append(float("nan") if finish is None else self.departure(finish))
        return out


# --------------------------------------------------------------------------- control (faults while running)

#: Keys a command's state may carry (see :func:`apply_state`).
STATE_KEYS = ("down", "delay_ms", "extra_delay_ms", "rate_mbps", "loss")
COMMAND_DIRECTIONS = ("both", "a_to_b", "b_to_a")
#: Applied commands the stats keep, newest last.
CONTROL_LOG = 64
#: Longest command line read from the control pipe; anything longer is refused.
MAX_COMMAND_BYTES = 4096


class BadCommand(ValueError):
    """A control command that cannot be applied: it is refused, counted and logged; the link runs on."""


def apply_state(base: DirectionConfig, state: dict[str, Any]) -> tuple[DirectionConfig, bool]:
    """The direction's parameters under ``state`` (overrides of its own ``base``), and whether it is down.

    ``{}`` restores the link's own parameters. ``delay_ms`` replaces the one-way delay,
    ``extra_delay_ms`` adds to it, ``rate_mbps`` replaces the rate, ``loss`` the random loss.
    """
    if not isinstance(state, dict):
        raise BadCommand(f"state must be a JSON object, got {state!r}")
    unknown = sorted(set(state) - set(STATE_KEYS))
    if unknown:
        raise BadCommand(f"unknown state keys {unknown}; allowed: {', '.join(STATE_KEYS)}")
    down = state.get("down", False)
    if not isinstance(down, bool):
        raise BadCommand(f"down must be true or false, got {down!r}")
    numbers: dict[str, float] = {}
    for key in ("delay_ms", "extra_delay_ms", "rate_mbps", "loss"):
        value = state.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
            raise BadCommand(f"{key} must be a finite number of zero or more, got {value!r}")
        numbers[key] = float(value)
    if "rate_mbps" in numbers and numbers["rate_mbps"] <= 0:
        raise BadCommand("rate_mbps must be above zero (a link that carries nothing is down: true)")
    if numbers.get("loss", 0.0) >= 1:
        raise BadCommand(f"loss must be below 1, got {numbers['loss']}")
    delay_s = numbers.get("delay_ms", base.delay_s * 1e3) / 1e3 + numbers.get("extra_delay_ms", 0.0) / 1e3
    config = DirectionConfig(
        rate_bps=numbers["rate_mbps"] * 1e6 if "rate_mbps" in numbers else base.rate_bps,
        delay_s=delay_s,
        queue_bytes=base.queue_bytes,
        jitter_s=min(base.jitter_s, delay_s) if not base.reorder else base.jitter_s,
        loss=numbers.get("loss", base.loss),
        queue_packets=base.queue_packets,
        reorder=base.reorder,
        burst_loss=base.burst_loss if "loss" not in numbers else None,
    )
    return config, down


@dataclass(frozen=True)
class Command:
    """One line of the control pipe: at ``at_monotonic_s``, put ``direction`` into ``state``.

    ``op`` "set" (the default) is timed; "reset" drops every pending command and restores
    both directions' own parameters at once.
    """

    op: str
    command_id: int
    at_monotonic_s: float
    direction: str
    state: dict[str, Any]


def parse_command(line: bytes | str) -> Command:
    """Read one JSON control line; raises :class:`BadCommand` naming what is wrong."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadCommand(f"not a JSON line: {exc}") from exc
    if not isinstance(data, dict):
        raise BadCommand("a command is a JSON object")
    op = data.get("op", "set")
    if op == "reset":
        return Command("reset", _command_id(data), 0.0, "both", {})
    if op != "set":
        raise BadCommand(f"unknown op {op!r}; use set or reset")
    at = data.get("at_monotonic_s", 0.0)
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not 0 <= at < float("inf"):
        raise BadCommand(f"at_monotonic_s must be a monotonic time in seconds, got {at!r}")
    direction = data.get("direction", "both")
    if direction not in COMMAND_DIRECTIONS:
        raise BadCommand(f"direction must be one of {', '.join(COMMAND_DIRECTIONS)}, got {direction!r}")
    state = data.get("state", {})
    if not isinstance(state, dict):
        raise BadCommand(f"state must be a JSON object, got {state!r}")
    return Command("set", _command_id(data), float(at), str(direction), state)


def _command_id(data: dict[str, Any]) -> int:
    value = data.get("id", 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadCommand(f"id must be a whole number, got {value!r}")
    return value


class CommandQueue:
    """Commands waiting for their due time, in due order (ties in arrival order); pure, tests drive it."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Command]] = []
        self._seq = 0
        self.received = 0
        self.refused = 0
        self.applied: collections.deque[dict[str, Any]] = collections.deque(maxlen=CONTROL_LOG)
        self.last_error: str | None = None

    def push(self, command: Command) -> None:
        self._seq += 1
        self.received += 1
        heapq.heappush(self._heap, (command.at_monotonic_s, self._seq, command))

    def clear(self) -> None:
        self._heap.clear()

    def next_due(self) -> float:
        """Monotonic time of the next command, 0.0 when none waits."""
        return self._heap[0][0] if self._heap else 0.0

    def __len__(self) -> int:
        return len(self._heap)

    def due(self, now_s: float) -> list[Command]:
        """Pop every command due by ``now_s``."""
        out = []
        while self._heap and self._heap[0][0] <= now_s:
            out.append(heapq.heappop(self._heap)[2])
        return out


# --------------------------------------------------------------------------- statistics


class DirectionStats:
    """Counters of one direction that the process publishes."""

    def __init__(self) -> None:
        self.frames_in = 0
        self.packets = 0
        self.bytes = 0
        self.drops_tx = 0
        #: Frames dropped because their headers could not be parsed (see :class:`MalformedFrame`).
        self.malformed = 0
        self.late_sum_s = 0.0
        self.late_max_s = 0.0
        self.late_count = 0
        self.late_fine = [0] * LATE_BINS
        self.late_coarse = [0] * LATE_BINS
        self.delay_sum_s = 0.0
        self.delay_max_s = 0.0
        self.delay_min_s = float("inf")
        self.rx_lag_max_s = 0.0
        self.send_max_s = 0.0

    def record_send(self, late_s: float, delay_s: float, segments: int, ip_bytes: int) -> None:
        self.packets += segments
        self.bytes += ip_bytes
        self.late_count += 1
        self.late_sum_s += late_s
        if late_s > self.late_max_s:
            self.late_max_s = late_s
        _histogram_add(self.late_fine, self.late_coarse, late_s)
        self.delay_sum_s += delay_s
        if delay_s > self.delay_max_s:
            self.delay_max_s = delay_s
        if delay_s < self.delay_min_s:
            self.delay_min_s = delay_s

    def late_histogram(self) -> list[list[int]]:
        """Non-empty lateness bins as ``[upper edge in us, count]``, in order."""
        out = [[(index + 1) * LATE_FINE_BIN_US, n] for index, n in enumerate(self.late_fine) if n]
        out.extend([(index + 1) * LATE_COARSE_BIN_US, n] for index, n in enumerate(self.late_coarse) if n)
        return out

    def late_percentile_us(self, fraction: float) -> float:
        """Upper edge of the histogram bin holding the given fraction of departures."""
        return _histogram_percentile_us(self.late_fine, self.late_coarse, self.late_count, fraction)


class LoopStats:
    """Where a departure's lateness comes from: the timer's own wake-up, and the loop's busy stretches.

    A departure is late by the timer's wake-up delay (the kernel and the scheduler) plus
    whatever the loop was doing when it came due (a receive batch, earlier sends); the
    longest stretch between two waits bounds the second.
    """

    def __init__(self) -> None:
        self.wakes = 0
        self.wake_late_sum_s = 0.0
        self.wake_late_max_s = 0.0
        self.wake_late_fine = [0] * LATE_BINS
        self.wake_late_coarse = [0] * LATE_BINS
        self.busy_max_s = 0.0

    def record_wake(self, late_s: float) -> None:
        if late_s < 0:
            late_s = 0.0
        self.wakes += 1
        self.wake_late_sum_s += late_s
        if late_s > self.wake_late_max_s:
            self.wake_late_max_s = late_s
        _histogram_add(self.wake_late_fine, self.wake_late_coarse, late_s)

    def snapshot(self) -> dict[str, Any]:
        count = self.wakes
        return {
            "timer_wakes": count,
            "wake_late_us_mean": self.wake_late_sum_s / count * 1e6 if count else 0.0,
            "wake_late_us_p50": _histogram_percentile_us(self.wake_late_fine, self.wake_late_coarse, count, 0.50),
            "wake_late_us_p99": _histogram_percentile_us(self.wake_late_fine, self.wake_late_coarse, count, 0.99),
            "wake_late_us_max": self.wake_late_max_s * 1e6,
            "busy_us_max": self.busy_max_s * 1e6,
        }


def _histogram_add(fine: list[int], coarse: list[int], value_s: float) -> None:
    """Count ``value_s`` in the two-resolution lateness histogram (see ``LATE_*``)."""
    index = int(value_s * 1e6 / LATE_FINE_BIN_US)
    if index < LATE_BINS:
        fine[index] += 1
    else:
        index = int(value_s * 1e6 / LATE_COARSE_BIN_US)
        coarse[index if index < LATE_BINS else LATE_BINS - 1] += 1


def _histogram_percentile_us(fine: list[int], coarse: list[int], count: int, fraction: float) -> float:
    """Upper edge of the histogram bin holding the given fraction of ``count`` values."""
    if count == 0:
        return 0.0
    target = fraction * count
    seen = 0
    for bins, width_us in ((fine, LATE_FINE_BIN_US), (coarse, LATE_COARSE_BIN_US)):
        for index, n in enumerate(bins):
            seen += n
            if seen >= target:
                return float((index + 1) * width_us)
    return float(LATE_BINS * LATE_COARSE_BIN_US)


def direction_snapshot(shaper: Shaper, stats: DirectionStats, now_s: float, in_flight: int) -> dict[str, Any]:
    """One direction's published counters (the format :func:`corridor.links.userspace.read_stats` reads)."""
    sends = stats.late_count
    return {
        "frames_in": stats.frames_in,
        "packets": stats.packets,
        "bytes": stats.bytes,
        "drops_queue": shaper.drops_queue,
        "drops_loss": shaper.drops_loss,
        "drops_down": shaper.drops_down,
        "drops_tx": stats.drops_tx,
        "malformed": stats.malformed,
        "queue_bytes": int(shaper.backlog_bytes(now_s)),
        "queue_bytes_max": int(shaper.queue_bytes_max),
        "queue_delay_ms_max": shaper.queue_delay_max_s * 1e3,
        "queue_delay_ms_mean": shaper.queue_delay_sum_s / shaper.admitted * 1e3 if shaper.admitted else 0.0,
        "in_flight_frames": in_flight,
        "delay_ms_mean": stats.delay_sum_s / sends * 1e3 if sends else 0.0,
        "delay_ms_min": stats.delay_min_s * 1e3 if sends else 0.0,
        "delay_ms_max": stats.delay_max_s * 1e3,
        "late_us_mean": stats.late_sum_s / sends * 1e6 if sends else 0.0,
        "late_us_p50": stats.late_percentile_us(0.50),
        "late_us_p99": stats.late_percentile_us(0.99),
        "late_us_max": stats.late_max_s * 1e6,
        # The whole histogram, as [upper bin edge in us, departures] for each non-empty bin: a reader
        # differences two snapshots for the lateness of a window (corridor.links.userspace.late_percentile_between).
        "late_hist_us": stats.late_histogram(),
        "rx_lag_us_max": stats.rx_lag_max_s * 1e6,
        "send_us_max": stats.send_max_s * 1e6,
        # what the direction runs on now (a fault changes them while the process runs)
        "down": shaper.down,
        "rate_mbps_now": shaper.config.rate_bps / 1e6,
        "delay_ms_now": shaper.config.delay_s * 1e3,
        "loss_now": shaper.config.loss,
    }


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` so readers never see half a file."""
    write_bytes_atomic(path, json.dumps(data).encode())


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers never see half a file; only system calls, which drop the GIL."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


class StatsWriter:
    """Writes snapshots from a background thread: a file system stall must never delay a departure.

    The loop hands over the snapshot already encoded (``json.dumps`` runs in C, about 0.1 ms), so
    the thread runs almost no Python: it must not hold the GIL while a departure is due.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._pending: bytes | None = None
        self._wake = threading.Condition()
        self._closed = False
        self.errors = 0
        self._thread = threading.Thread(target=self._loop, name="stats-writer", daemon=True)
        self._thread.start()

    def submit(self, snapshot: dict[str, Any]) -> None:
        encoded = json.dumps(snapshot).encode()
        with self._wake:
            self._pending = encoded
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                snapshot, self._pending = self._pending, None
                if snapshot is None:
                    return
            try:
                write_bytes_atomic(self.path, snapshot)
            except OSError as exc:
                self.errors += 1
                if self.errors == 1:
                    log.warning("cannot write stats to %s: %s", self.path, exc)

    def close(self, final: dict[str, Any]) -> None:
        """Stop the thread and write ``final`` synchronously."""
        with self._wake:
            self._closed = True
            self._pending = None
            self._wake.notify()
        self._thread.join(5.0)
        write_json_atomic(self.path, final)


# --------------------------------------------------------------------------- timer (ctypes timerfd)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class DepartureTimer:
    """A CLOCK_MONOTONIC timerfd armed at absolute times (time.monotonic() uses the same clock)."""

    CLOCK_MONOTONIC = 1
    TFD_NONBLOCK = 0o4000
    TFD_CLOEXEC = 0o2000000
    TFD_TIMER_ABSTIME = 1
    PR_SET_TIMERSLACK = 29

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._create = libc.timerfd_create
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        fd = self._create(self.CLOCK_MONOTONIC, self.TFD_NONBLOCK | self.TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        # Wake-ups within 1 us of the asked time rather than the default 50 us slack.
        libc.prctl(self.PR_SET_TIMERSLACK, ctypes.c_ulong(1000), 0, 0, 0)
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self.armed_s = 0.0

    def arm(self, at_s: float) -> None:
        """Fire at monotonic time ``at_s`` (0 disarms)."""
        if at_s == self.armed_s:
            return
        self.armed_s = at_s
        if at_s <= 0:
            self._spec.it_value.tv_sec = 0
            self._spec.it_value.tv_nsec = 0
        else:
            ns = int(at_s * 1e9)
            self._spec.it_value.tv_sec = ns // 1_000_000_000
            self._spec.it_value.tv_nsec = ns % 1_000_000_000 or 1
        if self._settime(self.fd, self.TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def drain(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        self.armed_s = 0.0

    def close(self) -> None:
        os.close(self.fd)


# --------------------------------------------------------------------------- the process


class InterfaceGone(Exception):
    """An interface of the link went down or disappeared."""


def open_packet_socket(intf: str) -> socket.socket:
    """AF_PACKET socket bound to ``intf`` that sees only frames arriving on it, with vnet headers."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_BYTES)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((intf, ETH_P_ALL))
    sock.setblocking(False)
    return sock


class Direction:
    """One direction's runtime state: shaper, in-flight frames and counters."""

    def __init__(self, name: str, rx: socket.socket, tx: socket.socket, config: DirectionConfig, seed: int) -> None:
        self.name = name
        self.rx = rx
        self.tx = tx
        self.shaper = Shaper(config, random.Random(seed))
        #: The link's own parameters: a fault's state overrides them, and ``{}`` restores them.
        self.base_config = config
        self.stats = DirectionStats()
        # (departure_s, arrival_s, segments, ip_bytes, payload-with-vnet-header)
        self.line: collections.deque[tuple[float, float, int, int, bytes]] = collections.deque()
        self.heap: list[tuple[float, int, float, int, int, bytes]] = []
        self._heap_seq = 0
        self.reorder = config.reorder
        self._buffers: list[memoryview] = [memoryview(b"")]
        #: Whether the last :meth:`receive` found the socket empty.
        self.rx_empty = True
        #: time.time() - time.monotonic(), refreshed by the loop, to convert kernel stamps.
        self.realtime_offset_s = time.time() - time.monotonic()

    def next_departure(self) -> float:
        if self.reorder:
            return self.heap[0][0] if self.heap else 0.0
        return self.line[0][0] if self.line else 0.0

    def in_flight(self) -> int:
        return len(self.heap) if self.reorder else len(self.line)

    def enqueue(self, depart: float, arrival: float, segments: int, ip_bytes: int, data: bytes) -> None:
        if self.reorder:
            self._heap_seq += 1
            heapq.heappush(self.heap, (depart, self._heap_seq, arrival, segments, ip_bytes, data))
        else:
            self.line.append((depart, arrival, segments, ip_bytes, data))

    def receive(self, buf: bytearray, view: memoryview, budget: int, until_s: float = 0.0) -> int:
        """Read up to ``budget`` frames from the socket and schedule them; returns frames read.

        With ``until_s`` (a monotonic time, 0 for none) it stops early once that time is
        near, so a departure due then is not held up behind a batch of receives; ``rx_empty``
        tells a drained socket from a batch cut short.
        """
        if self._buffers[0] is not view:
            self._buffers = [view]
        stats = self.stats
        self.rx_empty = False
        count = 0
        while count < budget:
            if count and until_s and time.monotonic() + TIMER_GRANULARITY_S >= until_s:
                return count
            count += 1
            try:
                length, ancillary, flags, _addr = self.rx.recvmsg_into(self._buffers, TIMESTAMP_CMSG_BYTES)
            except BlockingIOError:
                self.rx_empty = True
                return count - 1
            except OSError as exc:
                if exc.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                    raise InterfaceGone(f"{self.name}: receive failed: {exc.strerror}") from exc
                raise
            now = time.monotonic()
            if ancillary:
                # The kernel's arrival stamp (CLOCK_REALTIME): frames that waited in the socket while this
                # process was busy still count that wait as queueing, not as free time.
                sec, nsec = TIMESPEC.unpack_from(ancillary[0][2])
                stamped = sec + nsec * 1e-9 - self.realtime_offset_s
                # A stamp from another clock (a sender's departure time carried across veth) would be far
                # off; only a plausible wait is believed.
                if now - MAX_RX_LAG_S < stamped < now:
                    lag = now - stamped
                    if lag > stats.rx_lag_max_s:
                        stats.rx_lag_max_s = lag
                    now = stamped
            if flags & socket.MSG_TRUNC:
                # Larger than any GSO frame we expect (BIG TCP?): forwarding the cut frame would corrupt it.
                stats.drops_tx += 1
                log.debug("%s: dropped a frame larger than %d bytes", self.name, RECV_BUFFER_BYTES)
                continue
            self.handle(view[:length], now)
        return count

    def handle(self, data: memoryview, now: float) -> None:
        """Shape one received frame (virtio-net header first) that arrived at ``now``; never raises on its bytes.

        A frame whose headers cannot be parsed is dropped and counted in ``malformed``:
        one bad frame must not end the link.
        """
        stats = self.stats
        shaper = self.shaper
        length = len(data)
        if length <= VNET_HDR.size:
            stats.malformed += 1
            return
        stats.frames_in += 1
        vnet = VNET_HDR.unpack_from(data)
        frame_view = data[VNET_HDR.size :]
        if vnet[1] == GSO_NONE:
            # A plain frame (most often an ACK): what frame_info would say, without its call and FrameInfo.
            size = length - VNET_HDR.size
            if vnet[0] & VNET_F_NEEDS_CSUM and vnet[4] + vnet[5] + 2 > size:
                stats.malformed += 1
                return
            ip_bytes = max(size - l3_offset(frame_view), 1)
            finish = shaper.offer_one(now, ip_bytes)
            if finish is not None:
                self.enqueue(shaper.departure(finish), now, 1, ip_bytes, bytes(data))
            return
        try:
            info = frame_info(frame_view, vnet)
        except MalformedFrame as exc:
            stats.malformed += 1
            log.debug("%s: dropped a malformed frame: %s", self.name, exc)
            return
        sizes = info.segment_sizes
        if len(sizes) == 1:
            finish = shaper.offer_one(now, sizes[0])
            if finish is None:
                return
            self.enqueue(shaper.departure(finish), now, 1, sizes[0], bytes(data))
            return
        total = sum(sizes)
        splittable = info.gso_type & ~GSO_ECN in (GSO_TCPV4, GSO_TCPV6)
        slow = total * 8 / shaper.config.rate_bps > SPLIT_SERIALISATION_S
        if not (slow and splittable):
            whole = shaper.offer_whole(now, sizes, total)
            if whole is not None:
                self.enqueue(shaper.departure(whole), now, len(sizes), total, bytes(data))
                return
        finishes = shaper.offer(now, sizes)
        kept = [f is not None for f in finishes]
        last_finish = max((f for f in finishes if f is not None), default=None)
        if last_finish is None:
            return
        if all(kept) and not (slow and splittable):
            self.enqueue(shaper.departure(last_finish), now, len(sizes), total, bytes(data))
            return
        if not splittable:
            # Not a TCP super-frame we can cut: it lives or dies whole.
            if all(kept):
                self.enqueue(shaper.departure(last_finish), now, len(sizes), sum(sizes), bytes(data))
            else:
                shaper.drops_loss += sum(kept)
            return
        try:
            segments = split_tcp_gso(bytes(frame_view), info, kept)
        except (struct.error, IndexError, ValueError) as exc:  # MalformedFrame is a ValueError
            # frame_info vets every frame it lets through to here; this keeps the link up if it ever misses one.
            stats.malformed += 1
            log.debug("%s: could not split a super-frame: %s", self.name, exc)
            return
        index = 0
        for seg_finish, size in zip(finishes, sizes, strict=True):
            if seg_finish is None:
                continue
            self.enqueue(shaper.departure(seg_finish), now, 1, size, segments[index])
            index += 1

    def transmit(self, now: float) -> None:
        """Send every frame whose departure time has come."""
        horizon = now + TIMER_GRANULARITY_S
        stats = self.stats
        send = self.tx.send
        while True:
            if self.reorder:
                if not self.heap or self.heap[0][0] > horizon:
                    return
                depart, _, arrival, segments, ip_bytes, data = self.heap[0]
            else:
                if not self.line or self.line[0][0] > horizon:
                    return
                depart, arrival, segments, ip_bytes, data = self.line[0]
            started = time.monotonic()
            try:
                send(data)
            except (BlockingIOError, InterruptedError):
                return  # socket buffer full: retry on the next wake-up
            except OSError as exc:
                if exc.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                    raise InterfaceGone(f"{self.name}: send failed: {exc.strerror}") from exc
                if exc.errno in (errno.ENOBUFS, errno.EMSGSIZE, errno.EINVAL):
                    stats.drops_tx += segments
                    log.debug("%s: dropped a frame on send: %s", self.name, exc)
                else:
                    raise
            else:
                # The frame is on the peer's queue early in send(); the rest of the call is the receiver's
                # softirq work done in this context, so lateness is taken at the start.
                took = time.monotonic() - started
                if took > stats.send_max_s:
                    stats.send_max_s = took
                stats.record_send(max(0.0, started - depart), started - arrival, segments, ip_bytes)
            if self.reorder:
                heapq.heappop(self.heap)
            else:
                self.line.popleft()


class DelayLine:
    """The event loop: two packet sockets, one timer, periodic stats."""

    def __init__(
        self, intf_a: str, intf_b: str, a_to_b: DirectionConfig, b_to_a: DirectionConfig, stats_path: str, seed: int,
        control_path: str | None = None, governor: PriorityGovernor | None = None,
    ) -> None:
        self.intfs = (intf_a, intf_b)
        self.governor = governor or PriorityGovernor(0)
        self.stats_path = stats_path
        self.control_path = control_path
        self.commands = CommandQueue()
        self._control_fd: int | None = None
        self._control_buf = b""
        self.sock_a = open_packet_socket(intf_a)
        self.sock_b = open_packet_socket(intf_b)
        self.a_to_b = Direction("a_to_b", self.sock_a, self.sock_b, a_to_b, seed * 2 + 1)
        self.b_to_a = Direction("b_to_a", self.sock_b, self.sock_a, b_to_a, seed * 2 + 2)
        self.timer = DepartureTimer()
        self.loop_stats = LoopStats()
        self.started_s = time.monotonic()
        self.stop_reason: str | None = None
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def snapshot(self, state: str) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "state": state,
            "engine": "python",
            "pid": os.getpid(),
            # When the loop took this snapshot: a reader tells stale stats (a wedged or dead process) from these.
            "time_unix_s": time.time(),
            "time_monotonic_s": now,
            "intf_a": self.intfs[0],
            "intf_b": self.intfs[1],
            "uptime_s": now - self.started_s,
            "exit_reason": self.stop_reason,
            "a_to_b": direction_snapshot(self.a_to_b.shaper, self.a_to_b.stats, now, self.a_to_b.in_flight()),
            "b_to_a": direction_snapshot(self.b_to_a.shaper, self.b_to_a.stats, now, self.b_to_a.in_flight()),
            "loop": self.loop_stats.snapshot(),
            "scheduling": self.governor.snapshot(),
            "control": {
                "path": self.control_path,
                "received": self.commands.received,
                "refused": self.commands.refused,
                "pending": len(self.commands),
                "last_error": self.commands.last_error,
                "applied": list(self.commands.applied),
            },
        }

    # -- control: commands sent ahead with their due time, applied by this loop at that time
    def open_control(self) -> int | None:
        """Create the control pipe (a FIFO, mode 0600) and open it for reading; None without a control path.

        Opened read-write so the pipe never reports end-of-file between writers.
        """
        path = self.control_path
        if path is None:
            return None
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            import stat

            info = os.lstat(path)
            if not stat.S_ISFIFO(info.st_mode) or info.st_uid != os.geteuid():
                raise OSError(errno.EEXIST, f"control path {path} exists and is not our FIFO") from None
        self._control_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        return self._control_fd

    def read_control(self) -> None:
        """Read every whole command line waiting in the pipe and queue it (or reset at once)."""
        fd = self._control_fd
        if fd is None:
            return
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._control_buf += chunk
        *lines, rest = self._control_buf.split(b"\n")
        if len(rest) > MAX_COMMAND_BYTES:
            self._refuse(f"a command line longer than {MAX_COMMAND_BYTES} bytes")
            rest = b""
        self._control_buf = rest
        for line in lines:
            if not line.strip():
                continue
            try:
                command = parse_command(line)
            except BadCommand as exc:
                self._refuse(str(exc))
                continue
            if command.op == "reset":
                self.commands.clear()
                self._apply(Command("set", command.command_id, time.monotonic(), "both", {}), time.monotonic())
            else:
                self.commands.push(command)

    def _refuse(self, why: str) -> None:
        self.commands.refused += 1
        self.commands.last_error = why
        log.warning("control command refused: %s", why)

    def apply_due(self, now_s: float) -> None:
        for command in self.commands.due(now_s + TIMER_GRANULARITY_S):
            self._apply(command, now_s)

    def _apply(self, command: Command, due_s: float) -> None:
        targets = [self.a_to_b, self.b_to_a] if command.direction == "both" else \
            [self.a_to_b if command.direction == "a_to_b" else self.b_to_a]
        try:
            configs = [apply_state(d.base_config, command.state) for d in targets]
        except BadCommand as exc:
            self._refuse(f"command {command.command_id}: {exc}")
            return
        for direction, (config, down) in zip(targets, configs, strict=True):
            direction.shaper.reconfigure(config, down=down)
        applied = time.monotonic()
        self.commands.applied.append({"id": command.command_id, "due_monotonic_s": command.at_monotonic_s,
                                      "applied_monotonic_s": applied, "direction": command.direction,
                                      "state": command.state})
        log.info("applied command %d (%s %s), %.3f ms after its due time", command.command_id,
                 command.direction, command.state, (applied - command.at_monotonic_s) * 1e3)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_reason = f"signal {signal.Signals(signum).name}"
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def _check_interfaces(self) -> None:
        for intf in self.intfs:
            try:
                socket.if_nametoindex(intf)
            except OSError as exc:
                raise InterfaceGone(f"interface {intf} disappeared") from exc

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        poller = select.epoll()
        fd_a, fd_b, fd_t = self.sock_a.fileno(), self.sock_b.fileno(), self.timer.fd
        poller.register(fd_a, select.EPOLLIN)
        poller.register(fd_b, select.EPOLLIN)
        poller.register(fd_t, select.EPOLLIN)
        poller.register(self.wake_r, select.EPOLLIN)
        fd_c = self.open_control()
        if fd_c is not None:
            poller.register(fd_c, select.EPOLLIN)
        buf = bytearray(RECV_BUFFER_BYTES)
        view = memoryview(buf)
        forward, backward = self.a_to_b, self.b_to_a
        loop = self.loop_stats
        write_json_atomic(self.stats_path, self.snapshot("running"))  # the readiness signal
        writer = StatsWriter(self.stats_path)
        log.info("delay line %s <-> %s running (pid %d)", self.intfs[0], self.intfs[1], os.getpid())
        next_stats = time.monotonic() + STATS_INTERVAL_S
        try:
            while self.stop_reason is None:
                now = time.monotonic()
                wait = next_stats - now
                events = poller.poll(wait if wait > 0 else 0, 16)
                woke = time.monotonic()
                ready_a = ready_b = False
                for fd, mask in events:
                    if mask & (select.EPOLLERR | select.EPOLLHUP) and fd in (fd_a, fd_b):
                        sock = self.sock_a if fd == fd_a else self.sock_b
                        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        raise InterfaceGone(f"socket on {self.intfs[fd != fd_a]} reported: {os.strerror(err)}")
                    if fd == fd_a:
                        ready_a = True
                    elif fd == fd_b:
                        ready_b = True
                    elif fd == fd_t:
                        loop.record_wake(woke - self.timer.armed_s)
                        self.timer.drain()
                    elif fd == fd_c:
                        self.read_control()
                if len(self.commands):  # not next_due(): a command due at 0.0 (at once) is pending too
                    self.apply_due(time.monotonic())
                # Departures first: the wake-up is most often the timer's.
                now = time.monotonic()
                forward.transmit(now)
                backward.transmit(now)
                # Read both sides in turns and send what is due between small batches, so a flood one
                # way neither starves the other direction nor delays departures: a batch stops early when
                # the next departure comes due.
                rounds = 0
                while (ready_a or ready_b) and rounds < MAX_RECEIVE_ROUNDS:
                    rounds += 1
                    nxt_f, nxt_b = forward.next_departure(), backward.next_departure()
                    until = min(nxt_f, nxt_b) if nxt_f and nxt_b else (nxt_f or nxt_b)
                    if ready_a:
                        forward.receive(buf, view, RECEIVE_BATCH, until)
                        ready_a = not forward.rx_empty
                    if ready_b:
                        backward.receive(buf, view, RECEIVE_BATCH, until)
                        ready_b = not backward.rx_empty
                    now = time.monotonic()
                    forward.transmit(now)
                    backward.transmit(now)
                now = time.monotonic()
                forward.transmit(now)
                backward.transmit(now)
                nxt_f, nxt_b = forward.next_departure(), backward.next_departure()
                nxt = min(nxt_f, nxt_b) if nxt_f and nxt_b else (nxt_f or nxt_b)
                if nxt:
                    # Retry soon if a send was refused and the head is already due.
                    nxt = max(nxt, time.monotonic() + 50e-6)
                if len(self.commands):
                    # a command due at 0.0 was applied above; one pushed since then is due at once
                    due = self.commands.next_due() or time.monotonic()
                    nxt = min(nxt, due) if nxt else due
                self.timer.arm(nxt if nxt else 0.0)
                busy = time.monotonic() - woke
                if busy > loop.busy_max_s:
                    loop.busy_max_s = busy
                if now >= next_stats:
                    offset = time.time() - time.monotonic()
                    forward.realtime_offset_s = backward.realtime_offset_s = offset
                    self._check_interfaces()
                    self.governor.tick()
                    writer.submit(self.snapshot("running"))
                    next_stats = now + STATS_INTERVAL_S
        except InterfaceGone as exc:
            self.stop_reason = str(exc)
            log.warning("delay line stopping: %s", exc)
        finally:
            writer.close(self.snapshot("stopped"))
            poller.close()
            self.timer.close()
            self.sock_a.close()
            self.sock_b.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            if self._control_fd is not None:
                os.close(self._control_fd)
        log.info("delay line stopped: %s", self.stop_reason)
        return EXIT_OK


#: A SCHED_FIFO delay line that needs more than this share of one core over :data:`CPU_WINDOW_S` steps
#: down to a normal task at :data:`BUSY_NICE`, and goes back to SCHED_FIFO below :data:`FIFO_RETURN_SHARE`.
FIFO_LEAVE_SHARE = 0.85
FIFO_RETURN_SHARE = 0.60
CPU_WINDOW_S = 0.4
BUSY_NICE = -10


class PriorityGovernor:
    """SCHED_FIFO while the line has CPU to spare; a normal task at nice -10 while it needs nearly a whole core.

    Real time keeps departures ahead of the traffic the line carries (2 Gbit/s:
    lateness p99 0.21 ms, against 2.1 ms as a normal task). But the kernel does
    not let a real-time task hold a CPU for good: RT throttling
    (``sched_rt_runtime_us``, 95 % of each second) and, from Linux 6.12, the
    fair server give the ordinary tasks of that CPU about 50 ms of every second
    once a real-time task starves them. A line that needs the whole core, as the
    userspace line does at 5 Gbit/s, is then taken off it for ~50 ms each second:
    measured here at 5 Gbit/s, the line used 0.94-1.0 of a core and most seconds'
    lateness p99 was 40-46 ms; as a nice -10 task at the same rate every second's
    p99 was 0.2-0.7 ms. So the governor, called once per stats interval from the
    loop, reads the loop thread's CPU time and moves between the two (with
    hysteresis, at most once per :data:`CPU_WINDOW_S`); the stats say which
    policy holds and how often it changed.
    """

    def __init__(self, priority: int, *, clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.thread_time,
                 set_fifo: Callable[[int], None] | None = None,
                 set_normal: Callable[[int], None] | None = None) -> None:
        self.priority = priority
        self.policy = "normal"
        self.switches = 0
        self.cpu_share = 0.0
        self._clock, self._cpu = clock, cpu
        self._set_fifo = set_fifo or _set_fifo
        self._set_normal = set_normal or _set_normal
        self._can_fifo = False
        self._since, self._cpu_since = clock(), cpu()

    def start(self) -> None:
        """Take SCHED_FIFO ``priority`` (or at least nice -10); a priority of 0 stays a normal process."""
        if self.priority <= 0:
            return
        try:
            self._set_fifo(self.priority)
            self.policy, self._can_fifo = "fifo", True
            return
        except (OSError, AttributeError) as exc:
            log.info("cannot run as SCHED_FIFO %d (%s); trying nice %d", self.priority, exc, BUSY_NICE)
        try:
            self._set_normal(BUSY_NICE)
            self.policy = "nice"
        except OSError as exc:
            log.info("cannot raise priority (%s); departures may be late under CPU load", exc)

    def tick(self) -> None:
        """Measure the loop's CPU share over the last window and change policy when it crossed a bound."""
        now, cpu = self._clock(), self._cpu()
        elapsed = now - self._since
        if elapsed < CPU_WINDOW_S:
            return
        self.cpu_share = (cpu - self._cpu_since) / elapsed
        self._since, self._cpu_since = now, cpu
        if not self._can_fifo:
            return
        try:
            if self.policy == "fifo" and self.cpu_share > FIFO_LEAVE_SHARE:
                self._set_normal(BUSY_NICE)
                self.policy = "nice"
            elif self.policy == "nice" and self.cpu_share < FIFO_RETURN_SHARE:
                self._set_fifo(self.priority)
                self.policy = "fifo"
            else:
                return
        except OSError as exc:
            log.warning("cannot change scheduling policy (%s); staying %s", exc, self.policy)
            self._can_fifo = False
            return
        self.switches += 1
        log.info("the loop used %.0f %% of a core: now %s", self.cpu_share * 100,
                 "SCHED_FIFO" if self.policy == "fifo" else f"a normal task at nice {BUSY_NICE}")

    def snapshot(self) -> dict[str, Any]:
        return {"policy": self.policy, "switches": self.switches, "cpu_share": self.cpu_share}


def _set_fifo(priority: int) -> None:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))


def _set_normal(nice: int) -> None:
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, 0, nice)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m corridor.links.delayline", description=__doc__.split("\n")[0])
    parser.add_argument("--intf-a", required=True)
    parser.add_argument("--intf-b", required=True)
    parser.add_argument("--a-to-b", required=True, help="LinkDirection.as_dict() as JSON")
    parser.add_argument("--b-to-a", required=True, help="LinkDirection.as_dict() as JSON")
    parser.add_argument("--stats", required=True, help="JSON file rewritten every 200 ms and at exit")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--control", default=None,
                        help="FIFO to create and read timed commands from (faults while running; JSON lines)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--priority", type=int, default=REALTIME_PRIORITY,
        help="SCHED_FIFO priority (0: stay a normal process); a link, like kernel netem, must not wait behind "
        "the traffic it carries",
    )
    parser.add_argument("--cpu", type=int, default=None,
                        help="run only on this CPU (corridor.links.steering keeps the receivers' work off it)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s delayline %(levelname)s: %(message)s")
    try:
        a_to_b = DirectionConfig.from_dict(json.loads(args.a_to_b))
        b_to_a = DirectionConfig.from_dict(json.loads(args.b_to_a))
    except (ValueError, KeyError, TypeError) as exc:
        log.error("bad direction parameters: %s", exc)
        return EXIT_BAD_ARGS
    if args.cpu is not None:
        try:
            os.sched_setaffinity(0, {args.cpu})
        except (OSError, ValueError, OverflowError) as exc:
            log.error("cannot run on CPU %d: %s", args.cpu, exc)
            return EXIT_BAD_ARGS
    governor = PriorityGovernor(args.priority)
    governor.start()
    # The loop allocates only acyclic objects; a full collection over thousands of queued frames is a pause.
    gc.disable()
    # The stats thread takes the GIL whenever the loop is in a system call; the loop must get it back within
    # a fraction of a departure's tolerance, not after the default 5 ms.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        line = DelayLine(args.intf_a, args.intf_b, a_to_b, b_to_a, args.stats, args.seed, control_path=args.control,
                         governor=governor)
    except OSError as exc:
        log.error("cannot open interfaces %s and %s: %s", args.intf_a, args.intf_b, exc)
        return EXIT_BAD_ARGS
    try:
        return line.run()
    except OSError as exc:
        log.error("delay line %s <-> %s failed: %s", args.intf_a, args.intf_b, exc)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
