"""The one ping parser and the one set of iperf3 parsers, fed captured and hand-made tool output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from corridor.errors import EmulationError
from corridor.links.tools import (
    UDP_SOCKET_BUFFER_BYTES,
    iperf_reported_error,
    iperf_server_argv,
    iperf_tcp_argv,
    iperf_udp_argv,
    parse_iperf_json,
    parse_iperf_tcp,
    parse_iperf_udp,
    parse_iperf_udp_out_of_order,
    parse_ping,
    parse_tcp_mss,
    parse_udp_noports,
    ping_argv,
    udp_socket_buffer_bytes,
)

DATA = Path(__file__).parent / "data"

PING_HEADER = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n"
PING_FOOTER = "\n--- 10.0.0.2 ping statistics ---\n2 packets transmitted, 2 received, 0% packet loss, time 20ms\n"


def _interval(start: float, seconds: float, size_bytes: int, *, omitted: bool = False) -> dict[str, Any]:
    return {"sum": {"start": start, "seconds": seconds, "bytes": size_bytes, "omitted": omitted}}


def _report(intervals: list[dict[str, Any]], end_bps: float | None = None) -> str:
    end = {"sum_received": {"bits_per_second": end_bps}} if end_bps is not None else {}
    return json.dumps({"intervals": intervals, "end": end})


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        (PING_HEADER + "64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=51.3 ms\n"
         "64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=50.1 ms\n" + PING_FOOTER, [51.3, 50.1]),
        # Whole milliseconds (iputils prints three significant digits) and a sub-resolution reply.
        (PING_HEADER + "64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=101 ms\n"
         "64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time<1 ms\n", [101.0, 1.0]),
        # The summary's "time 20ms" and "rtt min/avg/max" are not replies.
        (PING_FOOTER + "rtt min/avg/max/mdev = 50.1/50.7/51.3/0.6 ms\n", []),
        (PING_HEADER + "From 10.0.0.1 icmp_seq=1 Destination Host Unreachable\n"
         "\n--- 10.0.0.2 ping statistics ---\n1 packets transmitted, 0 received, +1 errors, 100% packet loss\n", []),
        ("", []),
    ],
)
def test_ping_parser_reads_replies_only(text: str, expected_ms: list[float]) -> None:
    assert parse_ping(text) == expected_ms


def test_ping_parser_reads_the_captured_two_site_run() -> None:
    text = (DATA / "ping-two-site.txt").read_text()
    samples = parse_ping(text)
    assert len(samples) == text.count("bytes from")
    assert all(49.9 <= s <= 102 for s in samples)


@pytest.mark.parametrize(
    ("text", "skip_s", "expected_mbps"),
    [
        # No omission: the first second (slow start) and the trailing stub are skipped.
        (_report([_interval(0.0, 1.0, 100), _interval(1.0, 1.0, 1_250_000), _interval(2.0, 1.0, 1_250_000),
                  _interval(3.0, 0.01, 10)]), 1.0, 10.0),
        # Omitted intervals never count; skip_s is measured from the start of the unomitted part.
        (_report([_interval(0.0, 1.0, 9_999_999, omitted=True), _interval(0.0, 1.0, 5),
                  _interval(1.0, 1.0, 2_500_000), _interval(2.0, 1.0, 2_500_000)]), 1.0, 20.0),
        (_report([_interval(0.0, 1.0, 100), _interval(1.0, 1.0, 100), _interval(2.0, 1.0, 1_250_000)]), 2.0, 10.0),
        (_report([_interval(0.0, 1.0, 1_250_000), _interval(1.0, 1.0, 1_250_000)]), 0.0, 10.0),
        # Too short for any steady interval: the receiver's end summary.
        (_report([_interval(0.0, 1.0, 1)], end_bps=42e6), 1.0, 42.0),
    ],
)
def test_tcp_goodput_from_steady_intervals(text: str, skip_s: float, expected_mbps: float) -> None:
    assert parse_iperf_tcp(text, skip_s=skip_s) == pytest.approx(expected_mbps)


def test_tcp_goodput_of_the_captured_run_ignores_the_inflated_end_summary() -> None:
    text = (DATA / "iperf3-tcp-server.json").read_text()
    data = json.loads(text)
    steady = [i["sum"] for i in data["intervals"] if not i["sum"]["omitted"]][1:]
    steady = [i for i in steady if i["seconds"] >= 0.5]
    by_hand = sum(i["bytes"] for i in steady) * 8 / sum(i["seconds"] for i in steady) / 1e6
    assert parse_iperf_tcp(text) == pytest.approx(by_hand)
    assert parse_iperf_tcp(text) < data["end"]["sum_received"]["bits_per_second"] / 1e6


@pytest.mark.parametrize(
    ("text", "lost", "packets", "out_of_order"),
    [
        ('{"end": {"streams": [{"udp": {"packets": 50000, "lost_packets": 498, "out_of_order": 3}}]}}',
         498, 50000, 3),
        # Two streams are summed.
        ('{"end": {"streams": [{"udp": {"packets": 10, "lost_packets": 1, "out_of_order": 1}},'
         ' {"udp": {"packets": 30, "lost_packets": 2, "out_of_order": 0}}]}}', 3, 40, 1),
        # No per-stream totals: the summary, and no reordering known.
        ('{"end": {"sum": {"packets": 700, "lost_packets": 7}}}', 7, 700, 0),
    ],
)
def test_udp_counts(text: str, lost: int, packets: int, out_of_order: int) -> None:
    counts = parse_iperf_udp(text)
    assert (counts.lost, counts.packets) == (lost, packets)
    assert counts.received == packets - lost
    assert counts.loss == pytest.approx(lost / packets)
    assert parse_iperf_udp_out_of_order(text) == out_of_order


def test_udp_counts_of_the_captured_run() -> None:
    text = (DATA / "iperf3-udp-server.json").read_text()
    stream = json.loads(text)["end"]["streams"][0]["udp"]
    lost, packets = parse_iperf_udp(text)
    assert (lost, packets) == (stream["lost_packets"], stream["packets"])


BAD_IPERF = [
    ("", "no JSON"),
    ("not json", "no JSON"),
    ("[1, 2]", "not a report"),
    ('{"error": "unable to connect to server"}', "unable to connect"),
]


@pytest.mark.parametrize(("text", "message"), BAD_IPERF)
def test_iperf_json_refuses_bad_output(text: str, message: str) -> None:
    with pytest.raises(EmulationError, match=message):
        parse_iperf_json(text)


@pytest.mark.parametrize(("text", "message"), [*BAD_IPERF, ('{"end": {}}', "no received totals"),
                                               ('{"intervals": [], "end": {"sum": {}}}', "no received totals")])
def test_tcp_parser_refuses_bad_output(text: str, message: str) -> None:
    with pytest.raises(EmulationError, match=message):
        parse_iperf_tcp(text)


@pytest.mark.parametrize(("text", "message"), [
    *BAD_IPERF,
    ('{"end": {}}', "no UDP totals"),
    ('{"end": {"streams": [{"sender": {}}]}}', "no UDP totals"),
    # A TCP report's summary has no datagram counts.
    ('{"end": {"sum": {"bits_per_second": 1}}}', "no UDP totals"),
])
def test_udp_parsers_refuse_bad_output(text: str, message: str) -> None:
    with pytest.raises(EmulationError, match=message):
        parse_iperf_udp(text)
    with pytest.raises(EmulationError, match=message):
        parse_iperf_udp_out_of_order(text)


@pytest.mark.parametrize(("text", "mss"), [('{"start": {"tcp_mss_default": 1398}}', 1398),
                                           ('{"start": {"tcp_mss_default": 0}}', 1448), ("{}", 1448)])
def test_mss_falls_back_to_the_default(text: str, mss: int) -> None:
    assert parse_tcp_mss(text, 1448) == mss


@pytest.mark.parametrize("text", ["", "Ip: a b\nIp: 1 2\n", "Udp: InDatagrams\nUdp: 3\n"])
def test_noports_refuses_text_without_the_counter(text: str) -> None:
    with pytest.raises(EmulationError, match="NoPorts"):
        parse_udp_noports(text)


def test_argv_builders() -> None:
    assert ping_argv("10.0.0.2", count=5) == ["ping", "-n", "-c", "5", "-i", "0.01", "-W", "5", "10.0.0.2"]
    sized = ping_argv("10.0.0.2", count=3, interval_s=0.005, wait_s=2, payload_bytes=1000)
    assert sized[sized.index("-s") + 1] == "1000" and sized[sized.index("-W") + 1] == "2"
    assert sized[-1] == "10.0.0.2"
    assert iperf_server_argv("10.0.0.2", port=5300) == ["iperf3", "-s", "-1", "-B", "10.0.0.2", "-p", "5300",
                                                        "--json"]
    tcp = iperf_tcp_argv("10.0.0.2", duration_s=5, omit_s=2, reverse=True, congestion="bbr")
    assert tcp[tcp.index("-t") + 1] == "5" and tcp[tcp.index("-O") + 1] == "2"
    assert "-R" in tcp and tcp[tcp.index("-C") + 1] == "bbr"
    plain = iperf_tcp_argv("10.0.0.2", duration_s=5)
    assert "-R" not in plain and "-C" not in plain
    udp = iperf_udp_argv("10.0.0.2", rate_mbps=4, packets=1000, size_bytes=1000)
    assert udp[udp.index("-b") + 1] == "4M" and udp[udp.index("-k") + 1] == "1000" and "-u" in udp
    for argv in (sized, tcp, udp):
        assert all(isinstance(part, str) and part for part in argv)


def test_udp_socket_buffer_stays_within_the_kernels_limits(tmp_path: Path) -> None:
    """A stock kernel caps socket buffers at 208 KiB; iperf3 asked for more fails its test."""
    rmem, wmem = tmp_path / "rmem_max", tmp_path / "wmem_max"
    rmem.write_text("212992\n")
    wmem.write_text("16777216\n")
    assert udp_socket_buffer_bytes((str(rmem), str(wmem))) == 212992
    rmem.write_text("33554432\n")
    assert udp_socket_buffer_bytes((str(rmem), str(wmem))) == UDP_SOCKET_BUFFER_BYTES
    assert udp_socket_buffer_bytes((str(tmp_path / "absent"),)) == UDP_SOCKET_BUFFER_BYTES
    udp = iperf_udp_argv("10.0.0.2", rate_mbps=4, packets=10, size_bytes=1000, socket_buffer_bytes=4096)
    assert udp[udp.index("-w") + 1] == "4096"


def test_an_error_iperf3_reports_with_exit_status_0_is_an_error() -> None:
    # iperf3 3.12's client, -w above net.core.rmem_max: exit status 0, the failure only in the JSON.
    report = json.dumps({"start": {"connected": []}, "intervals": [], "end": {},
                         "error": "socket buffer size not set correctly"})
    assert "rmem_max" in (iperf_reported_error(report) or "")
    assert iperf_reported_error(json.dumps({"end": {}})) is None
    assert iperf_reported_error("not json") is None
    with pytest.raises(EmulationError, match="rmem_max"):
        parse_iperf_json(report)
