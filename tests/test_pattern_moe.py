"""The expert-parallel (mixture-of-experts) pattern: its all-to-all schedule, its model, its agents."""

from __future__ import annotations

import dataclasses

import pytest

from corridor.agent.collectives import bytes_sent, schedule
from corridor.emulation.api import LocalNetwork
from corridor.links.fidelity import HostStalls
from corridor.planning.planner import build_plan
from corridor.spec.topospec import load_topology
from corridor.workloads.training.model import TcpAssumptions, collective_time, training_step_time
from corridor.workloads.training.patterns import PATTERNS as PATTERN_OBJECTS
from corridor.workloads.training.run import PATTERNS, path_fn_for, run, validate

SITES = {"rem-gpu1": "remote", "rem-gpu2": "remote", "cty-gpu1": "city", "cty-gpu2": "city"}
HOSTS = list(SITES)


def test_the_pattern_is_registered_once_for_agents_and_model() -> None:
    assert "moe-alltoall" in PATTERNS and "moe-alltoall" in PATTERN_OBJECTS
    assert PATTERNS["moe-alltoall"] == PATTERN_OBJECTS["moe-alltoall"].description


def test_all_to_all_sends_each_rank_its_share_of_every_other_rank() -> None:
    sites = ["a", "a", "b", "b"]
    steps = schedule("all_to_all", 4_000_000, sites)
    assert len(steps) == 3  # n - 1 pairwise exchanges
    pairs = {(f.src, f.dst) for st in steps for f in st.flows}
    assert pairs == {(i, j) for i in range(4) for j in range(4) if i != j}
    # each rank sends its 1/4 share to 3 others, 2 of them across the corridor
    assert bytes_sent(steps, sites) == (4 * 3 * 1_000_000, 4 * 2 * 1_000_000)


def test_model_step_is_compute_plus_four_all_to_alls_per_layer_plus_the_dense_all_reduce() -> None:
    plan = build_plan(load_topology("two-site"))
    sites = ["remote", "remote", "city", "city"]
    params = validate({"pattern": "moe-alltoall", "compute_time": "100ms", "layers": 2, "activation_size": "2MB",
                       "grad_size": "4MB"}, where="t")
    tcp = TcpAssumptions(cc="bbr")
    out = training_step_time(params, sites, path_fn_for(plan), tcp=tcp)
    a2a = collective_time("all_to_all", 2_000_000, sites, path_fn_for(plan), tcp=dataclasses.replace(tcp, warm=True))
    assert out["alltoalls_per_step"] == 8
    assert out["alltoall_s"] == pytest.approx(a2a.time_s)
    assert out["step_time_s"] > 0.1 + 8 * a2a.time_s  # plus the dense all-reduce
    # every all-to-all crosses the 50 ms corridor at least once
    assert a2a.time_s > 0.025
    local = training_step_time(params, ["local"] * 4, path_fn_for(build_plan(load_topology("local"))), tcp=tcp)
    assert local["step_time_s"] < out["step_time_s"]


def test_agents_run_the_pattern_and_block_compute_on_the_exchanges() -> None:
    params = validate({"pattern": "moe-alltoall", "steps": 3, "compute_time": "20ms", "layers": 2,
                       "activation_size": "256KB", "grad_size": "256KB"}, where="t")
    recs = [r for r in run(LocalNetwork(SITES), params, hosts=HOSTS, seed=3, timeout_s=60)
            if r["kind"] == "train_step"]
    assert len(recs) == 3 * 4
    assert all(r["pattern"] == "moe-alltoall" for r in recs)
    assert all(r["exposed_comm_s"] > 0 and r["comm_time_s"] >= r["exposed_comm_s"] * 0.5 for r in recs)
    # each rank sends 8 all-to-alls a step, each 1/4 of 256 KB to its two peers across the corridor,
    # plus (for the ranks at the ring's site boundary) their share of the dense all-reduce
    per_rank_step = [r["wan_bytes"] for r in recs]
    assert min(per_rank_step) == 8 * 2 * (256_000 // 4)
    assert max(per_rank_step) > min(per_rank_step)


@pytest.mark.corridor_root
def test_expert_parallel_across_two_site_is_bounded_by_its_model() -> None:
    """Four ranks, two per site, 200 Mbit/s and 25 ms one way: the median step against the model's."""
    from corridor.emulation.network import CorridorNetwork
    from corridor.spec.topospec import override_links
    from corridor.stats import median

    plan = build_plan(override_links(load_topology("two-site"), rate="200Mbit", delay="25ms"))
    params = validate({"pattern": "moe-alltoall", "steps": 6, "compute_time": "50ms", "layers": 2,
                       "activation_size": "256KB", "grad_size": "1MB", "cc": "bbr"}, where="t")
    hosts = ["rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2"]
    model = training_step_time(params, [plan.host(h).site for h in hosts], path_fn_for(plan),
                               tcp=TcpAssumptions(cc="bbr"))["step_time_s"]
    # Known gap, documented in docs/model.md: the measured step runs 30-45 % over the model here (1,201-1,216 ms
    # against 855 ms); the model's walk of the pairwise exchange is a lower bound, not yet an estimate.
    # Four ranks and the delay line share this machine's cores: the share of the run the host did not run
    # them at all (1 ms sleeps in a child process) lengthens every step, so it comes off before the bound, and
    # a run outside it is measured once more (a loaded CI machine read 1,378 ms once).
    tries = []
    for _attempt in range(2):
        with HostStalls() as host, CorridorNetwork(plan, backend="userspace") as net:
            recs = run(net, params, hosts=hosts, seed=5, timeout_s=120)
        by_step: dict[int, float] = {}
        for r in recs:
            if r["kind"] == "train_step" and r["step"] > 0:
                by_step[r["step"]] = max(by_step.get(r["step"], 0.0), r["step_time_s"])
        measured = median(list(by_step.values()))
        stalled = host.summary()["stalled_fraction"]
        tries.append((round(measured, 3), round(stalled, 3)))
        print(f"moe-alltoall two-site: median step {measured * 1e3:.0f} ms (host stalled {stalled:.1%} of the run), "
              f"model {model * 1e3:.0f} ms")
        # eight blocking all-to-alls of at least one 50 ms round trip each: far beyond the 50 ms of compute
        assert measured > 0.05 + 8 * 0.05
        if 0.9 * model <= measured * (1 - stalled) <= 1.6 * model:
            break
    assert 0.9 * model <= measured * (1 - stalled) <= 1.6 * model, (tries, model)
