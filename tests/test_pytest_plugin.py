"""The pytest plugin: markers, skips with reasons, and a fixture that cleans up after a failing test."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

pytest_plugins = ["pytester"]

# A duration no other process on the machine is likely to show in ``ps`` (a shell waiting
# with ``sleep 300`` is common enough to be mistaken for a leftover of this test).
SLEEP_S = f"{300 + os.getpid() % 997 / 1000:.3f}"

BROKEN = """
import pytest

@pytest.mark.corridor_root
def test_broken_inside_the_fixture(corridor_network):
    net = corridor_network("two-site", backend="userspace")
    net.popen("rem-gpu1", ["sleep", "SLEEP_S"])
    raise RuntimeError("deliberately broken while the network is up")
""".replace("SLEEP_S", SLEEP_S)


def _root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(re.findall(r"^\d+: ([^:@]+)", out, flags=re.M))


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["*corridor_root*", "*netem*"])


def test_without_root_the_fixture_skips_with_a_reason(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # What a non-root user sees, whoever runs this suite: the inner session runs in this process.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    pytester.makepyfile(BROKEN)
    result = pytester.runpytest_inprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs root*"])


@pytest.mark.root
def test_a_test_broken_inside_the_fixture_leaves_nothing_behind(pytester: pytest.Pytester) -> None:
    from corridor.emulation import state

    before_links = _root_links()
    before_runs = set(state.STATE_ROOT.glob("*")) if state.STATE_ROOT.exists() else set()
    pytester.makepyfile(BROKEN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*deliberately broken*"])
    after_runs = set(state.STATE_ROOT.glob("*")) if state.STATE_ROOT.exists() else set()
    assert after_runs <= before_runs, "the fixture removed its run state"
    assert _root_links() == before_links
    leftover = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f"sleep {SLEEP_S}" not in leftover
