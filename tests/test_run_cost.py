"""corridor bench cost: generated networks, the growth verdict, the runner's overhead, and one real build (root)."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from corridor.cli import cli
from corridor.cli.bench_links import cost_report_lines
from corridor.errors import EmulationError
from corridor.workloads import registry, runcost, runnercost


@pytest.mark.parametrize(("hosts", "sites"), [(2, 2), (11, 2), (50, 4), (100, 7)])
def test_generated_network_has_the_asked_host_count(hosts: int, sites: int) -> None:
    plan = runcost.host_count_plan(hosts)
    assert sum(len(site.hosts) for site in plan.sites) == hosts
    assert len(plan.sites) == sites and len(plan.wan_links) == sites - 1
    assert max(len(site.hosts) for site in plan.sites) <= 16


@pytest.mark.parametrize("hosts", [1, 0, 16 * 16 + 1])
def test_host_counts_outside_the_generator_are_refused(hosts: int) -> None:
    with pytest.raises(EmulationError):
        runcost.host_count_plan(hosts)


def cost(hosts: int, total_s: float) -> runcost.BuildCost:
    return runcost.BuildCost(hosts=hosts, nodes=hosts + 5, build_s=total_s * 0.6, teardown_s=total_s * 0.4,
                             agent_ready_median_s=0.3, agent_ready_max_s=0.5, agents_wall_s=1.0)


@pytest.mark.parametrize(("totals", "linear", "exponents"), [
    ({10: 2.0, 50: 6.0, 100: 11.0}, True, [0.68, 0.87]),  # a fixed start-up cost: sub-linear
    ({10: 1.0, 50: 5.0, 100: 10.0}, True, [1.0, 1.0]),
    ({10: 1.0, 50: 12.0, 100: 40.0}, False, [1.54, 1.74]),  # quadratic-ish
    ({10: 2.0, 50: 3.0, 100: 9.0}, False, [0.25, 1.58]),  # cheap per host at 10, but 50 -> 100 is not linear
    ({10: 1.0}, True, []),
])
def test_growth_verdict(totals: dict[int, float], linear: bool, exponents: list[float]) -> None:
    ok, seen = runcost.growth([cost(h, t) for h, t in totals.items()])
    assert ok is linear
    assert seen == pytest.approx(exponents, abs=0.01)


def test_runner_overhead_runs_every_point_and_restores_the_registry() -> None:
    real = registry.KINDS["training"]
    result = runnercost.measure_runner(distances=2, repetitions=1)
    # local once, remote at each of the 2 distances
    assert result.points == 3
    assert result.wall_s > 0 and result.per_point_s == pytest.approx(result.wall_s / 3)
    assert registry.KINDS["training"] is real


def test_null_workload_refuses_unknown_parameters() -> None:
    from corridor.errors import SpecError

    with pytest.raises(SpecError):
        runnercost.validate({"pattern": "null-step", "bytes": 3}, where="workloads[0].params")


def test_cost_report_says_when_growth_is_not_linear() -> None:
    rows = [cost(10, 1.0).as_dict(), cost(100, 40.0).as_dict()]
    lines = cost_report_lines(rows, False, [1.6], {"per_point_s": 0.004, "points": 12, "wall_s": 0.05})
    assert "FASTER than linearly" in lines[-2] and "10->100: hosts^1.60" in lines[-2]
    assert lines[-1].startswith("runner overhead: 4.0 ms per point")


@pytest.mark.parametrize("args", [["--hosts", "1"], ["--hosts", "300"], ["--hosts", "a,b"]])
def test_cost_cli_refuses_bad_host_counts(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["bench", "cost", *args])
    assert result.exit_code == 2, result.output


@pytest.mark.corridor_root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_build_of_a_small_network_starts_an_agent_on_every_host() -> None:
    result = runcost.measure_build(4)
    assert result.hosts == 4 and result.nodes >= 4
    assert 0 < result.agent_ready_median_s <= result.agent_ready_max_s <= result.agents_wall_s
    assert result.build_s > 0 and result.teardown_s > 0


def test_cost_json_without_networks_is_a_versioned_document() -> None:
    import json

    result = CliRunner().invoke(cli, ["bench", "cost", "--hosts", "", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert next(iter(doc)) == "format_version"
    assert doc["builds"] == [] and doc["runner"]["points"] == 12 and doc["runner"]["per_point_s"] > 0
