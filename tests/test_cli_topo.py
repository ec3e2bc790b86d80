"""``corridor topo`` through click's CliRunner: exit codes and what the user reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from corridor.cli import cli


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_list_shows_every_preset(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["topo", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["name", "sites", "links", "description"]
    rows = {line.split()[0]: line.split()[1:3] for line in lines[1:]}
    assert rows["two-site"] == ["2", "1"]
    assert rows["local"] == ["1", "0"]
    assert rows["xinjiang-coastal"] == ["6", "10"]
    assert rows["national-hubs"] == ["15", "17"]
    assert "east-data-west" in rows


def test_show_xinjiang_coastal_urumqi_beijing_in_band(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["topo", "show", "xinjiang-coastal", "--wide"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.strip().startswith("urumqi-beijing "))
    cells = row.split()
    one_way_ms = float(cells[cells.index("route") + 6])  # route (8 wp) gc fibre stretch one-way
    assert 15.0 <= one_way_ms <= 24.0
    assert float(cells[cells.index("route") + 7]) == pytest.approx(2 * one_way_ms, abs=0.011)  # RTT
    assert "1Gbit" in cells
    assert "Derivation" in result.output
    assert re.search(r"propagation: 3,570 km x 4\.897 us/km \(smf\) = 17\.\d+ ms", result.output)
    assert "route slack 1.3, default stretch 1.6" in result.output
    assert re.search(r"karamay\s+beijing\s+2\s+20\.\d\d", result.output)  # a two-hop path


def test_show_two_site(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["topo", "show", "two-site", "--no-derivation", "--wide"])
    assert result.exit_code == 0, result.output
    assert re.search(r"remote-city\s+explicit delay\s+3,267\s+-\s+-\s+25\.00\s+50\.00\s+1Gbit\s+6\.25MB\s+6\.25MB",
                     result.output), result.output
    assert "rem-gpu1 rem-gpu2" in result.output and "cty-cli2" in result.output
    assert "Derivation" not in result.output


def test_show_local_says_there_is_no_wan(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["topo", "show", "local"])
    assert result.exit_code == 0
    assert "No WAN links" in result.output


def test_show_json(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["topo", "show", "two-site", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    link = data["wan_links"][0]
    assert link["a_to_b"]["delay_ms"] == 25.0 and link["rtt_ms"] == 50.0
    assert link["bdp_bytes"]["a_to_b"] == 6_250_000
    assert data["sites"][0]["hosts"][0]["name"] == "rem-gpu1"
    assert data["source"] == "preset:two-site"


def test_show_asymmetric_file(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "asym.yaml"
    path.write_text(
        "sites: {urumqi: {code: u, hosts: {gpu: 1}}, shanghai: {code: s}}\n"
        "links: [{between: [urumqi, shanghai], delay: 20ms, rate: 1Gbit, reverse: {delay: 30ms, rate: 100Mbit}}]\n"
    )
    result = runner.invoke(cli, ["topo", "show", str(path)])
    assert result.exit_code == 0, result.output
    assert "20.00/30.00" in result.output and "1Gbit/100Mbit" in result.output
    assert "b->a: 30.000 ms" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["topo", "show", "atlantis"], "unknown topology 'atlantis'"),
        (["topo", "show", "two-sit"], "did you mean 'two-site'"),
        (["topo", "show", "/no/such/file.yaml"], "no such file"),
        (["topo", "map", "atlantis", "-o", "x.png"], "unknown topology 'atlantis'"),
    ],
)
def test_bad_topology_is_one_line_exit_2(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_bad_spec_file_names_file_and_key(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sites: {urumqi: {hostz: {gpu: 1}}}\n")
    result = runner.invoke(cli, ["topo", "show", str(path)])
    assert result.exit_code == 2
    assert "bad.yaml: sites.urumqi.hostz: unknown key 'hostz'; did you mean 'hosts'?" in result.output


def test_show_needs_an_argument(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["topo", "show"])
    assert result.exit_code == 2
    assert "Missing argument" in result.output


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_map_writes_an_image(runner: CliRunner, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"map.{suffix}"
    result = runner.invoke(cli, ["topo", "map", "xinjiang-coastal", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    data = out.read_bytes()
    if suffix == "png":
        assert data.startswith(b"\x89PNG")
    else:
        text = data.decode()
        assert "<svg" in text and "18.0 ms" in text and "Urumqi" in text


def test_map_refuses_unknown_format(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["topo", "map", "two-site", "-o", str(tmp_path / "map.bmp")])
    assert result.exit_code == 2
    assert "must end in one of .png, .svg, .pdf" in result.output


def test_map_unwritable_path(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["topo", "map", "two-site", "-o", str(tmp_path / "missing" / "map.png")])
    assert result.exit_code == 2
    assert "cannot write" in result.output and "Traceback" not in result.output


def test_topo_list_json_names_every_preset() -> None:
    import json as _json

    from click.testing import CliRunner

    from corridor.cli import cli as _cli

    result = CliRunner().invoke(_cli, ["topo", "list", "--json"])
    assert result.exit_code == 0, result.output
    names = {row["name"] for row in _json.loads(result.output)["topologies"]}
    assert {"two-site", "local", "xinjiang-coastal", "east-data-west"} <= names


def test_show_prints_layer_shares_and_policy_ratio(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["topo", "show", "national-hubs", "--wide"])
    assert result.exit_code == 0, result.output
    section = result.output.split("Delay make-up")[1].split("Site-to-site")[0]
    row = next(line.split() for line in section.splitlines() if line.strip().startswith("qingyang-shanghai "))
    # link, layer, fibre %, equipment %, layer %, x theoretical, within 1.5x
    assert row[1] == "private-ip"
    shares = [float(cell.rstrip("%")) for cell in row[2:5]]
    assert sum(shares) == pytest.approx(100, abs=1.5) and shares[2] > 20  # the IP layer's overhead is visible
    assert float(row[5]) > 1.5 and row[6] == "no"
    plain = runner.invoke(cli, ["topo", "show", "xinjiang-coastal", "--wide"]).output
    plain_rows = plain.split("Delay make-up")[1].split("Site-to-site")[0]
    urumqi_hami = next(line.split() for line in plain_rows.splitlines() if line.strip().startswith("urumqi-hami "))
    assert urumqi_hami[1:3] == ["fibre", "only"] and urumqi_hami[-1] == "yes"  # 1.40x: within the target
