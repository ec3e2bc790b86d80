"""Places and great-circle distances: the geography the corridor model starts from.

Stage: model (pure). :data:`PLACES` is the table of every site named in
DESIGN.md (GPU sites, East-Data-West hubs and clusters, coastal cities) plus the
waypoint cities that long-haul fibre follows (the Hexi corridor, the
Beijing-Guangzhou and Lianyungang-Khorgas lines). Coordinates are city centres
in degrees, good to about 0.05 degrees (about 5 km), which is far below the
uncertainty of any real fibre route.

Distances use the haversine formula on a sphere of radius 6371 km (the mean
Earth radius); the ellipsoid would change a 2,400 km distance by well under
0.5 %, which is below what the fibre-route model can resolve.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Mean Earth radius used for every great-circle distance.
EARTH_RADIUS_KM = 6371.0

#: What a place is. ``gpu``: a remote GPU data-centre site; ``hub``: an
#: East-Data-West-Computing national hub or cluster; ``city``: a city whose users
#: consume the compute; ``waypoint``: a city fibre routes pass through.
KINDS: tuple[str, ...] = ("gpu", "hub", "city", "waypoint")


@dataclass(frozen=True)
class Place:
    """A named point on the map."""

    name: str  # lower-case key, e.g. "urumqi"
    label: str  # display name, e.g. "Urumqi"
    lat: float
    lon: float
    kind: str


def _p(name: str, label: str, lat: float, lon: float, kind: str) -> Place:
    return Place(name, label, lat, lon, kind)


#: Every known place by key. Keys are lower case without spaces or apostrophes
#: ("xian" for Xi'an, "guian" for Gui'an) so they can be written in YAML and used
#: in Linux names.
PLACES: dict[str, Place] = {
    p.name: p
    for p in (
        # Xinjiang GPU sites (DESIGN.md)
        _p("urumqi", "Urumqi", 43.83, 87.62, "gpu"),
        _p("hami", "Hami", 42.82, 93.52, "gpu"),
        _p("karamay", "Karamay", 45.58, 84.89, "gpu"),
        _p("changji", "Changji", 44.01, 87.31, "gpu"),
        _p("kashgar", "Kashgar", 39.47, 75.99, "gpu"),
        # Western East-Data-West hubs and clusters (DESIGN.md)
        _p("zhongwei", "Zhongwei", 37.50, 105.19, "hub"),
        _p("qingyang", "Qingyang", 35.71, 107.64, "hub"),
        _p("ulanqab", "Ulanqab", 41.00, 113.13, "hub"),
        _p("horinger", "Horinger", 40.38, 111.82, "hub"),
        _p("guian", "Gui'an", 26.65, 106.63, "hub"),
        _p("chengdu", "Chengdu", 30.57, 104.07, "hub"),
        _p("chongqing", "Chongqing", 29.56, 106.55, "hub"),
        # Eastern clusters
        _p("zhangjiakou", "Zhangjiakou", 40.77, 114.88, "hub"),
        _p("wuhu", "Wuhu", 31.35, 118.38, "hub"),
        _p("shaoguan", "Shaoguan", 24.81, 113.60, "hub"),
        # Yangtze River Delta integration demonstration zone (Qingpu-Wujiang-Jiashan); its centre
        _p("yrd", "YRD demo zone", 31.00, 120.90, "hub"),
        # Coast and cities (DESIGN.md)
        _p("beijing", "Beijing", 39.90, 116.41, "city"),
        _p("shanghai", "Shanghai", 31.23, 121.47, "city"),
        _p("hangzhou", "Hangzhou", 30.27, 120.16, "city"),
        _p("shenzhen", "Shenzhen", 22.54, 114.06, "city"),
        _p("guangzhou", "Guangzhou", 23.13, 113.26, "city"),
        _p("tianjin", "Tianjin", 39.13, 117.20, "city"),
        # Waypoints of long-haul fibre routes
        _p("kuitun", "Kuitun", 44.43, 84.90, "waypoint"),
        _p("shihezi", "Shihezi", 44.31, 86.04, "waypoint"),
        _p("turpan", "Turpan", 42.95, 89.19, "waypoint"),
        _p("jiuquan", "Jiuquan", 39.73, 98.49, "waypoint"),
        _p("zhangye", "Zhangye", 38.93, 100.45, "waypoint"),
        _p("wuwei", "Wuwei", 37.93, 102.64, "waypoint"),
        _p("xining", "Xining", 36.62, 101.78, "waypoint"),
        _p("lanzhou", "Lanzhou", 36.06, 103.83, "waypoint"),
        _p("yinchuan", "Yinchuan", 38.49, 106.23, "waypoint"),
        _p("baotou", "Baotou", 40.66, 109.84, "waypoint"),
        _p("hohhot", "Hohhot", 40.84, 111.75, "waypoint"),
        _p("xian", "Xi'an", 34.34, 108.94, "waypoint"),
        _p("taiyuan", "Taiyuan", 37.87, 112.55, "waypoint"),
        _p("shijiazhuang", "Shijiazhuang", 38.04, 114.51, "waypoint"),
        _p("zhengzhou", "Zhengzhou", 34.75, 113.62, "waypoint"),
        _p("xuzhou", "Xuzhou", 34.26, 117.18, "waypoint"),
        _p("hefei", "Hefei", 31.82, 117.23, "waypoint"),
        _p("nanjing", "Nanjing", 32.06, 118.80, "waypoint"),
        _p("wuhan", "Wuhan", 30.59, 114.31, "waypoint"),
        _p("changsha", "Changsha", 28.23, 112.94, "waypoint"),
        _p("guilin", "Guilin", 25.27, 110.29, "waypoint"),
    )
}


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlam = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def distance_km(a: Place, b: Place) -> float:
    """Great-circle distance between two places."""
    return haversine_km(a.lat, a.lon, b.lat, b.lon)


def polyline_km(points: Sequence[tuple[float, float]]) -> float:
    """Sum of great-circle legs along ``(lat, lon)`` points."""
    return sum(haversine_km(*points[i], *points[i + 1]) for i in range(len(points) - 1))


def lookup(name: str, extra: Iterable[Place] = ()) -> Place | None:
    """The place called ``name`` (case-insensitive), preferring ``extra`` (spec-defined places)."""
    key = name.lower()
    for place in extra:
        if place.name == key:
            return place
    return PLACES.get(key)
