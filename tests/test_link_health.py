"""Link health of a point (corridor/links/health.py) and how the runner acts on it, without root.

The health function is fed probes and ``link_sample`` records shaped like the
runner's; the runner tests drive :func:`corridor.workloads.runner.run_experiment` over a
fake network whose link can die, go stale or drop frames on cue.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from test_experiment_fakes import CALLS, FakeNet, fake_plan_builder, use_fakes, write_experiment  # noqa: F401

from corridor.errors import EmulationError
from corridor.links import health
from corridor.links.health import LinkProbe
from corridor.spec import experiment

# The runner tests below run fake workload kinds (registered by test_experiment_fakes' fixture).
pytestmark = pytest.mark.usefixtures("use_fakes")


def stats(t: float, *, pid: int = 4242, state: str = "running", drops_tx: int = 0, malformed: int = 0,
          drops_queue: int = 0, drops_loss: int = 0) -> dict[str, Any]:
    """Flattened delay-line statistics, as the runner records them."""
    out: dict[str, Any] = {"state": state, "pid": pid, "time_unix_s": 1.7e9 + t, "time_monotonic_s": t,
                           "exit_reason": None if state == "running" else "signal SIGTERM"}
    for direction in health.DIRECTIONS:
        out.update({f"{direction}.drops_tx": drops_tx, f"{direction}.malformed": malformed,
                    f"{direction}.drops_queue": drops_queue, f"{direction}.drops_loss": drops_loss,
                    f"{direction}.bytes": 1000})
    return out


def probe(at: float, data: Mapping[str, Any], *, alive: bool | None = True, error: str | None = None,
          link: str = "remote-city") -> LinkProbe:
    return LinkProbe(link=link, at_monotonic_s=at, alive=alive, stats=data if error is None else {}, error=error,
                     pid=4242)


def samples(times: list[float], *, age_s: float = 0.1, link: str = "remote-city") -> list[dict[str, Any]]:
    return [{"kind": "link_sample", "link": link, "t_s": t, "stats_age_s": age_s, **stats(100 + t)} for t in times]


def judge(before: LinkProbe, after: LinkProbe, recorded: list[dict[str, Any]] | None = None,
          **kw: Any) -> health.LinkHealth:
    result = health.assess(recorded if recorded is not None else samples([0.5, 1.0]), {before.link: before},
                           {after.link: after}, **kw)
    return result[before.link]


def test_a_link_alive_fresh_and_clean_is_healthy() -> None:
    verdict = judge(probe(100.05, stats(100.0, drops_queue=50, drops_loss=7)),
                    probe(102.05, stats(102.0, drops_queue=900, drops_loss=80)))
    assert verdict.ok and not verdict.fatal
    assert (verdict.alive, verdict.fresh, verdict.readable, verdict.unexpected_drops) == (True, True, True, 0)
    assert health.summary({"remote-city": verdict}) == {"ok": True, "links": {"remote-city": verdict.as_dict()}}


def test_a_dead_process_is_fatal_and_named() -> None:
    verdict = judge(probe(100.05, stats(100.0)), probe(102.05, stats(100.8), alive=False))
    assert verdict.fatal and verdict.alive is False
    assert "not running" in " ".join(verdict.problems)
    message = health.failure_message({"remote-city": verdict})
    assert message is not None and "WAN link remote-city" in message and "pid 4242" in message


def test_stats_that_did_not_advance_are_fatal_even_when_the_process_looks_alive() -> None:
    verdict = judge(probe(100.05, stats(100.0)), probe(101.0, stats(100.0)))
    assert verdict.fatal and verdict.fresh is False
    assert "did not advance" in " ".join(verdict.problems)


def test_stats_older_than_the_limit_when_read_are_fatal() -> None:
    verdict = judge(probe(100.05, stats(100.0)), probe(105.0, stats(101.0)), max_age_s=2.0)
    assert verdict.fatal and verdict.fresh is False
    assert "4.0 s old" in " ".join(verdict.problems)


def test_a_delay_line_that_says_it_stopped_is_dead() -> None:
    verdict = judge(probe(100.05, stats(100.0)), probe(101.0, stats(100.9, state="stopped"), alive=None))
    assert verdict.fatal and verdict.alive is False
    assert "stopped (signal SIGTERM)" in " ".join(verdict.problems)


def test_unreadable_stats_are_fatal() -> None:
    verdict = judge(probe(100.05, stats(100.0)), probe(101.0, {}, error="delay-line stats do not exist"))
    assert verdict.fatal and verdict.readable is False
    sample_error = [{"kind": "link_sample", "link": "remote-city", "t_s": 0.5, "error": "damaged"}]
    during = judge(probe(100.05, stats(100.0)), probe(101.0, stats(100.9)), sample_error)
    assert during.fatal and during.readable is False and "damaged" in " ".join(during.problems)


def test_a_restarted_process_is_fatal() -> None:
    verdict = judge(probe(100.05, stats(100.0, drops_tx=5)), probe(101.0, stats(100.9, pid=99, drops_tx=0)))
    assert verdict.fatal
    text = " ".join(verdict.problems)
    assert "restarted" in text and "4242 -> 99" in text and "went backwards" in text


def test_unexpected_drops_mark_the_point_but_do_not_stop_the_run() -> None:
    verdict = judge(probe(100.05, stats(100.0, drops_tx=1, malformed=2)),
                    probe(101.0, stats(100.9, drops_tx=4, malformed=3, drops_queue=10_000)))
    assert not verdict.ok and not verdict.fatal
    assert verdict.unexpected_drops == 2 * (3 + 1)
    assert "a_to_b.drops_tx +3" in verdict.problems[0] and "b_to_a.malformed +1" in verdict.problems[0]
    allowed = judge(probe(100.05, stats(100.0)), probe(101.0, stats(100.9, drops_tx=2)), max_unexpected_drops=4)
    assert allowed.ok and allowed.unexpected_drops == 4
    assert health.summary({"remote-city": verdict})["ok"] is False


def test_a_stall_the_link_recovered_from_is_recorded_not_fatal() -> None:
    recorded = samples([0.5, 1.0]) + [{**samples([1.5])[0], "stats_age_s": 3.5}]
    verdict = judge(probe(100.05, stats(100.0)), probe(102.0, stats(101.9)), recorded)
    assert not verdict.ok and not verdict.fatal and verdict.fresh is False
    assert "3.5 s without an update" in verdict.problems[0]


def test_a_backend_without_a_process_or_clock_is_judged_on_what_it_shows() -> None:
    tc = {"tc": "[]"}
    verdict = judge(probe(100.0, tc, alive=None), probe(101.0, tc, alive=None), [])
    assert verdict.ok
    assert (verdict.alive, verdict.fresh, verdict.unexpected_drops) == (None, None, None)


def test_probe_problems_before_a_point() -> None:
    assert health.probe_problems(probe(100.1, stats(100.0))) == []
    assert "not running" in health.probe_problems(probe(100.1, stats(100.0), alive=False))[0]
    assert "old" in health.probe_problems(probe(110.0, stats(100.0)))[0]


def test_each_link_is_judged_on_its_own_samples() -> None:
    good = {"a": probe(100.05, stats(100.0), link="a"), "b": probe(100.05, stats(100.0), link="b")}
    after = {"a": probe(101.0, stats(100.9), link="a"), "b": probe(101.0, stats(100.9), alive=False, link="b")}
    recorded = samples([0.5], link="a") + [{"kind": "link_sample", "link": "b", "t_s": 0.5, "error": "gone"}]
    result = health.assess(recorded, good, after)
    assert result["a"].ok and result["b"].fatal
    message = health.failure_message(result)
    assert message is not None and "WAN link b" in message and "WAN link a" not in message


# -- the runner -------------------------------------------------------------------------------------------

ONE_WORKLOAD = """
name: supervised
topology: two-site
placements:
  - name: local
  - name: remote
    servers: [remote]
    clients: [city]
    ranks: [remote, city]
