"""Fuzzing the delay line's per-frame path: no frame may end the process, and every drop is counted.

Pure: the frames go straight into :meth:`corridor.links.delayline.Direction.handle`
(what ``receive`` calls for each frame read from the packet socket) and into the
parsing functions it uses, so no root and no interface is needed. 100,000 seeded
frames: valid TCP and UDP super-frames, each GSO edge case that once raised
(TCP data offset below 5, odd ``csum_start``, truncated headers, segment size
0, lengths past the buffer, ...), random bytes and bit flips of valid frames.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Callable, Iterator

import pytest

from corridor.links import delayline as dl

FRAMES = 100_000
SEED = 20240613

Vnet = tuple[int, int, int, int, int, int]
#: (name, vnet header, frame, expected): expected is "malformed", "ok" or None (either is fine).
Case = tuple[str, Vnet, bytes, str | None]


def frame(payload_bytes: int, *, v6: bool = False, vlan: bool = False, options: int = 12, doff: int | None = None,
          ihl: int = 5, protocol: int = 6, udp: bool = False, rng: random.Random | None = None) -> bytes:
    """An Ethernet frame holding one TCP (or UDP) packet of ``payload_bytes``, headers as the kernel writes them."""
    eth = b"\x02" * 6 + b"\x04" * 6 + (b"\x81\x00\x00\x05" if vlan else b"") + (b"\x86\xdd" if v6 else b"\x08\x00")
    payload = (rng or random.Random(0)).randbytes(min(payload_bytes, 64))
    payload = (payload * (payload_bytes // max(len(payload), 1) + 1))[:payload_bytes]
    if udp:
        l4 = struct.pack("!HHHH", 4000, 4001, 8 + payload_bytes, 0)
    else:
        words = (20 + options) // 4 if doff is None else doff
        l4 = struct.pack("!HHIIBBHHH", 5000, 5201, 1000, 1, words << 4, 0x18, 65535, 0, 0) + b"\x01" * options
    proto = 17 if udp else protocol
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, (len(l4) + payload_bytes) & 0xFFFF, proto, 64) + bytes(range(32))
    else:
        opts = b"\x01" * ((ihl - 5) * 4) if ihl > 5 else b""
        ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, (20 + len(opts) + len(l4) + payload_bytes) & 0xFFFF, 77,
                         0x4000, 64, proto, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + opts
    return eth + ip + l4 + payload


def l4_at(*, v6: bool = False, vlan: bool = False, ihl: int = 5) -> int:
    return 14 + (4 if vlan else 0) + (40 if v6 else ihl * 4)


def gso(l4: int, mss: int, *, v6: bool = False, udp: bool = False, csum_off: int | None = None) -> Vnet:
    kind = dl.GSO_UDP_L4 if udp else (dl.GSO_TCPV6 if v6 else dl.GSO_TCPV4)
    return (dl.VNET_F_NEEDS_CSUM, kind, l4 + 32, mss, l4, (6 if udp else 16) if csum_off is None else csum_off)


def valid(rng: random.Random) -> Case:
    v6, vlan = rng.random() < 0.5, rng.random() < 0.2
    udp = rng.random() < 0.1
    mss = rng.choice([536, 1220, 1448, 8948, rng.randrange(200, 1500)])
    data = frame(rng.randrange(0, 12_000), v6=v6, vlan=vlan, udp=udp, rng=rng)
    vnet = gso(l4_at(v6=v6, vlan=vlan), mss, v6=v6, udp=udp)
    if rng.random() < 0.2:
        vnet = (vnet[0], vnet[1] | dl.GSO_ECN, *vnet[2:])
    return "valid", vnet, data, "ok"


def _edge(rng: random.Random) -> Iterator[Callable[[], Case]]:
    """Factories of frames that must be dropped as malformed (one per known way to break the parser)."""
    v6 = rng.random() < 0.5
    l4 = l4_at(v6=v6)
    good = frame(rng.randrange(5000, 9000), v6=v6, rng=rng)
    yield lambda: ("data offset < 5", gso(l4, 1448, v6=v6), frame(5000, v6=v6, doff=rng.randrange(5)), "malformed")
    odd = l4 + rng.choice([-3, -1, 1, 2, 3, 5, 7])
    yield lambda: ("odd csum_start", (1, gso(l4, 1448, v6=v6)[1], 0, 1448, odd, 16), good, "malformed")
    yield lambda: ("csum past the end", (1, 0, 0, 0, len(good) - rng.randrange(2), 16), good, "malformed")
    yield lambda: ("csum_offset not TCP's", gso(l4, 1448, v6=v6, csum_off=rng.choice([0, 6, 15, 17])), good,
                   "malformed")
    cut = rng.randrange(0, l4 + 32)
    yield lambda: ("truncated headers", gso(l4, 1448, v6=v6), good[:cut], "malformed")
    yield lambda: ("gso_size 0", gso(l4, 0, v6=v6), good, "malformed")
    yield lambda: ("unknown GSO type", (1, rng.choice([2, 6, 7, 0x7F, 0x82]), 0, 1448, l4, 16), good, "malformed")
    yield lambda: ("IP version mismatch", (1, dl.GSO_TCPV6 if not v6 else dl.GSO_TCPV4, 0, 1448, l4, 16), good,
                   "malformed")
    ihl = rng.randrange(5)
    bad_ihl = bytearray(frame(4000))
    bad_ihl[14] = 0x40 | ihl
    yield lambda: ("IPv4 header length < 5", (0, dl.GSO_TCPV4, 0, 1448, 0, 0), bytes(bad_ihl), "malformed")
    yield lambda: ("not TCP inside", gso(34, 1448), frame(4000, protocol=rng.choice([1, 17, 47])), "malformed")
    yield lambda: ("too many segments", gso(l4, rng.randrange(1, 3), v6=v6), good, "malformed")
    huge = 65535 - 52 + rng.randrange(1, 53)
    yield lambda: ("segments over 64 KB", gso(34, huge), frame(huge + 1), "malformed")
    yield lambda: ("only a vnet header", (0, 0, 0, 0, 0, 0), b"", "malformed")


def edge(rng: random.Random) -> Case:
    return rng.choice(list(_edge(rng)))()


def noise(rng: random.Random) -> Case:
    vnet: Vnet = (rng.randrange(4), rng.choice([0, 1, 3, 4, 5, 0x81, 0x84, rng.randrange(256)]),
                  rng.randrange(65536), rng.choice([0, 1, rng.randrange(65536)]), rng.randrange(200), rng.randrange(64))
    return "random bytes", vnet, rng.randbytes(rng.randrange(0, 2000)), None


def flipped(rng: random.Random) -> Case:
    _, vnet, data, _ = valid(rng)
    mutable = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        if mutable:
            mutable[rng.randrange(min(len(mutable), 90))] ^= 1 << rng.randrange(8)
    cut = len(mutable) if rng.random() < 0.7 else rng.randrange(len(mutable) + 1)
    return "bit flips", vnet, bytes(mutable[:cut]), None


def plain(rng: random.Random) -> Case:
    """A frame without GSO or checksum request: a wire carries any bytes, so it is never malformed."""
    return "plain bytes", (0, 0, 0, 0, 0, 0), rng.randbytes(rng.randrange(1, 1600)), "ok"


def cases(count: int, seed: int) -> Iterator[Case]:
    rng = random.Random(seed)
    makers = [valid, edge, edge, noise, flipped, plain]
    for _ in range(count):
        yield rng.choice(makers)(rng)


def parse(vnet: Vnet, data: bytes) -> dl.FrameInfo | None:
    """What the delay line decides about one frame: its FrameInfo, or None when it must be dropped."""
    if not data:
        return None
    try:
        return dl.frame_info(data, vnet)
    except dl.MalformedFrame:
        return None


def check_segments(data: bytes, info: dl.FrameInfo, keep: list[bool]) -> None:
    """Each kept segment is a well-formed packet: its IP length field matches its bytes, checksum inside it."""
    segments = dl.split_tcp_gso(data, info, keep)
    assert len(segments) == sum(keep)
    l3 = dl.l3_offset(data)
    for segment in segments:
        flags, gso_type, _, _, start, offset = dl.VNET_HDR.unpack_from(segment)
        body = segment[dl.VNET_HDR.size :]
        assert gso_type == dl.GSO_NONE and flags == dl.VNET_F_NEEDS_CSUM
        assert start + offset + 2 <= len(body)
        if body[l3] >> 4 == 4:
            assert struct.unpack_from("!H", body, l3 + 2)[0] == len(body) - l3
        else:
            assert struct.unpack_from("!H", body, l3 + 4)[0] == len(body) - l3 - 40


def test_parser_drops_every_known_edge_case_and_keeps_valid_frames() -> None:
    rng = random.Random(SEED)
    for factory in _edge(rng):
        name, vnet, data, expected = factory()
        assert expected == "malformed"
        assert parse(vnet, data) is None, name
    for _ in range(200):
        name, vnet, data, _ = valid(rng)
        info = parse(vnet, data)
        assert info is not None, name
        assert sum(info.segment_sizes) >= len(data) - dl.l3_offset(data)


@pytest.mark.parametrize("seed", [SEED])
def test_100000_fuzzed_frames_never_raise_and_every_drop_is_counted(seed: int) -> None:
    rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    config = dl.DirectionConfig(rate_bps=1e9, delay_s=0.01, queue_bytes=4_000_000, loss=0.05)
    direction = dl.Direction("a_to_b", rx, tx, config, seed=seed)
    keep_rng = random.Random(seed + 1)
    expected_malformed = 0
    by_name: dict[str, list[int]] = {}
    split = 0
    now = 1000.0
    try:
        for index, (name, vnet, data, expected) in enumerate(cases(FRAMES, seed)):
            info = parse(vnet, data)
            bad = info is None
            expected_malformed += bad
            tally = by_name.setdefault(name, [0, 0])
            tally[bad] += 1
            if expected is not None:
                where = f"frame {index} ({name}, {len(data)} bytes, vnet {vnet})"
                assert bad == (expected == "malformed"), f"{where}: dropped={bad}"
            if info is not None and len(info.segment_sizes) > 1 and info.gso_type & ~dl.GSO_ECN in (
                    dl.GSO_TCPV4, dl.GSO_TCPV6):
                check_segments(data, info, [keep_rng.random() < 0.7 for _ in info.segment_sizes])
                split += 1
            now += 1e-5
            direction.handle(memoryview(dl.VNET_HDR.pack(*vnet) + data), now)
            if index % 1000 == 999:
                # The test sends nothing: forget what is in flight so memory stays flat.
                direction.line.clear()
    finally:
        rx.close()
        tx.close()
    stats = direction.stats
    assert stats.malformed == expected_malformed
    snapshot = dl.direction_snapshot(direction.shaper, stats, now, direction.in_flight())
    assert snapshot["malformed"] == expected_malformed
    # The fuzz reached both sides: many drops, many kept frames, and super-frames cut into segments.
    assert FRAMES * 0.25 < expected_malformed < FRAMES * 0.75, by_name
    assert stats.frames_in >= FRAMES - by_name.get("only a vnet header", [0, 0])[1] - FRAMES * 0.01
    assert split > 5000
    for name in ("random bytes", "bit flips"):
        assert by_name[name][0] > 0, f"no {name} frame got through the parser: {by_name[name]}"


def test_a_frame_that_slips_past_the_parser_is_counted_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    config = dl.DirectionConfig(rate_bps=100e6, delay_s=0.01, queue_bytes=4_000_000)
    direction = dl.Direction("a_to_b", rx, tx, config, seed=1)

    def broken(*_args: object) -> list[bytes]:
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(dl, "split_tcp_gso", broken)
    data = frame(44 * 1448)
    try:
        direction.handle(memoryview(dl.VNET_HDR.pack(*gso(34, 1448)) + data), 1.0)
    finally:
        rx.close()
        tx.close()
    assert direction.stats.malformed == 1
    assert direction.in_flight() == 0
