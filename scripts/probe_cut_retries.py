#!/usr/bin/env python3
"""Probe: when TCP retries a request sent into a cut, caught on the wire, for one-segment and larger requests.

Stage: workload run (root). Builds two-site with the userspace link, opens one
idle keep-alive connection per offset from a client in Shanghai (cty-cli1) to
a tiny server in Urumqi (rem-gpu1), cuts the link for ``--outage`` and sends
one request of ``--size`` bytes on each connection at its offset into the cut.
Prints, per request, when it reached the server and its stall (reply minus
send), and the times its segments left the client (from a packet capture in
the client): the first send, the loss probe and each retransmission. This is
the evidence behind docs/model.md's retry schedules (corridor/analytic/faults.py,
``idle_retries_s``): a one-segment request is probed at the RTO, a larger one
2·srtt after it went out, and each timer fires a little late.

    sudo .venv/bin/python scripts/probe_cut_retries.py --size 3000
    sudo .venv/bin/python scripts/probe_cut_retries.py --size 500 --offsets 0,0.05,0.1,0.2

About 15 s. Nothing is left behind: the network is torn down on exit and the
capture goes to a temporary directory that is removed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corridor.emulation.network import CorridorNetwork  # noqa: E402
from corridor.errors import CorridorError  # noqa: E402
from corridor.planning.points import plan_for_topology  # noqa: E402
from corridor.spec.faults import link_changes, parse_faults  # noqa: E402

PORT = 9100
REPLY_BYTES = 200
SERVER, CLIENT = "rem-gpu1", "cty-cli1"

# Reads fixed-size requests on every connection, prints when each arrived, answers REPLY_BYTES.
SERVER_CODE = r"""
import json, socket, sys, threading, time
size, reply = int(sys.argv[2]), int(sys.argv[3])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((sys.argv[1], int(sys.argv[4])))
listener.listen(64)
lock = threading.Lock()
print("READY", flush=True)
def serve(conn):
    while True:
        got = b""
        while len(got) < size:
            data = conn.recv(65536)
            if not data:
                return
            got += data
        with lock:
            sys.stdout.write(json.dumps({"t": time.monotonic(), "id": got[:8].decode()}) + "\n")
            sys.stdout.flush()
        conn.sendall(b"r" * reply)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

# One warmed connection per offset; each sends its request at t_cut + offset and times the reply.
CLIENT_CODE = r"""
import json, socket, sys, threading, time
ip, size, reply, port, t_cut = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
offsets = json.loads(sys.argv[6])
def exchange(conn, tag):
    conn.sendall(tag + b"q" * (size - len(tag)))
    got = 0
    while got < reply:
        got += len(conn.recv(65536))
conns = []
for i, _ in enumerate(offsets):
    conn = socket.create_connection((ip, port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    exchange(conn, b"warm%04d" % i)
    conns.append(conn)
out = []
def one(i, offset, conn):
    while time.monotonic() < t_cut + offset:
        time.sleep(0.0002)
    sent = time.monotonic()
    exchange(conn, b"req_%04d" % i)
    out.append({"i": i, "offset": offset, "sent": sent - t_cut, "reply": time.monotonic() - t_cut,
                "port": conn.getsockname()[1]})
threads = [threading.Thread(target=one, args=(i, o, c)) for i, (o, c) in enumerate(zip(offsets, conns))]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out), flush=True)
"""


def client_sends(pcap: str, t_cut_wall: float) -> dict[int, list[tuple[float, int]]]:
    """(time after the cut, payload bytes) of every data segment each client port sent, from the capture."""
    from scapy.all import TCP, rdpcap

    sends: dict[int, list[tuple[float, int]]] = {}
    for packet in rdpcap(pcap):
        if TCP in packet and packet[TCP].dport == PORT and len(packet[TCP].payload) > 0:
            sends.setdefault(int(packet[TCP].sport), []).append((float(packet.time) - t_cut_wall,
                                                                 len(packet[TCP].payload)))
    return sends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=3000, help="request bytes (default 3000: three segments)")
    parser.add_argument("--offsets", default="0,0.01,0.05,0.1,0.2,0.3",
                        help="seconds into the cut at which requests are sent, comma-separated")
    parser.add_argument("--outage", default="2s", help="how long the link is down (default 2s)")
    args = parser.parse_args(argv)
    try:
        offsets = [float(x) for x in args.offsets.split(",")]
        if args.size < 8 or not offsets:
            raise ValueError("--size must be at least 8 bytes and --offsets must name at least one offset")
        plan = plan_for_topology("two-site")
        link = plan.wan_links[0]
        events = parse_faults([{"at": "3s", "event": "cut", "duration": args.outage}], path="--outage")
    except (CorridorError, ValueError) as exc:
        print(f"probe_cut_retries: {exc}", file=sys.stderr)
        return 2
    arrivals: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="corridor-probe-") as scratch:
        pcap = str(Path(scratch) / "client.pcap")
        try:
            with CorridorNetwork(plan, backend="userspace", label="cut-probe") as net:
                ip = net.host_ip(SERVER)
                server = net.popen(SERVER, [sys.executable, "-c", SERVER_CODE, ip, str(args.size), str(REPLY_BYTES),
                                            str(PORT)], stdout=subprocess.PIPE)
                capture = None
                try:
                    assert server.stdout is not None
                    if server.stdout.readline().strip() != b"READY":
                        print("probe_cut_retries: the server did not start", file=sys.stderr)
                        return 1
                    lines: list[bytes] = []
                    reader = threading.Thread(target=lambda: lines.extend(server.stdout or []), daemon=True)
                    reader.start()
                    capture = net.popen(CLIENT, ["tcpdump", "-i", "any", "-nn", "--time-stamp-precision=micro",
                                                 f"tcp port {PORT}", "-w", pcap], stderr=subprocess.DEVNULL)
                    t0 = time.monotonic()
                    t_cut = t0 + events[0].at_s
                    t_cut_wall = time.time() - time.monotonic() + t_cut
                    client = net.popen(CLIENT, [sys.executable, "-c", CLIENT_CODE, ip, str(args.size),
                                                str(REPLY_BYTES), str(PORT), repr(t_cut), json.dumps(offsets)],
                                       stdout=subprocess.PIPE)
                    net.schedule_link_events(link.name, link_changes(events, [link.name])[link.name], t0)
                    out, _ = client.communicate(timeout=60)
                    time.sleep(0.3)
                finally:
                    if capture is not None:
                        capture.terminate()
                        capture.wait(timeout=10)
                    server.kill()
                    server.wait(timeout=10)
                for line in lines:
                    record = json.loads(line)
                    arrivals[record["id"]] = record["t"] - t_cut
                results = sorted(json.loads(out.decode().splitlines()[-1]), key=lambda r: r["offset"])
                sends = client_sends(pcap, t_cut_wall)
        except KeyboardInterrupt:
            print("interrupted; the network was torn down", file=sys.stderr)
            return 130
    print(f"{len(results)} requests of {args.size} bytes, a {args.outage} cut at 0 s (times in seconds after it)")
    for r in results:
        at_server = arrivals.get(f"req_{r['i']:04d}", float("nan"))
        print(f"sent {r['sent']:+.3f}  at the server {at_server:.3f}  stall {r['reply'] - r['sent']:.3f}")
        segments = [(t, n) for t, n in sends.get(int(r["port"]), []) if t >= r["sent"] - 0.001]
        print("    left the client: " + ", ".join(f"{t - r['sent']:+.3f} ({n} B)" for t, n in segments))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
