"""The struct header reader gives exactly what scapy's full dissection gives, streams, and refuses bad files."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from corridor.cli import cli
from corridor.errors import TraceError
from corridor.traces import pcapgen
from corridor.traces.pcap import _Decoder, _records, convert, convert_file, convert_scapy

scapy_all = pytest.importorskip("scapy.all")


def _same(path: Path, gap_s: float = 0.002) -> int:
    fast, fast_flows = convert(path, gap_s=gap_s)
    ref, ref_flows = convert_scapy(path, gap_s=gap_s)
    assert len(fast) == len(ref)
    for i, (a, b) in enumerate(zip(fast, ref, strict=True)):
        assert a == b, f"message {i} differs: {a} (struct reader) vs {b} (scapy)"
    assert fast_flows == ref_flows
    return len(fast)


@pytest.mark.parametrize("seed", [1, 2])
def test_mixed_capture_converts_message_for_message_as_scapy(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "mixed.pcap"
    pcapgen.write_capture(path, 6000, seed=seed, mixed=True)
    assert _same(path) > 200
    # the capture holds frames the header reader hands to scapy, so both routes are compared
    decoder = _Decoder()
    decoded = [decoder.decode(lt, frame) for lt, _t, frame in _records(path)]
    assert decoder.fallbacks > 0 and any(d is not None and d[0] == "udp" and d[1].endswith(":7000") for d in decoded)


def test_pcapng_and_nanosecond_pcap_convert_as_scapy(tmp_path: Path) -> None:
    src = tmp_path / "src.pcap"
    pcapgen.write_capture(src, 2000, seed=3, mixed=True)
    pkts = scapy_all.rdpcap(str(src))
    ng = tmp_path / "c.pcapng"
    scapy_all.wrpcapng(str(ng), pkts)
    nano = tmp_path / "nano.pcap"
    scapy_all.wrpcap(str(nano), pkts, nano=True)
    for path in (ng, nano):
        assert _same(path) > 50
    # the three files hold the same packets, so the same messages
    assert convert(ng)[0] == convert(src)[0] == convert(nano)[0]


def test_linux_cooked_and_raw_ip_link_types_convert_as_scapy(tmp_path: Path) -> None:
    pkts = []
    for i in range(40):
        ip = scapy_all.IP(src="10.9.0.1", dst="10.9.0.2") / scapy_all.TCP(sport=1234, dport=80, seq=1000 + 10 * i,
                                                                         flags="PA") / (b"x" * 10)
        v6 = scapy_all.IPv6(src="fd00::1", dst="fd00::2") / scapy_all.UDP(sport=9, dport=53) / (b"y" * i)
        for p in (ip, v6):
            p.time = 50.0 + i * 0.001
            pkts.append(p)
    cooked = [scapy_all.CookedLinux(proto=0x0800 if p.haslayer(scapy_all.IP) else 0x86DD) / p for p in pkts]
    for p, c in zip(pkts, cooked, strict=True):
        c.time = p.time
    for name, frames, linktype in (("sll.pcap", cooked, 113), ("raw.pcap", pkts, 101)):
        path = tmp_path / name
        scapy_all.wrpcap(str(path), frames, linktype=linktype)
        assert _same(path) == 1 + 40  # one raw TCP burst, forty datagrams


def test_trace_convert_prints_packets_per_second(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    n = pcapgen.write_capture(path, 3000, seed=4)
    out = tmp_path / "t.jsonl"
    res = CliRunner().invoke(cli, ["trace", "convert", str(path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert f"read {n} packets in " in res.output and "packets/s)" in res.output
    assert len(out.read_text().splitlines()) == len(convert(path)[0])


def test_memory_stays_flat_on_a_long_one_way_stream(tmp_path: Path) -> None:
    # one direction, back-to-back segments, no gap and no answer: one 30 MB message
    path = tmp_path / "bulk.pcap"
    seg = bytes(1448)
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(20_000):
            tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1 + i * 1448, 0, 0x50, 0x10, 65535, 0, 0) + seg
            addrs = bytes((10, 0, 0, 1, 10, 0, 0, 2))
            ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0) + addrs
            frame = bytes(12) + b"\x08\x00" + ip + tcp
            f.write(struct.pack("<IIII", 1000, i * 10, len(frame), len(frame)) + frame)
    assert path.stat().st_size > 29_000_000
    tracemalloc.start()
    try:
        stats = convert_file(path, tmp_path / "bulk.jsonl")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.packets == 20_000 and stats.messages == 1 and stats.payload_bytes == 20_000 * 1448
    assert peak < 8_000_000, f"peak {peak} bytes while reading a {path.stat().st_size} byte capture"


def _pcap_header() -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def _shb(blocklen: int = 28, bom: bytes = b"\x4d\x3c\x2b\x1a") -> bytes:
    return b"\x0a\x0d\x0d\x0a" + struct.pack("<I", blocklen) + bom + struct.pack("<HHq", 1, 0, -1) + struct.pack(
        "<I", blocklen)


@pytest.mark.parametrize("label, content, match", [
    ("text", b"hello world, this is text\n", "not a pcap or pcapng file"),
    ("empty", b"", "file is empty"),
    ("pcap header cut", _pcap_header()[:12], "header is cut short"),
    ("pcapng bad byte order", _shb(bom=b"\x00\x00\x00\x00"), "byte-order magic"),
    ("pcapng odd block length", _shb() + struct.pack("<II", 1, 21) + bytes(13), "block length of 21"),
    ("pcapng lengths differ", _shb() + struct.pack("<II", 1, 20) + bytes(8) + struct.pack("<I", 24),
     "two lengths differ"),
    ("pcapng short packet block", _shb() + struct.pack("<II", 1, 20) + struct.pack("<HHI", 1, 0, 0)
     + struct.pack("<I", 20) + struct.pack("<II", 6, 16) + bytes(4) + struct.pack("<I", 16), "too short"),
])
def test_bad_captures_name_the_file_and_the_problem(tmp_path: Path, label: str, content: bytes, match: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(TraceError, match=r"bad\.pcap") as info:
        convert(path)
    assert match in str(info.value)


def test_a_cut_off_last_record_keeps_the_packets_before_it(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    pcapgen.write_capture(path, 500, seed=5)
    whole = convert_file(path, tmp_path / "a.jsonl")
    path.write_bytes(path.read_bytes()[:-10])
    cut = convert_file(path, tmp_path / "b.jsonl")
    assert cut.packets == whole.packets - 1
    assert cut.payload_bytes <= whole.payload_bytes


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="is a directory"):
        convert(tmp_path)
