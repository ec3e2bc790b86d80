"""Quantity parsing and formatting: the one place that reads strings like ``"25ms"``.

Stage: spec (pure). Everything else carries numbers whose unit is in the name
(``delay_ms``, ``rate_mbps``, ``size_bytes``, ``distance_km``). Rates are in bits
per second (``"10Gbit"``, ``"400G"``); a byte rate such as ``"10GB/s"`` is refused
rather than guessed at.
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
}

_RATE_MBPS = {
    "bit": 1e-6,
    "bit/s": 1e-6,
    "bps": 1e-6,
    "b/s": 1e-6,
    "k": 1e-3,
    "kbit": 1e-3,
    "kbit/s": 1e-3,
    "kbps": 1e-3,
    "kb/s": 1e-3,
    "m": 1.0,
    "mbit": 1.0,
    "mbit/s": 1.0,
    "mbps": 1.0,
    "mb/s": 1.0,
    "g": 1e3,
    "gbit": 1e3,
    "gbit/s": 1e3,
    "gbps": 1e3,
    "gb/s": 1e3,
    "t": 1e6,
    "tbit": 1e6,
    "tbit/s": 1e6,
    "tbps": 1e6,
    "tb/s": 1e6,
}

_SIZE_BYTES = {
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

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
        raise UnitError(f"unknown duration unit {unit!r} in {text!r}; use one of {_allowed(_DURATION_MS)}")
    return value * scale


def parse_rate_mbps(text: object) -> float:
    """Bit rates: ``"10Gbit"`` -> 10000.0, ``"400G"`` -> 400000.0, ``"100Mbit"`` -> 100.0."""
    value, unit = _split(text, "rate", "10Gbit")
    if not unit:
        raise UnitError(f"rate {text!r} has no unit; write it with one, for example '10Gbit'")
    if re.fullmatch(r"[kKmMgGtT]?B(/s|ps)?", unit):
        raise UnitError(
            f"rate {text!r} looks like bytes per second; rates are in bits: "
            f"write {value * 8:g}{unit[0] if len(unit) > 1 and unit[0] != 'B' else ''}bit instead"
        )
    scale = _RATE_MBPS.get(unit.lower())
    if scale is None:
        raise UnitError(f"unknown rate unit {unit!r} in {text!r}; use bit, kbit, Mbit, Gbit, Tbit (or K, M, G, T)")
    return value * scale


def parse_size_bytes(text: object) -> int:
    """``"16MiB"`` -> 16777216, ``"64KB"`` -> 64000, ``"1500B"`` -> 1500."""
    value, unit = _split(text, "size", "16MiB")
    if not unit:
        raise UnitError(f"size {text!r} has no unit; write it with one, for example '1500B' or '16MiB'")
    scale = _SIZE_BYTES.get(unit.lower())
    if scale is None:
        raise UnitError(f"unknown size unit {unit!r} in {text!r}; use one of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB")
    return int(round(value * scale))


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
