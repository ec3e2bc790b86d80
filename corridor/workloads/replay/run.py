"""Generic message-trace replay: any recorded exchange between endpoints, sent again across a corridor.

Stage: workload run (drives a :class:`corridor.emulation.api.Network`). A
message trace (:mod:`corridor.traces.generic`: time, source, destination,
bytes, kind per line, from a capture or written by hand) maps each endpoint to a
host; every host's ``message-replay`` agent sends its messages at their trace
times over one TCP connection per destination, and the receiver times each
message's last byte. :func:`replay_messages` runs it, :func:`summarize_messages`
gives the per-run figures.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from corridor.emulation.api import Network
from corridor.emulation.state import scratch_dir_prefix
from corridor.errors import AgentError, TraceError
from corridor.traces import ReplayWindow
from corridor.workloads.agents import AgentProcess, percentile_stats, sched_error_stats

log = logging.getLogger(__name__)


def _endpoint_host(endpoint: str, endpoints: Mapping[str, str], hosts: Sequence[str], path: str, line: int) -> str:
    if endpoint in endpoints:
        return endpoints[endpoint]
    ip = endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint
    if ip in endpoints:
        return endpoints[ip]
    if endpoint in hosts:
        return endpoint
    raise TraceError(f"{path}:{line}: endpoint {endpoint!r} is not a host of this network; map it to one "
                     f"(endpoints={{{endpoint!r}: HOST}}, or by its address)")


def replay_messages(net: Network, trace: str, *, endpoints: Mapping[str, str] | None = None,
                    window: ReplayWindow | None = None, timeout_s: float = 120.0, start_delay_s: float = 1.0,
                    progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Replay a generic message trace across ``net``; one ``message`` record per message.

    Each trace endpoint maps to a host (``endpoints`` by name, ``ip:port`` or ``ip``;
    host names pass through). Every host sends its messages at their trace times
    over one TCP connection per destination; the receiver times each message's
    last byte. Records: ``kind "message"``: seq, src, dst, bytes, msg_kind,
    t_sched_s, t_send_s, sched_stall_s (the part of the send's lateness the host caused, see
    :func:`sched_error_stats`), t_done_s, latency_s (last byte in minus send), time_scale;
    and one ``traffic`` record per host. Raises AgentError naming a host that fails.
    """
    from corridor.traces import generic

    say = progress or (lambda _msg: None)
    endpoints = dict(endpoints or {})
    known = net.hosts()
    wdir = tempfile.mkdtemp(prefix=scratch_dir_prefix("replay"))
    agents: dict[str, AgentProcess] = {}
    kinds: dict[int, str] = {}
    try:
        sends: dict[str, IO[str]] = {}
        expects: dict[str, IO[str]] = {}

        def file_for(table: dict[str, IO[str]], host: str, what: str) -> IO[str]:
            if host not in table:
                table[host] = open(os.path.join(wdir, f"{what}-{host}.jsonl"), "w", encoding="utf-8")  # noqa: SIM115
            return table[host]

        count = 0
        for seq, m in enumerate(generic.read(trace, window)):
            src = _endpoint_host(m.src, endpoints, known, trace, m.line)
            dst = _endpoint_host(m.dst, endpoints, known, trace, m.line)
            kinds[seq] = m.kind
            file_for(sends, src, "sends").write(json.dumps({"seq": seq, "t_s": m.time_s, "dst": dst,
                                                            "bytes": m.size_bytes}) + "\n")
            file_for(expects, dst, "expect")
            if m.size_bytes > 0:
                expects[dst].write(json.dumps({"seq": seq, "src": src, "bytes": m.size_bytes}) + "\n")
            count += 1
        for table in (sends, expects):
            for f in table.values():
                f.close()
        involved = sorted(set(sends) | set(expects))
        say(f"replaying {count} messages between {len(involved)} hosts")
        for h in involved:
            for table, what in ((sends, "sends"), (expects, "expect")):
                if h not in table:
                    open(os.path.join(wdir, f"{what}-{h}.jsonl"), "w").close()
            cfg = {"host": h, "bind": net.host_ip(h), "time_scale": float(net.time_scale),
                   "sends": os.path.join(wdir, f"sends-{h}.jsonl"),
                   "expect": os.path.join(wdir, f"expect-{h}.jsonl"), "nice": -10, "realtime_priority": 10,
                   "timeout_s": timeout_s}
            agents[h] = AgentProcess(net, h, "message-replay", cfg, wdir)
        deadline = time.monotonic() + timeout_s
        peers = {h: [net.host_ip(h), a.wait_ready(max(deadline - time.monotonic(), 1.0))] for h, a in agents.items()}
        ctl = json.dumps({"peers": peers, "start_at": time.time() + start_delay_s}) + "\n"
        for a in agents.values():
            assert a.proc.stdin is not None
            a.proc.stdin.write(ctl.encode())
            a.proc.stdin.flush()
        for h, a in agents.items():
            if not a.done.wait(max(deadline - time.monotonic(), 0.1)):
                raise AgentError(f"message replay on {h} did not finish within {timeout_s:g}s")
            if a.proc.poll() not in (None, 0):
                raise AgentError(f"message replay on {h} failed: {a.stderr_tail()}")
        records: list[dict[str, Any]] = []
        sent: dict[int, dict[str, Any]] = {}
        done: dict[int, float] = {}
        for a in agents.values():
            a.stop()
            for r in a.records():
                if r["kind"] == "message_sent":
                    sent[int(r["seq"])] = r
                elif r["kind"] == "message_recv":
                    done[int(r["seq"])] = float(r["t_done_s"])
                else:
                    records.append(r)
        for seq in sorted(sent):
            r = sent[seq]
            t_done = done.get(seq)
            records.append({"kind": "message", "seq": seq, "src": r["src"], "dst": r["dst"], "bytes": r["bytes"],
                            "msg_kind": kinds.get(seq, ""), "t_sched_s": r["t_sched_s"], "t_send_s": r["t_send_s"],
                            "sched_stall_s": r.get("sched_stall_s"), "t_done_s": t_done,
                            "latency_s": None if t_done is None else t_done - r["t_send_s"],
                            "time_scale": float(net.time_scale)})
        return records
    finally:
        for a in agents.values():
            try:
                a.stop(timeout_s=2.0)
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("stopping replay on %s: %s", a.host, exc)
            a.close()
        shutil.rmtree(wdir, ignore_errors=True)


def summarize_messages(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-run figures of a message replay: counts, bytes, latency and send-time error percentiles."""
    msgs = [r for r in records if r.get("kind") == "message"]
    lat = [float(r["latency_s"]) for r in msgs if r.get("latency_s") is not None]
    out: dict[str, Any] = {"messages": len(msgs), "bytes": sum(int(r["bytes"]) for r in msgs),
                           "delivered": len(lat)}
    out.update(percentile_stats(lat, "latency_s"))
    out.update(sched_error_stats(msgs))
    return out
