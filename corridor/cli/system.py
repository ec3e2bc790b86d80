"""CLI: ``corridor doctor``, ``corridor clean`` and ``corridor check``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from corridor.cli.common import (
    BACKEND_OPTION,
    CLUSTER_OPTION,
    Duration,
    complete_topology,
    fail,
    link_override_options,
    load_cluster_or_fail,
    load_plan_or_fail,
    network_or_fail,
)
from corridor.cli.jsonout import echo_json
from corridor.cli.table import Column, render
from corridor.errors import CorridorError


def check_table_lines(results: list[Any], *, width: int | None = None) -> list[str]:
    """``corridor check``'s table: configured against measured per link and metric, fitted to the terminal."""
    columns = [Column("link", wrap=True, min_width=12), Column("metric"), Column("configured", right=True),
               Column("measured", right=True), Column("error", right=True), Column("result", wrap=True, min_width=24)]
    rows = []
    for r in results:
        measured = "-" if r.measured is None else f"{r.measured:.4g}"
        err = "-" if r.error_pct is None else f"{r.error_pct:+.1f}%"
        rows.append([r.link, r.metric, f"{r.expected:.4g}", measured, err,
                     f"{'ok' if r.ok else 'OUT OF TOLERANCE'} ({r.unit}; {r.detail})"])
    return render(columns, rows, width=width, indent=0)


def register(cli: click.Group) -> None:
    cli.add_command(doctor)
    cli.add_command(clean)
    cli.add_command(check)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--cluster", "cluster_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Check every server of this cluster file over ssh instead of this machine.")
def doctor(as_json: bool, cluster_file: Path | None) -> None:
    """Check that this machine can emulate corridors, and say which link backend it will use.

    Looks for root, Mininet, mnexec, iproute2, iperf3 and ping, probes whether the kernel has
    sch_netem (in a scratch namespace that is removed afterwards) and names the link backend
    `--link-backend auto` would pick and why. Exit status 0 means emulation can run.
    With --cluster FILE it checks every server the file names instead (see docs/cluster.md):
    ssh with the key, root or sudo, Mininet, corridor at this version, the tools, sch_netem.
    """
    if cluster_file is not None:
        from corridor.cli.cluster import doctor_cluster

        doctor_cluster(cluster_file, as_json=as_json)
        return
    from corridor.tools.doctor import can_emulate, diagnose

    findings = diagnose()
    ok = can_emulate(findings)
    if as_json:
        echo_json({"ok": ok, "findings": [f.as_dict() for f in findings]})
    else:
        rows = []
        for f in findings:
            mark = "ok" if f.ok else ("FAIL" if f.required else "warn")
            rows.append([mark, f.name, f.detail + (f"; fix: {f.fix}" if not f.ok and f.fix else "")])
        for line in render([Column(""), Column("check"), Column("finding", wrap=True, min_width=30)], rows,
                           indent=0):
            click.echo(line)
        click.echo("emulation can run" if ok else "emulation cannot run until the FAIL lines are fixed")
    sys.exit(0 if ok else 1)


@click.command()
@click.option("--all", "include_live", is_flag=True,
              help="Also tear down networks whose corridor process is still running.")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@click.option("--cluster", "cluster_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Clean every server of this cluster file over ssh instead of this machine, each server by "
                   "the same rules on itself.")
