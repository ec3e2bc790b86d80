"""A network across servers, before it is built: ssh lines, remote processes, tunnels taken off wires, the leash."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from corridor.cluster.build import ClusterLayout, cross_link_rows, less_tunnels, prepare_cluster, tunnel_delays
from corridor.cluster.leash import HUNG_UP
from corridor.cluster.placer import pins_within, place
from corridor.cluster.remote import (
    LEASH_MODULE,
    REMOTE_CLASSES,
    _names_a_file,
    node_ssh_argv,
    remote_process_words,
    vxlan_vni,
)
from corridor.cluster.spec import ClusterSpec, ServerSpec, loads_cluster
from corridor.cluster.tunnels import TunnelMeasurement, tunnel_names
from corridor.emulation.nodes import CorridorHost, SiteBridge, SiteRouter, WireNode
from corridor.emulation.topo import CorridorTopo
from corridor.errors import ClusterError, EmulationError
from corridor.planning.plan import Plan
from corridor.planning.planner import build_plan
from corridor.spec.topospec import load_topology

ROOT = ServerSpec(name="s1", address="10.250.1.2", user="root", key_path="/keys/id", python="/opt/py")
OPS = ServerSpec(name="s2", address="10.250.2.2", user="ops", key_path="/keys/id", port=2222)


def two_servers(pins: str) -> ClusterSpec:
    return loads_cluster("servers:\n"
                         "  s1: {address: 10.250.1.2, user: root, key: /k}\n"
                         "  s2: {address: 10.250.2.2, user: root, key: /k}\n"
                         f"pins: {pins}\n", path="c.yaml")


def two_site() -> Plan:
    return build_plan(load_topology("two-site"))


def tunnel(rtt_ms: float = 0.1, mbps: float = 9000.0) -> TunnelMeasurement:
    return TunnelMeasurement("s1", "s2", "vxlan", rtt_ms=rtt_ms, throughput_mbps=mbps)


# -- ssh and the commands a server runs ----------------------------------------------------------------------


def test_a_node_shell_gets_a_terminal_and_a_process_does_not() -> None:
    shell = node_ssh_argv(ROOT, ["mnexec", "-cn", "env", "PS1=\x7f", "bash"], known_hosts="/kh", tty=True,
                          sudo=False)
    assert shell[0] == "ssh" and "-tt" in shell and "-T" not in shell
    assert shell[-2:] == ["root@10.250.1.2", shlex.join(["mnexec", "-cn", "env", "PS1=\x7f", "bash"])]
    assert ["-i", "/keys/id"] == shell[shell.index("-i"):shell.index("-i") + 2]
    assert "UserKnownHostsFile=/kh" in shell and "BatchMode=yes" in shell
    process = node_ssh_argv(OPS, ["cat", "/run/x"], known_hosts=None, tty=False, sudo=True)
    assert "-T" in process and "-tt" not in process and ["-p", "2222"] == process[
        process.index("-p"):process.index("-p") + 2]
    assert shlex.split(process[-1]) == ["sudo", "-n", "--", "cat", "/run/x"]


def test_a_remote_process_keeps_its_words_whole_and_runs_leashed_in_its_node() -> None:
    config = '{"role": "train", "peers": ["a b", "c"]}'
    words = remote_process_words([sys.executable, "-m", "corridor.agent", "--config", config], node_pid=4242,
                                 python="/opt/py", env={"PYTHONPATH": "/here", "PYTHONUNBUFFERED": "0",
                                                        "CORRIDOR_STATE_DIR": "/tmp/x", "HOME": "/root"})
    assert words[:3] == ["mnexec", "-a", "4242"]  # no -d: mnexec would fork and end the ssh session
    # the server's interpreter for the leash and for the command; the coordinator's paths stay here
    assert words[3:5] == ["env", "PYTHONUNBUFFERED=0"]
    assert words[5:9] == ["/opt/py", "-m", LEASH_MODULE, "--"]
    assert words[9:] == ["/opt/py", "-m", "corridor.agent", "--config", config]
    # quoted once for the server's shell, the JSON comes back as one word
    line = node_ssh_argv(ROOT, words, known_hosts=None, tty=False, sudo=False)[-1]
    assert shlex.split(line)[-1] == config
    assert remote_process_words(["iperf3", "-s"], node_pid=1, python="python3")[-2:] == ["iperf3", "-s"]
    stopped = remote_process_words(["tcpdump", "-w", "-"], node_pid=1, python="python3", stop_at_stdin_end=True)
    assert stopped[-6:] == [LEASH_MODULE, "--stop-at-stdin-end", "--", "tcpdump", "-w", "-"]
    with pytest.raises(EmulationError, match="needs a command"):
        remote_process_words([], node_pid=1, python="python3")


def test_a_compiled_delay_line_is_resolved_on_the_server_not_run_by_this_machine_s_path() -> None:
    here = "/home/me/corridor/corridor/links/native/corridor-delayline"
    words = remote_process_words([here, "--intf-a", "w1-eth0", "--intf-b", "w1-eth1"], node_pid=7, python="/opt/py")
    tail = words[words.index("--") + 1:]
    assert tail == ["/opt/py", "-m", "corridor.links.engine", "exec", "--intf-a", "w1-eth0", "--intf-b", "w1-eth1"]


def test_only_an_at_sign_before_an_existing_absolute_file_is_copied_to_the_server(tmp_path: Path) -> None:
    config = tmp_path / "rank0.json"
    config.write_text("{}", encoding="utf-8")
    assert _names_a_file(f"@{config}")
    assert not _names_a_file(str(config)) and not _names_a_file(f"@{tmp_path / 'missing.json'}")
    assert not _names_a_file("@rank0.json") and not _names_a_file(f"@{tmp_path}")


def test_every_node_class_has_a_remote_variant() -> None:
    for local in (CorridorHost, SiteRouter, SiteBridge, WireNode):
        remote = REMOTE_CLASSES[local]
        assert issubclass(remote, local) and remote.__mro__[1].__name__ == "ServerMixin"


def test_tunnel_vnis_are_distinct_per_link_and_apart_from_the_measurement() -> None:
    vnis = {vxlan_vni(123456, i) for i in range(256)}
    assert len(vnis) == 256 and all(v < 2**24 for v in vnis)
    measured = tunnel_names(pid=123456)[2]
    assert measured not in vnis and all(v > 13999 for v in vnis)
    assert vxlan_vni(1, 0) != vxlan_vni(2, 0)
    with pytest.raises(EmulationError, match="at most 256 cross-server links"):
        vxlan_vni(1, 256)


# -- placing, measuring, and taking the tunnels off the wires -------------------------------------------------


def test_a_link_with_a_site_on_each_server_loses_one_tunnel_of_delay() -> None:
    plan, cl = two_site(), two_servers("{remote: s1, city: s2}")
    placement = place(plan, cl)
    link = plan.wan_links[0]
    rows = cross_link_rows(plan, placement)
    assert len(rows) == 1 and rows[0][0] == link.name and rows[0][3] == link.a_to_b.rate_mbps
    delays = tunnel_delays(placement, {frozenset(("s1", "s2")): tunnel(rtt_ms=0.2)})
    assert delays == {link.name: pytest.approx(0.1)}
    wires = less_tunnels(plan, delays)
    a_to_b, b_to_a = wires[link.wire]
    assert a_to_b.delay_ms == pytest.approx(link.a_to_b.delay_ms - 0.1)
    assert b_to_a.delay_ms == pytest.approx(link.b_to_a.delay_ms - 0.1)
    assert (a_to_b.rate_mbps, a_to_b.queue_bytes) == (link.a_to_b.rate_mbps, link.a_to_b.queue_bytes)


def test_a_network_on_one_server_has_nothing_to_measure_or_take_off() -> None:
    plan, cl = two_site(), two_servers("{remote: s1, city: s1}")
    measured: list[Any] = []
    layout = prepare_cluster(plan, cl, measure=lambda *a: measured.append(a) or tunnel())
    assert measured == [] and layout.wire_directions == {} and layout.tunnels == ()
    assert layout.tunnel_share(plan.wan_links[0].name) == 0.0


def test_prepare_measures_each_pair_once_and_gives_every_node_its_server() -> None:
    plan, cl = two_site(), two_servers("{remote: s1, city: s2}")
    said: list[str] = []
    measured: list[tuple[str, str]] = []

    def measure(cluster: ClusterSpec, a: ServerSpec, b: ServerSpec) -> TunnelMeasurement:
        measured.append((a.name, b.name))
        return tunnel(rtt_ms=0.3)

    layout = prepare_cluster(plan, cl, measure=measure, say=said.append)
    assert len(measured) == 1 and said == [f"measuring the VXLAN tunnel between {measured[0][0]} and "
                                          f"{measured[0][1]}"]
    link = plan.wan_links[0]
    assert layout.tunnel_share(link.name) == pytest.approx(0.15)
    params = layout.node_params()
    assert set(params) == {name for name, _ in layout.placement.nodes}
    assert params[plan.site("remote").router]["cluster_server"].name == "s1"
    assert params[plan.site("city").router]["server_ip"] == "10.250.2.2"
    described = layout.describe()
    assert described["transport"] == "vxlan" and described["tunnel_ms"] == {link.name: pytest.approx(0.15)}
    assert described["cross_links"][0]["ok"] is True
    assert ClusterLayout.remote_state_dir("run-1") == "/run/corridor-cluster/run-1"


def test_a_link_its_tunnel_cannot_carry_is_refused_before_anything_is_built() -> None:
    plan, cl = two_site(), two_servers("{remote: s1, city: s2}")
    with pytest.raises(ClusterError, match=r"cannot cross servers as placed: .*carries 500 Mbit/s"):
        prepare_cluster(plan, cl, measure=lambda *a: tunnel(mbps=500.0))
    with pytest.raises(ClusterError, match="not less than"):
        prepare_cluster(plan, cl, measure=lambda *a: tunnel(rtt_ms=200.0))


def test_the_topology_puts_remote_classes_and_server_files_where_the_layout_says() -> None:
    plan, cl = two_site(), two_servers("{remote: s1, city: s2}")
    layout = prepare_cluster(plan, cl, measure=lambda *a: tunnel(rtt_ms=0.2))
    topo = CorridorTopo(plan=plan, state_dir="/run/corridor/r1", remote=layout.node_params(),
                        remote_state_dir="/run/corridor-cluster/r1", wire_directions=layout.wire_directions)
    link = plan.wan_links[0]
    wire = topo.nodeInfo(link.wire)
    assert wire["cls"].__name__ == "RemoteWireNode"
    assert wire["stats_path"] == f"/run/corridor-cluster/r1/{link.wire}.stats.json"
    assert wire["log_path"] == f"/run/corridor/r1/{link.wire}.stats.json.log"  # the log stays here
    assert wire["a_to_b"].delay_ms == pytest.approx(link.a_to_b.delay_ms - 0.1)
    host = plan.site("city").hosts[0].name
    assert topo.nodeInfo(host)["cls"].__name__ == "RemoteCorridorHost"
    assert topo.nodeInfo(host)["cluster_server"].name == "s2"
    local = CorridorTopo(plan=plan, state_dir="/run/corridor/r1")
    assert local.nodeInfo(link.wire)["cls"] is WireNode and "cluster_server" not in local.nodeInfo(link.wire)
    assert local.nodeInfo(link.wire)["a_to_b"] == link.a_to_b


# -- the leash ---------------------------------------------------------------------------------------------


def _leash(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", LEASH_MODULE, "--", *argv], **kw)


def test_the_leash_passes_the_status_and_the_streams_through() -> None:
    done = subprocess.run([sys.executable, "-m", LEASH_MODULE, "--", sys.executable, "-c",
                           "import sys; print(sys.stdin.read().upper()); sys.exit(3)"],
                          input=b"records", capture_output=True, timeout=30)
    assert done.returncode == 3 and done.stdout.strip() == b"RECORDS"
    missing = subprocess.run([sys.executable, "-m", LEASH_MODULE, "--", "/nonexistent/tool"], capture_output=True,
                             timeout=30)
    assert missing.returncode == 127 and b"cannot start /nonexistent/tool" in missing.stderr


def test_the_leash_ends_its_command_when_the_session_reading_it_goes_away(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    proc = _leash([sys.executable, "-c", f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); "
                   "time.sleep(60)"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline, "the leashed command did not start"
        time.sleep(0.05)
    child = int(marker.read_text())
    assert proc.stdout is not None
    proc.stdout.close()  # what sshd does when the client's session ends
    assert proc.wait(timeout=20) == HUNG_UP
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child):
        assert time.monotonic() < deadline, "the leashed command outlived its session"
        time.sleep(0.05)


def test_the_leash_stops_its_command_at_the_end_of_its_stdin_and_keeps_what_it_flushed() -> None:
    # a command that writes its last words on SIGTERM, as tcpdump flushes a capture
    script = ("import signal, sys, time\n"
              "def bye(*_):\n    sys.stdout.write('flushed'); sys.stdout.flush(); sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, bye)\n"
              "print('armed', flush=True)\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-m", LEASH_MODULE, "--stop-at-stdin-end", "--", sys.executable, "-c",
                             script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == b"armed\n"
    t0 = time.monotonic()
    proc.stdin.close()  # the coordinator's way to say stop
    rest = proc.stdout.read()
    assert proc.wait(timeout=20) == 0 and rest == b"flushed"
    assert time.monotonic() - t0 < 10
    # without the option the command keeps its stdin, and its end is not a stop
    done = subprocess.run([sys.executable, "-m", LEASH_MODULE, "--", sys.executable, "-c",
                           "import sys; sys.stdin.read(); print('read to the end')"], input=b"",
                          capture_output=True, timeout=30)
    assert done.returncode == 0 and done.stdout == b"read to the end\n"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_pins_of_sites_a_plan_lacks_are_dropped_for_that_plan_only() -> None:
    cl = two_servers("{remote: s2, city: s1}")
    local = build_plan(load_topology("local"))
    assert pins_within(local, cl).pins == ()
    assert pins_within(two_site(), cl).pins == cl.pins
    assert place(local, pins_within(local, cl)).cross_links == ()
