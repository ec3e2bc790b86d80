"""Capacity of one machine in busy links: N delay lines loaded at once, what each carries and how late it runs.

Stage: emulation (root) for :func:`measure_links`; the verdicts, the
aggregate and the CPU accounting are pure functions, unit-tested on made-up
figures. N link testbeds (:mod:`corridor.links.testbed`, each its own
``A --W-- B`` namespaces and delay line) are shaped alike; each gets an idle
RTT, then every link carries one TCP flow each way at the same time while
pings measure its RTT under load. Per link it reports the carried rate as a
share of the configured one, RTT under load against the idle RTT (the
difference is the queueing the flows cause), the delay line's departure
lateness p50/p99 over the loaded window (from its lateness histogram), and
the delay line's CPU time per Gbit/s it carried (``/proc/<pid>/stat``).
This is the capacity curve a user sizes a machine by: ``corridor bench links``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from corridor import stats
from corridor.errors import EmulationError
from corridor.links import steering
from corridor.links.contract import MTU_BYTES, LinkDirection, default_queue_bytes
from corridor.links.fidelity import (
    DEFAULT_CONGESTION,
    busy_between,
    measure_rtt,
    read_proc_stat,
    steal_between,
    wait_listening,
)
from corridor.links.testbed import Testbed, stop_process, testbed
from corridor.links.tools import IPERF_PORT, iperf_server_argv, iperf_tcp_argv, parse_iperf_tcp, parse_ping, ping_argv
from corridor.links.userspace import DIRECTIONS, late_percentile_between

#: A link holds when each direction carries at least this share of its configured rate...
HOLD_CARRIED_FRACTION = 0.95
#: ...and its departures are at most this late at p99 (the contract's 1 ms of added jitter).
HOLD_LATE_P99_US = 1000.0
#: Ports of the two flows of a link (each link has its own namespaces, so links share them).
PORT_A_TO_B = IPERF_PORT
PORT_B_TO_A = IPERF_PORT + 2
#: Pings under load: one every this many seconds while the flows run.
LOADED_PING_INTERVAL_S = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(stat_text: str, ticks_per_s: int = CLK_TCK) -> float:
    """User plus system CPU seconds of a process from the text of its ``/proc/<pid>/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields are
    counted from the last ``)``: utime and stime are fields 14 and 15.
    """
    _, sep, rest = stat_text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 13:
        raise EmulationError(f"not a /proc/<pid>/stat line: {stat_text[:120]!r}")
    try:
        return (int(fields[11]) + int(fields[12])) / ticks_per_s
    except ValueError as exc:
        raise EmulationError(f"not a /proc/<pid>/stat line: {stat_text[:120]!r}") from exc


def read_proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return proc_cpu_s(handle.read())
    except OSError as exc:
        raise EmulationError(f"cannot read the CPU time of delay line {pid}: {exc}") from exc


@dataclass(frozen=True)
class DirectionLoad:
    """One direction of one loaded link."""

    goodput_mbps: float
    late_p50_us: float | None
    late_p99_us: float | None
    queue_delay_ms_max: float
    #: packets the delay line dropped at its full queue over the window (None: its counters did not say)
    drops_queue: int | None = None


@dataclass(frozen=True)
class LinkLoad:
    """One link while every link was loaded: both directions, RTTs and the delay line's CPU."""

    link: str
    rate_mbps: float
    delay_ms: float
    a_to_b: DirectionLoad
    b_to_a: DirectionLoad
    idle_rtt_ms: float
    loaded_rtt_ms: float | None
    cpu_s: float
    window_s: float
    carried_ip_bits: float

    @property
    def carried_fractions(self) -> tuple[float, float]:
        return self.a_to_b.goodput_mbps / self.rate_mbps, self.b_to_a.goodput_mbps / self.rate_mbps

    @property
    def queueing_ms(self) -> float | None:
        """RTT under load less the idle RTT: the queueing the flows caused, both directions together."""
        return None if self.loaded_rtt_ms is None else self.loaded_rtt_ms - self.idle_rtt_ms

    @property
    def cpu_fraction(self) -> float:
        """The delay line's CPU time per second of the window (1.0 is one core)."""
        return self.cpu_s / self.window_s if self.window_s > 0 else float("nan")

    @property
    def cpu_per_gbps(self) -> float:
        """Cores busy per Gbit/s carried (IP bytes, both directions): CPU seconds per Gbit."""
        gbits = self.carried_ip_bits / 1e9
        return self.cpu_s / gbits if gbits > 0 else float("nan")

    def holds(self, *, carried: float = HOLD_CARRIED_FRACTION, late_p99_us: float = HOLD_LATE_P99_US) -> bool:
        """Both directions carry ``carried`` of the rate with lateness p99 within ``late_p99_us``."""
        lates = (self.a_to_b.late_p99_us, self.b_to_a.late_p99_us)
        return (all(f >= carried for f in self.carried_fractions)
                and all(late is not None and late <= late_p99_us for late in lates))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(carried_a_to_b=self.carried_fractions[0], carried_b_to_a=self.carried_fractions[1],
                    queueing_ms=self.queueing_ms, cpu_fraction=self.cpu_fraction, cpu_per_gbps=self.cpu_per_gbps,
                    holds=self.holds())
        return data


