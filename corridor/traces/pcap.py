"""Packet captures to message traces: flows, TCP reassembly and message framing.

Stage: analysis (pure input reader; reads a pcap or pcapng file, no root, no
network). The result is a generic message trace (:mod:`corridor.traces.generic`)
that training and inference replays, and the analysis, read.

What a *message* is here:

- TCP: each direction of a connection is reassembled into its byte stream
  first (by sequence number: a retransmitted or duplicated segment adds no
  bytes; a segment that arrives ahead of a hole waits for it), so a message's
  size never depends on how the kernel cut the stream into segments (GSO, TSO,
  Nagle, retransmission).
  - When the stream is HTTP/1.x (it starts with a request method or
    ``HTTP/``), messages follow HTTP framing: a request or a response with
    ``Content-Length`` is one message (head and body); a chunked response is
    its head, then one message per chunk, then one for the final zero-length
    chunk and trailers. This is the framing :mod:`corridor.agent.inference`
    counts when it sends, so a capture of a run converts back to exactly the
    run's message count and byte total.
  - Otherwise a message is a maximal run of payload in one direction, ended by
    payload in the opposite direction of the same connection or by a silence
    longer than ``gap_s``.
- UDP: one datagram, one message.

A message's ``time_s`` is the capture time of the segment that carried its
first byte, relative to the first packet in the file; ``src``/``dst`` are
``ip:port`` endpoints.

Reading: :func:`convert` streams the file's records (pcap, microsecond or
nanosecond, either byte order; pcapng) and reads the link, IP and transport
headers with ``struct``. Only a frame whose headers that reader does not handle
(tunnels, IPv6 extension headers, an unknown link type, a header
cut short) goes through scapy's dissector, so the output is what full
dissection gives. :func:`convert_scapy` dissects every packet with scapy: the
reference the tests and ``scripts/bench_pcap.py`` compare against. Memory holds
the open streams' unframed bytes and the messages, never the packets.
"""

from __future__ import annotations

import bisect
import logging
import math
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from corridor.errors import TraceError
from corridor.traces import TraceMessage

log = logging.getLogger(__name__)

_HTTP_STARTS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"PATCH ", b"OPTIONS ", b"HTTP/")
_SEQ_MOD = 1 << 32
#: Default silence that ends a non-HTTP message.
GAP_S = 0.002


@dataclass
class FlowSummary:
    """One TCP connection or UDP flow (both directions)."""

    proto: str
    a: str
    b: str
    packets: int = 0
    payload_bytes: int = 0
    messages: int = 0
    first_s: float = 0.0
    last_s: float = 0.0
    retransmitted_bytes: int = 0
    missing_bytes: int = 0


@dataclass
class _Direction:
    """One direction of a TCP connection: reassembly plus the framer's state."""

    src: str
    dst: str
    flow: FlowSummary
    next_seq: int | None = None
    ahead: dict[int, tuple[bytes, float]] = field(default_factory=dict)
    offset: int = 0  # stream bytes delivered so far
    seg_offsets: list[int] = field(default_factory=list)
    seg_times: list[float] = field(default_factory=list)
    buf: bytearray = field(default_factory=bytearray)
    buf_start: int = 0  # stream offset of buf[0]
    mode: str = ""  # "", "http", "raw"
    state: str = "head"  # http: head, body, chunk, trailer, to_end
    body_left: int = 0
    msg_start: int = 0
    msg_kind: str = ""
    raw_open: bool = False
    raw_last_s: float = 0.0
    raw_size: int = 0
    raw_t: float = 0.0


