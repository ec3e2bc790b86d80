"""Flent data files from a run's link samples: one file per point and WAN link.

Stage: analysis (pure; reads a :class:`~corridor.results.rundir.RunDir`, never re-runs or
shells out). Flent's data file is gzip-compressed JSON, format version 4, with
``metadata``, ``x_values`` (seconds since the point started), ``results`` (series
name to a list aligned with ``x_values``, ``None`` where there is no value) and
``raw_values`` (series name to ``{"t": unix seconds, "val": value}`` entries;
Flent refuses a file without it).

``flent -i FILE -p PLOT`` takes its plots from the test named in ``metadata.NAME``,
looked up among Flent's own test definitions, so the files claim to be Flent's
``tcp_bidirectional`` test and fill in its three series:

- ``TCP upload``: throughput of the link's a-to-b direction (Mbit/s), from the
  differences of its byte counter;
- ``TCP download``: the same for b to a;
- ``Ping (ms) ICMP``: an estimate of the round trip, not a ping: the planned RTT
  of the link plus the queueing delay of both directions (queue bytes over the
  link rate). It is ``None`` where a queue sample or the plan is missing.

The plots ``totals``, ``ping``, ``ping_smooth`` and ``ping_cdf`` of that test
therefore draw corridor's data. Each file also carries the same figures under
corridor's own names (``a_to_b throughput``, ``a_to_b queue delay``, ...) and
the direction mapping in ``metadata.NOTE``.
"""

from __future__ import annotations

import gzip
import json
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from corridor.errors import RunDirError
from corridor.results.records import LINK_SAMPLE, POINT
from corridor.results.rundir import RunDir

#: The Flent data file format these files follow (Flent 2.x reads it).
FLENT_FORMAT_VERSION = 4
#: The Flent test whose plot definitions fit the series written here.
FLENT_TEST = "tcp_bidirectional"
#: File suffix Flent expects for gzip-compressed data files.
FLENT_SUFFIX = ".flent.gz"

SERIES_UP = "TCP upload"
SERIES_DOWN = "TCP download"
SERIES_PING = "Ping (ms) ICMP"

DIRECTIONS = ("a_to_b", "b_to_a")
_COUNTER_LEAVES = ("bytes", "tx_bytes")
_QUEUE_LEAVES = ("queue_bytes", "backlog_bytes")


@dataclass(frozen=True)
class FlentFile:
    """One Flent data file to write: a file name (no folder) and the JSON document."""

    name: str
    point_id: str
    link: str
    data: dict[str, Any]


def _field(sample: Mapping[str, Any], direction: str, leaves: Sequence[str]) -> float | None:
    for leaf in leaves:
        value = sample.get(f"{direction}.{leaf}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def throughput_mbps(t_s: Sequence[float], counter_bytes: Sequence[float | None]) -> list[float | None]:
    """Mbit/s between each sample and the one before it; ``None`` first, across a gap or a counter reset."""
    out: list[float | None] = [None] * len(t_s)
    for i in range(1, len(t_s)):
        before, now = counter_bytes[i - 1], counter_bytes[i]
        dt_s = t_s[i] - t_s[i - 1]
        if before is None or now is None or now < before or dt_s <= 0:
            continue
        out[i] = (now - before) * 8 / 1e6 / dt_s
    return out


def queue_delay_ms(queue_bytes: Sequence[float | None], rate_mbps: float | None) -> list[float | None]:
    """Time to drain each queue sample at the link rate (ms); ``None`` without a sample or a rate."""
    if rate_mbps is None or rate_mbps <= 0:
        return [None] * len(queue_bytes)
    return [None if q is None else q * 8 / (rate_mbps * 1e3) for q in queue_bytes]


def _link_plan(point: Mapping[str, Any], link: str) -> Mapping[str, Any]:
    plan = point.get("plan")
    links = plan.get("wan_links", []) if isinstance(plan, Mapping) else []
    for entry in links:
        if isinstance(entry, Mapping) and entry.get("name") == link:
            return entry
    return {}


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _flent_time(utc: Any) -> tuple[str, float]:
    """Flent's TIME string and the same instant in unix seconds, from an ISO UTC stamp (epoch when absent)."""
    moment = datetime.fromtimestamp(0, tz=timezone.utc)
    if isinstance(utc, str):
        try:
            moment = datetime.fromisoformat(utc.replace("Z", "+00:00")).astimezone(timezone.utc)
        except ValueError:
            pass
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), moment.timestamp()