@dataclass(frozen=True)
class LinksResult:
    """N links loaded at once."""

    links: tuple[LinkLoad, ...]
    duration_s: float
    load_avg_1m: float
    #: :class:`corridor.links.fidelity.CpuSteal` over the loaded window (empty where the kernel has no steal)
    steal: dict[str, float] = field(default_factory=dict)
    #: where the lines ran (:mod:`corridor.links.steering`), or why they were not steered
    steering: str = ""
    #: the flows' steady state (the pings' span): :func:`corridor.links.fidelity.busy_between` with the span,
    #: the lines' CPU seconds and the IP bits they carried in it (empty where /proc/stat did not say)
    busy: dict[str, float] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.links)

    def holds(self) -> bool:
        return bool(self.links) and all(link.holds() for link in self.links)

    def aggregate(self) -> dict[str, Any]:
        """Totals and worst cases over the links."""
        links = self.links
        goodput = sum(lk.a_to_b.goodput_mbps + lk.b_to_a.goodput_mbps for lk in links)
        configured = sum(2 * lk.rate_mbps for lk in links)
        cpu_s = sum(lk.cpu_s for lk in links)
        bits = sum(lk.carried_ip_bits for lk in links)
        lates = [d.late_p99_us for lk in links for d in (lk.a_to_b, lk.b_to_a)]
        queueing = [q for q in (lk.queueing_ms for lk in links) if q is not None]
        return {
            "links": self.count,
            "goodput_mbps": goodput,
            "carried_of_configured": goodput / configured if configured else float("nan"),
            "carried_min_of_configured": min((f for lk in links for f in lk.carried_fractions), default=float("nan")),
            "late_p99_us_max": None if any(v is None for v in lates) else max(lates, default=0.0),  # type: ignore[type-var]
            "queueing_ms_max": max(queueing, default=float("nan")),
            "cpu_cores": sum(lk.cpu_fraction for lk in links),
            "cpu_s_per_gbit": cpu_s / (bits / 1e9) if bits else float("nan"),
            "holds": self.holds(),
            "load_avg_1m": self.load_avg_1m,
            **self.steal,
            **self._machine(),
        }

    def _machine(self) -> dict[str, float]:
        """The whole machine over the flows' steady state: its busy share and cores, the lines' cores and the
        rest (the flows' ends and the kernel's work for them), CPU s per Gbit carried by all of it together,
        and the CPUs every direction's full rate would take at that cost (a linear estimate)."""
        b = self.busy
        if "machine_busy_fraction" not in b or not self.links or b.get("steady_s", 0.0) <= 0:
            return {}
        cores = b["machine_busy_fraction"] * b["machine_cpus"]
        lines = b["steady_lines_cpu_s"] / b["steady_s"]
        gbits = b["steady_ip_bits"] / 1e9
        per_gbit = cores * b["steady_s"] / gbits if gbits > 0 else float("nan")
        configured_gbps = sum(2 * lk.rate_mbps for lk in self.links) / 1e3
        return {"machine_busy_fraction": b["machine_busy_fraction"], "machine_cpus": b["machine_cpus"],
                "machine_cores_busy": cores, "steady_lines_cores": lines, "other_cores_busy": max(cores - lines, 0.0),
                "machine_cpu_s_per_gbit": per_gbit, "cpus_for_full_rate": per_gbit * configured_gbps}

    def as_dict(self) -> dict[str, Any]:
        return {"duration_s": self.duration_s, "links": [lk.as_dict() for lk in self.links],
                "aggregate": self.aggregate(), "steering": self.steering}