class Converter:
    """Feeds packets in capture order; collects messages and flow summaries."""

    def __init__(self, *, gap_s: float = GAP_S) -> None:
        self.gap_s = gap_s
        self.t0: float | None = None
        self.messages: list[TraceMessage] = []
        self.flows: dict[tuple[str, str, str], FlowSummary] = {}
        self.dirs: dict[tuple[str, str], _Direction] = {}

    # -- packet intake ------------------------------------------------------------
    def _flow(self, proto: str, src: str, dst: str, t: float) -> FlowSummary:
        a, b = sorted((src, dst))
        key = (proto, a, b)
        flow = self.flows.get(key)
        if flow is None:
            flow = self.flows[key] = FlowSummary(proto, a, b, first_s=t, last_s=t)
        flow.packets += 1
        flow.last_s = t
        return flow

    def udp(self, t: float, src: str, dst: str, payload_len: int) -> None:
        t = self._rel(t)
        flow = self._flow("udp", src, dst, t)
        flow.payload_bytes += payload_len
        flow.messages += 1
        self.messages.append(TraceMessage(time_s=t, src=src, dst=dst, size_bytes=payload_len, kind="udp"))

    def _rel(self, t: float) -> float:
        if self.t0 is None:
            self.t0 = t
        return t - self.t0

    def tcp(self, t: float, src: str, dst: str, seq: int, syn: bool, payload: bytes) -> None:
        t = self._rel(t)
        d = self.dirs.get((src, dst))
        if d is None:
            flow = self._flow("tcp", src, dst, t)
            d = self.dirs[(src, dst)] = _Direction(src, dst, flow)
        else:  # the hot path: the direction (so its flow) is known
            flow = d.flow
            flow.packets += 1
            flow.last_s = t
        if syn:
            d.next_seq = (seq + 1) % _SEQ_MOD
            if not payload:
                return
            seq = (seq + 1) % _SEQ_MOD
        if not payload:
            return
        if d.next_seq is None:
            d.next_seq = seq
        rel = (seq - d.next_seq) % _SEQ_MOD
        if rel >= _SEQ_MOD // 2:  # starts before what we have: a retransmission (maybe partial)
            behind = _SEQ_MOD - rel
            if behind >= len(payload):
                flow.retransmitted_bytes += len(payload)
                return
            flow.retransmitted_bytes += behind
            payload = payload[behind:]
            rel = 0
        if rel > 0:
            d.ahead[rel + d.offset] = (payload, t)
            return
        self._deliver(d, payload, t)
        self._drain_ahead(d)

    def _drain_ahead(self, d: _Direction) -> None:
        while d.ahead:
            start = min(d.ahead)
            if start > d.offset:
                return
            payload, t = d.ahead.pop(start)
            skip = d.offset - start
            if skip < len(payload):
                d.flow.retransmitted_bytes += skip
                self._deliver(d, payload[skip:], t)
            else:
                d.flow.retransmitted_bytes += len(payload)

    def _deliver(self, d: _Direction, data: bytes, t: float) -> None:
        if d.mode != "raw":  # raw framing never looks segment times up: keep a long burst's memory flat
            d.seg_offsets.append(d.offset)
            d.seg_times.append(t)
        d.offset += len(data)
        assert d.next_seq is not None
        d.next_seq = (d.next_seq + len(data)) % _SEQ_MOD
        d.flow.payload_bytes += len(data)
        if not d.mode:
            d.buf += data
            probe = bytes(d.buf[:8])
            if any(probe.startswith(s) for s in _HTTP_STARTS):
                d.mode = "http"
            elif len(probe) >= 8 or not any(s.startswith(probe) for s in _HTTP_STARTS):
                d.mode = "raw"
                size = len(d.buf)
                d.buf = bytearray()
                self._raw(d, size, d.seg_times[0])
                return
            else:
                return  # too few bytes to tell yet
            d.buf_start = d.offset - len(d.buf)
            self._http(d)
        elif d.mode == "raw":
            self._raw(d, len(data), t)
        else:
            d.buf += data
            self._http(d)

    # -- framing ------------------------------------------------------------------
    def _time_at(self, d: _Direction, offset: int) -> float:
        i = bisect.bisect_right(d.seg_offsets, offset) - 1
        return d.seg_times[max(i, 0)]

    def _emit(self, d: _Direction, start: int, size: int, kind: str) -> None:
        self.messages.append(TraceMessage(time_s=self._time_at(d, start), src=d.src, dst=d.dst, size_bytes=size,
                                          kind=kind))
        d.flow.messages += 1
        # segment times before this message are no longer needed
        i = bisect.bisect_right(d.seg_offsets, start + size) - 1
        if i > 0:
            del d.seg_offsets[:i]
            del d.seg_times[:i]

    def _consume(self, d: _Direction, n: int) -> None:
        del d.buf[:n]
        d.buf_start += n

    def _http(self, d: _Direction) -> None:
        while True:
            if d.state == "head":
                end = d.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(d.buf) > 65536:
                        self._give_up_http(d, "an HTTP head longer than 64 KiB")
                    return
                head = bytes(d.buf[:end]).decode("latin-1")
                head_len = end + 4
                d.msg_start = d.buf_start
                self._consume(d, head_len)
                first, *lines = head.split("\r\n")
                headers = {}
                for line in lines:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                is_response = first.startswith("HTTP/")
                status = first.split(" ")[1] if is_response and " " in first else ""
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    self._emit(d, d.msg_start, head_len, "http-head")
                    d.state = "chunk"
                elif "content-length" in headers:
                    try:
                        d.body_left = int(headers["content-length"])
                    except ValueError:
                        self._give_up_http(d, f"a bad Content-Length {headers['content-length']!r}")
                        return
                    d.msg_kind = "http-response" if is_response else "http-request"
                    d.state = "body"
                elif is_response and not (status.startswith("1") or status in ("204", "304")):
                    d.state = "to_end"
                    d.msg_kind = "http-response"
                    d.body_left = 0
                else:
                    self._emit(d, d.msg_start, head_len, "http-response" if is_response else "http-request")
                    continue
            if d.state == "body":
                take = min(d.body_left, len(d.buf))
                self._consume(d, take)
                d.body_left -= take
                if d.body_left > 0:
                    return
                self._emit(d, d.msg_start, d.buf_start - d.msg_start, d.msg_kind)
                d.state = "head"
                continue
            if d.state == "chunk":
                end = d.buf.find(b"\r\n")
                if end < 0:
                    return
                try:
                    size = int(bytes(d.buf[:end]).split(b";")[0].strip(), 16)
                except ValueError:
                    self._give_up_http(d, "a bad chunk size line")
                    return
                if size == 0:
                    d.state = "trailer"
                    d.msg_start = d.buf_start
                    self._consume(d, end + 2)
                    continue
                need = end + 2 + size + 2
                if len(d.buf) < need:
                    return
                start = d.buf_start
                self._consume(d, need)
                self._emit(d, start, need, "http-chunk")
                continue
            if d.state == "trailer":
                end = d.buf.find(b"\r\n")
                if end < 0:
                    return
                self._consume(d, end + 2)
                if end == 0:
                    self._emit(d, d.msg_start, d.buf_start - d.msg_start, "http-end")
                    d.state = "head"
                continue
            if d.state == "to_end":
                d.body_left += len(d.buf)
                self._consume(d, len(d.buf))
                return
            return

    def _give_up_http(self, d: _Direction, why: str) -> None:
        log.warning("%s -> %s: %s; framing the rest of this stream by gaps", d.src, d.dst, why)
        pending = len(d.buf)
        d.mode = "raw"
        d.buf = bytearray()
        if pending:
            self._raw(d, pending, self._time_at(d, d.buf_start))

    def _raw(self, d: _Direction, size: int, t: float) -> None:
        rev = self.dirs.get((d.dst, d.src))
        if rev is not None and rev.mode == "raw" and rev.raw_open:
            self._close_raw(rev)
        if d.raw_open and t - d.raw_last_s > self.gap_s:
            self._close_raw(d)
        if not d.raw_open:
            d.raw_open = True
            d.raw_t = t
            d.raw_size = 0
        d.raw_size += size
        d.raw_last_s = t

    def _close_raw(self, d: _Direction) -> None:
        self.messages.append(TraceMessage(time_s=d.raw_t, src=d.src, dst=d.dst, size_bytes=d.raw_size, kind="tcp"))
        d.flow.messages += 1
        d.raw_open = False
        d.seg_offsets.clear()
        d.seg_times.clear()

    def finish(self) -> list[TraceMessage]:
        """Flush what is still open (holes, streams cut by the capture's end); messages in time order."""
        for d in self.dirs.values():
            if d.ahead:
                start = min(d.ahead)
                d.flow.missing_bytes += start - d.offset
                log.warning("%s -> %s: %d bytes missing from the capture", d.src, d.dst, start - d.offset)
                d.offset = start
                self._drain_ahead(d)
            if d.mode == "http":
                if d.state == "to_end" or (d.state == "body" and d.buf_start > d.msg_start):
                    self._emit(d, d.msg_start, d.buf_start - d.msg_start, d.msg_kind)
                elif d.buf:
                    self._emit(d, d.buf_start, len(d.buf), "http-partial")
            elif d.mode == "" and d.buf:
                d.mode = "raw"
                self._raw(d, len(d.buf), d.seg_times[0] if d.seg_times else 0.0)
            if d.mode == "raw" and d.raw_open:
                self._close_raw(d)
        self.messages.sort(key=lambda m: m.time_s)
        return self.messages


