"""Unit parsing (corridor.spec.units): good strings give the right numbers, bad ones a UnitError that says why."""

from __future__ import annotations

import pytest

from corridor.errors import UnitError
from corridor.spec import units


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("25ms", 25.0),
        ("1.5s", 1500.0),
        ("200us", 0.2),
        ("200µs", 0.2),
        ("200μs", 0.2),
        ("500ns", 0.0005),
        ("2min", 120_000.0),
        (" 10 ms ", 10.0),
        ("1e1ms", 10.0),
        ("0ms", 0.0),
        ("10MS", 10.0),
        ("2h", 7_200_000.0),
        ("1.5h", 5_400_000.0),
        ("90min", 5_400_000.0),
        ("3s", 3000.0),
        ("20us", 0.02),
        ("-0ms", 0.0),
    ],
)
def test_duration_good(text: str, expected_ms: float) -> None:
    assert units.parse_duration_ms(text) == pytest.approx(expected_ms)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("25", "has no unit"),
        (25, "has no unit"),
        ("25 parsecs", "unknown duration unit .parsecs."),
        ("25 m s", "cannot read"),
        ("25d", "unknown duration unit 'd'"),
        ("3m", "write min for minutes or ms for milliseconds"),
        ("-5ms", "duration '-5ms' must not be negative"),
        ("-2h", "must not be negative"),
        ("ms", "cannot read"),
        ("", "cannot read"),
        (None, "expected a duration"),
        (True, "expected a duration"),
        ([25], "expected a duration"),
        ("1e999ms", "not a finite number"),
    ],
)
def test_duration_bad(value: object, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        units.parse_duration_ms(value)


@pytest.mark.parametrize(
    ("text", "expected_mbps"),
    [
        ("10Gbit", 10_000.0),
        ("400G", 400_000.0),
        ("100Mbit", 100.0),
        ("100Mbps", 100.0),
        ("100Kbps", 0.1),
        ("2Gbps", 2000.0),
        ("1Tbps", 1_000_000.0),
        ("100MBIT", 100.0),
        ("100mbit", 100.0),
        ("1GBit", 1000.0),
        ("1tbit", 1_000_000.0),
        ("10kb/s", 0.01),
        ("10Mb/s", 10.0),
        ("100m", 100.0),
        ("5g", 5000.0),
        ("1.5Gbit/s", 1500.0),
        ("64kbit", 0.064),
        ("8000bit", 0.008),
        ("1T", 1_000_000.0),
        ("10 Gbps", 10_000.0),
        ("100M", 100.0),
    ],
)
def test_rate_good(text: str, expected_mbps: float) -> None:
    assert units.parse_rate_mbps(text) == pytest.approx(expected_mbps)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10GB/s", "looks like bytes per second.*80Gbit"),
        ("10MBps", "looks like bytes per second"),
        ("10B/s", "looks like bytes per second.*80bit"),
        ("10KBPS", "looks like bytes per second.*80Kbit"),
        ("10mbps", r"tc reads mbps as megabytes per second; write 10mbit for 10 megabits per second, "
                   r"or 80mbit for tc's 10mbps"),
        ("10kbps", r"tc reads kbps as kilobytes per second.*write 10kbit.*or 80kbit"),
        ("1gbps", r"tc reads gbps as gigabytes per second.*write 1gbit.*or 8gbit"),
        ("1tbps", r"tc reads tbps as terabytes per second"),
        ("800bps", r"tc reads bps as bytes per second.*write 800bit.*or 6400bit"),
        ("10MbPS", "unknown rate unit"),
        ("10Mb", "unknown rate unit"),
        ("-1Gbit", "rate '-1Gbit' must not be negative"),
        ("10", "has no unit"),
        (1000, "has no unit"),
        ("10 furlongs", "unknown rate unit"),
        ("fast", "cannot read"),
        (None, "expected a rate"),
    ],
)
def test_rate_bad(value: object, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        units.parse_rate_mbps(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16MiB", 16 * 1024**2),
        ("64KB", 64_000),
        ("1500B", 1500),
        ("1.5kB", 1500),
        ("2GiB", 2 * 1024**3),
        ("100 bytes", 100),
        ("3GB", 3 * 1000**3),
        ("1TB", 1000**4),
        ("4KiB", 4096),
        ("1TiB", 1024**4),
        ("0B", 0),
    ],
)
def test_size_good(text: str, expected: int) -> None:
    assert units.parse_size_bytes(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("16", "has no unit"),
        ("16 MiBs", "unknown size unit"),
        (4096, "has no unit"),
        ("lots", "cannot read"),
        ("32Mb", r"size '32Mb' is in bits \(Mb means megabits\); sizes are in bytes: write 4MB for 32Mb, "
                 r"or 32MB if you meant megabytes"),
        ("16mb", r"in bits.*write 2MB.*or 16MB"),
        ("8Kb", r"in bits.*write 1KB"),
        ("1Gb", r"in bits.*write 0.125GB.*or 1GB"),
        ("64kbit", r"in bits.*write 8KB for 64kbit"),
        ("2Kib", r"kibibits.*write 0.25KiB.*or 2KiB"),
        ("1500b", r"in bits.*or 1500B"),
        ("40 bits", r"in bits; sizes are in bytes: write 5B"),
        ("3ib", "unknown size unit"),
        ("-1MB", "size '-1MB' must not be negative"),
    ],
)
def test_size_bad(value: object, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        units.parse_size_bytes(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6MB", (6_000_000, "bytes")),
        ("1000p", (1000, "packets")),
        ("64 packets", (64, "packets")),
        ("1pkt", (1, "packets")),
    ],
)
def test_queue_good(text: str, expected: tuple[int, str]) -> None:
    assert units.parse_queue(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("1.5p", "whole number"), ("1000", "has no unit"), ("10 parcels", "unknown size unit"), (1000, "has no unit"),
     ("-5p", "must not be negative"), ("6Mb", "in bits.*write 0.75MB")],
)
def test_queue_bad(value: object, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        units.parse_queue(value)


@pytest.mark.parametrize(("text", "expected"), [("2411km", 2411.0), ("500m", 0.5), ("1e3 km", 1000.0)])
def test_distance_good(text: str, expected: float) -> None:
    assert units.parse_distance_km(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [("2411", "has no unit"), ("2411mi", "unknown distance unit 'mi'"), (2411, "has no unit"), ("far", "cannot read"),
     ("-3km", "must not be negative")],
)
def test_distance_bad(value: object, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        units.parse_distance_km(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1%", 0.01), ("0.1%", 0.001), ("1e-5", 1e-5), (1e-5, 1e-5), (0, 0.0), ("0", 0.0), (" 2 %", 0.02)],
)
def test_fraction_good(value: object, expected: float) -> None:
    assert units.parse_fraction(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [("1ppm", "cannot read"), (True, "expected a fraction"), (None, "expected a fraction"), ("half", "cannot read"),
     (float("nan"), "not a finite"), ("-1%", "must not be negative"), (-1e-5, "must not be negative")],
)
def test_fraction_bad(value: object, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        units.parse_fraction(value)


@pytest.mark.parametrize(
    ("rate_mbps", "text"),
    [(10_000.0, "10Gbit"), (400_000.0, "400Gbit"), (1.5, "1.5Mbit"), (0.064, "64kbit"), (2e6, "2Tbit"),
     (0.0005, "500bit")],
)
def test_format_rate_round_trips(rate_mbps: float, text: str) -> None:
    assert units.format_rate(rate_mbps) == text
    assert units.parse_rate_mbps(text) == pytest.approx(rate_mbps)


@pytest.mark.parametrize(("size", "text"), [(12_500_000, "12.5MB"), (1500, "1.5KB"), (999, "999B"), (3e9, "3GB")])
def test_format_bytes(size: float, text: str) -> None:
    assert units.format_bytes(size) == text
