#!/usr/bin/env python3
"""Measurement: why a time-scaled run (k = 4) reads differently from k = 1, one mechanism at a time.

Stage: emulation measurement (root; builds its own two-site network in namespaces it
creates and ends only the processes it started). Time scaling by k multiplies WAN delays
by k and divides WAN rates by k; recorded durations are divided by k. Each case runs at
k = 1 and k = 4 back to back in the same invocation and prints both, scaled back, and
their ratio:

- ``flow``: one TCP flow (reno, 512 KiB socket buffers, as the ring test) across the
  WAN link, 4 MiB chunks. ``stream`` sends them back to back (steady state W/RTT);
  ``gated`` waits for a 1-byte reply after each chunk, as a ring step does. The
  sender reads TCP_INFO after every chunk: cwnd, the peer's window, srtt, RTO, and
  the share of busy time limited by the receive window and by the send buffer.
  A flow that is window limited and whose window is the same at both k scales
  exactly; a difference in the window or the limit shows what does not.
- ``ring``: the collective of tests/test_collectives_root.py (ring all-reduce of
  16 MiB, 4 ranks, reno, 512 KiB), with per-rank mean times.
- ``local``: the same ring on a LocalNetwork (loopback, no WAN): the agents' own
  overhead and step synchronisation at k = 1 and k = 4.

The WAN cases also print the delay line's counters for the run (packets and random-loss
drops per direction, departure lateness p99; cumulative over the cases run on one
network). Interventions, applied to both k: ``--loss`` (the topology's random loss,
1e-5 by default), ``--sysctl KEY=VALUE`` in every rank's namespace, ``--rto-min-ms``
(the ranks' route rto_min, times k).

    sudo .venv/bin/python scripts/measure_time_scale.py --cases flow,ring,local --repeat 2
    sudo .venv/bin/python scripts/measure_time_scale.py --cases ring --repeat 2 --loss 0
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from typing import Any

CHUNK = 4 << 20
BUF = 512 * 1024
PORT = 47311


# ---------------------------------------------------------------------------
# the flow's two ends (run inside the emulated hosts)

def _tcp_info(sock: socket.socket) -> dict[str, float]:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    u32 = lambda off: struct.unpack_from("I", raw, off)[0]  # noqa: E731
    u64 = lambda off: struct.unpack_from("Q", raw, off)[0]  # noqa: E731
    return {
        "rto_ms": u32(8) / 1e3, "ato_ms": u32(12) / 1e3, "mss": u32(16), "rtt_ms": u32(68) / 1e3,
        "cwnd": u32(80), "ssthresh": u32(76), "total_retrans": u32(100), "rcv_space": u32(96),
        "busy_us": u64(168), "rwnd_limited_us": u64(176), "sndbuf_limited_us": u64(184),
        "snd_wnd": u32(228) if len(raw) >= 232 else -1, "unacked": u32(24),
    }


def _sender(ip: str, chunks: int, gated: bool, cc: str) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUF)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUF)
    for _ in range(200):
        try:
            sock.connect((ip, PORT))
            break
        except OSError:
            time.sleep(0.05)
    data = bytes(CHUNK)
    infos = []
    times = []
    t_prev = time.monotonic()
    for _ in range(chunks):
        sock.sendall(data)
        if gated:
            sock.recv(1)
        t_now = time.monotonic()
        times.append(t_now - t_prev)
        t_prev = t_now
        infos.append(_tcp_info(sock))
    if not gated:
        sock.recv(1)  # the receiver's "all in"
        times.append(time.monotonic() - t_prev)
    print(json.dumps({"times": times, "infos": infos}), flush=True)
    sock.close()


def _receiver(chunks: int, gated: bool) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUF)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUF)
    srv.bind(("0.0.0.0", PORT))
    srv.listen(1)
    conn, _ = srv.accept()
    buf = bytearray(1 << 20)
    arrivals = []
    t0 = time.monotonic()
    for _ in range(chunks):
        left = CHUNK
        while left:
            n = conn.recv_into(buf, min(left, len(buf)))
            if not n:
                raise SystemExit("sender closed early")
            left -= n
        arrivals.append(time.monotonic() - t0)
        if gated:
            conn.sendall(b"x")
    if not gated:
        conn.sendall(b"x")
    info = _tcp_info(conn)
    print(json.dumps({"arrivals": arrivals, "rcv_space": info["rcv_space"], "ato_ms": info["ato_ms"]}), flush=True)
    conn.close()


# ---------------------------------------------------------------------------
# cases (run in the root namespace; build the network)

def _plan(loss: str | None) -> Any:
    from corridor.planning.planner import build_plan
    from corridor.spec.topospec import load_topology, override_links

    return build_plan(override_links(load_topology("two-site"), rate="200Mbit", delay="25ms", loss=loss))


def _flow(net: Any, k: float, chunks: int, gated: bool, cc: str) -> dict[str, Any]:
    me = os.path.abspath(__file__)
    rx = net.popen("cty-gpu1", [sys.executable, me, "--role", "recv", "--chunks", str(chunks)]
                   + (["--gated"] if gated else []))
    time.sleep(0.3)
    tx = net.popen("rem-gpu1", [sys.executable, me, "--role", "send", "--chunks", str(chunks), "--cc", cc,
                                "--ip", net.host_ip("cty-gpu1")] + (["--gated"] if gated else []))
    out_tx, err_tx = tx.communicate(timeout=600)
    out_rx, err_rx = rx.communicate(timeout=60)
    if tx.returncode or rx.returncode:
        raise SystemExit(f"flow failed: {err_tx.decode()} {err_rx.decode()}")
    s = json.loads(out_tx)
    r = json.loads(out_rx)
    skip = 2  # slow start and the first window growth
    times = [t / k for t in s["times"][skip:chunks]]
    last = s["infos"][-1]
    first = s["infos"][skip - 1]
    busy = max(1, last["busy_us"] - first["busy_us"])
    return {
        "chunk_ms": 1e3 * sorted(times)[len(times) // 2],
        "chunk_ms_mean": 1e3 * sum(times) / len(times),
        "cwnd": last["cwnd"], "ssthresh": last["ssthresh"], "snd_wnd": last["snd_wnd"], "mss": last["mss"],
        "srtt_ms_scaled": last["rtt_ms"] / k, "rto_ms_scaled": last["rto_ms"] / k, "rto_ms_wall": last["rto_ms"],
        "rwnd_limited_pct": 100 * (last["rwnd_limited_us"] - first["rwnd_limited_us"]) / busy,
        "sndbuf_limited_pct": 100 * (last["sndbuf_limited_us"] - first["sndbuf_limited_us"]) / busy,
        "retrans": last["total_retrans"], "rcv_space": r["rcv_space"], "rx_ato_ms": r["ato_ms"],
    }


def _link_late(net: Any) -> dict[str, float]:
    time.sleep(0.5)
    stats = net.link_stats("remote-city")
    out = {f"late_us_p99_{d}": float(stats.get(d, {}).get("late_us_p99", 0.0)) for d in ("a_to_b", "b_to_a")}
    out.update({f"drops_loss_{d}": int(stats.get(d, {}).get("drops_loss", 0)) for d in ("a_to_b", "b_to_a")})
    out.update({f"packets_{d}": int(stats.get(d, {}).get("packets", 0)) for d in ("a_to_b", "b_to_a")})
    return out


RANKS = ["rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2"]


def _tune_hosts(net: Any, k: float, sysctls: list[str], rto_min_ms: float | None) -> None:
    """Apply the interventions under test to every rank's namespace (sysctls, the route's rto_min x k)."""
    for host in RANKS:
        for kv in sysctls:
            net.run(host, ["sysctl", "-qw", kv])
        if rto_min_ms is not None:
            route = net.run(host, ["ip", "route", "show", "default"]).stdout.split()
            route = route[: route.index("rto_min")] if "rto_min" in route else route
            net.run(host, ["ip", "route", "change", *route, "rto_min", f"{int(rto_min_ms * k)}ms"])


def _ring(net: Any, k: float, iters: int) -> dict[str, Any]:
    from corridor.workloads.training.run import _start_margin_s, run_agents

    job = {"algorithm": "ring", "sizes_bytes": [16 << 20], "iters": iters, "warmup": 2, "min_time_s": 0.0,
           "start_margin_s": _start_margin_s(net, RANKS)}
    rows = run_agents(net, "collective", RANKS, job, seed=0, timeout_s=300, cc="reno", sock_buf_bytes=BUF)
    rows = sorted((r for r in rows if r.get("kind") == "collective_rank"), key=lambda r: r.get("rank", 0))
    per_iter = [max(t) for t in zip(*(r["times_s"] for r in rows), strict=True)]
    med = sorted(per_iter)[len(per_iter) // 2]
    out = {"time_ms": med * 1e3, "mean_ms": 1e3 * sum(per_iter) / len(per_iter)}
    out["iters_ms"] = " ".join(f"{t * 1e3:.0f}" for t in per_iter)
    return out


def _print_pair(name: str, a: dict[str, Any], b: dict[str, Any]) -> None:
    print(f"  {name}")
    for key in a:
        va, vb = a[key], b[key]
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            ratio = f"{vb / va:6.3f}" if va else "   -  "
            print(f"    {key:22s} k=1 {va:12.2f}   k=4 {vb:12.2f}   k4/k1 {ratio}")
        else:
            print(f"    {key:22s} k=1 {va!s:>12}   k=4 {vb!s:>12}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--role", choices=("send", "recv"))
    parser.add_argument("--ip")
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--gated", action="store_true")
    parser.add_argument("--cc", default="reno")
    parser.add_argument("--cases", default="flow,ring,local")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3, help="timed ring runs per k")
    parser.add_argument("--loss", help="override the links' random loss (the topology's default is 1e-5)")
    parser.add_argument("--sysctl", action="append", default=[], help="KEY=VALUE set in every rank's namespace")
    parser.add_argument("--rto-min-ms", type=float, help="set the hosts' route rto_min to this x k")
    args = parser.parse_args(argv)
    if args.role == "send":
        _sender(args.ip, args.chunks, args.gated, args.cc)
        return 0
    if args.role == "recv":
        _receiver(args.chunks, args.gated)
        return 0

    cases = args.cases.split(",")
    print(f"load: {os.getloadavg()}; sysctls {args.sysctl or 'default'}; rto_min x k: {args.rto_min_ms or 'default'}; "
          f"loss {args.loss or 'topology default'}")
    for rep in range(args.repeat):
        print(f"repetition {rep + 1}")
        if "local" in cases:
            from corridor.emulation.api import LocalNetwork

            res = {}
            for k in (1.0, 4.0):
                loopback = LocalNetwork({"rem-gpu1": "remote", "rem-gpu2": "remote", "cty-gpu1": "city",
                                         "cty-gpu2": "city"}, time_scale=k)
                res[k] = _ring(loopback, k, args.iters)
            _print_pair("ring 16 MiB on loopback (agents alone), ms scaled back", res[1.0], res[4.0])
        if "flow" in cases or "ring" in cases:
            from corridor.emulation.network import CorridorNetwork

            res_flow: dict[Any, dict[str, Any]] = {}
            for k in (1.0, 4.0):
                with CorridorNetwork(_plan(args.loss), backend="userspace", time_scale=k) as net:
                    _tune_hosts(net, k, args.sysctl, args.rto_min_ms)
                    if "flow" in cases:
                        for gated in (False, True):
                            res_flow[(k, gated)] = {**_flow(net, k, args.chunks, gated, args.cc),
                                                    **_link_late(net)}
                    if "ring" in cases:
                        res_flow[(k, "ring")] = {**_ring(net, k, args.iters),
                                                 **_link_late(net)}
            if "flow" in cases:
                for gated in (False, True):
                    _print_pair(f"one {args.cc} flow, 4 MiB chunks, {'gated' if gated else 'stream'}, scaled back",
                                res_flow[(1.0, gated)], res_flow[(4.0, gated)])
            if "ring" in cases:
                _print_pair("ring 16 MiB over two-site 200 Mbit/s 25 ms", res_flow[(1.0, "ring")],
                            res_flow[(4.0, "ring")])
        print(f"load: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
