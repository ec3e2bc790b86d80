"""Unit tests for the netem backend's tc argv builders (pure; no root, no tc run)."""

from __future__ import annotations

import json

import pytest

from corridor.links.contract import MTU_BYTES, GilbertElliott, LinkDirection, bdp_bytes, default_queue_bytes
from corridor.links.netem import (
    burst_bytes,
    egress_argv,
    netem_limit_packets,
    teardown_argv,
    wire_setup_argv,
)
from corridor.links.tools import (
    parse_iperf_tcp,
    parse_iperf_udp,
    parse_iperf_udp_out_of_order,
    parse_ping,
    parse_udp_noports,
)

# The acceptance link of issue 3: 1 Gbit/s, 22.5 ms one way (45 ms RTT), 0.01 % loss, BDP queue.
GIGABIT = LinkDirection(rate_mbps=1000.0, delay_ms=22.5, queue_bytes=default_queue_bytes(1000.0, 45.0), loss=1e-4)


def test_gigabit_corridor_link_argv_is_pinned() -> None:
    assert egress_argv("w1-eth1", GIGABIT) == [
        ["tc", "qdisc", "add", "dev", "w1-eth1", "root", "handle", "1:", "stab", "overhead", "-14",
         "tbf", "rate", "1000000000bit", "burst", "250000", "peakrate", "10000000000bit", "mtu", "2048",
         "limit", "5625000"],
        ["tc", "qdisc", "add", "dev", "w1-eth1", "parent", "1:1", "handle", "10:",
         "netem", "limit", "11250", "delay", "22500us", "loss", "random", "0.01%"],
        ["tc", "qdisc", "add", "dev", "w1-eth1", "parent", "10:1", "handle", "20:", "bfifo", "limit", "5625000"],
    ]  # fmt: skip


def test_gigabit_netem_limit_holds_a_round_trip_of_full_size_packets() -> None:
    in_flight_packets = bdp_bytes(1000.0, 45.0) / MTU_BYTES
    assert in_flight_packets == pytest.approx(3750)
    assert netem_limit_packets(GIGABIT) >= 2 * in_flight_packets


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("rate_mbps", [1000.0, 2000.0, 10000.0, 100000.0])
def test_rates_above_a_gigabit_are_passed_through(rate_mbps: float) -> None:
    link = LinkDirection(rate_mbps=rate_mbps, delay_ms=10.0, queue_bytes=default_queue_bytes(rate_mbps, 20.0))
    tbf = egress_argv("x", link)[0]
    assert _option(tbf, "rate") == f"{int(rate_mbps * 1e6)}bit"
    assert (
        int(_option(_option_list(egress_argv("x", link), "netem"), "limit")) >= bdp_bytes(rate_mbps, 20.0) / MTU_BYTES
    )


def _option_list(argvs: list[list[str]], kind: str) -> list[str]:
    return next(argv for argv in argvs if kind in argv)


@pytest.mark.parametrize(
    ("rate_mbps", "expected_bytes"),
    [
        (10.0, 16 * MTU_BYTES),  # floor: 16 full frames, not 2 ms (2,500 bytes)
        (100.0, 25000),
        (1000.0, 250000),
        (10000.0, 2500000),
    ],
)
def test_burst_is_sized_from_the_rate_not_fixed(rate_mbps: float, expected_bytes: int) -> None:
    link = LinkDirection(rate_mbps=rate_mbps, delay_ms=5.0, queue_bytes=default_queue_bytes(rate_mbps, 10.0))
    assert burst_bytes(link) == expected_bytes
    assert _option(egress_argv("x", link)[0], "burst") == str(expected_bytes)


def test_no_delay_loss_or_jitter_keeps_netem_minimal() -> None:
    link = LinkDirection(rate_mbps=100.0, delay_ms=0.0, queue_bytes=100_000)
    netem = _option_list(egress_argv("x", link), "netem")
    assert netem[netem.index("netem") :] == ["netem", "limit", "1000", "delay", "0us"]


def test_jitter_without_reorder_orders_packets_with_a_netem_rate() -> None:
    link = LinkDirection(rate_mbps=100.0, delay_ms=25.0, jitter_ms=0.5, queue_bytes=625_000)
    netem = _option_list(egress_argv("x", link), "netem")
    assert netem[netem.index("delay") : netem.index("delay") + 3] == ["delay", "25000us", "500us"]
    assert _option(netem, "rate") == "1000000000bit"


def test_jitter_with_reorder_allowed_has_no_ordering_rate() -> None:
    link = LinkDirection(rate_mbps=100.0, delay_ms=25.0, jitter_ms=30.0, queue_bytes=625_000, reorder=True)
    netem = _option_list(egress_argv("x", link), "netem")
    assert "30000us" in netem
    assert "rate" not in netem


def test_gilbert_elliott_uses_gemodel_in_iproute2_order() -> None:
    ge = GilbertElliott(p_good_to_bad=0.01, p_bad_to_good=0.3, loss_good=0.001, loss_bad=0.5)
    link = LinkDirection(rate_mbps=100.0, delay_ms=10.0, queue_bytes=250_000, loss=0.02, burst_loss=ge)
    netem = _option_list(egress_argv("x", link), "netem")
    start = netem.index("loss")
    assert netem[start:] == ["loss", "gemodel", "1%", "30%", "50%", "0.1%"]


