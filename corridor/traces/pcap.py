"""Packet captures to message traces: flows, TCP reassembly and message framing (scapy).

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
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        flow = self._flow("tcp", src, dst, t)
        d = self.dirs.get((src, dst))
        if d is None:
            d = self.dirs[(src, dst)] = _Direction(src, dst, flow)
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


def _packets(path: str | Path) -> Iterator[Any]:
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


def convert(path: str | Path, *, gap_s: float = GAP_S) -> tuple[list[TraceMessage], list[FlowSummary]]:
    """Read a capture; return its messages (time order) and per-flow summaries."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6

    conv = Converter(gap_s=gap_s)
    for pkt in _packets(path):
        ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
        if ip is None:
            continue
        t = float(pkt.time)
        if ip.haslayer(TCP):
            tcp = ip[TCP]
            payload = bytes(tcp.payload)
            if isinstance(ip, IP) and ip.len:
                # Ethernet padding on tiny frames is not payload: trust the IP length
                payload = payload[: max(ip.len - ip.ihl * 4 - tcp.dataofs * 4, 0)]
            conv.tcp(t, f"{ip.src}:{tcp.sport}", f"{ip.dst}:{tcp.dport}", int(tcp.seq), bool(tcp.flags.S), payload)
        elif ip.haslayer(UDP):
            udp = ip[UDP]
            conv.udp(t, f"{ip.src}:{udp.sport}", f"{ip.dst}:{udp.dport}", max(int(udp.len or 8) - 8, 0))
    messages = conv.finish()
    return messages, list(conv.flows.values())


def convert_to_file(pcap: str | Path, out: str | Path, *, gap_s: float = GAP_S) -> tuple[int, int]:
    """Convert a capture to a generic message trace file; returns ``(messages, bytes)``."""
    from corridor.traces import generic

    messages, _ = convert(pcap, gap_s=gap_s)
    with Path(out).open("w", encoding="utf-8") as f:
        return generic.write(messages, f)
