"""Root test: a delay line killed in the middle of a point stops the run naming its link, and resume completes it.

Builds the two-site corridor with the userspace backend through
:func:`corridor.workloads.runner.run_experiment`. The workload is the fake training kind
of test_experiment_fakes with its run replaced by real traffic: pings from the
remote rank to the city rank across the WAN link, one train_step record per
reply. In the first point the test kills the link's delay line (SIGKILL, by
the pid the network reports) while the pings are in flight.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_experiment_fakes import use_fakes, write_experiment  # noqa: F401

from corridor.errors import EmulationError
from corridor.spec import experiment

pytestmark = [pytest.mark.corridor_root, pytest.mark.usefixtures("use_fakes")]

EXPERIMENT = """
name: link-supervision
topology: two-site
placements:
  - name: local
  - name: remote
    servers: [remote]
    clients: [city]
    ranks: [remote, city]
workloads:
  - name: ping
    type: fake-dp
    params: {steps: 5}
repetitions: 2
seed: 5
"""


def _ping_steps(net: Any, hosts: Sequence[str], count: int) -> list[dict[str, Any]]:
    """Pings from the first rank to the second across the WAN; one step record per reply."""
    done = net.run(hosts[0], ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", net.host_ip(hosts[1])],
                   timeout_s=20)
    rtts = [float(x) / 1e3 for x in re.findall(r"time=([\d.]+) ms", done.stdout)]
    return [{"kind": "train_step", "pattern": "fake-dp", "step": i, "rank": 0, "step_time_s": rtt,
             "compute_time_s": 0.0, "comm_time_s": rtt, "exposed_comm_s": rtt, "wan_bytes": 84,
             "time_scale": net.time_scale} for i, rtt in enumerate(rtts)]


@pytest.fixture
def pinging_workload() -> Iterator[dict[str, Any]]:
    """Replace the fake training run with real pings; in the WAN point numbered ``kill_on`` kill the delay line."""
    module = sys.modules["corridor_fake_training"]
    real = module.run
    state: dict[str, Any] = {"calls": 0, "wan_calls": 0, "kill_on": None, "killed": []}

    def run(net: Any, params: Any, *, hosts: Sequence[str], seed: int, timeout_s: float,
            progress: Any = None) -> list[dict[str, Any]]:
        state["calls"] += 1
        state["wan_calls"] += bool(net.plan.wan_links)
        if net.plan.wan_links and state["wan_calls"] == state["kill_on"]:
            link = net.plan.wan_links[0].name
            pid = net.link_pid(link)
            assert pid is not None, "the userspace network knows its delay line's pid"

            def kill() -> None:
                os.kill(pid, signal.SIGKILL)
                state["killed"].append((link, pid))

            threading.Timer(0.5, kill).start()
        return _ping_steps(net, hosts, params.steps)

    module.run = run
    try:
        yield state
    finally:
        module.run = real


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]


def test_killed_delay_line_stops_the_run_naming_the_link_and_resume_completes_it(
        pinging_workload: dict[str, Any], tmp_path: Path) -> None:
    from corridor.workloads.runner import run_experiment

    exp = experiment.load_experiment(write_experiment(tmp_path, EXPERIMENT, "supervision.yaml"))
    out = tmp_path / "run"
    pinging_workload["kill_on"] = 1
    with pytest.raises(EmulationError) as failure:
        run_experiment(exp, str(out), backend="userspace")
    assert len(pinging_workload["killed"]) == 1
    link, pid = pinging_workload["killed"][0]
    message = str(failure.value)
    assert f"WAN link {link}" in message and "not running" in message and f"pid {pid}" in message, message
    assert pinging_workload["wan_calls"] == 1, "the second point must not run on a dead link"
    local_done = pinging_workload["calls"] - 1
    records = _records(out)
    assert [m["placement"] for m in records if m.get("kind") == "point"] == ["local"] * local_done
    assert not [r for r in records if r.get("placement") == "remote"]
    assert json.loads((out / "summary.json").read_text())["status"] != "complete"

    # The next run builds a fresh network (a new delay line) and retries both points.
    run_experiment(exp, str(out), resume=True, backend="userspace")
    assert pinging_workload["wan_calls"] == 3
    assert pinging_workload["calls"] == 3 + 2
    records = _records(out)
    markers = [r for r in records if r.get("kind") == "point" and r["placement"] == "remote"]
    assert len(markers) == 2 and all(m["status"] == "ok" for m in markers)
    for marker in markers:
        health = marker["link_health"]
        assert health["ok"] is True, health
        verdict = health["links"][link]
        assert (verdict["alive"], verdict["fresh"], verdict["readable"], verdict["unexpected_drops"]) == (
            True, True, True, 0)
    steps = [r for r in records if r.get("kind") == "train_step" and r["placement"] == "remote"]
    assert len(steps) >= 2 * 4, "the pings cross the rebuilt link"
    samples = [r for r in records if r.get("kind") == "link_sample"]
    assert samples and all("time_unix_s" in s and s.get("stats_age_s", 99) < 2.0 for s in samples)
    assert all(s.get("pid") != pid for s in samples)
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
