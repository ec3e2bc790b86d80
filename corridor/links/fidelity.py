"""Link-fidelity measurements over a namespace testbed: RTT, TCP rate, UDP loss and order, queueing delay.

Stage: emulation (root). Each function measures the link of a
:class:`~corridor.links.testbed.Testbed`, whichever backend shapes it, so
``corridor bench link`` (userspace delay line) and the netem self-test judge
both backends by the same measurements. The tools' argv and parsers come from
:mod:`corridor.links.tools`. Run as ``python -m corridor.links.fidelity send
...`` it is the UDP sender of :func:`measure_loss_counted`, started inside A.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from corridor import stats
from corridor.emulation.api import package_env
from corridor.errors import EmulationError
from corridor.links.contract import LinkDirection, default_queue_bytes
from corridor.links.testbed import Testbed, run_argv, stop_process
from corridor.links.tools import (
    IPERF_PORT,
    TCP_SKIP_S,
    iperf_reported_error,
    iperf_server_argv,
    iperf_tcp_argv,
    iperf_udp_argv,
    iperf_udp_flood_argv,
    listening_argv,
    parse_iperf_tcp,
    parse_iperf_udp,
    parse_iperf_udp_out_of_order,
    parse_ping,
    parse_tcp_mss,
    parse_udp_noports,
    ping_argv,
)

#: Cubic fills a BDP-sized queue and keeps the link busy, whereas BBR's ProbeRTT idles the flow for
#: 200 ms every 10 s and reads as 2-3 % less rate than the link gives (measured: 94.2 % vs 96.5 % at
#: 10 Mbit/s).
DEFAULT_CONGESTION = "cubic"
DEFAULT_MSS_BYTES = 1448
#: How long an iperf3 server gets to bind before its client starts.
SERVER_START_S = 0.3
#: How long a testbed waits for a server to listen.
READY_TIMEOUT_S = 10.0
#: Seconds the UDP flood of the queue measurement may run: longer than its pings take.
QUEUE_FLOOD_S = 10.0
#: The counted-loss sender sleeps this often to hold its packet rate.
SEND_PACING_S = 0.005
#: A port nobody listens on in B: arrivals are counted by the kernel (Udp NoPorts), no receiver needed.
DISCARD_PORT = 9


# -- ping ------------------------------------------------------------------------------------
def ping_rtts(bed: Testbed, dst: str, *, count: int, interval_s: float = 0.01, payload_bytes: int | None = None,
              wait_s: float = 2.0) -> list[float]:
    """RTT samples in ms of ``count`` pings from A to ``dst``; no reply at all raises."""
    argv = bed.exec_a(ping_argv(dst, count=count, interval_s=interval_s, wait_s=wait_s, payload_bytes=payload_bytes))
    result = run_argv(argv, check=False, timeout_s=count * interval_s + 30)
    rtts = parse_ping(result.stdout)
    if not rtts:
        raise EmulationError(f"ping {dst} got no replies: {result.stdout.strip()[-200:]} {result.stderr.strip()}; "
                             "is the link up and its loss below 100 %?")
    return rtts


@dataclass(frozen=True)
class RttFigures:
    """Idle RTT of a path: its samples' median, minimum and p99, and how far samples stray from the median."""

    samples: int
    median_ms: float
    min_ms: float
    p99_ms: float
    jitter_p50_ms: float  # p50 of |RTT - median|
    jitter_p99_ms: float  # p99 of |RTT - median|


def measure_rtt(bed: Testbed, *, count: int = 1000, interval_s: float = 0.005, bare: bool = False) -> RttFigures:
    """Idle RTT A to B through the link (over the bare veth with ``bare``).

    ARP is resolved first: its first exchange crosses the link twice. Pings go every 5 ms by
    default: a stall of the whole (virtual) machine, which can last 20-30 ms, then touches a
    handful of samples out of ``count`` instead of a full percent of them.
    """
    dst = bed.bare_ip_b if bare else bed.ip_b
    ping_rtts(bed, dst, count=3)
    rtts = ping_rtts(bed, dst, count=count, interval_s=interval_s)
    median = stats.median(rtts)
    deviations = [abs(r - median) for r in rtts]
    return RttFigures(
        samples=len(rtts), median_ms=median, min_ms=min(rtts), p99_ms=stats.percentile(rtts, 99),
        jitter_p50_ms=stats.percentile(deviations, 50), jitter_p99_ms=stats.percentile(deviations, 99),
    )