# -- reading captures -------------------------------------------------------------
# The fast path reads pcap/pcapng records and the Ethernet, Linux cooked, IPv4,
# IPv6, TCP and UDP headers (VLAN tags skipped) with struct. A packet whose headers it
# does not understand (tunnels, IPv6 extension headers, unusual link types,
# cut-off headers) goes to scapy's dissector, one packet at a time, so the result
# is what full dissection gives while the common case costs a few microseconds.

_PCAP_MAGICS: dict[bytes, tuple[str, int]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000), b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000), b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_LT_ETHERNET, _LT_SLL, _LT_SLL2 = 1, 113, 276
_LT_RAW = (12, 101)  # raw IP, version from the first nibble
_LT_IPV4, _LT_IPV6 = 228, 229
_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_ETH_VLAN = frozenset((0x8100, 0x88A8))  # 802.1Q and 802.1ad tags
# Ethernet type, IPv4 version/length, total length, flags/fragment, protocol, addresses and ports, TCP
# sequence, data offset, flags: what the common frame needs, read at once
_ETH_IPV4_TCP = struct.Struct("!12xHBxHxxHxBxx12sIxxxxBB").unpack_from
_ETH_SKIP = frozenset((0x0806, 0x88CC, 0x8035))  # ARP, LLDP, RARP: never carry TCP or UDP
_IP_SKIP = frozenset((1, 2, 58))  # ICMP, IGMP, ICMPv6: scapy's quoted headers are not TCP or UDP layers
_CHUNK_BYTES = 1 << 20

