"""Does this kernel's sch_netem work? A probe in a scratch network namespace.

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
    namespace = probe_namespace()
    from corridor.emulation.state import forget_scratch_netns, record_scratch_netns

    try:
        record_scratch_netns(namespace)  # so `corridor clean` leaves it alone while this process lives
        created = _run(["ip", "netns", "add", namespace])
        if created.returncode != 0:
            return ProbeResult(False, f"could not create the probe namespace {namespace}: {created.stderr.strip()}")
        added = _run(
            ["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]
        )
        if added.returncode != 0:
            return ProbeResult(False, _explain(added.stderr))
        return ProbeResult(True, "a netem qdisc could be added in a scratch namespace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ProbeResult(False, f"the netem probe failed: {exc}")
    finally:
        # Removing a namespace that was never made fails quietly; that is fine.
        try:
            _run(["ip", "netns", "del", namespace])
            forget_scratch_netns(namespace)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not remove probe namespace %s: %s", namespace, exc)
