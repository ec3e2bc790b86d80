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


class _Clocks:
    """A fake wall clock and loop-thread CPU clock, and a record of the policies set."""

    def __init__(self) -> None:
        self.now = 0.0
        self.cpu = 0.0
        self.set: list[tuple[str, int]] = []
        self.refuse_fifo = False

    def run(self, seconds: float, share: float) -> None:
        self.now += seconds
        self.cpu += seconds * share

    def fifo(self, priority: int) -> None:
        if self.refuse_fifo:
            raise PermissionError("no CAP_SYS_NICE")
        self.set.append(("fifo", priority))

    def normal(self, nice: int) -> None:
        self.set.append(("normal", nice))

    def governor(self, priority: int = 20) -> dl.PriorityGovernor:
        return dl.PriorityGovernor(priority, clock=lambda: self.now, cpu=lambda: self.cpu,
                                   set_fifo=self.fifo, set_normal=self.normal)


def test_a_line_that_needs_the_whole_core_leaves_fifo_and_returns_when_it_has_time_to_spare() -> None:
    # SCHED_FIFO at 95 % of a core is taken off it for ~50 ms a second (RT throttling, the fair server)
    clocks = _Clocks()
    gov = clocks.governor()
    gov.start()
    assert gov.policy == "fifo" and clocks.set == [("fifo", 20)]
    clocks.run(0.25, 0.95)
    gov.tick()  # less than a window: nothing measured yet
    assert gov.policy == "fifo" and gov.switches == 0
    clocks.run(0.25, 0.95)
    gov.tick()
    assert gov.policy == "nice" and clocks.set[-1] == ("normal", dl.BUSY_NICE)
    assert gov.cpu_share == pytest.approx(0.95)
    clocks.run(0.5, 0.7)  # between the bounds: stays put (hysteresis)
    gov.tick()
    assert gov.policy == "nice" and gov.switches == 1
    clocks.run(0.5, 0.3)
    gov.tick()
    assert gov.policy == "fifo" and clocks.set[-1] == ("fifo", 20) and gov.switches == 2
    clocks.run(0.5, 0.8)  # below the bound to leave
    gov.tick()
    assert gov.policy == "fifo"
    assert gov.snapshot() == {"policy": "fifo", "switches": 2, "cpu_share": pytest.approx(0.8)}


def test_without_realtime_rights_the_line_is_a_nice_task_for_good() -> None:
    clocks = _Clocks()
    clocks.refuse_fifo = True
    gov = clocks.governor()
    gov.start()
    assert gov.policy == "nice" and clocks.set == [("normal", dl.BUSY_NICE)]
    clocks.run(1.0, 0.2)
    gov.tick()
    assert gov.policy == "nice" and gov.switches == 0 and clocks.set == [("normal", dl.BUSY_NICE)]


def test_priority_zero_stays_a_normal_process() -> None:
    clocks = _Clocks()
    gov = clocks.governor(priority=0)
    gov.start()
    clocks.run(1.0, 1.0)
    gov.tick()
    assert gov.policy == "normal" and clocks.set == [] and gov.cpu_share == pytest.approx(1.0)
