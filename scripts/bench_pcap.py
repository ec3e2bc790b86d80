#!/usr/bin/env python3
"""Benchmark: pcap to message trace, the struct header reader against scapy's full dissection.

Stage: analysis benchmark (no root, no network). Writes a synthetic capture of
N packets (TCP flows between a few hosts, HTTP streams and bulk transfers, some
UDP), converts the same file with both readers in one run, checks that the two
traces agree message for message, and prints packets/s of each and the ratio.

    .venv/bin/python scripts/bench_pcap.py --packets 200000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from corridor.traces import pcapgen
from corridor.traces.pcap import convert, convert_scapy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packets", type=int, default=200_000, help="packets in the synthetic capture")
    parser.add_argument("--hosts", type=int, default=4, help="hosts the flows run between")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mixed", action="store_true",
                        help="add IPv6, VLAN, ARP, ICMP and extension-header frames")
    parser.add_argument("--pcap", type=Path, default=None, help="keep the capture here (default: a temp file)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.pcap or Path(tmp) / "bench.pcap"
        t0 = time.perf_counter()
        packets = pcapgen.write_capture(path, args.packets, hosts=args.hosts, seed=args.seed, mixed=args.mixed)
        size = path.stat().st_size
        print(f"capture: {packets} packets, {size / 1e6:.1f} MB, written in {time.perf_counter() - t0:.1f} s")

        t0, c0 = time.perf_counter(), time.process_time()
        fast, fast_flows = convert(path)
        fast_s, fast_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"struct reader: {fast_s:8.2f} s  {packets / fast_s:12,.0f} packets/s  "
              f"(CPU {fast_cpu:.2f} s, {len(fast)} messages)")

        t0, c0 = time.perf_counter(), time.process_time()
        ref, ref_flows = convert_scapy(path)
        ref_s, ref_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"scapy        : {ref_s:8.2f} s  {packets / ref_s:12,.0f} packets/s  "
              f"(CPU {ref_cpu:.2f} s, {len(ref)} messages)")

    same = fast == ref and fast_flows == ref_flows
    # CPU time too: on a shared machine the wall-clock ratio moves with the neighbours' load
    print(f"ratio        : {ref_s / fast_s:.1f}x faster (wall clock), {ref_cpu / fast_cpu:.1f}x (CPU time); "
          f"traces identical: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