def largest_holding(results: Sequence[LinksResult]) -> int | None:
    """The largest link count whose run held, provided every smaller count run also held; None if N=smallest failed.

    A larger N that happens to hold after a smaller one failed is noise, not capacity.
    """
    best = None
    for result in sorted(results, key=lambda r: r.count):
        if not result.holds():
            break
        best = result.count
    return best


def link_direction(rate_mbps: float, delay_ms: float) -> LinkDirection:
    queue = max(default_queue_bytes(rate_mbps, 2 * delay_ms), MTU_BYTES)
    return LinkDirection(rate_mbps=rate_mbps, delay_ms=delay_ms, queue_bytes=queue)


def _load_avg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def measure_links(
    count: int, *, rate_mbps: float, delay_ms: float, duration_s: float, omit_s: float = 2.0,
    congestion: str | None = DEFAULT_CONGESTION, progress: Callable[[str], None] | None = None,
) -> LinksResult:
    """Build ``count`` link testbeds, load them all at once in both directions, and measure each."""
    if count < 1:
        raise EmulationError(f"the link count must be at least 1, got {count}")
    say = progress or (lambda _msg: None)
    direction = link_direction(rate_mbps, delay_ms)
    base = os.getpid() % 100_000
    with ExitStack() as stack:
        beds: list[Testbed] = []
        say(f"{count} link(s): building testbeds and delay lines")
        with steering.expecting(count):
            for index in range(count):
                bed = stack.enter_context(testbed(f"{base}L{index}", kind="cap", rate_mbps=rate_mbps,
                                                  rtt_ms=2 * delay_ms))
                bed.shape(direction, direction, seed=index + 1)
                beds.append(bed)
        placed = [bed.placement for bed in beds]
        for bed in beds:  # exclusive steering keeps every bed's traffic off every line's CPU
            bed.line_cpus = {p.cpu for p in placed if p}
        kept = steering.traffic_cpus({p.cpu for p in placed if p})
        steered = (f"lines on CPUs {', '.join(str(p.cpu) for p in placed if p)}, each one's receivers on the others"
                   + (f", traffic on CPUs {','.join(map(str, kept))} (exclusive)" if kept else "")
                   if all(placed) else beds[0].steering_note)
        say(f"{count} link(s): idle RTT")
        idle = [measure_rtt(bed, count=200, interval_s=0.005).median_ms for bed in beds]
        say(f"{count} link(s): {2 * count} TCP flows for {duration_s + omit_s:g} s")
        result = _load_all(beds, idle, rate_mbps=rate_mbps, delay_ms=delay_ms, duration_s=duration_s,
                           omit_s=omit_s, congestion=congestion)
    return replace(result, steering=steered)


