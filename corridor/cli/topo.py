"""``corridor topo``: list, inspect and draw corridor topologies.

Stage: CLI (prints). Thin commands over :mod:`corridor.spec.topospec`,
:mod:`corridor.planning.planner` and :mod:`corridor.results.mapplot`; a bad spec is a one-line
message and exit status 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from corridor.cli.common import complete_topology, out_option
from corridor.cli.jsonout import echo_json
from corridor.cli.table import Column, fit_lines, render
from corridor.errors import CorridorError
from corridor.geography.fibre import explain, floor_ms
from corridor.links.contract import LinkDirection, bdp_bytes
from corridor.planning.plan import Plan, WanLinkPlan
from corridor.planning.points import plan_for_topology
from corridor.spec.topospec import list_presets, load_topology, topologies_dir
from corridor.spec.units import format_bytes, format_rate
from corridor.validation.latency import POLICY_RATIO


class TopologyError(click.ClickException):
    """A spec or plan problem, shown as one sentence; exit status 2 like a usage error."""

    exit_code = 2


def load_plan(name_or_path: str) -> Plan:
    """Load and plan a topology, turning library errors into a click error (exit 2)."""
    try:
        return plan_for_topology(name_or_path)
    except CorridorError as exc:
        raise TopologyError(str(exc)) from None


def _table(rows: list[list[str]], right: set[int] | None = None, wrap: set[int] | None = None,
           drop: dict[int, int] | None = None, wide: bool = False) -> list[str]:
    """``rows[0]`` is the header; ``wrap`` columns may wrap, ``drop`` maps a column to its drop order."""
    right, wrap, drop = right or set(), wrap or set(), drop or {}
    columns = [Column(head, right=i in right, wrap=i in wrap, drop_order=drop.get(i, 0))
               for i, head in enumerate(rows[0])]
    return render(columns, rows[1:], wide=wide)


def _pair(fmt: str, a: object, b: object) -> str:
    """One value when both directions agree, ``a/b`` (a->b / b->a) when they differ."""
    sa, sb = fmt.format(a), fmt.format(b)
    return sa if sa == sb else f"{sa}/{sb}"


def _loss(d: LinkDirection) -> str:
    if d.burst_loss is not None:
        return f"GE~{d.burst_loss.mean_loss():.2g}"
    return f"{d.loss:.2g}" if d.loss else "0"


def _queue(d: LinkDirection) -> str:
    if d.queue_packets is not None:
        return f"{d.queue_packets}p"
    return format_bytes(d.queue_bytes)


def _route_cell(link: WanLinkPlan) -> str:
    d = link.derivation
    if d.source == "route":
        return f"route ({len(d.waypoints)} wp)" if d.waypoints else "route (direct)"
    return {"great-circle": "great circle", "distance": "distance", "explicit-delay": "explicit delay"}[d.source]


def _link_rows(plan: Plan) -> list[list[str]]:
    rows = [["link", "route", "gc km", "fibre km", "stretch", "one-way ms", "RTT ms", "rate", "BDP", "queue",
             "loss", "jitter"]]
    for link in plan.wan_links:
        d, ab, ba = link.derivation, link.a_to_b, link.b_to_a
        rows.append([
            link.name,
            _route_cell(link),
            f"{d.great_circle_km:,.0f}" if d.great_circle_km is not None else "-",
            f"{d.path_km:,.0f}" if d.path_km is not None else "-",
            f"{d.stretch:.2f}" if d.stretch is not None else "-",
            _pair("{:.2f}", ab.delay_ms, ba.delay_ms),
            f"{link.rtt_ms:.2f}",
            format_rate(ab.rate_mbps) if ab.rate_mbps == ba.rate_mbps
            else f"{format_rate(ab.rate_mbps)}/{format_rate(ba.rate_mbps)}",
            _pair("{}", format_bytes(bdp_bytes(ab.rate_mbps, link.rtt_ms)),
                  format_bytes(bdp_bytes(ba.rate_mbps, link.rtt_ms))),
            _pair("{}", _queue(ab), _queue(ba)),
            _pair("{}", _loss(ab), _loss(ba)),
            _pair("{:g}us", ab.jitter_ms * 1e3, ba.jitter_ms * 1e3),
        ])
    return rows


def _makeup_rows(plan: Plan) -> list[list[str]]:
    """Per link: its network layer, the shares of its one-way delay (a->b) that are fibre, equipment and layer
    overhead, and the delay over the theoretical one (great circle in fibre) against the 1.5x policy target."""
    rows = [["link", "layer", "fibre", "equipment", "layer overhead", "x theoretical", f"<= {POLICY_RATIO:g}x"]]
    for link in plan.wan_links:
        d = link.derivation
        total = d.propagation_ms + d.equipment_ms + d.layer_ms
        if d.source == "explicit-delay" or total <= 0:
            shares = ["-", "-", "-"]
        else:
            shares = [f"{part / total:.0%}" for part in (d.propagation_ms, d.equipment_ms, d.layer_ms)]
        if d.great_circle_km and d.source != "explicit-delay":
            ratio = link.a_to_b.delay_ms / floor_ms(d.great_circle_km, d.fibre if d.fibre else "smf")
            ratio_cells = [f"{ratio:.2f}", "yes" if ratio <= POLICY_RATIO else "no"]
        else:
            ratio_cells = ["-", "-"]
        rows.append([link.name, d.layer or "fibre only", *shares, *ratio_cells])
    return rows


def _path_rows(plan: Plan) -> list[list[str]]:
    rows = [["from", "to", "hops", "one-way ms", "RTT ms", "bottleneck", "loss", "via"]]
    names = [s.name for s in plan.sites]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            try:
                forward = plan.path_params(a, b)
                back = plan.path_params(b, a)
            except CorridorError:
                rows.append([a, b, "-", "unreachable", "-", "-", "-", "-"])
                continue
            rows.append([
                a,
                b,
                str(len(forward.wan_links)),
                _pair("{:.2f}", forward.one_way_ms, back.one_way_ms),
                f"{forward.rtt_ms:.2f}",
                format_rate(min(forward.rate_mbps, back.rate_mbps)),
                f"{forward.loss:.2g}" if forward.loss else "0",
                " > ".join(forward.wan_links),
            ])
    return rows


def show_lines(plan: Plan, *, derivation: bool = True, wide: bool = False) -> list[str]:
    """The text of ``corridor topo show``, fitted to the terminal unless ``wide``."""
    lines = [f"{plan.name}: {plan.meta.get('description', '')}".rstrip(": "), f"source: {plan.source}"]
    if plan.meta.get("overrides"):
        lines.append(f"overrides: {'; '.join(plan.meta['overrides'])}")
    lines += ["", "Sites"]
    site_rows = [["site", "code", "kind", "lat", "lon", "subnet", "fabric (per host, one way)", "hosts"]]
    for s in plan.sites:
        hosts = " ".join(h.name for h in s.hosts) or "-"
        fabric = f"{format_rate(s.host_rate_mbps)}, {s.fabric_one_way_ms * 1e3:g}us ({s.fabric_source})"
        site_rows.append([s.name, s.code, s.kind, f"{s.lat:.2f}", f"{s.lon:.2f}", s.subnet, fabric, hosts])
    lines += _table(site_rows, right={3, 4}, wrap={6, 7}, drop={5: 1, 3: 2, 4: 2}, wide=wide)
    lines.append("  (fabric: each host's link to its site switch; every path counts it, the emulation leaves it "
                 "unshaped)")
    if not plan.wan_links:
        lines += ["", "No WAN links: every host is in one site (LAN only)."]
        return lines if wide else fit_lines(lines, hang=4)
    lines += ["", "WAN links (a/b = a->b / b->a where the directions differ; RTT idle, both directions)"]
    lines += _table(_link_rows(plan), right={2, 3, 4, 5, 6}, wrap={0, 1}, drop={1: 1, 2: 2, 4: 3, 11: 4},
                    wide=wide)
    lines += ["", "Delay make-up (one way, a->b: shares of the delay; theoretical = great circle in fibre, the "
              f"policy target is at most {POLICY_RATIO:g}x)"]
    lines += _table(_makeup_rows(plan), right={2, 3, 4, 5}, wrap={0}, wide=wide)
    if len(plan.sites) > 2:
        lines += ["", "Site-to-site paths (static routes, lowest one-way delay)"]
        lines += _table(_path_rows(plan), right={2, 3, 4}, wrap={7}, drop={2: 1}, wide=wide)
    if derivation:
        lines += ["", "Derivation (one way, a->b; check it by hand)"]
        for link in plan.wan_links:
            lines.append(f"  {link.name} ({link.a} -> {link.b}):")
            lines += [f"    {text}" for text in explain(link.derivation)]
            if abs(link.b_to_a.delay_ms - link.a_to_b.delay_ms) > 1e-9:
                lines.append(f"    b->a: {link.b_to_a.delay_ms:.3f} ms (given per direction)")
        model = plan.meta.get("model", {})
        if model:
            lines += [
                "",
                "  model: route slack {route_slack:g}, default stretch {default_stretch:g}, fibre {fibre}, "
                "amplifier every {amplifier_spacing_km:g} km ({amplifier_us:g} us), regenerator every "
                "{regen_spacing_km:g} km ({regen_us:g} us), {switches_per_link} switches x {switch_us:g} us".format(
                    **model
                ),
            ]
    return lines if wide else fit_lines(lines, hang=4)


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-able data, with RTT and BDP added per link."""
    data = dataclasses.asdict(plan)
    for link, raw in zip(plan.wan_links, data["wan_links"], strict=True):
        raw["rtt_ms"] = link.rtt_ms
        raw["bdp_bytes"] = {
            "a_to_b": bdp_bytes(link.a_to_b.rate_mbps, link.rtt_ms),
            "b_to_a": bdp_bytes(link.b_to_a.rate_mbps, link.rtt_ms),
        }
        for direction in ("a_to_b", "b_to_a"):
            raw[direction].pop("extra", None)
    return data


