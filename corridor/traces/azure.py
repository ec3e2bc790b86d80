"""Azure LLM inference trace reader (CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``).

Stage: spec (pure reader). The format of Azure/AzurePublicDataset's
``AzureLLMInferenceTrace_{code,conv}`` (2023) and the 2024 week-long traces:
a header line, then one request per line with a wall-clock timestamp
(``2023-11-16 18:17:03.9799600``; 7 fractional digits and an optional UTC
offset occur), the prompt ("context") token count and the generated token
count. Streamed line by line.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

from corridor.traces import MAX_TOKENS, ReplayWindow, TraceRequest, _short, _Windower, fail, parse_count, text_lines

HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def parse_timestamp(text: str, path: str | Path, line: int) -> float:
    """Seconds since the epoch (naive timestamps read as UTC)."""
    raw = text.strip()
    date_part, dot, rest = raw.partition(".")
    tz = ""
    frac = ""
    if dot:
        # Python's fromisoformat wants at most 6 fractional digits before 3.11 and the trace has 7.
        digits = 0
        while digits < len(rest) and rest[digits].isdigit():
            digits += 1
        frac, tz = rest[:digits], rest[digits:]
        if not frac:
            raise fail(path, line, f"bad timestamp {_short(raw)}")
    try:
        stamp = datetime.datetime.fromisoformat(date_part + tz)
    except ValueError:
        raise fail(path, line, f"bad timestamp {_short(raw)}; expected like '2023-11-16 18:17:03.9799600'") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp() + (float("0." + frac) if frac else 0.0)


def read(path: str | Path, window: ReplayWindow | None = None) -> Iterator[TraceRequest]:
    """Yield the requests of an Azure CSV trace inside ``window``."""
    placer = _Windower(path, window or ReplayWindow())
    lines = text_lines(path)
    _, header = next(lines, (1, ""))
    fields = [h.strip() for h in header.strip().lstrip("\ufeff").split(",")]
    if tuple(fields) != HEADER:
        raise fail(path, 1, f"bad header {_short(header.strip())}; expected {','.join(HEADER)!r}")
    if not header.endswith("\n"):
        raise fail(path, 1, "the header line has no newline: the file was cut short before its first request")
    for number, text in lines:
        if not text.strip():
            continue
        parts = text.rstrip("\r\n").split(",")
        if len(parts) != 3:
            raise fail(path, number, f"expected 3 comma-separated fields, got {len(parts)} (truncated line?)")
        t_abs = parse_timestamp(parts[0], path, number)
        prompt = parse_count(parts[1], path, number, "ContextTokens", MAX_TOKENS)
        output = parse_count(parts[2], path, number, "GeneratedTokens", MAX_TOKENS)
        try:
            t_s = placer.place(t_abs, number)
        except StopIteration:
            return
        if t_s is not None:
            yield TraceRequest(t_s=t_s, prompt_tokens=prompt, output_tokens=output, line=number)
