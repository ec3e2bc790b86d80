"""MPI rank program: time MPI_Allreduce at each size and print one JSON line per size from rank 0.

Stage: workload run (inside each emulated host, one process per MPI rank,
started by ``mpirun``; see :mod:`corridor.tools.mpibench`). Unlike the rest of this
package it needs mpi4py and numpy (Debian: python3-mpi4py), imported in
:func:`main` so that importing the module costs nothing.

Each size: ``warmup`` untimed all-reduces, then ``iters`` timed ones, each
started after a barrier; an iteration's time is the slowest rank's, as the
collective is done when every rank is. Rank 0 prints
``{"kind": "mpi_allreduce", "size_bytes": ..., "times_s": [...], ...}``.
Buffers are float32 with MPI_SUM, as nccl-tests' default all-reduce.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m corridor.agent.mpi_allreduce")
    parser.add_argument("--sizes", required=True, help="comma list of message sizes in bytes (multiples of 4)")
    parser.add_argument("--iters", type=int, default=3, help="timed all-reduces per size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed all-reduces per size first")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if not args.sizes or any(s <= 0 or s % 4 for s in args.sizes):
        parser.error("--sizes: positive multiples of 4 bytes (float32 elements)")
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be at least 1 and --warmup at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, n = comm.Get_rank(), comm.Get_size()
    hosts = comm.gather(MPI.Get_processor_name(), root=0)
    for size in args.sizes:
        send = np.full(size // 4, float(rank + 1), dtype=np.float32)
        recv = np.empty_like(send)
        for _ in range(args.warmup):
            comm.Allreduce(send, recv, op=MPI.SUM)
        times = []
        for _ in range(args.iters):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(send, recv, op=MPI.SUM)
            elapsed = time.perf_counter() - t0
            times.append(comm.allreduce(elapsed, op=MPI.MAX))
        # The sum of 1..n in every element: a wrong reduction is caught, not timed.
        expected = n * (n + 1) / 2
        ok = bool(recv[0] == expected and recv[-1] == expected)
        all_ok = comm.allreduce(ok, op=MPI.LAND)
        if rank == 0:
            print(json.dumps({"kind": "mpi_allreduce", "size_bytes": size, "n_ranks": n, "times_s": times,
                              "correct": all_ok, "hosts": hosts}), flush=True)
        del send, recv
    return 0


if __name__ == "__main__":
    sys.exit(main())
