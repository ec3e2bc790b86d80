"""CLI: ``corridor bench collective``, an nccl-tests style sweep over an emulated corridor.

Prints size, count (fp32 elements), time, algbw and busbw (nccl-tests formulas,
in Gbit/s so they compare with link rates), the analytic model's time and the
error, and the bytes that crossed the WAN. ``--local`` runs the same agents on
loopback (no root, no WAN) as a smoke test. ``--format nccl-tests`` prints
the same measurements in nccl-tests' table layout, for tools that parse it.
"""

from __future__ import annotations

import re
from typing import Any

import click

from corridor.agent.collectives import ALGORITHMS
from corridor.cli.common import BACKEND_OPTION, Duration, fail, load_plan_or_fail, network_or_fail
from corridor.cli.jsonout import echo_json_line
from corridor.cli.table import Column, render
from corridor.errors import CorridorError, UnitError
from corridor.spec.units import format_bytes, parse_size_bytes


def register(cli: click.Group) -> None:
    bench = cli.commands.get("bench")
    if not isinstance(bench, click.Group):
        raise RuntimeError("the 'bench' group must exist before bench_collective registers")
    bench.add_command(collective)


def parse_sizes(text: str) -> list[int]:
    """``"64KB..256MB"`` (doubling from the first to the last) or ``"1MB,4MB,16MB"``."""
    try:
        if ".." in text:
            lo_s, hi_s = text.split("..", 1)
            lo, hi = parse_size_bytes(lo_s), parse_size_bytes(hi_s)
            if lo <= 0 or hi < lo:
                raise click.BadParameter(f"{text!r}: need 0 < first <= last")
            sizes = []
            size = lo
            while size <= hi:
                sizes.append(size)
                size *= 2
            return sizes
        sizes = [parse_size_bytes(part) for part in re.split(r"\s*,\s*", text.strip()) if part]
    except UnitError as exc:
        raise click.BadParameter(str(exc)) from exc
    if not sizes or any(s <= 0 for s in sizes):
        raise click.BadParameter(f"{text!r}: sizes must be positive")
    return sizes


