"""CLI: ``corridor place`` (which server runs what), and the cluster side of ``corridor doctor --cluster``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from corridor.cli.common import complete_topology, load_plan_or_fail
from corridor.cli.jsonout import echo_json
from corridor.cli.table import Column, render


def register(cli: click.Group) -> None:
    cli.add_command(place)


@click.command()
@click.argument("topology", shell_complete=complete_topology)
@click.option("--cluster", "cluster_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The cluster file: servers, their cores, and optional pins (see docs/cluster.md).")
@click.option("--json", "as_json", is_flag=True, help="Print the assignment as JSON.")
@click.option("--measure-tunnels", is_flag=True,
              help="Also make a VXLAN tunnel between each pair of servers that a link crosses, measure its RTT and "
                   "rate over ssh (root on the servers), remove it, and refuse a link its tunnel cannot carry.")
def place(topology: str, cluster_file: Path, as_json: bool, measure_tunnels: bool) -> None:
    """Show which server of a cluster would run each site and each WAN link's wire.

    Whole sites go to one server (the LAN never crosses servers); each wire, which runs its
    link's delay line, goes where the load balances, counting one core per link direction,
    never more than a server's stated cores. Nothing is built and nothing is contacted,
    unless --measure-tunnels is given (exit 1 when a link crosses a tunnel that cannot
    carry it). TOPOLOGY is a preset name or a YAML file.
    """
    from corridor.cluster.placer import place as place_plan
    from corridor.cluster.spec import load_cluster

    plan = load_plan_or_fail(topology)
    cluster = load_cluster(cluster_file)
    placement = place_plan(plan, cluster)
    verdicts = _measure_tunnels(plan, cluster, placement, quiet=as_json) if measure_tunnels else None
    ok = verdicts is None or all(v.ok for v in verdicts)
    if as_json:
        out = placement.as_dict()
        if verdicts is not None:
            out["tunnels"] = [v.as_dict() for v in verdicts]
            out["tunnels_ok"] = ok
        echo_json(out)
        sys.exit(0 if ok else 1)
    for line in placement.lines():
        click.echo(line)
    if verdicts is not None:
        click.echo("  tunnels (VXLAN, measured):" if verdicts else "  tunnels: none needed (no link crosses servers)")
        for v in verdicts:
            click.echo(f"    {v.link} ({v.servers[0]} <-> {v.servers[1]}): RTT {v.tunnel.rtt_ms:.3f} ms, "
                       f"{v.tunnel.throughput_mbps:,.0f} Mbit/s; {'ok' if v.ok else 'REFUSED'}: {v.reason}")
        sys.exit(0 if ok else 1)


def _measure_tunnels(plan: Any, cluster: Any, placement: Any, *, quiet: bool) -> list[Any]:
    """Measure one tunnel per pair of servers a link crosses, and judge each cross-server link against it."""
    from corridor.cluster.tunnels import judge_cross_links, measure_tunnel

    cross = []
    for c in placement.cross_links:
        direction = plan.link(c.link).a_to_b
        cross.append((c.link, c.router_server, c.wire_server, direction.rate_mbps, direction.delay_ms))
    tunnels = {}
    for _link, s1, s2, _rate, _delay in cross:
        pair = frozenset((s1, s2))
        if pair not in tunnels:
            if not quiet:
                click.echo(f"measuring a VXLAN tunnel between {s1} and {s2} ...", err=True)
            tunnels[pair] = measure_tunnel(cluster, cluster.server(s1), cluster.server(s2))
    return judge_cross_links(cross, tunnels)


def doctor_cluster(cluster_file: Path, *, as_json: bool) -> None:
    """Check every server of ``cluster_file``; print a table (or JSON) and exit 1 when any server fails."""
    from corridor import __version__
    from corridor.cluster.doctor import check_cluster
    from corridor.cluster.spec import load_cluster

    cluster = load_cluster(cluster_file)
    if not as_json:
        click.echo(f"checking {len(cluster.servers)} servers of {cluster_file} over ssh ...", err=True)
    reports = check_cluster(cluster)
    ok = all(r.ok for r in reports)
    if as_json:
        echo_json({"ok": ok, "cluster": str(cluster_file), "coordinator_version": __version__,
                   "servers": [r.as_dict() for r in reports]})
    else:
        rows = []
        for report in reports:
            for f in report.findings:
                mark = "ok" if f.ok else ("FAIL" if f.required else "warn")
                rows.append([report.server, mark, f.name, f.detail + (f"; fix: {f.fix}" if not f.ok and f.fix else "")])
        columns = [Column("server"), Column(""), Column("check"), Column("finding", wrap=True, min_width=30)]
        for line in render(columns, rows, indent=0):
            click.echo(line)
        for report in reports:
            click.echo(f"{report.server} ({report.destination}): "
                       + ("ready" if report.ok else "NOT READY until its FAIL lines are fixed"))
        click.echo(f"all {len(reports)} servers are ready" if ok
                   else f"{sum(not r.ok for r in reports)} of {len(reports)} servers are not ready")
    sys.exit(0 if ok else 1)