# -- iperf3 ----------------------------------------------------------------------------------
class HostRunner(Protocol):
    """Runs commands on named hosts: a running network (hosts of the plan) or a testbed (``A``, ``W``, ``B``)."""

    def popen(self, host: str, argv: list[str]) -> subprocess.Popen[bytes]: ...

    def run(self, host: str, argv: list[str], *, timeout_s: float = ...) -> subprocess.CompletedProcess[str]: ...


def iperf_pair(
    runner: HostRunner, *, server: str, client: str, server_argv: list[str], client_argv: list[str],
    timeout_s: float, keep: Callable[[str, str], None] | None = None,
) -> tuple[str, str]:
    """Run a one-off iperf3 server on ``server`` and its client on ``client``; returns (client, server) output.

    ``keep(role, text)`` receives each end's raw output as it comes (``client``, ``stderr``,
    ``server``), the client's even when it failed.
    """
    srv = runner.popen(server, server_argv)
    try:
        time.sleep(SERVER_START_S)
        if srv.poll() is not None:
            _, err = srv.communicate()
            raise EmulationError(f"iperf3 server on {server} exited at once: {err.decode(errors='replace')}; "
                                 "is its port taken?")
        result = runner.run(client, client_argv, timeout_s=timeout_s)
        if keep is not None:
            keep("client", result.stdout)
            if result.stderr:
                keep("stderr", result.stderr)
        if result.returncode != 0:
            raise EmulationError(f"iperf3 client on {client} failed: {result.stdout[-400:]} {result.stderr[-200:]}")
        failure = iperf_reported_error(result.stdout)  # iperf3 exits 0 on some failed tests
        if failure is not None:
            raise EmulationError(f"iperf3 client on {client}: {failure}")
        out, _ = srv.communicate(timeout=15)
        text = out.decode(errors="replace")
        if keep is not None:
            keep("server", text)
        return result.stdout, text
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def iperf_run(bed: Testbed, client_argv: list[str], *, dst: str, port: int = IPERF_PORT,
              timeout_s: float) -> tuple[str, str]:
    """An iperf3 test from A to a server in B bound to ``dst``; returns (client, server) JSON text."""
    return iperf_pair(bed, server="B", client="A", server_argv=iperf_server_argv(dst, port=port),
                      client_argv=client_argv, timeout_s=timeout_s)


@dataclass(frozen=True)
class TcpFigures:
    """One TCP flow's steady-state goodput as its receiver saw it, and the MSS it used."""

    goodput_mbps: float
    mss_bytes: int


def measure_tcp(
    bed: Testbed, *, duration_s: float, omit_s: float = 0.0, skip_s: float = TCP_SKIP_S, reverse: bool = False,
    congestion: str | None = DEFAULT_CONGESTION, bare: bool = False, port: int = IPERF_PORT,
) -> TcpFigures:
    """One TCP flow A to B (B to A with ``reverse``) through the link (the bare veth with ``bare``)."""
    dst = bed.bare_ip_b if bare else bed.ip_b
    argv = iperf_tcp_argv(dst, duration_s=duration_s, omit_s=omit_s, port=port, reverse=reverse,
                          congestion=congestion)
    client, server = iperf_run(bed, argv, dst=dst, port=port, timeout_s=duration_s + omit_s + 30)
    receiver = client if reverse else server
    return TcpFigures(goodput_mbps=parse_iperf_tcp(receiver, skip_s=skip_s),
                      mss_bytes=parse_tcp_mss(client, DEFAULT_MSS_BYTES))


