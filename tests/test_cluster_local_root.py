"""``corridor doctor --cluster`` and ``clean --cluster`` against two local servers running their own sshd (root)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import check_rows, missed_timing_rows_only

from corridor.cluster import localservers
from corridor.cluster.localservers import SSHD, LocalCluster, local_servers, namespace_pids, netns_names
from corridor.errors import ClusterError
from corridor.planning.planner import build_plan
from corridor.spec.topospec import load_topology

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


def _pinned_apart(cluster: LocalCluster, tmp_path: Path) -> Path:
    """The local cluster's file with two-site's sites pinned to different servers, so its one link crosses."""
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(cluster.cluster_file.read_text(encoding="utf-8") + "pins:\n  remote: s1\n  city: s2\n",
                      encoding="utf-8")
    return pinned


def _cmdlines() -> dict[int, list[bytes]]:
    """Every process on this machine and its command line, split into words."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
    return found


def _refused_key_cluster(cluster: LocalCluster, tmp_path: Path) -> Path:
    """A cluster file naming server s2 with a fresh key that s2 does not accept."""
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"servers:\n  s2: {{address: 10.250.2.2, user: root, key: {stranger}}}\n"
                   f"known_hosts: {cluster.known_hosts}\n", encoding="utf-8")
    return bad


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
        assert found["vxlan"]["ok"], found["vxlan"]  # made in a scratch namespace on the server, and removed

    # the same server with a key it does not accept: the table names the server and the exit status is 1
    bad = _refused_key_cluster(cluster, tmp_path)
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