def test_queue_in_packets_uses_pfifo() -> None:
    link = LinkDirection(rate_mbps=100.0, delay_ms=10.0, queue_bytes=250_000, queue_packets=200)
    queue = egress_argv("x", link)[2]
    assert queue[-3:] == ["pfifo", "limit", "200"]
    assert netem_limit_packets(link) >= 1000


def test_queue_bytes_are_the_drop_tail_limit() -> None:
    link = LinkDirection(rate_mbps=50.0, delay_ms=30.0, queue_bytes=123_456)
    queue = egress_argv("x", link)[2]
    assert queue[queue.index("parent") + 1] == "10:1"
    assert queue[-3:] == ["bfifo", "limit", "123456"]


@pytest.mark.parametrize(
    ("rate_mbps", "delay_ms", "queue_bytes", "minimum"),
    [
        (1.0, 1.0, 100_000, 1000),  # tiny link: netem's own default is the floor
        (1000.0, 50.0, 12_500_000, 2 * (4167 + 8334)),  # 1 Gbit/s: 50 ms delay, 100 ms of queue
        (10000.0, 25.0, 62_500_000, 2 * (20834 + 41667)),
    ],
)
def test_netem_limit_covers_delay_plus_queue(rate_mbps: float, delay_ms: float, queue_bytes: int, minimum: int) -> None:
    link = LinkDirection(rate_mbps=rate_mbps, delay_ms=delay_ms, queue_bytes=queue_bytes)
    assert netem_limit_packets(link) >= minimum - 2


def test_wire_setup_redirects_both_ways_and_is_quiet() -> None:
    argv = wire_setup_argv("w1-eth0", "w1-eth1")
    redirects = [(cmd[cmd.index("dev") + 1], cmd[-1]) for cmd in argv if "mirred" in cmd]
    assert redirects == [("w1-eth0", "w1-eth1"), ("w1-eth1", "w1-eth0")]
    assert ["ip", "link", "set", "dev", "w1-eth0", "addrgenmode", "none"] in argv
    ups = [cmd for cmd in argv if cmd[-1] == "up"]
    assert len(ups) == 2
    # Interfaces are quiet (no IPv6 link-local) before they come up.
    assert argv.index(["ip", "link", "set", "dev", "w1-eth1", "addrgenmode", "none"]) < argv.index(ups[1])


def test_teardown_removes_root_and_ingress() -> None:
    assert teardown_argv("w1-eth1") == [
        ["tc", "qdisc", "del", "dev", "w1-eth1", "root"],
        ["tc", "qdisc", "del", "dev", "w1-eth1", "ingress"],
    ]


def test_every_argv_is_a_list_of_strings() -> None:
    ge = GilbertElliott(p_good_to_bad=0.05, p_bad_to_good=0.5)
    link = LinkDirection(rate_mbps=123.4, delay_ms=7.25, queue_bytes=99_999, jitter_ms=0.1, burst_loss=ge)
    for argv in [*egress_argv("i", link), *wire_setup_argv("a", "b"), *teardown_argv("i")]:
        assert argv and all(isinstance(part, str) and part for part in argv)


PING_OUTPUT = """PING 10.77.0.2 (10.77.0.2) 56(84) bytes of data.
64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=51.3 ms
64 bytes from 10.77.0.2: icmp_seq=2 ttl=64 time=50.1 ms

--- 10.77.0.2 ping statistics ---
2 packets transmitted, 2 received, 0% packet loss, time 20ms
rtt min/avg/max/mdev = 50.1/50.7/51.3/0.6 ms
"""


def test_parse_ping() -> None:
    assert parse_ping(PING_OUTPUT) == [51.3, 50.1]


def _interval(start: float, seconds: float, size_bytes: int) -> dict[str, object]:
    return {"sum": {"start": start, "seconds": seconds, "bytes": size_bytes}}


def test_parse_iperf_received_skips_ramp_and_stub_intervals() -> None:
    report = {
        "intervals": [
            _interval(0.0, 1.0, 100),  # ramp-up, skipped
            _interval(1.0, 1.0, 1_250_000),
            _interval(2.0, 1.0, 1_250_000),
            _interval(3.0, 0.01, 10),  # trailing stub, skipped
        ]
    }
    assert parse_iperf_tcp(json.dumps(report), skip_s=1) == pytest.approx(10.0)


def test_parse_iperf_udp_sums_streams() -> None:
    report = '{"end": {"streams": [{"udp": {"packets": 50000, "lost_packets": 498, "out_of_order": 0}}]}}'
    assert parse_iperf_udp(report) == (498, 50000)
    assert parse_iperf_udp_out_of_order(report) == 0


@pytest.mark.parametrize("report", [{}, {"end": {}}, {"end": {"streams": [{"sender": {}}]}}])
def test_parse_iperf_udp_refuses_reports_without_totals(report: dict[str, object]) -> None:
    from corridor.errors import EmulationError

    with pytest.raises(EmulationError):
        parse_iperf_udp(json.dumps(report))


SNMP = """Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 50512
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 3 49502 0 5 0 0 0 0 0
"""


def test_parse_udp_noports() -> None:
    assert parse_udp_noports(SNMP) == 49502


def test_parse_udp_noports_refuses_text_without_udp() -> None:
    from corridor.errors import EmulationError

    with pytest.raises(EmulationError):
        parse_udp_noports("Ip: a b\nIp: 1 2\n")
