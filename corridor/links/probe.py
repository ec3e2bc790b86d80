"""Does this kernel's sch_netem work (and its VXLAN)? A probe in a scratch network namespace.

Stage: emulation (needs root; runs ``ip`` and ``tc``). The probe adds a netem
qdisc to the loopback interface of a namespace named ``corridor-probe-<pid>``
(the project's scratch prefix, which ``corridor clean`` removes after a kill) and
removes the namespace afterwards whatever happens, so it leaves nothing behind
and touches nothing outside. A kernel without sch_netem (this project's CI
machine, many micro-VM and container kernels) answers "Specified qdisc kind is
unknown"; that is reported as a reason, never raised.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("corridor.links.probe")

PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ProbeResult:
    """``ok`` when netem could be added; ``reason`` says why or why not, in a sentence."""

    ok: bool
    reason: str


def probe_namespace() -> str:
    """The scratch namespace this process probes in."""
    return f"corridor-probe-{os.getpid()}"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)


def _explain(stderr: str) -> str:
    text = stderr.strip() or "no message"
    if "qdisc kind is unknown" in text:
        return f"this kernel has no sch_netem (tc said: {text})"
    return f"tc could not add a netem qdisc (tc said: {text})"


def probe_netem() -> ProbeResult:
    """Try ``tc qdisc add dev lo root netem delay 1ms`` in a scratch namespace."""
    if os.geteuid() != 0:
        return ProbeResult(False, "probing netem needs root (network namespaces and tc); not running as root")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return ProbeResult(False, f"{tool} (iproute2) is not installed, so netem cannot be used")
    return _in_scratch_namespace(
        ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
        what="netem", ok="a netem qdisc could be added in a scratch namespace", explain=_explain)


def probe_vxlan() -> ProbeResult:
    """Try to make a VXLAN interface (what cross-server links ride) in a scratch namespace."""
    if os.geteuid() != 0:
        return ProbeResult(False, "probing VXLAN needs root (network namespaces); not running as root")
    if shutil.which("ip") is None:
        return ProbeResult(False, "ip (iproute2) is not installed, so no VXLAN tunnel can be made")

    def explain(stderr: str) -> str:
        text = stderr.strip() or "no message"
        if "Unknown device type" in text or "not supported" in text:
            return f"this kernel has no VXLAN (CONFIG_VXLAN; ip said: {text})"
        return f"ip could not make a VXLAN interface (ip said: {text})"

    return _in_scratch_namespace(
        ["ip", "link", "add", "corridor-vx", "type", "vxlan", "id", "42", "remote", "192.0.2.1", "dstport", "4789"],
        what="VXLAN", ok="a VXLAN interface could be made in a scratch namespace", explain=explain)


def _in_scratch_namespace(argv: list[str], *, what: str, ok: str, explain: Callable[[str], str]) -> ProbeResult:
    """Run ``argv`` in a scratch namespace made for it (and always removed): ok, or why not in a sentence."""
    namespace = probe_namespace()
    from corridor.emulation.state import forget_scratch_netns, record_scratch_netns

    try:
        record_scratch_netns(namespace)  # so `corridor clean` leaves it alone while this process lives
        created = _run(["ip", "netns", "add", namespace])
        if created.returncode != 0:
            return ProbeResult(False, f"could not create the probe namespace {namespace}: {created.stderr.strip()}")
        added = _run(["ip", "netns", "exec", namespace, *argv])
        if added.returncode != 0:
            return ProbeResult(False, explain(added.stderr))
        return ProbeResult(True, ok)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ProbeResult(False, f"the {what} probe failed: {exc}")
    finally:
        # Removing a namespace that was never made fails quietly; that is fine.
        try:
            _run(["ip", "netns", "del", namespace])
            forget_scratch_netns(namespace)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not remove probe namespace %s: %s", namespace, exc)