@dataclass(frozen=True)
class UdpFigures:
    """One UDP test as B's iperf3 counted it."""

    packets: int
    lost: int
    out_of_order: int

    @property
    def loss(self) -> float | None:
        return self.lost / self.packets if self.packets else None


def measure_udp(bed: Testbed, *, rate_mbps: float, packets: int, size_bytes: int = 1000,
                port: int = IPERF_PORT) -> UdpFigures:
    """``packets`` UDP datagrams A to B through the link, counted (lost, out of order) by B's iperf3."""
    argv = iperf_udp_argv(bed.ip_b, rate_mbps=rate_mbps, packets=packets, size_bytes=size_bytes, port=port)
    _, server = iperf_run(bed, argv, dst=bed.ip_b, port=port,
                          timeout_s=packets * size_bytes * 8 / (rate_mbps * 1e6) + 60)
    counts = parse_iperf_udp(server)
    return UdpFigures(packets=counts.packets, lost=counts.lost, out_of_order=parse_iperf_udp_out_of_order(server))


# -- loss counted by the kernel -----------------------------------------------------------------
def send_udp(dst: str, port: int, *, count: int, pps: float, size_bytes: int) -> int:
    """Send ``count`` datagrams at about ``pps`` to ``dst``; returns how many the kernel accepted."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = bytes(size_bytes)
    sent = 0
    batch = max(1, int(pps * SEND_PACING_S))
    started = time.monotonic()
    try:
        while sent < count:
            for _ in range(min(batch, count - sent)):
                try:
                    sock.sendto(payload, (dst, port))
                    sent += 1
                except OSError as exc:  # ENOBUFS: a local queue is full; back off and retry
                    if exc.errno != errno.ENOBUFS:
                        raise
                    time.sleep(SEND_PACING_S)
            wait_s = started + sent / pps - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
    finally:
        sock.close()
    return sent


def _udp_noports(bed: Testbed) -> int:
    return parse_udp_noports(run_argv(bed.exec_b(["cat", "/proc/net/snmp"])).stdout)


def _link_stats(ns: str, intf: str) -> dict[str, Any]:
    data = json.loads(run_argv(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", intf]).stdout)
    link_stats: dict[str, Any] = data[0]["stats64"]
    return link_stats


@dataclass(frozen=True)
class CountedLoss:
    """Datagrams sent from A, those B's kernel counted, and drops on the path outside the link."""

    sent: int
    arrived: int
    path_drops: int

    @property
    def loss(self) -> float | None:
        return (self.sent - self.arrived) / self.sent if self.sent else None


def measure_loss_counted(bed: Testbed, *, packets: int, pps: float, size_bytes: int = 200,
                         settle_s: float = 0.5) -> CountedLoss:
    """Random loss counted by the kernel at B (Udp NoPorts), so no receiver process limits the packet rate.

    Drops anywhere else on the path (a full veth backlog when the machine is
    starved) are read from the interface counters and reported beside it.
    """
    arrived_before = _udp_noports(bed)
    before = {intf: _link_stats(ns, intf) for ns, intf in bed.path_interfaces()}
    sender = [sys.executable, "-m", "corridor.links.fidelity", "send", "--dst", bed.ip_b, "--port",
              str(DISCARD_PORT), "--count", str(packets), "--pps", str(pps), "--size", str(size_bytes)]
    out = run_argv(bed.exec_a(sender), timeout_s=packets / pps * 4 + 60, env=package_env()).stdout
    sent = int(json.loads(out)["sent"])
    time.sleep(settle_s)  # let the last packets through the delay
    arrived = _udp_noports(bed) - arrived_before
    path_drops = 0
    for ns, intf in bed.path_interfaces():
        after = _link_stats(ns, intf)
        path_drops += after["tx"]["dropped"] - before[intf]["tx"]["dropped"]
        path_drops += after["rx"]["dropped"] - before[intf]["rx"]["dropped"]
    return CountedLoss(sent=sent, arrived=arrived, path_drops=path_drops)


