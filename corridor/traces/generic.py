"""Generic message trace: JSON lines ``{"time_s", "src", "dst", "bytes", "kind"}``.

Stage: spec (pure reader and writer). The one trace shape that training and
inference replays share and that :mod:`corridor.traces.pcap` writes: each
line is one application message of ``bytes`` payload bytes sent from ``src``
to ``dst`` (host names, or ``ip:port`` endpoints when converted from a
capture) at ``time_s`` seconds from the start of the trace. ``kind`` is a free
label (``"request"``, ``"token"``, ``"kv"``, ``"tcp"``...). Lines must be in
time order. Streamed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from corridor.traces import (
    MAX_MESSAGE_BYTES,
    ReplayWindow,
    TraceMessage,
    _Windower,
    fail,
    json_lines,
    parse_count,
    parse_time,
)

REQUIRED = ("time_s", "src", "dst", "bytes", "kind")


def read(path: str | Path, window: ReplayWindow | None = None) -> Iterator[TraceMessage]:
    """Yield the messages of a generic trace inside ``window`` (times re-based to the window)."""
    placer = _Windower(path, window or ReplayWindow())
    for number, obj in json_lines(path, REQUIRED):
        t = parse_time(obj["time_s"], path, number, "seconds")
        size = parse_count(obj["bytes"], path, number, "bytes", MAX_MESSAGE_BYTES)
        for key in ("src", "dst", "kind"):
            if not isinstance(obj[key], str) or not obj[key]:
                raise fail(path, number, f"{key} must be a non-empty string")
        try:
            t_s = placer.place(t, number)
        except StopIteration:
            return
        if t_s is not None:
            yield TraceMessage(time_s=t_s, src=obj["src"], dst=obj["dst"], size_bytes=size, kind=obj["kind"],
                               line=number)


def write(messages: Iterable[TraceMessage], out: IO[str]) -> tuple[int, int]:
    """Write messages as generic JSON lines; returns ``(message_count, byte_total)``."""
    count = 0
    total = 0
    for m in messages:
        out.write(json.dumps(m.to_json(), separators=(",", ":")) + "\n")
        count += 1
        total += m.size_bytes
    return count, total