def table_lines(records: list[dict[str, Any]]) -> list[str]:
    head = ("size", "count", "time_ms", "algbw_Gbps", "busbw_Gbps", "pred_ms", "err_%", "wan_bytes")
    rows = [head]
    for r in records:
        pred = r.get("predicted_time_s")
        err = r.get("error_pct")
        rows.append((
            format_bytes(r["size_bytes"]),
            str(r["size_bytes"] // 4),
            f"{r['time_s'] * 1e3:.2f}",
            f"{r['algbw_gbps']:.3f}",
            f"{r['busbw_gbps']:.3f}",
            f"{pred * 1e3:.2f}" if pred is not None else "-",
            f"{err:+.1f}" if err is not None else "-",
            format_bytes(r["wan_bytes"]),
        ))
    return render([Column(name, right=True) for name in head], rows[1:], indent=0)


#: corridor algorithm -> (nccl-tests redop, root, ranks the count column divides the size by)
_NCCL_TESTS_OPS: dict[str, tuple[str, int, bool]] = {
    "all_reduce": ("sum", -1, False),
    "all_gather": ("none", -1, True),
    "reduce_scatter": ("sum", -1, True),
    "reduce": ("sum", 0, False),
}


def _nccl_time(time_us: float) -> str:
    """nccl-tests' time cell: fewer decimals as the time grows."""
    if time_us >= 10000.0:
        return f"{time_us:7.0f}"
    if time_us >= 100.0:
        return f"{time_us:7.1f}"
    return f"{time_us:7.2f}"


def _step(sizes: list[int]) -> str:
    ratios = {b / a for a, b in zip(sizes, sizes[1:], strict=False)}
    if len(ratios) == 1 and next(iter(ratios)).is_integer() and next(iter(ratios)) > 1:
        return f"{int(next(iter(ratios)))}(factor)"
    steps = {b - a for a, b in zip(sizes, sizes[1:], strict=False)}
    return f"{steps.pop() if len(steps) == 1 else 0}(bytes)"


def nccl_tests_lines(records: list[dict[str, Any]], *, ranks: list[str], header: str, iters: int,
                     warmup: int | None) -> list[str]:
    """``records`` (one ``collective`` record per size) as nccl-tests prints its table.

    Columns and number formats follow nccl-tests: size in bytes, count in fp32
    elements (per rank for all-gather and reduce-scatter), type, redop, root,
    then time in microseconds, algbw and busbw in GB/s (10^9 bytes/s) and
    ``#wrong``, out of place and again in place, and the closing out-of-bounds
    and average bus bandwidth lines. corridor moves bytes over TCP between
    hosts without GPU buffers: the in-place columns repeat the out-of-place
    figures, and ``#wrong`` is ``N/A`` (byte counts are checked, element values
    are not, as nccl-tests prints with ``-c 0``). Both are said in the header.
    """
    sizes = [int(r["size_bytes"]) for r in records]
    lines = [f"# corridor bench collective: {header}",
             f"# nThread 1 nGpus 1 minBytes {min(sizes, default=0)} maxBytes {max(sizes, default=0)} "
             f"step: {_step(sizes)} warmup iters: {warmup if warmup is not None else 'auto'} iters: {iters} "
             "agg iters: 1 validation: 0 graph: 0",
             "#", "# Using devices"]
    lines += [f"#  Rank {i:2d} on {host} (emulated host, no GPU)" for i, host in enumerate(ranks)]
    lines += ["#",
              "# corridor: in-place columns repeat the out-of-place measurement (no GPU buffers, so no in-place "
              "variant);",
              "# corridor: #wrong is N/A: byte counts are checked, element values are not (as with -c 0).",
              "#",
              f"# {'':>10}  {'':>12}  {'':>8}  {'':>6}  {'':>6}           out-of-place                       "
              "in-place          ",
              f"# {'size':>10}  {'count':>12}  {'type':>8}  {'redop':>6}  {'root':>6}  {'time':>7}  {'algbw':>6}  "
              f"{'busbw':>6} {'#wrong':>6}  {'time':>7}  {'algbw':>6}  {'busbw':>6} {'#wrong':>6}",
              f"# {'(B)':>10}  {'(elements)':>12}  {'':>8}  {'':>6}  {'':>6}  {'(us)':>7}  {'(GB/s)':>6}  "
              f"{'(GB/s)':>6}  {'':>5}  {'(us)':>7}  {'(GB/s)':>6}  {'(GB/s)':>6}  {'':>5}"]
    busbw_sum = 0.0
    for r in records:
        redop, root, per_rank = _NCCL_TESTS_OPS.get(ALGORITHMS.get(r["algorithm"], ""), ("sum", -1, False))
        count = r["size_bytes"] // 4 // (r["n_ranks"] if per_rank else 1)
        algbw = r["algbw_gbps"] / 8  # Gbit/s -> GB/s
        busbw = r["busbw_gbps"] / 8
        busbw_sum += 2 * busbw  # out of place and in place, as nccl-tests averages both
        result = f"  {_nccl_time(r['time_s'] * 1e6)}  {algbw:6.2f}  {busbw:6.2f}  {'N/A':>5}"
        lines.append(f"{r['size_bytes']:12d}  {count:12d}  {'float':>8}  {redop:>6}  {root:6d}{result}{result}")
    avg = busbw_sum / (2 * len(records)) if records else 0.0
    lines += ["# Out of bounds values : 0 OK", f"# Avg bus bandwidth    : {avg:g} ", "#"]
    return lines


@click.command()
@click.option("--topology", default="two-site", show_default=True, help="Preset name or topology file.")
@click.option("--algorithm", default="ring", show_default=True,
              type=click.Choice(["ring", "hierarchical", "halving_doubling", "all_gather", "reduce_scatter",
                                 "parameter_server"]))
@click.option("--sizes", default="64KiB..256MiB", show_default=True,
              help="FIRST..LAST (doubling) or a comma list, e.g. 1MB,16MB.")
@click.option("--ranks", default=None, help="Comma list of hosts, in rank order (default: every gpu host).")
@BACKEND_OPTION
@click.option("--rate", default=None, help="Override every WAN link's rate, e.g. 200Mbit.")
@click.option("--delay", default=None, help="Override every WAN link's one-way delay, e.g. 25ms.")
@click.option("--loss", default=None, help="Override every WAN link's loss, e.g. 0.01%.")
@click.option("--cc", default=None, type=click.Choice(["cubic", "bbr", "reno"]),
              help="TCP congestion control (default: the system's).")
@click.option("--streams", default=1, show_default=True, type=click.IntRange(1, 64), help="TCP streams per peer.")
@click.option("--socket-buffer", default=None, help="Pin SO_SNDBUF/SO_RCVBUF (e.g. 8MB); default autotuning.")
@click.option("--iters", default=5, show_default=True, type=click.IntRange(1, 1000),
              help="Timed runs per size, back to back; the median is reported.")
@click.option("--min-time", "min_time_s", default="2s", show_default=True, type=Duration(),
              help="Keep timing a size (up to 100 runs) until this long has passed, e.g. 2s.")
@click.option("--warmup", default=None, type=click.IntRange(0, 100),
              help="Untimed runs per size first (default: enough to move 64 MiB, from 2 to 5), so TCP has left "
                   "slow start and recovered from its overshoot.")
@click.option("--time-scale", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="k: rates / k, delays x k; times reported / k.")
@click.option("--timeout", "timeout_s", default="15min", show_default=True, type=Duration(min_s=1.0),
              help="For the whole sweep, e.g. 15min.")
@click.option("--local", is_flag=True, help="Run on loopback (no root, no WAN) instead of an emulated network.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON lines.")
@click.option("--format", "fmt", type=click.Choice(["table", "nccl-tests"]), default="table", show_default=True,
              help="Table layout: corridor's (with the model's prediction) or nccl-tests' (for its parsers).")
def collective(
    topology: str, algorithm: str, sizes: str, ranks: str | None, link_backend: str, rate: str | None,
    delay: str | None, loss: str | None, cc: str | None, streams: int, socket_buffer: str | None, iters: int,
    min_time_s: float, warmup: int | None, time_scale: float, timeout_s: float, local: bool, as_json: bool,
    fmt: str,
) -> None:
    """Sweep collective sizes across a corridor, nccl-tests style, with the model's prediction per size."""
    from corridor.emulation.api import LocalNetwork
    from corridor.planning.plan import PathParams
    from corridor.workloads.training.run import path_fn_for, run_collective_sweep

    size_list = parse_sizes(sizes)
    try:
        sock_buf = parse_size_bytes(socket_buffer) if socket_buffer else None
    except UnitError as exc:
        fail(f"--socket-buffer: {exc}")
    plan = _plan(topology, rate, delay, loss)
    if ranks:
        hosts = [h.strip() for h in ranks.split(",") if h.strip()]
        known = {h.name for h in plan.hosts()}
        bad = [h for h in hosts if h not in known]
        if bad:
            fail(f"--ranks: no host {bad[0]!r} in {plan.name}; hosts are {', '.join(sorted(known))}")
    else:
        hosts = [h.name for h in plan.hosts(role="gpu")]
    if len(hosts) < 2:
        fail("a collective needs at least two ranks; pass --ranks")

    from corridor.cli.progress import ProgressLine

    bar = ProgressLine()

    def progress(msg: str) -> None:
        if not as_json:
            bar.event(msg)

    try:
        if local:
            net: Any = LocalNetwork({h: plan.host(h).site for h in hosts}, time_scale=time_scale)

            def loopback(src: str, dst: str) -> PathParams:
                return PathParams(src, dst, 0.0, 0.01, 0.02, 0.0, 0, 0.0, ())

            records = run_collective_sweep(
                net, hosts=hosts, algorithm=algorithm, sizes_bytes=size_list, iters=iters, warmup=warmup,
                min_time_s=min_time_s,
                timeout_s=timeout_s, cc=cc, streams=streams, sock_buf_bytes=sock_buf, path_fn=loopback,
                progress=progress,
            )
            header = f"{algorithm} on {len(hosts)} ranks, loopback (--local)"
        else:
            with network_or_fail(plan, link_backend, time_scale=time_scale) as net:
                progress(f"network up: backend {net.backend} ({net.backend_reason})")
                records = run_collective_sweep(
                    net, hosts=hosts, algorithm=algorithm, sizes_bytes=size_list, iters=iters, warmup=warmup,
                    min_time_s=min_time_s,
                    timeout_s=timeout_s, cc=cc, streams=streams, sock_buf_bytes=sock_buf,
                    path_fn=path_fn_for(plan), progress=progress,
                )
                header = (f"{algorithm} on {len(hosts)} ranks ({', '.join(hosts)}), {plan.name}, "
                          f"backend {net.backend}, k={time_scale:g}")
    except CorridorError as exc:
        bar.close()
        fail(str(exc), code=exc.exit_code)
    bar.close()
    if as_json:
        for rec in records:
            echo_json_line(rec)
        return
    if fmt == "nccl-tests":
        for line in nccl_tests_lines(records, ranks=hosts, header=header, iters=iters, warmup=warmup):
            click.echo(line)
        return
    click.echo(f"# {header}")
    for line in table_lines(records):
        click.echo(line)


def _plan(topology: str, rate: str | None, delay: str | None, loss: str | None) -> Any:
    if not (rate or delay or loss):
        return load_plan_or_fail(topology)
    from corridor.planning.points import plan_for_topology

    try:
        return plan_for_topology(topology, rate=rate, delay=delay, loss=loss)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
