"""Reliability: a run cut short by a full disk or kill -9 resumes to the same verdicts, with nothing lost or doubled.

No root and no network: the fake workload kinds and network of
test_experiment_fakes. The reference is an uninterrupted run of the same
experiment; each interrupted run must resume to its verdict table exactly, with
one ``point`` marker per point and each point's records written once.
"""

from __future__ import annotations

import builtins
import collections
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_experiment_fakes import run_fake, use_fakes  # noqa: F401

from corridor.errors import RunDirError
from corridor.results import rundir
from corridor.results.rundir import MANIFEST, RECORDS, read_run
from corridor.results.verdict import compute_verdicts, format_table

pytestmark = pytest.mark.usefixtures("use_fakes")

# Eight points (a local baseline and two distances for each workload); the fake
# workloads sleep a little, so a kill can land in the middle of a point.
EXPERIMENT = """
name: reliable
topology: two-site
placements:
  - name: local
  - name: remote
    servers: [remote]
    clients: [city]
    ranks: [remote, city]
workloads:
  - name: dp
    type: fake-dp
    params: {steps: 4, compute_s: 0.1}
    slo: {max_slowdown: 1.1, marginal_slowdown: 1.5}
  - name: chat
    type: fake-chat
    params: {requests: 30}
    slo: {ttft: 250ms, tpot: 100ms}
sweep:
  distance: [1000km, 3268km]
repetitions: 1
seed: 11
"""


def _table(run_dir: str) -> str:
    return format_table(compute_verdicts(read_run(run_dir)))


def _check_whole(run_dir: str, reference: str) -> None:
    """Every line is a record; each point has one marker and exactly the records the reference run wrote."""
    lines = Path(run_dir, RECORDS).read_text().split("\n")
    assert lines[-1] == "", "the records file ends in a partial line"
    records = [json.loads(line) for line in lines[:-1]]
    markers = collections.Counter(r["point_id"] for r in records if r["kind"] == "point")
    assert markers and set(markers.values()) == {1}, f"points marked more than once: {markers}"
    planned = [p["point_id"] for p in read_run(run_dir).planned_points]
    assert sorted(markers) == sorted(planned)

    def per_point(path: str) -> collections.Counter[tuple[str, str]]:
        return collections.Counter((str(r["point_id"]), str(r["kind"])) for r in read_run(path).records
                                   if r.get("point_id") is not None and r["kind"] != "point")

    assert per_point(run_dir) == per_point(reference)
    for marker in (r for r in records if r["kind"] == "point"):
        written = sum(1 for r in records if r.get("point_id") == marker["point_id"] and r["kind"] != "point")
        assert written == marker["n_records"], f"{marker['point_id']}: {written} records, marker says " \
                                               f"{marker['n_records']}"


@pytest.fixture
def reference(tmp_path: Path) -> tuple[str, str]:
    path = run_fake(tmp_path, "reference", EXPERIMENT)
    return path, _table(path)


class _FullDisk:
    """Stands in for ``open`` in corridor.results.rundir: after ``appends`` appends the disk fills up mid-write."""

    def __init__(self, appends: int) -> None:
        self.left = appends
        self.full = False
        self.failed_writes = 0

    def __call__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = builtins.open(file, mode, *args, **kwargs)
        if "a" not in mode and "w" not in mode:
            return handle
        if "a" in mode and not self.full:
            self.left -= 1
            if self.left < 0:
                self.full = True
        return _Handle(handle, self) if self.full else handle