def wait_listening(bed: Testbed, host: str, port: int, server: subprocess.Popen[bytes],
                   timeout_s: float = READY_TIMEOUT_S) -> None:
    """Return once ``server`` listens on TCP ``port`` in ``host``; raise if it exits or never does."""
    deadline = time.monotonic() + timeout_s
    while not bed.run(host, listening_argv(port)).stdout.strip():
        if server.poll() is not None:
            raise EmulationError(f"iperf3 server in {host} exited at once (status {server.returncode}); "
                                 f"is port {port} taken?")
        if time.monotonic() > deadline:
            raise EmulationError(f"iperf3 server in {host} did not listen on port {port} within {timeout_s:g} s")
        time.sleep(0.05)


# -- queueing delay ----------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueFigures:
    """Ping delay behind a saturated queue against the contract's Q / R."""

    expected_ms: float
    measured_ms: float  # median loaded RTT less the idle median
    ping_max_ms: float  # worst loaded RTT less the idle median

    @property
    def error_pct(self) -> float:
        return (self.measured_ms - self.expected_ms) / self.expected_ms * 100


def measure_queue(bed: Testbed, direction: LinkDirection, *, port: int = IPERF_PORT + 1) -> QueueFigures:
    """Shape a_to_b as ``direction``, saturate it with UDP at 1.5 x R, and compare the ping delay with Q / R."""
    reverse = replace(direction, queue_bytes=default_queue_bytes(direction.rate_mbps, 2 * direction.delay_ms))
    bed.shape(direction, reverse)
    ping_rtts(bed, bed.ip_b, count=3)
    idle = stats.median(ping_rtts(bed, bed.ip_b, count=50))
    server = bed.popen("B", iperf_server_argv(bed.ip_b, port=port))
    try:
        wait_listening(bed, "B", port, server)
        flood = bed.popen("A", iperf_udp_flood_argv(bed.ip_b, rate_mbps=direction.rate_mbps * 1.5,
                                                    duration_s=QUEUE_FLOOD_S, port=port))
        try:
            time.sleep(1.0)
            loaded = ping_rtts(bed, bed.ip_b, count=200, interval_s=0.01)
            # The flood outlasts the pings and is stopped here; one that already ended failed, or
            # ran out under the pings and left some of them an empty queue.
            ended = flood.poll() is not None
        finally:
            stop_process(flood, 2.0)
        if ended:
            err = flood.stderr.read().decode(errors="replace")[-300:] if flood.stderr else ""
            raise EmulationError(f"the UDP flood that fills the queue ended before the pings did (status "
                                 f"{flood.returncode}: {err}); the queueing delay was not measured")
    finally:
        stop_process(server, 2.0)
    # Offered at 1.5 x R the queue stays full, so every ping waits behind a full queue: the median
    # is that delay without the odd scheduling outlier a maximum would pick up.
    return QueueFigures(expected_ms=direction.max_queueing_ms(), measured_ms=stats.median(loaded) - idle,
                        ping_max_ms=max(loaded) - idle)


# -- the machine itself ----------------------------------------------------------------------
class TimerLateness:
    """How late 1 ms sleeps wake up while a measurement runs: how starved this (virtual) machine is.

    A shaper holds its rate only if it wakes within one bucket's worth of time;
    a guest whose timers fire tens of milliseconds late (qemu TCG on a busy
    host) loses that time, and then the figure measures the machine, not the link.
    """

    def __init__(self, *, realtime_priority: int = 0) -> None:
        self._late_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._rt = realtime_priority

    def _loop(self) -> None:
        if self._rt > 0:
            # a real-time sleeper sees the machine's stalls, not its turn behind other threads here
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self._rt))
            except OSError:
                pass
        while not self._stop.is_set():
            before = time.monotonic()
            time.sleep(0.001)
            self._late_ms.append((time.monotonic() - before) * 1e3 - 1.0)

    def __enter__(self) -> TimerLateness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self, *, absorbed_ms: float) -> dict[str, float]:
        """Percentiles, and the share of the time stalled beyond ``absorbed_ms`` (what a bucket covers)."""
        ordered = sorted(self._late_ms) or [0.0]
        elapsed_ms = sum(1.0 + late for late in self._late_ms) or 1.0
        stalled_ms = sum(max(0.0, late - absorbed_ms) for late in self._late_ms)
        return {
            "p50_ms": stats.percentile(ordered, 50),
            "p99_ms": stats.percentile(ordered, 99),
            "max_ms": ordered[-1],
            "stalled_fraction": stalled_ms / elapsed_ms,
        }


