"""Packet captures to message traces: synthetic pcaps written with scapy, and a real capture (root)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from corridor.errors import TraceError
from corridor.traces import detect_format
from corridor.traces.pcap import convert, convert_to_file

scapy_all = pytest.importorskip("scapy.all")
Ether, IP, TCP, UDP = scapy_all.Ether, scapy_all.IP, scapy_all.TCP, scapy_all.UDP

A, B = "10.77.0.1", "10.77.0.2"


class Conn:
    """Writes the packets of one TCP connection with explicit sequence numbers."""

    def __init__(self, sport: int = 40000, dport: int = 8000, isn_a: int = 1000, isn_b: int = 2**32 - 50) -> None:
        self.sport, self.dport = sport, dport
        self.seq = {"a": isn_a + 1, "b": (isn_b + 1) % 2**32}
        self.pkts: list[object] = []
        self.t = 100.0
        self._pkt("a", b"", "S", seq=isn_a)
        self._pkt("b", b"", "SA", seq=isn_b)
        self._pkt("a", b"", "A")

    def _pkt(self, side: str, payload: bytes, flags: str = "PA", seq: int | None = None, dt: float = 0.0005) -> None:
        src, dst, sp, dp = (A, B, self.sport, self.dport) if side == "a" else (B, A, self.dport, self.sport)
        s = self.seq[side] if seq is None else seq
        p = Ether() / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, seq=s, flags=flags) / payload
        self.t += dt
        p.time = self.t
        self.pkts.append(p)

    def send(self, side: str, data: bytes, cuts: tuple[int, ...] = (), dt: float = 0.0005) -> None:
        """Send ``data`` cut into segments at ``cuts`` offsets."""
        edges = [0, *cuts, len(data)]
        for lo, hi in zip(edges, edges[1:], strict=False):
            self._pkt(side, data[lo:hi], dt=dt)
            self.seq[side] = (self.seq[side] + hi - lo) % 2**32

    def retransmit(self, side: str, back: int, data: bytes) -> None:
        self._pkt(side, data, seq=(self.seq[side] - back) % 2**32)


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n" % len(payload) + payload + b"\r\n"


REQ = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n" + b'{"prompt_tokens": 1}')
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
TOKENS = [_chunk(b'data: {"i":%d}\n\n' % i) for i in range(5)]
END = b"0\r\n\r\n"


def _write(tmp_path: Path, pkts: list[object], name: str = "c.pcap") -> Path:
    path = tmp_path / name
    scapy_all.wrpcap(str(path), pkts)
    return path


def test_http_stream_is_framed_by_request_head_chunks_and_end(tmp_path: Path) -> None:
    c = Conn()
    c.send("a", REQ, cuts=(10, 50))  # one request over three segments
    c.send("b", HEAD + TOKENS[0])  # head and first token in one segment (as the server sends them)
    c.send("b", TOKENS[1] + TOKENS[2][:7])  # a chunk split across segments
    c.send("b", TOKENS[2][7:] + TOKENS[3] + TOKENS[4] + END)  # several chunks coalesced
    msgs, flows = convert(_write(tmp_path, c.pkts))
    kinds = [m.kind for m in msgs]
    assert kinds == ["http-request", "http-head"] + ["http-chunk"] * 5 + ["http-end"]
    sizes = [m.size_bytes for m in msgs]
    assert sizes == [len(REQ), len(HEAD)] + [len(t) for t in TOKENS] + [len(END)]
    assert msgs[0].src == f"{A}:40000" and msgs[0].dst == f"{B}:8000"
    assert len(flows) == 1 and flows[0].payload_bytes == sum(sizes) and flows[0].messages == 8
    # the head's time is its segment's; a coalesced chunk's is the segment carrying its first byte
    assert msgs[1].time_s == msgs[2].time_s < msgs[3].time_s


def test_retransmission_and_reordering_add_no_bytes(tmp_path: Path) -> None:
    c = Conn()
    c.send("a", REQ)
    c.retransmit("a", len(REQ), REQ)  # full duplicate
    body = HEAD + b"".join(TOKENS) + END
    # deliver the second half first, then the first half, then a partial overlap
    first, second = body[:60], body[60:]
    base = c.seq["b"]
    c._pkt("b", second, seq=(base + 60) % 2**32)
    c._pkt("b", first, seq=base)
    c.seq["b"] = (base + len(body)) % 2**32
    c.retransmit("b", 30, body[-30:])
    msgs, flows = convert(_write(tmp_path, c.pkts))
    assert len(msgs) == 1 + 1 + 5 + 1
    assert sum(m.size_bytes for m in msgs) == len(REQ) + len(body)
    assert flows[0].retransmitted_bytes == len(REQ) + 30


def test_sequence_numbers_wrap(tmp_path: Path) -> None:
    c = Conn(isn_b=2**32 - 10)  # the response stream crosses 2**32 after 9 bytes
    c.send("a", REQ)
    c.send("b", HEAD, cuts=(5,))
    c.send("b", b"".join(TOKENS) + END, cuts=(3, 40))
    msgs, _ = convert(_write(tmp_path, c.pkts))
    assert [m.size_bytes for m in msgs] == [len(REQ), len(HEAD)] + [len(t) for t in TOKENS] + [len(END)]


def test_content_length_response_and_keepalive(tmp_path: Path) -> None:
    c = Conn()
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + bytes(5000)
    for _ in range(3):
        c.send("a", REQ)
        c.send("b", resp, cuts=(1448, 2896, 4344))
    msgs, _ = convert(_write(tmp_path, c.pkts))
    assert [m.kind for m in msgs] == ["http-request", "http-response"] * 3
    assert [m.size_bytes for m in msgs] == [len(REQ), len(resp)] * 3


def test_raw_tcp_messages_end_at_direction_change_or_gap(tmp_path: Path) -> None:
    c = Conn()
    c.send("a", b"\x00" * 3000, cuts=(1000, 2000))  # one burst
    c.send("b", b"\x01" * 10)  # the answer ends it
    c.send("a", b"\x02" * 100)
    c.send("a", b"\x03" * 100, dt=0.5)  # after a long silence: a new message
    msgs, _ = convert(_write(tmp_path, c.pkts), gap_s=0.002)
    assert [(m.src.split(":")[0], m.size_bytes, m.kind) for m in msgs] == [
        (A, 3000, "tcp"), (B, 10, "tcp"), (A, 100, "tcp"), (A, 100, "tcp")]


def test_udp_datagram_is_a_message_and_trace_file_is_generic(tmp_path: Path) -> None:
    pkts = []
    for i, size in enumerate((100, 1200, 7)):
        p = Ether() / IP(src=A, dst=B) / UDP(sport=5000, dport=6000) / (b"u" * size)
        p.time = 10.0 + i * 0.01
        pkts.append(p)
    pcap = _write(tmp_path, pkts)
    assert detect_format(pcap) == "pcap"
    out = tmp_path / "t.jsonl"
    assert convert_to_file(pcap, out) == (3, 1307)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[1] == {"time_s": pytest.approx(0.01), "src": f"{A}:5000", "dst": f"{B}:6000", "bytes": 1200,
                        "kind": "udp"}
    assert detect_format(out) == "generic"


def test_pcapng_is_read_too(tmp_path: Path) -> None:
    c = Conn()
    c.send("a", REQ)
    c.send("b", HEAD + b"".join(TOKENS) + END)
    path = tmp_path / "c.pcapng"
    scapy_all.wrpcapng(str(path), c.pkts)
    msgs, _ = convert(path)
    assert len(msgs) == 8 and sum(m.size_bytes for m in msgs) == len(REQ) + len(HEAD) + len(END) + sum(
        len(t) for t in TOKENS)


@pytest.mark.parametrize("label, content", [
    ("not a capture", b"hello world, this is text\n"),
    ("empty file", b""),
    ("bad magic", b"\x00\x01\x02\x03" + bytes(20)),
])
def test_bad_captures_raise_trace_error_naming_the_file(tmp_path: Path, label: str, content: bytes) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(TraceError, match=r"bad\.pcap"):
        convert(path)


def test_truncated_capture_is_reported(tmp_path: Path) -> None:
    c = Conn()
    c.send("a", REQ)
    c.send("b", HEAD + b"".join(TOKENS) + END)
    path = _write(tmp_path, c.pkts)
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # cut the last packet record short
    try:
        msgs, _ = convert(path)
    except TraceError as exc:
        assert "bad.pcap" in str(exc) or "c.pcap" in str(exc)
    else:
        # scapy drops a cut-off final record: what remains is framed, the partial stream is flagged
        assert sum(m.size_bytes for m in msgs) < len(REQ) + len(HEAD) + len(END) + sum(len(t) for t in TOKENS)


def test_missing_capture(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such capture"):
        convert(tmp_path / "nope.pcap")


# ----------------------------------------------------------------------------- a real capture (root)


class _NetnsPair:
    """Two namespaces joined by a veth pair: a minimal Network for agents (test-only)."""

    backend = "local"
    time_scale = 1.0

    def __init__(self) -> None:
        self.ns = {"cli": "coiTa", "srv": "coiTb", "sto": "coiTb"}
        self.ip = {"coiTa": "10.231.0.1", "coiTb": "10.231.0.2"}

    def __enter__(self) -> _NetnsPair:
        if os.geteuid() != 0:
            pytest.skip("needs root: creates two network namespaces and runs tcpdump")
        sh = self._sh
        self.__exit__()
        sh("ip", "netns", "add", "coiTa")
        sh("ip", "netns", "add", "coiTb")
        sh("ip", "link", "add", "coiTa0", "netns", "coiTa", "type", "veth", "peer", "name", "coiTb0", "netns", "coiTb")
        for ns, dev in (("coiTa", "coiTa0"), ("coiTb", "coiTb0")):
            sh("ip", "-n", ns, "addr", "add", f"{self.ip[ns]}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in ("coiTa", "coiTb"):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    def _sh(self, *argv: str) -> None:
        subprocess.run(list(argv), check=True, capture_output=True)

    def hosts(self) -> list[str]:
        return list(self.ns)

    def host_ip(self, host: str) -> str:
        return self.ip[self.ns[host]]

    def host_site(self, host: str) -> str:
        return "a" if self.ns[host] == "coiTa" else "b"

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        from corridor.emulation.api import package_env

        kwargs.setdefault("env", package_env())
        return subprocess.Popen(["ip", "netns", "exec", self.ns[host], *argv], **kwargs)

    def run(self, host: str, argv: Sequence[str], *, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns[host], *argv], capture_output=True, text=True,
                              timeout=timeout_s, check=False)


@pytest.mark.corridor_root
@pytest.mark.parametrize("pattern", ["chat", "agentic"])
def test_capture_of_a_run_reproduces_its_message_count_and_bytes(tmp_path: Path, pattern: str) -> None:
    from corridor.tools import capture
    from corridor.workloads.inference import run as inference
    params = inference.validate({"pattern": pattern, "requests": 30 if pattern == "chat" else 4, "rate_rps": 100,
                                 "calls": 3, "prompt_tokens": 300, "output_tokens": 20, "length_dist": "exponential",
                                 "tpot_ms": 1, "prefill_ms_per_token": 0.01, "warm_connections": 2},
                                where="test")
    hosts = {"servers": ["srv"], "clients": ["cli"], **({"stores": ["sto"]} if pattern == "agentic" else {})}
    pcap = tmp_path / "wan.pcap"
    with _NetnsPair() as net:
        argv = capture.tcpdump_argv("coiTb0", pcap)
        proc = subprocess.Popen(["ip", "netns", "exec", "coiTb", *argv], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            capture.start(proc)
            records = inference.run(net, params, hosts=hosts, seed=3, timeout_s=60)
        finally:
            summary = capture.stop(proc)
    assert capture.dropped_by_kernel(summary) == 0
    messages, size = inference.traffic_totals(records)
    out = tmp_path / "wan.jsonl"
    assert capture.to_trace(pcap, out) == (messages, size)
    assert all(r["ok"] for r in records if r["kind"] == "request")
