"""Run a command inside a Debian kernel booted with virtme-ng: where netem tests run on this machine.

Stage: tooling (test and CI harness; needs root, qemu and a Debian kernel).
This machine's own kernel has no sch_netem and loads no modules, so the netem
backend is exercised in a throwaway VM instead: Debian's ``linux-image-*-amd64``
booted by ``vng`` under qemu with the host's filesystem shared read-only over
9p (plus one read-write scratch directory), running as root. The guest sees
/work/venv, Mininet, tc and iperf3 exactly as the host does; writes outside the
scratch directory land in a tmpfs overlay and vanish with the VM.

KVM is not usable here (``/dev/kvm`` exists but a KVM boot hangs), so qemu runs
under TCG: boot takes 25-40 s and the guest is several times slower than the
host. The kernel is told to use the TSC as its clock (``clocksource=tsc``):
the default, HPET, costs an emulated device access on every clock read. One
vCPU by default: on a busy two-core host a second vCPU thread mostly waits for
the first (emulated IPIs, lock holders descheduled); one carried 84 Mbit/s of
unshaped TCP where two carried 38-40 in the same conditions.

The guest's timers are the link's timers: when qemu waits for a host CPU, no
packet leaves on time. ``run_in_vm`` therefore raises the VM's scheduling
weight (``VM_NICENESS``, -10). The VM leads its own session, and with the
kernel's autogroup scheduling (on by default) a session's processes compete
with others as one group, so the group's niceness is what counts: it is
written to ``/proc/PID/autogroup``; where autogroups are off, the processes'
own niceness is. Beside two busy loops on two cores, a VM at the default
weight carried 74 % of a 10 Mbit/s link with its 1 ms sleeps 29 ms late at
p99; raised, it carried 100 % with them 8.4 ms late, as on a quiet host.

``run_in_vm`` writes a small shell script into the scratch directory, boots
with ``--exec`` running it, and reads the command's output and exit status
back from files there; the serial console (kernel log, ``--verbose``) goes to
the log at DEBUG level and is quoted when the VM fails before the command ends.

``python -m corridor.tools.vm [--timeout S] -- CMD ...`` runs CMD in the VM from the
current directory, streams nothing, prints its output and exits with its code
(125 when the VM itself failed).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from corridor import CHECKOUT_ROOT
from corridor.errors import EmulationError

log = logging.getLogger("corridor.tools.vm")

#: Options DESIGN.md's recipe uses; --verbose is what makes --exec output reach the console.
VNG_OPTIONS = ("--disable-kvm", "--force-9p", "--force-initramfs", "--verbose")
KERNEL_APPEND = "clocksource=tsc tsc=reliable"
#: vCPUs of the guest (``CORRIDOR_VM_CPUS`` overrides); see the module docstring for why one.
VM_CPUS = int(os.environ.get("CORRIDOR_VM_CPUS", "1"))
VM_MEMORY = "2G"
SETUP_HINT = "run scripts/setup-netem-vm.sh as root"
#: Exit status of ``python -m corridor.tools.vm`` when the VM, not the command, failed.
VM_FAILED_RC = 125
#: Environment variables carried into the guest besides PATH and PYTHONPATH.
_CARRIED_ENV = re.compile(r"^(CORRIDOR_[A-Z0-9_]*|PYTHONUNBUFFERED|PYTEST_ADDOPTS)$")
_CONSOLE_TAIL_CHARS = 4000
#: Niceness of the VM's processes, or of its session's autogroup (``CORRIDOR_VM_NICE`` overrides; 0 leaves it).
VM_NICENESS = int(os.environ.get("CORRIDOR_VM_NICE", "-10"))
AUTOGROUP_SWITCH = "/proc/sys/kernel/sched_autogroup_enabled"


@dataclass(frozen=True)
class VmResult:
    """What the command did inside the VM: its exit status and its stdout+stderr."""

    rc: int
    output: str


def _vng_path() -> str | None:
    beside_python = os.path.join(os.path.dirname(sys.executable), "vng")
    if os.access(beside_python, os.X_OK):
        return beside_python
    return shutil.which("vng")


def _kernel_sort_key(path: str) -> list[int]:
    version = os.path.basename(path).removeprefix("vmlinuz-")
    return [int(part) for part in re.findall(r"\d+", version)]


def find_kernel() -> str | None:
    """The newest Debian ``/boot/vmlinuz-*-amd64`` whose modules are installed, or None."""
    candidates = []
    for path in glob.glob("/boot/vmlinuz-*-amd64"):
        version = os.path.basename(path).removeprefix("vmlinuz-")
        if os.path.exists(f"/lib/modules/{version}/modules.dep") and os.access(path, os.R_OK):
            candidates.append(path)
    if not candidates:
        return None
    return max(candidates, key=_kernel_sort_key)


def vm_available() -> tuple[bool, str]:
    """Whether :func:`run_in_vm` can boot here; when not, a sentence saying what is missing and the fix."""
    if os.geteuid() != 0:
        return False, "the netem VM runs as root (its guest needs root for namespaces and tc); run as root"
    if _vng_path() is None:
        return False, "virtme-ng (vng) is not installed; pip install virtme-ng into the venv, or " + SETUP_HINT
    if shutil.which("qemu-system-x86_64") is None:
        return False, "qemu-system-x86_64 is not installed; " + SETUP_HINT
    if shutil.which("cpio") is None or shutil.which("depmod") is None:
        return False, "cpio and kmod are needed to build the VM's initramfs; " + SETUP_HINT
    kernel = find_kernel()
    if kernel is None:
        return False, "no Debian kernel with modules (/boot/vmlinuz-*-amd64 and /lib/modules/...); " + SETUP_HINT
    return True, f"kernel {kernel} under qemu (TCG)"


def _package_root() -> str:
    return CHECKOUT_ROOT


def guest_script(argv: Sequence[str], *, cwd: str, out_path: str, rc_path: str) -> str:
    """The shell script the guest runs: environment, directory, the command, its status to a file."""
    lines = ["#!/bin/sh"]
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    lines.append(f"export PATH={shlex.quote(path)}")
    pythonpath = _package_root()
    if os.environ.get("PYTHONPATH"):
        pythonpath += os.pathsep + os.environ["PYTHONPATH"]
    lines.append(f"export PYTHONPATH={shlex.quote(pythonpath)}")
    for name in sorted(os.environ):
        if _CARRIED_ENV.match(name):
            lines.append(f"export {name}={shlex.quote(os.environ[name])}")
    lines.append(f"cd {shlex.quote(cwd)} || exit 126")
    lines.append(f"{shlex.join(argv)} >{shlex.quote(out_path)} 2>&1 </dev/null")
    lines.append(f"echo $? >{shlex.quote(rc_path)}")
    return "\n".join(lines) + "\n"


def vng_argv(kernel: str, *, scratch_dir: str, script_path: str, cwd: str) -> list[str]:
    """The ``vng`` command line that boots ``kernel`` and runs ``script_path`` as root."""
    vng = _vng_path() or "vng"
    return [
        vng, "--run", kernel, *VNG_OPTIONS,
        "--user", "root", "--cpus", str(VM_CPUS), "--memory", VM_MEMORY,
        "--append", KERNEL_APPEND, f"--rwdir={scratch_dir}", "--cwd", cwd,
        "--exec", f"sh {shlex.quote(script_path)}",
    ]  # fmt: skip


def autogroups_enabled() -> bool:
    """Whether the kernel schedules each session as one group (``kernel.sched_autogroup_enabled``)."""
    try:
        with open(AUTOGROUP_SWITCH, encoding="ascii") as handle:
            return handle.read().strip() == "1"
    except OSError:
        return False


def raise_session_priority(leader_pid: int, niceness: int) -> str:
    """Set the niceness of the autogroup of the session ``leader_pid`` leads; says what was set.

    Every process in the session, present and future, shares it. A failure
    (no root, no such process) is said, never raised: the VM still runs.
    """
    try:
        with open(f"/proc/{leader_pid}/autogroup", "w", encoding="ascii") as handle:
            handle.write(str(niceness))
        return f"the VM's session group at nice {niceness}"
    except OSError as exc:
        return f"the VM's session group left at its niceness ({exc.strerror})"


def niced(command: list[str], niceness: int) -> list[str]:
    """``command`` run at ``niceness`` (coreutils ``nice``; its children inherit it), where autogroups are off."""
    return ["nice", "-n", str(niceness), *command]


def run_in_vm(
    argv: list[str],
    *,
    timeout_s: float,
    cwd: str,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    niceness: int = VM_NICENESS,
) -> VmResult:
    """Boot the VM, run ``argv`` in ``cwd`` as root inside it, return its exit status and output.

    Raises EmulationError when the VM cannot boot here, does not finish within
    ``timeout_s`` (boot included), or ends without running the command.
    ``on_start`` is handed the ``vng`` process as soon as it starts: it leads its
    own process group (vng, virtme-run, qemu), so a caller running this in a
    thread can end the VM early with ``os.killpg(proc.pid, SIGKILL)``.
    ``niceness`` (unless 0) is the VM's scheduling weight: see the module docstring.
    """
    ok, reason = vm_available()
    if not ok:
        raise EmulationError(f"cannot boot the netem VM: {reason}")
    kernel = find_kernel()
    assert kernel is not None
    cwd = os.path.abspath(cwd)
    scratch = tempfile.mkdtemp(prefix="con-vm-")
    try:
        out_path = os.path.join(scratch, "output")
        rc_path = os.path.join(scratch, "rc")
        script_path = os.path.join(scratch, "run.sh")
        with open(script_path, "w", encoding="utf-8") as handle:
            handle.write(guest_script(argv, cwd=cwd, out_path=out_path, rc_path=rc_path))
        command = vng_argv(kernel, scratch_dir=scratch, script_path=script_path, cwd=cwd)
        log.info("booting %s in qemu for: %s", kernel, shlex.join(argv))
        # vng needs its virtme-run sibling on PATH.
        env = dict(os.environ)
        env["PATH"] = os.path.dirname(command[0]) + os.pathsep + env.get("PATH", "")
        grouped = bool(niceness) and autogroups_enabled()
        if niceness and not grouped:
            command = niced(command, niceness)
            log.info("scheduling: the VM at nice %d", niceness)
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,
        )
        if grouped:
            # The session exists once Popen returns (setsid runs before exec), before qemu is started.
            log.info("scheduling: %s", raise_session_priority(proc.pid, niceness))
        if on_start is not None:
            on_start(proc)
        try:
            console, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # The whole group is ours: vng, virtme-run and the qemu they started.
            os.killpg(proc.pid, signal.SIGKILL)
            console, _ = proc.communicate()
            raise EmulationError(
                f"the netem VM did not finish within {timeout_s:.0f} s; console tail:\n"
                + console[-_CONSOLE_TAIL_CHARS:]
            ) from None
        log.debug("VM console:\n%s", console)
        if not os.path.exists(rc_path):
            raise EmulationError(
                f"the netem VM ended (vng exit {proc.returncode}) without finishing the command; console tail:\n"
                + console[-_CONSOLE_TAIL_CHARS:]
            )
        with open(rc_path, encoding="utf-8") as handle:
            rc = int(handle.read().strip() or "125")
        with open(out_path, encoding="utf-8", errors="replace") as handle:
            output = handle.read()
        return VmResult(rc=rc, output=output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m corridor.tools.vm [--timeout S] -- CMD ...``: run CMD in the VM, exit with its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    timeout_s = 900.0
    if len(args) >= 2 and args[0] == "--timeout":
        timeout_s = float(args[1])
        args = args[2:]
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        sys.stderr.write("usage: python -m corridor.tools.vm [--timeout SECONDS] -- COMMAND [ARG...]\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="corridor.tools.vm: %(message)s", stream=sys.stderr)
    try:
        result = run_in_vm(args, timeout_s=timeout_s, cwd=os.getcwd())
    except EmulationError as exc:
        sys.stderr.write(f"corridor.tools.vm: {exc}\n")
        return VM_FAILED_RC
    sys.stdout.write(result.output)
    sys.stdout.flush()
    return result.rc


if __name__ == "__main__":
    sys.exit(main())
