"""The runner's precision loop (``corridor run --precision --max-repetitions --budget``), on the fake workloads.

Each round repeats the imprecise rows' points on their placement and on the local
baseline, interleaved; the loop stops when every row is precise, at the repetition
cap, or when the next round would not fit the time budget, and the run's summary
says which.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_experiment_fakes import fake_network_factory, fake_plan_builder, use_fakes, write_experiment  # noqa: F401

from corridor.results.rundir import read_run
from corridor.spec import experiment
from corridor.workloads.runner import Precision, run_experiment

pytestmark = pytest.mark.usefixtures("use_fakes")

ONE_WORKLOAD = """
name: precise
topology: two-site
placements:
  - name: local
  - name: urumqi-serves-shanghai
    servers: [remote]
    clients: [city]
    ranks: [remote, city]
workloads:
  - name: dp
    type: fake-dp
    params: {steps: 4, compute_s: 0.1}
    slo: {max_slowdown: 1.1, marginal_slowdown: 1.5}
repetitions: 1
seed: 7
"""


def _run(tmp_path: Path, precision: Precision) -> tuple[dict[str, Any], Counter[tuple[str, int]]]:
    exp = experiment.load_experiment(write_experiment(tmp_path, ONE_WORKLOAD))
    out = str(tmp_path / "run")
    run_experiment(exp, out, plan_builder=fake_plan_builder, network_factory=fake_network_factory,
                   precision=precision)
    run = read_run(out)
    assert run.summary is not None
    per = Counter((str(m["placement"]), int(m.get("repetition", 0))) for m in run.points.values())
    return run.summary, per


def test_an_imprecise_row_is_repeated_on_both_placements_up_to_the_cap(tmp_path: Path) -> None:
    # no interval of 4 steps is within 0.01 % of its value: every round repeats, until the cap
    summary, per = _run(tmp_path, Precision(target=0.0001, max_repetitions=3))
    assert per == {("local", 0): 1, ("urumqi-serves-shanghai", 0): 1, ("local", 1): 1,
                   ("urumqi-serves-shanghai", 1): 1, ("local", 2): 1, ("urumqi-serves-shanghai", 2): 1}
    assert summary["precision"]["rounds"] == 2
    assert summary["precision"]["stopped"] == "3 repetitions reached"
    assert summary["precision"]["imprecise"] == ["dp"]
    assert summary["points_repeated_for_precision"] == 4 and summary["status"] == "complete"


def test_a_precise_row_is_not_repeated(tmp_path: Path) -> None:
    summary, per = _run(tmp_path, Precision(target=10.0, max_repetitions=3))
    assert sum(per.values()) == 2
    assert summary["precision"]["rounds"] == 0
    assert summary["precision"]["stopped"] == "every compared statistic is within the target"


def test_no_round_starts_that_would_overrun_the_budget(tmp_path: Path) -> None:
    summary, per = _run(tmp_path, Precision(target=0.0001, max_repetitions=5, budget_s=0.5))
    assert sum(per.values()) == 2  # the planned points only: one more round costs more than what is left
    assert summary["precision"]["rounds"] == 0
    assert summary["precision"]["stopped"].startswith("time budget: no imprecise workload's next repetition fits")


def test_each_round_seeds_its_links_afresh_and_a_rerun_draws_the_same(tmp_path: Path) -> None:
    # A round's network took the links' one default seed, so a repeated lossy point lost the same packets at
    # the same places as its first repetition: the round narrowed its interval without sampling the loss.
    # A network's links now take the seed of the first point it runs (experiment seed, group and repetition).
    def link_seeds(out: str) -> dict[tuple[str, int], tuple[int, int]]:
        exp = experiment.load_experiment(write_experiment(tmp_path, ONE_WORKLOAD))
        run_experiment(exp, str(tmp_path / out), plan_builder=fake_plan_builder,
                       network_factory=fake_network_factory, precision=Precision(target=0.0001, max_repetitions=3))
        points = read_run(str(tmp_path / out)).points.values()
        return {(str(m["placement"]), int(m["repetition"])): (int(m["seed"]), int(m["network"]["link_seed"]))
                for m in points}

    seeds = link_seeds("first")
    remote = [seeds[("urumqi-serves-shanghai", rep)] for rep in range(3)]
    assert all(link == seed for seed, link in remote)
    assert len({link for _, link in remote}) == 3
    assert link_seeds("again") == seeds
