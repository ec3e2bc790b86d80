"""Network layers (optical, private IP, public Internet): parsed from topology YAML, applied by the model,
and calibrated to CAICT's Q1 2024 hub-cluster latencies (corridor.validation.latency)."""

from __future__ import annotations

import textwrap

import pytest

from corridor.errors import SpecError
from corridor.geography.fibre import LAYER_STRETCH, LAYERS, derive_great_circle, explain
from corridor.geography.geo import PLACES
from corridor.planning.planner import build_plan
from corridor.spec.topospec import loads_topology
from corridor.validation.latency import CAICT_Q1_2024_MS, HUB_CLUSTERS, fit_layers, hub_pairs, shipped_layers

TOPO = """
defaults: {rate: 1Gbit, loss: 1e-6, jitter: 10us}
sites:
  zhongwei: {code: zw, hosts: {gpu: 1}}
  beijing: {code: bj, hosts: {client: 1}}
  shanghai: {code: sh, hosts: {client: 1}}
links:
  - between: [zhongwei, beijing]
    {layer_line}
  - between: [zhongwei, shanghai]
"""


def _plan(layer_line: str) -> object:
    return build_plan(loads_topology(textwrap.dedent(TOPO).replace("{layer_line}", layer_line), path="t.yaml"))


@pytest.mark.parametrize("layer", list(CAICT_Q1_2024_MS))
def test_each_layer_lands_within_ten_percent_of_caict(layer: str) -> None:
    fit = shipped_layers()[layer]
    assert abs(fit.mean_error) <= 0.10, f"{layer}: mean {fit.mean_ms:.2f} ms vs {fit.published_mean_ms} ms"
    assert abs(fit.max_error) <= 0.10, f"{layer}: max {fit.max_ms:.2f} ms vs {fit.published_max_ms} ms"


def test_shipped_constants_are_the_fit_rounded() -> None:
    fits = fit_layers()
    assert fits["optical"].stretch == pytest.approx(LAYER_STRETCH, abs=0.01)
    for name, fit in fits.items():
        assert LAYERS[name].detour == pytest.approx(fit.detour, abs=0.01), name
        assert LAYERS[name].fixed_ms == pytest.approx(fit.fixed_ms, abs=0.05), name


def test_fit_follows_the_published_figures() -> None:
    # A different record gives a different calibration: the fit is computed, not stored.
    slower = {k: (m * 1.2, x * 1.2) for k, (m, x) in CAICT_Q1_2024_MS.items()}
    assert fit_layers(slower)["optical"].stretch > fit_layers()["optical"].stretch * 1.1


def test_pair_set_is_the_ten_clusters() -> None:
    assert len(HUB_CLUSTERS) == 10 and len(hub_pairs()) == 45


def test_layers_order_as_measured() -> None:
    a, b = PLACES["zhongwei"], PLACES["shaoguan"]
    delays = [derive_great_circle(a, b, layer_name=name).one_way_ms for name in CAICT_Q1_2024_MS]
    assert delays == sorted(delays) and delays[0] < delays[-1]


def test_layered_link_derivation_and_explanation() -> None:
    a, b = PLACES["zhongwei"], PLACES["beijing"]
    plain = derive_great_circle(a, b)
    ip = derive_great_circle(a, b, layer_name="private-ip")
    assert plain.layer is None and plain.layer_ms == 0.0
    assert ip.layer == "private-ip" and ip.layer_ms > 0
    assert ip.path_km == pytest.approx(plain.great_circle_km * LAYER_STRETCH)
    assert ip.one_way_ms == pytest.approx(ip.propagation_ms + ip.equipment_ms + ip.layer_ms)
    assert any(line.startswith("layer private-ip:") for line in explain(ip))


def test_spec_layer_sets_defaults_and_keeps_unlayered_links() -> None:
    plan = _plan("layer: public-internet")
    layered, plain = plan.wan_links  # type: ignore[attr-defined]
    assert layered.derivation.layer == "public-internet"
    assert layered.a_to_b.loss == LAYERS["public-internet"].loss
    assert layered.a_to_b.jitter_ms == LAYERS["public-internet"].jitter_ms
    assert plain.derivation.layer is None and plain.a_to_b.loss == 1e-6 and plain.a_to_b.jitter_ms == 0.01
    unlayered = _plan("")
    assert unlayered.wan_links[1].a_to_b.delay_ms == plain.a_to_b.delay_ms  # type: ignore[attr-defined]
    assert layered.a_to_b.delay_ms > unlayered.wan_links[0].a_to_b.delay_ms  # type: ignore[attr-defined]


def test_link_settings_override_the_layer_defaults() -> None:
    plan = _plan("layer: public-internet\n    loss: 1e-4\n    jitter: 500us")
    link = plan.wan_links[0]  # type: ignore[attr-defined]
    assert link.a_to_b.loss == 1e-4 and link.a_to_b.jitter_ms == 0.5


@pytest.mark.parametrize("value", ["optic", "IP", 3, "[optical]"])
def test_unknown_layer_is_refused_with_the_allowed_names(value: object) -> None:
    with pytest.raises(SpecError, match=r"links\[zhongwei-beijing\]\.layer: unknown network layer .*allowed: "
                                        r"optical, private-ip, public-internet"):
        _plan(f"layer: {value}")
