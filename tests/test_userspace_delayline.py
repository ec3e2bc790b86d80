"""Unit tests of the delay line's pure parts: shaper, loss, GSO accounting and splitting."""

from __future__ import annotations

import json
import math
import random
import struct

import pytest

from corridor.links import delayline as dl
from corridor.links.contract import GilbertElliott, LinkDirection


def config(**kw: object) -> dl.DirectionConfig:
    base: dict[str, object] = {"rate_bps": 12e6, "delay_s": 0.025, "queue_bytes": 1_000_000}
    base.update(kw)
    return dl.DirectionConfig(**base)  # type: ignore[arg-type]


def shaper(**kw: object) -> dl.Shaper:
    return dl.Shaper(config(**kw), random.Random(42))


def test_burst_departs_one_serialisation_time_apart() -> None:
    # 1500 bytes at 12 Mbit/s is 1 ms on the wire.
    times = shaper().release_times(10.0, [1500] * 5)
    assert times == pytest.approx([10.0 + 0.025 + 0.001 * (i + 1) for i in range(5)])


def test_idle_link_adds_only_delay_and_serialisation() -> None:
    sh = shaper()
    first = sh.release_times(1.0, [1500])[0]
    later = sh.release_times(2.0, [1500])[0]
    assert first == pytest.approx(1.026)
    assert later == pytest.approx(2.026)


def test_drop_tail_at_queue_bytes() -> None:
    sh = shaper(queue_bytes=15_000)
    times = sh.release_times(0.0, [1500] * 25)
    assert sum(not math.isnan(t) for t in times) == 10
    assert all(math.isnan(t) for t in times[10:])
    assert sh.drops_queue == 15
    assert sh.queue_bytes_max == pytest.approx(15_000)
    # After 5 ms five packets have left, so five more fit.
    again = sh.release_times(0.005, [1500] * 8)
    assert sum(not math.isnan(t) for t in again) == 5


def test_saturated_queue_waits_q_over_r() -> None:
    sh = shaper(queue_bytes=30_000)
    now = 0.0
    for _ in range(2000):  # offer 2x the rate for 1 s
        sh.offer(now, [1500])
        now += 0.0005
    # The last packet in waits for everything ahead of it: (Q - its own size) / R.
    assert sh.queue_delay_max_s == pytest.approx((30_000 - 1500) * 8 / 12e6, rel=1e-6)


def test_queue_packets_limit() -> None:
    sh = shaper(queue_packets=3)
    times = sh.release_times(0.0, [100] * 6)
    assert sum(not math.isnan(t) for t in times) == 3


def test_no_reordering_under_jitter() -> None:
    sh = shaper(rate_bps=1e9, jitter_s=0.005)
    departures = []
    for i in range(5000):
        departures.extend(sh.release_times(i * 1e-4, [1500]))
    assert all(b >= a for a, b in zip(departures, departures[1:], strict=False))
    arrivals = [i * 1e-4 for i in range(5000)]
    extra = [d - a for d, a in zip(departures, arrivals, strict=True)]
    assert min(extra) >= 0.025 - 0.005
    assert max(extra) - min(extra) > 0.004  # the jitter is really there


def test_reorder_allows_overtaking() -> None:
    sh = shaper(rate_bps=1e9, jitter_s=0.005, reorder=True)
    departures = []
    for i in range(2000):
        departures.extend(sh.release_times(i * 1e-4, [1500]))
    assert any(b < a for a, b in zip(departures, departures[1:], strict=False))


def test_uniform_loss_mean() -> None:
    sh = shaper(loss=0.01)
    n = 200_000
    lost = sum(sh.lose() for _ in range(n))
    assert lost / n == pytest.approx(0.01, abs=0.0008)
    assert sh.drops_loss == lost