class _Handle:
    def __init__(self, handle: Any, disk: _FullDisk) -> None:
        self._handle = handle
        self._disk = disk

    def write(self, text: str) -> int:
        # what fits lands on disk (half the text, a cut-short line), then the device is full
        self._handle.write(text[: len(text) // 2])
        self._handle.flush()
        self._disk.failed_writes += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


@pytest.mark.parametrize("appends", [2, 5])
def test_a_full_disk_stops_the_run_and_resume_completes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           reference: tuple[str, str], appends: int) -> None:
    reference_dir, reference_table = reference
    disk = _FullDisk(appends)
    monkeypatch.setattr(rundir, "open", disk, raising=False)
    with pytest.raises(RunDirError) as err:
        run_fake(tmp_path, "run", EXPERIMENT)
    assert disk.failed_writes >= 1
    message = str(err.value)
    assert "No space left on device" in message and RECORDS in message and "--resume" in message
    run_dir = str(tmp_path / "run")
    text = Path(run_dir, RECORDS).read_text()
    assert not text.endswith("\n"), "the injected fault should have left a cut-short line"
    finished = len(read_run(run_dir).points)
    assert 0 < finished < len(read_run(reference_dir).points)
    monkeypatch.delattr(rundir, "open")  # space freed
    run_fake(tmp_path, "run", EXPERIMENT, resume=True)
    _check_whole(run_dir, reference_dir)
    assert _table(run_dir) == reference_table


_CHILD = """
import sys
import test_experiment_fakes as fakes
from corridor.spec import experiment
from corridor.workloads.runner import run_experiment
from corridor.workloads import registry

registry.KINDS["training"] = fakes.FakeTrainingKind()
registry.KINDS["inference"] = fakes.FakeInferenceKind()
print("started", flush=True)
run_experiment(experiment.load_experiment(sys.argv[1]), sys.argv[2], plan_builder=fakes.fake_plan_builder,
               network_factory=fakes.fake_network_factory)
"""


def _start_child(spec: str, out: str) -> subprocess.Popen[str]:
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return subprocess.Popen([sys.executable, "-c", _CHILD, spec, out], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)


def test_kill_9_at_ten_random_moments_then_resume_gives_the_same_verdicts(
        tmp_path: Path, reference: tuple[str, str]) -> None:
    reference_dir, reference_table = reference
    spec = str(tmp_path / "reliable.yaml")
    Path(spec).write_text(EXPERIMENT)
    # how long a whole run takes once the child has imported everything
    timing = _start_child(spec, str(tmp_path / "timing"))
    assert timing.stdout is not None and timing.stdout.readline().strip() == "started"
    t0 = time.monotonic()
    assert timing.wait(60) == 0
    run_s = time.monotonic() - t0
    rng = random.Random(13)
    cut_short = 0
    landed = []
    # Ten kills at least; more (up to twenty) while fewer than five landed inside the run. A kill can land
    # before the run directory holds a manifest (the run starts again) or, on a loaded machine whose timing
    # run was slow, after a later copy finished: both are fine outcomes, but they prove little about resume.
    attempt = 0
    while attempt < 10 or (cut_short < 5 and attempt < 20):
        out = str(tmp_path / f"kill{attempt}")
        child = _start_child(spec, out)
        assert child.stdout is not None and child.stdout.readline().strip() == "started"
        # moments within the first 70 % of an uninterrupted run's length: a loaded machine can run a later
        # copy faster than the timing run, and a kill after the end proves nothing
        time.sleep(rng.uniform(0.0, 0.7 * run_s))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        assert child.stdout is not None
        child.stdout.close()
        if not os.path.exists(os.path.join(out, MANIFEST)):
            # killed before the run directory held a manifest: nothing to resume, so it starts again
            landed.append("before the manifest")
            run_fake(tmp_path, f"kill{attempt}", EXPERIMENT)
        else:
            before = len(read_run(out).points)
            cut_short += before < len(read_run(reference_dir).points)
            landed.append(f"after {before} points")
            run_fake(tmp_path, f"kill{attempt}", EXPERIMENT, resume=True)
        _check_whole(out, reference_dir)
        assert _table(out) == reference_table, f"attempt {attempt}: the verdicts differ after resume"
        attempt += 1
    assert cut_short >= 5, (f"only {cut_short} of {attempt} kills landed inside the run ({', '.join(landed)}); "
                            "the test proves little")
