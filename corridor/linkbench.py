"""Link benchmark: how faithfully the userspace delay line reproduces a configured link.

Stage: emulation (root). Builds its own namespaces,
``A --veth-- W (delay line) --veth-- B`` plus a bare ``A --veth-- B`` pair for
reference, and measures with ping and iperf3: bare and shaped TCP throughput,
RTT against the configured delay, the jitter the delay line adds, and
optionally loss and queueing delay. Everything it creates carries the ``cou``
prefix and the process id, and is removed on every exit path.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from corridor.emulation.api import package_env
from corridor.emulation.state import forget_scratch_netns, record_scratch_netns
from corridor.errors import EmulationError, NeedsRootError
from corridor.links.contract import MTU_BYTES, LinkDirection, bdp_bytes, default_queue_bytes
from corridor.links.userspace import delayline_argv, prepare_argv, read_stats
from corridor.stats import median as stat_median
from corridor.stats import percentile as stat_percentile

log = logging.getLogger(__name__)

SUBNET_SHAPED = "10.251.{}.{}"
SUBNET_BARE = "10.252.{}.{}"
READY_TIMEOUT_S = 10.0
LOSS_CHECK_QUEUE_BYTES = 32 * 1024 * 1024
DEFAULT_CONGESTION = "cubic"


def require_root() -> None:
    if os.geteuid() != 0:
        raise NeedsRootError("the link benchmark builds network namespaces and needs root; run it with sudo")


def _run(argv: Sequence[str], *, check: bool = True, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    if check and result.returncode != 0:
        raise EmulationError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def netns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def tcp_buffer_bytes(rate_mbps: float, rtt_ms: float) -> int:
    """TCP buffer limit for a path: room for 2 x BDP plus overhead, at least 4 MiB."""
    return max(4 * 1024 * 1024, 3 * bdp_bytes(rate_mbps, rtt_ms))


def tcp_sysctl_argv(buffer_bytes: int) -> list[list[str]]:
    """sysctl commands that let one TCP flow in a namespace keep ``buffer_bytes`` in flight."""
    return [
        ["sysctl", "-q", "-w", f"net.ipv4.tcp_rmem=4096 131072 {buffer_bytes}"],
        ["sysctl", "-q", "-w", f"net.ipv4.tcp_wmem=4096 16384 {buffer_bytes}"],
        ["sysctl", "-q", "-w", f"net.core.rmem_max={buffer_bytes}"],
        ["sysctl", "-q", "-w", f"net.core.wmem_max={buffer_bytes}"],
    ]


@dataclass
class Testbed:
    """Namespaces A, W and B; A and B talk through the delay line in W, and directly over a bare veth."""

    tag: str
    ns_a: str
    ns_w: str
    ns_b: str
    wire_a: str
    wire_b: str
    ip_a: str
    ip_b: str
    bare_ip_a: str
    bare_ip_b: str
    stats_path: str
    delayline: subprocess.Popen[bytes] | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_path: str = ""

    def exec_a(self, argv: Sequence[str]) -> list[str]:
        return netns_argv(self.ns_a, argv)

    def exec_b(self, argv: Sequence[str]) -> list[str]:
        return netns_argv(self.ns_b, argv)

    def start_delayline(self, a_to_b: LinkDirection, b_to_a: LinkDirection, *, seed: int = 1) -> None:
        """(Re)start the delay line in W with these directions and wait until it is ready."""
        self.stop_delayline()
        if os.path.exists(self.stats_path):
            os.unlink(self.stats_path)
        argv = delayline_argv(self.wire_a, self.wire_b, a_to_b, b_to_a, stats_path=self.stats_path, seed=seed)
        with open(self.log_path, "ab") as log_file:
            self.delayline = subprocess.Popen(
                netns_argv(self.ns_w, argv), env=package_env(), stdout=log_file, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not os.path.exists(self.stats_path):
            if self.delayline.poll() is not None:
                raise EmulationError(f"delay line exited with status {self.delayline.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise EmulationError(f"delay line not ready after {READY_TIMEOUT_S:.0f} s: {self.log_tail()}")
            time.sleep(0.02)

    def stop_delayline(self) -> int | None:
        proc, self.delayline = self.delayline, None
        if proc is None:
            return None
        return _stop(proc)

    def stats(self) -> dict[str, Any]:
        return read_stats(self.stats_path)

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return " | ".join(handle.read().strip().splitlines()[-lines:])
        except OSError:
            return ""


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def testbed_names(tag: str) -> dict[str, str]:
    """Names of everything a testbed creates.

    Namespaces carry the project's scratch prefix ``corridor-`` so ``corridor clean`` removes
    what a killed benchmark left; interfaces (at most 15 characters) live only inside them.
    """
    names = {
        "ns_a": f"corridor-bench-{tag}-A",
        "ns_w": f"corridor-bench-{tag}-W",
        "ns_b": f"corridor-bench-{tag}-B",
        "a_w": f"cou{tag}aw",
        "w_a": f"cou{tag}wa",
        "w_b": f"cou{tag}wb",
        "b_w": f"cou{tag}bw",
        "a_b": f"cou{tag}ab",
        "b_a": f"cou{tag}ba",
    }
    for key, name in names.items():
        if not key.startswith("ns_") and len(name) > 15:
            raise EmulationError(f"interface name {name} is longer than 15 characters; use a shorter tag")
    return names


@contextmanager
def testbed(tag: str | None = None, *, rate_mbps: float = 1000.0, rtt_ms: float = 50.0) -> Iterator[Testbed]:
    """Build A, W, B with veths and TCP buffers sized for ``rate_mbps`` x ``rtt_ms``; always tear down."""
    require_root()
    tag = tag or str(os.getpid() % 10_000_000)
    names = testbed_names(tag)
    # tmpfs when there is one: the stats file is rewritten five times a second.
    workdir = tempfile.mkdtemp(prefix=f"cou{tag}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    bed = Testbed(
        tag=tag,
        ns_a=names["ns_a"],
        ns_w=names["ns_w"],
        ns_b=names["ns_b"],
        wire_a=names["w_a"],
        wire_b=names["w_b"],
        ip_a=SUBNET_SHAPED.format(0, 1),
        ip_b=SUBNET_SHAPED.format(0, 2),
        bare_ip_a=SUBNET_BARE.format(0, 1),
        bare_ip_b=SUBNET_BARE.format(0, 2),
        stats_path=os.path.join(workdir, "delayline.json"),
        log_path=os.path.join(workdir, "delayline.log"),
    )
    created: list[str] = []
    try:
        for ns in (bed.ns_a, bed.ns_w, bed.ns_b):
            record_scratch_netns(ns)  # so `corridor clean` leaves it alone while this process lives
            _run(["ip", "netns", "add", ns])
            created.append(ns)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        pairs = (
            (names["a_w"], bed.ns_a, names["w_a"], bed.ns_w),
            (names["w_b"], bed.ns_w, names["b_w"], bed.ns_b),
            (names["a_b"], bed.ns_a, names["b_a"], bed.ns_b),
        )
        for left, left_ns, right, right_ns in pairs:
            peer = ["peer", "name", right, "netns", right_ns]
            _run(["ip", "link", "add", left, "netns", left_ns, "type", "veth", *peer])
            _run(["ip", "-n", left_ns, "link", "set", left, "up"])
            _run(["ip", "-n", right_ns, "link", "set", right, "up"])
        _run(["ip", "-n", bed.ns_a, "addr", "add", f"{bed.ip_a}/24", "dev", names["a_w"]])
        _run(["ip", "-n", bed.ns_b, "addr", "add", f"{bed.ip_b}/24", "dev", names["b_w"]])
        _run(["ip", "-n", bed.ns_a, "addr", "add", f"{bed.bare_ip_a}/24", "dev", names["a_b"]])
        _run(["ip", "-n", bed.ns_b, "addr", "add", f"{bed.bare_ip_b}/24", "dev", names["b_a"]])
        for intf in (bed.wire_a, bed.wire_b):
            for argv in prepare_argv(intf):
                _run(netns_argv(bed.ns_w, argv), check=False)
        buffer_bytes = tcp_buffer_bytes(rate_mbps, rtt_ms)
        for ns in (bed.ns_a, bed.ns_b):
            for argv in tcp_sysctl_argv(buffer_bytes):
                # net.core.*mem_max is global on some kernels; tcp_rmem/wmem are what autotuning uses.
                _run(netns_argv(ns, argv), check=False)
        yield bed
    finally:
        bed.stop_delayline()
        for proc in bed.procs:
            _stop(proc, 2.0)
        for ns in reversed(created):
            _run(["ip", "netns", "del", ns], check=False)
            forget_scratch_netns(ns)
        for name in ("delayline.json", "delayline.log"):
            try:
                os.unlink(os.path.join(workdir, name))
            except OSError:
                pass
        try:
            os.rmdir(workdir)
        except OSError:
            pass


# --------------------------------------------------------------------------- measurements

_PING_TIME = re.compile(r"time=([0-9.]+) ms")


def parse_ping_rtts(text: str) -> list[float]:
    """RTTs in ms from ping's per-reply lines."""
    return [float(m.group(1)) for m in _PING_TIME.finditer(text)]


