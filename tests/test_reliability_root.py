"""kill -9 of `corridor run` on a real emulated network, then `corridor clean`, then `--resume` (root).

The network is real (two-site on the userspace link: node namespaces, the
delay line); the workloads are the fake kinds of test_experiment_fakes, whose
records depend only on the plan and the seed, so every run of the experiment
has the same verdict table. Ten times, at a seeded random moment once its
network is up, the run is killed with SIGKILL, which leaves the network behind
(namespaces pinned under the run's state, sometimes processes in them);
`corridor clean` must remove all of it, and `--resume` must finish the run to
the reference table with each point's records written once.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_reliability as reliability

from corridor.emulation.api import package_env
from corridor.emulation.state import netns_inode, state_root
from corridor.results.rundir import MANIFEST, RECORDS, read_run

pytestmark = [pytest.mark.corridor_root, pytest.mark.corridor_slow]

# test_reliability's experiment without its distance sweep: one network build per run keeps the ten tries short
EXPERIMENT = reliability.EXPERIMENT.replace("sweep:\n  distance: [1000km, 3268km]\n", "")
assert EXPERIMENT != reliability.EXPERIMENT

# The fake kinds over a real CorridorNetwork: they read only its plan (and two fields FakeNet has).
_CHILD = """
import sys
import test_experiment_fakes as fakes
from corridor.emulation.network import CorridorNetwork
from corridor.spec import experiment
from corridor.workloads import registry
from corridor.workloads.runner import run_experiment

class Net(CorridorNetwork):
    bulk = 0

    def rtt_s(self):
        return max((lk.rtt_ms for lk in self.plan.wan_links), default=0.1) / 1e3

registry.KINDS["training"] = fakes.FakeTrainingKind()
registry.KINDS["inference"] = fakes.FakeInferenceKind()
print("started", flush=True)
run_experiment(experiment.load_experiment(sys.argv[1]), sys.argv[2], resume=sys.argv[3] == "resume",
               network_factory=lambda plan, *, backend, time_scale, seed: Net(
                   plan, backend=backend, time_scale=time_scale, seed=seed))
"""


def _child(spec: str, out: str, *, resume: bool = False) -> subprocess.Popen[str]:
    env = package_env()
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.abspath(__file__)), env["PYTHONPATH"]])
    return subprocess.Popen([sys.executable, "-c", _CHILD, spec, out, "resume" if resume else "new"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen[str]) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]


def _workload_records(run_dir: str) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((str(r["point_id"]), str(r["kind"])) for r in read_run(run_dir).records
                               if r.get("kind") in ("train_step", "request", "session"))


def _states_of(pid: int) -> list[Path]:
    """State directories a run with this pid left (RunState names them PID-N)."""
    root = state_root()
    return sorted(root.glob(f"{pid}-*")) if root.exists() else []


def _left_behind(state_dirs: list[Path]) -> list[str]:
    """What these runs' networks left: namespaces still pinned under their state, and processes inside them."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    pinned = [m for m in mounts for d in state_dirs if m.startswith(str(d) + "/")]
    return pinned + [f"pid {pid}" for pid in _processes_in(state_dirs)]


def _processes_in(state_dirs: list[Path]) -> list[int]:
    """Processes still in a network namespace any of these runs recorded."""
    inodes: set[int] = set()
    for directory in state_dirs:
        try:
            nodes = json.loads((directory / "state.json").read_text())["nodes"]
        except (OSError, ValueError, KeyError):
            continue
        inodes |= {int(n["netns"]) for n in nodes.values() if n.get("netns")}
    inodes.discard(netns_inode(1) or -1)
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and netns_inode(int(p)) in inodes]


def _wait_for_network(pid: int, timeout_s: float) -> None:
    """Until the run ``pid`` has recorded a network node in its state (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for directory in _states_of(pid):
            try:
                if json.loads((directory / "state.json").read_text()).get("nodes"):
                    return
            except (OSError, ValueError):
                pass
        time.sleep(0.02)


def test_kill_9_then_clean_then_resume_ten_times_gives_the_same_verdicts(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: it builds an emulated network")
    spec = tmp_path / "reliable.yaml"
    spec.write_text(EXPERIMENT)
    reference = str(tmp_path / "reference")
    timing = _child(str(spec), reference)
    assert timing.stdout is not None and timing.stdout.readline().strip() == "started"
    t0 = time.monotonic()
    _finish(timing)
    run_s = time.monotonic() - t0
    reference_table = reliability._table(reference)
    rng = random.Random(17)
    cut_short = left = 0
    for attempt in range(10):
        out = str(tmp_path / f"kill{attempt}")
        child = _child(str(spec), out)
        assert child.stdout is not None and child.stdout.readline().strip() == "started"
        # at a random moment once a network is up (a kill before it, or after the end, proves nothing here)
        _wait_for_network(child.pid, timeout_s=60)
        time.sleep(rng.uniform(0.0, 0.5) * run_s)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        child.communicate()
        states = _states_of(child.pid)
        leftover = _left_behind(states)
        left += bool(leftover)
        clean = subprocess.run([sys.executable, "-m", "corridor", "clean"], capture_output=True, text=True,
                               timeout=180, env=package_env(), check=False)
        assert clean.returncode == 0, clean.stderr
        assert _left_behind(states) == [], f"attempt {attempt}: clean left part of the killed run's network"
        assert not any(d.exists() for d in states), f"attempt {attempt}: clean left the killed run's state"
        if os.path.exists(os.path.join(out, MANIFEST)):
            cut_short += len(read_run(out).points) < len(read_run(reference).points)
        _finish(_child(str(spec), out, resume=os.path.exists(os.path.join(out, MANIFEST))))
        markers = collections.Counter(r["point_id"] for r in read_run(out).records if r["kind"] == "point")
        assert set(markers.values()) == {1}, f"attempt {attempt}: points marked more than once: {markers}"
        assert sorted(markers) == sorted(p["point_id"] for p in read_run(out).planned_points)
        assert _workload_records(out) == _workload_records(reference), f"attempt {attempt}: records differ"
        assert Path(out, RECORDS).read_text().endswith("\n")
        assert reliability._table(out) == reference_table, f"attempt {attempt}: the verdicts differ after resume"
    print(f"\n10 kills in a {run_s:.1f} s run: {cut_short} cut a run short, {left} left its network behind "
          "(pinned namespaces, processes), and clean removed it every time")
    assert cut_short >= 5, f"only {cut_short} of 10 kills landed before the run finished; the test proves little"
    assert left >= 5, f"only {left} of 10 kills left a network behind; the test proves little about clean"
