"""Steering a delay line's receivers off its CPU: masks, placements, the switch, the program's checks (no root)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from corridor.errors import EmulationError
from corridor.links import steering
from corridor.links.contract import LinkDirection
from corridor.links.userspace import delayline_argv


@pytest.mark.parametrize(("cpus", "mask"), [
    ([1], "2"), ([0, 2], "5"), ([3, 1], "a"), ([32], "1,00000000"), (range(40), "ff,ffffffff"),
    ([0, 64], "1,00000000,00000001"), ([], "0"),
])
def test_rps_mask_is_the_kernels_bitmap_format(cpus: list[int], mask: str) -> None:
    assert steering.rps_mask(cpus) == mask


def test_rps_mask_refuses_a_negative_cpu() -> None:
    with pytest.raises(ValueError, match="not negative"):
        steering.rps_mask([-1])


def test_lines_take_the_cpus_in_turn_and_steer_to_all_the_others() -> None:
    placements = [steering.placement_for(i, [0, 1]) for i in range(4)]
    assert [(p.cpu, p.peer_mask) for p in placements if p] == [(0, "2"), (1, "1"), (0, "2"), (1, "1")]
    spread = steering.placement_for(1, [7, 2, 5])
    assert spread == steering.LinePlacement(cpu=5, peer_mask="84")  # CPUs 2 and 7
    assert "CPU 5" in spread.describe() and "84" in spread.describe()


def test_one_cpu_has_nowhere_to_steer_to() -> None:
    assert steering.placement_for(0, [3]) is None
    assert steering.placement_for(5, [3, 3]) is None
    assert steering.why_not(1, [3]) == "one CPU: nowhere to steer to"


def test_lines_are_steered_only_while_they_fit_the_cpus() -> None:
    # measured on 2 CPUs: two steered links held, four steered links carried less than four unsteered ones
    assert steering.placement_for(1, [0, 1], lines=2) == steering.LinePlacement(cpu=1, peer_mask="1")
    assert steering.placement_for(0, [0, 1], lines=3) is None
    assert steering.why_not(2, [0, 1]) is None
    assert steering.why_not(4, [0, 1]) == (
        "4 lines on 2 CPUs: with more lines than CPUs steering costs more than it saves")
    assert steering.placement_for(3, range(8), lines=8) == steering.LinePlacement(cpu=3, peer_mask="f7")


def test_expecting_sets_the_line_count_for_its_block_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(steering.STEERING_ENV, "on")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    assert steering.next_placement() is not None and steering.note() == ""
    with steering.expecting(8):
        assert steering.next_placement() is None
        assert steering.note() == "off (8 lines on 2 CPUs: with more lines than CPUs steering costs more than it saves)"
        with steering.expecting(2):
            assert steering.next_placement() is not None
        assert steering.next_placement() is None
    assert steering.next_placement() is not None
    monkeypatch.setenv(steering.STEERING_ENV, "off")
    assert steering.note() == "off (CORRIDOR_LINK_STEERING=off)"


@pytest.mark.parametrize(("value", "on"), [("on", True), ("", True), ("OFF", False), ("0", False), ("no", False)])
def test_the_switch(value: str, on: bool) -> None:
    assert steering.enabled({steering.STEERING_ENV: value}) is on
    assert steering.enabled({}) is True


def test_a_bad_switch_value_names_the_variable() -> None:
    with pytest.raises(EmulationError, match="CORRIDOR_LINK_STEERING='sometimes': use on, off or exclusive"):
        steering.enabled({steering.STEERING_ENV: "sometimes"})


def test_exclusive_keeps_the_traffic_off_the_lines_cpus_while_one_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    monkeypatch.setenv(steering.STEERING_ENV, "exclusive")
    assert steering.mode() == "exclusive" and steering.enabled()
    assert steering.traffic_cpus({0}) == [1, 2, 3]
    assert steering.traffic_cpus({0, 2}) == [1, 3]
    assert steering.traffic_cpus({0, 1, 2, 3}) is None  # the lines take every CPU: traffic runs anywhere
    assert steering.traffic_cpus(set()) is None  # no line was steered
    assert steering.pinned_argv([1, 3], ["iperf3", "-s"]) == ["taskset", "-c", "1,3", "iperf3", "-s"]
    assert steering.pinned_argv(None, ["iperf3", "-s"]) == ["iperf3", "-s"]
    monkeypatch.setenv(steering.STEERING_ENV, "on")
    assert steering.traffic_cpus({0}) is None


def test_the_testbed_pins_only_its_hosts_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    from corridor.links.testbed import Testbed

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setenv(steering.STEERING_ENV, "exclusive")
    bed = Testbed(tag="t", backend="userspace", ns_a="a", ns_w="w", ns_b="b", if_a="ia", wire_a="wa", wire_b="wb",
                  if_b="ib", ip_a="", ip_b="", bare_ip_a="", bare_ip_b="", stats_path="/tmp/s")
    assert bed.traffic_argv("A", ["iperf3"]) == ["iperf3"]  # no line placed yet
    bed.placement = steering.placement_for(0, [0, 1])
    assert bed.traffic_argv("A", ["iperf3"]) == ["taskset", "-c", "1", "iperf3"]
    assert bed.traffic_argv("B", ["ping"]) == ["taskset", "-c", "1", "ping"]
    assert bed.traffic_argv("W", ["tc"]) == ["tc"]
    bed.line_cpus = {0, 1}  # two benchmark lines took both CPUs
    assert bed.traffic_argv("A", ["iperf3"]) == ["iperf3"]


def test_next_placement_is_none_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(steering.STEERING_ENV, "off")
    assert steering.next_placement() is None


def test_one_program_steers_all_of_a_lines_receivers() -> None:
    argv = steering.steer_argv([("/proc/7/ns/net", "r1-eth2"), ("/run/netns/b", "b-w")], "2")
    assert argv[1:] == ["-m", "corridor.links.steering", "--mask", "2", "--at", "/proc/7/ns/net", "r1-eth2",
                        "--at", "/run/netns/b", "b-w"]


def test_the_delay_line_is_pinned_only_when_asked() -> None:
    direction = LinkDirection(rate_mbps=100.0, delay_ms=5.0, queue_bytes=125_000)
    plain = delayline_argv("a", "b", direction, direction, stats_path="/tmp/s", seed=1, engine="python")
    pinned = delayline_argv("a", "b", direction, direction, stats_path="/tmp/s", seed=1, engine="python", cpu=1)
    assert "--cpu" not in plain
    assert pinned[-2:] == ["--cpu", "1"] and pinned[:-2] == plain


def _queues(root: str, intf: str, count: int, *, with_rps: bool = True) -> None:
    for n in range(count):
        queue = os.path.join(root, "class", "net", intf, "queues", f"rx-{n}")
        os.makedirs(queue)
        if with_rps:
            with open(os.path.join(queue, "rps_cpus"), "w", encoding="ascii") as handle:
                handle.write("0\n")
    os.makedirs(os.path.join(root, "class", "net", intf, "queues", "tx-0"), exist_ok=True)


def test_every_rx_queue_of_every_interface_gets_the_mask(tmp_path: pytest.TempPathFactory) -> None:
    root = str(tmp_path)
    _queues(root, "r1-eth2", 2)
    _queues(root, "r2-eth2", 1)
    written = steering.write_masks(["r1-eth2", "r2-eth2"], "2", sys_root=root)
    assert len(written) == 3 and all("/rx-" in path for path in written)
    assert steering.read_masks(["r1-eth2", "r2-eth2"], sys_root=root) == {
        "r1-eth2/rx-0": "2", "r1-eth2/rx-1": "2", "r2-eth2/rx-0": "2"}


def test_a_missing_interface_or_a_kernel_without_rps_is_named(tmp_path: pytest.TempPathFactory) -> None:
    root = str(tmp_path)
    with pytest.raises(OSError, match="no interface ghost0 in this namespace"):
        steering.write_masks(["ghost0"], "2", sys_root=root)
    _queues(root, "old0", 1, with_rps=False)
    with pytest.raises(steering.NoRpsError, match="CONFIG_RPS"):
        steering.write_masks(["old0"], "2", sys_root=root)
    with pytest.raises(steering.NoRpsError, match="CONFIG_RPS"):
        steering.read_masks(["old0"], sys_root=root)


@pytest.mark.parametrize(("args", "said"), [
    (["--at", "/proc/1/ns/net", "eth0", "--mask", "0x2"], "not a hex CPU bitmap"),
    (["--at", "/proc/1/ns/net", "eth0;reboot", "--mask", "2"], "not interface names: eth0;reboot"),
    (["--at", "/proc/1/ns/net", "eth0"], "one of the arguments --mask --show is required"),
    (["--at", "/proc/1/ns/net", "eth0", "--mask", "2", "--show"], "not allowed with argument"),
    (["--mask", "2"], "the following arguments are required: --at"),
])
def test_the_program_refuses_bad_arguments_before_touching_anything(args: list[str], said: str) -> None:
    done = subprocess.run([sys.executable, "-m", "corridor.links.steering", *args], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 2
    assert said in done.stderr


def test_doctor_says_whether_links_will_be_steered(monkeypatch: pytest.MonkeyPatch) -> None:
    from corridor.tools import doctor

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    monkeypatch.setenv(steering.STEERING_ENV, "off")
    assert doctor._link_steering().detail == "off (CORRIDOR_LINK_STEERING=off)"
    monkeypatch.setenv(steering.STEERING_ENV, "maybe")
    finding = doctor._link_steering()
    assert not finding.ok and "use on, off or exclusive" in finding.detail
    monkeypatch.setenv(steering.STEERING_ENV, "on")
    finding = doctor._link_steering()
    assert finding.ok
    if os.path.exists("/sys/class/net/lo/queues/rx-0/rps_cpus"):
        assert finding.detail.startswith("on while a network has at most 4 delay lines")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    if os.path.exists("/sys/class/net/lo/queues/rx-0/rps_cpus"):
        assert "one usable CPU" in doctor._link_steering().detail


@pytest.mark.parametrize("engine_name", ["python", "native"])
def test_a_cpu_the_line_cannot_run_on_is_a_clear_error_before_any_socket(engine_name: str, tmp_path: Path) -> None:
    from corridor.emulation.api import package_env
    from corridor.links import engine

    if engine_name == "native" and engine.native_binary()[0] is None:
        pytest.skip("the compiled delay line is not built here (scripts/setup.sh builds it)")
    direction = LinkDirection(rate_mbps=100.0, delay_ms=5.0, queue_bytes=125_000)
    argv = delayline_argv("nosuch-a", "nosuch-b", direction, direction, stats_path=str(tmp_path / "s.json"), seed=1,
                          engine=engine_name, cpu=1000)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=package_env(), check=False)
    assert done.returncode == 2
    assert "cannot run on CPU 1000" in done.stderr
    assert not (tmp_path / "s.json").exists()