def ping_rtts(bed: Testbed, dst: str, *, count: int, interval_s: float = 0.01, size: int = 56) -> list[float]:
    argv = bed.exec_a(["ping", "-n", "-c", str(count), "-i", f"{interval_s:g}", "-s", str(size), "-W", "2", dst])
    result = _run(argv, check=False, timeout_s=count * interval_s + 30)
    rtts = parse_ping_rtts(result.stdout)
    if not rtts:
        raise EmulationError(f"ping {dst} got no replies: {result.stdout.strip()[-200:]} {result.stderr.strip()}")
    return rtts


def iperf3(
    bed: Testbed, dst: str, *, duration_s: float, udp_rate_mbps: float | None = None, length_bytes: int | None = None,
    omit_s: int = 0, port: int = 5201, reverse: bool = False, congestion: str | None = DEFAULT_CONGESTION,
) -> dict[str, Any]:
    """One iperf3 run A -> B (B -> A with ``reverse``); returns iperf3's JSON report.

    TCP uses ``congestion`` (None: the system default). Cubic is the default here: it fills a
    BDP-sized queue and keeps the link busy, whereas BBR's ProbeRTT idles the flow for 200 ms every
    10 s and reads as 2-3 % less rate than the link gives (measured: 94.2 % vs 96.5 % at 10 Mbit/s).
    """
    server = subprocess.Popen(
        bed.exec_b(["iperf3", "-s", "-1", "-p", str(port), "-B", dst]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    bed.procs.append(server)
    try:
        time.sleep(0.3)
        argv = ["iperf3", "-c", dst, "-p", str(port), "-J", "-t", f"{duration_s:g}"]
        if omit_s:
            argv += ["-O", str(omit_s)]
        if reverse:
            argv.append("-R")
        if congestion and udp_rate_mbps is None:
            argv += ["-C", congestion]
        if udp_rate_mbps is not None:
            argv += ["-u", "-b", f"{udp_rate_mbps:g}M"]
        if udp_rate_mbps is not None:
            # A burst of datagrams must not overflow the receiver's socket: that loss is not the link's.
            argv += ["-w", "4M"]
        if length_bytes is not None:
            argv += ["-l", str(length_bytes)]
        result = _run(bed.exec_a(argv), check=False, timeout_s=duration_s + omit_s + 30)
        try:
            report: dict[str, Any] = json.loads(result.stdout)
        except ValueError as exc:
            raise EmulationError(f"iperf3 gave no JSON: {result.stderr.strip() or result.stdout[-200:]}") from exc
        if "error" in report:
            raise EmulationError(f"iperf3: {report['error']}")
        return report
    finally:
        _stop(server, 2.0)
        bed.procs.remove(server)


def tcp_throughput_mbps(report: dict[str, Any]) -> float:
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e6


def udp_loss(report: dict[str, Any]) -> tuple[int, int]:
    """(lost, sent) packets from an iperf3 UDP report (server side)."""
    summary = report["end"]["sum"]
    return int(summary["lost_packets"]), int(summary["packets"])


def link(rate_mbps: float, delay_ms: float, *, queue_bytes: int | None = None, loss: float = 0.0) -> LinkDirection:
    queue = queue_bytes if queue_bytes is not None else default_queue_bytes(rate_mbps, 2 * delay_ms)
    return LinkDirection(rate_mbps=rate_mbps, delay_ms=delay_ms, queue_bytes=max(queue, MTU_BYTES), loss=loss)


@dataclass(frozen=True)
class BenchResult:
    rate_mbps: float
    delay_ms: float
    duration_s: float
    bare_mbps: float
    shaped_mbps: float
    rtt_configured_ms: float
    rtt_median_ms: float
    rtt_error_pct: float
    jitter_p50_ms: float
    jitter_p99_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.shaped_mbps / self.bare_mbps if self.bare_mbps else float("nan")

    def as_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        data["ratio"] = self.ratio
        data["shaped_of_configured"] = self.shaped_mbps / self.rate_mbps
        data.update(self.extra)
        return data


def measure_rtt(bed: Testbed, *, count: int = 1000, bare: bool = False) -> tuple[float, float, float]:
    """(median RTT, p50 and p99 of |RTT - median|) in ms, through the delay line or the bare veth.

    Pings go every 5 ms: a stall of the whole (virtual) machine, which here can last 20-30 ms, then
    touches a handful of samples out of ``count`` instead of a full percent of them.
    """
    dst = bed.bare_ip_b if bare else bed.ip_b
    ping_rtts(bed, dst, count=3)  # resolve ARP first: its first exchange crosses the link twice
    rtts = ping_rtts(bed, dst, count=count, interval_s=0.005)
    median = stat_median(rtts)
    deviations = [abs(r - median) for r in rtts]
    return median, stat_percentile(deviations, 50), stat_percentile(deviations, 99)


def run_bench(
    rate_mbps: float, delay_ms: float, duration_s: float, *, checks: bool = True,
    congestion: str | None = DEFAULT_CONGESTION, progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Bare veth vs delay line at ``rate_mbps`` / ``delay_ms`` one way, plus optional loss and queue checks."""
    say = progress or (lambda _msg: None)
    direction = link(rate_mbps, delay_ms)
    with testbed(rate_mbps=rate_mbps, rtt_ms=2 * delay_ms) as bed:
        say("bare veth throughput and jitter")
        bare = tcp_throughput_mbps(iperf3(bed, bed.bare_ip_b, duration_s=duration_s, congestion=congestion))
        # The host's own scheduling noise, so the delay line's figure can be read against it.
        _median, bare_jit50, bare_jit99 = measure_rtt(bed, bare=True)
        bed.start_delayline(direction, direction)
        say("idle RTT through the delay line")
        rtt_median, jit50, jit99 = measure_rtt(bed)
        say("throughput through the delay line")
        shaped = tcp_throughput_mbps(
            iperf3(bed, bed.ip_b, duration_s=duration_s, omit_s=2, congestion=congestion)
        )
        stats = bed.stats()["a_to_b"]
        extra: dict[str, Any] = {
            "delayline_late_us_p99": stats["late_us_p99"],
            "bare_jitter_p50_ms": bare_jit50,
            "bare_jitter_p99_ms": bare_jit99,
            "delayline_drops_queue": stats["drops_queue"],
            "congestion": congestion or "system default",
        }
        if checks:
            say("loss check (1 %, 50,000 UDP packets)")
            extra.update(loss_check(bed))
            say("queue check")
            extra.update(queue_check(bed))
        rtt_configured = 2 * delay_ms
        return BenchResult(
            rate_mbps=rate_mbps, delay_ms=delay_ms, duration_s=duration_s, bare_mbps=bare, shaped_mbps=shaped,
            rtt_configured_ms=rtt_configured, rtt_median_ms=rtt_median,
            rtt_error_pct=(rtt_median - rtt_configured) / rtt_configured * 100, jitter_p50_ms=jit50,
            jitter_p99_ms=jit99, extra=extra,
        )


def loss_check(bed: Testbed, *, loss: float = 0.01, packets: int = 50_000, rate_mbps: float = 150.0) -> dict[str, Any]:
    """Send ``packets`` UDP datagrams through a link with ``loss``; returns configured and measured loss."""
    # A queue far larger than any burst: iperf3 catches up after the loaded machine descheduled it by
    # sending a burst at veth speed, and a BDP-sized queue would add drop-tail losses to the random ones.
    lossy = link(1000.0, 2.0, queue_bytes=LOSS_CHECK_QUEUE_BYTES, loss=loss)
    bed.start_delayline(lossy, link(1000.0, 2.0), seed=7)
    length = 1000
    # iperf3 takes whole seconds; round up so at least ``packets`` datagrams go out.
    duration = math.ceil(packets * length * 8 / (rate_mbps * 1e6))
    report = iperf3(bed, bed.ip_b, duration_s=duration, udp_rate_mbps=rate_mbps, length_bytes=length)
    lost, sent = udp_loss(report)
    stats = bed.stats()["a_to_b"]
    return {
        "loss_configured": loss,
        "loss_measured": lost / sent if sent else float("nan"),
        "loss_packets": sent,
        "loss_delayline_drops": stats["drops_loss"],
        "loss_delayline_queue_drops": stats["drops_queue"],
    }


def queue_check(
    bed: Testbed, *, rate_mbps: float = 100.0, queue_bytes: int = 250_000, delay_ms: float = 5.0
) -> dict[str, Any]:
    """Saturate a Q-byte queue at rate R with UDP and compare the worst ping delay with Q / R."""
    direction = link(rate_mbps, delay_ms, queue_bytes=queue_bytes)
    bed.start_delayline(direction, replace(direction, queue_bytes=default_queue_bytes(rate_mbps, 2 * delay_ms)))
    ping_rtts(bed, bed.ip_b, count=3)
    idle = stat_median(ping_rtts(bed, bed.ip_b, count=50))
    server = subprocess.Popen(
        bed.exec_b(["iperf3", "-s", "-1", "-p", "5202", "-B", bed.ip_b]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    bed.procs.append(server)
    try:
        time.sleep(0.3)
        flood = subprocess.Popen(
            bed.exec_a(["iperf3", "-c", bed.ip_b, "-p", "5202", "-u", "-b", f"{rate_mbps * 1.5:g}M", "-t", "4"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        bed.procs.append(flood)
        time.sleep(1.0)
        loaded = ping_rtts(bed, bed.ip_b, count=200, interval_s=0.01)
        flood.wait(15)
        bed.procs.remove(flood)
    finally:
        _stop(server, 2.0)
        bed.procs.remove(server)
    expected = direction.max_queueing_ms()
    # Offered at 1.5 x R the queue stays full, so every ping waits behind a full queue: the median
    # is that delay without the odd scheduling outlier a maximum would pick up.
    measured = stat_median(loaded) - idle
    stats = bed.stats()["a_to_b"]
    return {
        "queue_bytes": queue_bytes,
        "queue_rate_mbps": rate_mbps,
        "queue_delay_expected_ms": expected,
        "queue_delay_measured_ms": measured,
        "queue_delay_error_pct": (measured - expected) / expected * 100,
        "queue_delay_ping_max_ms": max(loaded) - idle,
        "queue_delayline_max_ms": stats["queue_delay_ms_max"],
    }
