"""The one link testbed: names and per-backend commands (pure), and its life cycle and RTT on both backends (root)."""

from __future__ import annotations

import os
import subprocess

import pytest

from corridor.emulation.state import NETNS_PREFIX, SCRATCH_OWNERS, state_root
from corridor.errors import EmulationError
from corridor.links import testbed as tb
from corridor.links.backends import LINK_BACKENDS
from corridor.links.contract import LinkDirection, default_queue_bytes
from corridor.links.netem import wire_setup_argv
from corridor.links.userspace import prepare_argv


def _tag(suffix: str) -> str:
    return f"{os.getpid() % 100000}{suffix}"


def test_names_carry_the_scratch_prefix_and_fit_interface_limits() -> None:
    names = tb.testbed_names("1234567", kind="st")
    assert {names["ns_a"], names["ns_w"], names["ns_b"]} == {f"corridor-st-1234567-{n}" for n in "AWB"}
    assert all(names[k].startswith(NETNS_PREFIX) for k in ("ns_a", "ns_w", "ns_b"))
    interfaces = [v for k, v in names.items() if not k.startswith("ns_")]
    assert len(set(interfaces)) == len(interfaces) and all(len(i) <= 15 for i in interfaces)


def test_a_tag_too_long_for_an_interface_name_is_refused() -> None:
    with pytest.raises(EmulationError, match="shorter testbed tag"):
        tb.testbed_names("12345678901")


def test_each_backend_readies_the_wire_its_own_way() -> None:
    assert tb.wire_argv("netem", "wa", "wb") == wire_setup_argv("wa", "wb")
    assert tb.wire_argv("userspace", "wa", "wb") == [*prepare_argv("wa"), *prepare_argv("wb")]
    # netem's contract counts IP bytes of single segments; the delay line handles super-frames itself.
    assert ["ethtool", "-K", "a0", "tso", "off", "gso", "off"] in tb.endpoint_setup_argv("a0", "netem")
    assert not any("tso" in argv for argv in tb.endpoint_setup_argv("a0", "userspace"))


def test_an_unknown_backend_is_refused_before_anything_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(EmulationError, match="unknown link backend 'tc'"), tb.testbed("x1", backend="tc"):
        pass


def _netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def _netem_works() -> tuple[bool, str]:
    from corridor.links.probe import probe_netem

    probe = probe_netem()
    return probe.ok, probe.reason


@pytest.mark.corridor_root
@pytest.mark.parametrize("backend", LINK_BACKENDS)
def test_rtt_through_either_backend_is_twice_the_one_way_delay(backend: str) -> None:
    from corridor.links.fidelity import measure_rtt

    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    if backend == "netem":
        ok, reason = _netem_works()
        if not ok:
            pytest.skip(f"this kernel cannot shape with netem: {reason}")
    link = LinkDirection(rate_mbps=100.0, delay_ms=10.0, queue_bytes=default_queue_bytes(100.0, 20.0))
    with tb.testbed(_tag(f"r{backend[0]}"), backend=backend, rate_mbps=100.0, rtt_ms=20.0) as bed:
        bed.shape(link, link)
        rtt = measure_rtt(bed, count=200, interval_s=0.01)
    assert rtt.samples == 200
    assert rtt.median_ms == pytest.approx(20.0, rel=0.05)
    assert rtt.min_ms >= 20.0 - 0.1  # delay is applied once per direction, never skipped


@pytest.mark.corridor_root
def test_netem_wire_forwards_unshaped_and_everything_goes_with_the_testbed() -> None:
    from corridor.links.fidelity import measure_rtt

    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    tag = _tag("c")
    names = tb.testbed_names(tag)
    owners = state_root() / SCRATCH_OWNERS
    with tb.testbed(tag, backend="netem") as bed:
        listed = _netns()
        assert all(names[k] in listed for k in ("ns_a", "ns_w", "ns_b"))
        # Owned by this live process, so `corridor clean` leaves it alone.
        assert (owners / f"{bed.ns_w}.json").exists()
        bed.clear()  # only the ingress redirect of the cable: no shaping, no sch_netem needed
        unshaped = measure_rtt(bed, count=20, interval_s=0.01)
        bare = measure_rtt(bed, count=20, interval_s=0.01, bare=True)
    assert unshaped.samples == 20 and bare.samples == 20
    assert unshaped.median_ms < 5.0
    listed = _netns()
    assert not any(names[k] in listed for k in ("ns_a", "ns_w", "ns_b"))
    assert not any((owners / f"{names[k]}.json").exists() for k in ("ns_a", "ns_w", "ns_b"))


@pytest.mark.corridor_root
def test_a_failure_inside_the_testbed_still_tears_it_down() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    tag = _tag("f")
    names = tb.testbed_names(tag)
    with pytest.raises(RuntimeError, match="boom"), tb.testbed(tag, backend="userspace"):
        assert names["ns_a"] in _netns()
        raise RuntimeError("boom")
    assert names["ns_a"] not in _netns() and names["ns_w"] not in _netns()


@pytest.mark.corridor_root
@pytest.mark.parametrize("backend", LINK_BACKENDS)
def test_loss_counted_by_the_kernel_and_order_kept_under_jitter(backend: str) -> None:
    from corridor.links.fidelity import measure_loss_counted, measure_udp

    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    if backend == "netem":
        ok, reason = _netem_works()
        if not ok:
            pytest.skip(f"this kernel cannot shape with netem: {reason}")
    packets, loss = 10_000, 0.01

    def direction(**extra: float) -> LinkDirection:
        return LinkDirection(rate_mbps=1000.0, delay_ms=5.0, queue_bytes=default_queue_bytes(1000.0, 10.0),
                             **extra)

    with tb.testbed(_tag(f"l{backend[0]}"), backend=backend) as bed:
        bed.shape(direction(loss=loss), direction(), seed=3)
        counted = measure_loss_counted(bed, packets=packets, pps=4000.0)
        bed.shape(direction(jitter_ms=2.0), direction())
        udp = measure_udp(bed, rate_mbps=4.0, packets=1000)
    assert counted.sent == packets
    assert counted.path_drops == 0, "drops outside the link: the figure measures the machine"
    sigma = (loss * (1 - loss) / packets) ** 0.5
    assert counted.loss == pytest.approx(loss, abs=4 * sigma)
    # Datagrams 2 ms apart under +-2 ms of jitter would overtake each other unless the link keeps order.
    assert udp.packets >= 990 and udp.out_of_order == 0