def _ssh(cluster: LocalCluster, server: str, command: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``command`` (a shell line) on a local server, over its sshd, from the coordinator namespace."""
    address = next(s.address for s in cluster.servers if s.name == server)
    argv = ["ssh", "-i", str(cluster.user_key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={cluster.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            f"root@{address}", command]
    return subprocess.run(cluster.in_coordinator(argv), capture_output=True, text=True, timeout=timeout_s)


def _recorded_inodes(cluster: LocalCluster, server: str) -> set[int]:
    """The network namespaces the corridor runs on ``server`` recorded in its own /run/corridor."""
    done = _ssh(cluster, server, "cat /run/corridor/[0-9]*/state.json 2>/dev/null || true")
    inodes: set[int] = set()
    decoder = json.JSONDecoder()
    text, at = done.stdout, 0
    while (start := text.find("{", at)) >= 0:
        state, at = decoder.raw_decode(text, start)
        inodes |= {int(n["netns"]) for n in state.get("nodes", {}).values() if n.get("netns")}
    return inodes


def test_clean_cluster_removes_a_killed_network_on_its_server_and_nothing_elsewhere(
        two_local_servers: LocalCluster, tmp_path: Path) -> None:
    from corridor.emulation.state import netns_inode

    cluster = two_local_servers
    name = f"t-clean-{os.getpid()}"
    out = tmp_path / "up.out"
    # `corridor up` on s1, detached from the ssh session; then killed with SIGKILL once its network is up
    started = _ssh(cluster, "s1", f"setsid {sys.executable} -m corridor up two-site --link-backend userspace "
                                  f"--name {name} --json > {out} 2> {out}.err < /dev/null & echo $!")
    assert started.returncode == 0, started.stderr
    up_pid = int(started.stdout.split()[-1])
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not out.read_text(encoding="utf-8").startswith("{"):
        assert alive(up_pid), Path(f"{out}.err").read_text(encoding="utf-8")[-2000:]
        time.sleep(0.2)
    assert out.read_text(encoding="utf-8").startswith("{"), "corridor up on s1 did not come up"
    os.kill(up_pid, signal.SIGKILL)
    inodes = _recorded_inodes(cluster, "s1")
    assert inodes, "the killed network left no state on s1"
    # s1's state lives in s1's own /run: neither this machine nor s2 sees it
    assert not any(p.name.startswith(f"{up_pid}-") for p in Path("/run/corridor").glob("*"))
    assert _recorded_inodes(cluster, "s2") == set()

    done = subprocess.run(cluster.in_coordinator([CORRIDOR, "clean", "--cluster", str(cluster.cluster_file),
                                                  "--json"]), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = {s["server"]: s for s in json.loads(done.stdout)["servers"]}
    assert report["s1"]["ok"] and any(name in run for run in report["s1"]["report"]["runs"])
    assert report["s2"]["ok"] and report["s2"]["report"]["runs"] == []
    assert _recorded_inodes(cluster, "s1") == set()
    inside = [p for p in os.listdir("/proc") if p.isdigit() and netns_inode(int(p)) in inodes]
    assert inside == [], f"processes still in the killed network's namespaces: {inside}"

    # the table: one line per thing done, per server
    again = subprocess.run(cluster.in_coordinator([CORRIDOR, "clean", "--cluster", str(cluster.cluster_file)]),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.splitlines() == [
        "this machine: nothing to clean", "s1 (root@10.250.1.2): nothing to clean",
        "s2 (root@10.250.2.2): nothing to clean"], again.stdout

    # a server that refuses the key is named, and the exit status says not everything was cleaned
    bad = _refused_key_cluster(cluster, tmp_path)
    refused = subprocess.run(cluster.in_coordinator([CORRIDOR, "clean", "--cluster", str(bad)]),
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "s2 (root@10.250.2.2): NOT CLEANED: ssh:" in refused.stdout and "Permission denied" in refused.stdout


def test_place_measures_the_tunnel_a_link_crosses_and_refuses_one_too_slow_for_it(
        two_local_servers: LocalCluster, tmp_path: Path) -> None:
    cluster = two_local_servers
    # pin the two sites apart, so the one WAN link crosses servers
    pinned = _pinned_apart(cluster, tmp_path)
    done = subprocess.run(cluster.in_coordinator([CORRIDOR, "place", "two-site", "--cluster", str(pinned),
                                                  "--measure-tunnels", "--json"]),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    [tunnel] = report["tunnels"]
    assert report["tunnels_ok"] is True and tunnel["ok"] is True
    assert set(tunnel["servers"]) == {"s1", "s2"} and tunnel["tunnel"]["transport"] == "vxlan"
    # one veth and one forwarding namespace each way on this machine: well under a millisecond, and many
    # times a 1 Gbit/s link's rate
    assert 0 < tunnel["tunnel"]["rtt_ms"] < 2.0
    assert tunnel["tunnel"]["throughput_mbps"] > 1000
    print(f"\nVXLAN between two local servers: RTT {tunnel['tunnel']['rtt_ms']:.3f} ms, "
          f"{tunnel['tunnel']['throughput_mbps']:,.0f} Mbit/s; {tunnel['reason']}")
    # nothing of the measurement is left on either server
    for server in ("s1", "s2"):
        left = _ssh(cluster, server, "ip netns list; ip -o link show type vxlan")
        assert left.returncode == 0 and left.stdout.strip() == "", (server, left.stdout)

    # a link faster than the tunnel is refused, with the way out
    fast = tmp_path / "fast.yaml"
    preset = Path(__file__).resolve().parent.parent / "topologies" / "two-site.yaml"
    text = preset.read_text(encoding="utf-8")
    assert "rate: 1Gbit" in text
    fast.write_text(text.replace("rate: 1Gbit", "rate: 1000Gbit"), encoding="utf-8")
    refused = subprocess.run(cluster.in_coordinator([CORRIDOR, "place", str(fast), "--cluster", str(pinned),
                                                     "--measure-tunnels"]),
                             capture_output=True, text=True, timeout=180)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "REFUSED: the tunnel between" in refused.stdout and "pins in the cluster file" in refused.stdout


def _ssh_masters() -> list[str]:
    """Command lines of the shared ssh connections (masters) running on this machine."""
    return [b" ".join(words).decode(errors="replace") for words in _cmdlines().values()
            if words and words[0].endswith(b"ssh") and b"ControlMaster=yes" in words]


def _leashed_processes() -> list[str]:
    """Command lines of every process on this machine that a cluster run leashed to an ssh session."""
    return [b" ".join(words).decode(errors="replace") for words in _cmdlines().values()
            if b"corridor.cluster.leash" in words]


def test_check_spreads_a_network_over_two_servers_and_meets_the_link_contract(
        two_local_servers: LocalCluster, tmp_path: Path) -> None:
    cluster = two_local_servers
    pinned = _pinned_apart(cluster, tmp_path)
    # At 500 Mbit/s: here both servers, the forwarding between them and both TCP ends share two cores, and
    # at 1 Gbit/s the direction whose delay line sends into the tunnel read 799-915 Mbit/s in some runs
    # (the cost of that path on this machine, not of the link). The tolerances are the one-machine ones.
    argv = cluster.in_coordinator([CORRIDOR, "check", "two-site", "--cluster", str(pinned), "--json",
                                   "--rate", "500Mbit", "--pings", "50", "--duration", "5s", "--udp-packets", "5000"])
    done, report, failed = check_rows(argv)
    if missed_timing_rows_only(done, failed):
        # Throughput and lateness on two cores shared by both servers, the forwarding between them and
        # the test's own tools: one more run tells a stalled machine apart from a link that misses its
        # contract, as the one-machine check test does. The first run's rows are printed.
        done, report, failed = check_rows(argv)
    assert done.returncode == 0, "\n".join(failed.values()) + "\n" + done.stderr[-3000:]
    rows = {m["metric"]: m for m in report["measurements"]}
    assert report["ok"] is True and report["backend"] == "userspace"
    # the same rows and tolerances as on one machine, every one within them
    assert {"rtt_median", "tcp_a_to_b", "tcp_b_to_a", "loss_a_to_b"} <= set(rows)
    assert all(m["ok"] for m in rows.values())
    # the one crossing rode a measured VXLAN tunnel, whose share of the delay the wire gave up
    layout = report["cluster"]
    [crossing] = layout["cross_links"]
    assert crossing["ok"] is True and set(crossing["servers"]) == {"s1", "s2"}
    share = layout["tunnel_ms"]["remote-city"]
    assert 0 < share < 1.0 and share == pytest.approx(crossing["tunnel"]["one_way_ms"])
    assert "tunnels between servers carry" in rows["rtt_median"]["detail"]
    sites = dict(layout["placement"]["sites"])
    assert sites == {"remote": "s1", "city": "s2"}
    # nothing of the network is left: no tunnel, no wire files, no leashed process, no state here
    for server in ("s1", "s2"):
        left = _ssh(cluster, server, "ip -o link show type vxlan; ls -A /run/corridor-cluster 2>/dev/null; true")
        assert left.returncode == 0 and left.stdout.strip() == "", (server, left.stdout)
    assert _leashed_processes() == []

    # a link faster than the tunnel between the servers is refused before anything is built
    fast = tmp_path / "fast.yaml"
    preset = Path(__file__).resolve().parent.parent / "topologies" / "two-site.yaml"
    fast.write_text(preset.read_text(encoding="utf-8").replace("rate: 1Gbit", "rate: 1000Gbit"), encoding="utf-8")
    refused = subprocess.run(cluster.in_coordinator([CORRIDOR, "check", str(fast), "--cluster", str(pinned)]),
                             capture_output=True, text=True, timeout=180)
    assert refused.returncode != 0 and "cannot cross servers as placed" in refused.stderr, refused.stderr
    assert "building" not in refused.stderr


ACROSS = """
name: across
topology: two-site
placements:
  - name: local
  - name: apart
    servers: [remote]
    clients: [city]
    ranks: [remote, city]
workloads:
  - name: dp
    type: allreduce
    params: {steps: 4, compute_time: 50ms, grad_size: 4MB, buckets: 1}
    slo: {max_slowdown: 1.10, marginal_slowdown: 1.50}
  - name: chat
    type: chat
    params: {requests: 10, rate_rps: 10, prompt_tokens: 128, output_tokens: 8, model: 13b, tpot_ms: 20}
    slo: {ttft: 250ms, tpot: 100ms}
repetitions: 1
seed: 5
"""


def test_run_places_agents_on_both_servers_and_writes_the_run_here(two_local_servers: LocalCluster,
                                                                   tmp_path: Path) -> None:
    cluster = two_local_servers
    pinned = _pinned_apart(cluster, tmp_path)
    spec = tmp_path / "across.yaml"
    spec.write_text(ACROSS, encoding="utf-8")
    out = tmp_path / "run"
    done = subprocess.run(cluster.in_coordinator([CORRIDOR, "run", str(spec), "-o", str(out), "--cluster", str(pinned),
                                                  "--max-repetitions", "1"]),
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    points = [r for r in records if r["kind"] == "point"]
    assert len(points) == 4 and all(p["status"] == "ok" for p in points), points
    # every point's network was on the servers, and says where; only the two-site one crosses
    for point in points:
        layout = point["network"]["cluster"]
        if point["placement"] == "apart":
            assert dict(layout["placement"]["sites"]) == {"remote": "s1", "city": "s2"}
            assert [c["ok"] for c in layout["cross_links"]] == [True]
        else:
            assert layout["cross_links"] == []
    # the agents on both servers sent their records back: four ranks' steps, ten requests
    steps = [r for r in records if r["kind"] == "train_step" and r["placement"] == "apart"]
    assert {r["host"] for r in steps} == {"rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2"}
    requests = [r for r in records if r["kind"] == "request" and r["placement"] == "apart"]
    assert len(requests) == 10 and all(r["ok"] for r in requests)
    # the WAN round trip is in every request: the model server is on the other server, 50 ms away
    assert min(r["ttft_s"] for r in requests) > 0.045
    # nothing left on the servers, no leashed process nor shared ssh connection here
    for server in ("s1", "s2"):
        left = _ssh(cluster, server, "ip -o link show type vxlan; ls -A /run/corridor-cluster 2>/dev/null; true")
        assert left.returncode == 0 and left.stdout.strip() == "", (server, left.stdout)
    assert _leashed_processes() == [] and _ssh_masters() == []


def test_a_coordinator_killed_mid_run_is_cleaned_off_every_server(two_local_servers: LocalCluster,
                                                                  tmp_path: Path) -> None:
    cluster = two_local_servers
    pinned = _pinned_apart(cluster, tmp_path)
    spec = tmp_path / "long.yaml"
    spec.write_text(ACROSS.replace("steps: 4,", "steps: 60,"), encoding="utf-8")
    out = tmp_path / "run"
    log = tmp_path / "run.err"
    with open(log, "wb") as err:
        # `ip netns exec` execs corridor in place, so this pid is the coordinator's own
        coordinator = subprocess.Popen(cluster.in_coordinator(
            [CORRIDOR, "run", str(spec), "-o", str(out), "--cluster", str(pinned), "--max-repetitions", "1"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 240
        # mid-run: the ranks of the two-site placement run on both servers
        while not any("rem-gpu1" in c and "corridor.agent" in c for c in _leashed_processes()):
            assert coordinator.poll() is None, log.read_text(encoding="utf-8")[-3000:]
            assert time.monotonic() < deadline, "the run never reached its ranks across the servers"
            time.sleep(0.2)
        time.sleep(1.0)
        coordinator.kill()
        coordinator.wait(timeout=30)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait()
    left_before = _leashed_processes()
    assert left_before, "nothing of the killed run was left to clean; the test proves nothing"
    # the run's shared connection to each server outlives it too, until clean ends it
    assert len(_ssh_masters()) == 2, _ssh_masters()
    shells_before = _node_shells()
    assert shells_before

    done = subprocess.run(cluster.in_coordinator([CORRIDOR, "clean", "--cluster", str(pinned), "--json"]),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert len(report["coordinator"]["runs"]) == 1 and report["coordinator"]["killed_pids"]
    [run_id] = report["coordinator"]["run_ids"]
    for server in report["servers"]:
        assert server["ok"] and f"/run/corridor-cluster/{run_id}" in server["report"]["dirs_removed"]
    # every node shell and process the run had on the servers ends with its ssh session (the leash's grace)
    deadline = time.monotonic() + 15
    while (_leashed_processes() or _node_shells()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _leashed_processes() == [] and _node_shells() == [] and _ssh_masters() == []
    for server in ("s1", "s2"):
        left = _ssh(cluster, server, "ip -o link show type vxlan; ls -A /run/corridor-cluster 2>/dev/null; true")
        assert left.returncode == 0 and left.stdout.strip() == "", (server, left.stdout)
    # the run directory keeps what finished before the kill
    assert (out / "manifest.json").exists()


def _loses_a_server() -> str:
    """ACROSS's all-reduce alone, long enough (40 steps) for a server to be lost while it runs."""
    spec = yaml.safe_load(ACROSS)
    spec["name"] = "loses-a-server"
    spec["workloads"] = [dict(w, params={**w["params"], "steps": 40}) for w in spec["workloads"] if w["name"] == "dp"]
    return yaml.safe_dump(spec, sort_keys=False)


def test_a_server_lost_mid_run_stops_the_run_naming_it_and_resume_retries_the_point(
        two_local_servers: LocalCluster, tmp_path: Path) -> None:
    cluster = two_local_servers
    pinned = _pinned_apart(cluster, tmp_path)
    spec = tmp_path / "loses.yaml"
    spec.write_text(_loses_a_server(), encoding="utf-8")
    out = tmp_path / "run"
    argv = [CORRIDOR, "run", str(spec), "-o", str(out), "--cluster", str(pinned), "--max-repetitions", "1"]
    log = tmp_path / "run.err"
    with open(log, "wb") as err:
        coordinator = subprocess.Popen(cluster.in_coordinator(argv), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 240
        # mid-point: the ranks run on both servers
        while not any("cty-gpu1" in c and "corridor.agent" in c for c in _leashed_processes()):
            assert coordinator.poll() is None, log.read_text(encoding="utf-8")[-3000:]
            assert time.monotonic() < deadline, "the run never reached its ranks across the servers"
            time.sleep(0.2)
        time.sleep(1.0)
        killed = cluster.power_off("s2")  # the city's server fails as a machine does
        assert killed
        status = coordinator.wait(timeout=240)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait()
    said = log.read_text(encoding="utf-8")
    # the run stops, names the server and says how to go on; the point is not recorded as finished
    assert status != 0, said[-3000:]
    assert "lost server s2" in said and "--resume" in said, said[-3000:]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["placement"] for r in records if r["kind"] == "point"] == ["local"]
    # nothing of the network is left on the server that stayed up, nor here
    left = _ssh(cluster, "s1", "ip -o link show type vxlan; ls -A /run/corridor-cluster 2>/dev/null; true")
    assert left.returncode == 0 and left.stdout.strip() == "", left.stdout

    # the server comes back (as after a reboot: a fresh /run), and the resume retries the point
    cluster.power_on("s2")
    cleaned = subprocess.run(cluster.in_coordinator([CORRIDOR, "clean", "--cluster", str(pinned), "--json"]),
                             capture_output=True, text=True, timeout=300)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    again = subprocess.run(cluster.in_coordinator([*argv, "--resume"]), capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    points = [r for r in records if r["kind"] == "point"]
    assert sorted(p["placement"] for p in points) == ["apart", "local"], points
    assert all(p["status"] == "ok" for p in points), points
    steps = [r for r in records if r["kind"] == "train_step" and r["placement"] == "apart"]
    assert {r["host"] for r in steps} == {"rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2"}
    assert _leashed_processes() == []


def test_capture_records_a_link_on_its_wires_server_and_brings_the_pcap_back_whole(
        two_local_servers: LocalCluster, tmp_path: Path) -> None:
    cluster = two_local_servers
    pinned = _pinned_apart(cluster, tmp_path)
    out = tmp_path / "run"
    experiment = Path(__file__).resolve().parent.parent / "experiments" / "capture-chat.yaml"
    done = subprocess.run(cluster.in_coordinator([CORRIDOR, "capture", str(experiment), "--link", "remote-city",
                                                  "--out", str(out), "--cluster", str(pinned), "--json"]),
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (row,) = json.loads(done.stdout)["captures"]
    # tcpdump ran on the wire's server (s1, while the city is on s2), and the pcap that came back over ssh
    # holds exactly the messages and bytes the agents recorded sending: nothing lost at the start or the end
    assert row["server"] == "s1"
    assert row["comparable"] and row["match"], row
    assert row["messages"] > 30 and row["dropped_by_kernel"] == 0
    assert len(Path(row["trace"]).read_text(encoding="utf-8").splitlines()) == row["messages"]
    assert _leashed_processes() == []
    for server in ("s1", "s2"):
        left = _ssh(cluster, server, "ip -o link show type vxlan; ls -A /run/corridor-cluster 2>/dev/null; true")
        assert left.returncode == 0 and left.stdout.strip() == "", (server, left.stdout)


def _node_shells() -> list[str]:
    """Mininet node shells on this machine (``bash ... -is mininet:NAME``): servers' nodes included."""
    return [b" ".join(words).decode(errors="replace") for words in _cmdlines().values()
            if words and words[0].endswith(b"bash") and any(w.startswith(b"mininet:") for w in words)]


HOLD_OPEN = """
import json, sys
from corridor.cli.topo import load_plan
from corridor.cluster.spec import load_cluster
from corridor.emulation.network import CorridorNetwork

plan = load_plan("xinjiang-coastal")
with CorridorNetwork(plan, cluster=load_cluster(sys.argv[1])) as net:
    for site in plan.sites:  # a process in every traffic host, started the way agents are
        for host in site.hosts:
            net.popen(host.name, ["sleep", "600"], stdout=None, stderr=None)
    print(json.dumps(net.describe()["cluster"]), flush=True)
    sys.stdin.read()  # held open until the test closes stdin
"""


def _mount_ns(pid: int) -> int:
    """Which local server a process runs on: each server's /run is a tmpfs of its own (its device number).

    A node's mount namespace is a copy of its server's (mnexec makes one per node), so the namespace itself
    differs per node; the /run it sees is still its server's.
    """
    return os.stat(f"/proc/{pid}/root/run").st_dev


def _processes(needle: bytes) -> dict[int, list[str]]:
    """Processes with ``needle`` as a word of their command line, leashes left out."""
    return {pid: [w.decode(errors="replace") for w in words if w] for pid, words in _cmdlines().items()
            if needle in words and b"corridor.cluster.leash" not in words}


def _delay_lines() -> dict[int, list[str]]:
    """Delay-line processes of either engine: ``python -m corridor.links.delayline`` or the compiled program."""
    return {pid: [w.decode(errors="replace") for w in words if w] for pid, words in _cmdlines().items()
            if b"--intf-a" in words and any(w == b"corridor.links.delayline" or w.endswith(b"/corridor-delayline")
                                            for w in words) and b"corridor.cluster.leash" not in words}


def test_three_servers_run_each_delay_line_and_host_process_where_the_placer_said(tmp_path: Path) -> None:
    if not os.path.exists(SSHD):
        pytest.skip(f"needs {SSHD} to stand in for remote servers (apt install openssh-server)")
    (tmp_path / "servers").mkdir()
    # s3 is a one-core machine: held to CPU 0 by taskset, and its cluster entry says one core
    with local_servers(3, tmp_path / "servers", cores=[None, None, 1], cpus=[None, None, "0"]) as cluster:
        script = tmp_path / "hold.py"
        script.write_text(HOLD_OPEN, encoding="utf-8")
        holder = subprocess.Popen(cluster.in_coordinator([sys.executable, str(script), str(cluster.cluster_file)]),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdin is not None
            line = holder.stdout.readline()
            assert line.startswith("{"), holder.stderr.read() if holder.stderr else ""
            layout = json.loads(line)
            placement = layout["placement"]
            server_of = placement["nodes"]
            # every node's shell was logged in ahead of the build, and each node took its own
            assert layout["shell_logins"]["taken"] == layout["shell_logins"]["started"] == len(server_of)
            mount_of = {s.name: _mount_ns(s.sshd_pid) for s in cluster.servers}
            where = {ns: name for name, ns in mount_of.items()}
            # the placer's assignment is recorded, and s3 (one core) carries no more busy directions than that
            loads = {load["server"]: load for load in placement["servers"]}
            assert loads["s3"]["cores"] == 1 and loads["s3"]["busy_directions"] <= 1
            assert loads["s3"]["sites"], "the one-core server was left empty"
            # each delay line runs on the server its wire was placed on
            delay_lines = {pid: argv for pid, argv in _delay_lines().items()
                           if _mount_ns(pid) in where}  # this test's servers only
            wires = {w["wire"]: w["server"] for w in placement["wires"]}
            assert len(delay_lines) == len(wires) == 10
            for pid, argv in delay_lines.items():
                wire = argv[argv.index("--intf-a") + 1].rsplit("-eth", 1)[0]
                assert where[_mount_ns(pid)] == wires[wire], (wire, argv)
            # each process started in a host runs on its host's server (counted per server), s3's on CPU 0
            plan = build_plan(load_topology("xinjiang-coastal"))
            expected = collections.Counter(server_of[h.name] for site in plan.sites for h in site.hosts)
            deadline = time.monotonic() + 60
            while True:  # each starts over its own ssh session: give them time to arrive
                sleepers = [pid for pid, argv in _processes(b"600").items()
                            if argv[0] == "sleep" and _mount_ns(pid) in where]
                if len(sleepers) >= sum(expected.values()) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert collections.Counter(where[_mount_ns(pid)] for pid in sleepers) == expected
            for pid in sleepers:
                if where[_mount_ns(pid)] == "s3":
                    allowed = Path(f"/proc/{pid}/status").read_text().split("Cpus_allowed_list:")[1].split()[0]
                    assert allowed == "0"
            print(f"\nplacement over three servers: {json.dumps(loads)}")
        finally:
            if holder.stdin is not None:
                holder.stdin.close()
            try:
                holder.wait(timeout=120)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
        assert holder.returncode == 0, holder.stderr.read() if holder.stderr else ""
        # the network's end ended every delay line and host process on the servers
        assert not any(alive(pid) for pid in [*delay_lines, *sleepers])


FIXTURE_TEST = """
import pytest
from corridor.testing import rtt_ms

@pytest.mark.corridor_root
def test_two_site_across_servers(corridor_network):
    net = corridor_network("two-site")
    assert net.layout is not None and dict(net.layout.placement.sites) == {"remote": "s1", "city": "s2"}
    share = net.tunnel_share_ms("remote-city")
    assert 0 < share < 1
    rtt = rtt_ms(net, "rem-gpu1", "cty-gpu1", count=20)
    print(f"RTT across servers {rtt.median:.2f} ms, tunnels {2 * share:.3f} ms of it")
    assert 49.5 < rtt.median < 51.5
"""


def test_the_pytest_fixture_builds_across_servers_with_corridor_cluster(two_local_servers: LocalCluster,
                                                                         tmp_path: Path) -> None:
    cluster = two_local_servers
    pinned = _pinned_apart(cluster, tmp_path)
    test_file = tmp_path / "test_across.py"
    test_file.write_text(FIXTURE_TEST, encoding="utf-8")
    done = subprocess.run(cluster.in_coordinator(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "--corridor-cluster", str(pinned), str(test_file)]), capture_output=True, text=True, timeout=300,
        cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout and "RTT across servers" in done.stdout
