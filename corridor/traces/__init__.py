"""Trace readers: public LLM request traces and generic message traces, streamed.

Stage: spec (pure input readers; no root, no network). Every reader is an
iterator over one file: it never loads the whole trace, so a multi-gigabyte
trace costs one line of memory. Malformed input raises
:class:`corridor.errors.TraceError` naming the file and the 1-based line.

Two record shapes come out:

- :class:`TraceRequest` (Azure CSV, Mooncake JSONL): one LLM request, its
  arrival time in seconds from the start of the replay window, prompt and
  output token counts.
- :class:`TraceMessage` (generic JSON lines, also written by
  :mod:`corridor.traces.pcap`): one application message, ``time_s, src, dst,
  bytes, kind``. Training and inference replays both read this shape.

Replay options shared by every reader (:class:`ReplayWindow`): ``start_s`` and
``window_s`` cut a time window (measured from the trace's first record),
``speed`` divides inter-arrival times (2.0 replays twice as fast), ``cap``
stops after that many records. Arrival times out are
``(t_trace - first - start_s) / speed``.

Input is untrusted: lines are read as bytes and decoded one at a time (bad
UTF-8 is an error naming the line), no line may exceed
:data:`MAX_LINE_BYTES`, token counts are bounded by :data:`MAX_TOKENS`,
message sizes by :data:`MAX_MESSAGE_BYTES` and times by :data:`MAX_TIME_S`,
so a hostile trace gives a clear error rather than a traceback or a replay
that sends until its timeout.

``corridor.traces.pcap`` needs scapy and is not imported here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corridor.errors import TraceError

#: Request-trace formats: name -> reader module (``corridor.traces.<name>``).
REQUEST_FORMATS: tuple[str, ...] = ("azure", "mooncake")
#: All formats ``corridor trace info`` understands.
FORMATS: tuple[str, ...] = ("azure", "mooncake", "generic")
#: Longest trace line read (a real line is well under 1 KiB; Mooncake hash_ids lists stay far below this).
MAX_LINE_BYTES = 1 << 20
#: Most prompt or output tokens one request may carry (today's longest contexts are about 1-2 million).
MAX_TOKENS = 10_000_000
#: Largest single message in a generic trace, in bytes (1 TB: more than any transfer a replay could finish).
MAX_MESSAGE_BYTES = 10**12
#: Latest time in a trace, in seconds (epoch timestamps are about 1.7e9; this is about 3,000 years).
MAX_TIME_S = 1e11
#: Longest digit string read as a count (larger ones are over the bounds above anyway).
_MAX_COUNT_DIGITS = 20


@dataclass(frozen=True)
class TraceRequest:
    """One LLM request from a trace; ``t_s`` is the (windowed, sped-up) arrival time."""

    t_s: float
    prompt_tokens: int
    output_tokens: int
    line: int
    hash_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class TraceMessage:
    """One application message: ``size_bytes`` from ``src`` to ``dst`` at ``time_s``."""

    time_s: float
    src: str
    dst: str
    size_bytes: int
    kind: str
    line: int = 0

    def to_json(self) -> dict[str, object]:
        """The generic-trace JSON object for this message (keys as the format defines them)."""
        return {"time_s": round(self.time_s, 9), "src": self.src, "dst": self.dst, "bytes": self.size_bytes,
                "kind": self.kind}


@dataclass(frozen=True)
class ReplayWindow:
    """Which part of a trace to replay and how fast."""

    start_s: float = 0.0
    window_s: float | None = None
    speed: float = 1.0
    cap: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise TraceError(f"replay start must be a non-negative number of seconds, got {self.start_s}")
        if self.window_s is not None and not (math.isfinite(self.window_s) and self.window_s > 0):
            raise TraceError(f"replay window must be a positive number of seconds, got {self.window_s}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise TraceError(f"replay speed must be a positive factor, got {self.speed}")
        if self.cap is not None and self.cap < 0:
            raise TraceError(f"replay cap must not be negative, got {self.cap}")


class _Windower:
    """Applies a :class:`ReplayWindow` to a stream of absolute times; checks ordering."""

    def __init__(self, path: str | Path, window: ReplayWindow) -> None:
        self.path = str(path)
        self.window = window
        self.first: float | None = None
        self.last: float | None = None
        self.emitted = 0

    def place(self, t_abs: float, line: int) -> float | None:
        """Replay time of a record at absolute time ``t_abs``; None to skip; StopIteration past the end."""
        if self.last is not None and t_abs < self.last:
            raise TraceError(f"{self.path}:{line}: timestamp goes backwards ({t_abs:.6f} < {self.last:.6f}); "
                             "traces must be sorted by time")
        self.last = t_abs
        if self.first is None:
            self.first = t_abs
        rel = t_abs - self.first
        w = self.window
        if rel < w.start_s:
            return None
        if w.window_s is not None and rel >= w.start_s + w.window_s:
            raise StopIteration
        if w.cap is not None and self.emitted >= w.cap:
            raise StopIteration
        self.emitted += 1
        return (rel - w.start_s) / w.speed


def fail(path: str | Path, line: int, message: str) -> TraceError:
    """A TraceError that names the file and line."""
    return TraceError(f"{path}:{line}: {message}")


def parse_count(text: Any, path: str | Path, line: int, what: str, limit: int | None = None) -> int:
    """A non-negative whole token/byte count from a trace field, at most ``limit``."""
    shown = _short(text)
    if isinstance(text, str) and len(text.strip()) > _MAX_COUNT_DIGITS:
        raise fail(path, line, f"{what} has {len(text.strip())} characters; "
                   f"{_bound(what, limit)}")
    try:
        value = int(text.strip()) if isinstance(text, str) else text
    except ValueError:
        raise fail(path, line, f"{what} {shown} is not a whole number") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(path, line, f"{what} {shown} is not a whole number")
    if value < 0:
        raise fail(path, line, f"{what} {shown} is negative")
    if limit is not None and value > limit:
        raise fail(path, line, f"{what} {shown} is too large; {_bound(what, limit)}")
    return value


def parse_time(value: Any, path: str | Path, line: int, unit: str, scale: float = 1.0) -> float:
    """A non-negative finite time from a JSON field, in seconds (``value * scale``), at most :data:`MAX_TIME_S`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(path, line, f"bad timestamp {_short(value)}; expected non-negative {unit}")
    if isinstance(value, int) and value > MAX_TIME_S / scale:  # before float(): a huge int cannot convert
        raise fail(path, line, f"bad timestamp {_short(value)}; expected at most {MAX_TIME_S / scale:g} {unit}")
    seconds = float(value) * scale
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_TIME_S:
        raise fail(path, line, f"bad timestamp {_short(value)}; expected non-negative {unit}, "
                   f"at most {MAX_TIME_S / scale:g}")
    return seconds


