"""``corridor doctor``: can this machine emulate a corridor, and with which link backend?

Stage: emulation (probes need root; everything else is read-only). Each check
is a :class:`Finding` with a one-line fix, so the CLI can print a table and
the exit status says whether emulation can run.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tool(name: str, fix: str, version_args: tuple[str, ...] = ("--version",), required: bool = True) -> Finding:
    path = shutil.which(name)
    if path is None:
        return Finding(name, False, "not found on PATH", fix, required)
    try:
        out = subprocess.run([path, *version_args], capture_output=True, text=True, timeout=5, check=False)
        first = (out.stdout or out.stderr).strip().splitlines()
        detail = f"{path}: {first[0]}" if first else path
    except (OSError, subprocess.TimeoutExpired):
        detail = path
    return Finding(name, True, detail, "", required)


def _delay_line_engine() -> Finding:
    """Which program the userspace links run (the compiled one keeps time at higher rates)."""
    from corridor.errors import CorridorError
    from corridor.links import engine

    try:
        chosen = engine.resolve()
    except CorridorError as exc:
        return Finding("delay line", False, str(exc), engine.BUILD_HINT, required=False)
    if chosen.name == "native":
        return Finding("delay line", True, f"native ({chosen.argv[0]})", required=False)
    detail = "python" + (f": {chosen.note}" if chosen.note else " (chosen by " + engine.ENV_ENGINE + ")")
    return Finding("delay line", not chosen.note, detail, engine.BUILD_HINT, required=False)


def _link_steering() -> Finding:
    """Whether delay lines will be pinned and their receivers steered (:mod:`corridor.links.steering`)."""
    from corridor.errors import CorridorError
    from corridor.links import steering

    try:
        on = steering.enabled()
    except CorridorError as exc:
        return Finding("link steering", False, str(exc),
                       f"unset {steering.STEERING_ENV} or set it to on, off or exclusive", required=False)
    cpus = len(os.sched_getaffinity(0))
    if not on:
        return Finding("link steering", True, f"off ({steering.STEERING_ENV}=off)", required=False)
    if not os.path.exists("/sys/class/net/lo/queues/rx-0/rps_cpus"):
        return Finding("link steering", True, "unavailable: this kernel has no receive packet steering (CONFIG_RPS)",
                       required=False)
    if cpus < 2:
        return Finding("link steering", True, "unavailable: one usable CPU, nowhere to steer to", required=False)
    exclusive = steering.mode() == "exclusive"
    return Finding("link steering", True, f"{'exclusive' if exclusive else 'on'} while a network has at most {cpus} "
                   "delay lines (one per CPU): each pinned, the interfaces it sends into steered to the other CPUs"
                   + (", and the traffic's processes kept off the lines' CPUs where one is left" if exclusive else ""),
                   required=False)


def diagnose() -> list[Finding]:
    findings: list[Finding] = []
    is_root = os.geteuid() == 0
    findings.append(Finding("root", is_root, "running as root" if is_root else f"running as uid {os.geteuid()}",
                            "run corridor with sudo: namespaces, veth and tc need root"))
    findings.append(Finding("python", True, f"{sys.executable} {platform.python_version()}", required=False))
    try:
        import mininet.net

        findings.append(Finding("mininet module", True, f"mininet {mininet.net.VERSION} ({mininet.net.__file__})"))
    except ImportError:
        findings.append(Finding(
            "mininet module", False, "cannot import mininet",
            "apt install mininet, and run from a venv made from /usr/bin/python3 --system-site-packages "
            "(scripts/setup.sh makes one)",
        ))
    findings.append(_tool("mnexec", "apt install mininet", ("-v",)))
    findings.append(_tool("ip", "apt install iproute2", ("-V",)))
    findings.append(_tool("tc", "apt install iproute2", ("-V",)))
    findings.append(_tool("iperf3", "apt install iperf3"))
    findings.append(_tool("ping", "apt install iputils-ping", ("-V",)))
    findings.append(_tool("ethtool", "apt install ethtool"))
    findings.append(_tool("tcpdump", "apt install tcpdump (only `corridor capture` needs it)", required=False))
    findings.append(Finding("kernel", True, platform.release(), required=False))
    findings.append(_delay_line_engine())
    findings.append(_link_steering())
    if is_root:
        from corridor.links.probe import probe_netem
        from corridor.links.select import choose_backend

        probe = probe_netem()
        findings.append(Finding(
            "sch_netem", probe.ok, probe.reason,
            "" if probe.ok else "the userspace backend will be used; for netem boot a full kernel (see README)",
            required=False,
        ))
        try:
            choice = choose_backend("auto")
            findings.append(Finding("link backend", True, f"{choice.name}: {choice.reason}"))
        except Exception as exc:  # a probe failure is a finding, not a crash
            findings.append(Finding("link backend", False, str(exc), "see the sch_netem line"))
    else:
        findings.append(Finding("sch_netem", False, "not probed: the probe needs root", "run with sudo",
                                required=False))
    return findings


def can_emulate(findings: list[Finding]) -> bool:
    return all(f.ok for f in findings if f.required)
