"""Shared fixtures: the repository root, the shared data folder when it exists, and the netem VM's jobs."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the checkout (real traces); tests using it skip when it is absent."""
    path = REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"no shared data folder at {path} (it holds the real Azure trace sample)")
    return path


#: ``corridor check`` rows that time the machine as much as the link: throughput, and the delay line's lateness.
#: On two shared cores a stall of tens of milliseconds fails them now and then with the link in order, so the
#: check tests run a check that missed only these once more; any other row failing fails the test at once.
TIMING_ROWS = ("tcp_", "late_p99_")


def check_rows(argv: list[str], **run: Any) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], dict[str, str]]:
    """Run one ``corridor check --json``; its report and, by metric, the rows outside their bounds."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=400, **run)
    report = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    rows = {m["metric"]: m for m in report.get("measurements", [])}
    print("\n" + "\n".join(f"{k}: configured {m['expected']}, measured {m['measured']}, ok {m['ok']}"
                            for k, m in rows.items()))
    failed = {k: f"{m['link']} {k}: measured {m['measured']} outside {m['low']}..{m['high']} ({m['detail']})"
              for k, m in rows.items() if not m["ok"]}
    return done, report, failed


def missed_timing_rows_only(done: subprocess.CompletedProcess[str], failed: dict[str, str]) -> bool:
    """Whether a check failed on :data:`TIMING_ROWS` alone (worth one more run), printing those rows."""
    only = done.returncode != 0 and bool(failed) and all(name.startswith(TIMING_ROWS) for name in failed)
    if only:
        print("the check missed timing rows only; running it once more:\n" + "\n".join(failed.values()))
    return only


#: What the suite runs in a kernel with sch_netem, by name: all of it in one VM boot (a boot under qemu
#: costs about 26 s here, and the tests that need one would otherwise boot one each).
NETEM_VM_JOBS = {
    # corridor.links.netem_selftest: RTT, rate and loss of the netem backend (tests/test_netem_vm.py)
    "selftest": [sys.executable, "-m", "corridor.links.netem_selftest"],
    # `corridor check` on the netem backend, at the rate a TCG guest can carry (tests/test_check.py)
    "check": [sys.executable, "-m", "corridor", "check", "two-site", "--link-backend", "netem", "--rate", "10Mbit",
              "--pings", "100", "--duration", "6s", "--udp-packets", "5000", "--rtt-allowance", "5ms", "--json"],
}
_JOB_MARK = "@@corridor-vm-job "
_RC_MARK = "@@corridor-vm-rc "


def netem_vm_script(jobs: dict[str, list[str]]) -> str:
    """One ``sh`` script running each job in turn, its output between marks, its exit status after it."""
    lines = []
    for name, argv in jobs.items():
        lines.append(f"echo {shlex.quote(_JOB_MARK + name)}")
        lines.append(f"{shlex.join(argv)} 2>&1")
        lines.append(f'echo "{_RC_MARK}$?"')
    return "\n".join(lines)


def split_netem_vm_output(output: str) -> dict[str, tuple[int | None, str]]:
    """Each job's (exit status, output) from the VM's output; None for a job that never finished."""
    out: dict[str, tuple[int | None, str]] = {}
    name: str | None = None
    body: list[str] = []
    for line in output.splitlines():
        if line.startswith(_JOB_MARK):
            if name is not None:
                out[name] = (None, "\n".join(body))
            name, body = line[len(_JOB_MARK):].strip(), []
        elif line.startswith(_RC_MARK) and name is not None:
            out[name] = (int(line[len(_RC_MARK):].strip()), "\n".join(body))
            name, body = None, []
        elif name is not None:
            body.append(line)
    if name is not None:
        out[name] = (None, "\n".join(body))
    return out


#: Markers of tests that time a network or a kernel: they need the machine to themselves, so they never run
#: while the netem VM (a qemu vCPU busy on one of two cores) does.
QUIET_MARKERS = ("corridor_root", "corridor_netem")
#: ``CORRIDOR_NETEM_VM_BESIDE=0`` boots the VM only when its first test asks, with nothing beside it.
BESIDE_ENV = "CORRIDOR_NETEM_VM_BESIDE"


#: Unit test files that time this host's own scheduling (agents' pacing and deadlines, request arrival times,
#: kills at chosen moments, the stall probe): quiet tests too, though they need no root. In one of five runs
#: beside the VM two unit tests failed on a timing comparison (their names were not kept), which put these here.
HOST_TIMING_FILES = frozenset({
    "test_agent_pacer.py", "test_agent_protocol.py", "test_agent_runtime.py", "test_host_stalls.py",
    "test_inference_local.py", "test_reliability.py",
})


def needs_quiet_machine(item: pytest.Item) -> bool:
    """Whether ``item`` times a network, a kernel or this host (root or netem marker, a host-timing file) or
    reads the netem VM's figures."""
    if any(item.get_closest_marker(name) is not None for name in QUIET_MARKERS):
        return True
    if item.path.name in HOST_TIMING_FILES:
        return True
    return "netem_vm_jobs" in getattr(item, "fixturenames", ())