def test_gilbert_elliott_mean_and_bursts() -> None:
    ge = GilbertElliott(p_good_to_bad=0.002, p_bad_to_good=0.2, loss_good=0.0, loss_bad=0.5)
    sh = shaper(burst_loss=(ge.p_good_to_bad, ge.p_bad_to_good, ge.loss_good, ge.loss_bad))
    outcomes = [sh.lose() for _ in range(400_000)]
    assert sum(outcomes) / len(outcomes) == pytest.approx(ge.mean_loss(), rel=0.15)
    # Bursty: a loss is far more likely right after a loss than on average.
    after_loss = [b for a, b in zip(outcomes, outcomes[1:], strict=False) if a]
    assert sum(after_loss) / len(after_loss) > 10 * ge.mean_loss()


def test_seeded_decisions_repeat() -> None:
    a = dl.Shaper(config(loss=0.1), random.Random(7))
    b = dl.Shaper(config(loss=0.1), random.Random(7))
    assert [a.lose() for _ in range(100)] == [b.lose() for _ in range(100)]


def test_config_from_link_direction() -> None:
    ge = GilbertElliott(0.01, 0.3)
    direction = LinkDirection(rate_mbps=100, delay_ms=25, queue_bytes=625_000, jitter_ms=1, loss=0.001,
                              burst_loss=ge, queue_packets=500)
    cfg = dl.DirectionConfig.from_dict(json.loads(json.dumps(direction.as_dict())))
    assert cfg.rate_bps == 100e6
    assert cfg.delay_s == pytest.approx(0.025)
    assert cfg.jitter_s == pytest.approx(0.001)
    assert cfg.queue_bytes == 625_000
    assert cfg.queue_packets == 500
    assert cfg.burst_loss == (0.01, 0.3, 0.0, 1.0)


# --------------------------------------------------------------------------- frames


def tcp_frame(payload: bytes, *, seq: int = 1000, flags: int = 0x18 | 0x01, ip_id: int = 77, v6: bool = False) -> bytes:
    eth = b"\x02" * 6 + b"\x04" * 6 + (b"\x86\xdd" if v6 else b"\x08\x00")
    tcp = struct.pack("!HHIIBBHHH", 5000, 5201, seq, 1, (8 << 4), flags, 65535, 0, 0) + b"\x01\x01\x08\x0a" + b"\0" * 8
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, len(tcp) + len(payload), 6, 64) + bytes(range(16)) + bytes(range(16, 32))
    else:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), ip_id, 0x4000, 64, 6, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return eth + ip + tcp + payload


def gso_vnet(frame: bytes, gso_size: int, v6: bool = False) -> tuple[int, int, int, int, int, int]:
    l4 = 14 + (40 if v6 else 20)
    return (dl.VNET_F_NEEDS_CSUM, dl.GSO_TCPV6 if v6 else dl.GSO_TCPV4, l4 + 32, gso_size, l4, 16)


def test_plain_frame_counts_its_ip_bytes() -> None:
    frame = tcp_frame(b"x" * 100)
    assert dl.frame_info(frame, (0, 0, 0, 0, 0, 0)).segment_sizes == (20 + 32 + 100,)


@pytest.mark.parametrize("v6", [False, True])
def test_gso_frame_counts_each_segment(v6: bool) -> None:
    frame = tcp_frame(b"y" * 10_000, v6=v6)
    info = dl.frame_info(frame, gso_vnet(frame, 1448, v6))
    hdr = (40 if v6 else 20) + 32
    assert info.segment_sizes == (hdr + 1448,) * 6 + (hdr + 10_000 - 6 * 1448,)
    assert sum(info.segment_sizes) == 10_000 + 7 * hdr


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _finish_csum(segment: bytes) -> bytes:
    """What the kernel does with NEEDS_CSUM: sum from csum_start (seeded field included), store the complement."""
    _f, _g, _h, _s, start, offset = dl.VNET_HDR.unpack_from(segment)
    frame = bytearray(segment[dl.VNET_HDR.size :])
    value = (~_checksum(bytes(frame[start:]))) & 0xFFFF
    struct.pack_into("!H", frame, start + offset, value)
    return bytes(frame)


