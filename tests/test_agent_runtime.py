"""Agent runtime on loopback (no root): rendezvous, mesh, real bytes, failures that name the rank."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from corridor.agent.__main__ import ROLES
from corridor.agent.collectives import bytes_sent, schedule
from corridor.agent.runtime import AgentConfig, AgentFailure
from corridor.emulation.api import LocalNetwork, package_env, python_argv
from corridor.errors import AgentError
from corridor.workloads.training.run import run as run_training
from corridor.workloads.training.run import run_agents, run_collective_sweep, validate

SITES = {"a1": "a", "a2": "a", "b1": "b", "b2": "b"}
HOSTS = list(SITES)


def test_roles_registry_is_explicit():
    # one table for every role an agent process can take, training and inference alike
    assert set(ROLES) == {"collective", "train", "inference-server", "inference-client", "inference-store",
                          "message-replay"}
    assert {r.kind for r in ROLES.values()} == {"mesh", "stream"}


def test_one_entry_point_refuses_a_bad_config_with_the_same_status():
    import subprocess
    import sys

    for role in ("train", "inference-client"):
        out = subprocess.run([sys.executable, "-m", "corridor.agent", role, "--config", "{not json"],
                             capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 2 and "bad --config" in out.stderr, (role, out.returncode, out.stderr)


@pytest.mark.parametrize("algorithm", ["ring", "hierarchical", "halving_doubling", "parameter_server"])
def test_collective_moves_the_scheduled_wan_bytes(algorithm):
    net = LocalNetwork(SITES)
    size = 1 << 20
    recs = run_collective_sweep(net, hosts=HOSTS, algorithm=algorithm, sizes_bytes=[size], iters=2, timeout_s=60)
    assert len(recs) == 1
    rec = recs[0]
    _, wan = bytes_sent(schedule(algorithm, size, list(SITES.values())), list(SITES.values()))
    assert rec["wan_bytes"] == wan
    assert rec["time_s"] > 0 and rec["busbw_gbps"] > 0
    assert rec["kind"] == "collective" and rec["n_ranks"] == 4


def test_parallel_streams_and_congestion_control():
    net = LocalNetwork({"x": "a", "y": "b"})
    recs = run_collective_sweep(net, hosts=["x", "y"], algorithm="ring", sizes_bytes=[3_000_001], iters=1,
                                timeout_s=60, streams=3, cc="reno")
    assert recs[0]["cc"] == "reno"
    assert recs[0]["wan_bytes"] == 2 * 2 * 1_500_001  # each of 2 ranks sends 2(n-1) chunks of S/n


def test_unavailable_congestion_control_is_a_clear_error():
    net = LocalNetwork({"x": "a", "y": "b"})
    with pytest.raises(AgentError, match="congestion control 'nosuchcc'"):
        run_agents(net, "collective", ["x", "y"], {"algorithm": "ring", "sizes_bytes": [1000]}, seed=1,
                   timeout_s=20, cc="nosuchcc")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_rank_fails_the_run_naming_it_and_leaves_nothing(sig):
    net = LocalNetwork(SITES)
    params = validate({"pattern": "allreduce", "steps": 500, "compute_time": "10ms", "grad_size": "1MB"}, where="t")
    pids: list[int] = []

    def kill_later(procs: list[subprocess.Popen[bytes]]) -> None:
        pids.extend(p.pid for p in procs)
        threading.Timer(1.5, lambda: os.kill(procs[2].pid, sig)).start()

    t0 = time.monotonic()
    with pytest.raises(AgentError, match=r"rank 2 \(b1\)"):
        run_training(net, params, hosts=HOSTS, seed=3, timeout_s=30, on_start=kill_later)
    assert time.monotonic() - t0 < 30
    assert pids and not any(_alive(p) for p in pids)


def test_hung_rank_is_named_within_the_timeout():
    net = LocalNetwork(SITES)
    params = validate({"pattern": "allreduce", "steps": 500, "compute_time": "10ms", "grad_size": "1MB"}, where="t")
    pids: list[int] = []

    def stop_later(procs: list[subprocess.Popen[bytes]]) -> None:
        pids.extend(p.pid for p in procs)
        threading.Timer(3.0, lambda: os.kill(procs[1].pid, signal.SIGSTOP)).start()

    t0 = time.monotonic()
    with pytest.raises(AgentError, match=r"rank 1 \(a2\)"):
        run_training(net, params, hosts=HOSTS, seed=4, timeout_s=12, on_start=stop_later)
    assert time.monotonic() - t0 < 12 + 10
    assert not any(_alive(p) for p in pids)


def test_missing_rank_fails_rendezvous_naming_it():
    """Rank 1 of 3 never starts: rank 0 reports it after its timeout."""
    net = LocalNetwork({"x": "a", "y": "a", "z": "b"})
    with pytest.raises(AgentError, match="rank 1"):
        _run_without_rank(net, missing=1)


def _run_without_rank(net: LocalNetwork, missing: int) -> None:
    procs = []
    port = 47000 + os.getpid() % 1000
    try:
        for rank, host in enumerate(["x", "y", "z"]):
            if rank == missing:
                continue
            cfg = {"rank": rank, "n_ranks": 3, "host": host, "site": "a", "ip": "127.0.0.1",
                   "rendezvous_ip": "127.0.0.1", "rendezvous_port": port, "timeout_s": 3, "stall_timeout_s": 3,
                   "job": {"algorithm": "ring", "sizes_bytes": [1000]}}
            # stdin stays open while they run: its end is the agent protocol's stop signal
            procs.append(subprocess.Popen(python_argv("corridor.agent", "collective", "--config", json.dumps(cfg)),
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, env=package_env()))
        outs = []
        for p in procs:
            assert p.stdout is not None
            outs.append(p.stdout.read().decode())  # until the agent exits
            p.wait(timeout=20)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    errors = [json.loads(line)["error"] for out in outs for line in out.splitlines() if "agent_error" in line]
    if errors:
        raise AgentError("; ".join(errors))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"rank": 0}', "missing"),
        ('{"rank": 0, "n_ranks": 1, "host": "h", "site": "s", "ip": "i", "rendezvous_ip": "i", '
         '"rendezvous_port": 1, "colour": "red"}', "unknown config keys: colour"),
        ("not json", "Expecting value"),
    ],
)
def test_bad_config(text, message):
    with pytest.raises((AgentFailure, TypeError, ValueError), match=message):
        AgentConfig.from_json(text)


def test_agent_cli_rejects_bad_config():
    proc = subprocess.run(python_argv("corridor.agent", "train", "--config", "{}"), capture_output=True, text=True,
                          env=package_env(), timeout=30, check=False)
    assert proc.returncode == 2
    assert "bad --config" in proc.stderr


def test_time_scale_multiplies_compute_and_divides_records():
    hosts = ["x", "y"]
    params = validate({"pattern": "allreduce", "steps": 3, "compute_time": "30ms", "grad_size": "1KB"}, where="t")
    recs = run_training(LocalNetwork({"x": "a", "y": "a"}, time_scale=3.0), params, hosts=hosts, seed=1,
                        timeout_s=30)
    assert {r["time_scale"] for r in recs} == {3.0}
    # the sleep is 90 ms of wall time, recorded as 30 ms
    assert all(r["compute_time_s"] == pytest.approx(0.03) for r in recs)
    assert all(0.03 <= r["step_time_s"] < 0.2 for r in recs)