class NetemVmBeside:
    """The suite's one netem VM boot, run in a thread while the tests that need no quiet machine run.

    Under TCG the boot and its jobs take four to five minutes of one core, and unit tests want only the
    other core, so the suite runs those first, beside the VM, and holds every test that times a network
    until the VM has ended (:func:`pytest_runtest_setup`). Ended early, on Ctrl-C or any other end of
    the session, it kills the VM's process group, so no qemu outlives the suite.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.ended: float | None = None
        self.waited_s = 0.0
        self._stopping = False
        self._done = threading.Event()  # set once run_in_vm has returned or raised, its scratch removed
        self._thread = threading.Thread(target=self._run, name="netem-vm", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from corridor.tools.vm import run_in_vm

        try:
            self.result = run_in_vm(["sh", "-c", netem_vm_script(NETEM_VM_JOBS)], timeout_s=1500.0, cwd=str(REPO),
                                    on_start=self._started)
        except BaseException as exc:  # handed to the test that reads the figures
            self.error = exc
        finally:
            self.ended = time.monotonic()
            self._done.set()

    def _started(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        if self._stopping:  # the session ended while the VM was still being set up
            os.killpg(proc.pid, signal.SIGKILL)

    def running(self) -> bool:
        return not self._done.is_set()

    def join(self) -> None:
        """Wait for the VM to end (Ctrl-C still interrupts), counting the time waited."""
        if not self._done.is_set():
            began = time.monotonic()
            self._done.wait()
            self.waited_s += time.monotonic() - began

    def wait(self) -> Any:
        """The VM's :class:`~corridor.tools.vm.VmResult`, once it has ended; raises what the boot raised."""
        self.join()
        if self.error is not None:
            raise self.error
        return self.result

    def stop(self) -> None:
        """End a VM still running (the session ended first) and wait until its scratch directory is gone.

        It asks the process and an event, never the thread: a Thread.join that Ctrl-C interrupted leaves the thread
        reading as ended while it still runs (Python 3.11), so ``is_alive`` cannot tell.
        """
        self._stopping = True
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._done.wait(timeout=30)


_vm_beside: NetemVmBeside | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Where the VM will run beside the suite, the tests that need no quiet machine go first (order kept)."""
    if _vm_beside_wanted(config, items):
        items[:] = [item for item in items if not needs_quiet_machine(item)] + [
            item for item in items if needs_quiet_machine(item)]


def _vm_beside_wanted(config: pytest.Config, items: list[pytest.Item]) -> bool:
    if os.environ.get(BESIDE_ENV, "1") == "0" or config.option.collectonly or os.geteuid() != 0:
        return False
    if not any("netem_vm_jobs" in getattr(item, "fixturenames", ()) for item in items):
        return False
    # Nothing to overlap with: the VM would only delay the first test.
    if all(needs_quiet_machine(item) for item in items):
        return False
    from corridor.links.probe import probe_netem
    from corridor.tools.vm import vm_available

    # Where this kernel has netem the tests run it here and boot nothing.
    return vm_available()[0] and not probe_netem().ok


def pytest_runtestloop(session: pytest.Session) -> None:
    """Boot the VM beside the suite as the tests begin (not at collection: ``--co`` boots nothing)."""
    global _vm_beside
    if _vm_beside is None and _vm_beside_wanted(session.config, session.items):
        _vm_beside = NetemVmBeside()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that times a network waits for the VM to end: its figures and the VM's would spoil each other."""
    if _vm_beside is not None and _vm_beside.running() and needs_quiet_machine(item):
        _vm_beside.join()  # a failed boot is the netem tests' to report (netem_vm_jobs), not this test's


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _vm_beside is not None:
        _vm_beside.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _vm_beside is not None and _vm_beside.ended is not None:
        terminalreporter.write_line(
            f"netem VM: ran {_vm_beside.ended - _vm_beside.started:.0f} s beside the tests that need no quiet "
            f"machine; the first test that does waited {_vm_beside.waited_s:.0f} s for it")


@pytest.fixture(scope="session")
def netem_vm_jobs() -> dict[str, tuple[int | None, str]]:
    """:data:`NETEM_VM_JOBS` run in one virtme-ng boot of a Debian kernel; skips, saying why, without one.

    The boot is the one :class:`NetemVmBeside` started with the suite where there is one; otherwise it
    boots here.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root: the VM runs the jobs as root")
    from corridor.tools.vm import run_in_vm, vm_available

    ok, reason = vm_available()
    if not ok:
        pytest.skip(f"no netem VM here: {reason}")
    if _vm_beside is not None:
        vm = _vm_beside.wait()
    else:
        vm = run_in_vm(["sh", "-c", netem_vm_script(NETEM_VM_JOBS)], timeout_s=1500.0, cwd=str(REPO))
    jobs = split_netem_vm_output(vm.output)
    missing = [name for name in NETEM_VM_JOBS if name not in jobs]
    assert not missing, f"the VM ran no {missing} (exit {vm.rc}); its output:\n{vm.output[-3000:]}"
    return jobs