#: One decoded packet: ("tcp", src, dst, seq, syn, payload) or ("udp", src, dst, payload_len).
Decoded = tuple[Any, ...]


@dataclass(frozen=True)
class ConversionStats:
    """What one conversion read and wrote, and how fast."""

    packets: int
    messages: int
    payload_bytes: int
    elapsed_s: float

    @property
    def packets_per_s(self) -> float:
        return self.packets / self.elapsed_s if self.elapsed_s > 0 else math.inf


class _Chunks:
    """A file read in large chunks; ``take(n)`` returns the next n bytes (fewer only at the end)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.buf = b""
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end <= len(self.buf):
            out = self.buf[self.pos:end]
            self.pos = end
            return out
        rest = self.buf[self.pos:]
        more = self.f.read(max(_CHUNK_BYTES, n - len(rest)))
        self.buf = rest + more
        self.pos = min(n, len(self.buf))
        return self.buf[: self.pos]


def _open_capture(path: str | Path) -> BinaryIO:
    try:
        return Path(path).open("rb")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such capture file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, not a capture file; give the pcap or pcapng file") from None


def _pcap_records(path: str | Path, src: _Chunks, magic: bytes) -> Iterator[tuple[int, float, bytes]]:
    endian, ticks = _PCAP_MAGICS[magic]
    head = src.take(20)
    if len(head) < 20:
        raise TraceError(f"{path}: not a pcap or pcapng file (the pcap header is cut short)")
    linktype = struct.unpack(endian + "HHiIII", head)[5] & 0x0FFFFFFF  # upper bits: FCS length flags
    unpack_from = struct.Struct(endian + "IIII").unpack_from
    # records are cut straight out of a large buffer: one unpack and one slice per packet
    buf = src.buf[src.pos:]
    read = src.f.read
    pos = 0
    size = len(buf)
    while True:
        if pos + 16 > size:
            more = read(_CHUNK_BYTES)
            if not more:
                if pos < size:
                    log.warning("%s: the capture ends inside a record header; %d bytes ignored", path, size - pos)
                return
            buf = buf[pos:] + more
            pos = 0
            size = len(buf)
            continue
        sec, frac, caplen, _wirelen = unpack_from(buf, pos)
        end = pos + 16 + caplen
        if end > size:
            more = read(max(_CHUNK_BYTES, end - size))
            if not more:
                log.warning("%s: the last packet record is cut short (%d of %d bytes); it is ignored",
                            path, size - pos - 16, caplen)
                return
            buf = buf[pos:] + more
            pos = 0
            size = len(buf)
            continue
        # int / int is correctly rounded: the same float as the exact decimal time
        yield linktype, (sec * ticks + frac) / ticks, buf[pos + 16:end]
        pos = end


def _pcapng_records(path: str | Path, src: _Chunks) -> Iterator[tuple[int, float, bytes]]:
    endian = "<"
    interfaces: list[tuple[int, int, int]] = []  # (linktype, snaplen, ticks per second)
    last_t = 0.0
    take = src.take
    first = True
    while True:
        head = take(8)
        if not head:
            return
        if len(head) < 8:
            raise TraceError(f"{path}: capture is damaged or truncated (a block header is cut short)")
        if head[:4] == _PCAPNG_MAGIC:
            bom = take(4)
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise TraceError(f"{path}: not a pcap or pcapng file (bad section byte-order magic {bom!r})")
            blocklen = struct.unpack(endian + "I", head[4:])[0]
            body = bom + take(max(blocklen - 12, 0) - 4 if blocklen >= 16 else 0)
            btype = 0x0A0D0D0A
            interfaces = []  # interface ids are per section
        else:
            if first:
                raise TraceError(f"{path}: not a pcap or pcapng file (no section header block)")
            btype, blocklen = struct.unpack(endian + "II", head)
            body = take(blocklen - 12) if blocklen >= 12 else b""
        first = False
        if blocklen < 12 or blocklen % 4:
            raise TraceError(f"{path}: capture is damaged or truncated (a block length of {blocklen} bytes)")
        tail = take(4)
        if len(body) != blocklen - 12 or len(tail) < 4:
            log.warning("%s: the last block is cut short; it is ignored", path)
            return
        if struct.unpack(endian + "I", tail)[0] != blocklen:
            raise TraceError(f"{path}: capture is damaged or truncated (a block's two lengths differ)")
        if btype == 1:  # interface description
            if len(body) < 8:
                raise TraceError(f"{path}: capture is damaged or truncated (an interface block is too short)")
            lt, snaplen = struct.unpack(endian + "HxxI", body[:8])
            interfaces.append((lt, snaplen, _tsresol(endian, body[8:])))
        elif btype in (6, 2):  # enhanced packet, obsolete packet
            if len(body) < 20:
                raise TraceError(f"{path}: capture is damaged or truncated (a packet block is too short)")
            if btype == 6:
                intid, hi, lo, caplen, _wirelen = struct.unpack(endian + "5I", body[:20])
            else:
                intid, _drops, hi, lo, caplen, _wirelen = struct.unpack(endian + "HH4I", body[:20])
            if intid >= len(interfaces):
                log.warning("%s: a packet names interface %d, which no block describes; it is ignored",
                            path, intid)
                continue
            lt, _snap, ticks = interfaces[intid]
            last_t = ((hi << 32) | lo) / ticks
            yield lt, last_t, body[20:20 + caplen]
        elif btype == 3:  # simple packet: interface 0, no timestamp (take the previous packet's)
            if not interfaces or len(body) < 4:
                continue
            wirelen = struct.unpack(endian + "I", body[:4])[0]
            lt, snaplen, _ticks = interfaces[0]
            yield lt, last_t, body[4:4 + min(wirelen, snaplen or wirelen)]


def _tsresol(endian: str, options: bytes) -> int:
    """Ticks per second from an interface block's options (``if_tsresol``; default microseconds)."""
    pos = 0
    while pos + 4 <= len(options):
        code, length = struct.unpack_from(endian + "HH", options, pos)
        if code == 0:
            break
        if code == 9 and length == 1 and pos + 5 <= len(options):
            v = options[pos + 4]
            return int((2 if v & 0x80 else 10) ** (v & 0x7F))
        pos += 4 + length + (-length % 4)
    return 1_000_000


