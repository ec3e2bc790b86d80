"""The userspace link backend: argv and stats of the delay-line process.

Stage: emulation (pure builders; the emulation layer runs what they return).
Each WAN link is a "wire" namespace with two interfaces; the delay line
(:mod:`corridor.links.delayline`) runs inside it and forwards frames between
them, applying one :class:`~corridor.links.contract.LinkDirection` per
direction. This module builds its argv, the interface preparation commands,
and reads the counters the process publishes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from corridor.errors import EmulationError
from corridor.links.contract import LinkDirection
from corridor.links.engine import PYTHON_MODULE
from corridor.links.engine import resolve as resolve_engine

DELAYLINE_MODULE = PYTHON_MODULE
DIRECTIONS = ("a_to_b", "b_to_a")
#: Per-direction counters every stats file carries.
COUNTER_KEYS = ("packets", "bytes", "drops_queue", "drops_loss", "queue_bytes", "queue_bytes_max")
#: Offloads the delay line wants ON: it moves GSO super-frames (PACKET_VNET_HDR) and lets the kernel
#: finish checksums, so one syscall carries up to 64 KB instead of one 1500-byte packet.
OFFLOADS_ON = ("tso", "gso", "gro", "tx", "rx", "sg")


def direction_json(direction: LinkDirection) -> str:
    """The JSON the delay line reads for one direction (``LinkDirection.as_dict()``)."""
    return json.dumps(direction.as_dict(), sort_keys=True, separators=(",", ":"))


def delayline_argv(
    intf_a: str, intf_b: str, a_to_b: LinkDirection, b_to_a: LinkDirection, *, stats_path: str, seed: int,
    control_path: str | None = None, engine: str | None = None, cpu: int | None = None,
) -> list[str]:
    """argv that runs the delay line between ``intf_a`` and ``intf_b`` inside the wire namespace.

    Frames arriving on ``intf_a`` leave on ``intf_b`` shaped by ``a_to_b``, and the
    other way round. Run it with :func:`corridor.emulation.api.package_env` so the
    child can import ``corridor``. It writes ``stats_path`` once ready (see
    :func:`wait_ready`), every 200 ms, and at exit. With ``control_path`` it
    creates that FIFO before it is ready and takes timed commands from it
    (:func:`command_lines`, :func:`send_commands`). ``engine`` picks the program
    (:func:`corridor.links.engine.resolve`: the compiled one where it is built).
    ``cpu`` pins the process to one CPU (:mod:`corridor.links.steering`).
    """
    if not intf_a or not intf_b or intf_a == intf_b:
        raise EmulationError(f"a delay line needs two different interfaces, got {intf_a!r} and {intf_b!r}")
    return [
        *resolve_engine(engine).argv,
        "--intf-a",
        intf_a,
        "--intf-b",
        intf_b,
        "--a-to-b",
        direction_json(a_to_b),
        "--b-to-a",
        direction_json(b_to_a),
        "--stats",
        stats_path,
        "--seed",
        str(int(seed)),
        *(["--control", control_path] if control_path is not None else []),
        *(["--cpu", str(int(cpu))] if cpu is not None else []),
    ]


def control_path_for(stats_path: str) -> str:
    """Where the delay line whose stats go to ``stats_path`` takes its commands."""
    return stats_path + ".control"


def command_lines(changes: Sequence[tuple[float, dict[str, Any]]], *, first_id: int = 1) -> list[bytes]:
    """JSON control lines, one per (due monotonic time, state) pair, for both directions.

    The delay line applies each at its due time (``{}`` restores the link's own
    parameters; see :func:`corridor.links.delayline.apply_state`).
    """
    out = []
    for offset, (at_s, state) in enumerate(changes):
        line = {"op": "set", "id": first_id + offset, "at_monotonic_s": float(at_s), "direction": "both",
                "state": dict(state)}
        out.append(json.dumps(line, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    return out


RESET_LINE = b'{"op":"reset"}\n'


def send_commands(control_path: str, lines: Sequence[bytes]) -> None:
    """Write control lines to a running delay line's FIFO (each line is one atomic pipe write)."""
    try:
        fd = os.open(control_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise EmulationError(
            f"cannot reach the delay line's control pipe {control_path}: {exc.strerror}; is the process running?"
        ) from exc
    try:
        for line in lines:
            if len(line) > 4096:
                raise EmulationError(f"a delay-line command of {len(line)} bytes is over the 4096-byte limit")
            written = os.write(fd, line)
            if written != len(line):
                raise EmulationError(f"the delay line's control pipe {control_path} took a partial command")
    except BlockingIOError as exc:
        raise EmulationError(f"the delay line's control pipe {control_path} is full; is the process stuck?") from exc
    finally:
        os.close(fd)


def prepare_argv(intf: str) -> list[list[str]]:
    """Commands to run in the wire namespace for ``intf`` before the delay line starts.

    Offloads stay on (the delay line reads and writes GSO super-frames with
    virtio-net headers); GRO on the wire's veth also coalesces small segments
    that arrive without TSO. ethtool fails on a feature a device does not have,
    so each feature is its own command and the caller may ignore failures.
    """
    return [["ethtool", "-K", intf, feature, "on"] for feature in OFFLOADS_ON]


def read_stats(stats_path: str) -> dict[str, Any]:
    """The delay line's counters: ``{"state", "a_to_b": {...}, "b_to_a": {...}, ...}``.

    Readable while the process runs (the file is replaced atomically). Each
    direction carries packets, bytes (IP bytes delivered, segments counted one
    by one), drops_queue, drops_loss, drops_tx, queue_bytes (now),
    queue_bytes_max, queue_delay_ms_max/mean, delay_ms_min/mean/max,
    late_us_mean/p50/p99/max (how late departures left against their schedule;
    ``late_hist_us`` holds the histogram, see :func:`late_percentile_between`) and
    malformed (frames dropped because their headers could not be parsed). The
    top level carries ``pid``, ``state`` and the snapshot's ``time_unix_s`` and
    ``time_monotonic_s``, so a reader can tell stale statistics
    (:mod:`corridor.links.health`).
    """
    try:
        with open(stats_path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError as exc:
        raise EmulationError(f"delay-line stats {stats_path} do not exist yet; is the process running?") from exc
    except (OSError, ValueError) as exc:
        raise EmulationError(f"cannot read delay-line stats {stats_path}: {exc}") from exc
    return parse_stats(data, where=stats_path)


def stats_from_text(text: str, *, where: str) -> dict[str, Any]:
    """:func:`read_stats` for a stats document already read (from a wire on another machine)."""
    if not text.strip():
        raise EmulationError(f"delay-line stats {where} do not exist yet; is the process running?")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EmulationError(f"cannot read delay-line stats {where}: {exc}") from exc
    return parse_stats(data, where=where)


def parse_stats(data: object, *, where: str = "stats") -> dict[str, Any]:
    """Validate a stats document: both directions with integer counters."""
    if not isinstance(data, dict):
        raise EmulationError(f"{where}: delay-line stats must be a JSON object")
    for name in DIRECTIONS:
        direction = data.get(name)
        if not isinstance(direction, dict):
            raise EmulationError(f"{where}: delay-line stats lack direction {name!r}")
        for key in COUNTER_KEYS:
            value = direction.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise EmulationError(f"{where}: {name}.{key} must be a non-negative integer, got {value!r}")
    return data


def late_histogram(direction: dict[str, Any]) -> dict[float, int]:
    """One direction's departure-lateness histogram (upper bin edge in us -> departures) from its stats.

    Empty for stats without one (an older delay line); a malformed one raises EmulationError.
    """
    raw = direction.get("late_hist_us", [])
    hist: dict[float, int] = {}
    if not isinstance(raw, list):
        raise EmulationError(f"late_hist_us must be a list of [us, count] pairs, got {raw!r}")
    for item in raw:
        if (not isinstance(item, list) or len(item) != 2 or isinstance(item[1], bool)
                or not isinstance(item[1], int) or item[1] < 0 or not isinstance(item[0], (int, float))):
            raise EmulationError(f"late_hist_us holds {item!r}, not a [us, count] pair")
        hist[float(item[0])] = hist.get(float(item[0]), 0) + item[1]
    return hist


def late_percentile_between(before: dict[str, Any] | None, after: dict[str, Any], fraction: float) -> float | None:
    """Departure lateness (us, upper bin edge) at ``fraction`` of the departures between two snapshots.

    ``before`` and ``after`` are one direction's stats (``stats["a_to_b"]``) read at the start
    and end of a window; ``before`` None means since the process started. None when no
    departure fell in the window or the stats carry no histogram.
    """
    if not 0 <= fraction <= 1:
        raise EmulationError(f"a percentile fraction lies in [0, 1], got {fraction}")
    end = late_histogram(after)
    start = late_histogram(before) if before is not None else {}
    window = {edge: count - start.get(edge, 0) for edge, count in end.items()}
    if any(count < 0 for count in window.values()):
        raise EmulationError("lateness histogram went backwards between snapshots: was the delay line restarted?")
    total = sum(window.values())
    if total == 0:
        return None
    seen = 0
    for edge in sorted(window):
        seen += window[edge]
        if seen >= fraction * total:
            return edge
    return max(window)


def is_ready(stats_path: str) -> bool:
    """True once the delay line has opened both interfaces (its first stats file exists)."""
    return os.path.exists(stats_path)
