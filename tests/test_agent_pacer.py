"""The agents' pacer: sends leave on time, and lateness the host causes is told apart from the agent's own."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from corridor.agent.inference import Pacer
from corridor.workloads.agents import sched_error_stats


def _late_wait(interference: float, kind: str, ahead: float = 0.010,
               fire: float | None = None) -> tuple[float, float, float]:
    """Wait for a target ``ahead`` s ahead while a callback holds the loop's thread for ``interference`` s.

    The hold begins ``fire`` s after the wait does: by default 3 ms before the target, while the
    pacer polls; earlier, while it sleeps on the loop's timer on purpose.

    ``kind`` "off-cpu" holds it asleep (as a host that does not run the thread), "on-cpu" busy
    (as the agent's own work). Returns (lateness, stall, taken) in seconds, ``taken`` being the
    time the host did not run a busy hold (by the hold's own wall and CPU clocks; 0 when asleep):
    a lone run read 8.4 ms of stall with 8.4 ms taken from the hold, which the pacer rightly counted.

    The hold must begin before the target for the wait to end late because of it; when the host
    stalls this process past the target first (a full suite on two busy cores read 1.2 ms of
    lateness, all of it a host stall, the hold not yet begun), the try is made again, up to five.
    """
    began: list[float] = []
    stolen: list[float] = []

    def hold() -> None:
        began.append(time.monotonic())
        cpu0 = time.thread_time()
        end = began[0] + interference
        if kind == "off-cpu":
            time.sleep(interference)
        else:
            while time.monotonic() < end:
                pass
            stolen.append((time.monotonic() - began[0]) - (time.thread_time() - cpu0))

    async def main() -> tuple[float, float, float]:
        pacer = Pacer()
        target = time.monotonic() + ahead
        asyncio.get_running_loop().call_later(ahead - 0.003 if fire is None else fire, hold)
        stall = await pacer.wait(target)
        return time.monotonic() - target, stall, target

    tries = []
    for _ in range(5):
        began.clear()
        stolen.clear()
        late, stall, target = asyncio.run(main())
        if began and began[0] < target:
            return late, stall, sum(stolen)
        tries.append((round(late * 1e3, 2), round(stall * 1e3, 2)))
    raise AssertionError(f"the host stalled past the target before the hold began in every try (ms): {tries}")


def _twenty_waits() -> list[tuple[float, float]]:
    """(lateness, host stall) in seconds of 20 waits for targets 30 ms ahead."""
    async def main() -> list[tuple[float, float]]:
        pacer = Pacer()
        out = []
        for _ in range(20):
            target = time.monotonic() + 0.030
            stall = await pacer.wait(target)
            out.append((time.monotonic() - target, stall))
        return out

    return asyncio.run(main())


def test_waits_end_on_time_less_what_the_host_took() -> None:
    """30 ms on the loop's timer, which rounds up to 1 ms, then polling: on time to within tens of us.

    What the pacer does not own is the time the host did not run it: a CI run on a busy machine
    read 11.7 ms and 4.0 ms of lateness among 20 waits and a median of 1.04 ms. The lateness
    less the host stall is the pacer's own and is judged in every run. Lateness itself can only
    be judged in a run the host left alone (at most 3 of the 20 waits stalled); the test tries
    three times and otherwise skips with each try's figures.
    """
    busy = []
    for _ in range(3):
        res = _twenty_waits()
        late = [x for x, _ in res]
        assert all(x >= 0 for x in late)
        assert all(0.0 <= st <= x for x, st in res), res
        own = [x - st for x, st in res]
        assert statistics.median(own) < 0.0005, res
        stalled = sum(1 for _, st in res if st >= 1e-4)
        if stalled <= 3:
            assert statistics.median(late) < 0.0005, late
            return
        busy.append(f"{stalled} of 20 waits stalled by the host, lateness median "
                    f"{statistics.median(late) * 1e3:.2f} ms max {max(late) * 1e3:.1f} ms")
    pytest.skip("host too busy to judge the pacer's lateness in three tries: " + "; ".join(busy))


def test_a_thread_held_off_the_cpu_is_a_host_stall() -> None:
    late, stall, _ = _late_wait(0.030, "off-cpu")
    assert late > 0.020
    assert stall > 0.8 * late, (late, stall)


def test_the_agents_own_busy_work_is_not_a_host_stall() -> None:
    late, stall, taken = _late_wait(0.030, "on-cpu")
    assert late > 0.020
    # what the host took from the hold is a stall; the hold's own work is not
    assert stall - taken < 0.3 * late, (late, stall, taken)


def test_planned_sleep_is_not_a_host_stall() -> None:
    # a 50 ms hold from 20 ms into a 60 ms wait: the timer that ends the pacer's planned sleep
    # (about 56 ms) fires 10 ms late, after the hold; that sleep's wall time, which its CPU clock
    # does not count either, is no stall
    late, stall, taken = _late_wait(0.050, "on-cpu", ahead=0.060, fire=0.020)
    assert late > 0.005
    assert stall - taken < 0.3 * late, (late, stall, taken)


def test_summary_takes_host_stalls_out_of_the_agents_own_error() -> None:
    recs = [{"kind": "request", "t_sched_s": float(i), "t_send_s": i + 0.0001, "sched_stall_s": 0.0} for i in range(98)]
    recs += [{"kind": "request", "t_sched_s": 100.0, "t_send_s": 100.004, "sched_stall_s": 0.0035},
             {"kind": "request", "t_sched_s": 101.0, "t_send_s": 101.003, "sched_stall_s": 0.0029}]
    s = sched_error_stats(recs)
    assert s["sched_error_max_s"] == pytest.approx(0.004)
    assert s["sched_error_own_max_s"] == pytest.approx(0.0005)
    assert s["sched_stalled"] == 2
    assert s["sched_stall_max_s"] == pytest.approx(0.0035)