def _load_all(beds: Sequence[Testbed], idle_ms: Sequence[float], *, rate_mbps: float, delay_ms: float,
              duration_s: float, omit_s: float, congestion: str | None) -> LinksResult:
    servers: list[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]] = []
    for bed in beds:
        at_b = bed.popen("B", iperf_server_argv(bed.ip_b, port=PORT_A_TO_B))
        at_a = bed.popen("A", iperf_server_argv(bed.ip_a, port=PORT_B_TO_A))
        servers.append((at_b, at_a))
    for bed, (at_b, at_a) in zip(beds, servers, strict=True):
        wait_listening(bed, "B", PORT_A_TO_B, at_b)
        wait_listening(bed, "A", PORT_B_TO_A, at_a)
    pids = [int(bed.stats()["pid"]) for bed in beds]
    before = [bed.stats() for bed in beds]
    cpu_before = [read_proc_cpu_s(pid) for pid in pids]
    stat_before = read_proc_stat()
    started = time.monotonic()
    clients = []
    for bed in beds:
        clients.append((
            bed.popen("A", iperf_tcp_argv(bed.ip_b, duration_s=duration_s, omit_s=omit_s, port=PORT_A_TO_B,
                                          congestion=congestion)),
            bed.popen("B", iperf_tcp_argv(bed.ip_a, duration_s=duration_s, omit_s=omit_s, port=PORT_B_TO_A,
                                          congestion=congestion)),
        ))
    # Pings while the flows are in steady state: after slow start, ending before the flows do.
    time.sleep(omit_s + 1.0)
    ping_count = max(10, int((duration_s - 2.0) / LOADED_PING_INTERVAL_S))
    steady_before = (time.monotonic(), read_proc_stat(), [read_proc_cpu_s(pid) for pid in pids],
                     [bed.stats() for bed in beds])
    pings = [bed.popen("A", ping_argv(bed.ip_b, count=ping_count, interval_s=LOADED_PING_INTERVAL_S))
             for bed in beds]
    timeout_s = duration_s + omit_s + 30
    ping_texts = [_communicate(p, timeout_s)[0] for p in pings]
    # The machine's CPU over the flows' steady state (the pings' span), not their start and end.
    busy = _steady_machine(steady_before, (time.monotonic(), read_proc_stat(), [read_proc_cpu_s(pid) for pid in pids],
                                           [bed.stats() for bed in beds]))
    for pair in clients:
        for client in pair:
            out, err = _communicate(client, timeout_s)
            if client.returncode != 0:
                raise EmulationError(f"iperf3 client failed: {out[-300:]} {err[-200:]}")
    window_s = time.monotonic() - started
    steal = steal_between(stat_before, read_proc_stat())
    cpu_after = [read_proc_cpu_s(pid) for pid in pids]
    after = [bed.stats() for bed in beds]
    load = _load_avg()
    server_texts = [(_communicate(b, 15)[0], _communicate(a, 15)[0]) for b, a in servers]
    links = []
    for index in range(len(beds)):
        loaded = parse_ping(ping_texts[index])
        goodputs = {"a_to_b": parse_iperf_tcp(server_texts[index][0]),
                    "b_to_a": parse_iperf_tcp(server_texts[index][1])}
        loads = {}
        bits = _ip_bits_between(before[index], after[index])
        for name in DIRECTIONS:
            was, now = before[index][name], after[index][name]
            loads[name] = DirectionLoad(
                goodput_mbps=goodputs[name], late_p50_us=late_percentile_between(was, now, 0.50),
                late_p99_us=late_percentile_between(was, now, 0.99),
                queue_delay_ms_max=float(now.get("queue_delay_ms_max", float("nan"))),
                drops_queue=_counted_between(was, now, "drops_queue"),
            )
        links.append(LinkLoad(
            link=f"link{index + 1}", rate_mbps=rate_mbps, delay_ms=delay_ms, a_to_b=loads["a_to_b"],
            b_to_a=loads["b_to_a"], idle_rtt_ms=idle_ms[index],
            loaded_rtt_ms=stats.median(loaded) if loaded else None, cpu_s=cpu_after[index] - cpu_before[index],
            window_s=window_s, carried_ip_bits=bits,
        ))
    return LinksResult(links=tuple(links), duration_s=duration_s, load_avg_1m=load, steal=steal, busy=busy)


def _steady_machine(was: tuple[float, str, list[float], list[dict[str, Any]]],
                    now: tuple[float, str, list[float], list[dict[str, Any]]]) -> dict[str, float]:
    """The whole machine over one span: :func:`busy_between`, plus the span, the lines' CPU seconds and the IP bits
    they carried in it (every direction of every line), for :meth:`LinksResult.aggregate`."""
    busy = busy_between(was[1], now[1])
    if not busy:
        return {}
    bits = sum(_ip_bits_between(before, after) for before, after in zip(was[3], now[3], strict=True))
    return {**busy, "steady_s": now[0] - was[0], "steady_lines_cpu_s": sum(now[2]) - sum(was[2]),
            "steady_ip_bits": bits}


def _ip_bits_between(before: dict[str, Any], after: dict[str, Any]) -> float:
    """IP bits one delay line carried, both directions, between two of its stats snapshots."""
    return float(sum((after[name]["bytes"] - before[name]["bytes"]) * 8 for name in DIRECTIONS))


def _counted_between(was: dict[str, Any], now: dict[str, Any], key: str) -> int | None:
    """How much the delay line's counter ``key`` of one direction grew between two stats snapshots."""
    a, b = was.get(key), now.get(key)
    if not isinstance(a, int) or not isinstance(b, int) or isinstance(a, bool) or isinstance(b, bool):
        return None
    return b - a


def _communicate(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_process(proc, 2.0)
        raise EmulationError(f"{str(proc.args)[:200]} did not finish within {timeout_s:g} s") from None
    return out.decode(errors="replace"), err.decode(errors="replace")
