"""``corridor doctor --cluster`` against two local servers: namespaces running their own sshd (needs root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corridor.cluster import localservers
from corridor.cluster.localservers import SSHD, LocalCluster, local_servers, namespace_pids, netns_names
from corridor.errors import ClusterError

pytestmark = pytest.mark.corridor_root
CORRIDOR = str(Path(sys.executable).with_name("corridor"))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def two_local_servers(tmp_path: Path) -> Iterator[LocalCluster]:
    """Two servers as namespaces with their own sshd; after the test, checks that none of it is left."""
    if not os.path.exists(SSHD):
        pytest.skip(f"needs {SSHD} to stand in for remote servers (apt install openssh-server)")
    (tmp_path / "servers").mkdir()
    with local_servers(2, tmp_path / "servers") as cluster:
        namespaces, pids = cluster.namespaces, [s.sshd_pid for s in cluster.servers]
        assert set(namespaces) <= netns_names() and all(alive(pid) for pid in pids)
        yield cluster
    assert_nothing_left(namespaces, pids)


def assert_nothing_left(namespaces: tuple[str, ...], pids: list[int]) -> None:
    assert not set(namespaces) & netns_names()
    assert not any(alive(pid) for pid in pids)
    assert all(namespace_pids(ns) == [] for ns in namespaces)
    assert f"lc{os.getpid()}" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                                                     check=True).stdout


def test_doctor_cluster_reports_both_local_servers(two_local_servers: LocalCluster, tmp_path: Path) -> None:
    cluster = two_local_servers
    # the root namespace has no interface of ours: the veths live in the test's namespaces only
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f"lc{os.getpid()}" not in root_links

    done = subprocess.run(cluster.in_coordinator([CORRIDOR, "doctor", "--cluster", str(cluster.cluster_file),
                                                  "--json"]), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert [(s["server"], s["destination"]) for s in report["servers"]] == [
        ("s1", "root@10.250.1.2:22"), ("s2", "root@10.250.2.2:22")]
    for server in report["servers"]:
        found = {f["name"]: f for f in server["findings"]}
        assert found["ssh"]["ok"] and found["root"]["detail"] == "logged in as root"
        assert found["corridor version"]["ok"] and found["mininet module"]["ok"]
        assert {"iperf3", "ping", "tc", "sch_netem"} <= set(found)

    # the same server with a key it does not accept: the table names the server and the exit status is 1
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"servers:\n  s2: {{address: 10.250.2.2, user: root, key: {stranger}}}\n"
                   f"known_hosts: {cluster.known_hosts}\n", encoding="utf-8")
    done = subprocess.run(cluster.in_coordinator([CORRIDOR, "doctor", "--cluster", str(bad)]),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "s2 (root@10.250.2.2:22): NOT READY" in done.stdout and "Permission denied" in done.stdout


def test_a_server_that_cannot_start_is_torn_down_with_the_rest(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.exists(SSHD):
        pytest.skip(f"needs {SSHD} to stand in for remote servers (apt install openssh-server)")
    real = localservers.sshd_config
    made: list[str] = []

    def second_is_broken(*, address: str, host_key: Path, authorized_keys: Path, pid_file: Path) -> str:
        made.append(address)
        text = real(address=address, host_key=host_key, authorized_keys=authorized_keys, pid_file=pid_file)
        return text + "NoSuchOption yes\n" if len(made) == 2 else text

    monkeypatch.setattr(localservers, "sshd_config", second_is_broken)
    before = netns_names()
    with pytest.raises(ClusterError, match="sshd of local server s2 exited"):
        with local_servers(2, tmp_path):
            pytest.fail("the block must not run when a server did not start")
    assert made == ["10.250.1.2", "10.250.2.2"]
    left = netns_names() - before
    assert not {n for n in left if n.startswith(f"corridor-lc{os.getpid()}")}
    assert_nothing_left((), [])
