"""CLI: ``corridor place`` (which server runs what), and the cluster side of ``corridor doctor --cluster``."""

from __future__ import annotations

import sys
from pathlib import Path

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
def place(topology: str, cluster_file: Path, as_json: bool) -> None:
    """Show which server of a cluster would run each site and each WAN link's wire.

    Whole sites go to one server (the LAN never crosses servers); each wire, which runs its
    link's delay line, goes where the load balances, counting one core per link direction,
    never more than a server's stated cores. Nothing is built and nothing is contacted.
    TOPOLOGY is a preset name or a YAML file.
    """
    from corridor.cluster.placer import place as place_plan
    from corridor.cluster.spec import load_cluster

    plan = load_plan_or_fail(topology)
    placement = place_plan(plan, load_cluster(cluster_file))
    if as_json:
        echo_json(placement.as_dict())
        return
    for line in placement.lines():
        click.echo(line)


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
