"""The plan builder (corridor.planning.planner) and Plan's path lookups: names, addresses, routes, directions."""

from __future__ import annotations

import textwrap

import pytest

from corridor.errors import CorridorError, SpecError
from corridor.links.contract import default_queue_bytes
from corridor.planning.plan import LAN_ONE_WAY_MS, LAN_RATE_MBPS, Plan
from corridor.planning.planner import build_plan
from corridor.spec.topospec import list_presets, load_topology, loads_topology, override_links


def plan_of(text: str) -> Plan:
    return build_plan(loads_topology(textwrap.dedent(text), path="t.yaml"))


#  a --1ms-- b --1ms-- c, and a --10ms-- c: a reaches c through b.
TRIANGLE = """
sites:
  a: {lat: 30, lon: 100, kind: gpu, code: a, hosts: {gpu: 1}}
  b: {lat: 30, lon: 101, kind: hub, code: b}
  c: {lat: 30, lon: 102, kind: city, code: c, hosts: {client: 1}}
links:
  - {between: [a, b], delay: 1ms, rate: 1Gbit}
  - {between: [b, c], delay: 1ms, rate: 100Mbit, loss: 0.01}
  - {between: [a, c], delay: 10ms, rate: 10Gbit}
"""


def test_two_site_names_addresses_and_link() -> None:
    plan = build_plan(load_topology("two-site"))
    assert [h.name for h in plan.hosts()] == ["rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2", "cty-cli1", "cty-cli2"]
    remote, city = plan.sites
    assert (remote.subnet, remote.router_lan_ip, remote.switch, remote.router) == (
        "10.1.0.0/24", "10.1.0.254", "rem-s", "rem-r")
    assert [h.ip for h in city.hosts] == ["10.2.0.1", "10.2.0.2", "10.2.0.3", "10.2.0.4"]
    host = plan.host("cty-cli1")
    assert (host.role, host.gateway, host.intf, host.prefix_len, host.site) == (
        "client", "10.2.0.254", "cty-cli1-eth0", 24, "city")
    (link,) = plan.wan_links
    assert (link.wire, link.wire_intf_a, link.wire_intf_b) == ("wremcty", "wremcty-eth0", "wremcty-eth1")
    assert (link.router_intf_a, link.router_intf_b, link.ip_a, link.ip_b) == (
        "rem-r-eth1", "cty-r-eth1", "10.255.1.1", "10.255.1.2")
    assert link.a_to_b.delay_ms == 25.0 and link.b_to_a.delay_ms == 25.0 and link.rtt_ms == 50.0
    assert link.a_to_b.rate_mbps == 1000.0
    # queue defaults to one BDP of the link's RTT: 1 Gbit/s x 50 ms = 6.25 MB
    assert link.a_to_b.queue_bytes == default_queue_bytes(1000.0, 50.0) == 6_250_000
    assert remote.routes[0].dest == "10.2.0.0/24" and remote.routes[0].via == "10.255.1.2"
    assert remote.routes[0].intf == "rem-r-eth1"
    assert city.routes[0].via == "10.255.1.1"


def test_local_plan_has_no_wan() -> None:
    plan = build_plan(load_topology("local"))
    assert plan.wan_links == () and len(plan.hosts(role="gpu")) == 4 and len(plan.hosts(role="client")) == 2
    assert plan.sites[0].routes == ()
    params = plan.path_params("local", "local")
    assert params.wan_links == () and params.rate_mbps == LAN_RATE_MBPS and params.one_way_ms == LAN_ONE_WAY_MS
    assert params.rtt_ms == pytest.approx(2 * LAN_ONE_WAY_MS) and params.loss == 0.0