def _records(path: str | Path) -> Iterator[tuple[int, float, bytes]]:
    """``(linktype, time_s, frame)`` for each packet of a pcap or pcapng file, streamed."""
    with _open_capture(path) as f:
        src = _Chunks(f)
        magic = src.take(4)
        if magic in _PCAP_MAGICS:
            yield from _pcap_records(path, src, magic)
        elif magic == _PCAPNG_MAGIC:
            src.pos = 0
            yield from _pcapng_records(path, src)
        else:
            what = "the file is empty" if not magic else f"bad magic {magic!r}"
            raise TraceError(f"{path}: not a pcap or pcapng file ({what}); give a capture written by tcpdump, "
                             "tshark or dumpcap")


class _Decoder:
    """Headers to ``Decoded`` tuples; endpoint strings are cached per address and port pair."""

    def __init__(self) -> None:
        self.names: dict[bytes, tuple[str, str]] = {}
        self.fallbacks = 0

    def _names(self, key: bytes, family: int, alen: int) -> tuple[str, str]:
        names = self.names.get(key)
        if names is None:
            src = socket.inet_ntop(family, key[:alen])
            dst = socket.inet_ntop(family, key[alen:2 * alen])
            sport, dport = struct.unpack("!HH", key[2 * alen:])
            if len(self.names) > 1_000_000:  # a scan or a flood of one-packet flows: keep memory bounded
                self.names.clear()
            names = self.names[key] = (f"{src}:{sport}", f"{dst}:{dport}")
        return names

    def decode(self, linktype: int, frame: bytes) -> Decoded | None:
        n = len(frame)
        if linktype == _LT_ETHERNET and n >= 54:
            # the common frame, Ethernet / IPv4 without options / TCP, in one unpack
            ethertype, vihl, total, frag, proto, key, seq, doff, flags = _ETH_IPV4_TCP(frame)
            if ethertype == _ETH_IPV4 and vihl == 0x45 and proto == 6 and not frag & 0x1FFF:
                hlen = 34 + (doff >> 4) * 4
                end = 14 + total if total else n
                if doff >= 0x50 and hlen <= end and hlen <= n:
                    names = self.names.get(key)
                    if names is None:
                        names = self._names(key, socket.AF_INET, 4)
                    return ("tcp", names[0], names[1], seq, bool(flags & 0x02), frame[hlen:end])
        if linktype == _LT_ETHERNET:
            if len(frame) < 14:
                return self._scapy(linktype, frame)
            ethertype = (frame[12] << 8) | frame[13]
            off = 14
            while ethertype in _ETH_VLAN and len(frame) >= off + 4:
                ethertype = (frame[off + 2] << 8) | frame[off + 3]
                off += 4
        elif linktype == _LT_SLL:
            if len(frame) < 16:
                return self._scapy(linktype, frame)
            ethertype = (frame[14] << 8) | frame[15]
            off = 16
        elif linktype == _LT_SLL2:
            if len(frame) < 20:
                return self._scapy(linktype, frame)
            ethertype = (frame[0] << 8) | frame[1]
            off = 20
        elif linktype in _LT_RAW:
            if not frame:
                return None
            version = frame[0] >> 4
            ethertype = _ETH_IPV4 if version == 4 else _ETH_IPV6 if version == 6 else -1
            off = 0
        elif linktype == _LT_IPV4:
            ethertype, off = _ETH_IPV4, 0
        elif linktype == _LT_IPV6:
            ethertype, off = _ETH_IPV6, 0
        else:
            return self._scapy(linktype, frame)
        if ethertype == _ETH_IPV4:
            return self._ipv4(linktype, frame, off)
        if ethertype == _ETH_IPV6:
            return self._ipv6(linktype, frame, off)
        if ethertype in _ETH_SKIP:
            return None
        return self._scapy(linktype, frame)

    def _ipv4(self, linktype: int, frame: bytes, off: int) -> Decoded | None:
        if len(frame) < off + 20:
            return self._scapy(linktype, frame)
        vihl = frame[off]
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20 or len(frame) < off + ihl:
            return self._scapy(linktype, frame)
        if ((frame[off + 6] & 0x1F) << 8) | frame[off + 7]:
            return None  # a later fragment: no transport header in it
        proto = frame[off + 9]
        total = (frame[off + 2] << 8) | frame[off + 3]
        # Ethernet padding on tiny frames is not payload: trust the IP length (0 means TSO: no length)
        end = off + total if total else len(frame)
        t = off + ihl
        if proto == 6:
            if end < t + 20 or len(frame) < t + 20:
                return self._scapy(linktype, frame)
            doff = (frame[t + 12] >> 4) * 4
            if doff < 20 or len(frame) < t + doff or end < t + doff:
                return self._scapy(linktype, frame)
            src, dst = self._names(frame[off + 12:off + 20] + frame[t:t + 4], socket.AF_INET, 4)
            return ("tcp", src, dst, int.from_bytes(frame[t + 4:t + 8], "big"), bool(frame[t + 13] & 0x02),
                    frame[t + doff:end])
        if proto == 17:
            if len(frame) < t + 8 or end < t + 8:
                return self._scapy(linktype, frame)
            src, dst = self._names(frame[off + 12:off + 20] + frame[t:t + 4], socket.AF_INET, 4)
            return ("udp", src, dst, max(((frame[t + 4] << 8) | frame[t + 5] or 8) - 8, 0))
        if proto in _IP_SKIP:
            return None
        return self._scapy(linktype, frame)

    def _ipv6(self, linktype: int, frame: bytes, off: int) -> Decoded | None:
        if len(frame) < off + 40 or frame[off] >> 4 != 6:
            return self._scapy(linktype, frame)
        plen = (frame[off + 4] << 8) | frame[off + 5]
        nh = frame[off + 6]
        if plen == 0:  # jumbogram or a broken length: let scapy decide
            return self._scapy(linktype, frame)
        t = off + 40
        end = t + plen
        if nh == 6:
            if len(frame) < t + 20 or end < t + 20:
                return self._scapy(linktype, frame)
            doff = (frame[t + 12] >> 4) * 4
            if doff < 20 or len(frame) < t + doff or end < t + doff:
                return self._scapy(linktype, frame)
            src, dst = self._names(frame[off + 8:off + 40] + frame[t:t + 4], socket.AF_INET6, 16)
            return ("tcp", src, dst, int.from_bytes(frame[t + 4:t + 8], "big"), bool(frame[t + 13] & 0x02),
                    frame[t + doff:end])
        if nh == 17:
            if len(frame) < t + 8 or end < t + 8:
                return self._scapy(linktype, frame)
            src, dst = self._names(frame[off + 8:off + 40] + frame[t:t + 4], socket.AF_INET6, 16)
            return ("udp", src, dst, max(((frame[t + 4] << 8) | frame[t + 5] or 8) - 8, 0))
        if nh in _IP_SKIP:
            return None
        return self._scapy(linktype, frame)

    def _scapy(self, linktype: int, frame: bytes) -> Decoded | None:
        """Full dissection of one frame the header reader does not understand."""
        import scapy.layers.inet
        import scapy.layers.inet6  # noqa: F401 - registers the link types and IP bindings
        from scapy.config import conf

        self.fallbacks += 1
        cls = conf.l2types.num2layer.get(linktype)
        if cls is None:
            return None
        try:
            pkt = cls(frame)
        except Exception:  # noqa: BLE001 - as scapy's reader: an undissectable frame carries no flow
            return None
        return _scapy_fields(pkt)


