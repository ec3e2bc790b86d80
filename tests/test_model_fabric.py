"""Site fabrics: explicit, shown, on every path; and no built-in experiment's remote placement beats its baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from corridor.analytic.prediction import predict_experiment
from corridor.errors import SpecError
from corridor.planning.plan import LAN_RATE_MBPS
from corridor.planning.planner import build_plan
from corridor.spec.experiment import load_experiment
from corridor.spec.topospec import loads_topology

EXPERIMENTS = sorted((Path(__file__).resolve().parent.parent / "experiments").glob("*.yaml"))

TWO_SITES = """
name: t
{fabric}
sites:
  a: {{place: urumqi, kind: gpu, hosts: {{gpu: 2}}{site_fabric}}}
  b: {{place: shanghai, kind: city, hosts: {{client: 1}}}}
links:
  - between: [a, b]
    delay: 20ms
    rate: {rate}
"""


def _plan(rate: str = "1Gbit", fabric: str = "", site_fabric: str = "") -> object:
    return build_plan(loads_topology(TWO_SITES.format(rate=rate, fabric=fabric, site_fabric=site_fabric)))


def test_default_fabric_is_the_emulated_lan_and_never_slower_than_the_wan() -> None:
    slow = _plan("1Gbit")
    assert [s.host_rate_mbps for s in slow.sites] == [LAN_RATE_MBPS, LAN_RATE_MBPS]
    assert slow.path_params("a", "b").rate_mbps == 1000.0
    fast = _plan("40Gbit")
    assert [s.host_rate_mbps for s in fast.sites] == [40_000.0, 40_000.0]
    assert all(s.fabric_source == "default (WAN)" for s in fast.sites)


def test_an_explicit_fabric_is_on_every_path_and_a_site_overrides_the_topology() -> None:
    plan = _plan("1Tbit", fabric="fabric: {host_rate: 100Gbit, delay: 5us}", site_fabric=", fabric: {host_rate: 400G}")
    a, b = plan.sites
    assert (a.host_rate_mbps, a.fabric_source) == (400_000.0, "site")
    assert (b.host_rate_mbps, b.fabric_source) == (100_000.0, "spec")
    assert b.fabric_one_way_ms == pytest.approx(0.005)
    # the WAN is 1 Tbit/s, but b's hosts have 100 Gbit/s links
    assert plan.path_params("a", "b").rate_mbps == 100_000.0
    assert plan.path_params("a", "a").rate_mbps == 400_000.0
    assert plan.path_params("a", "a").one_way_ms == pytest.approx(0.005)


@pytest.mark.parametrize(
    ("fabric", "key"),
    [
        ("fabric: {host_rate: fast}", "fabric.host_rate"),
        ("fabric: {host_rate: 100Gbit, speed: 1}", "fabric.speed"),
        ("fabric: {delay: 50ms}", "fabric.delay"),
        ("fabric: {delay: -1us}", "fabric.delay"),
        ("fabric: 10Gbit", "fabric"),
    ],
)
def test_bad_fabrics_are_refused_naming_the_key(fabric: str, key: str) -> None:
    with pytest.raises(SpecError) as err:
        _plan(fabric=fabric)
    assert key in str(err.value)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_no_remote_placement_is_faster_than_its_local_baseline(path: Path) -> None:
    rows = predict_experiment(load_experiment(str(path)))
    assert rows, f"{path.name}: the model gave no rows"
    compared = 0
    for row in rows:
        assert "error" not in row, f"{path.name} {row['workload']} @ {row['placement']}: {row.get('error')}"
        for figure in ("step_time_s", "ttft_s", "tpot_s"):
            remote, local = row.get(f"model_{figure}"), row.get(f"local_model_{figure}")
            if remote is None or local is None:
                continue
            compared += 1
            assert remote >= local * (1 - 1e-9), (
                f"{path.name}: {row['workload']} @ {row['placement']} ({row['sweep']}): {figure} remote "
                f"{remote * 1e3:.1f} ms is faster than the local baseline's {local * 1e3:.1f} ms")
    assert compared, f"{path.name}: no row carried both a remote and a local figure"
