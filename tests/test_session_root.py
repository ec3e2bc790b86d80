"""`corridor up/exec/down` on a real network (root), and OpenMPI's all-reduce launched through `corridor exec`.

Each test starts its own `corridor up` in a subprocess under a name of its own,
and checks afterwards, by namespace inode, that no process of that network is
left. The full MPI comparison is ``scripts/bench_mpi_allreduce.py``.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corridor.emulation.api import package_env
from corridor.emulation.state import RunState, netns_inode

pytestmark = [pytest.mark.corridor_root]

UP_ARGS = ["two-site", "--rate", "200Mbit", "--delay", "25ms", "--link-backend", "userspace"]


def _corridor(*args: str, input_text: str | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corridor", *args], input=input_text, capture_output=True,
                          text=True, timeout=timeout_s, env=package_env(), check=False)


def _start_up(name: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """`corridor up --json` in a subprocess; returns it and its session record once the network is up."""
    proc = subprocess.Popen([sys.executable, "-m", "corridor", "up", *UP_ARGS, "--name", name, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=package_env())
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"corridor up did not come up within 60 s: {err[-2000:]}")
    return proc, json.loads(line)


def _pids_in(inodes: set[int]) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and netns_inode(int(p)) in inodes]


def _wait_inside(pid: int, inodes: set[int], timeout_s: float = 20.0) -> bool:
    """Whether ``pid`` (a `corridor exec` still starting up) enters one of ``inodes`` in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if netns_inode(pid) in inodes:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def session_name() -> Iterator[str]:
    name = f"t-updown-{os.getpid()}-{time.monotonic_ns() % 100000}"
    yield name
    _corridor("down", name, timeout_s=180)  # whatever the test left, by name


def test_up_exec_down(session_name: str) -> None:
    up, info = _start_up(session_name)
    run_dir = Path(info["run_dir"])
    inodes = RunState(run_dir).pinned_inodes()
    assert len(inodes) >= 6, "every node's namespace is pinned"
    ips = {h["name"]: h["ip"] for h in info["hosts"]}
    assert {"rem-gpu1", "cty-gpu1"} <= set(ips)

    ping = _corridor("exec", "--session", session_name, "rem-gpu1", "--", "ping", "-c", "6", "-i", "0.2",
                     ips["cty-gpu1"])
    assert ping.returncode == 0, ping.stderr
    rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", ping.stdout)]
    assert len(rtts) == 6
    rtt_ms = sorted(rtts[1:])[len(rtts[1:]) // 2]  # the first waits for ARP
    assert 48.0 <= rtt_ms <= 60.0, rtts  # 2 x 25 ms across the WAN link

    status = _corridor("exec", "--session", session_name, "cty-gpu1", "--", "sh", "-c", "hostname; exit 7")
    assert status.returncode == 7
    assert status.stdout.strip() == "cty-gpu1"
    echoed = _corridor("exec", "--session", session_name, "cty-gpu2", "--", "cat", input_text="through stdin\n")
    assert (echoed.returncode, echoed.stdout) == (0, "through stdin\n")
    by_address = _corridor("exec", "--session", session_name, ips["rem-gpu2"], "--", "ip", "-o", "-4", "addr")
    assert ips["rem-gpu2"] in by_address.stdout
    missing = _corridor("exec", "--session", session_name, "rem-gpu1", "--", "no-such-command-here")
    assert missing.returncode == 127

    # A long command started through exec must not outlive the network.
    sleeper = subprocess.Popen([sys.executable, "-m", "corridor", "exec", "--session", session_name, "rem-gpu1",
                                "--", "sleep", "300"], env=package_env())
    assert _wait_inside(sleeper.pid, inodes)

    down = _corridor("down", session_name, timeout_s=180)
    assert down.returncode == 0, down.stderr
    assert up.wait(timeout=30) == 0
    assert sleeper.wait(timeout=10) != 0
    assert not run_dir.exists()
    assert _pids_in(inodes) == []
    after = _corridor("exec", "--session", session_name, "rem-gpu1", "--", "true")
    assert after.returncode == 1 and "no network named" in after.stderr


def test_a_killed_up_is_removed_by_clean(session_name: str) -> None:
    up, info = _start_up(session_name)
    run_dir = Path(info["run_dir"])
    inodes = RunState(run_dir).pinned_inodes()
    sleeper = subprocess.Popen([sys.executable, "-m", "corridor", "exec", "--session", session_name, "cty-gpu1",
                                "--", "sleep", "300"], env=package_env())
    assert _wait_inside(sleeper.pid, inodes)
    assert len(_pids_in(inodes)) >= 8  # node shells, the delay line, the sleeper

    os.kill(up.pid, signal.SIGKILL)
    up.wait(timeout=10)
    assert _pids_in(inodes), "a killed up leaves its network behind"
    refused = _corridor("exec", "--session", session_name, "cty-gpu1", "--", "true")
    assert refused.returncode == 1 and "corridor clean" in refused.stderr

    clean = _corridor("clean", timeout_s=180)
    assert clean.returncode == 0, clean.stderr
    assert f"up {session_name}" in clean.stdout
    sleeper.wait(timeout=10)
    assert not run_dir.exists()
    assert _pids_in(inodes) == []


@pytest.mark.corridor_slow
def test_mpi_allreduce_through_corridor_exec_fits_the_model() -> None:
    """4 MiB across two-site (200 Mbit/s, 25 ms) with 4 ranks, 2 per site, Open MPI's ring forced.

    Sanity range, not a fidelity figure: no all-reduce across two sites moves less
    than the whole buffer over the WAN once (S at 200 Mbit/s plus one crossing),
    and Open MPI's ring, with its steps one after another and a rendezvous per
    message, takes well under three times corridor's pipelined-ring model.
    """
    from corridor.emulation.session import open_session
    from corridor.planning.planner import build_plan
    from corridor.spec.topospec import load_topology, override_links
    from corridor.tools.mpibench import missing_reason, run_mpi_allreduce
    from corridor.workloads.training.model import collective_time
    from corridor.workloads.training.run import path_fn_for

    reason = missing_reason()
    if reason is not None:
        pytest.skip(f"OpenMPI's all-reduce cannot run here: {reason}")
    plan = build_plan(override_links(load_topology("two-site"), rate="200Mbit", delay="25ms"))
    ranks = ["rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2"]
    size = 4 << 20
    with open_session(plan, name=f"t-mpi-{os.getpid()}", backend="userspace") as (_net, info):
        rec = run_mpi_allreduce(info, hosts=ranks, sizes_bytes=[size], iters=3, warmup=1, algorithm="ring",
                                timeout_s=120)[0]
    model = collective_time("ring", size, [plan.host(h).site for h in ranks], path_fn_for(plan)).time_s
    floor_s = size * 8 / 200e6 + 0.025
    print(f"MPI ring all-reduce {size} B: {rec['time_s'] * 1e3:.0f} ms (runs {rec['times_s']}), model "
          f"{model * 1e3:.0f} ms, floor {floor_s * 1e3:.0f} ms")
    assert rec["hosts"] == ranks
    assert floor_s <= rec["time_s"] <= 3 * model
