"""The place table and great-circle distances (corridor.geography.geo) against DESIGN.md."""

from __future__ import annotations

import pytest

from corridor.geography import geo


@pytest.mark.parametrize(
    ("a", "b", "expected_km"),
    [
        ("urumqi", "beijing", 2411),
        ("urumqi", "shanghai", 3268),
        ("urumqi", "shenzhen", 3385),
        ("hami", "beijing", 1932),
        ("zhongwei", "beijing", 1009),
    ],
)
def test_design_distances_within_one_percent(a: str, b: str, expected_km: float) -> None:
    got = geo.distance_km(geo.PLACES[a], geo.PLACES[b])
    assert got == pytest.approx(expected_km, rel=0.01)


@pytest.mark.parametrize(
    ("name", "lat", "lon"),
    [
        ("urumqi", 43.83, 87.62),
        ("hami", 42.82, 93.52),
        ("karamay", 45.58, 84.89),
        ("changji", 44.01, 87.31),
        ("kashgar", 39.47, 75.99),
        ("zhongwei", 37.50, 105.19),
        ("qingyang", 35.71, 107.64),
        ("ulanqab", 41.00, 113.13),
        ("horinger", 40.38, 111.82),
        ("guian", 26.65, 106.63),
        ("chengdu", 30.57, 104.07),
        ("chongqing", 29.56, 106.55),
        ("beijing", 39.90, 116.41),
        ("shanghai", 31.23, 121.47),
        ("hangzhou", 30.27, 120.16),
        ("shenzhen", 22.54, 114.06),
        ("guangzhou", 23.13, 113.26),
    ],
)
def test_design_sites_are_in_the_table(name: str, lat: float, lon: float) -> None:
    place = geo.PLACES[name]
    assert place.lat == pytest.approx(lat, abs=0.05)
    assert place.lon == pytest.approx(lon, abs=0.05)


def test_every_place_is_well_formed() -> None:
    for key, place in geo.PLACES.items():
        assert key == place.name
        assert place.kind in geo.KINDS
        # China lies within these bounds; a swapped lat/lon would fall outside.
        assert 18 < place.lat < 54 and 73 < place.lon < 135, place


def test_haversine_basics() -> None:
    assert geo.haversine_km(10, 20, 10, 20) == 0
    assert geo.haversine_km(0, 0, 0, 180) == pytest.approx(geo.EARTH_RADIUS_KM * 3.141592653589793)
    # one degree of latitude is about 111.19 km on this sphere
    assert geo.haversine_km(0, 0, 1, 0) == pytest.approx(111.19, abs=0.01)
    u, b = geo.PLACES["urumqi"], geo.PLACES["beijing"]
    assert geo.distance_km(u, b) == pytest.approx(geo.distance_km(b, u))


def test_polyline_is_at_least_the_great_circle() -> None:
    names = ["urumqi", "hami", "jiuquan", "lanzhou", "xian", "zhengzhou", "beijing"]
    points = [(geo.PLACES[n].lat, geo.PLACES[n].lon) for n in names]
    direct = geo.haversine_km(*points[0], *points[-1])
    legs = geo.polyline_km(points)
    assert direct < legs < direct * 1.5
    assert geo.polyline_km(points[:1]) == 0


def test_lookup_prefers_spec_places_and_ignores_case() -> None:
    mine = geo.Place("beijing", "Elsewhere", 1.0, 2.0, "waypoint")
    assert geo.lookup("Beijing") == geo.PLACES["beijing"]
    assert geo.lookup("beijing", [mine]) is mine
    assert geo.lookup("atlantis") is None
