#!/usr/bin/env python3
"""Measurement: how long a network takes to come up across servers, with node shells logged in ahead or not.

Stage: emulation measurement (root; needs /usr/sbin/sshd). Starts N local servers (network
namespaces with their own sshd, as tests/test_cluster_local_root.py does), then, in the
coordinator's namespace, builds each topology across them, alternating the two ways of
starting the nodes' shells:

- ``ahead``: corridor's way (corridor/cluster/logins.py), every shell logged in before
  Mininet makes the nodes, at most 8 to a server at a time;
- ``one by one``: Mininet's own, each shell logged in as its node is made (the logins
  ahead are switched off in the measuring process only).

A first build of each topology is not counted: it measures the tunnels between the
servers, which the process then keeps. Prints every build's time to up and to down,
each topology's medians and their ratio.

    sudo .venv/bin/python scripts/measure_cluster_build.py
    sudo .venv/bin/python scripts/measure_cluster_build.py --topology xinjiang-coastal --servers 3 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, statistics, sys, time
from corridor.cli.topo import load_plan
from corridor.cluster.logins import ShellLogins
from corridor.cluster.spec import load_cluster
from corridor.emulation.network import CorridorNetwork

cluster = load_cluster(sys.argv[1])
topologies, repeat = sys.argv[2].split(","), int(sys.argv[3])
ahead_start = ShellLogins.start


def build(plan, ahead):
    ShellLogins.start = ahead_start if ahead else (lambda self, nodes, record=None: None)
    began = time.monotonic()
    with CorridorNetwork(plan, backend="userspace", cluster=cluster) as net:
        up = time.monotonic() - began
        logins = net.describe()["cluster"].get("shell_logins", {})
    return up, time.monotonic() - began, logins


for name in topologies:
    plan = load_plan(name)
    build(plan, True)  # measures the tunnels this process then keeps; not counted
    times = {True: [], False: []}
    for i in range(repeat):
        for ahead in ((True, False) if i % 2 == 0 else (False, True)):
            up, total, logins = build(plan, ahead)
            times[ahead].append(up)
            print(json.dumps({"topology": name, "ahead": ahead, "up_s": round(up, 3), "up_down_s": round(total, 3),
                              "shells_ahead": logins.get("taken", 0), "login_s": logins.get("seconds")}), flush=True)
    print(json.dumps({"topology": name, "median_up_ahead_s": round(statistics.median(times[True]), 3),
                      "median_up_one_by_one_s": round(statistics.median(times[False]), 3),
                      "ratio": round(statistics.median(times[True]) / statistics.median(times[False]), 3)}),
          flush=True)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topology", default="two-site,xinjiang-coastal", help="comma-separated presets or files")
    parser.add_argument("--servers", type=int, default=2, help="local servers to spread each network over")
    parser.add_argument("--repeat", type=int, default=2, help="builds of each kind per topology")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root: it makes namespaces and starts sshd in them", file=sys.stderr)
        return 2
    if args.servers < 2 or args.repeat < 1:
        print("--servers must be at least 2 and --repeat at least 1", file=sys.stderr)
        return 2
    from corridor.cluster.localservers import SSHD, local_servers

    if not os.path.exists(SSHD):
        print(f"needs {SSHD} to stand in for servers (apt install openssh-server)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="corridor-cluster-build-") as scratch:
        (Path(scratch) / "servers").mkdir()
        with local_servers(args.servers, Path(scratch) / "servers") as cluster:
            child = subprocess.run(cluster.in_coordinator(
                [sys.executable, "-c", CHILD, str(cluster.cluster_file), args.topology, str(args.repeat)]),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    print(f"{'topology':18s} {'shells':>12s} {'up s':>7s} {'up+down s':>9s} {'shells ahead':>12s} {'login s':>8s}")
    for line in child.stdout.splitlines():
        row = json.loads(line)
        if "ratio" in row:
            print(f"{row['topology']}: median up {row['median_up_ahead_s']:.2f} s ahead, "
                  f"{row['median_up_one_by_one_s']:.2f} s one by one (ratio {row['ratio']:.2f})")
        else:
            print(f"{row['topology']:18s} {'ahead' if row['ahead'] else 'one by one':>12s} {row['up_s']:7.2f} "
                  f"{row['up_down_s']:9.2f} {row['shells_ahead']:12d} "
                  f"{row['login_s'] if row['login_s'] is not None else '-':>8}")
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
