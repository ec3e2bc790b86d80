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
    result.stdout.fnmatch_lines(["@pytest.mark.corridor_root:*", "@pytest.mark.corridor_netem:*",
                                 "@pytest.mark.corridor_slow:*"])
    # The generic names stay free for the project that installs corridor.
    for generic in ("root", "netem", "slow"):
        result.stdout.no_fnmatch_line(f"@pytest.mark.{generic}:*")


def test_strict_markers_accept_the_namespaced_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import pytest

@pytest.mark.corridor_slow
@pytest.mark.corridor_netem
def test_marked():
    pass
""")
    result = pytester.runpytest_inprocess("--strict-markers")
    result.assert_outcomes(passed=1)


SKIP_BY_MARKER = """
import pytest

def test_root_cause_analysis():
    pass

@pytest.mark.parametrize("where", ["root", "leaf"])
def test_parameter_named_root(where):
    pass

class TestRoot:
    def test_inside(self):
        pass

# another project's own generic marker (spelled with getattr so a rename of this suite's markers passes it by)
@getattr(pytest.mark, "root")
def test_the_projects_own_root_marker():
    pass

@pytest.mark.corridor_root
def test_needs_a_corridor():
    pass

@pytest.mark.corridor_root
class TestNeedsACorridor:
    def test_inside(self):
        pass
"""


def test_without_root_only_the_corridor_root_marker_skips(pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    pytester.makepyfile(SKIP_BY_MARKER)
    result = pytester.runpytest_inprocess("-rs", "-v")
    # "root" as a test name, a class name, a parameter id or another project's marker is not ours to skip.
    result.assert_outcomes(passed=5, skipped=2)
    result.stdout.fnmatch_lines(["*test_root_cause_analysis PASSED*", "*test_parameter_named_root?root? PASSED*",
                                 "*TestRoot::test_inside PASSED*", "*test_the_projects_own_root_marker PASSED*",
                                 "*test_needs_a_corridor SKIPPED*", "*TestNeedsACorridor::test_inside SKIPPED*",
                                 "*needs root*"])


def test_as_root_the_corridor_root_marker_does_not_skip(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from corridor import pytest_plugin

    monkeypatch.setattr(pytest_plugin, "_root_skip_reason", lambda: None)
    pytester.makepyfile(SKIP_BY_MARKER)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=7)


def test_without_root_the_fixture_skips_with_a_reason(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # What a non-root user sees, whoever runs this suite: the inner session runs in this process.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    pytester.makepyfile(BROKEN)
    result = pytester.runpytest_inprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs root*"])


@pytest.mark.corridor_root
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
