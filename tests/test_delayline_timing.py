"""The delay line's timing work: whole super-frames admitted in one step, reads that yield to due departures,
and the counters that say where lateness comes from. Pure (socketpairs, synthetic times), no root."""

from __future__ import annotations

import json
import random
import socket
import time

import pytest

from corridor.links import delayline as dl


def shaper(**kw: object) -> dl.Shaper:
    base: dict[str, object] = {"rate_bps": 1e9, "delay_s": 0.025, "queue_bytes": 1_000_000}
    base.update(kw)
    return dl.Shaper(dl.DirectionConfig(**base), random.Random(1))  # type: ignore[arg-type]


def counters(sh: dl.Shaper) -> tuple[float, ...]:
    return (sh.tx_free_s, sh.admitted, sh.queue_delay_sum_s, sh.queue_delay_max_s, sh.queue_bytes_max,
            sh.drops_queue, sh.drops_loss)


SIZES = (1500,) * 43 + (700,)


@pytest.mark.parametrize("arrivals", [[0.0], [0.0, 0.0001, 0.0002], [0.0, 0.01, 0.0101]])
def test_whole_frame_admission_matches_segment_by_segment(arrivals: list[float]) -> None:
    one, whole = shaper(), shaper()
    for t in arrivals:
        finishes = one.offer(t, SIZES)
        last = whole.offer_whole(t, SIZES, sum(SIZES))
        assert last is not None and last == pytest.approx(finishes[-1], abs=1e-12)
    for a, b in zip(counters(one), counters(whole), strict=True):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kw", [
    {"queue_bytes": 60_000},  # the frame does not fit: segment by segment decides which part drops
    {"loss": 0.01},  # loss draws per segment
    {"queue_packets": 100},
])
def test_whole_frame_admission_declines_and_changes_nothing(kw: dict[str, object]) -> None:
    sh = shaper(**kw)
    before = counters(sh)
    assert sh.offer_whole(0.0, SIZES, sum(SIZES)) is None
    assert counters(sh) == before


def test_whole_frame_admission_declines_while_down() -> None:
    sh = shaper()
    sh.reconfigure(sh.config, down=True)
    assert sh.offer_whole(0.0, SIZES, sum(SIZES)) is None and sh.drops_down == 0


def test_one_segment_admission_matches_offer() -> None:
    one, fast = shaper(loss=0.3), shaper(loss=0.3)
    for i in range(200):
        assert fast.offer_one(i * 1e-6, 1500) == one.offer(i * 1e-6, [1500])[0]
    assert counters(one) == counters(fast)


def _pipe() -> tuple[socket.socket, dl.Direction, socket.socket]:
    feed, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tx, out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.setblocking(False)
    out.setblocking(False)
    cfg = dl.DirectionConfig(rate_bps=1e9, delay_s=10.0, queue_bytes=10**7)
    return feed, dl.Direction("a_to_b", rx, tx, cfg, seed=1), out


def _frame() -> bytes:
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    return dl.PLAIN_VNET + eth + bytes([0x45]) + bytes(99)


def test_a_read_batch_stops_when_a_departure_comes_due() -> None:
    feed, direction, _out = _pipe()
    for _ in range(5):
        feed.send(_frame())
    buf = bytearray(dl.RECV_BUFFER_BYTES)
    # A departure already due: one frame is read, then the batch yields, and the socket is not empty.
    assert direction.receive(buf, memoryview(buf), 8, until_s=time.monotonic() - 1.0) == 1
    assert not direction.rx_empty
    # No departure waiting: the batch reads the rest and finds the socket empty.
    assert direction.receive(buf, memoryview(buf), 8) == 4
    assert direction.rx_empty and direction.stats.frames_in == 5


def test_loop_stats_say_how_late_the_timer_woke() -> None:
    loop = dl.LoopStats()
    for late_s in [20e-6] * 98 + [0.002, -1e-6]:
        loop.record_wake(late_s)
    snap = loop.snapshot()
    assert snap["timer_wakes"] == 100
    assert snap["wake_late_us_p50"] == 30.0  # the 10 us bin holding 20 us
    assert snap["wake_late_us_p99"] == 30.0 and snap["wake_late_us_max"] == pytest.approx(2000.0)


def test_snapshot_carries_the_lateness_histogram() -> None:
    stats = dl.DirectionStats()
    for late_s in (0.0, 0.00005, 0.00005, 0.03):
        stats.record_send(late_s, 0.025, 1, 1500)
    snap = dl.direction_snapshot(shaper(), stats, 0.0, 0)
    assert snap["late_hist_us"] == [[10, 1], [60, 2], [31000, 1]]
    assert snap["late_us_p50"] == 60.0
    json.dumps(snap)  # the stats file is JSON


def test_stats_writer_writes_the_encoded_snapshot(tmp_path: object) -> None:
    path = str(tmp_path) + "/stats.json"  # type: ignore[operator]
    writer = dl.StatsWriter(path)
    writer.submit({"state": "running", "n": 1})
    writer.close({"state": "stopped", "n": 2})
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle) == {"state": "stopped", "n": 2}