def _scapy_fields(pkt: Any) -> Decoded | None:
    """The TCP or UDP fields of a dissected scapy packet (the reference definition of what is read)."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6

    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    if ip is None:
        return None
    if ip.haslayer(TCP):
        tcp = ip[TCP]
        payload = bytes(tcp.payload)
        if isinstance(ip, IP) and ip.len:
            # Ethernet padding on tiny frames is not payload: trust the IP length
            payload = payload[: max(ip.len - ip.ihl * 4 - tcp.dataofs * 4, 0)]
        return ("tcp", f"{ip.src}:{tcp.sport}", f"{ip.dst}:{tcp.dport}", int(tcp.seq), bool(tcp.flags.S), payload)
    if ip.haslayer(UDP):
        udp = ip[UDP]
        return ("udp", f"{ip.src}:{udp.sport}", f"{ip.dst}:{udp.dport}", max(int(udp.len or 8) - 8, 0))
    return None


def _feed(conv: Converter, t: float, d: Decoded) -> None:
    if d[0] == "tcp":
        conv.tcp(t, d[1], d[2], d[3], d[4], d[5])
    else:
        conv.udp(t, d[1], d[2], d[3])


def _run(path: str | Path, gap_s: float) -> tuple[Converter, int]:
    conv = Converter(gap_s=gap_s)
    decoder = _Decoder()
    decode = decoder.decode
    tcp = conv.tcp
    udp = conv.udp
    packets = 0
    for linktype, t, frame in _records(path):
        packets += 1
        d = decode(linktype, frame)
        if d is None:
            continue
        if d[0] == "tcp":
            tcp(t, d[1], d[2], d[3], d[4], d[5])
        else:
            udp(t, d[1], d[2], d[3])
    if decoder.fallbacks:
        log.info("%s: %d of %d packets needed full dissection", path, decoder.fallbacks, packets)
    conv.finish()
    return conv, packets


def convert(path: str | Path, *, gap_s: float = GAP_S) -> tuple[list[TraceMessage], list[FlowSummary]]:
    """Read a capture; return its messages (time order) and per-flow summaries."""
    conv, _ = _run(path, gap_s)
    return conv.messages, list(conv.flows.values())


def _scapy_packets(path: str | Path) -> Iterator[Any]:
    try:
        from scapy.utils import PcapReader
    except ImportError as exc:  # pragma: no cover - scapy is a dependency
        raise TraceError("reading packet captures needs scapy (pip install scapy)") from exc
    try:
        reader = PcapReader(str(path))
    except FileNotFoundError:
        raise TraceError(f"{path}: no such capture file") from None
    except Exception as exc:  # noqa: BLE001 - scapy raises its own Scapy_Exception for a bad header
        raise TraceError(f"{path}: not a pcap or pcapng file ({exc})") from None
    with reader:
        try:
            yield from reader
        except Exception as exc:  # noqa: BLE001 - a cut-off last record
            raise TraceError(f"{path}: capture is damaged or truncated ({exc})") from None


def convert_scapy(path: str | Path, *, gap_s: float = GAP_S) -> tuple[list[TraceMessage], list[FlowSummary]]:
    """The reference conversion: every packet through scapy's full dissection (slow; for tests and benchmarks)."""
    import scapy.layers.inet
    import scapy.layers.inet6  # noqa: F401 - registers the link types before the reader looks them up

    conv = Converter(gap_s=gap_s)
    for pkt in _scapy_packets(path):
        d = _scapy_fields(pkt)
        if d is not None:
            _feed(conv, float(pkt.time), d)
    messages = conv.finish()
    return messages, list(conv.flows.values())


def convert_file(pcap: str | Path, out: str | Path, *, gap_s: float = GAP_S) -> ConversionStats:
    """Convert a capture to a generic message trace file; returns what was read and written, and how fast."""
    from corridor.traces import generic

    start = time.perf_counter()
    conv, packets = _run(pcap, gap_s)
    with Path(out).open("w", encoding="utf-8") as f:
        count, total = generic.write(conv.messages, f)
    return ConversionStats(packets=packets, messages=count, payload_bytes=total,
                           elapsed_s=time.perf_counter() - start)


def convert_to_file(pcap: str | Path, out: str | Path, *, gap_s: float = GAP_S) -> tuple[int, int]:
    """Convert a capture to a generic message trace file; returns ``(messages, bytes)``."""
    stats = convert_file(pcap, out, gap_s=gap_s)
    return stats.messages, stats.payload_bytes
