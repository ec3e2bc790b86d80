"""Shared fixtures: the repository root, the shared data folder when it exists, and the netem VM's jobs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
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


@pytest.fixture(scope="session")
def netem_vm_jobs() -> dict[str, tuple[int | None, str]]:
    """:data:`NETEM_VM_JOBS` run in one virtme-ng boot of a Debian kernel; skips, saying why, without one."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the VM runs the jobs as root")
    from corridor.tools.vm import run_in_vm, vm_available

    ok, reason = vm_available()
    if not ok:
        pytest.skip(f"no netem VM here: {reason}")
    vm = run_in_vm(["sh", "-c", netem_vm_script(NETEM_VM_JOBS)], timeout_s=1500.0, cwd=str(REPO))
    jobs = split_netem_vm_output(vm.output)
    missing = [name for name in NETEM_VM_JOBS if name not in jobs]
    assert not missing, f"the VM ran no {missing} (exit {vm.rc}); its output:\n{vm.output[-3000:]}"
    return jobs
