"""Topology specs (corridor.spec.topospec): presets load; a bad input is a SpecError naming file, key and the fix."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from corridor.errors import SpecError
from corridor.spec.topospec import list_presets, load_topology, loads_topology, override_links

GOOD = """
name: tiny
description: two sites
defaults: {rate: 1Gbit, loss: 1e-5, jitter: 50us}
sites:
  urumqi: {code: urm, hosts: {gpu: 2}}
  beijing: {code: bj, hosts: {client: 1}}
links:
  - between: [urumqi, beijing]
"""


def spec_text(body: str) -> str:
    return textwrap.dedent(body).strip() + "\n"


def test_good_spec_loads_with_defaults() -> None:
    spec = loads_topology(GOOD, path="tiny.yaml")
    assert spec.name == "tiny"
    assert [s.name for s in spec.sites] == ["urumqi", "beijing"]
    urumqi = spec.site("urumqi")
    assert (urumqi.code, urumqi.kind, urumqi.lat, urumqi.lon) == ("urm", "gpu", 43.83, 87.62)
    assert urumqi.hosts == (("gpu", 2),)
    link = spec.link("urumqi-beijing")
    assert link.route is None and link.distance_km is None and link.delay_ms is None
    assert link.forward.rate_mbps == 1000.0 and link.forward.loss == 1e-5 and link.forward.jitter_ms == 0.05
    assert link.reverse == link.forward
    assert link.forward.queue.unit == "bdp" and link.forward.queue.amount == 1.0


def test_full_link_schema() -> None:
    spec = loads_topology(
        spec_text(
            """
            model: {route_slack: 1.2, stretch: 1.5, regen_spacing: 800km, fibre: hollow-core}
            places:
              oasis: {lat: 40.0, lon: 95.0}
            sites:
              far: {place: urumqi, code: far, kind: gpu, hosts: {gpu: 1, store: 1}}
              near: {lat: 31.0, lon: 121.0, code: nr, kind: city, hosts: {client: 2}}
            links:
              - between: [far, near]
                name: main
                route: [urumqi, oasis, lanzhou, near]
                rate: 2Gbit
                queue: 1.5bdp
                burst_loss: {p_good_to_bad: 0.001, p_bad_to_good: 0.3}
                fibre: smf
                reverse: {rate: 100Mbit, queue: 500p, loss: 1%, delay: 30ms}
            """
        ),
        path="full.yaml",
    )
    assert spec.model.route_slack == 1.2 and spec.model.regen_spacing_km == 800.0 and spec.model.fibre == "hollow-core"
    link = spec.link("main")
    assert link.route == ("oasis", "lanzhou")  # written-out ends are implied
    assert link.fibre == "smf"
    assert link.forward.burst_loss is not None and link.forward.loss == 0.0
    assert link.forward.queue.amount == 1.5
    assert link.reverse.rate_mbps == 100.0 and link.reverse.burst_loss is None and link.reverse.loss == 0.01
    assert link.reverse.queue.unit == "packets" and link.reverse.delay_ms == 30.0
    assert spec.site("near").place is None and spec.site("far").place == "urumqi"
    assert spec.site("far").hosts == (("gpu", 1), ("store", 1))


# Each bad spec: YAML text and a regex the SpecError message must match (file, key, what is allowed).
BAD_SPECS: list[tuple[str, str, str]] = [
    ("empty file", "", r"bad\.yaml: the topology is empty"),
    ("not yaml", "sites: [unclosed", r"bad\.yaml: line \d+, column \d+: not valid YAML"),
    ("top level list", "- a\n- b", r"expected a mapping of topology sections, got a list"),
    ("unknown top key", "sites: {urumqi: {}}\nlinkz: []",
     r"bad\.yaml: linkz: unknown key 'linkz'; did you mean 'links'\?"),
    ("duplicate yaml key", "sites:\n  urumqi: {}\n  urumqi: {}", r"duplicate key 'urumqi'"),
    ("no sites", "name: x", r"sites: missing; a topology needs at least one site"),
    ("unknown site key", "sites: {urumqi: {hostz: {gpu: 1}}}",
     r"sites\.urumqi\.hostz: unknown key 'hostz'; did you mean 'hosts'"),
    ("unknown place", "sites: {urumchi: {}}", r"sites\.urumchi: unknown place 'urumchi'; did you mean 'urumqi'"),
    ("unsafe site name", "sites: {'rm -rf': {place: urumqi}}", r"site name 'rm -rf' is not a safe name"),
    ("bad code", "sites: {urumqi: {code: URUMQI}}", r"sites\.urumqi\.code: code 'URUMQI' must be 1-4 lower-case"),
    ("duplicate code", "sites: {urumqi: {code: x}, beijing: {code: x}}",
     r"sites\.beijing\.code: code 'x' is already used"),
    ("bad role", "sites: {urumqi: {hosts: {tpu: 1}}}",
     r"sites\.urumqi\.hosts\.tpu: unknown key 'tpu'.*allowed: gpu, client, store"),
    ("too many hosts", "sites: {urumqi: {hosts: {gpu: 17}}}", r"too many hosts \(17\); at most 16 per site"),
    ("negative hosts", "sites: {urumqi: {hosts: {gpu: -1}}}", r"hosts\.gpu: expected a whole number of hosts"),
    ("bad kind", "sites: {urumqi: {kind: moon}}",
     r"sites\.urumqi\.kind: unknown kind 'moon'; allowed: gpu, hub, city, waypoint"),
    ("lat without lon", "sites: {x: {lat: 40, kind: city}}", r"sites\.x: give both lat and lon"),
    ("lat out of range", "sites: {x: {lat: 91, lon: 0, kind: city}}", r"sites\.x\.lat: 91 is out of range.*-90 and 90"),
    ("link to self", "sites: {urumqi: {}}\nlinks: [{between: [urumqi, urumqi], rate: 1Gbit}]",
     r"links\[0\]\.between: a link from 'urumqi' to itself"),
    ("missing site", "sites: {urumqi: {}}\nlinks: [{between: [urumqi, beijin], rate: 1Gbit}]",
     r"links\[0\]\.between: unknown site 'beijin'; sites: urumqi"),
    ("between not a pair", "sites: {urumqi: {}}\nlinks: [{between: urumqi, rate: 1Gbit}]",
     r"links\[0\]\.between: expected two site names"),
    ("duplicate link", "sites: {urumqi: {}, hami: {}}\nlinks:\n - {between: [urumqi, hami], rate: 1G}\n"
     " - {between: [hami, urumqi], rate: 1G}", r"duplicate link between 'hami' and 'urumqi'"),
    ("missing rate", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami]}]",
     r"links\[urumqi-hami\]\.rate: missing; give the link a rate"),
    ("rate in bytes", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1GB/s}]",
     r"links\[urumqi-hami\]\.rate: rate '1GB/s' looks like bytes per second"),
    ("absurd rate", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 11Tbit}]",
     r"\.rate: rate '11Tbit' is out of range; allowed 1kbit to 10Tbit"),
    ("absurd delay", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, delay: 11s}]",
     r"\.delay: delay '11s' is absurd; allowed 0 to 10s"),
    ("negative delay", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, delay: -1ms}]",
     r"\.delay: duration '-1ms' must not be negative"),
    ("delay without unit", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, delay: 25}]",
     r"\.delay: duration 25 has no unit"),
    ("loss of one", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, loss: 1}]",
     r"\.loss: 1 is out of range; allowed 0 up to but not including 1"),
    ("jitter above delay", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, delay: 1ms, "
     "jitter: 2ms}]", r"links\[urumqi-hami\]\.jitter: jitter 2 ms exceeds the delay 1 ms"),
    ("route and delay", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, delay: 1ms, "
     "route: [turpan]}]", r"give only one of route, distance or delay \(got route and delay\)"),
    ("unknown waypoint", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, route: [turfan]}]",
     r"\.route: unknown waypoint 'turfan'; did you mean 'turpan'"),
    ("distance below great circle", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, "
     "distance: 100km}]", r"\.distance: '100km' is shorter than the great circle"),
    ("bad queue", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, queue: 10}]",
     r"\.queue: .*a queue is bytes \('6MB'\), packets \('1000p'\) or a BDP multiple \('1\.5bdp'\)"),
    ("tiny queue", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, queue: 100B}]",
     r"\.queue: queue '100B' is out of range; allowed 1500B"),
    ("zero bdp", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, queue: 0bdp}]",
     r"a BDP multiple must be above 0"),
    ("unknown fibre", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, fibre: copper}]",
     r"\.fibre: unknown fibre 'copper'; allowed: smf, hollow-core"),
    ("unknown reverse key", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, "
     "reverse: {route: [turpan]}}]", r"\.reverse\.route: unknown key 'route'.*allowed: rate, loss, burst_loss"),
    ("loss and burst", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, loss: 1e-3, "
     "burst_loss: {p_good_to_bad: 0.1, p_bad_to_good: 0.5}}]", r"give either loss or burst_loss in one block"),
    ("stuck burst", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, "
     "burst_loss: {p_good_to_bad: 0.1, p_bad_to_good: 0}}]", r"burst_loss\.p_bad_to_good: is 0"),
    ("absurd slack", "model: {route_slack: 9}\nsites: {urumqi: {}}", r"model\.route_slack: 9 is out of range.*1 and 4"),
    ("unknown model key", "model: {strech: 1.5}\nsites: {urumqi: {}}",
     r"model\.strech: unknown key 'strech'; did you mean 'stretch'"),
    ("unsafe link name", "sites: {urumqi: {}, hami: {}}\nlinks: [{between: [urumqi, hami], rate: 1G, name: 'a;b'}]",
     r"link name 'a;b' is not a safe name"),
    ("wire clash", "sites: {a: {lat: 1, lon: 1, kind: city, code: ab}, b: {lat: 2, lon: 2, kind: city, code: c},\n"
     "  c: {lat: 3, lon: 3, kind: city, code: a}, d: {lat: 4, lon: 4, kind: city, code: bc}}\n"
     "links: [{between: [a, b], rate: 1G}, {between: [c, d], rate: 1G}]", r"wire name 'wabc' clashes with link 'a-b'"),
]


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in BAD_SPECS], ids=[i for i, _, _ in BAD_SPECS])
def test_bad_specs(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        loads_topology(text, path="bad.yaml")
    assert re.search(message, str(info.value)), str(info.value)
    assert str(info.value).startswith("bad.yaml: ")
    assert info.value.path == "bad.yaml"


def test_bad_spec_table_is_big_enough() -> None:
    assert len(BAD_SPECS) >= 15


def test_presets_all_load() -> None:
    presets = list_presets()
    assert {"two-site", "local", "xinjiang-coastal", "east-data-west"} <= set(presets)
    for name in presets:
        spec = load_topology(name)
        assert spec.name == name
        assert spec.source == f"preset:{name}"
        assert 0 < sum(s.host_count for s in spec.sites) <= 12, "presets must stay small enough for 2 cores"


def test_two_site_preset_matches_the_interface() -> None:
    spec = load_topology("two-site")
    assert [(s.name, s.place, s.hosts) for s in spec.sites] == [
        ("remote", "urumqi", (("gpu", 2),)),
        ("city", "shanghai", (("gpu", 2), ("client", 2))),
    ]
    (link,) = spec.links
    assert link.delay_ms == 25.0 and link.forward.rate_mbps == 1000.0


def test_local_preset_has_one_site_and_no_links() -> None:
    spec = load_topology("local")
    assert len(spec.sites) == 1 and spec.links == ()
    assert spec.sites[0].hosts == (("gpu", 4), ("client", 2))


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(SpecError, match=r"unknown topology 'two-sites'; did you mean 'two-site'.*presets: .*local"):
        load_topology("two-sites")


def test_missing_file() -> None:
    with pytest.raises(SpecError, match=r"nowhere\.yaml: no such file"):
        load_topology("/nowhere/nowhere.yaml")


def test_load_from_file_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(spec_text(GOOD).replace("name: tiny\n", ""))
    spec = load_topology(str(path))
    assert spec.name == "mine"  # the file's stem when no name is given
    assert spec.source == str(path)
    monkeypatch.setenv("CORRIDOR_TOPOLOGIES", str(tmp_path))
    assert list_presets() == ["mine"]
    assert load_topology("mine").source == "preset:mine"


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("sites: {urumqi: {code: TOOLONG}}\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: sites\.urumqi\.code: "):
        load_topology(str(path))


def test_override_links_sweeps() -> None:
    spec = load_topology("xinjiang-coastal")
    fast = override_links(spec, rate="10Gbit", loss="0.1%", queue="2bdp")
    assert all(link.forward.rate_mbps == 10_000 and link.reverse.rate_mbps == 10_000 for link in fast.links)
    assert all(link.forward.loss == 0.001 for link in fast.links)
    assert fast.overrides == ("rate=10Gbit, loss=0.1%, queue=2bdp",)
    assert spec.links[0].forward.rate_mbps == 1000  # the original is untouched
    one = override_links(spec, delay="5ms", links=["urumqi-beijing"])
    assert one.link("urumqi-beijing").delay_ms == 5.0 and one.link("urumqi-beijing").route is None
    assert one.link("hami-beijing").route is not None
    scaled = override_links(spec, delay_scale=2.0)
    assert all(link.delay_scale == 2.0 for link in scaled.links)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": "fast"}, r"override\.rate: cannot read 'fast'"),
        ({"rate": "0Mbit"}, r"override\.rate: rate '0Mbit' is out of range"),
        ({"loss": 1.5}, r"override\.loss: 1\.5 is out of range"),
        ({"delay": "20s"}, r"override\.delay: delay '20s' is absurd"),
        ({"delay_scale": 0}, r"override\.delay_scale: 0 must be above 0"),
        ({"links": ["urumqi-paris"]}, r"override\.links: unknown link 'urumqi-paris'"),
        ({"delay": "1ms", "jitter": "5ms"}, r"jitter 5 ms exceeds the delay 1 ms"),
        ({"queue": "1000"}, r"override\.queue: .*has no unit"),
    ],
)
def test_override_links_refuses_bad_values(kwargs: dict[str, object], message: str) -> None:
    spec = load_topology("xinjiang-coastal")
    with pytest.raises(SpecError, match=message):
        override_links(spec, **kwargs)  # type: ignore[arg-type]


def test_spec_is_frozen_and_serialisable() -> None:
    spec = load_topology("two-site")
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    data = spec.to_dict()
    assert data["links"][0]["delay_ms"] == 25.0 and data["sites"][0]["code"] == "rem"