@pytest.mark.parametrize("v6", [False, True])
def test_split_gso_frame_into_valid_segments(v6: bool) -> None:
    scapy_all = pytest.importorskip("scapy.all")
    payload = bytes(random.Random(1).randrange(256) for _ in range(5000))
    frame = tcp_frame(payload, v6=v6)
    info = dl.frame_info(frame, gso_vnet(frame, 1448, v6))
    keep = [True, False, True, True]
    segments = dl.split_tcp_gso(frame, info, keep)
    assert len(segments) == 3
    kept_index = [0, 2, 3]
    rebuilt = b""
    for index, segment in zip(kept_index, segments, strict=True):
        wire = _finish_csum(segment)
        pkt = scapy_all.Ether(wire)
        l3 = pkt[scapy_all.IPv6] if v6 else pkt[scapy_all.IP]
        tcp = pkt[scapy_all.TCP]
        assert tcp.seq == 1000 + index * 1448
        our_tcp_csum, our_ip_csum = tcp.chksum, None if v6 else l3.chksum
        del tcp.chksum
        if not v6:
            del l3.chksum
        again = scapy_all.Ether(bytes(pkt))
        assert again[scapy_all.TCP].chksum == our_tcp_csum
        if not v6:
            assert again[scapy_all.IP].chksum == our_ip_csum
            assert again[scapy_all.IP].id == 77 + index
            assert again[scapy_all.IP].len == 20 + 32 + len(bytes(tcp.payload))
        else:
            assert again[scapy_all.IPv6].plen == 32 + len(bytes(tcp.payload))
        last = index == 3
        assert bool(tcp.flags & 0x01) == last and bool(tcp.flags & 0x08) == last
        rebuilt += bytes(tcp.payload)
    assert rebuilt == payload[:1448] + payload[2 * 1448 :]


def test_ipv4_header_checksum_known_value() -> None:
    # RFC 1071 style example header (checksum 0xb861).
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert dl.ipv4_header_checksum(header) == 0xB861


def test_late_percentile_from_histogram() -> None:
    stats = dl.DirectionStats()
    for _ in range(99):
        stats.record_send(5e-6, 0.025, 1, 100)
    stats.record_send(0.0021, 0.025, 1, 100)
    assert stats.late_percentile_us(0.5) == 10.0
    assert stats.late_percentile_us(1.0) == 2110.0
    assert stats.packets == 100 and stats.bytes == 10_000
    stats.record_send(0.0425, 0.07, 1, 100)
    assert stats.late_percentile_us(1.0) == 43_000.0


def test_snapshot_has_counters_read_stats_needs(tmp_path: object) -> None:
    from corridor.links.userspace import read_stats

    sh = shaper()
    sh.offer(0.0, [1500, 1500])
    snap = dl.direction_snapshot(sh, dl.DirectionStats(), 0.0, 2)
    path = f"{tmp_path}/s.json"
    dl.write_json_atomic(path, {"state": "running", "a_to_b": snap, "b_to_a": snap})
    data = read_stats(path)
    assert data["a_to_b"]["queue_bytes"] == 3000
    assert data["a_to_b"]["queue_bytes_max"] == 3000


@pytest.mark.parametrize(
    "argv",
    [
        ["--intf-a", "x", "--intf-b", "y", "--a-to-b", "{}", "--b-to-a", "{}", "--stats", "/nonexistent/s"],
        ["--intf-a", "x", "--intf-b", "y", "--a-to-b", "not json", "--b-to-a", "{}", "--stats", "/tmp/s"],
    ],
)
def test_main_rejects_bad_parameters(argv: list[str]) -> None:
    assert dl.main([*argv, "--priority", "0"]) == dl.EXIT_BAD_ARGS


# --------------------------------------------------------------------------- one direction over socketpairs