@click.group()
def topo() -> None:
    """List, inspect and draw corridor topologies (presets or YAML files)."""


@topo.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the presets as JSON.")
@click.option("--wide", is_flag=True, help="Descriptions on one line, however wide.")
def list_cmd(as_json: bool, wide: bool) -> None:
    """List the preset topologies."""
    presets = list_presets()
    if not presets:
        raise TopologyError(f"no presets found in {topologies_dir()}")
    rows = [["name", "sites", "links", "description"]]
    found: list[dict[str, object]] = []
    for name in presets:
        try:
            spec = load_topology(name)
        except CorridorError as exc:
            rows.append([name, "-", "-", f"(invalid: {exc})"])
            found.append({"name": name, "error": str(exc)})
            continue
        rows.append([name, str(len(spec.sites)), str(len(spec.links)), spec.description])
        found.append({"name": name, "sites": len(spec.sites), "links": len(spec.links),
                      "description": spec.description})
    if as_json:
        echo_json({"topologies": found})
        return
    for line in _table(rows, right={1, 2}, wrap={3}, wide=wide):
        click.echo(line)


@topo.command("show")
@click.argument("topology", shell_complete=complete_topology)
@click.option("--json", "as_json", is_flag=True, help="Print the whole plan as JSON.")
@click.option("--derivation/--no-derivation", default=True, show_default=True,
              help="Show how each link's delay was derived.")
