"""The validation suite's emulation part: Streaming DiLoCo Table 4 cells as scale models, against the model (root).

``corridor validate --emulate -o DIR`` runs ``experiments/validation/`` (a data-parallel, a DiLoCo and a
streaming-with-overlap cell, and the streaming cell again at four times the scale) and compares the
measured compute utilisation with the model's. Targets (issue: validated against the published record):
each cell within 15 % of the model, the two scales within 5 % of each other.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corridor.results.rundir import read_run
from corridor.validation.emulated import AGREEMENT, SCALE_AGREEMENT, compare_run_dir

pytestmark = [pytest.mark.corridor_root, pytest.mark.corridor_slow]


def _stall_share(run_dir: Path) -> float:
    """Share of the remote placement's step time the host kept the slowest rank off the CPU (run_delay)."""
    per_step: dict[tuple[str, int], tuple[float, float]] = {}
    for r in read_run(str(run_dir)).records:
        if r.get("kind") != "train_step" or r.get("placement") == "local":
            continue
        key = (str(r.get("point_id")), int(r["step"]))
        wall, stall = float(r["step_time_s"]), float(r.get("sched_stall_s") or 0.0)
        if key not in per_step or wall > per_step[key][0]:
            per_step[key] = (wall, stall)
    walls = sum(w for w, _ in per_step.values())
    return sum(s for _, s in per_step.values()) / walls if walls else 0.0


def test_scaled_cells_agree_with_the_model_and_with_themselves_at_four_times_the_scale(tmp_path: Path) -> None:
    out = tmp_path / "validation"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "corridor", "validate", "--emulate", "-o", str(out), "--json"],
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(done.stdout)
    rows, pairs = doc["emulated"], doc["emulated_scales"]
    print(f"\nemulation part of the validation suite: {elapsed:.0f} s")
    for r in rows:
        print(f"  {r['case']}: model {r['model']}, emulated {r['emulated']}, error {r['error']:+.1%} ({r['note']})")
    for p in pairs:
        print(f"  {p['case']} at 1/{p['scale_a']:g} and 1/{p['scale_b']:g}: {p['difference']:+.1%}")
    methods = {r["case"].split()[3] for r in rows}
    assert {"data-parallel", "diloco", "streaming-overlap"} <= methods, methods
    assert len(pairs) == 1

    # each cell's miss, beside the share of its steps the host kept its ranks off the CPU
    misses: list[str] = []
    explained = True
    streaming: list[tuple[float, float]] = []
    for run_dir in sorted(d for d in out.iterdir() if d.is_dir()):
        stall = _stall_share(run_dir)
        for cell in compare_run_dir(str(run_dir)):
            if cell.method == "streaming-overlap":
                streaming.append((cell.measured, stall))
            if not cell.agrees:
                misses.append(f"{cell.workload} at 1/{cell.scale:g}: {cell.error:+.1%} with host stalls {stall:.1%}")
                explained &= stall >= abs(cell.error) - AGREEMENT
    (a, stall_a), (b, stall_b) = streaming
    if abs(b / a - 1) > SCALE_AGREEMENT:
        misses.append(f"the streaming cell at two scales: {b / a - 1:+.1%} with host stalls {stall_a:.1%}, "
                      f"{stall_b:.1%}")
        explained &= abs(stall_a - stall_b) >= abs(b / a - 1) - SCALE_AGREEMENT
    if misses and explained:
        pytest.skip("the host kept the ranks off the CPU for more than each miss: " + "; ".join(misses))
    assert not misses, misses
