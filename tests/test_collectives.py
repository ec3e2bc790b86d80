"""Collective schedules: each algorithm moves the bytes its textbook form says, between the right ranks."""

from __future__ import annotations

import pytest

from corridor.agent.collectives import (
    ALGORITHMS,
    ScheduleError,
    busbw_factor,
    bytes_sent,
    ring_order,
    schedule,
    site_groups,
)

TWO_SITES = ["a", "a", "b", "b"]
THREE_SITES = ["a", "a", "b", "b", "c", "c"]


def per_rank(steps, n):
    sent = [0] * n
    recv = [0] * n
    for step in steps:
        for f in step.flows:
            sent[f.src] += f.size_bytes * step.repeat
            recv[f.dst] += f.size_bytes * step.repeat
    return sent, recv


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_ring_moves_2_n_minus_1_over_n(n):
    size = 1200 * n
    steps = schedule("ring", size, ["s"] * n)
    sent, recv = per_rank(steps, n)
    assert sent == recv == [2 * (n - 1) * size // n] * n
    assert sum(s.repeat for s in steps) == 2 * (n - 1)


def test_ring_visits_sites_in_blocks():
    assert ring_order(["a", "b", "a", "b"]) == [0, 2, 1, 3]
    assert site_groups(["x", "y", "x"]) == [[0, 2], [1]]


def test_ring_crosses_each_site_boundary_once_per_step():
    steps = schedule("ring", 4000, ["a", "b", "a", "b"])
    crossing = [f for f in steps[0].flows if ["a", "b", "a", "b"][f.src] != ["a", "b", "a", "b"][f.dst]]
    assert len(crossing) == 2


@pytest.mark.parametrize("sites", [TWO_SITES, THREE_SITES, ["a", "a", "a", "b"]])
def test_hierarchical_sends_fewer_wan_bytes_than_ring(sites):
    size = 12_000_000
    _, wan_ring = bytes_sent(schedule("ring", size, sites), sites)
    _, wan_hier = bytes_sent(schedule("hierarchical", size, sites), sites)
    m = len(set(sites))
    assert wan_hier == pytest.approx(2 * (m - 1) * size, rel=0.01)
    assert wan_hier < wan_ring


def test_hierarchical_equals_ring_with_one_rank_per_site():
    sites = ["a", "b", "c"]
    assert bytes_sent(schedule("hierarchical", 6000, sites), sites) == bytes_sent(schedule("ring", 6000, sites), sites)


def test_hierarchical_every_rank_gets_the_whole_result():
    sites = THREE_SITES
    sent, recv = per_rank(schedule("hierarchical", 6000, sites), len(sites))
    assert all(r > 0 for r in recv)
    assert sum(sent) == sum(recv)


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_halving_doubling_volume_and_steps(n):
    size = 1024 * n
    steps = schedule("halving_doubling", size, ["s"] * n)
    sent, recv = per_rank(steps, n)
    assert sent == recv == [2 * (n - 1) * size // n] * n
    assert len(steps) == 2 * (n.bit_length() - 1)


def test_parameter_server_push_then_pull():
    steps = schedule("parameter_server", 1000, ["a", "b", "b"])
    sent, recv = per_rank(steps, 3)
    assert recv[0] == 2000 and sent[0] == 2000
    assert sent[1:] == [1000, 1000]


@pytest.mark.parametrize("algorithm", ["all_gather", "reduce_scatter"])
def test_gather_and_scatter_are_half_an_allreduce(algorithm):
    n, size = 4, 4000
    sent, _ = per_rank(schedule(algorithm, size, ["s"] * n), n)
    assert sent == [3000] * n


def test_flows_pair_up_within_each_step():
    for algorithm in ALGORITHMS:
        for step in schedule(algorithm, 8000, TWO_SITES):
            assert all(f.src != f.dst for f in step.flows)


@pytest.mark.parametrize(
    ("algorithm", "n", "factor"),
    [("ring", 4, 1.5), ("hierarchical", 8, 1.75), ("all_gather", 4, 0.75), ("reduce_scatter", 2, 0.5),
     ("parameter_server", 4, 1.0)],
)
def test_busbw_factors_follow_nccl_tests(algorithm, n, factor):
    assert busbw_factor(algorithm, n) == pytest.approx(factor)


@pytest.mark.parametrize(
    ("algorithm", "size", "sites", "message"),
    [
        ("halving_doubling", 100, ["a", "a", "b"], "power-of-two"),
        ("butterfly", 100, ["a", "b"], "unknown algorithm"),
        ("ring", -1, ["a", "b"], "size"),
        ("ring", 100, [], "at least one"),
    ],
)
def test_bad_schedules(algorithm, size, sites, message):
    with pytest.raises(ScheduleError, match=message):
        schedule(algorithm, size, sites)


def test_trivial_cases_move_nothing():
    assert schedule("ring", 1000, ["a"]) == []
    assert schedule("ring", 0, ["a", "b"]) == []