workloads:
  - name: dp
    type: fake-dp
    params: {steps: 3, compute_s: 0.01}
sweep:
  distance: [1000km, 2000km]
repetitions: 1
seed: 3
"""


class SupervisedNet(FakeNet):
    """A fake network whose WAN link is a delay line that can die, stall or drop frames."""

    script: dict[str, Any] = {}

    def __init__(self, plan: Any, *, backend: str, time_scale: float, seed: int = 1) -> None:
        super().__init__(plan, backend=backend, time_scale=time_scale, seed=seed)
        self.alive = True
        self.stalled_at: float | None = None
        self.drops_tx = 0

    def link_alive(self, link_name: str) -> bool | None:
        self.plan.link(link_name)
        return self.alive

    def link_pid(self, link_name: str) -> int | None:
        return 4242

    def link_stats(self, link_name: str) -> dict[str, Any]:
        import time

        base = super().link_stats(link_name)
        now = time.monotonic()
        stamp = self.stalled_at if self.stalled_at is not None else now
        return {"state": "running", "pid": 4242, "time_unix_s": 1.7e9, "time_monotonic_s": stamp,
                **{d: {**base[d], "drops_tx": self.drops_tx, "malformed": 0} for d in health.DIRECTIONS}}


def _factory(calls: list[SupervisedNet]) -> Any:
    def make(plan: Any, *, backend: str, time_scale: float, seed: int) -> SupervisedNet:
        net = SupervisedNet(plan, backend=backend, time_scale=time_scale, seed=seed)
        calls.append(net)
        return net
    return make


def _markers(path: Path) -> list[dict[str, Any]]:
    lines = (path / "records.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "point"]


def _run(tmp_path: Path, calls: list[SupervisedNet], *, resume: bool = False) -> Path:
    from corridor.workloads.runner import run_experiment

    exp = experiment.load_experiment(write_experiment(tmp_path, ONE_WORKLOAD, "supervised.yaml"))
    out = tmp_path / "run"
    run_experiment(exp, str(out), resume=resume, plan_builder=fake_plan_builder, network_factory=_factory(calls))
    return out


def test_every_finished_point_records_the_health_of_its_links(tmp_path: Path) -> None:
    out = _run(tmp_path, [])
    markers = _markers(out)
    assert len(markers) == 3
    for marker in markers:
        link_health = marker["link_health"]
        assert link_health["ok"] is True
        if marker["placement"] == "local":
            assert link_health["links"] == {}
        else:
            link = link_health["links"]["remote-city"]
            assert (link["alive"], link["fresh"], link["unexpected_drops"]) == (True, True, 0)


def _kill_on_remote_call(state: dict[str, Any], calls: list[SupervisedNet], call: int, action: str) -> None:
    """Make the fake training's ``call``-th run on a WAN network break its link while it runs."""
    import sys

    module = sys.modules["corridor_fake_training"]
    real = module.run
    seen = {"n": 0}

    def run(net: Any, params: Any, **kw: Any) -> list[dict[str, Any]]:
        records = real(net, params, **kw)
        if net.plan.wan_links:
            seen["n"] += 1
            if seen["n"] == call:
                target = calls[-1]
                if action == "kill":
                    target.alive = False
                    target.stalled_at = target.stalled_at or 0.0
                elif action == "stall":
                    import time

                    target.stalled_at = time.monotonic() - 10.0
                elif action == "drop":
                    target.drops_tx += 3
        return list(records)

    state["restore"] = (module, real)
    module.run = run