def _bound(what: str, limit: int | None) -> str:
    if limit is None:
        return f"{what} must be a whole number of at most {_MAX_COUNT_DIGITS} digits"
    return f"{what} must be at most {limit:,} (a trace this large is corrupt)"


def _short(value: Any) -> str:
    """``repr(value)`` cut to 40 characters, so an error never echoes a hostile field in full."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<a {value.bit_length()}-bit integer>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(1-based line number, line)`` of a text trace, newline kept, read as bytes and decoded line by line.

    A line that is not UTF-8, or longer than :data:`MAX_LINE_BYTES`, is a
    TraceError naming the file and line.
    """
    try:
        handle = Path(path).open("rb")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read trace: {exc.strerror or exc}") from None
    with handle:
        number = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise fail(path, number, f"line is longer than {MAX_LINE_BYTES // 1024} KiB; "
                           "this is not a trace (or it has lost its line breaks)")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise fail(path, number, f"not UTF-8 text (byte {exc.start + 1} of the line: {exc.reason})"
                           ) from None
            yield number, text


def detect_format(path: str | Path) -> str:
    """Guess a trace's format from its first line: ``azure``, ``mooncake``, ``generic`` or ``pcap``."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read trace: {exc.strerror or exc}") from None
    if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
                    b"\x0a\x0d\x0d\x0a"):
        return "pcap"
    first = head.split(b"\n", 1)[0].strip()
    if first.upper().startswith(b"TIMESTAMP"):
        return "azure"
    if first.startswith(b"{"):
        if b'"input_length"' in first:
            return "mooncake"
        if b'"time_s"' in first:
            return "generic"
    raise TraceError(f"{path}:1: cannot tell the trace format from the first line; expected an Azure CSV header "
                     "(TIMESTAMP,ContextTokens,GeneratedTokens), a Mooncake JSON line or a generic message line")


def read_requests(path: str | Path, fmt: str | None = None, window: ReplayWindow | None = None
                  ) -> Iterator[TraceRequest]:
    """Stream the requests of an Azure or Mooncake trace (format detected when ``fmt`` is None)."""
    fmt = fmt or detect_format(path)
    window = window or ReplayWindow()
    if fmt == "azure":
        from corridor.traces import azure

        return azure.read(path, window)
    if fmt == "mooncake":
        from corridor.traces import mooncake

        return mooncake.read(path, window)
    raise TraceError(f"{path}: format {fmt!r} is not a request trace; use one of {', '.join(REQUEST_FORMATS)}")


def json_lines(path: str | Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines trace holding ``required`` keys.

    Streamed line by line; a line that is not a JSON object, or lacks a key, is a TraceError naming
    the file and line. Shared by every JSON-lines reader (Mooncake, generic message traces).
    """
    for number, text in text_lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise fail(path, number, f"not a JSON object ({exc.msg}; truncated line?)") from None
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            raise fail(path, number, f"not a usable JSON object ({_short(str(exc))})") from None
        except RecursionError:
            raise fail(path, number, "not a JSON object (nested too deeply)") from None
        if not isinstance(obj, dict):
            raise fail(path, number, "not a JSON object")
        missing = [k for k in required if k not in obj]
        if missing:
            raise fail(path, number, f"missing key(s) {', '.join(missing)}")
        yield number, obj
