"""The placer (corridor.cluster.placer): whole sites and wires on servers, cores respected, load balanced."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from corridor.cli import cli
from corridor.cluster.placer import DIRECTIONS, ServerPlacement, place
from corridor.cluster.spec import ClusterSpec, load_cluster, loads_cluster
from corridor.errors import CorridorError, PlacementError, SpecError
from corridor.planning.plan import Plan
from corridor.planning.planner import build_plan
from corridor.spec.topospec import list_presets, load_topology, loads_topology


def cluster(*cores: int | None, pins: str = "") -> ClusterSpec:
    lines = ["servers:"]
    for i, c in enumerate(cores, start=1):
        stated = "" if c is None else f", cores: {c}"
        lines.append(f"  s{i}: {{address: 10.250.{i}.2, user: root, key: /k{stated}}}")
    if pins:
        lines.append(f"pins: {pins}")
    return loads_cluster("\n".join(lines), path="c.yaml")


def coastal() -> Plan:
    return build_plan(load_topology("xinjiang-coastal"))


def assert_consistent(plan: Plan, placement: ServerPlacement, cl: ClusterSpec) -> None:
    """The invariants every placement keeps, whatever the cluster."""
    names = set(cl.server_names)
    for site in plan.sites:  # a site is whole on one server: the LAN never crosses servers
        server = placement.server_of(site.name)
        assert server in names
        assert {placement.server_of(n) for n in (site.switch, site.router, *(h.name for h in site.hosts))} == {
            server}
    for link in plan.wan_links:
        wire_server = placement.server_of(link.wire)
        crossing = {c.side for c in placement.cross_links if c.link == link.name}
        assert crossing == {side for side, site in (("a", link.a), ("b", link.b))
                            if placement.server_of(site) != wire_server}
    for c in placement.cross_links:  # only router-to-wire veths cross
        assert c.router.endswith("-r") and c.wire == plan.link(c.link).wire
        assert c.router_server != c.wire_server
    for load in placement.loads:  # loads add up, and never exceed stated cores
        assert load.busy_directions == sum(len(w.busy_directions) for w in placement.wires if w.server == load.server)
        if load.cores is not None:
            assert load.busy_directions <= load.cores
    assert sum(load.busy_directions for load in placement.loads) == sum(len(w.busy_directions)
                                                                         for w in placement.wires)


def test_coastal_over_two_equal_servers_is_balanced_and_split_inland_from_coast() -> None:
    plan = coastal()
    assert len(plan.wan_links) == 10
    cl = cluster(10, 10)
    placement = place(plan, cl)
    assert_consistent(plan, placement, cl)
    assert [load.busy_directions for load in placement.loads] == [10, 10]
    inland = {placement.server_of(s) for s in ("urumqi", "hami", "karamay")}
    coast = {placement.server_of(s) for s in ("beijing", "shanghai", "shenzhen")}
    assert len(inland) == 1 and len(coast) == 1 and inland != coast
    # six links join inland to coast and each must cross once; the four others stay inside a server
    assert len(placement.cross_links) == 6


@pytest.mark.parametrize(("cores", "expected"), [((12, 8), [12, 8]), ((4, 16), [4, 16]), ((2, 18), [2, 18]),
                                                 ((8, 7, 7), [8, 6, 6]), ((20, 20), [10, 10])])
def test_busy_directions_follow_the_cores(cores: tuple[int, ...], expected: list[int]) -> None:
    plan, cl = coastal(), cluster(*cores)
    placement = place(plan, cl)
    assert_consistent(plan, placement, cl)
    assert sorted(load.busy_directions for load in placement.loads) == sorted(expected)


def test_servers_without_cores_share_evenly_and_have_no_limit() -> None:
    plan, cl = coastal(), cluster(None, None)
    placement = place(plan, cl)
    assert_consistent(plan, placement, cl)
    assert [load.busy_directions for load in placement.loads] == [10, 10]
    one = place(plan, cluster(None))
    assert one.loads[0].busy_directions == 20 and not one.cross_links


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_places_consistently_over_three_servers(preset: str) -> None:
    plan, cl = build_plan(load_topology(preset)), cluster(4, 8, None)
    placement = place(plan, cl)
    assert_consistent(plan, placement, cl)
    assert place(plan, cl) == placement  # deterministic


def test_too_few_cores_in_all_names_the_shortfall() -> None:
    with pytest.raises(PlacementError) as caught:
        place(coastal(), cluster(8, 8))
    message = str(caught.value)
    assert "20 busy link directions" in message and "16 cores in all (s1 8, s2 8)" in message
    assert "add at least 4 cores" in message and "c.yaml" in message


def test_enough_cores_in_all_but_no_room_for_a_whole_wire() -> None:
    # 20 directions over 21 cores, but three servers of 7 cores each fit only three two-direction wires
    with pytest.raises(PlacementError, match=r"no server has 2 free cores for the wire of link .*"
                       r"free cores: s1 1, s2 1, s3 1 \(a wire runs both directions"):
        place(coastal(), cluster(7, 7, 7))


def test_only_busy_directions_count() -> None:
    plan = coastal()
    busy = [("urumqi-beijing", "a_to_b"), ("urumqi-beijing", "b_to_a"), ("hami-shanghai", "a_to_b")]
    cl = cluster(2, 1)
    placement = place(plan, cl, busy=busy)
    assert_consistent(plan, placement, cl)
    assert placement.load("s1").busy_directions == 2 and placement.load("s2").busy_directions == 1
    by_link = {w.link: w.busy_directions for w in placement.wires}
    assert by_link["urumqi-beijing"] == DIRECTIONS and by_link["hami-shanghai"] == ("a_to_b",)
    assert by_link["beijing-shanghai"] == ()
    with pytest.raises(PlacementError):
        place(plan, cluster(1, 1), busy=busy)


@pytest.mark.parametrize(("busy", "message"), [([("nowhere", "a_to_b")], "not a WAN link"),
                                               ([("urumqi-beijing", "up")], "must be one of a_to_b, b_to_a")])
def test_bad_busy_names_are_refused(busy: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(CorridorError, match=message):
        place(coastal(), cluster(10, 10), busy=busy)


def test_pins_are_kept_and_accept_site_codes() -> None:
    plan = coastal()
    cl = cluster(10, 10, pins="{urumqi: s2, bj: s2, shanghai: s1}")
    placement = place(plan, cl)
    assert_consistent(plan, placement, cl)
    assert (placement.server_of("urumqi"), placement.server_of("beijing"), placement.server_of("shanghai")) == (
        "s2", "s2", "s1")


@pytest.mark.parametrize(("pins", "message", "key"), [
    ("{lhasa: s1}", "has no site 'lhasa'", "pins.lhasa"),
    ("{urumqi: s1, urm: s2}", "pinned twice", "pins.urm"),
])
def test_bad_pins_name_the_cluster_file_and_key(pins: str, message: str, key: str) -> None:
    with pytest.raises(SpecError) as caught:
        place(coastal(), cluster(10, 10, pins=pins))
    assert message in str(caught.value) and caught.value.path == "c.yaml" and caught.value.key == key


def test_pins_that_overload_a_server_still_respect_its_cores() -> None:
    plan = coastal()
    cl = cluster(4, 16, pins="{urumqi: s1, hami: s1, karamay: s1}")
    placement = place(plan, cl)
    assert_consistent(plan, placement, cl)
    assert placement.load("s1").busy_directions == 4


def test_placement_prints_and_round_trips_through_json() -> None:
    plan = coastal()
    placement = place(plan, cluster(12, 8))
    data = json.loads(json.dumps(placement.as_dict()))
    assert data["topology"] == "xinjiang-coastal" and data["cluster"] == "c.yaml"
    assert set(data["sites"]) == {s.name for s in plan.sites}
    assert set(data["nodes"]) == {n for s in plan.sites for n in (s.switch, s.router, *(h.name for h in s.hosts))} | {
        k.wire for k in plan.wan_links}
    assert [s["busy_directions"] for s in data["servers"]] == [12, 8]
    assert len(data["cross_links"]) == len(placement.cross_links)
    text = str(placement)
    assert text.splitlines()[0] == "placement of xinjiang-coastal over 2 servers (c.yaml)"
    assert "s1: 12 busy link directions, 12 cores" in text and "s2: 8 busy link directions, 8 cores" in text
    for c in placement.cross_links:
        assert f"{c.link}: {c.router_intf} on {c.router_server} <-> {c.wire_intf} on {c.wire_server}" in text
    with pytest.raises(KeyError):
        placement.server_of("no-such-node")


def test_a_wire_goes_beside_its_sites_when_the_balance_allows() -> None:
    plan = build_plan(loads_topology(textwrap.dedent("""
        sites:
          a: {lat: 30, lon: 100, kind: gpu, code: a, hosts: {gpu: 1}}
          b: {lat: 30, lon: 101, kind: city, code: b, hosts: {client: 1}}
          c: {lat: 30, lon: 102, kind: gpu, code: c, hosts: {gpu: 1}}
          d: {lat: 30, lon: 103, kind: city, code: d, hosts: {client: 1}}
        links:
          - {between: [a, b], delay: 1ms, rate: 1Gbit}
          - {between: [c, d], delay: 1ms, rate: 1Gbit}
        """), path="t.yaml"))
    cl = cluster(2, 2)
    placement = place(plan, cl)
    assert_consistent(plan, placement, cl)
    assert not placement.cross_links  # two separate pairs, one per server
    assert placement.server_of("a") == placement.server_of("b") != placement.server_of("c")


def test_cli_place_prints_the_assignment_and_refuses_what_does_not_fit(repo_root: Path, tmp_path: Path) -> None:
    example = repo_root / "clusters" / "two-servers.yaml"
    result = CliRunner().invoke(cli, ["place", "xinjiang-coastal", "--cluster", str(example)])
    assert result.exit_code == 0, result.output
    expected = place(coastal(), load_cluster(example))
    assert result.output.splitlines() == expected.lines()
    assert expected.server_of("urumqi") == "west"  # the example's pin
    result = CliRunner().invoke(cli, ["place", "xinjiang-coastal", "--cluster", str(example), "--json"])
    data = json.loads(result.stdout)
    assert data["sites"] == dict(expected.sites) and data["nodes"] == dict(expected.nodes)
    result = CliRunner().invoke(cli, ["place", "two-site", "--cluster", str(example)])
    assert result.exit_code == 2 and "pins.urumqi: two-site has no site 'urumqi'" in result.output
    small = tmp_path / "small.yaml"
    small.write_text("servers: {a: {address: 10.0.0.1, user: root, key: /k, cores: 2}}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["place", "xinjiang-coastal", "--cluster", str(small)])
    assert result.exit_code == 2 and "add at least 18 cores" in result.output
