"""Time the suite's netem VM jobs: a VM boot for each, then one boot for all, and print the ratio.

Usage (root, after ``bash scripts/setup.sh --test --netem-vm``):
``sudo .venv/bin/python scripts/vm_jobs_timing.py``. The jobs are
``tests/conftest.py``'s ``NETEM_VM_JOBS``; both ways run one after the other,
so the ratio is the figure to quote on a shared, noisy machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from conftest import NETEM_VM_JOBS, netem_vm_script, split_netem_vm_output  # noqa: E402

from corridor.tools.vm import run_in_vm  # noqa: E402


def main() -> int:
    alone = {}
    for name, argv in NETEM_VM_JOBS.items():
        started = time.monotonic()
        result = run_in_vm(argv, timeout_s=1500, cwd=str(REPO))
        alone[name] = time.monotonic() - started
        print(f"{name}: its own boot {alone[name]:.1f} s (exit {result.rc})", flush=True)
    started = time.monotonic()
    result = run_in_vm(["sh", "-c", netem_vm_script(NETEM_VM_JOBS)], timeout_s=1500, cwd=str(REPO))
    together = time.monotonic() - started
    statuses = {name: rc for name, (rc, _output) in split_netem_vm_output(result.output).items()}
    separate = sum(alone.values())
    print(f"a boot each {separate:.1f} s; one boot for all {together:.1f} s; ratio {together / separate:.3f}; "
          f"exit statuses in the shared boot {statuses}")
    return 0 if all(rc == 0 for rc in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
