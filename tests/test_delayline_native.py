"""The compiled delay line against the Python one: the same timing, the same parser, the same stats (no root).

The native program (``corridor/links/native/delayline.c``, built by scripts/setup.sh)
has two modes without sockets for this: ``--shaper-trace`` runs arrival lines through
one direction's shaper and prints each segment's departure, and ``--fuzz-frames``
feeds length-prefixed frames through the per-frame path and prints its counters.
Without loss or jitter the two engines must agree to the nanosecond; with loss, on
the rates and burst lengths the configuration implies.
"""

from __future__ import annotations

import json
import math
import random
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_delayline_fuzz import FRAMES, SEED, cases, parse

from corridor.links import delayline as dl
from corridor.links import engine

BINARY, WHY_NOT = engine.native_binary()
pytestmark = pytest.mark.skipif(BINARY is None, reason=f"{WHY_NOT}; {engine.BUILD_HINT}")


def _native(args: list[str], stdin: bytes, timeout_s: float = 120.0) -> str:
    assert BINARY is not None
    result = subprocess.run([str(BINARY), *args], input=stdin, capture_output=True, timeout=timeout_s, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode()


def _direction(**overrides: Any) -> dict[str, Any]:
    base = {"rate_mbps": 1000.0, "delay_ms": 5.0, "queue_bytes": 300_000, "jitter_ms": 0.0, "loss": 0.0,
            "queue_packets": None, "reorder": False, "burst_loss": None}
    return {**base, **overrides}


def _arrivals(rng: random.Random, count: int, mean_gap_s: float) -> list[tuple[float, list[int]]]:
    """Frames as the kernel hands them over: ACK-sized singles, full segments, and GSO super-frames."""
    out = []
    now = 100.0
    for _ in range(count):
        now += rng.expovariate(1 / mean_gap_s)
        kind = rng.random()
        if kind < 0.3:
            sizes = [rng.randrange(40, 120)]
        elif kind < 0.5:
            sizes = [1500]
        else:
            full = rng.randrange(1, 45)
            sizes = [1500] * full + ([rng.randrange(60, 1500)] if rng.random() < 0.5 else [])
        out.append((now, sizes))
    return out


def _trace_lines(arrivals: list[tuple[float, list[int]]]) -> bytes:
    return "".join(f"{t!r} {','.join(map(str, sizes))}\n" for t, sizes in arrivals).encode()


def _python_departures(config: dict[str, Any], arrivals: list[tuple[float, list[int]]]) -> list[list[float]]:
    shaper = dl.Shaper(dl.DirectionConfig.from_dict(config), random.Random(1))
    return [shaper.release_times(t, sizes) for t, sizes in arrivals]


def _native_departures(config: dict[str, Any], arrivals: list[tuple[float, list[int]]]) -> list[list[float]]:
    out = _native(["--shaper-trace", "--a-to-b", json.dumps(config)], _trace_lines(arrivals))
    rows = []
    for line in out.splitlines():
        rows.append([math.nan if word == "drop" else float(word) for word in line.split()])
    return rows


@pytest.mark.parametrize(("name", "config", "gap_s"), [
    ("uncongested", _direction(), 2e-3),
    ("a standing queue with drop-tail", _direction(rate_mbps=200.0, queue_bytes=150_000), 1e-3),
    ("a packet-count limit", _direction(rate_mbps=200.0, queue_bytes=10**9, queue_packets=40), 1e-3),
    ("a slow link with a small queue", _direction(rate_mbps=20.0, queue_bytes=60_000), 4e-3),
])
def test_departures_match_the_python_shaper_to_the_nanosecond(name: str, config: dict[str, Any],
                                                              gap_s: float) -> None:
    arrivals = _arrivals(random.Random(hash(name) & 0xFFFF), 4000, gap_s)
    want = _python_departures(config, arrivals)
    got = _native_departures(config, arrivals)
    assert len(got) == len(want)
    drops = 0
    for index, (w, g) in enumerate(zip(want, got, strict=True)):
        assert len(g) == len(w), f"frame {index}: {len(w)} segments in Python, {len(g)} natively"
        for seg, (a, b) in enumerate(zip(w, g, strict=True)):
            if math.isnan(a):
                drops += 1
                assert math.isnan(b), f"frame {index} segment {seg}: Python dropped it, native sent it at {b}"
            else:
                assert b == pytest.approx(a, abs=2e-9), f"frame {index} segment {seg} ({name})"
    if "drop" in name or "limit" in name:
        assert drops > 100  # the queue really overflowed, so drop-tail was compared too


def test_random_loss_is_drawn_at_the_configured_rate() -> None:
    rate = 0.02
    count = 200_000
    arrivals = [(1.0 + i * 1e-4, [100]) for i in range(count)]
    got = _native_departures(_direction(loss=rate, queue_bytes=10**9), arrivals)
    lost = sum(math.isnan(row[0]) for row in got)
    sigma = math.sqrt(count * rate * (1 - rate))
    assert abs(lost - count * rate) < 5 * sigma, f"{lost} lost of {count}"


def test_gilbert_elliott_bursts_have_the_configured_length_and_rate() -> None:
    p_gb, p_bg = 0.01, 0.25
    config = _direction(queue_bytes=10**9, burst_loss={"p_good_to_bad": p_gb, "p_bad_to_good": p_bg,
                                                       "loss_good": 0.0, "loss_bad": 1.0})
    count = 200_000
    got = _native_departures(config, [(1.0 + i * 1e-4, [100]) for i in range(count)])
    lost = [math.isnan(row[0]) for row in got]
    bursts = [length for length in _runs(lost) if length]
    # stationary share of the bad state, and its mean stay (1 / p_bg) segments
    assert sum(lost) / count == pytest.approx(p_gb / (p_gb + p_bg), rel=0.1)
    assert sum(bursts) / len(bursts) == pytest.approx(1 / p_bg, rel=0.1)


def _runs(flags: list[bool]) -> list[int]:
    runs, current = [], 0
    for flag in flags:
        if flag:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs + ([current] if current else [])


def test_100000_fuzzed_frames_are_parsed_exactly_as_python_parses_them(tmp_path: Path) -> None:
    stream = bytearray()
    expected_malformed = 0
    for _name, vnet, data, _expected in cases(FRAMES, SEED):
        expected_malformed += parse(vnet, data) is None
        frame = dl.VNET_HDR.pack(*vnet) + data
        stream += struct.pack("<I", len(frame)) + frame
    config = _direction(rate_mbps=1000.0, delay_ms=10.0, queue_bytes=4_000_000, loss=0.05)
    out = _native(["--fuzz-frames", "--a-to-b", json.dumps(config)], bytes(stream))
    counts = json.loads(out.strip().splitlines()[-1])
    assert counts["frames"] == FRAMES
    assert counts["malformed"] == expected_malformed
    assert counts["enqueued_frames"] > FRAMES * 0.2
    assert counts["drops_loss"] > 0


def test_a_truncated_or_absurd_stream_ends_cleanly() -> None:
    config = json.dumps(_direction())
    # a length prefix promising more than follows, then one claiming 4 GB
    for stream in (struct.pack("<I", 500) + b"\x00" * 20, struct.pack("<I", 0xFFFFFFFF)):
        result = subprocess.run([str(BINARY), "--fuzz-frames", "--a-to-b", config], input=stream,
                                capture_output=True, timeout=30, check=False)
        assert result.returncode in (0, 2), result.stderr
        assert b"Sanitizer" not in result.stderr and b"Segmentation" not in result.stderr


@pytest.mark.parametrize("bad", [
    ["--a-to-b", "{not json", "--shaper-trace"],
    ["--a-to-b", json.dumps({"delay_ms": 5, "queue_bytes": 1000}), "--shaper-trace"],
    ["--intf-a", "x"],
    ["--no-such-option"],
    ["--cpu", "-1", "--shaper-trace"],
    ["--cpu", "two", "--shaper-trace"],
])
def test_bad_arguments_exit_2_with_a_message(bad: list[str]) -> None:
    result = subprocess.run([str(BINARY), *bad], input=b"", capture_output=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.strip(), "an error must say what is wrong"
    if "--cpu" in bad:
        assert b"argument --cpu: invalid CPU number" in result.stderr
