"""The host-stall probe: 1 ms sleeps in a child process, read after the measurement it watched."""

from __future__ import annotations

import time

import pytest

from corridor.links.fidelity import HostStalls


def test_the_probe_reports_after_its_block_and_leaves_no_process() -> None:
    with HostStalls(absorbed_ms=1.0) as host:
        with pytest.raises(RuntimeError, match="after its with-block"):
            host.summary()
        child = host._proc
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # this process busy on the CPU, as a sweep's coordinator is
            pass
    figures = host.summary()
    assert set(figures) == {"p50_ms", "p99_ms", "max_ms", "stalled_fraction"}
    assert 0.0 <= figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert 0.0 <= figures["stalled_fraction"] < 1.0
    assert child is not None and child.poll() is not None
