#!/usr/bin/env python3
"""Probe: what a short outage does to a ring all-reduce's WAN connections, step by step and segment by segment.

Stage: workload run (root). Runs experiments/faults.yaml's dp-allreduce (four
ranks, two per site, a 4 MB gradient in two buckets, cubic) on two-site with
the userspace link, schedules one protection switch (down for ``--outage``,
then ``--delay`` one way for ``--hold``) ``--at`` seconds in, and samples
``ss -tin`` on every rank every 100 ms. Prints the step times, then for each
WAN connection that lost segments its congestion window, segments marked lost
and retransmissions over time: the evidence behind docs/model.md's account of
the protection-switch rows.

    sudo .venv/bin/python scripts/probe_switch_recovery.py --outage 50ms

About 20 s. Nothing is left behind: the network is torn down on exit.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corridor.emulation.network import CorridorNetwork  # noqa: E402
from corridor.errors import CorridorError  # noqa: E402
from corridor.planning.points import plan_for_topology  # noqa: E402
from corridor.spec.faults import link_changes, parse_faults  # noqa: E402
from corridor.workloads.training import run as training  # noqa: E402

RANKS = ["rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2"]
FIELDS = {"cwnd": r"\bcwnd:(\d+)", "ssthresh": r"\bssthresh:(\d+)", "lost": r"\blost:(\d+)",
          "unacked": r"\bunacked:(\d+)", "retrans": r"\bretrans:\d+/(\d+)", "rtt_ms": r"\brtt:([\d.]+)/"}


def connections(ss_text: str) -> dict[str, dict[str, float]]:
    """``ss -tin`` output -> {"local>peer": {field: value}} for each connection."""
    out: dict[str, dict[str, float]] = {}
    lines = ss_text.splitlines()
    for head, info in zip(lines, lines[1:], strict=False):
        addrs = re.findall(r"(\d+\.\d+\.\d+\.\d+):\d+", head)
        if len(addrs) != 2 or not info.startswith(("\t", " ")):
            continue
        values = {k: float(m.group(1)) for k, pat in FIELDS.items() if (m := re.search(pat, info))}
        out[f"{addrs[0]}>{addrs[1]}"] = values
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--at", default="3s", help="when the switch starts, after the first samples (default 3s)")
    parser.add_argument("--outage", default="50ms", help="how long the link is down (default 50ms)")
    parser.add_argument("--delay", default="30ms", help="one-way delay of the protection path (default 30ms)")
    parser.add_argument("--hold", default="3s", help="how long traffic stays on it (default 3s)")
    parser.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    args = parser.parse_args(argv)
    try:
        plan = plan_for_topology("two-site")
        link = plan.wan_links[0]
        events = parse_faults([{"at": args.at, "event": "protection-switch", "duration": args.outage,
                                "delay": args.delay, "hold": args.hold}], path="--at/--outage/--delay/--hold")
        at_s = events[0].at_s
        params = training.validate({"pattern": "allreduce", "steps": args.steps, "compute_time": "100ms",
                                    "grad_size": "4MB", "buckets": 2, "cc": "cubic"}, where="probe")
    except CorridorError as exc:
        print(f"probe_switch_recovery: {exc}", file=sys.stderr)
        return 2
    done: dict[str, Any] = {}
    samples: list[tuple[float, dict[str, dict[str, float]]]] = []
    try:
        with CorridorNetwork(plan, backend="userspace", label="switch-probe") as net:
            wan = {net.host_ip(h) for h in RANKS}

            def train() -> None:
                try:
                    done["records"] = training.run(net, params, hosts=RANKS, seed=1, timeout_s=180)
                except CorridorError as exc:
                    done["error"] = exc

            thread = threading.Thread(target=train, daemon=True)
            thread.start()
            time.sleep(2.0)  # past set-up and the first steps
            t0 = time.monotonic()
            net.schedule_link_events(link.name, link_changes(events, [link.name])[link.name], t0)
            while thread.is_alive():
                now = time.monotonic() - t0 - at_s  # seconds after the switch starts
                seen: dict[str, dict[str, float]] = {}
                for host in RANKS:
                    ss = net.run(host, ["ss", "-tin", "state", "established"], timeout_s=5).stdout
                    seen.update({k: v for k, v in connections(ss).items() if k.split(">")[1] in wan})
                samples.append((now, seen))
                time.sleep(0.1)
            thread.join()
    except KeyboardInterrupt:
        print("interrupted; the network was torn down", file=sys.stderr)
        return 130
    if "error" in done:
        print(f"probe_switch_recovery: the training run failed: {done['error']}", file=sys.stderr)
        return 1
    steps: dict[int, float] = {}
    for r in done["records"]:
        if r["kind"] == "train_step":
            steps[int(r["step"])] = max(steps.get(int(r["step"]), 0.0), float(r["step_time_s"]))
    print("step times (s):", " ".join(f"{v:.2f}" for _, v in sorted(steps.items())))
    lossy = sorted({c for _, seen in samples for c, v in seen.items() if v.get("lost")})
    for conn in lossy:
        local, peer = conn.split(">")
        cross = (local.split(".")[1] != peer.split(".")[1])  # 10.1.x.x is one site, 10.2.x.x the other
        print(f"\n{conn}{' (across the corridor)' if cross else ''}: t after the switch, cwnd, ssthresh, lost, "
              "unacked, retransmitted segments, srtt ms")
        for now, seen in samples:
            v = seen.get(conn)
            if v is not None and -0.3 <= now <= 6.0:
                print(f"  {now:5.2f} s  " + "  ".join(f"{k} {v.get(k, 0):g}" for k in FIELDS))
    if not lossy:
        print("no WAN connection lost segments: the outage met the ring between chunks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
