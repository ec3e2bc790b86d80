"""Collectives across an emulated corridor (root): bus bandwidth, the model, WAN bytes, time scaling, failures.

Kept short (a few sizes, few iterations); the full sweep is ``corridor bench
collective --rate 200Mbit --delay 25ms --link-backend userspace``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from corridor.errors import AgentError
from corridor.links.fidelity import HostStalls
from corridor.planning.planner import build_plan
from corridor.spec.topospec import load_topology, override_links
from corridor.workloads.training.run import path_fn_for, run_collective_sweep, validate
from corridor.workloads.training.run import run as run_training

pytestmark = [pytest.mark.corridor_root]

RANKS = ["rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2"]


def _two_site(loss=None):
    return build_plan(override_links(load_topology("two-site"), rate="200Mbit", delay="25ms", loss=loss))


def _network(plan, time_scale=1.0):
    from corridor.emulation.network import CorridorNetwork

    return CorridorNetwork(plan, backend="userspace", time_scale=time_scale)


@pytest.mark.corridor_slow
def test_ring_reaches_wan_rate_and_matches_the_model():
    """200 Mbit/s and 25 ms, as the acceptance states it (k = 1).

    On a 2-core machine loaded by other work the userspace delay line runs late by up
    to tens of milliseconds (its ``late_us_p99``) and this reads low, so the host's
    stalled share is measured alongside and given back. At k = 4 BBR's wall-clock
    ProbeRTT makes the flow 5-11 % slower after scaling (see
    test_time_scale_k1_and_k4_agree), so k = 4 is no cleaner a reference.
    Known gap, not asserted here: with S/n near the path's bandwidth-delay product
    (4 MiB: 1 MiB chunks against 1.25 MB) BBR overshoots the queue, loses a few
    per cent of packets and recovers; measured times there range from the model's
    to twice it, depending on load.
    """
    # Time the host ran none of the ranks or the delay line (1 ms sleeps in a child process) comes off before
    # the bounds, and a sweep outside them is measured once more: a loaded CI-like run read 168 Mbit/s (84 %).
    plan = _two_site()
    tries = []
    for _attempt in range(2):
        with HostStalls() as host, _network(plan) as net:
            recs = run_collective_sweep(net, hosts=RANKS, algorithm="ring", sizes_bytes=[1 << 20, 16 << 20],
                                        iters=3, min_time_s=1.0, timeout_s=200, path_fn=path_fn_for(plan))
        stalled = host.summary()["stalled_fraction"]
        for rec in recs:
            print(f"ring {rec['size_bytes']:>9} B  {rec['time_s'] * 1e3:8.1f} ms  busbw "
                  f"{rec['busbw_gbps'] * 1e3:6.1f} Mbit/s  model {rec['predicted_time_s'] * 1e3:8.1f} ms  error "
                  f"{rec['error_pct']:+.1f} %  (host stalled {stalled:.1%})")
        errors = [(rec["time_s"] * (1 - stalled) - rec["predicted_time_s"]) / rec["predicted_time_s"] for rec in recs]
        tries.append((round(recs[-1]["busbw_gbps"] * 1e3, 1), [round(e * 100, 1) for e in errors], round(stalled, 3)))
        if recs[-1]["busbw_gbps"] >= (0.85 - stalled) * 0.2 and all(abs(e) <= 0.15 for e in errors):
            return
    raise AssertionError(f"busbw (Mbit/s), model errors (%) after the host's stalls, stalled share, per try: {tries}")


def _wan_link_bytes(net) -> int:
    """Bytes the WAN links' delay lines carried so far, both directions of every link."""
    time.sleep(0.6)  # the delay lines rewrite their stats files every 200 ms
    total = 0
    for link in net.plan.wan_links:
        stats = net.link_stats(link.name)
        total += sum(int(stats.get(d, {}).get("bytes", 0)) for d in ("a_to_b", "b_to_a"))
    return total


def test_hierarchical_sends_fewer_wan_bytes_over_xinjiang_coastal():
    plan = build_plan(load_topology("xinjiang-coastal"))
    hosts = [h.name for h in plan.hosts(role="gpu")]
    recs = {}
    link_bytes = {}
    with _network(plan) as net:
        for algorithm in ("ring", "hierarchical"):
            before = _wan_link_bytes(net)
            recs[algorithm] = run_collective_sweep(net, hosts=hosts, algorithm=algorithm, sizes_bytes=[4 << 20],
                                                   iters=1, warmup=0, timeout_s=120, path_fn=path_fn_for(plan))[0]
            link_bytes[algorithm] = _wan_link_bytes(net) - before
    ring, hier = recs["ring"], recs["hierarchical"]
    print(f"all-reduce of 4 MiB on {len(hosts)} ranks over xinjiang-coastal: bytes between sites ring "
          f"{ring['wan_bytes']}, hierarchical {hier['wan_bytes']}; bytes on WAN links (incl. headers, transit "
          f"hops, rendezvous) ring {link_bytes['ring']}, hierarchical {link_bytes['hierarchical']}")
    assert hier["wan_bytes"] < 0.9 * ring["wan_bytes"]
    assert link_bytes["hierarchical"] < link_bytes["ring"]
    assert hier["wan_bytes"] == hier["predicted_wan_bytes"]
    assert ring["wan_bytes"] == ring["predicted_wan_bytes"]


