"""Root tests of steering: a delay line pinned to one CPU, the interfaces it sends into steered to the others.

In the testbed and in a corridor network built by Mininet; with steering off,
nothing is pinned and nothing is left steered. A bad target is an error naming it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence

import pytest

from corridor.emulation.api import package_env
from corridor.errors import EmulationError
from corridor.links import steering
from corridor.links import testbed as tb
from corridor.tools import linkbench as lb

pytestmark = [
    pytest.mark.corridor_root,
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                       reason="steering needs two usable CPUs: with one there is nowhere to steer to"),
]


def _masks(netns_path: str, interfaces: Sequence[str]) -> set[int]:
    """The rps_cpus bitmaps, as integers, of the interfaces' rx queues in that namespace."""
    at = [word for intf in interfaces for word in ("--at", netns_path, intf)]
    done = subprocess.run([sys.executable, "-m", "corridor.links.steering", "--show", *at], capture_output=True,
                          text=True, timeout=30, env=package_env(), check=True)
    return {int(line.split()[1].replace(",", ""), 16) for line in done.stdout.splitlines()}


def _bits(mask: str) -> int:
    return int(mask.replace(",", ""), 16)


def test_testbed_line_is_pinned_and_its_receivers_steered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(steering.STEERING_ENV, "on")
    ours = os.sched_getaffinity(0)
    with tb.testbed(f"{os.getpid() % 100000}s", rate_mbps=100, rtt_ms=10) as bed:
        receivers = [(f"/run/netns/{bed.ns_a}", bed.if_a), (f"/run/netns/{bed.ns_b}", bed.if_b)]
        direction = lb.link(100, 5)
        bed.shape(direction, direction)
        placement = bed.placement
        assert placement is not None and bed.delayline is not None
        assert os.sched_getaffinity(bed.delayline.pid) == {placement.cpu}
        expected = sum(1 << cpu for cpu in ours if cpu != placement.cpu)
        assert _bits(placement.peer_mask) == expected
        for netns_path, intf in receivers:
            assert _masks(netns_path, [intf]) == {expected}
        # the next line takes the next CPU
        bed.shape(direction, direction)
        assert bed.placement is not None and bed.placement.cpu != placement.cpu

        monkeypatch.setenv(steering.STEERING_ENV, "off")
        bed.shape(direction, direction)
        assert bed.placement is None and "CORRIDOR_LINK_STEERING=off" in bed.steering_note
        assert os.sched_getaffinity(bed.delayline.pid) == ours
        for netns_path, intf in receivers:
            assert _masks(netns_path, [intf]) == {0}, "steering off must undo the earlier line's masks"


def test_a_target_that_is_not_there_is_an_error_naming_it() -> None:
    with tb.testbed(f"{os.getpid() % 100000}t", rate_mbps=100, rtt_ms=10) as bed:
        with pytest.raises(EmulationError, match=r"nosuch0.*no interface nosuch0.*CORRIDOR_LINK_STEERING=off"):
            steering.steer_receivers([(f"/run/netns/{bed.ns_a}", "nosuch0")], "2")
        with pytest.raises(EmulationError,
                           match="cannot open the network namespace /run/netns/corridor-no-such-namespace: No such"):
            steering.steer_receivers([("/run/netns/corridor-no-such-namespace", bed.if_a)], "2")
        # both receivers in one program: a bad second one fails the call, naming it
        with pytest.raises(EmulationError, match="no interface nosuch1"):
            steering.steer_receivers([(f"/run/netns/{bed.ns_a}", bed.if_a), (f"/run/netns/{bed.ns_b}", "nosuch1")],
                                     "2")


def _affinity_of_exec(proc: subprocess.Popen, name: str) -> set[int]:  # type: ignore[type-arg]
    """The affinity of ``proc`` once it has become ``name`` (mnexec and taskset exec into it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/comm", encoding="ascii") as handle:
            if handle.read().strip() == name:
                return os.sched_getaffinity(proc.pid)
        time.sleep(0.01)
    raise AssertionError(f"pid {proc.pid} never became {name}")


def test_exclusive_testbed_keeps_host_traffic_off_the_lines_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(steering.STEERING_ENV, "exclusive")
    ours = os.sched_getaffinity(0)
    with tb.testbed(f"{os.getpid() % 100000}x", rate_mbps=100, rtt_ms=10) as bed:
        direction = lb.link(100, 5)
        bed.shape(direction, direction)
        assert bed.placement is not None
        sleeper = bed.popen("A", ["sleep", "30"])
        assert _affinity_of_exec(sleeper, "sleep") == ours - {bed.placement.cpu}


@pytest.mark.parametrize("setting", ["on", "off", "exclusive"])
def test_corridor_network_lines_are_pinned_and_routers_steered(setting: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from corridor.emulation.network import CorridorNetwork
    from corridor.planning.points import plan_for_topology

    monkeypatch.setenv(steering.STEERING_ENV, setting)
    ours = os.sched_getaffinity(0)
    plan = plan_for_topology("two-site")
    with CorridorNetwork(plan, backend="userspace", label=f"steer-{setting}") as net:
        for link in plan.wan_links:
            pid = net.link_pid(link.name)
            assert pid is not None
            receivers = net.wire_node(link.name).receivers()
            assert receivers is not None and len(receivers) == 2
            affinity = os.sched_getaffinity(pid)
            masks = set().union(*(_masks(path, [intf]) for path, intf in receivers))
            if setting == "off":
                assert affinity == ours and masks == {0}
            else:
                assert len(affinity) == 1
                assert masks == {sum(1 << cpu for cpu in ours if cpu not in affinity)}
        line_cpus = {next(iter(os.sched_getaffinity(net.link_pid(link.name) or 0))) for link in plan.wan_links}
        sleeper = net.popen(net.hosts()[0], ["sleep", "30"])
        try:
            expected = ours - line_cpus if setting == "exclusive" and ours - line_cpus else ours
            assert _affinity_of_exec(sleeper, "sleep") == expected
        finally:
            sleeper.kill()
            sleeper.wait()


def test_a_network_with_more_links_than_cpus_is_not_steered(monkeypatch: pytest.MonkeyPatch) -> None:
    from corridor.emulation.network import CorridorNetwork
    from corridor.planning.points import plan_for_topology

    monkeypatch.setenv(steering.STEERING_ENV, "on")
    ours = os.sched_getaffinity(0)
    plan = plan_for_topology("xinjiang-coastal")
    if len(plan.wan_links) <= len(ours):
        pytest.skip(f"xinjiang-coastal's {len(plan.wan_links)} links fit this machine's {len(ours)} CPUs")
    with CorridorNetwork(plan, backend="userspace", label="steer-many") as net:
        for link in plan.wan_links:
            pid = net.link_pid(link.name)
            assert pid is not None and os.sched_getaffinity(pid) == ours
            receivers = net.wire_node(link.name).receivers()
            assert receivers is not None
            assert set().union(*(_masks(path, [intf]) for path, intf in receivers)) == {0}
