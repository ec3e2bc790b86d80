"""Mooncake trace reader (JSON lines ``{"timestamp": ms, "input_length", "output_length", "hash_ids"}``).

Stage: spec (pure reader). The format of kvcache-ai/Mooncake's released
traces: one JSON object per line, ``timestamp`` in milliseconds from the start
of the trace, token counts, and ``hash_ids`` naming the prompt's KV blocks
(prefix-cache reuse; carried through, not interpreted here). Streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corridor.traces import MAX_TOKENS, ReplayWindow, TraceRequest, _Windower, fail, json_lines, parse_count, parse_time

REQUIRED = ("timestamp", "input_length", "output_length")


def _timestamp_s(obj: dict[str, Any], path: str | Path, line: int) -> float:
    return parse_time(obj["timestamp"], path, line, "milliseconds", scale=1e-3)


def read(path: str | Path, window: ReplayWindow | None = None) -> Iterator[TraceRequest]:
    """Yield the requests of a Mooncake JSONL trace inside ``window``."""
    placer = _Windower(path, window or ReplayWindow())
    for number, obj in json_lines(path, REQUIRED):
        t_abs = _timestamp_s(obj, path, number)
        prompt = parse_count(obj["input_length"], path, number, "input_length", MAX_TOKENS)
        output = parse_count(obj["output_length"], path, number, "output_length", MAX_TOKENS)
        hashes = obj.get("hash_ids", [])
        if not isinstance(hashes, list) or not all(isinstance(h, int) and not isinstance(h, bool)
                                                   for h in hashes):
            raise fail(path, number, "hash_ids must be a list of integers")
        try:
            t_s = placer.place(t_abs, number)
        except StopIteration:
            return
        if t_s is not None:
            yield TraceRequest(t_s=t_s, prompt_tokens=prompt, output_tokens=output, line=number,
                               hash_ids=tuple(hashes))