@click.option("--wide", is_flag=True, help="Every column of every table, unwrapped, however wide.")
def show_cmd(topology: str, as_json: bool, derivation: bool, wide: bool) -> None:
    """Show sites, WAN links, paths and how each delay was derived.

    TOPOLOGY is a preset name (see `corridor topo list`) or a YAML file.
    """
    plan = load_plan(topology)
    if as_json:
        echo_json(plan_json(plan))
        return
    for line in show_lines(plan, derivation=derivation, wide=wide):
        click.echo(line)


@topo.command("map")
@click.argument("topology", shell_complete=complete_topology)
@out_option(required=True, type=click.Path(dir_okay=False, path_type=Path), help="Image to write: .png, .svg or .pdf.")
def map_cmd(topology: str, out: Path) -> None:
    """Draw a topology as a map (PNG, SVG or PDF).

    Sites sit on longitude/latitude, fibre follows its waypoints, and every
    link is labelled with its one-way delay. TOPOLOGY is a preset name or a
    YAML file.
    """
    from corridor.results.mapplot import FORMATS, draw_map  # matplotlib only when drawing

    if out.suffix.lower().lstrip(".") not in FORMATS:
        raise click.UsageError(f"cannot write {out.name!r}: the file must end in one of "
                               f"{', '.join('.' + f for f in FORMATS)}")
    plan = load_plan(topology)
    try:
        draw_map(plan, out)
    except CorridorError as exc:
        raise TopologyError(str(exc)) from None
    except OSError as exc:
        raise TopologyError(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(f"wrote {out}")


def register(cli: click.Group) -> None:
    """Add the ``topo`` group to the ``corridor`` command."""
    cli.add_command(topo)
