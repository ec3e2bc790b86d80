"""Backend choice with the netem probe mocked, and the probe itself where root allows."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from corridor.errors import EmulationError
from corridor.links import probe as probe_module
from corridor.links import select as select_module
from corridor.links.probe import ProbeResult, probe_namespace, probe_netem, probe_vxlan
from corridor.links.select import BackendChoice, choose_backend

NO_NETEM = ProbeResult(False, "this kernel has no sch_netem (tc said: Error: Specified qdisc kind is unknown.)")
NETEM_OK = ProbeResult(True, "a netem qdisc could be added in a scratch namespace")


def _mock_probe(monkeypatch: pytest.MonkeyPatch, result: ProbeResult) -> list[int]:
    calls: list[int] = []

    def fake() -> ProbeResult:
        calls.append(1)
        return result

    monkeypatch.setattr(select_module, "probe_netem", fake)
    return calls


def test_auto_picks_netem_where_the_probe_works(monkeypatch: pytest.MonkeyPatch) -> None:
    _mock_probe(monkeypatch, NETEM_OK)
    choice = choose_backend("auto")
    assert choice.name == "netem"
    assert "netem works" in choice.reason


def test_auto_falls_back_to_userspace_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    _mock_probe(monkeypatch, NO_NETEM)
    choice = choose_backend("auto")
    assert choice == BackendChoice(
        "userspace", f"auto: netem unavailable, using the userspace delay line ({NO_NETEM.reason})"
    )


def test_netem_requested_without_netem_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    _mock_probe(monkeypatch, NO_NETEM)
    with pytest.raises(EmulationError) as excinfo:
        choose_backend("netem")
    message = str(excinfo.value)
    assert "this kernel has no sch_netem" in message
    assert "use --link-backend userspace or run in the VM" in message


def test_netem_requested_and_available(monkeypatch: pytest.MonkeyPatch) -> None:
    _mock_probe(monkeypatch, NETEM_OK)
    assert choose_backend("netem").name == "netem"


@pytest.mark.parametrize("probe_result", [NETEM_OK, NO_NETEM])
def test_userspace_is_always_allowed_and_never_probes(
    monkeypatch: pytest.MonkeyPatch, probe_result: ProbeResult
) -> None:
    calls = _mock_probe(monkeypatch, probe_result)
    assert choose_backend("userspace").name == "userspace"
    assert calls == []


@pytest.mark.parametrize("requested", ["", "Auto", "tc", "mahimahi", "netem "])
def test_unknown_backends_are_refused(monkeypatch: pytest.MonkeyPatch, requested: str) -> None:
    calls = _mock_probe(monkeypatch, NETEM_OK)
    with pytest.raises(EmulationError, match="choose one of auto, netem, userspace"):
        choose_backend(requested)
    assert calls == []


def test_probe_without_root_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_module.os, "geteuid", lambda: 1000)
    result = probe_netem()
    assert not result.ok
    assert "root" in result.reason


def _fake_ip(monkeypatch: pytest.MonkeyPatch, word: str, outcome: Any) -> list[list[str]]:
    """Root, and every command answered by a fake: the one naming ``word`` gets ``outcome`` (raised if an
    exception), the rest succeed. Returns the commands as they are run."""
    commands: list[list[str]] = []

    def fake_run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        commands.append(argv)
        if word in argv:
            if isinstance(outcome, BaseException):
                raise outcome
            return subprocess.CompletedProcess(argv, 2, "", outcome)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(probe_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(probe_module, "_run", fake_run)
    return commands


def test_probe_removes_its_namespace_even_when_tc_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    commands = _fake_ip(monkeypatch, "tc", "Error: Specified qdisc kind is unknown.\n")
    result = probe_netem()
    assert result == NO_NETEM
    namespace = f"corridor-probe-{os.getpid()}"
    assert commands[0] == ["ip", "netns", "add", namespace]
    assert commands[-1] == ["ip", "netns", "del", namespace]


def test_probe_removes_its_namespace_when_tc_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    commands = _fake_ip(monkeypatch, "tc", subprocess.TimeoutExpired(["tc"], 10))
    result = probe_netem()
    assert not result.ok
    assert "probe failed" in result.reason
    assert commands[-1] == ["ip", "netns", "del", probe_namespace()]


def test_vxlan_probe_names_a_kernel_without_it_and_removes_its_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    commands = _fake_ip(monkeypatch, "vxlan", "Error: Unknown device type.\n")
    result = probe_vxlan()
    assert not result.ok and "this kernel has no VXLAN (CONFIG_VXLAN" in result.reason
    assert commands[-1] == ["ip", "netns", "del", probe_namespace()]
    monkeypatch.setattr(probe_module.os, "geteuid", lambda: 1000)
    assert "needs root" in probe_vxlan().reason


@pytest.mark.corridor_root
def test_real_probe_answers_and_leaves_no_namespace() -> None:
    result = probe_netem()
    assert isinstance(result.ok, bool)
    assert result.reason
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert probe_namespace() not in listing
