"""Running a bulk transfer: iperf3 between two emulated hosts, one transfer after another.

Stage: workload run (root when the network is emulated). A receiver
(``iperf3 -s -1``) starts on the sink, the sender (``iperf3 -c -n SIZE -P
STREAMS --json``) on the source; the completion time is the sender's wall
time from start to exit, which includes the handshake and slow start that
iperf3's own figures leave out. Each transfer becomes one ``message`` record.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from corridor.errors import AgentError


def _port(rng: random.Random) -> int:
    return rng.randrange(20000, 40000)


def run(net: Any, params: Any, *, hosts: Mapping[str, str], seed: int, timeout_s: float,
        progress: Any = None) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    src, dst = hosts["source"], hosts["sink"]
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    k = float(getattr(net, "time_scale", 1.0) or 1.0)
    for seq in range(params.transfers):
        left = timeout_s - (time.monotonic() - started)
        if left <= 1.0:
            raise AgentError(f"bulk transfer {seq + 1} of {params.transfers} did not start within the "
                             f"{timeout_s:.0f} s timeout ({src} -> {dst})")
        port = _port(rng)
        server = net.popen(dst, ["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        try:
            time.sleep(0.2)  # the receiver's listen() before the sender's connect()
            argv = ["iperf3", "-c", net.host_ip(dst), "-p", str(port), "-n", str(params.size_bytes), "-P",
                    str(params.streams), "--json"]
            if params.cc:
                argv += ["-C", params.cc]
            t0 = time.monotonic()
            done = net.run(src, argv, timeout_s=left)
            completion = (time.monotonic() - t0) / k
        finally:
            try:
                server.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if done.returncode != 0:
            detail = (done.stderr or done.stdout or "").strip()[-300:]
            raise AgentError(f"iperf3 {src} -> {dst} failed (exit {done.returncode}): {detail}")
        try:
            report = json.loads(done.stdout)
            sent = int(report["end"]["sum_sent"]["bytes"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AgentError(f"iperf3 {src} -> {dst} gave no readable JSON report: {exc}") from exc
        records.append({"kind": "message", "seq": seq, "src": src, "dst": dst, "bytes": sent,
                        "completion_s": completion, "streams": params.streams, "time_scale": k})
        if progress is not None:
            progress(f"transfer {seq + 1}/{params.transfers}: {completion:.2f} s")
    return records