@pytest.mark.parametrize("preset", list_presets())
def test_every_interface_name_fits_linux(preset: str) -> None:
    plan = build_plan(load_topology(preset))
    names = [h.intf for h in plan.hosts()] + [s.router_lan_intf for s in plan.sites]
    for link in plan.wan_links:
        names += [link.wire_intf_a, link.wire_intf_b, link.router_intf_a, link.router_intf_b]
    assert names and all(len(n) <= 15 for n in names), [n for n in names if len(n) > 15]
    assert len(set(names)) == len(names)
    nodes = [h.name for h in plan.hosts()] + [w.wire for w in plan.wan_links]
    nodes += [s.router for s in plan.sites] + [s.switch for s in plan.sites]
    assert len(set(nodes)) == len(nodes)


def test_longest_names_still_fit() -> None:
    plan = plan_of(
        """
        sites:
          alpha: {lat: 30, lon: 100, kind: gpu, code: abcd, hosts: {gpu: 16}}
          bravo: {lat: 31, lon: 101, kind: city, code: wxyz, hosts: {store: 16}}
        links: [{between: [alpha, bravo], rate: 1G}]
        """
    )
    assert plan.host("abcd-gpu16").intf == "abcd-gpu16-eth0"
    assert plan.host("wxyz-sto16").ip == "10.2.0.16"
    assert plan.wan_links[0].wire == "wabcdwxyz"


def test_routes_follow_lowest_one_way_delay() -> None:
    plan = plan_of(TRIANGLE)
    a = plan.site("a")
    to_c = next(r for r in a.routes if r.dest == "10.3.0.0/24")
    ab = plan.link("a-b")
    assert to_c.intf == ab.router_intf_a and to_c.via == ab.ip_b
    assert [(link.name, d) for link, d in plan.path("a", "c")] == [("a-b", "a_to_b"), ("b-c", "a_to_b")]
    assert [(link.name, d) for link, d in plan.path("c", "a")] == [("b-c", "b_to_a"), ("a-b", "b_to_a")]
    params = plan.path_params("a", "c")
    assert params.one_way_ms == pytest.approx(2.0)
    assert params.rtt_ms == pytest.approx(4.0)
    assert params.rate_mbps == 100.0  # the b-c bottleneck
    assert params.queue_bytes == plan.link("b-c").a_to_b.queue_bytes
    assert params.loss == pytest.approx(0.01)
    assert params.wan_links == ("a-b", "b-c")
    # the router of b forwards between the two; each site routes to every other one
    assert all(len(s.routes) == 2 for s in plan.sites)


def test_slower_direct_link_wins_when_it_is_shorter() -> None:
    plan = build_plan(override_links(loads_topology(textwrap.dedent(TRIANGLE), path="t.yaml"), delay="1.5ms",
                                     links=["a-c"]))
    assert plan.path_params("a", "c").wan_links == ("a-c",)


def test_asymmetric_link() -> None:
    plan = plan_of(
        """
        sites:
          urumqi: {code: urm, hosts: {gpu: 1}}
          shanghai: {code: sh, hosts: {client: 1}}
        links:
          - between: [urumqi, shanghai]
            delay: 20ms
            rate: 1Gbit
            queue: 1000p
            reverse: {delay: 30ms, rate: 100Mbit, queue: 2bdp, loss: 1e-3}
        """
    )
    link = plan.link("urumqi-shanghai")
    assert (link.a_to_b.delay_ms, link.b_to_a.delay_ms, link.rtt_ms) == (20.0, 30.0, 50.0)
    assert link.a_to_b.queue_packets == 1000 and link.a_to_b.queue_bytes == 1_500_000
    assert link.b_to_a.queue_bytes == default_queue_bytes(100.0, 50.0, bdp_multiple=2.0)
    up, down = plan.path_params("urumqi", "shanghai"), plan.path_params("shanghai", "urumqi")
    assert (up.one_way_ms, down.one_way_ms, up.rtt_ms, down.rtt_ms) == (20.0, 30.0, 50.0, 50.0)
    assert (up.rate_mbps, down.rate_mbps) == (1000.0, 100.0)
    assert down.loss == pytest.approx(1e-3) and up.loss == 0.0


