"""The namespace testbed every link-fidelity measurement runs on.

Stage: emulation (root). Three scratch namespaces, endpoints A and B and a wire
W between them::

    A --veth-- W --veth-- B        (the link under test, shaped by a backend)
    A --------veth-------- B       (a bare veth: what the machine carries unshaped)

The link in W is set by one of the link backends: ``userspace`` runs the delay
line in W between its two interfaces; ``netem`` makes W a forwarding cable
(:func:`~corridor.links.netem.wire_setup_argv`) and shapes its two egress
interfaces (:func:`~corridor.links.netem.egress_argv`). ``corridor bench link``
and the netem self-test both build this testbed and run the same measurements
on it (:mod:`corridor.links.fidelity`).

Namespaces carry the scratch prefix ``corridor-`` and record this process as
their owner before they exist (:func:`corridor.emulation.state.record_scratch_netns`),
so ``corridor clean`` leaves a live testbed alone and removes a dead one's;
interfaces (``cou<tag>..``, at most 15 characters) live only inside them.
Everything is torn down on every exit path.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from corridor.emulation.api import package_env
from corridor.emulation.state import forget_scratch_netns, record_scratch_netns
from corridor.errors import EmulationError, NeedsRootError
from corridor.links.backends import LINK_BACKENDS
from corridor.links.contract import LinkDirection, bdp_bytes
from corridor.links.netem import egress_argv, teardown_argv, wire_setup_argv
from corridor.links.steering import LinePlacement, pinned_argv, place_line, steer_receivers, traffic_cpus
from corridor.links.userspace import control_path_for, delayline_argv, prepare_argv, read_stats

log = logging.getLogger(__name__)

SUBNET_SHAPED = "10.251.{}.{}"
SUBNET_BARE = "10.252.{}.{}"
PREFIX_LEN = 24
READY_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
MAX_INTERFACE_CHARS = 15


def require_root() -> None:
    if os.geteuid() != 0:
        raise NeedsRootError("the link testbed builds network namespaces and needs root; run it with sudo")


def run_argv(argv: Sequence[str], *, check: bool = True, timeout_s: float = COMMAND_TIMEOUT_S,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one command; with ``check``, a non-zero exit raises with the command's own message."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise EmulationError(f"{' '.join(argv)} did not finish within {timeout_s:g} s; "
                             "is the machine overloaded or the link down?") from None
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


def testbed_names(tag: str, *, kind: str = "bench") -> dict[str, str]:
    """Names of everything a testbed creates: ``corridor-KIND-TAG-{A,W,B}`` and ``cou<tag>..`` interfaces."""
    names = {
        "ns_a": f"corridor-{kind}-{tag}-A",
        "ns_w": f"corridor-{kind}-{tag}-W",
        "ns_b": f"corridor-{kind}-{tag}-B",
        "a_w": f"cou{tag}aw",
        "w_a": f"cou{tag}wa",
        "w_b": f"cou{tag}wb",
        "b_w": f"cou{tag}bw",
        "a_b": f"cou{tag}ab",
        "b_a": f"cou{tag}ba",
    }
    for key, name in names.items():
        if not key.startswith("ns_") and len(name) > MAX_INTERFACE_CHARS:
            raise EmulationError(f"interface name {name} is longer than {MAX_INTERFACE_CHARS} characters; "
                                 "use a shorter testbed tag")
    return names


def endpoint_setup_argv(intf: str, backend: str) -> list[list[str]]:
    """Commands for an endpoint's interface toward W (run in A or B) before addresses go on.

    No IPv6 address, so no router solicitations in the packet counts. For netem, the
    host setting its contract assumes: single segments, so tc counts IP bytes exactly.
    """
    argv = [["ip", "link", "set", "dev", intf, "addrgenmode", "none"]]
    if backend == "netem":
        argv.append(["ethtool", "-K", intf, "tso", "off", "gso", "off"])
    return argv


def wire_argv(backend: str, wire_a: str, wire_b: str) -> list[list[str]]:
    """Commands (run in W) that ready its two interfaces for ``backend``."""
    if backend == "netem":
        return wire_setup_argv(wire_a, wire_b)
    return [*prepare_argv(wire_a), *prepare_argv(wire_b)]


def _check_backend(backend: str) -> None:
    if backend not in LINK_BACKENDS:
        raise EmulationError(f"unknown link backend {backend!r} for the testbed; choose one of "
                             f"{', '.join(LINK_BACKENDS)}")


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class Testbed:
    """Namespaces A, W and B; A and B talk through the backend's link in W, and directly over a bare veth."""

    __test__: ClassVar[bool] = False  # a testbed, not a pytest test class

    tag: str
    backend: str
    ns_a: str
    ns_w: str
    ns_b: str
    if_a: str  # A's interface toward W
    wire_a: str  # W's interface toward A: egress of the b_to_a direction
    wire_b: str  # W's interface toward B: egress of the a_to_b direction
    if_b: str  # B's interface toward W
    ip_a: str
    ip_b: str
    bare_ip_a: str
    bare_ip_b: str
    stats_path: str
    log_path: str = ""
    delayline: subprocess.Popen[bytes] | None = None
    #: where the running delay line is pinned and its receivers steered (None: not steered), and why not
    placement: LinePlacement | None = None
    steering_note: str = ""
    #: the CPUs of every delay line of a benchmark's testbeds, when there are several (exclusive steering)
    line_cpus: set[int] = field(default_factory=set)
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def exec_a(self, argv: Sequence[str]) -> list[str]:
        return netns_argv(self.ns_a, argv)

    def exec_b(self, argv: Sequence[str]) -> list[str]:
        return netns_argv(self.ns_b, argv)

    def exec_w(self, argv: Sequence[str]) -> list[str]:
        return netns_argv(self.ns_w, argv)

    def namespace(self, host: str) -> str:
        """The namespace of host ``A``, ``W`` or ``B``."""
        spaces = {"A": self.ns_a, "W": self.ns_w, "B": self.ns_b}
        if host not in spaces:
            raise EmulationError(f"the testbed has hosts A, W and B, not {host!r}")
        return spaces[host]

    def traffic_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` for host A or B kept off the delay lines' CPUs in exclusive steering; W's and others' as given."""
        if host == "W":
            return list(argv)
        lines = self.line_cpus or ({self.placement.cpu} if self.placement else set())
        return pinned_argv(traffic_cpus(lines), argv)

    def popen(self, host: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` in host ``A``, ``W`` or ``B`` with its output piped; stopped at teardown at the latest."""
        proc = subprocess.Popen(netns_argv(self.namespace(host), self.traffic_argv(host, argv)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def run(self, host: str, argv: Sequence[str], *,
            timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in host ``A``, ``W`` or ``B`` to its end; its exit status is the caller's to judge."""
        return run_argv(netns_argv(self.namespace(host), self.traffic_argv(host, argv)), check=False,
                        timeout_s=timeout_s)

    def path_interfaces(self) -> list[tuple[str, str]]:
        """(namespace, interface) of every hop of the shaped path, A to B."""
        return [(self.ns_a, self.if_a), (self.ns_w, self.wire_a), (self.ns_w, self.wire_b), (self.ns_b, self.if_b)]

    def shape(self, a_to_b: LinkDirection, b_to_a: LinkDirection, *, seed: int = 1, control: bool = False) -> None:
        """(Re)configure both directions of the link in W with the testbed's backend.

        ``control``: the delay line also takes timed commands on its FIFO (userspace only;
        :func:`corridor.links.userspace.control_path_for` of :attr:`stats_path`).
        """
        if self.backend == "userspace":
            self._start_delayline(a_to_b, b_to_a, seed=seed, control=control)
            return
        for intf, direction in ((self.wire_b, a_to_b), (self.wire_a, b_to_a)):
            self._teardown_netem(intf)
            for argv in egress_argv(intf, direction):
                run_argv(self.exec_w(argv))

    def clear(self) -> None:
        """Remove the link's shaping: the netem wire then forwards as is; the userspace wire carries nothing."""
        if self.backend == "userspace":
            self.stop_delayline()
            return
        for intf in (self.wire_a, self.wire_b):
            self._teardown_netem(intf)

    def _teardown_netem(self, intf: str) -> None:
        # Only the egress shaping (the first command); the ingress redirect is the cable itself.
        # Fails harmlessly when nothing is there.
        run_argv(self.exec_w(teardown_argv(intf)[0]), check=False)

    def _start_delayline(self, a_to_b: LinkDirection, b_to_a: LinkDirection, *, seed: int, control: bool) -> None:
        self.stop_delayline()
        if os.path.exists(self.stats_path):
            os.unlink(self.stats_path)
        receivers = [(f"/run/netns/{self.ns_a}", self.if_a), (f"/run/netns/{self.ns_b}", self.if_b)]
        placement, self.steering_note = place_line(receivers)
        if placement is None and self.placement is not None:
            steer_receivers(receivers, "0")  # an earlier line's steering, undone so this one runs as asked
        self.placement = placement
        argv = delayline_argv(self.wire_a, self.wire_b, a_to_b, b_to_a, stats_path=self.stats_path, seed=seed,
                              control_path=control_path_for(self.stats_path) if control else None,
                              cpu=placement.cpu if placement else None)
        with open(self.log_path, "ab") as log_file:
            self.delayline = subprocess.Popen(
                self.exec_w(argv), env=package_env(), stdout=log_file, stderr=subprocess.STDOUT
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
        return stop_process(proc)

    def stats(self) -> dict[str, Any]:
        """The delay line's counters (userspace backend only)."""
        if self.backend != "userspace":
            raise EmulationError(f"the {self.backend} testbed has no delay-line statistics; "
                                 "read tc's counters instead")
        return read_stats(self.stats_path)

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return " | ".join(handle.read().strip().splitlines()[-lines:])
        except OSError:
            return ""


def _scratch_dir(tag: str) -> str:
    # tmpfs when there is one: the delay line rewrites its stats file five times a second.
    return tempfile.mkdtemp(prefix=f"cou{tag}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


@contextmanager
def testbed(
    tag: str | None = None, *, backend: str = "userspace", kind: str = "bench", rate_mbps: float = 1000.0,
    rtt_ms: float = 50.0,
) -> Iterator[Testbed]:
    """Build A, W, B for ``backend`` with TCP buffers sized for ``rate_mbps`` x ``rtt_ms``; always tear down.

    ``kind`` names the user in the namespaces (``corridor-KIND-TAG-A``); ``tag`` defaults
    to this process's id.
    """
    require_root()
    _check_backend(backend)
    tag = tag or str(os.getpid() % 10_000_000)
    names = testbed_names(tag, kind=kind)
    workdir = _scratch_dir(tag)
    bed = Testbed(
        tag=tag, backend=backend, ns_a=names["ns_a"], ns_w=names["ns_w"], ns_b=names["ns_b"],
        if_a=names["a_w"], wire_a=names["w_a"], wire_b=names["w_b"], if_b=names["b_w"],
        ip_a=SUBNET_SHAPED.format(0, 1), ip_b=SUBNET_SHAPED.format(0, 2),
        bare_ip_a=SUBNET_BARE.format(0, 1), bare_ip_b=SUBNET_BARE.format(0, 2),
        stats_path=os.path.join(workdir, "delayline.json"), log_path=os.path.join(workdir, "delayline.log"),
    )
    created: list[str] = []
    try:
        for ns in (bed.ns_a, bed.ns_w, bed.ns_b):
            record_scratch_netns(ns)  # so `corridor clean` leaves it alone while this process lives
            run_argv(["ip", "netns", "add", ns])
            created.append(ns)
            run_argv(["ip", "-n", ns, "link", "set", "lo", "up"])
        pairs = (
            (names["a_w"], bed.ns_a, names["w_a"], bed.ns_w),
            (names["w_b"], bed.ns_w, names["b_w"], bed.ns_b),
            (names["a_b"], bed.ns_a, names["b_a"], bed.ns_b),
        )
        for left, left_ns, right, right_ns in pairs:
            run_argv(["ip", "link", "add", left, "netns", left_ns, "type", "veth", "peer", "name", right,
                      "netns", right_ns])
        for ns, intf in ((bed.ns_a, bed.if_a), (bed.ns_b, bed.if_b)):
            for argv in endpoint_setup_argv(intf, backend):
                run_argv(netns_argv(ns, argv), check=False)  # a missing ethtool feature is not fatal
        for argv in wire_argv(backend, bed.wire_a, bed.wire_b):
            # netem's cable must forward; the delay line's offload settings may be missing on a device.
            run_argv(bed.exec_w(argv), check=backend == "netem" and argv[0] != "ethtool")
        addresses = (
            (bed.ns_a, names["a_w"], bed.ip_a), (bed.ns_b, names["b_w"], bed.ip_b),
            (bed.ns_a, names["a_b"], bed.bare_ip_a), (bed.ns_b, names["b_a"], bed.bare_ip_b),
        )
        for ns, intf, addr in addresses:
            run_argv(["ip", "-n", ns, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", intf])
        for ns, intf in ((bed.ns_a, names["a_w"]), (bed.ns_a, names["a_b"]), (bed.ns_w, bed.wire_a),
                         (bed.ns_w, bed.wire_b), (bed.ns_b, names["b_w"]), (bed.ns_b, names["b_a"])):
            run_argv(["ip", "-n", ns, "link", "set", intf, "up"])
        buffer_bytes = tcp_buffer_bytes(rate_mbps, rtt_ms)
        for ns in (bed.ns_a, bed.ns_b):
            for argv in tcp_sysctl_argv(buffer_bytes):
                # net.core.*mem_max is global on some kernels; tcp_rmem/wmem are what autotuning uses.
                run_argv(netns_argv(ns, argv), check=False)
        yield bed
    finally:
        bed.stop_delayline()
        for proc in list(bed.procs):
            stop_process(proc, 2.0)
        for ns in reversed(created):
            run_argv(["ip", "netns", "del", ns], check=False)
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
