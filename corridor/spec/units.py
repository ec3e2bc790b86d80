"""Quantity parsing and formatting: the one place that reads strings like ``"25ms"``.

Stage: spec (pure). Everything else carries numbers whose unit is in the name
(``delay_ms``, ``rate_mbps``, ``size_bytes``, ``distance_km``).

The units mean what tc(8) and iperf3 users expect:

- Rates are bits per second: ``bit``, ``kbit``, ``mbit``, ``gbit``, ``tbit`` in any
  case (tc), a bare prefix such as ``"400G"`` (iperf3), and ``Kbps``, ``Mbps``,
  ``Gbps``, ``Tbps`` written with a capital prefix and lower-case ``bps``. tc reads
  the all-lower-case ``bps``, ``kbps``, ``mbps``, ``gbps`` as *bytes* per second, so
  those are refused with the two readings spelled out, as is any byte rate such as
  ``"10GB/s"``.
- Sizes are bytes only (``B``, ``KB``, ``MB``, ``KiB``, ``MiB`` ...); a bit-sized
  unit such as ``"32Mb"`` or ``"64kbit"`` is refused with the byte equivalent.
- Durations take ``ns``, ``us``, ``ms``, ``s``, ``min`` and ``h``.
- No quantity is negative.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from corridor.errors import UnitError

_NUMBER = r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
_QUANTITY = re.compile(rf"^\s*{_NUMBER}\s*([A-Za-zµμ/%]*)\s*$")

_DURATION_MS = {
    "ns": 1e-6,
    "us": 1e-3,
    "µs": 1e-3,  # micro sign U+00B5
    "μs": 1e-3,  # Greek small mu U+03BC: both are typed for microseconds
    "ms": 1.0,
    "s": 1e3,
    "sec": 1e3,
    "min": 60e3,
    "h": 3600e3,
}

# Decimal prefixes as tc and iperf3 use them: k is 1000, not 1024.
_RATE_PREFIX_MBPS = {"": 1e-6, "k": 1e-3, "m": 1.0, "g": 1e3, "t": 1e6}
_PREFIX_NAME = {"": "", "k": "kilo", "m": "mega", "g": "giga", "t": "tera", "p": "peta"}
_BINARY_NAME = {"k": "kibi", "m": "mebi", "g": "gibi", "t": "tebi", "p": "pebi"}

_SIZE_PREFIX_BYTES = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4, "p": 1000**5}
_SIZE_BINARY_BYTES = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_SIZE_WORDS = {"byte", "bytes"}
_SIZE_UNITS_SAID = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"

# A prefix in any case, then the unit symbol whose case carries the meaning (B bytes, b bits).
_BIT_RATE = re.compile(r"((?i:[kmgt])?)(?i:bits?)(/s)?")
_PREFIX_ONLY = re.compile(r"(?i:[kmgt])")
_B_RATE = re.compile(r"((?i:[kmgt])?)([bB])((?i:ps)|/s)?")
_BYTE_SIZE = re.compile(r"((?i:[kmgtp])?)((?i:i)?)B")
_BIT_SIZE = re.compile(r"((?i:[kmgtp])?)((?i:i)?)(?:b|(?i:bits?))")

_DISTANCE_KM = {"km": 1.0, "m": 1e-3}

_PACKETS = {"p", "pkt", "pkts", "packet", "packets"}


def _split(text: object, what: str, example: str) -> tuple[float, str]:
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UnitError(f"expected a {what} such as {example!r}, got {text!r}")
    if isinstance(text, (int, float)):
        raise UnitError(f"{what} {text!r} has no unit; write it with one, for example {example!r}")
    match = _QUANTITY.match(text)
    if not match:
        raise UnitError(f"cannot read {text!r} as a {what}; write it like {example!r}")
    value = float(match.group(1))
    if not math.isfinite(value):
        raise UnitError(f"{what} {text!r} is not a finite number")
    if value < 0:
        raise UnitError(f"{what} {text!r} must not be negative; write a value of zero or more")
    return value, match.group(2)


def _allowed(table: Mapping[str, object]) -> str:
    return ", ".join(sorted(table))


def parse_duration_ms(text: object) -> float:
    """``"25ms"`` -> 25.0, ``"1.5s"`` -> 1500.0, ``"200us"`` -> 0.2."""
    value, unit = _split(text, "duration", "25ms")
    if not unit:
        raise UnitError(f"duration {text!r} has no unit; write it with one, for example '25ms'")
    scale = _DURATION_MS.get(unit.lower()) if unit != "µs" else _DURATION_MS["µs"]
    if scale is None:
        hint = "; write min for minutes or ms for milliseconds" if unit.lower() == "m" else ""
        raise UnitError(f"unknown duration unit {unit!r} in {text!r}; use one of {_allowed(_DURATION_MS)}{hint}")
    return value * scale


def parse_rate_mbps(text: object) -> float:
    """Bit rates: ``"10Gbit"`` -> 10000.0, ``"400G"`` -> 400000.0, ``"100Mbps"`` -> 100.0.

    ``"10mbps"`` (tc's megabytes per second) and ``"10MB/s"`` are refused.
    """
    value, unit = _split(text, "rate", "10Gbit")
    if not unit:
        raise UnitError(f"rate {text!r} has no unit; write it with one, for example '10Gbit'")
    return value * _rate_scale_mbps(text, value, unit)


def _rate_scale_mbps(text: object, value: float, unit: str) -> float:
    bits = _BIT_RATE.fullmatch(unit)
    if bits:
        return _RATE_PREFIX_MBPS[bits.group(1).lower()]
    if _PREFIX_ONLY.fullmatch(unit):
        return _RATE_PREFIX_MBPS[unit.lower()]
    symbol = _B_RATE.fullmatch(unit)
    if symbol:
        prefix, b, suffix = symbol.group(1), symbol.group(2), symbol.group(3) or ""
        if b == "B":
            raise UnitError(
                f"rate {text!r} looks like bytes per second; rates are in bits: "
                f"write {value * 8:g}{prefix}bit instead"
            )
        if suffix == "/s" or (suffix == "ps" and prefix.isupper()):
            return _RATE_PREFIX_MBPS[prefix.lower()]
        if suffix == "ps" and prefix == prefix.lower():
            name = _PREFIX_NAME[prefix]
            raise UnitError(
                f"rate {text!r} is ambiguous: tc reads {unit} as {name}bytes per second; write "
                f"{value:g}{prefix}bit for {value:g} {name}bits per second, or {value * 8:g}{prefix}bit for "
                f"tc's {value:g}{unit}"
            )
    raise UnitError(
        f"unknown rate unit {unit!r} in {text!r}; use bit, kbit, Mbit, Gbit, Tbit (any case), "
        "Kbps, Mbps, Gbps, Tbps, or K, M, G, T"
    )


def parse_size_bytes(text: object) -> int:
    """``"16MiB"`` -> 16777216, ``"64KB"`` -> 64000, ``"1500B"`` -> 1500; ``"32Mb"`` (bits) is refused."""
    value, unit = _split(text, "size", "16MiB")
    if not unit:
        raise UnitError(f"size {text!r} has no unit; write it with one, for example '1500B' or '16MiB'")
    if unit.lower() in _SIZE_WORDS:
        return int(round(value))
    size = _BYTE_SIZE.fullmatch(unit)
    if size:
        prefix, binary = size.group(1).lower(), size.group(2)
        if binary and not prefix:
            raise UnitError(f"unknown size unit {unit!r} in {text!r}; use one of {_SIZE_UNITS_SAID}")
        scale = _SIZE_BINARY_BYTES[prefix] if binary else _SIZE_PREFIX_BYTES[prefix]
        return int(round(value * scale))
    bits = _BIT_SIZE.fullmatch(unit)
    if bits and not (bits.group(2) and not bits.group(1)):
        prefix, binary = bits.group(1).upper(), bits.group(2)
        byte_unit = f"{prefix}{'i' if binary else ''}B" if prefix else "B"
        name = (_BINARY_NAME if binary else _PREFIX_NAME)[prefix.lower()]
        meaning = "" if unit.lower().startswith("bit") else f" ({unit} means {name}bits)"
        raise UnitError(
            f"size {text!r} is in bits{meaning}; sizes are in bytes: write "
            f"{value / 8:g}{byte_unit} for {value:g}{unit}, or {value:g}{byte_unit} if you meant {name}bytes"
        )
    raise UnitError(f"unknown size unit {unit!r} in {text!r}; use one of {_SIZE_UNITS_SAID}")


def parse_queue(text: object) -> tuple[int, str]:
    """A queue limit in bytes (``"6MB"``) or packets (``"1000p"``) -> ``(amount, "bytes"|"packets")``."""
    value, unit = _split(text, "queue size", "6MB")
    if unit.lower() in _PACKETS:
        if value != int(value):
            raise UnitError(f"queue {text!r}: a packet count must be a whole number")
        return int(value), "packets"
    return parse_size_bytes(text), "bytes"


def parse_distance_km(text: object) -> float:
    """``"2411km"`` -> 2411.0."""
    value, unit = _split(text, "distance", "2411km")
    if not unit:
        raise UnitError(f"distance {text!r} has no unit; write it with one, for example '2411km'")
    scale = _DISTANCE_KM.get(unit.lower())
    if scale is None:
        raise UnitError(f"unknown distance unit {unit!r} in {text!r}; use km or m")
    return value * scale


def parse_fraction(text: object) -> float:
    """A probability: ``"1%"`` -> 0.01, ``"1e-5"`` or ``1e-5`` -> 1e-05."""
    if isinstance(text, bool):
        raise UnitError(f"expected a fraction such as '0.1%' or 1e-5, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    elif isinstance(text, str):
        match = _QUANTITY.match(text)
        if not match or match.group(2) not in ("", "%"):
            raise UnitError(f"cannot read {text!r} as a fraction; write it like '0.1%' or 1e-5")
        value = float(match.group(1)) / (100.0 if match.group(2) == "%" else 1.0)
    else:
        raise UnitError(f"expected a fraction such as '0.1%' or 1e-5, got {text!r}")
    if not math.isfinite(value):
        raise UnitError(f"fraction {text!r} is not a finite number")
    if value < 0:
        raise UnitError(f"fraction {text!r} must not be negative; write a value of zero or more")
    return value


def format_rate(rate_mbps: float) -> str:
    """10000.0 -> ``"10Gbit"``; the inverse of :func:`parse_rate_mbps` for display."""
    for scale, unit in ((1e6, "Tbit"), (1e3, "Gbit"), (1.0, "Mbit"), (1e-3, "kbit")):
        if rate_mbps >= scale:
            return f"{rate_mbps / scale:g}{unit}"
    return f"{rate_mbps * 1e6:g}bit"


def format_bytes(size_bytes: float) -> str:
    """12500000 -> ``"12.5MB"`` (decimal units, as link budgets are quoted)."""
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if abs(size_bytes) >= scale:
            return f"{size_bytes / scale:.3g}{unit}"
    return f"{size_bytes:.0f}B"
