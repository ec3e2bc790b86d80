"""CLI: ``corridor capture``: run an experiment while recording one WAN link into pcaps."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from corridor.cli.common import (
    BACKEND_OPTION,
    CLUSTER_OPTION,
    check_pins_or_fail,
    complete_experiment,
    fail,
    load_cluster_or_fail,
)
from corridor.cli.jsonout import echo_json
from corridor.errors import CorridorError


def register(cli: click.Group) -> None:
    cli.add_command(capture)


@click.command()
@click.argument("experiment", required=False, shell_complete=complete_experiment)
@click.option("--link", "link_name", required=True, help="The WAN link to record (see `corridor topo show`).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run directory to write (default: runs/NAME-capture-UTCTIME); pcaps go to OUT/captures/.")
@BACKEND_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the capture summary as JSON.")
@CLUSTER_OPTION
def capture(experiment: str | None, link_name: str, out_dir: str | None, link_backend: str, as_json: bool,
            cluster_file: Any) -> None:
    """Run EXPERIMENT (default: quickstart) and record WAN link LINK into a pcap per network.

    Every network the run builds that has LINK gets one capture, taken inside the link's
    wire node on the interface facing end A, so each packet crossing the link is in it once.
    Each pcap is converted to a generic message trace (JSON lines) beside it, and its
    message count and bytes are printed next to what the inference agents recorded they
    sent, so a capture can be checked against the run. Replay a trace with the workloads'
    trace options, or inspect it with `corridor trace info`. With --cluster FILE the
    networks are spread over the file's servers as with `corridor run --cluster`; tcpdump
    runs on the server of the link's wire and its pcap comes back over ssh.
    """
    from corridor.emulation.network import CorridorNetwork
    from corridor.planning.points import plan_for
    from corridor.results.rundir import read_run
    from corridor.spec.experiment import load_experiment
    from corridor.tools import capture as cap
    from corridor.workloads.inference import run as inference
    from corridor.workloads.runner import cluster_network_factory, run_experiment
    try:
        exp = load_experiment(experiment or "quickstart")
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    cluster = load_cluster_or_fail(cluster_file)
    if cluster is not None:
        check_pins_or_fail(exp, cluster)
    build = CorridorNetwork if cluster is None else cluster_network_factory(cluster)
    try:
        from corridor.planning.points import expand_points

        links = {lk.name for point in expand_points(exp)
                 for lk in plan_for(exp, exp.placement(point.network_key[0]), point.network_key[1]).wan_links}
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    if link_name not in links:
        fail(f"no network of {exp.name} has a WAN link named {link_name!r}; its WAN links are "
             f"{', '.join(sorted(links)) or 'none'}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = out_dir or os.path.join(os.getcwd(), "runs", f"{exp.name}-capture-{stamp}")
    folder = os.path.join(out, "captures")
    captures: list[dict[str, Any]] = []
    current: dict[str, Any] = {}

    def plan_builder(exp_: Any, placement: Any, sweep: Any) -> Any:
        current["placement"] = placement.name
        current["sweep"] = sweep
        return plan_for(exp_, placement, sweep)

    @contextlib.contextmanager
    def network_factory(plan: Any, *, backend: str, time_scale: float, seed: int = 1) -> Iterator[Any]:
        with build(plan, backend=backend, time_scale=time_scale, seed=seed) as net:
            if link_name not in {lk.name for lk in plan.wan_links}:
                yield net
                return
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{len(captures) + 1:02d}-{current.get('placement', 'net')}-{link_name}.pcap")
            with net.capture(link_name, path) as info:
                info["placement"] = current.get("placement")
                captures.append(info)
                yield net

    from corridor.cli.progress import ProgressLine

    try:
        with ProgressLine() as bar:
            run_experiment(exp, out, backend=None if link_backend == "auto" else link_backend,
                           plan_builder=plan_builder, network_factory=network_factory,
                           progress=lambda p: bar.step(f"[{p.done}/{p.total}] {p.message}", done=p.done,
                                                       total=p.total, eta_s=p.eta_s, message=p.message),
                           command=sys.argv)
    except KeyboardInterrupt:
        fail(f"interrupted; finished points and captures so far are in {out}", code=130)
    except CorridorError as exc:
        fail(f"{exc}; finished points and captures so far are in {out}", code=exc.exit_code)
    if not captures:
        fail(f"no network of {exp.name} has a WAN link named {link_name!r}; see `corridor topo show`")

    records = read_run(out).records
    rows = []
    for info in captures:
        trace_path = info["path"][: -len(".pcap")] + ".jsonl"
        messages, size = cap.to_trace(info["path"], trace_path)
        mine = [r for r in records if r.get("placement") == info["placement"]]
        sent_messages, sent_bytes = inference.traffic_totals(mine)
        training = any(r.get("kind") == "train_step" for r in mine)
        rows.append({
            "placement": info["placement"], "server": info.get("server"), "pcap": info["path"], "trace": trace_path,
            "messages": messages, "bytes": size, "dropped_by_kernel": info.get("dropped_by_kernel", 0),
            "agents_messages": sent_messages, "agents_bytes": sent_bytes,
            "comparable": not training,
            "match": (messages, size) == (sent_messages, sent_bytes) if not training else None,
        })
    mismatch = any(row["comparable"] and not row["match"] for row in rows)
    if as_json:
        echo_json({"run": out, "link": link_name, "captures": rows})
        sys.exit(1 if mismatch else 0)
    click.echo(f"run directory {out}; link {link_name}")
    for row in rows:
        if row["comparable"]:
            verdict = "matches the agents' records" if row["match"] else "DIFFERS from the agents' records"
        else:
            verdict = "not compared: training traffic shares this capture (agents record inference traffic only)"
        click.echo(f"{row['pcap']}: {row['messages']} messages, {row['bytes']} bytes "
                   f"(agents sent {row['agents_messages']} / {row['agents_bytes']}); {verdict}; "
                   f"dropped by kernel {row['dropped_by_kernel']}")
        click.echo(f"  message trace: {row['trace']}")
        if row["server"]:
            click.echo(f"  recorded on server {row['server']}, where the link's wire runs; the pcap came back over ssh")
    if mismatch:
        sys.exit(1)
