"""Experiment files: loading, validation messages, sweep and point expansion, host selection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_experiment_fakes import FAKE_EXPERIMENT, make_plan, use_fakes, write_experiment  # noqa: F401

from corridor.errors import SpecError
from corridor.planning.points import expand_points, hosts_for, link_overrides
from corridor.spec import experiment
from corridor.spec.experiment import (
    DOES_NOT_TOLERATE,
    MARGINAL,
    TOLERATES,
    InferenceSlo,
    TrainingSlo,
    load_experiment,
    parse_experiment,
)


def test_quickstart_loads_with_the_real_workload_modules() -> None:
    exp = load_experiment(None)
    assert exp.name == "quickstart"
    types = {w.type for w in exp.workloads}
    assert {"allreduce", "diloco", "pipeline", "chat", "agentic", "disagg"} <= types
    assert exp.placement("local").topology == "local"
    assert [t.victim for t in exp.tenants] == ["chat"]
    # quickstart's budget: every workload once per placement it names plus the local baseline, plus the tenants
    assert len(expand_points(exp)) == 14


def test_every_example_experiment_loads() -> None:
    names = experiment.list_experiments()
    assert "quickstart" in names and len(names) >= 2
    for name in names:
        assert load_experiment(name).name


@pytest.mark.usefixtures("use_fakes")
def test_sweep_points_are_the_cartesian_product(tmp_path: Path) -> None:
    text = FAKE_EXPERIMENT.replace("  distance: [1000km, 3268km]",
                                   "  distance: [1000km, 3268km]\n  rate: [1Gbit, 100Mbit]\n  loss: [0, 0.1%]")
    exp = load_experiment(write_experiment(tmp_path, text))
    points = exp.sweep.points()
    assert len(points) == 8
    assert {p.rate_mbps for p in points} == {1000.0, 100.0}
    assert {p.loss for p in points} == {0.0, 0.001}
    kwargs = link_overrides(exp, points[-1])
    assert kwargs["delay"] == "16.0132ms" and kwargs["rate"] == "100Mbit" and kwargs["loss"] == 0.001


@pytest.mark.usefixtures("use_fakes")
def test_local_baseline_runs_once_whatever_the_wan_sweep(tmp_path: Path) -> None:
    exp = load_experiment(write_experiment(tmp_path))
    points = expand_points(exp)
    local = [p for p in points if p.placement == "local"]
    remote = [p for p in points if p.placement != "local"]
    # 3 workloads + 1 tenant group; local once, remote per distance
    assert len(local) == 4 and len(remote) == 8
    assert all(p.sweep.distance_km is None for p in local)
    assert len({p.point_id for p in points}) == len(points)
    # the same seed for a workload in every placement: a paired comparison
    assert len({p.seed for p in points if p.group == "dp"}) == 1


@pytest.mark.usefixtures("use_fakes")
def test_hosts_follow_the_placement(tmp_path: Path) -> None:
    exp = load_experiment(write_experiment(tmp_path))
    remote = exp.placement("urumqi-serves-shanghai")
    plan = make_plan()
    assert hosts_for(plan, remote, exp.workload("dp")) == ["rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2"]
    chat = hosts_for(plan, remote, exp.workload("chat"))
    assert chat == {"servers": ["rem-gpu1", "rem-gpu2"], "clients": ["cty-cli1", "cty-cli2"]}
    local = hosts_for(make_plan(local=True), exp.placement("local"), exp.workload("chat"), role_names=["prefill"])
    assert set(local["prefill"]).isdisjoint(local["servers"]) or len(local["servers"]) == 4
    assert len(local["prefill"]) == len(local["servers"])


@pytest.mark.usefixtures("use_fakes")
def test_max_ranks_balances_across_sites(tmp_path: Path) -> None:
    text = FAKE_EXPERIMENT.replace("    params: {steps: 4, compute_s: 0.1}", "    params: {steps: 4}\n    max_ranks: 2")
    exp = load_experiment(write_experiment(tmp_path, text))
    assert hosts_for(make_plan(), exp.placement("urumqi-serves-shanghai"), exp.workload("dp")) == [
        "rem-gpu1", "cty-gpu1"]


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ("topology: two-site", "topology: two-site\ncolour: blue", "colour", "unknown key"),
        ("topology: two-site", "", "topology", "is required"),
        ("  - name: local\n", "", "placements", "local"),
        ("    servers: [remote]\n", "", "placements[1].servers", "is required"),
        ("    type: fake-dp", "    type: fake-dpp", "workloads[0].type", "fake-chat, fake-diloco, fake-dp"),
        ("    params: {steps: 4, compute_s: 0.1}", "    params: {stepz: 4}", "stepz", "unknown parameter"),
        ("    slo: {max_slowdown: 1.1, marginal_slowdown: 1.5}", "    slo: {max_slowdown: 0.5}",
         "workloads[0].slo.max_slowdown", "from 1 to 100"),
        ("    slo: {ttft: 250ms, tpot: 100ms}", "    slo: {ttft: 250}", "workloads[2].slo.ttft", "no unit"),
        ("    slo: {ttft: 250ms, tpot: 100ms}", "    slo: {ttft: 250ms, tbt: 1ms}", "workloads[2].slo.tbt",
         "unknown key"),
        ("    workloads: [chat, dp]", "    workloads: [chat, dq]", "tenants[0].workloads[1]", "no workload named"),
        ("    workloads: [chat, dp]", "    workloads: [chat]", "tenants[0].workloads", "at least two"),
        ("    victim: chat", "    victim: diloco", "tenants[0].victim", "must be one of"),
        ("  distance: [1000km, 3268km]", "  distance: [1000]", "sweep.distance[0]", "no unit"),
        ("  distance: [1000km, 3268km]", "  distance: [1000km, 1000km]", "sweep.distance", "twice"),
        ("  distance: [1000km, 3268km]", "  distance: [1000km]\n  delay_scale: [2]", "sweep", "not both"),
        ("  distance: [1000km, 3268km]", "  rate: [10GB/s]", "sweep.rate[0]", "bytes per second"),
        ("  distance: [1000km, 3268km]", "  loss: [0.9]", "sweep.loss[0]", "from 0 to 0.5"),
        ("  distance: [1000km, 3268km]", "  cc: [vegas]", "sweep.cc[0]", "bbr, cubic, reno"),
        ("  distance: [1000km, 3268km]", "  backend: [docker]", "sweep.backend[0]", "auto, netem, userspace"),
        ("  distance: [1000km, 3268km]", "  time_scale: [0]", "sweep.time_scale[0]", "from 0.01"),
        ("  distance: [1000km, 3268km]", "  speed: [1]", "sweep.speed", "unknown key"),
        ("repetitions: 1", "repetitions: 0", "repetitions", "from 1 to 1000"),
        ("repetitions: 1", "repetitions: two", "repetitions", "whole number"),
        ("seed: 7", "seed: -1", "seed", "whole number"),
        ("  - name: urumqi-serves-shanghai", "  - name: local", "placements[1].name", "used twice"),
    ],
)
@pytest.mark.usefixtures("use_fakes")
def test_bad_experiments_name_file_key_and_allowed(tmp_path: Path, old: str, new: str,
                                                   key: str, words: str) -> None:
    assert old in FAKE_EXPERIMENT
    path = write_experiment(tmp_path, FAKE_EXPERIMENT.replace(old, new, 1))
    with pytest.raises(SpecError) as info:
        load_experiment(path)
    assert info.value.path is not None and "fake.yaml" in info.value.path
    assert key in str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize("document", [None, [], "text", 3])
def test_experiment_must_be_a_mapping(document: Any) -> None:
    with pytest.raises(SpecError, match="mapping"):
        parse_experiment(document, path="x.yaml")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no experiment file"):
        load_experiment(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_experiment(str(bad))


@pytest.mark.parametrize(("slowdown", "verdict"), [(1.0, TOLERATES), (1.1, TOLERATES), (1.2, MARGINAL),
                                                   (1.5, MARGINAL), (1.51, DOES_NOT_TOLERATE)])
def test_training_thresholds(slowdown: float, verdict: str) -> None:
    assert TrainingSlo(1.1, 1.5).judge(slowdown) == verdict


@pytest.mark.parametrize(
    ("ttft_ms", "tpot_ms", "goodput", "verdict"),
    [(100, 20, 1.0, TOLERATES), (210, 20, 1.0, MARGINAL), (100, 90, 1.0, MARGINAL), (251, 20, 1.0, DOES_NOT_TOLERATE),
     (100, 101, 1.0, DOES_NOT_TOLERATE), (100, 20, 0.5, DOES_NOT_TOLERATE), (100, None, None, TOLERATES)],
)
def test_inference_thresholds(ttft_ms: float, tpot_ms: float | None, goodput: float | None, verdict: str) -> None:
    assert InferenceSlo(ttft_ms=250, tpot_ms=100, goodput=0.9, marginal_fraction=0.8).judge(
        ttft_ms, tpot_ms, goodput) == verdict


def test_predict_answers_at_a_scale_no_machine_emulates() -> None:
    from corridor.analytic.prediction import predict_experiment
    from corridor.workloads.runner import run_experiment

    exp = load_experiment("hami-115k")
    assert exp.model_only
    rows = predict_experiment(exp)
    assert {r["workload"] for r in rows} == {"diloco-70b", "chat-70b", "agentic-70b", "disagg-70b"}
    assert all(r["model_only"] and "error" not in r for r in rows)
    assert all(r["corridor"]["min_rate_mbps"] == 3.2e6 for r in rows)  # 8 x 400G
    chat = next(r for r in rows if r["workload"] == "chat-70b" and r["placement"] == "hami-serves-shanghai")
    # the model's TTFT is the local one plus one round trip of the Hami-Shanghai path
    assert chat["model_ttft_s"] - chat["local_model_ttft_s"] == pytest.approx(
        (chat["corridor"]["max_rtt_ms"] - 0.02) / 1e3, rel=0.05)
    with pytest.raises(SpecError, match="corridor predict"):
        run_experiment(exp, "/nonexistent")


def test_swept_congestion_control_is_set_in_every_host_namespace() -> None:
    import subprocess

    from corridor.spec.experiment import SweepPoint
    from corridor.workloads.runner import _tune

    class Hosts:
        backend = "userspace"

        def __init__(self) -> None:
            self.calls: list[tuple[str, list[str]]] = []

        def hosts(self) -> list[str]:
            return ["rem-gpu1", "cty-cli1"]

        def run(self, host: str, argv: list[str], *, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
            self.calls.append((host, argv))
            return subprocess.CompletedProcess(argv, 0, "", "")

    net = Hosts()
    assert _tune(net, SweepPoint(cc="reno"))["cc"] == "reno"
    argv = ["sysctl", "-w", "net.ipv4.tcp_congestion_control=reno"]
    assert net.calls == [(h, argv) for h in ("rem-gpu1", "cty-cli1")]
    assert _tune(net, SweepPoint()) == {}
    net.backend = "local"
    with pytest.raises(SpecError, match="loopback"):
        _tune(net, SweepPoint(cc="reno"))