#: The /proc/stat columns up to steal: user nice system idle iowait irq softirq steal (guest time is inside user).
_STAT_COLUMNS = 8
PROC_STAT = "/proc/stat"


def cpu_columns(stat_text: str) -> dict[str, list[int]]:
    """Each well-formed ``cpu`` line of /proc/stat (``cpu`` is the whole machine, ``cpuN`` one CPU): its first
    eight columns, user nice system idle iowait irq softirq steal."""
    out: dict[str, list[int]] = {}
    for line in stat_text.splitlines():
        words = line.split()
        if not words or not words[0].startswith("cpu") or len(words) < _STAT_COLUMNS + 1:
            continue
        try:
            out[words[0]] = [int(word) for word in words[1:_STAT_COLUMNS + 1]]
        except ValueError:
            continue
    return out


def cpu_ticks(stat_text: str) -> dict[str, tuple[int, int]]:
    """Each ``cpu`` line of /proc/stat: (steal, total) ticks."""
    return {name: (ticks[_STAT_COLUMNS - 1], sum(ticks)) for name, ticks in cpu_columns(stat_text).items()}


def steal_between(before: str, after: str) -> dict[str, float]:
    """The share of CPU time a hypervisor gave to other guests between two readings of /proc/stat.

    ``steal_fraction`` over the whole machine and ``steal_fraction_max_cpu`` on
    the CPU that lost most; empty when the readings hold no steal column. A
    virtual CPU that is stolen runs nothing of this machine meanwhile, a real-time
    delay line included: its departures then leave late by however long that lasted.
    """
    was, now = cpu_ticks(before), cpu_ticks(after)

    def share(name: str) -> float | None:
        if name not in was or name not in now:
            return None
        total = now[name][1] - was[name][1]
        return (now[name][0] - was[name][0]) / total if total > 0 else None

    whole = share("cpu")
    if whole is None:
        return {}
    per_cpu = [v for v in (share(name) for name in now if name != "cpu") if v is not None]
    return {"steal_fraction": whole, "steal_fraction_max_cpu": max(per_cpu, default=whole)}


def busy_between(before: str, after: str) -> dict[str, float]:
    """How busy the whole machine was between two readings of /proc/stat.

    ``machine_busy_fraction``: the share of all CPUs' time spent running
    anything (user, nice, system, irq, softirq), out of the time this machine
    had (steal left out: the hypervisor's time is not this machine's); and
    ``machine_cpus``, the number of ``cpuN`` lines. Empty when the readings do
    not parse. A benchmark whose links fall short on a machine busy all the
    time was short of CPU, lines and flows' ends alike.
    """
    was, now = cpu_columns(before), cpu_columns(after)
    cpus = sum(name != "cpu" for name in now)
    if "cpu" not in was or "cpu" not in now or cpus == 0:
        return {}
    # user nice system idle iowait irq softirq steal
    delta = [b - a for a, b in zip(was["cpu"], now["cpu"], strict=True)]
    idle = delta[3] + delta[4]
    had = sum(delta) - delta[7]
    if had <= 0:
        return {}
    return {"machine_busy_fraction": (had - idle) / had, "machine_cpus": float(cpus)}


def read_proc_stat() -> str:
    try:
        with open(PROC_STAT, encoding="ascii") as handle:
            return handle.read()
    except OSError:
        return ""