@pytest.fixture
def restore_fake_run() -> Any:
    state: dict[str, Any] = {}
    yield state
    if "restore" in state:
        module, real = state.pop("restore")
        module.run = real


@pytest.mark.parametrize("action, reason", [("kill", "not running"), ("stall", "old")])
def test_a_link_that_fails_mid_point_stops_the_run_and_resume_retries_the_point(
        restore_fake_run: dict[str, Any], tmp_path: Path, action: str, reason: str) -> None:
    calls: list[SupervisedNet] = []
    _kill_on_remote_call(restore_fake_run, calls, 1, action)
    with pytest.raises(EmulationError) as failure:
        _run(tmp_path, calls)
    message = str(failure.value)
    assert "WAN link remote-city" in message and reason in message and "--resume" in message
    out = tmp_path / "run"
    markers = _markers(out)
    assert [m["placement"] for m in markers] == ["local"], "the point on the failed link must not be finished"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] != "complete"
    assert not any(r.get("placement") == "remote" for r in map(json.loads, (out / "records.jsonl").read_text()
                                                              .splitlines()) if r.get("kind") != "run_session")
    module, real = restore_fake_run.pop("restore")
    module.run = real
    _run(tmp_path, [], resume=True)
    markers = _markers(out)
    assert sorted(m["placement"] for m in markers) == ["local", "remote", "remote"]
    assert all(m["link_health"]["ok"] for m in markers)
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_a_link_already_dead_before_a_point_fails_without_running_it(tmp_path: Path) -> None:
    calls: list[SupervisedNet] = []

    def dead(plan: Any, *, backend: str, time_scale: float, seed: int) -> SupervisedNet:
        net = SupervisedNet(plan, backend=backend, time_scale=time_scale, seed=seed)
        net.alive = False
        calls.append(net)
        return net

    from corridor.workloads.runner import run_experiment

    exp = experiment.load_experiment(write_experiment(tmp_path, ONE_WORKLOAD, "supervised.yaml"))
    runs_before = CALLS["count"]
    with pytest.raises(EmulationError, match="WAN link remote-city.*before point"):
        run_experiment(exp, str(tmp_path / "run"), plan_builder=fake_plan_builder, network_factory=dead)
    assert CALLS["count"] == runs_before + 1  # only the local point ran


def test_unexpected_drops_are_recorded_and_the_run_goes_on(
        restore_fake_run: dict[str, Any], tmp_path: Path) -> None:
    calls: list[SupervisedNet] = []
    _kill_on_remote_call(restore_fake_run, calls, 1, "drop")
    out = _run(tmp_path, calls)
    markers = _markers(out)
    assert len(markers) == 3
    bad = [m for m in markers if not m["link_health"]["ok"]]
    assert len(bad) == 1
    link = bad[0]["link_health"]["links"]["remote-city"]
    assert link["unexpected_drops"] == 6 and not link["fatal"]
    assert "a_to_b.drops_tx +3" in link["problems"][0]