class Pipe:
    """A Direction whose sockets are datagram socketpairs: what a packet socket would see, without root."""

    def __init__(self, cfg: dl.DirectionConfig) -> None:
        import socket

        self.feed, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tx, self.out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in (rx, self.out):
            sock.setblocking(False)
        self.direction = dl.Direction("a_to_b", rx, tx, cfg, seed=3)
        self.buf = bytearray(dl.RECV_BUFFER_BYTES)

    def push(self, vnet: tuple[int, int, int, int, int, int], frame: bytes) -> int:
        self.feed.send(dl.VNET_HDR.pack(*vnet) + frame)
        return self.direction.receive(self.buf, memoryview(self.buf), 64)

    def drain(self) -> list[bytes]:
        self.direction.transmit(1e12)
        frames = []
        while True:
            try:
                frames.append(self.out.recv(dl.RECV_BUFFER_BYTES))
            except BlockingIOError:
                return frames


def test_plain_frame_passes_unchanged_after_its_delay() -> None:
    pipe = Pipe(config(rate_bps=1e9))
    frame = tcp_frame(b"z" * 200)
    assert pipe.push((0, 0, 0, 0, 0, 0), frame) == 1
    out = pipe.drain()
    assert out == [dl.VNET_HDR.pack(0, 0, 0, 0, 0, 0) + frame]
    assert pipe.direction.stats.packets == 1
    assert pipe.direction.stats.bytes == len(frame) - 14


def test_not_due_frames_stay_queued() -> None:
    import time

    pipe = Pipe(config(rate_bps=1e9, delay_s=10.0))
    pipe.push((0, 0, 0, 0, 0, 0), tcp_frame(b"a"))
    pipe.direction.transmit(time.monotonic())
    assert pipe.direction.in_flight() == 1
    with pytest.raises(BlockingIOError):
        pipe.out.recv(100)


def test_fast_super_frame_is_forwarded_whole_and_counted_per_segment() -> None:
    pipe = Pipe(config(rate_bps=10e9))
    frame = tcp_frame(b"s" * 14_480)
    vnet = gso_vnet(frame, 1448)
    pipe.push(vnet, frame)
    out = pipe.drain()
    assert out == [dl.VNET_HDR.pack(*vnet) + frame]
    assert pipe.direction.stats.packets == 10
    assert pipe.direction.stats.bytes == 10 * (20 + 32 + 1448)


def test_slow_super_frame_leaves_segment_by_segment() -> None:
    # 64 KB at 100 Mbit/s takes 5 ms: each segment departs at its own serialisation time.
    pipe = Pipe(config(rate_bps=100e6))
    frame = tcp_frame(b"s" * 44 * 1448)
    pipe.push(gso_vnet(frame, 1448), frame)
    departures = [entry[0] for entry in pipe.direction.line]
    assert len(departures) == 44
    gaps = [b - a for a, b in zip(departures, departures[1:], strict=False)]
    assert gaps == pytest.approx([1500 * 8 / 100e6] * 43)
    out = pipe.drain()
    assert len(out) == 44 and all(len(seg) == dl.VNET_HDR.size + 14 + 1500 for seg in out)


def test_loss_inside_a_super_frame_drops_only_those_segments() -> None:
    pipe = Pipe(config(rate_bps=10e9, loss=0.3))
    frame = tcp_frame(b"s" * 20 * 1448)
    pipe.push(gso_vnet(frame, 1448), frame)
    out = pipe.drain()
    lost = pipe.direction.shaper.drops_loss
    assert 0 < lost < 20
    assert len(out) == 20 - lost
    assert pipe.direction.stats.packets == 20 - lost


def test_truncated_frame_is_dropped() -> None:
    pipe = Pipe(config())
    small = bytearray(1000)  # stands in for a frame larger than the real receive buffer
    pipe.feed.send(dl.VNET_HDR.pack(0, 0, 0, 0, 0, 0) + tcp_frame(b"t" * 1400))
    pipe.direction.receive(small, memoryview(small), 4)
    assert pipe.direction.in_flight() == 0
    assert pipe.direction.stats.drops_tx == 1
