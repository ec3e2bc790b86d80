"""``corridor clean --cluster``: what each server is asked to run, and how its answer is read (no ssh here)."""

from __future__ import annotations

import json
from typing import Any

from corridor.cluster.clean import ServerClean, clean_argv, clean_cluster, parse_clean_report
from corridor.cluster.spec import ClusterSpec, ServerSpec
from corridor.cluster.ssh import SSH_FAILED, SshResult

WEST = ServerSpec(name="west", address="192.0.2.10", user="root", key_path="/k", python="/opt/venv/bin/python")
EAST = ServerSpec(name="east", address="192.0.2.11", user="corridor", key_path="/k")
CLUSTER = ClusterSpec(source="c.yaml", servers=(WEST, EAST))

REPORT = {"runs": ["up t1 (pid 4242, dead)"], "killed_pids": [11, 12, 13], "skipped_live_runs": [],
          "netns_removed": ["corridor-probe-1"], "problems": [], "dirs_removed": []}


def _result(server: ServerSpec, rc: int, out: str = "", err: str = "") -> SshResult:
    return SshResult(server.name, ("ssh",), rc, out, err)


def test_each_server_runs_its_own_clean_as_json() -> None:
    assert clean_argv(WEST, include_live=False) == ["/opt/venv/bin/python", "-m", "corridor", "clean", "--json"]
    assert clean_argv(EAST, include_live=True)[-3:] == ["clean", "--json", "--all"]


def test_a_report_becomes_one_line_per_thing_done() -> None:
    done = parse_clean_report(WEST, _result(WEST, 0, json.dumps(REPORT)))
    assert done.ok and done.lines() == [
        "west (root@192.0.2.10): removed run up t1 (pid 4242, dead)",
        "west (root@192.0.2.10): removed namespace corridor-probe-1",
        "west (root@192.0.2.10): ended 3 processes"]
    empty = {k: [] for k in REPORT}
    assert parse_clean_report(WEST, _result(WEST, 0, json.dumps(empty))).lines() == [
        "west (root@192.0.2.10): nothing to clean"]


def test_a_server_that_cannot_be_reached_or_fails_is_not_cleaned_and_says_why() -> None:
    refused = parse_clean_report(EAST, _result(EAST, SSH_FAILED, err="corridor@192.0.2.11: Permission denied"))
    assert not refused.ok and refused.lines() == [
        "east (corridor@192.0.2.11): NOT CLEANED: ssh: corridor@192.0.2.11: Permission denied"]
    failed = parse_clean_report(EAST, _result(EAST, 3, err="corridor clean needs root ...; run it with sudo"))
    assert not failed.ok and "its clean exited 3: corridor clean needs root" in failed.error
    garbled = parse_clean_report(EAST, _result(EAST, 0, "not json"))
    assert not garbled.ok and "exited 0: not json" in garbled.error


def test_every_server_is_cleaned_with_sudo_only_where_the_login_is_not_root() -> None:
    calls: list[tuple[str, bool]] = []

    def fake(cluster: ClusterSpec, server: ServerSpec, argv: list[str], **kw: Any) -> SshResult:
        calls.append((server.name, kw["sudo"]))
        return _result(server, 0, json.dumps(REPORT))

    results = clean_cluster(CLUSTER, run=fake)
    assert [r.server for r in results] == ["west", "east"] and all(isinstance(r, ServerClean) for r in results)
    assert sorted(calls) == [("east", True), ("west", False)]
