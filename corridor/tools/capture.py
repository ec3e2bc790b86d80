"""Packet capture of a WAN link: the tcpdump command line, and turning the pcap into a trace.

Stage: emulation helper (builds argv lists; runs nothing itself, except
:func:`start`/:func:`stop`, which drive a process the caller launched inside
the right namespace). :meth:`CorridorNetwork.capture` runs :func:`tcpdump_argv` inside the
link's wire node, on the interface that faces one site's router: every packet
that crosses the link passes it once (one direction arriving, the other
leaving), so one capture holds both directions of every flow on the link.

Capture settings and why:
- ``-s 0`` keeps whole packets: message sizes come from TCP payload lengths and
  the HTTP framing inside them.
- ``-B`` raises the kernel capture buffer (KiB) so a 1 Gbit/s burst is not
  dropped before tcpdump writes it; drops would break the exact byte count.
- ``-U`` writes each packet as it arrives, so a capture stopped by SIGTERM is
  complete; ``-Z root`` keeps tcpdump from switching to a user that may not be
  allowed to write the run directory.
- ``--immediate-mode`` stops libpcap from batching packets (timing).
- The default filter keeps TCP and UDP (the workloads' traffic) and drops ARP,
  ICMP and IPv6 neighbour discovery.
"""

from __future__ import annotations

import logging
import select
import signal
import subprocess
import time
from pathlib import Path

from corridor.errors import EmulationError
from corridor.planning.plan import Plan

log = logging.getLogger(__name__)

DEFAULT_FILTER = "tcp or udp"
DEFAULT_BUFFER_KIB = 65536


def tcpdump_argv(interface: str, out_path: str | Path, *, snaplen_bytes: int = 0,
                 buffer_kib: int = DEFAULT_BUFFER_KIB, filter_expr: str | None = DEFAULT_FILTER,
                 tcpdump: str = "tcpdump") -> list[str]:
    """argv that records ``interface`` into ``out_path`` until SIGTERM or SIGINT."""
    if not interface or "/" in interface or len(interface) > 15:
        raise EmulationError(f"{interface!r} is not a Linux interface name (1-15 characters, no '/')")
    if snaplen_bytes < 0 or buffer_kib <= 0:
        raise EmulationError("capture snap length must be >= 0 (0 = whole packets) and the buffer positive")
    argv = [tcpdump, "-i", interface, "-n", "-s", str(snaplen_bytes), "-B", str(buffer_kib), "-U",
            "--immediate-mode", "-Z", "root", "-w", str(out_path)]
    if filter_expr:
        argv.append(filter_expr)
    return argv


def wire_interface(plan: Plan, link_name: str, *, facing: str | None = None) -> tuple[str, str]:
    """The wire node and interface to capture a WAN link on: ``(wire_node, interface)``.

    ``facing`` is the site whose router the interface faces (default: end ``a``).
    """
    try:
        link = plan.link(link_name)
    except KeyError:
        names = ", ".join(lk.name for lk in plan.wan_links) or "none"
        raise EmulationError(f"no WAN link {link_name!r} in plan {plan.name!r}; links: {names}") from None
    if facing in (None, link.a):
        return link.wire, link.wire_intf_a
    if facing == link.b:
        return link.wire, link.wire_intf_b
    raise EmulationError(f"link {link_name!r} joins {link.a} and {link.b}, not {facing!r}")


def start(proc: subprocess.Popen[bytes], *, timeout_s: float = 10.0) -> None:
    """Wait until a tcpdump started with ``stderr=PIPE`` says it is listening.

    tcpdump prints "listening on IFACE" once the capture is armed; packets sent
    before that are not in the file.
    """
    if proc.stderr is None:
        time.sleep(0.5)
        return
    deadline = time.monotonic() + timeout_s
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.1)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if b"listening on" in line:
                return
            if not line and proc.poll() is not None:
                break
        elif proc.poll() is not None:
            break
    raise EmulationError(f"tcpdump did not start capturing: {seen.decode('utf-8', 'replace').strip() or 'no output'}")


def stop(proc: subprocess.Popen[bytes], *, timeout_s: float = 5.0) -> str:
    """Stop a capture with SIGTERM (tcpdump flushes and closes the file); returns its summary text."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=2.0)
    return _summary(err)


def stop_by_stdin(proc: subprocess.Popen[bytes], *, timeout_s: float = 15.0) -> str:
    """Stop a capture running on a server by closing its stdin (its leash then sends SIGTERM); its summary text.

    The pcap arrives over the process's stdout until tcpdump has flushed and exited.
    """
    try:
        _, err = proc.communicate(timeout=timeout_s)  # closes its stdin first: the stop
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=2.0)
        log.warning("a capture on a server did not stop within %g s; its last packets may be missing", timeout_s)
    return _summary(err)


def _summary(err: bytes | None) -> str:
    """tcpdump's exit summary as text; a capture that lost packets is logged."""
    text = (err or b"").decode("utf-8", "replace")
    for line in text.splitlines():
        if "dropped by kernel" in line and not line.strip().startswith("0 "):
            log.warning("capture lost packets: %s", line.strip())
    return text


def dropped_by_kernel(summary: str) -> int:
    """The "N packets dropped by kernel" figure from tcpdump's exit summary (0 when absent)."""
    for line in summary.splitlines():
        if "dropped by kernel" in line:
            try:
                return int(line.strip().split()[0])
            except ValueError:
                return 0
    return 0


def to_trace(pcap_path: str | Path, out_path: str | Path) -> tuple[int, int]:
    """Convert a recorded capture into a generic message trace; returns ``(messages, bytes)``."""
    from corridor.traces.pcap import convert_to_file

    return convert_to_file(pcap_path, out_path)
