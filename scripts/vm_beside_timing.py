"""Time the suite's unit tests and its netem VM one after the other, then side by side, and print the ratio.

Usage (root, after ``bash scripts/setup.sh --test --netem-vm``):
``sudo .venv/bin/python scripts/vm_beside_timing.py [PYTEST-ARGS...]``.

Both runs are ``pytest -m "not corridor_root"``: every test that needs no quiet
machine, plus ``tests/test_check.py``'s netem check, which reads the VM's
figures. The first run sets ``CORRIDOR_NETEM_VM_BESIDE=0``, so the VM boots when
that test asks, with nothing beside it; the second leaves the suite's default, the
VM booted as the tests begin and run beside the unit tests (``tests/conftest.py``,
docs/vm.md). Both run one after the other, so the ratio is the figure to quote on
a shared, noisy machine. Extra arguments go to both pytest runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed_pytest(beside: bool, extra: list[str]) -> tuple[float, int, str]:
    """Wall seconds, exit status and the last lines of one pytest run of the selection."""
    env = dict(os.environ, CORRIDOR_NETEM_VM_BESIDE="1" if beside else "0")
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "not corridor_root",
            "--durations=0", *extra]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    tail = [line for line in done.stdout.splitlines()
            if line.startswith(("FAILED", "SKIPPED", "ERROR")) or "netem VM:" in line or " passed" in line
            or " failed" in line or "test_check_two_site_netem" in line]
    return elapsed, done.returncode, "\n".join(tail)


def main() -> int:
    if os.geteuid() != 0:
        sys.stderr.write("vm_beside_timing: run as root (the netem VM boots as root); use sudo\n")
        return 2
    extra = sys.argv[1:]
    results = {}
    for beside in (False, True):
        label = "beside" if beside else "one after the other"
        print(f"{label}: running pytest -m 'not corridor_root' ...", flush=True)
        elapsed, rc, tail = timed_pytest(beside, extra)
        results[beside] = elapsed
        print(f"{label}: {elapsed:.1f} s (pytest exit {rc})\n{tail}", flush=True)
        if rc != 0:
            return 1
    print(f"one after the other {results[False]:.1f} s; VM beside the unit tests {results[True]:.1f} s; "
          f"ratio {results[True] / results[False]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