def test_xinjiang_coastal_urumqi_beijing_in_band() -> None:
    plan = build_plan(load_topology("xinjiang-coastal"))
    link = plan.link("urumqi-beijing")
    assert 15.0 <= link.a_to_b.delay_ms <= 24.0
    assert link.derivation.source == "route" and link.derivation.waypoints[0] == "turpan"
    # Karamay reaches the coast through Urumqi
    assert plan.path_params("karamay", "beijing").wan_links == ("karamay-urumqi", "urumqi-beijing")


def test_east_data_west_within_official_20ms_target() -> None:
    plan = build_plan(load_topology("east-data-west"))
    assert 8.0 <= plan.link("zhongwei-beijing").a_to_b.delay_ms <= 10.0
    assert plan.link("zhongwei-shanghai").a_to_b.delay_ms < 15.0  # measured: under 15 ms
    for link in plan.wan_links:
        assert link.a_to_b.delay_ms < 20.0, link.name


def test_derived_jitter_above_delay_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"t\.yaml: links\[urumqi-changji\]: jitter .* exceeds delay"):
        plan_of(
            """
            sites: {urumqi: {code: u}, changji: {code: c}}
            links: [{between: [urumqi, changji], rate: 1G, jitter: 5ms}]
            """
        )


def test_delay_scale_multiplies_derived_delay() -> None:
    spec = load_topology("xinjiang-coastal")
    base = build_plan(spec).link("hami-beijing").a_to_b.delay_ms
    scaled = build_plan(override_links(spec, delay_scale=2.0)).link("hami-beijing")
    assert scaled.a_to_b.delay_ms == pytest.approx(2 * base)
    assert scaled.derivation.delay_scale == 2.0


def test_disconnected_sites_have_no_path() -> None:
    plan = plan_of(
        """
        sites:
          a: {lat: 30, lon: 100, kind: gpu, code: a}
          b: {lat: 30, lon: 101, kind: gpu, code: b}
          c: {lat: 30, lon: 102, kind: city, code: c}
        links: [{between: [a, b], rate: 1G}]
        """
    )
    with pytest.raises(CorridorError, match="no route from site 'a' to site 'c'"):
        plan.path("a", "c")
    with pytest.raises(KeyError):
        plan.path("a", "zz")
    assert plan.path("a", "a") == []


def test_xinjiang_coastal_cities_meet_on_the_east_coast_backbone() -> None:
    plan = build_plan(load_topology("xinjiang-coastal"))
    path = plan.path_params("beijing", "shanghai")
    assert path.wan_links == ("beijing-shanghai",)  # not through Hami (34.4 ms one way without the backbone)
    assert 6.0 <= path.one_way_ms <= 10.0
    assert plan.path_params("beijing", "shenzhen").wan_links == ("beijing-shanghai", "shanghai-shenzhen")
    # the GPU sites still reach the coast directly
    assert plan.path_params("urumqi", "beijing").wan_links == ("urumqi-beijing",)


def test_national_hubs_has_every_cluster_and_a_coastal_backbone() -> None:
    from corridor.validation.latency import HUB_CLUSTERS

    spec = load_topology("national-hubs")
    plan = build_plan(spec)
    places = {site.name: (site.lat, site.lon) for site in plan.sites}
    from corridor.geography import geo
    for cluster in HUB_CLUSTERS:  # the CAICT calibration's set, at the same coordinates
        place = geo.PLACES[cluster]
        assert (place.lat, place.lon) in places.values(), cluster
    assert {link.derivation.layer for link in plan.wan_links} == {"private-ip"}
    assert plan.path_params("beijing", "shanghai").wan_links == ("beijing-shanghai",)
    assert plan.path_params("shanghai", "shenzhen").wan_links == ("shanghai-shenzhen",)
    for a in ("zhongwei", "guian", "tianfu"):
        for b in ("beijing", "shanghai", "guangzhou"):
            plan.path_params(a, b)  # every cluster reaches every served city
