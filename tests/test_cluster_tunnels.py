"""Tunnels between servers: the script that makes one end, the judging of links against them, and the cleanup."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corridor.cluster.spec import ClusterSpec, ServerSpec
from corridor.cluster.ssh import SSH_FAILED, SshResult
from corridor.cluster.tunnels import (
    OVERLAY,
    TunnelMeasurement,
    judge_cross_links,
    measure_tunnel,
    tunnel_names,
    tunnel_setup_script,
)
from corridor.errors import ClusterError

A = ServerSpec(name="a", address="192.0.2.10", user="root", key_path="/k")
B = ServerSpec(name="b", address="192.0.2.11", user="ops", key_path="/k")
CLUSTER = ClusterSpec(source="c.yaml", servers=(A, B))
TUNNEL = TunnelMeasurement("a", "b", "vxlan", rtt_ms=0.2, throughput_mbps=9400.0)


def test_one_end_is_a_scratch_namespace_holding_a_vxlan_device_to_the_other_server() -> None:
    netns, device, vni = tunnel_names(pid=123456)
    assert (netns, device, vni) == ("corridor-tun-123456", "ctun23456", 7456)
    script = tunnel_setup_script(netns=netns, device=device, vni=vni, remote_ip="192.0.2.11", overlay_ip=OVERLAY[0])
    lines = script.splitlines()
    assert lines[0] == "set -e" and lines[1] == f"ip netns add {netns}"
    assert f"ip link add {device} type vxlan id {vni} remote 192.0.2.11 dstport 4789" in lines
    # made where the server's own UDP socket lives, then moved into the scratch namespace
    assert lines.index(f"ip link set {device} netns {netns}") > lines.index(
        f"ip link add {device} type vxlan id {vni} remote 192.0.2.11 dstport 4789")
    assert f"ip -n {netns} addr add {OVERLAY[0]}/30 dev {device}" in lines


def test_links_are_judged_against_their_tunnel() -> None:
    tunnels = {frozenset(("a", "b")): TUNNEL}
    ok, slow, short = judge_cross_links([("x-y", "a", "b", 1000.0, 25.0), ("fast", "b", "a", 9000.0, 25.0),
                                         ("lan", "a", "b", 100.0, 0.05)], tunnels)
    assert ok.ok and "0.100 ms of x-y's 25 ms one way (0.4%)" in ok.reason
    assert not slow.ok and "carries 9,400 Mbit/s and fast needs 9,000 (at most 90% of the tunnel)" in slow.reason
    assert not short.ok and "not less than lan's own (0.05 ms)" in short.reason
    assert json.loads(json.dumps(ok.as_dict()))["tunnel"]["one_way_ms"] == pytest.approx(0.1)


def _fake(fail_on: str | None = None) -> tuple[list[tuple[str, list[str], bool]], Any]:
    calls: list[tuple[str, list[str], bool]] = []

    def run(cluster: ClusterSpec, server: ServerSpec, argv: list[str], **kw: Any) -> SshResult:
        calls.append((server.name, list(argv), kw["sudo"]))
        text = " ".join(argv)
        if fail_on is not None and fail_on in text:
            return SshResult(server.name, ("ssh",), SSH_FAILED, "", "ssh: connect to host: No route to host")
        if "ping" in argv:
            return SshResult(server.name, ("ssh",), 0, "".join(f"64 bytes: time=0.{i}1 ms\n" for i in range(5)), "")
        if "-c" in argv and "iperf3" in argv:
            report = {"end": {"sum_received": {"bits_per_second": 9.4e9}}}
            return SshResult(server.name, ("ssh",), 0, json.dumps(report), "")
        return SshResult(server.name, ("ssh",), 0, "", "")

    return calls, run


def test_a_measurement_makes_both_ends_measures_and_removes_them() -> None:
    calls, run = _fake()
    measured = measure_tunnel(CLUSTER, A, B, run=run)
    assert measured.rtt_ms == pytest.approx(0.21) and measured.throughput_mbps == pytest.approx(9400)
    netns = tunnel_names()[0]
    assert [c[0] for c in calls[:2]] == ["a", "b"] and all(c[1][0] == "sh" for c in calls[:2])
    assert "remote 192.0.2.11" in calls[0][1][2] and "remote 192.0.2.10" in calls[1][1][2]
    assert calls[-2:] == [("a", ["ip", "netns", "del", netns], False), ("b", ["ip", "netns", "del", netns], True)]


def test_a_failed_measurement_still_removes_what_it_made_and_names_the_server() -> None:
    calls, run = _fake(fail_on="iperf3 -s")
    with pytest.raises(ClusterError, match="starting iperf3 on b: ssh: .*No route to host"):
        measure_tunnel(CLUSTER, A, B, run=run)
    netns = tunnel_names()[0]
    assert [c for c in calls if c[1][:3] == ["ip", "netns", "del"]] == [
        ("a", ["ip", "netns", "del", netns], False), ("b", ["ip", "netns", "del", netns], True)]
