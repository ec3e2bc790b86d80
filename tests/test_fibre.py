"""The fibre delay model (corridor.geography.fibre): calibration against measured corridors and the arithmetic."""

from __future__ import annotations

import pytest

from corridor.errors import CorridorError
from corridor.geography import fibre, geo

P = geo.PLACES


def test_fibre_delays_per_km() -> None:
    assert fibre.FIBRES["smf"].us_per_km == pytest.approx(4.90, abs=0.01)
    assert fibre.FIBRES["hollow-core"].us_per_km == pytest.approx(3.35, abs=0.01)


def test_zhongwei_beijing_lands_in_the_measured_8_to_10_ms() -> None:
    d = fibre.derive_great_circle(P["zhongwei"], P["beijing"])
    assert 8.0 <= d.one_way_ms <= 10.0
    assert d.stretch == pytest.approx(fibre.DEFAULT_MODEL.default_stretch)


def test_urumqi_beijing_lands_between_15_and_24_ms() -> None:
    assert 15.0 <= fibre.derive_great_circle(P["urumqi"], P["beijing"]).one_way_ms <= 24.0
    route = [P[n] for n in ("turpan", "hami", "jiuquan", "zhangye", "wuwei", "yinchuan", "baotou", "hohhot")]
    assert 15.0 <= fibre.derive_route(P["urumqi"], P["beijing"], route).one_way_ms <= 24.0


def test_effective_stretch_matches_the_measured_corridor() -> None:
    """DESIGN.md: measured 8-10 ms over a 4.9 ms floor is an effective stretch of 1.6-2.0 with equipment."""
    d = fibre.derive_great_circle(P["zhongwei"], P["beijing"])
    floor = fibre.floor_ms(d.great_circle_km or 0)
    assert floor == pytest.approx(4.94, abs=0.05)
    assert 1.6 <= d.one_way_ms / floor <= 2.0


def test_route_sums_legs_times_slack() -> None:
    way = [P["hami"], P["jiuquan"]]
    d = fibre.derive_route(P["urumqi"], P["lanzhou"], way)
    legs = geo.polyline_km([(p.lat, p.lon) for p in (P["urumqi"], *way, P["lanzhou"])])
    assert d.path_km == pytest.approx(legs * 1.3)
    assert d.waypoints == ("hami", "jiuquan")
    assert len(d.route_points) == 4
    assert d.source == "route"


def test_equipment_counts_and_sum() -> None:
    params = fibre.ModelParams()
    d = fibre.derive_distance(P["urumqi"], P["beijing"], 3000.0, params=params)
    assert (d.amplifiers, d.regenerators, d.switches) == (37, 5, 2)
    assert d.equipment_ms == pytest.approx((37 * 0.15 + 5 * 100 + 2 * 1.0) / 1000)
    assert d.propagation_ms == pytest.approx(3000 * fibre.FIBRES["smf"].us_per_km / 1000)
    assert d.one_way_ms == pytest.approx(d.propagation_ms + d.equipment_ms)


def test_hollow_core_is_faster_than_smf() -> None:
    smf = fibre.derive_great_circle(P["urumqi"], P["beijing"])
    hcf = fibre.derive_great_circle(P["urumqi"], P["beijing"], fibre_name="hollow-core")
    assert hcf.propagation_ms / smf.propagation_ms == pytest.approx(1.003 / 1.468)


def test_model_params_change_the_result() -> None:
    wide = fibre.ModelParams(regen_spacing_km=5000.0, default_stretch=1.0)
    d = fibre.derive_great_circle(P["zhongwei"], P["beijing"], params=wide)
    assert d.regenerators == 0
    assert d.path_km == pytest.approx(d.great_circle_km)


def test_explicit_delay_and_scale() -> None:
    d = fibre.derive_explicit(P["urumqi"], P["shanghai"], 25.0)
    assert d.one_way_ms == 25.0 and d.source == "explicit-delay" and d.path_km is None
    scaled = fibre.derive_explicit(P["urumqi"], P["shanghai"], 25.0, delay_scale=2.0)
    assert scaled.one_way_ms == 50.0
    routed = fibre.derive_great_circle(P["zhongwei"], P["beijing"], delay_scale=0.5)
    assert routed.one_way_ms == pytest.approx(fibre.derive_great_circle(P["zhongwei"], P["beijing"]).one_way_ms / 2)


def test_unknown_fibre() -> None:
    with pytest.raises(CorridorError, match="unknown fibre 'copper'; known: smf, hollow-core"):
        fibre.fibre("copper")


def test_explain_shows_every_step() -> None:
    d = fibre.derive_great_circle(P["zhongwei"], P["beijing"])
    text = "\n".join(fibre.explain(d))
    assert "1,009 km x default stretch 1.60 = fibre 1,614 km" in text
    assert "x 4.897 us/km (smf)" in text
    assert "2 regenerators" in text
    assert f"one way: {d.one_way_ms:.3f} ms" in text
    route = fibre.derive_route(P["urumqi"], P["hami"], [P["turpan"]])
    assert "route via turpan: legs 513 km x slack 1.30 = fibre 667 km" in "\n".join(fibre.explain(route))
    explicit = fibre.derive_explicit(P["hami"], P["beijing"], 25.0)
    assert "given explicitly: 25.000 ms" in "\n".join(fibre.explain(explicit))