def clean(include_live: bool, as_json: bool, cluster_file: Path | None) -> None:
    """Remove what crashed or killed corridor runs left behind, and only that.

    Ends the processes living in the network namespaces that dead runs recorded in
    /run/corridor (node shells, delay lines, agents, iperf3), which removes those
    namespaces and their interfaces, and deletes named scratch namespaces with the
    `corridor-` prefix. Nothing is matched by broad process names.

    With --cluster FILE every server the file names runs this same clean on itself
    over ssh, in parallel (docs/cluster.md); the exit status is 1 when a server could
    not be cleaned.
    """
    from corridor.emulation.state import clean as do_clean

    if cluster_file is not None:
        _clean_cluster(cluster_file, include_live=include_live, as_json=as_json)
        return
    if os.geteuid() != 0:
        fail("corridor clean needs root to end processes in network namespaces; run it with sudo", code=3)
    report = do_clean(include_live=include_live)
    if as_json:
        echo_json(report.as_dict())
        return
    dirs = list(getattr(report, "dirs_removed", []) or [])
    files = list(getattr(report, "files_removed", []) or [])
    problems = list(getattr(report, "problems", []) or [])
    if not report.runs and not report.netns_removed and not dirs and not files:
        click.echo("nothing to clean")
    for path in dirs:
        click.echo(f"removed scratch directory {path}")
    for path in files:
        click.echo(f"removed {path} (a state file its writer was killed before finishing)")
    for problem in problems:
        click.echo(f"skipped: {problem}", err=True)
    for run in report.runs:
        click.echo(f"removed run {run}")
    for name in report.netns_removed:
        click.echo(f"removed namespace {name}")
    if report.killed:
        click.echo(f"ended {len(report.killed)} processes")
    for live in report.skipped_live:
        click.echo(f"left running: {live} (its process is alive; use --all to tear it down anyway)")


def _clean_cluster(cluster_file: Path, *, include_live: bool, as_json: bool) -> None:
    from corridor.cluster.clean import clean_cluster
    from corridor.cluster.spec import load_cluster
    from corridor.emulation.state import clean as do_clean

    cluster = load_cluster(cluster_file)
    # This machine first: a run spread over the servers is recorded here, and ending its ssh sessions ends
    # its nodes and processes on every server.
    here = do_clean(include_live=include_live) if os.geteuid() == 0 else None
    if not as_json:
        if here is None:
            click.echo("not root: this machine's own dead runs were not cleaned (run with sudo)", err=True)
        click.echo(f"cleaning {len(cluster.servers)} servers of {cluster_file} over ssh ...", err=True)
    results = clean_cluster(cluster, include_live=include_live, forget=here.run_ids if here is not None else ())
    ok = all(r.ok for r in results)
    if as_json:
        echo_json({"ok": ok, "cluster": str(cluster_file),
                   "coordinator": here.as_dict() if here is not None else None,
                   "servers": [r.as_dict() for r in results]})
    else:
        if here is not None:
            said = [f"removed run {run}" for run in here.runs]
            if here.killed:
                said.append(f"ended {len(here.killed)} processes (ssh sessions of nodes on the servers among them)")
            for line in said or ["nothing to clean"]:
                click.echo(f"this machine: {line}")
        for result in results:
            for line in result.lines():
                click.echo(line)
        if not ok:
            click.echo(f"{sum(not r.ok for r in results)} of {len(results)} servers were not cleaned", err=True)
    sys.exit(0 if ok else 1)


@click.command()
@click.argument("topology", shell_complete=complete_topology)
@BACKEND_OPTION
@click.option("--link", "links", multiple=True, help="Check only this WAN link (repeatable).")
@click.option("--pings", default=200, show_default=True, help="Ping samples per link.")
@click.option("--duration", "duration_s", type=Duration(min_s=1.0), default="6s", show_default=True,
              help="TCP per direction, e.g. 6s.")
@click.option("--udp-packets", default=20000, show_default=True, help="UDP datagrams for the loss test.")
@click.option("--no-throughput", is_flag=True, help="Skip the TCP throughput tests.")
@click.option("--no-loss", is_flag=True, help="Skip the UDP loss test.")
@link_override_options
@click.option("--rtt-allowance", default="0ms", show_default=True,
              help="Extra RTT tolerance on top of 2 %, for hosts whose timers fire late (a qemu guest "
              "without KVM needs about 5ms).")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep every raw ping and iperf3 JSON output here, named by link and direction, with a "
                   "summary.json (a new or empty directory).")