@pytest.mark.corridor_slow
def test_time_scale_k1_and_k4_agree():
    """Time scaling preserves what is clocked by round trips; the comparison isolates that.

    Socket buffers of 512 KiB cap each flow's window below the path's bandwidth-delay
    product (1.25 MB), so each flow runs at window/RTT with no queue and no loss, and
    reno keeps the window RTT-clocked. Loss-driven dynamics are not scale-invariant on this
    machine: BBR and cubic keep wall-clock timers that k does not stretch (BBR's 10 s
    ProbeRTT and min-RTT window, cubic's growth in real time since the last loss) and read
    5-11 % apart between k = 1 and k = 4 in CI; reno filling the queue read 14 % apart in
    one CI run because its sawtooth, not the scaling, varies from run to run.

    The topology's random loss (1e-5 per packet) is turned off: the delay line draws loss per
    packet from a seeded stream, and k = 4 carries 10-30 % more packets than k = 1 for the same
    bytes (the receivers coalesce fewer ACKs at a quarter of the packet rate), so the k = 4 run
    reached a drop on the data direction that the k = 1 run did not, and that one loss cost reno
    about 8 % for the rest of the run (scripts/measure_time_scale.py --cases ring).
    """
    plan = _two_site(loss=0)
    tries = []
    # A pair measured while the shared host stalls for tens of ms reads k = 1 slow (its steps are four times
    # shorter, so the same stall weighs four times as much: 2,126 against 1,933 ms once), so a pair that
    # disagrees is measured once more; the same 5 % holds for the pair that decides.
    # Each run's share of time the host stalled (1 ms sleeps in a child process waking late) comes off its time,
    # as in test_ring_reaches_wan_rate_and_matches_the_model: a full suite read k = 1 at 2,058 and 2,073 ms against
    # k = 4 at 1,951 and 1,956 ms in both tries, where the same test alone read 1,932 against 1,961 ms.
    for _attempt in range(2):
        times, stalled = {}, {}
        for k in (1.0, 4.0):
            with _network(plan, time_scale=k) as net:
                with HostStalls() as host:
                    rec = run_collective_sweep(net, hosts=RANKS, algorithm="ring", sizes_bytes=[16 << 20], iters=3,
                                               warmup=2, timeout_s=180, path_fn=path_fn_for(plan), cc="reno",
                                               sock_buf_bytes=512 * 1024)[0]
            assert rec["time_scale"] == k
            stalled[k] = host.summary()["stalled_fraction"]
            times[k] = rec["time_s"] * (1 - stalled[k])
        print(f"ring 16 MiB after the host's stalls: k=1 {times[1.0] * 1e3:.1f} ms (stalled {stalled[1.0]:.1%}), "
              f"k=4 {times[4.0] * 1e3:.1f} ms (scaled back; stalled {stalled[4.0]:.1%})")
        tries.append({"time_s": times, "stalled": stalled})
        if times[4.0] == pytest.approx(times[1.0], rel=0.05):
            break
    # 3 % is the scaling's own agreement on a quiet machine; the margin is for the 2-core host's load
    assert tries[-1]["time_s"][4.0] == pytest.approx(tries[-1]["time_s"][1.0], rel=0.05), tries


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_rank_fails_the_run_within_its_timeout():
    plan = _two_site()
    params = validate({"pattern": "allreduce", "steps": 1000, "compute_time": "20ms", "grad_size": "256KB"},
                      where="test")
    pids: list[int] = []

    def kill_later(procs: list[subprocess.Popen[bytes]]) -> None:
        pids.extend(p.pid for p in procs)
        threading.Timer(4.0, lambda: os.kill(procs[2].pid, signal.SIGKILL)).start()

    timeout_s = 40.0
    with _network(plan) as net:
        t0 = time.monotonic()
        with pytest.raises(AgentError, match=r"rank 2 \(cty-gpu1\)") as info:
            run_training(net, params, hosts=RANKS, seed=5, timeout_s=timeout_s, on_start=kill_later)
        elapsed = time.monotonic() - t0
    print(f"failed after {elapsed:.1f} s: {info.value}")
    assert elapsed < timeout_s
    assert pids and not any(_alive(p) for p in pids)