def link_flent_data(samples: Sequence[Mapping[str, Any]], *, link: str, point: Mapping[str, Any],
                    title: str) -> dict[str, Any]:
    """The Flent document of one link during one point, from its ``link_sample`` records (time order)."""
    ordered = sorted(samples, key=lambda s: float(s["t_s"]))
    x_values = [float(s["t_s"]) for s in ordered]
    if not x_values:
        raise RunDirError(f"link {link} has no link samples in point {point.get('point_id')}; nothing to export")
    link_plan = _link_plan(point, link)
    rate = _number(link_plan.get("rate_mbps"))
    rtt = _number(link_plan.get("rtt_ms"))
    results: dict[str, list[float | None]] = {}
    delays: dict[str, list[float | None]] = {}
    for direction in DIRECTIONS:
        counters = [_field(s, direction, _COUNTER_LEAVES) for s in ordered]
        queues = [_field(s, direction, _QUEUE_LEAVES) for s in ordered]
        results[f"{direction} throughput"] = throughput_mbps(x_values, counters)
        results[f"{direction} queue"] = queues
        delays[direction] = queue_delay_ms(queues, rate)
        results[f"{direction} queue delay"] = delays[direction]
    ping: list[float | None] = []
    for up, down in zip(delays["a_to_b"], delays["b_to_a"], strict=True):
        ping.append(None if rtt is None or up is None or down is None else rtt + up + down)
    results[SERIES_UP] = results["a_to_b throughput"]
    results[SERIES_DOWN] = results["b_to_a throughput"]
    results[SERIES_PING] = ping

    time_text, t0 = _flent_time(point.get("started_utc"))
    steps = [b - a for a, b in zip(x_values, x_values[1:], strict=False) if b > a]
    step_s = statistics.median(steps) if steps else 0.0
    sites = [str(link_plan.get("a", "a")), str(link_plan.get("b", "b"))]
    metadata: dict[str, Any] = {
        "NAME": FLENT_TEST,
        "TITLE": title,
        "NOTE": (f"corridor link {link}, point {point.get('point_id')}: '{SERIES_UP}' is {sites[0]} to {sites[1]} "
                 f"(a_to_b), '{SERIES_DOWN}' is {sites[1]} to {sites[0]} (b_to_a), both from byte counters; "
                 f"'{SERIES_PING}' is the planned RTT plus both queues' delay, not a ping"),
        "TIME": time_text,
        "T0": time_text,
        "LENGTH": x_values[-1],
        "TOTAL_LENGTH": x_values[-1],
        "STEP_SIZE": step_s,
        "HOST": sites[1],
        "HOSTS": sites,
        "LOCAL_HOST": sites[0],
        "IP_VERSION": 4,
        "DELAY": 0,
        "TEST_PARAMETERS": {"corridor_link": link, "corridor_point_id": str(point.get("point_id")),
                            "rate_mbps": rate, "rtt_ms": rtt},
        "SERIES_META": {SERIES_UP: {"units": "Mbits/s"}, SERIES_DOWN: {"units": "Mbits/s"},
                        SERIES_PING: {"units": "ms"}},
        "FLENT_VERSION": "corridor",
        "DATA_FILENAME": None,
    }
    raw_values = {name: [{"t": t0 + x, "val": v} for x, v in zip(x_values, values, strict=True) if v is not None]
                  for name, values in results.items()}
    return {"version": FLENT_FORMAT_VERSION, "metadata": metadata, "x_values": x_values,
            "results": results, "raw_values": raw_values}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "point"


def flent_files(run: RunDir) -> list[FlentFile]:
    """One Flent data file per (point, WAN link) that recorded link samples, in the run's point order."""
    samples = run.of_kind(LINK_SAMPLE)
    points = {str(r.get("point_id")): r for r in run.of_kind(POINT)}
    order = [str(p.get("point_id")) for p in run.planned_points]
    order += sorted({str(s.get("point_id")) for s in samples} - set(order))
    files: list[FlentFile] = []
    for index, pid in enumerate(order):
        mine = [s for s in samples if str(s.get("point_id")) == pid and isinstance(_number(s.get("t_s")), float)]
        for link in sorted({str(s.get("link")) for s in mine}):
            point = points.get(pid, {"point_id": pid})
            title = f"{point.get('group', '')} @ {point.get('placement', '')} on {link}".strip()
            data = link_flent_data([s for s in mine if str(s.get("link")) == link], link=link, point=point,
                                   title=title)
            name = f"{FLENT_TEST}-{index:03d}-{_safe(pid)}-{_safe(link)}"[:200] + FLENT_SUFFIX
            files.append(FlentFile(name=name, point_id=pid, link=link, data=data))
    return files


def write_flent(data: Mapping[str, Any], path: str) -> None:
    """Write one Flent document gzip-compressed (Flent opens ``*.gz`` with gzip)."""
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, allow_nan=False)
