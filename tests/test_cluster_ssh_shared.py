"""Shared ssh connections (corridor.cluster.ssh): which commands ride a master, and the fall-back when one is refused.

Without a network: ``subprocess.run`` is replaced by a recorder, and a master is
registered by hand, as :class:`SharedConnections` does once its socket is up.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corridor.cluster import ssh
from corridor.cluster.spec import ClusterSpec, ServerSpec
from corridor.cluster.ssh import SSH_FAILED, SharedConnections, mux_refused, run_ssh, shared_socket, ssh_options

SERVER = ServerSpec(name="alpha", address="192.0.2.10", user="root", key_path="/keys/alpha", port=22)
CLUSTER = ClusterSpec(source="/c/cluster.yaml", servers=(SERVER,))


def option_values(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]


@pytest.fixture
def master() -> Iterator[str]:
    """A master connection to SERVER registered as up (its socket need not exist for argv tests)."""
    socket = "/run/corridor/1-1/ssh-0.sock"
    key = (SERVER.destination, SERVER.port)
    ssh._SHARED[key] = socket
    try:
        yield socket
    finally:
        ssh._SHARED.pop(key, None)


def test_without_a_master_no_command_is_multiplexed_whatever_the_users_config_says() -> None:
    for shared in (False, True):
        options = option_values(ssh_options(SERVER, shared=shared))
        assert "ControlPath=none" in options and "ControlMaster=no" in options


def test_only_shared_commands_ride_the_master(master: str) -> None:
    assert shared_socket(SERVER) == master
    assert f"ControlPath={master}" in option_values(ssh_options(SERVER, shared=True))
    # a node's shell or a leashed process keeps a login of its own: sshd caps sessions per connection
    assert "ControlPath=none" in option_values(ssh_options(SERVER, shared=False))
    other = ServerSpec(name="beta", address="192.0.2.11", user="root", key_path="/keys/beta")
    assert "ControlPath=none" in option_values(ssh_options(other, shared=True))


def test_a_master_listens_on_its_socket_and_persists_no_longer_than_its_process() -> None:
    options = option_values(ssh_options(SERVER, master_socket="/run/x/ssh-0.sock"))
    assert {"ControlMaster=yes", "ControlPath=/run/x/ssh-0.sock", "ControlPersist=no"} <= set(options)
    assert "ControlPath=none" not in options


@pytest.mark.parametrize(("code", "stderr", "refused"), [
    (SSH_FAILED, "mux_client_request_session: session request failed: Session open refused by peer", True),
    (SSH_FAILED, "Control socket connect(/run/x): Connection refused", True),
    (SSH_FAILED, "ssh: connect to host 192.0.2.10 port 22: Connection refused", False),
    (1, "mux_client_request_session: nothing", False),  # the remote command's own failure
])
def test_a_refused_session_is_told_from_a_lost_server(code: int, stderr: str, refused: bool) -> None:
    assert mux_refused(code, stderr) is refused


def test_a_command_the_master_refused_is_sent_again_alone(master: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        if f"ControlPath={master}" in argv:
            return subprocess.CompletedProcess(argv, SSH_FAILED, "", "mux_client_request_session: session "
                                                                     "request failed: Session open refused by peer")
        return subprocess.CompletedProcess(argv, 0, "ok\n", "")

    monkeypatch.setattr(ssh.subprocess, "run", fake_run)
    result = run_ssh(CLUSTER, SERVER, ["true"])
    assert result.returncode == 0 and result.stdout == "ok\n"
    assert [f"ControlPath={master}" in argv for argv in calls] == [True, False]


def test_a_lost_server_is_not_retried(master: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, SSH_FAILED, "", "Connection to 192.0.2.10 closed by remote host.")

    monkeypatch.setattr(ssh.subprocess, "run", fake_run)
    result = run_ssh(CLUSTER, SERVER, ["true"])
    assert not result.connected and len(calls) == 1


def test_a_master_that_never_comes_up_leaves_its_server_to_log_in_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an ssh that exits at once, as one refused by the server does
    fake = tmp_path / "ssh"
    fake.write_text("#!/bin/sh\necho 'ssh: connect to host 192.0.2.10 port 22: No route to host' >&2\nexit 255\n",
                    encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    recorded: list[tuple[str, int]] = []
    shared = SharedConnections(CLUSTER, tmp_path)
    assert shared.open([SERVER], record=lambda name, pid: recorded.append((name, pid))) == []
    assert [name for name, _pid in recorded] == ["alpha"]  # recorded before it could be known to fail
    assert shared_socket(SERVER) is None and shared.masters == {}
    shared.close()