@CLUSTER_OPTION
def check(topology: str, link_backend: str, links: tuple[str, ...], pings: int, duration_s: float,
          udp_packets: int, no_throughput: bool, no_loss: bool, rate: str | None, delay: str | None,
          loss: str | None, queue: str | None, rtt_allowance: str, as_json: bool, out_dir: Path | None,
          cluster_file: Path | None) -> None:
    """Build TOPOLOGY and measure every WAN link against its configuration.

    For each link, router to router across that link alone: RTT (ping), single-flow TCP
    throughput in both directions (iperf3, buffers sized for the path) and UDP loss.
    Prints configured against measured with the error, and exits 1 when any link is
    outside tolerance. Run this before trusting any experiment on a new machine.
    TOPOLOGY is a preset name (see `corridor topo list`) or a YAML file; --rate, --delay,
    --loss and --queue change every WAN link for this check (e.g. `--rate 10Gbit`).
    With --out DIR the tools' raw output and a summary.json are kept in DIR.
    With --cluster FILE the network is spread over the file's servers (docs/cluster.md):
    each link that crosses servers rides a VXLAN tunnel, measured first and taken off its
    wire's delay, and its RTT row shows the tunnel's share.
    """
    from corridor.tools.check import CheckOptions, RawOutputs, check_network, check_summary, write_check_dir

    plan = load_plan_or_fail(topology, rate=rate, delay=delay, loss=loss, queue=queue)
    for name in links:
        if name not in {link.name for link in plan.wan_links}:
            fail(f"no WAN link {name!r} in {plan.name}; its links are "
                 f"{', '.join(link.name for link in plan.wan_links) or 'none'}")
    if not plan.wan_links:
        fail(f"{plan.name} has no WAN link to check")
    if out_dir is not None and out_dir.exists() and any(out_dir.iterdir()):
        fail(f"--out {out_dir}: the directory is not empty; give a new or empty directory so no earlier "
             "check's files are mixed in")
    from corridor.errors import UnitError
    from corridor.spec.units import parse_duration_ms
    from corridor.tools.check import Tolerances

    try:
        allowance_ms = parse_duration_ms(rtt_allowance)
    except UnitError as exc:
        fail(f"--rtt-allowance: {exc}")
    if allowance_ms < 0:
        fail("--rtt-allowance must not be negative")
    options = CheckOptions(ping_count=pings, tcp_duration_s=duration_s, udp_packets=udp_packets,
                           measure_throughput=not no_throughput, measure_loss=not no_loss,
                           tolerances=Tolerances(rtt_allowance_ms=allowance_ms))
    raw = RawOutputs() if out_dir is not None else None
    cluster = load_cluster_or_fail(cluster_file)
    say = None if as_json else (lambda message: click.echo(f"... {message}", err=True))
    with network_or_fail(plan, link_backend, cluster=cluster, say=say) as net:
        if not as_json:
            click.echo(f"link backend: {net.backend} ({net.backend_reason})", err=True)
            if getattr(net, "layout", None) is not None:
                for line in net.layout.placement.lines():
                    click.echo(line, err=True)
        from corridor.cli.progress import ProgressLine

        try:
            with ProgressLine() as bar:
                results = check_network(net, options, progress=lambda m: bar.event(f"... {m}", message=m),
                                        links=list(links) or None, raw=raw)
        except CorridorError as exc:
            if out_dir is not None and raw is not None:  # what the tools said before the failure is the evidence
                write_check_dir(out_dir, check_summary(topology=plan.name, backend=net.backend,
                                                       backend_reason=net.backend_reason, options=options,
                                                       measurements=[], raw=raw, error=str(exc)), raw)
            raise
        backend, reason, layout = net.backend, net.backend_reason, getattr(net, "layout", None)
    if out_dir is not None and raw is not None:
        try:
            summary_path = write_check_dir(out_dir, check_summary(
                topology=plan.name, backend=backend, backend_reason=reason, options=options, measurements=results,
                raw=raw), raw)
        except OSError as exc:
            fail(f"--out {out_dir}: {exc.strerror or exc}")
        click.echo(f"kept {len(raw.files)} raw tool outputs and {summary_path}", err=True)
    ok = all(r.ok for r in results)
    if as_json:
        document = {"topology": plan.name, "backend": backend, "backend_reason": reason, "ok": ok,
                    "measurements": [r.as_dict() for r in results]}
        if layout is not None:
            document["cluster"] = layout.describe()
        echo_json(document)
    else:
        for line in check_table_lines(results):
            click.echo(line)
        click.echo("all links within tolerance" if ok else "some links are OUT OF TOLERANCE")
    sys.exit(0 if ok else 1)