class CpuSteal:
    """The hypervisor's steal over a with-block (:func:`steal_between`); ``summary()`` after it ends.

    On a cloud or shared virtual machine the host takes CPU time back when it is
    busy itself: this machine's two virtual CPUs lost 0.6 % of their time while
    idle, 14 % over a whole ``bench link`` run at a busy hour and under 0.1 %
    during the same benchmark's delay-line flow at a quieter one. Benchmarks and
    the link check print it beside lateness, so a late link on a starved guest
    reads as what it is.
    """

    def __init__(self, read: Callable[[], str] = read_proc_stat) -> None:
        self._read = read
        self._before = ""
        self._summary: dict[str, float] | None = None

    def __enter__(self) -> CpuSteal:
        self._before = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        self._summary = steal_between(self._before, self._read())

    def summary(self) -> dict[str, float]:
        if self._summary is None:
            raise RuntimeError("CpuSteal.summary() is read after its with-block")
        return self._summary


def steal_words(summary: dict[str, float]) -> str:
    """``"CPU steal 14.0 % (worst CPU 20.1 %)"`` for a :class:`CpuSteal` summary; empty when there is none."""
    if "steal_fraction" not in summary:
        return ""
    return (f"CPU steal {summary['steal_fraction'] * 100:.1f} % "
            f"(worst CPU {summary['steal_fraction_max_cpu'] * 100:.1f} %)")


class HostStalls:
    """:class:`TimerLateness` in a child process: the machine's stalls while this process is busy itself.

    A sleeper thread in a process that runs Python work of its own (a
    collective sweep's coordinator, a workload runner) wakes late whenever that
    work holds the interpreter lock, which is not the machine stalling. The
    child does nothing but sleep 1 ms at a time until its stdin closes, then
    prints :meth:`TimerLateness.summary` with ``absorbed_ms``.
    """

    def __init__(self, *, absorbed_ms: float = 1.0) -> None:
        self._absorbed_ms = absorbed_ms
        self._proc: subprocess.Popen[str] | None = None
        self._summary: dict[str, float] | None = None

    def __enter__(self) -> HostStalls:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "corridor.links.fidelity", "stalls", "--absorbed-ms", str(self._absorbed_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=package_env())
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if line.strip() != "ready":
            self._proc.kill()
            self._proc.wait()
            raise EmulationError(f"the host-stall probe did not start (it printed {line.strip()!r})")
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            out, _ = proc.communicate(input="", timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise EmulationError("the host-stall probe did not stop within 10 s") from None
        self._summary = json.loads(out.strip().splitlines()[-1])

    def summary(self) -> dict[str, float]:
        """The child's summary (p50_ms, p99_ms, max_ms, stalled_fraction); only after the block ends."""
        if self._summary is None:
            raise RuntimeError("HostStalls.summary() is read after its with-block")
        return self._summary


def _stalls_until_stdin_closes(absorbed_ms: float) -> dict[str, float]:
    with TimerLateness() as sleeper:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.read()
    return sleeper.summary(absorbed_ms=absorbed_ms)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m corridor.links.fidelity",
        description="The UDP sender of the counted-loss measurement, and the host-stall probe.")
    sub = parser.add_subparsers(dest="command", required=True)
    send = sub.add_parser("send", help="send datagrams to a closed port at a steady rate; prints {\"sent\": N}")
    send.add_argument("--dst", required=True)
    send.add_argument("--port", type=int, required=True)
    send.add_argument("--count", type=int, required=True)
    send.add_argument("--pps", type=float, required=True)
    send.add_argument("--size", type=int, default=200, help="UDP payload bytes")
    stalls = sub.add_parser("stalls", help="sleep 1 ms at a time until stdin closes; print how late they woke")
    stalls.add_argument("--absorbed-ms", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.command == "stalls":
        sys.stdout.write(json.dumps(_stalls_until_stdin_closes(args.absorbed_ms)) + "\n")
        return 0
    sent = send_udp(args.dst, args.port, count=args.count, pps=args.pps, size_bytes=args.size)
    sys.stdout.write(json.dumps({"sent": sent}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
