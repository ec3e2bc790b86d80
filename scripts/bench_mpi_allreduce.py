#!/usr/bin/env python3
"""Benchmark: OpenMPI's MPI_Allreduce against corridor's ring agent and the model, on the same corridor.

Stage: workload run (root). Brings TOPOLOGY up as a session (as ``corridor
up`` does), then for each size, back to back so the machine's load hits both
alike: mpirun's all-reduce (launched through ``corridor exec`` as its remote
agent; once per Open MPI algorithm asked for) and corridor's ring agent on the
same ranks, with the analytic ring model's time. Prints one table (median
times) and, with --json, the records.

    sudo .venv/bin/python scripts/bench_mpi_allreduce.py --sizes 1MiB..256MiB

Defaults: two-site at 200 Mbit/s and 25 ms one way, ranks rem-gpu1, rem-gpu2,
cty-gpu1, cty-gpu2 (2 per site), Open MPI's own choice and its ring (algorithm 4).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corridor.cli.bench_collective import parse_sizes  # noqa: E402
from corridor.errors import CorridorError  # noqa: E402
from corridor.spec.units import format_bytes  # noqa: E402

DEFAULT_RANKS = "rem-gpu1,rem-gpu2,cty-gpu1,cty-gpu2"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    p.add_argument("--topology", default="two-site")
    p.add_argument("--rate", default="200Mbit", help="every WAN link's rate")
    p.add_argument("--delay", default="25ms", help="every WAN link's one-way delay")
    p.add_argument("--link-backend", default="auto", choices=("auto", "netem", "userspace"))
    p.add_argument("--sizes", default="1MiB..256MiB", help="FIRST..LAST (doubling) or a comma list")
    p.add_argument("--ranks", default=DEFAULT_RANKS, help="hosts in rank order, comma separated")
    p.add_argument("--iters", type=int, default=3, help="timed runs per size and implementation (median)")
    p.add_argument("--mpi-algorithms", default="default,ring",
                   help="Open MPI all-reduce algorithms, comma separated (default, ring, rabenseifner, ...)")
    p.add_argument("--mca", action="append", default=[], metavar="KEY=VALUE",
                   help="an Open MPI MCA parameter for every mpirun (repeatable), e.g. btl_tcp_eager_limit=8388608")
    p.add_argument("--json", action="store_true", help="also print every record as a JSON line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    from corridor.emulation.session import open_session
    from corridor.planning.planner import build_plan
    from corridor.spec.topospec import load_topology, override_links
    from corridor.tools.mpibench import ALLREDUCE_ALGORITHMS, missing_reason, run_mpi_allreduce
    from corridor.workloads.training.run import path_fn_for, run_collective_sweep

    try:
        sizes = parse_sizes(args.sizes)
    except Exception as exc:  # click.BadParameter outside click
        print(f"--sizes: {exc}", file=sys.stderr)
        return 2
    algorithms = [a.strip() for a in args.mpi_algorithms.split(",") if a.strip()]
    bad = [a for a in algorithms if a not in ALLREDUCE_ALGORITHMS]
    if bad:
        print(f"--mpi-algorithms: unknown {bad[0]!r}; choose from {', '.join(ALLREDUCE_ALGORITHMS)}", file=sys.stderr)
        return 2
    extra_mca = {}
    for item in args.mca:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--mca {item!r}: give KEY=VALUE, e.g. btl_tcp_eager_limit=8388608", file=sys.stderr)
            return 2
        extra_mca[key.strip()] = value.strip()
    reason = missing_reason()
    if reason is not None:
        print(f"cannot run OpenMPI here: {reason}", file=sys.stderr)
        return 1
    ranks = [h.strip() for h in args.ranks.split(",") if h.strip()]
    rows: list[dict[str, Any]] = []
    try:
        plan = build_plan(override_links(load_topology(args.topology), rate=args.rate, delay=args.delay))
        with open_session(plan, name=f"mpibench-{os.getpid()}", backend=args.link_backend) as (net, info):
            print(f"# {plan.name}, {args.rate}, {args.delay} one way, backend {info.backend}; ranks "
                  f"{', '.join(ranks)}; median of {args.iters}"
                  + "".join(f"; --mca {k} {v}" for k, v in extra_mca.items()), file=sys.stderr)
            for size in sizes:
                row: dict[str, Any] = {"size_bytes": size}
                for algo in algorithms:
                    rec = run_mpi_allreduce(info, hosts=ranks, sizes_bytes=[size], iters=args.iters, warmup=1,
                                            algorithm=algo, timeout_s=1800, extra_mca=extra_mca)[0]
                    row[f"mpi_{algo}"] = rec
                ring = run_collective_sweep(net, hosts=ranks, algorithm="ring", sizes_bytes=[size],
                                            iters=args.iters, timeout_s=1800, path_fn=path_fn_for(plan))[0]
                row["corridor_ring"] = ring
                rows.append(row)
                print("  ".join(f"{k} {v['time_s'] * 1e3:.0f} ms" for k, v in row.items() if isinstance(v, dict))
                      + f"  ({format_bytes(size)})", file=sys.stderr)
    except CorridorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; the network was torn down", file=sys.stderr)
        return 130
    for line in table_lines(rows, algorithms):
        print(line)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    return 0


def table_lines(rows: list[dict[str, Any]], algorithms: list[str]) -> list[str]:
    """size, each MPI algorithm's time, the ring agent's, the model's, and each MPI time against the ring agent."""
    head = ["size", *[f"mpi_{a}_ms" for a in algorithms], "ring_ms", "model_ms",
            *[f"{a}_vs_ring_%" for a in algorithms], "ring_vs_model_%"]
    table = [head]
    for row in rows:
        ring = row["corridor_ring"]
        model = ring.get("predicted_time_s")
        cells = [format_bytes(row["size_bytes"])]
        cells += [f"{row[f'mpi_{a}']['time_s'] * 1e3:.1f}" for a in algorithms]
        cells += [f"{ring['time_s'] * 1e3:.1f}", f"{model * 1e3:.1f}" if model else "-"]
        cells += [f"{(row[f'mpi_{a}']['time_s'] / ring['time_s'] - 1) * 100:+.1f}" for a in algorithms]
        cells += [f"{(ring['time_s'] / model - 1) * 100:+.1f}" if model else "-"]
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in table]


if __name__ == "__main__":
    sys.exit(main())
