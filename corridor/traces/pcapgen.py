"""Synthetic packet captures: TCP and UDP flows between a few hosts, written as a pcap file.

Stage: analysis (test and benchmark input; pure, no root, no network). The
capture is built with ``struct`` (no scapy), so a benchmark can write hundreds
of thousands of packets in seconds. It holds what the converter must get right:
HTTP requests with chunked streaming responses, raw bulk transfers with ACKs
flowing back, retransmitted and reordered segments, UDP datagrams, and (with
``mixed=True``) IPv6 flows, VLAN-tagged frames, ARP, ICMP, IPv6 extension
headers and padded tiny frames, so the header reader and its scapy fallback are both exercised.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_MSS = 1448
_ETH_SRC = b"\x02\x00\x00\x00\x00\x01"
_ETH_DST = b"\x02\x00\x00\x00\x00\x02"


@dataclass
class _PcapFlow:
    """One TCP connection between two endpoints; ``seq`` per side (0 client, 1 server)."""

    addrs: tuple[bytes, bytes]
    ports: tuple[int, int]
    seq: list[int]
    v6: bool
    vlan: int | None
    http: bool


class _Writer:
    def __init__(self, f: BinaryIO, rng: random.Random) -> None:
        self.f = f
        self.rng = rng
        self.packets = 0
        self.t_us = 1_700_000_000 * 1_000_000 + rng.randrange(1_000_000)
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))

    def frame(self, frame: bytes, dt_us: int) -> None:
        self.t_us += dt_us
        sec, usec = divmod(self.t_us, 1_000_000)
        self.f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
        self.packets += 1

    def tcp(self, c: _PcapFlow, side: int, payload: bytes, *, flags: int = 0x18, seq: int | None = None,
            dt_us: int = 20) -> None:
        src, dst = c.addrs[side], c.addrs[1 - side]
        sport, dport = c.ports[side], c.ports[1 - side]
        s = c.seq[side] if seq is None else seq
        tcp = struct.pack("!HHIIBBHHH", sport, dport, s, 0, 5 << 4, flags, 65535, 0, 0) + payload
        self.frame(_l2(_ip(src, dst, 6, tcp, c.v6), c.v6, c.vlan), dt_us)
        if seq is None:
            c.seq[side] = (c.seq[side] + len(payload)) % (1 << 32)

    def udp(self, src: bytes, dst: bytes, sport: int, dport: int, size: int, dt_us: int = 20) -> None:
        udp = struct.pack("!HHHH", sport, dport, 8 + size, 0) + bytes(size)
        self.frame(_l2(_ip(src, dst, 17, udp, False), False, None), dt_us)


def _ip(src: bytes, dst: bytes, proto: int, payload: bytes, v6: bool) -> bytes:
    if v6:
        return struct.pack("!IHBB", 6 << 28, len(payload), proto, 64) + src + dst + payload
    return struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0) + src + dst + payload


def _l2(ip: bytes, v6: bool, vlan: int | None) -> bytes:
    ethertype = struct.pack("!H", 0x86DD if v6 else 0x0800)
    if vlan is not None:
        ethertype = struct.pack("!HH", 0x8100, vlan) + ethertype
    frame = _ETH_DST + _ETH_SRC + ethertype + ip
    return frame + bytes(max(60 - len(frame), 0))  # Ethernet pads short frames to 60 bytes


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n" % len(payload) + payload + b"\r\n"


def _segments(data: bytes) -> list[bytes]:
    return [data[i:i + _MSS] for i in range(0, len(data), _MSS)]


def write_capture(path: str | Path, packets: int, *, hosts: int = 4, seed: int = 1, mixed: bool = False) -> int:
    """Write about ``packets`` packets (at least that many) of traffic between ``hosts`` hosts; returns the count."""
    rng = random.Random(seed)
    v4 = [bytes((10, 77, 0, i + 1)) for i in range(hosts)]
    v6 = [bytes.fromhex("fd00000000000000000000000000") + bytes((0, i + 1)) for i in range(hosts)]
    conns: list[_PcapFlow] = []
    with Path(path).open("wb") as f:
        w = _Writer(f, rng)
        while w.packets < packets:
            if len(conns) < 2 * hosts or rng.random() < 0.01:
                a, b = rng.sample(range(hosts), 2)
                is_v6 = mixed and rng.random() < 0.2
                c = _PcapFlow(addrs=(v6[a], v6[b]) if is_v6 else (v4[a], v4[b]),
                          ports=(rng.randrange(32768, 61000), rng.choice((8000, 5201, 29500))),
                          seq=[rng.randrange(1 << 32), rng.randrange(1 << 32)], v6=is_v6,
                          vlan=rng.randrange(1, 4095) if mixed and rng.random() < 0.1 else None,
                          http=rng.random() < 0.4)
                w.tcp(c, 0, b"", flags=0x02, seq=(c.seq[0] - 1) % (1 << 32))
                w.tcp(c, 1, b"", flags=0x12, seq=(c.seq[1] - 1) % (1 << 32))
                w.tcp(c, 0, b"", flags=0x10)
                conns.append(c)
                if len(conns) > 4 * hosts:
                    conns.pop(0)
            c = rng.choice(conns)
            if c.http:
                _http_exchange(w, c, rng)
            else:
                _bulk(w, c, rng)
            if rng.random() < 0.2:
                a, b = rng.sample(range(hosts), 2)
                for _ in range(rng.randrange(1, 20)):
                    w.udp(v4[a], v4[b], 5000 + a, 6000 + b, rng.randrange(0, 1400))
            if mixed and rng.random() < 0.05:
                w.frame(_ETH_DST + _ETH_SRC + b"\x08\x06" + bytes(46), 50)  # ARP
                icmp = _ip(v4[0], v4[1], 1, b"\x08\x00" + bytes(62), False)
                w.frame(_l2(icmp, False, None), 50)
                # a UDP datagram behind an IPv6 hop-by-hop header: left to the full dissector
                udp = struct.pack("!HHHH", 7000, 7001, 8 + 32, 0) + bytes(32)
                hbh = struct.pack("!BB", 17, 0) + b"\x01\x04" + bytes(4)
                w.frame(_l2(struct.pack("!IHBB", 6 << 28, len(hbh) + len(udp), 0, 64) + v6[0] + v6[1] + hbh + udp,
                            True, None), 50)
    return w.packets


def _http_exchange(w: _Writer, c: _PcapFlow, rng: random.Random) -> None:
    body = b'{"prompt_tokens": %d, "max_tokens": %d}' % (rng.randrange(1, 9000), rng.randrange(1, 500))
    req = b"POST /v1/completions HTTP/1.1\r\nHost: srv\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    w.tcp(c, 0, req, dt_us=rng.randrange(100, 3000))
    w.tcp(c, 1, b"", flags=0x10)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    w.tcp(c, 1, head, dt_us=rng.randrange(100, 5000))
    for i in range(rng.randrange(1, 40)):
        token = _chunk(b'data: {"id": 1, "i": %d, "text": "%s"}\n\n' % (i, b"x" * rng.randrange(1, 12)))
        if rng.random() < 0.1:  # a chunk cut across two segments
            cut = rng.randrange(1, len(token))
            w.tcp(c, 1, token[:cut])
            w.tcp(c, 1, token[cut:])
        else:
            w.tcp(c, 1, token, dt_us=rng.randrange(50, 2000))
        if i % 2:
            w.tcp(c, 0, b"", flags=0x10)
    w.tcp(c, 1, b"0\r\n\r\n")
    w.tcp(c, 0, b"", flags=0x10)


def _bulk(w: _Writer, c: _PcapFlow, rng: random.Random) -> None:
    side = 0 if rng.random() < 0.7 else 1
    data = bytes(rng.randrange(1, 200_000))
    segs = _segments(data)
    start = c.seq[side]
    offset = 0
    held: tuple[int, bytes] | None = None
    for i, seg in enumerate(segs):
        seq = (start + offset) % (1 << 32)
        if held is None and rng.random() < 0.01 and i + 1 < len(segs):
            held = (seq, seg)  # sent after the next segment: reordered
        else:
            w.tcp(c, side, seg, seq=seq, dt_us=rng.randrange(5, 30))
            if held is not None:
                w.tcp(c, side, held[1], seq=held[0], dt_us=5)
                held = None
        if rng.random() < 0.005:  # a retransmission of this segment
            w.tcp(c, side, seg, seq=seq, dt_us=200)
        if i % 2:
            w.tcp(c, 1 - side, b"", flags=0x10, dt_us=2)
        offset += len(seg)
    if held is not None:
        w.tcp(c, side, held[1], seq=held[0], dt_us=5)
    c.seq[side] = (start + len(data)) % (1 << 32)
    w.tcp(c, 1 - side, bytes(rng.randrange(1, 300)), dt_us=rng.randrange(1000, 5000))  # the answer
