"""Faults on the corridor: a timed schedule of link events, and what each did to the workloads.

Stage: spec (pure) for the schedule; analysis (pure, reads a run directory) for
:func:`fault_impacts`. Real corridors fail: fibres are cut, optical protection
moves traffic onto a longer path after about 50 ms, wavelengths degrade, loss
comes in bursts. An experiment's ``faults:`` key lists such events::

    faults:
      - {at: 5s, event: protection-switch, duration: 50ms, delay: 30ms}
      - {link: urumqi-shanghai, at: 10s, event: cut, duration: 2s}

Each event hits one WAN link (``link``) or, without it, every WAN link of the
point's plan, ``at`` after the point starts. Kinds:

- ``cut``: the link carries nothing for ``duration``.
- ``protection-switch``: the link carries nothing for ``duration`` (the switch,
  50 ms when not given), then runs on the protection path: one-way ``delay``
  (or the link's own plus ``extra_delay``) for ``hold`` (default: to the end
  of the point).
- ``delay``: one-way delay ``delay`` (or own plus ``extra_delay``) for ``duration``.
- ``rate``: rate ``rate`` for ``duration`` (a lost wavelength).
- ``loss``: random loss ``loss`` for ``duration`` (a burst).

:func:`link_changes` compiles the events into per-link steps (the state a
link holds from a moment on, relative to its own parameters), which the
emulation applies in place on either backend. Events on one link must not
overlap. :func:`fault_impacts` reads a finished run and puts each applied
event's measured stall next to the analytic model's
(:mod:`corridor.analytic.faults`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from corridor import stats
from corridor.errors import SpecError
from corridor.spec.units import parse_duration_ms, parse_fraction, parse_rate_mbps
from corridor.spec.validate import check_keys, check_quantity

CUT = "cut"
PROTECTION_SWITCH = "protection-switch"
DELAY = "delay"
RATE = "rate"
LOSS = "loss"
EVENT_KINDS = (CUT, PROTECTION_SWITCH, DELAY, RATE, LOSS)
#: Optical protection switching restores traffic in about this long (DESIGN.md, "Corridor faults").
PROTECTION_OUTAGE_S = 0.050
#: Longest a schedule may reach into a point: a day, like a workload's own time limit.
MAX_AT_S = 24 * 3600.0
MAX_DELAY_MS = 10_000.0

_KEYS = {"link", "at", "event", "duration", "delay", "extra_delay", "rate", "loss", "hold", "description"}
#: Keys each kind takes besides link, at, event, description (``duration`` is required unless said otherwise).
_KIND_KEYS = {
    CUT: {"duration"},
    PROTECTION_SWITCH: {"duration", "delay", "extra_delay", "hold"},
    DELAY: {"duration", "delay", "extra_delay"},
    RATE: {"duration", "rate"},
    LOSS: {"duration", "loss"},
}


@dataclass(frozen=True)
class FaultEvent:
    """One timed event on one WAN link (``link`` None: every WAN link of the plan)."""

    event: str
    at_s: float
    duration_s: float
    link: str | None = None
    delay_ms: float | None = None  # one-way delay of the longer path (delay, protection-switch)
    extra_delay_ms: float | None = None  # ... or the link's own delay plus this
    rate_mbps: float | None = None
    loss: float | None = None
    hold_s: float | None = None  # protection-switch: time on the longer path; None: to the end of the point
    description: str = ""

    @property
    def end_s(self) -> float:
        """When the link is back to its own parameters (inf: at the end of the point)."""
        if self.event == PROTECTION_SWITCH:
            return math.inf if self.hold_s is None else self.at_s + self.duration_s + self.hold_s
        return self.at_s + self.duration_s

    @property
    def outage_s(self) -> float:
        """How long the link carries nothing (0 for events that only degrade it)."""
        return self.duration_s if self.event in (CUT, PROTECTION_SWITCH) else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LinkChange:
    """From ``at_s`` after the schedule's start, ``link`` holds this state (None: its own value)."""

    at_s: float
    link: str
    event_index: int
    step: str  # "start", "reroute" (protection path after the outage) or "end"
    down: bool = False
    delay_ms: float | None = None
    extra_delay_ms: float | None = None
    rate_mbps: float | None = None
    loss: float | None = None

    def state(self) -> dict[str, Any]:
        """The overrides the backends take: only the keys that differ from the link's own parameters."""
        out: dict[str, Any] = {}
        if self.down:
            out["down"] = True
        for key in ("delay_ms", "extra_delay_ms", "rate_mbps", "loss"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


# -- parsing ---------------------------------------------------------------------


def parse_faults(value: Any, *, path: str, key: str = "faults") -> tuple[FaultEvent, ...]:
    """Validate a ``faults:`` list; errors name ``path`` and the key (``faults[2].duration``)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError("must be a list of link events (each with at, event and duration)", path=path, key=key)
    events = [_event(item, path=path, key=f"{key}[{i}]") for i, item in enumerate(value)]
    _check_overlaps(events, path=path, key=key)
    return tuple(events)


def _event(item: Any, *, path: str, key: str) -> FaultEvent:
    if not isinstance(item, Mapping):
        raise SpecError("must be a mapping with at, event and duration", path=path, key=key)
    check_keys(item, _KEYS, path=path, where=key)
    kind = item.get("event")
    if kind not in EVENT_KINDS:
        raise SpecError(f"must be one of {', '.join(EVENT_KINDS)}, got {kind!r}", path=path, key=f"{key}.event")
    allowed = _KIND_KEYS[kind] | {"link", "at", "event", "description"}
    for name in item:
        if name not in allowed:
            raise SpecError(f"a {kind} event does not take {name!r}; it takes: {', '.join(sorted(allowed))}",
                            path=path, key=f"{key}.{name}")
    link = item.get("link")
    if link is not None and (not isinstance(link, str) or not link):
        raise SpecError(f"must be the name of a WAN link, got {link!r}", path=path, key=f"{key}.link")
    description = item.get("description", "")
    if not isinstance(description, str):
        raise SpecError("must be a string", path=path, key=f"{key}.description")
    if "at" not in item:
        raise SpecError("is required (when the event starts, after the point starts, e.g. 5s)", path=path,
                        key=f"{key}.at")
    at_s = _seconds(item["at"], path, f"{key}.at", 0.0, MAX_AT_S)
    if kind == PROTECTION_SWITCH:
        duration_s = _seconds(item.get("duration", f"{PROTECTION_OUTAGE_S * 1e3:g}ms"), path, f"{key}.duration",
                              0.0, MAX_AT_S)
    else:
        if "duration" not in item:
            raise SpecError(f"is required (how long the {kind} lasts, e.g. 2s)", path=path, key=f"{key}.duration")
        duration_s = _seconds(item["duration"], path, f"{key}.duration", 1e-6, MAX_AT_S)
    delay_ms = extra_ms = rate = loss = hold_s = None
    if kind in (PROTECTION_SWITCH, DELAY):
        if ("delay" in item) == ("extra_delay" in item):
            raise SpecError("give exactly one of delay (the longer path's one-way delay, e.g. 30ms) or "
                            "extra_delay (added to the link's own, e.g. 5ms)", path=path, key=key)
        if "delay" in item:
            delay_ms = _unit(parse_duration_ms, item["delay"], path, f"{key}.delay", 0.0, MAX_DELAY_MS)
        else:
            extra_ms = _unit(parse_duration_ms, item["extra_delay"], path, f"{key}.extra_delay", 0.0, MAX_DELAY_MS)
    if kind == PROTECTION_SWITCH and "hold" in item:
        hold_s = _seconds(item["hold"], path, f"{key}.hold", 1e-6, MAX_AT_S)
    if kind == RATE:
        if "rate" not in item:
            raise SpecError("is required (the degraded rate, e.g. 400Mbit)", path=path, key=f"{key}.rate")
        rate = _unit(parse_rate_mbps, item["rate"], path, f"{key}.rate", 0.001, 1e9)
        if rate <= 0:
            raise SpecError("must be above zero (a link that carries nothing is a cut)", path=path,
                            key=f"{key}.rate")
    if kind == LOSS:
        if "loss" not in item:
            raise SpecError("is required (the loss during the burst, e.g. 5%)", path=path, key=f"{key}.loss")
        loss = _unit(parse_fraction, item["loss"], path, f"{key}.loss", 0.0, 0.999)
    return FaultEvent(event=str(kind), at_s=at_s, duration_s=duration_s, link=link, delay_ms=delay_ms,
                      extra_delay_ms=extra_ms, rate_mbps=rate, loss=loss, hold_s=hold_s, description=description)


def _check_overlaps(events: Sequence[FaultEvent], *, path: str, key: str) -> None:
    for j, later in enumerate(events):
        for i, earlier in enumerate(events[:j]):
            shared = earlier.link is None or later.link is None or earlier.link == later.link
            if shared and later.at_s < earlier.end_s and earlier.at_s < later.end_s:
                hint = (" (a protection switch without hold stays on the longer path to the end of the point; "
                        "give it a hold)" if math.isinf(earlier.end_s) or math.isinf(later.end_s) else "")
                raise SpecError(f"overlaps {key}[{i}] on the same link; events on one link must follow each "
                                f"other{hint}", path=path, key=f"{key}[{j}]")


def _unit(parse: Any, value: Any, path: str, key: str, low: float, high: float) -> float:
    return check_quantity(parse, value, path=path, key=key, low=low, high=high)


def _seconds(value: Any, path: str, key: str, low_s: float, high_s: float) -> float:
    seconds = _unit(parse_duration_ms, value, path, key, 0.0, math.inf) / 1e3
    if not low_s <= seconds <= high_s:
        raise SpecError(f"must be from {low_s:g}s to {high_s:g}s, got {value!r}", path=path, key=key)
    return seconds


# -- compiling ---------------------------------------------------------------------


def link_changes(events: Sequence[FaultEvent], links: Sequence[str], *, time_scale: float = 1.0,
                 where: str = "faults") -> dict[str, list[LinkChange]]:
    """Per WAN link, the time-ordered steps the events make (times, delays and rates time-scaled by ``k``).

    Time scaling follows the emulation's (:func:`corridor.emulation.topo.scale_plan`): times and
    delays x k, rates / k. An event that names a link the plan lacks raises :class:`SpecError`.
    """
    k = float(time_scale)
    out: dict[str, list[LinkChange]] = {name: [] for name in links}
    for index, ev in enumerate(events):
        if ev.link is not None and ev.link not in out:
            raise SpecError(f"no WAN link {ev.link!r} in this plan; its WAN links: {', '.join(links) or 'none'}",
                            key=f"{where}[{index}].link")
        targets = [ev.link] if ev.link is not None else list(links)
        for link in targets:
            steps = out[link]
            delay_ms = None if ev.delay_ms is None else ev.delay_ms * k
            extra_ms = None if ev.extra_delay_ms is None else ev.extra_delay_ms * k

            def step(at_s: float, name: str, *, link: str = link, index: int = index, **state: Any) -> LinkChange:
                return LinkChange(at_s=at_s * k, link=link, event_index=index, step=name, **state)

            if ev.event == CUT:
                steps.append(step(ev.at_s, "start", down=True))
            elif ev.event == PROTECTION_SWITCH:
                if ev.duration_s > 0:
                    steps.append(step(ev.at_s, "start", down=True))
                steps.append(step(ev.at_s + ev.duration_s, "reroute", delay_ms=delay_ms, extra_delay_ms=extra_ms))
            elif ev.event == DELAY:
                steps.append(step(ev.at_s, "start", delay_ms=delay_ms, extra_delay_ms=extra_ms))
            elif ev.event == RATE:
                assert ev.rate_mbps is not None
                steps.append(step(ev.at_s, "start", rate_mbps=ev.rate_mbps / k))
            else:
                steps.append(step(ev.at_s, "start", loss=ev.loss))
            if math.isfinite(ev.end_s):
                steps.append(step(ev.end_s, "end"))
    for steps in out.values():
        steps.sort(key=lambda c: (c.at_s, c.event_index))
    return out


# -- records -------------------------------------------------------------------------


def fault_records(events: Sequence[FaultEvent], changes: Mapping[str, Sequence[LinkChange]],
                  t0_monotonic_s: float, applied: Mapping[str, Sequence[Mapping[str, Any]]],
                  base: Mapping[str, Mapping[str, float]], *, time_scale: float = 1.0) -> list[dict[str, Any]]:
    """One ``fault`` record per event per link: when each step was due and when the link applied it.

    ``applied`` maps a link to what its backend reported per step, in the order
    of ``changes[link]`` (``applied_monotonic_s``, or ``error``); ``base`` maps a
    link to its own ``delay_ms`` and ``rate_mbps`` (one way, as emulated).
    """
    out: list[dict[str, Any]] = []
    for link, steps in changes.items():
        reports = list(applied.get(link, ()))
        per_event: dict[int, list[dict[str, Any]]] = {}
        for i, change in enumerate(steps):
            got = reports[i] if i < len(reports) else {}
            due = t0_monotonic_s + change.at_s
            done = got.get("applied_monotonic_s")
            per_event.setdefault(change.event_index, []).append({
                "step": change.step, "state": change.state(), "due_monotonic_s": due,
                "applied_monotonic_s": done,
                "late_ms": None if done is None else round((float(done) - due) * 1e3, 3),
                **({"error": got["error"]} if got.get("error") else {}),
            })
        for index, applied_steps in sorted(per_event.items()):
            ev = events[index]
            first = applied_steps[0]
            lates = [s["late_ms"] for s in applied_steps if s["late_ms"] is not None]
            errors = [s["error"] for s in applied_steps if s.get("error")]
            start = first["applied_monotonic_s"] if first["applied_monotonic_s"] is not None else \
                first["due_monotonic_s"]
            out.append({
                "kind": "fault", "event": ev.event, "link": link, "fault_index": index,
                "at_s": ev.at_s, "duration_s": ev.duration_s, "outage_s": ev.outage_s,
                "delay_ms": ev.delay_ms, "extra_delay_ms": ev.extra_delay_ms, "rate_mbps": ev.rate_mbps,
                "loss": ev.loss, "hold_s": ev.hold_s,
                "t_monotonic_s": start, "t_point_s": round(start - t0_monotonic_s, 6),
                "late_ms_max": max(lates) if lates else None,
                "base_delay_ms": dict(base.get(link, {})).get("delay_ms"),
                "base_rate_mbps": dict(base.get(link, {})).get("rate_mbps"),
                "time_scale": time_scale, "steps": applied_steps,
                **({"error": "; ".join(errors)} if errors else {}),
            })
    return out


# -- impacts (analysis) -----------------------------------------------------------------


def fault_impacts(run: Any) -> list[dict[str, Any]]:
    """Per applied fault and workload of its point: the measured stall beside the model's.

    ``run`` is a run directory path or a :class:`corridor.results.rundir.RunDir`. Training:
    the steps whose time span holds the event start (max over ranks per step),
    measured stall = that step's time minus the median step of the point. Chat and
    other request workloads: the requests in flight at the event or sent while the
    link was down, measured stall = the longest of their TTFTs minus the median
    TTFT of the others (needs request records that carry an absolute send time,
    ``t_send_monotonic_s``; without it the row says so). Each row also
    carries the model's stall on the same statistic:

    - training: :func:`corridor.analytic.faults.predict_fault` for a
      window-limited flow when the point's predicted WAN traffic keeps the link at
      least half busy, otherwise :func:`corridor.analytic.faults.idle_sender_stall`
      (the step's exchanges wait on each other, so the send the outage catches is
      a new one on an idle connection; ``model_sender`` says which);
    - requests: each touched request's TTFT under the model (its own send time,
      keep-alive or new connection, or its first token's send time for one
      already at the server, plus its wait for prefill behind the others held
      back), and the longest of them minus the same median;
      ``model_flow_stall_s`` keeps the window-limited figure beside it.
    """
    from corridor.analytic.faults import CUT_EVENTS, predict_fault

    if isinstance(run, str):
        from corridor.results.rundir import read_run

        run = read_run(run)
    records: Sequence[Mapping[str, Any]] = run.records
    by_point: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("point_id") is not None:
            by_point.setdefault(str(r["point_id"]), []).append(r)
    rows: list[dict[str, Any]] = []
    for fault in (r for r in records if r.get("kind") == "fault"):
        pid = str(fault.get("point_id"))
        point_records = by_point.get(pid, [])
        k = float(fault.get("time_scale") or 1.0)
        t_event_raw = float(fault["t_monotonic_s"])  # the machine's monotonic clock, unscaled
        t_event = t_event_raw / k  # train_step t_start_s is scaled
        rtt_ms = 2.0 * float(fault.get("base_delay_ms") or 0.0) / k
        model = predict_fault(fault["event"], outage_s=float(fault.get("outage_s") or 0.0) / k, rtt_ms=rtt_ms,
                              new_rtt_ms=_new_rtt_ms(fault, k))
        workloads = sorted({str(r.get("workload")) for r in point_records
                            if r.get("kind") in ("train_step", "request") and r.get("workload")})
        predictions = {str(r.get("workload")): r for r in point_records if r.get("kind") == "prediction"}
        drops = _link_drops(fault, [r for r in point_records if r.get("kind") == "link_sample"],
                            [r for r in point_records if r.get("kind") == "fault" and r is not fault])
        for workload in workloads:
            row: dict[str, Any] = {"point_id": pid, "placement": fault.get("placement"), "workload": workload,
                                   "event": fault["event"], "link": fault.get("link"),
                                   "fault_index": fault.get("fault_index"), "at_s": fault.get("at_s"),
                                   "outage_s": fault.get("outage_s"), "late_ms_max": fault.get("late_ms_max"),
                                   "model_stall_s": model.stall_s, "model_via": model.via,
                                   "model_flow_stall_s": model.stall_s, "model_sender": "bulk",
                                   "model_extra_rtt_s": model.extra_rtt_s, "delay_ms": fault.get("delay_ms"),
                                   "extra_delay_ms": fault.get("extra_delay_ms"), "rate_mbps": fault.get("rate_mbps"),
                                   "loss": fault.get("loss"), "repetition": fault.get("repetition"),
                                   "sweep": _sweep_label(fault), "fault_error": fault.get("error"),
                                   **({"link_drops_down": drops} if drops is not None else {})}
            steps = [r for r in point_records if r.get("workload") == workload and r.get("kind") == "train_step"]
            if steps:
                row["measured_by"] = "train_step"
                row["pattern"] = steps[0].get("pattern")
                row.update(_training_stall(steps, t_event))
                if fault["event"] in CUT_EVENTS:
                    row.update(_training_model(fault, predictions.get(workload), k, row.get("event_into_step_s"),
                                               row.get("median_step_s")))
            else:
                requests = [r for r in point_records if r.get("workload") == workload and r.get("kind") == "request"]
                row["measured_by"] = "request"
                row.update(_request_stall(requests, t_event_raw, k, float(fault.get("outage_s") or 0.0)))
                if fault["event"] in CUT_EVENTS and row.get("measured_stall_s") is not None:
                    row.update(_request_model(fault, requests, t_event_raw, k, row))
            measured = row.get("measured_stall_s")
            modelled = row.get("model_stall_s")
            row["difference_s"] = None if measured is None or modelled is None else measured - modelled
            rows.append(row)
    return rows


def _new_rtt_ms(fault: Mapping[str, Any], k: float) -> float | None:
    base = fault.get("base_delay_ms")
    if fault.get("event") not in (PROTECTION_SWITCH, DELAY) or base is None:
        return None
    if fault.get("delay_ms") is not None:
        return 2.0 * float(fault["delay_ms"])
    return 2.0 * (float(base) / k + float(fault.get("extra_delay_ms") or 0.0))


def _training_stall(steps: Sequence[Mapping[str, Any]], t_event: float) -> dict[str, Any]:
    spans: dict[int, tuple[float, float]] = {}
    for r in steps:
        if r.get("t_start_s") is None:
            continue
        start, length = float(r["t_start_s"]), float(r["step_time_s"])
        step = int(r["step"])
        low, high = spans.get(step, (start, length))
        spans[step] = (min(low, start), max(high, length))
    if not spans:
        return {"measured_stall_s": None, "note": "train_step records carry no t_start_s"}
    median = statistics.median(length for _, length in spans.values())
    hit = [(step, start, length) for step, (start, length) in sorted(spans.items())
           if start <= t_event < start + length]
    if not hit:
        return {"measured_stall_s": None, "median_step_s": median,
                "note": "no step was running when the event started"}
    step, start, length = hit[0]
    others = [length for s, (_, length) in spans.items() if s != step]
    return {"measured_stall_s": length - median, "median_step_s": median, "step": step,
            "step_time_s": length, "event_into_step_s": t_event - start,
            **_noise(others, median)}


def _request_stall(requests: Sequence[Mapping[str, Any]], t_event: float, k: float,
                   outage_s: float) -> dict[str, Any]:
    # t_event and t_send_monotonic_s are on the machine's clock (unscaled); ttft_s is scaled by 1/k, and
    # outage_s is the event's own (unscaled) figure, so both scale by k here
    ok = [r for r in requests if r.get("ttft_s") is not None]
    if not ok:
        return {"measured_stall_s": None, "note": "no request with a TTFT"}
    anchored = [r for r in ok if r.get("t_send_monotonic_s") is not None]
    if not anchored:
        return {"measured_stall_s": None,
                "note": "request records carry no absolute send time (t_send_monotonic_s), so requests "
                        "cannot be lined up with the event"}
    # In flight at the event, or sent while the link was down: a request sent into a cut waits for it too.
    back = t_event + outage_s * k
    flight = [r for r in anchored
              if float(r["t_send_monotonic_s"]) <= t_event < float(r["t_send_monotonic_s"]) + float(r["ttft_s"]) * k
              or t_event <= float(r["t_send_monotonic_s"]) < back]
    # the median of the requests the event did not touch (a long cut touches many)
    touched = {id(r) for r in flight}
    untouched = [float(r["ttft_s"]) for r in ok if id(r) not in touched]
    median = statistics.median(untouched or [float(r["ttft_s"]) for r in ok])
    if not flight:
        return {"measured_stall_s": None, "median_ttft_s": median,
                "note": "no request was waiting for its first token at the event or sent while the link was down "
                        "(a stream already under way loses tokens, not its TTFT)"}
    worst = max(float(r["ttft_s"]) for r in flight)
    return {"measured_stall_s": worst - median, "median_ttft_s": median, "requests_in_flight": len(flight),
            "ttft_in_flight_s": sorted(float(r["ttft_s"]) for r in flight), **_noise(untouched, median)}


#: Fewer values than this give no spread: a median absolute deviation of a handful says little.
NOISE_MIN_VALUES = 8


def _noise(values: Sequence[float], median: float) -> dict[str, Any]:
    """How far the point's other steps or TTFTs stray from ``median``: ``measured_noise_s``, a robust standard
    deviation (1.4826 x the median absolute deviation, which the few steps an outage itself stretched do not
    move), and ``measured_noise_n``, how many values it comes from. A row's stall is one step or request against
    the median, so a difference from the model smaller than about twice this is within what the point varies by
    apart from the event. What the point varies by includes TCP's slow regrowth after other events: in one run
    of ``experiments/faults.yaml`` the ring's 20 steps after the cut took 0.90-1.21 s, its last 15 steps
    0.37-0.47 s. Empty with fewer than :data:`NOISE_MIN_VALUES` values."""
    if len(values) < NOISE_MIN_VALUES:
        return {}
    return {"measured_noise_s": stats.robust_sigma(values, median), "measured_noise_n": len(values)}


#: The link's counters are sampled every half second or so: samples further than this from the event's start
#: or end leave the count unattributed (another event may have fallen between them).
DROPS_SAMPLE_GAP_S = 1.5


def _link_drops(fault: Mapping[str, Any], samples: Sequence[Mapping[str, Any]],
                others: Sequence[Mapping[str, Any]] = ()) -> dict[str, int] | None:
    """Frames the faulted link dropped per direction because it was down, from its own ``drops_down`` counters:
    the count in the last sample stamped before the event minus the count in the first stamped after the outage
    ended (and a round trip more, for what was already on its way). Samples of the event's link only, on the
    delay line's own clock (``time_monotonic_s``, the machine's monotonic clock like the fault's
    ``t_monotonic_s``). None when the link keeps no such counters (netem), no sample brackets the event within
    :data:`DROPS_SAMPLE_GAP_S`, another of ``others`` (the point's other fault records) on the same link takes
    it down between the two samples, or the event takes the link down not at all."""
    from corridor.links import health

    outage = float(fault.get("outage_s") or 0.0)
    if outage <= 0 or fault.get("t_monotonic_s") is None:
        return None
    start = float(fault["t_monotonic_s"])
    end = start + outage + 2.0 * float(fault.get("base_delay_ms") or 0.0) / 1e3
    stamped = sorted((float(s[health.TIME_FIELD]), s) for s in samples
                     if s.get("link") == fault.get("link") and isinstance(s.get(health.TIME_FIELD), (int, float))
                     and not isinstance(s.get(health.TIME_FIELD), bool))
    before = [pair for pair in stamped if pair[0] <= start]
    after = [pair for pair in stamped if pair[0] >= end]
    if not before or not after or start - before[-1][0] > DROPS_SAMPLE_GAP_S or after[0][0] - end > DROPS_SAMPLE_GAP_S:
        return None
    low, high = before[-1][0], after[0][0]
    for other in others:
        if other.get("link") != fault.get("link") or not float(other.get("outage_s") or 0.0) > 0 \
                or other.get("t_monotonic_s") is None:
            continue
        o_start = float(other["t_monotonic_s"])
        if o_start < high and o_start + float(other["outage_s"]) > low:
            return None  # its drops would be counted as this event's
    out: dict[str, int] = {}
    for direction in health.DIRECTIONS:
        field = f"{direction}.drops_down"
        a, b = before[-1][1].get(field), after[0][1].get(field)
        if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) and not isinstance(b, bool):
            out[direction] = b - a
    return out or None


#: A training point whose predicted WAN traffic keeps the link at least this busy sends as a window-limited flow.
BULK_SHARE = 0.5
#: TCP payload per segment on the emulated links (1500-byte MTU, timestamps on).
MSS_BYTES = 1448
#: Segments of a collective's chunk as the loss probe sees it: more than one.
CHUNK_SEGMENTS = 2
#: For request records without ``request_bytes``: the inference workload's default prompt bytes per token,
#: and about what the HTTP head and JSON add.
PROMPT_BYTES_PER_TOKEN = 4
REQUEST_HEAD_BYTES = 300


def _training_model(fault: Mapping[str, Any], prediction: Mapping[str, Any] | None, k: float,
                    into_step_s: float | None = None, median_step_s: float | None = None) -> dict[str, Any]:
    """The training row's model: the step walked across the outage, else one transmission's.

    Where the prediction carries the step's schedule (``predicted.step_plan``,
    bucketed data parallelism) and the event's offset into its step is measured,
    :func:`corridor.analytic.stepwalk.stall_s` replays the step with the outage
    on its clock (stretched to the point's median step,
    :func:`corridor.analytic.stepwalk.calibrated`): which round the outage
    catches, its retries, and the slow start a timeout leaves (``model_sender``
    "step-walk"). Otherwise a window-limited
    flow when the step keeps the link at least half busy, or the step's next
    exchange sent into the outage: a chunk of many segments, so its loss probe
    comes 2·srtt after it went out (:func:`corridor.analytic.faults.idle_retries_s`).
    Either way a retry whose timer's slack could carry it past the link's return
    gives the row a second outcome, ``model_stall_alt_s``.
    """
    from corridor.analytic.faults import TIMER_SLACK, idle_sender_stall

    walked = _training_walk(fault, prediction, k, into_step_s, median_step_s)
    if walked is not None:
        return walked
    rate_mbps = fault.get("base_rate_mbps")
    wan_bytes = None if prediction is None else prediction.get("predicted.wan_bytes")
    step_s = None if prediction is None else prediction.get("model_step_time_s")
    if not rate_mbps or not wan_bytes or not step_s:
        return {"model_sender": "bulk"}
    # the step's WAN bytes cross both directions; the busier one carries at most all of them
    share = float(wan_bytes) * 8 / (float(step_s) * k * float(rate_mbps) * 1e6)
    if share >= BULK_SHARE:
        return {"model_sender": "bulk", "model_link_share": share}
    one_way_s = float(fault.get("base_delay_ms") or 0.0) / 1e3
    new_rtt = _new_rtt_ms(fault, 1.0)
    outcomes = [idle_sender_stall(float(fault.get("outage_s") or 0.0), 2 * one_way_s,
                                  new_rtt_s=None if new_rtt is None else new_rtt / 1e3, event=str(fault["event"]),
                                  segments=CHUNK_SEGMENTS, slack=slack)
                for slack in (0.0, TIMER_SLACK)]
    on_time, late = (None if o.stall_s is None else o.stall_s / k for o in outcomes)
    out = {"model_sender": "idle", "model_link_share": share, "model_stall_s": on_time,
           "model_via": outcomes[0].via}
    if late is not None and (on_time is None or abs(late - on_time) > 1e-3):
        out["model_stall_alt_s"] = late
    return out


def _training_walk(fault: Mapping[str, Any], prediction: Mapping[str, Any] | None, k: float,
                   into_step_s: float | None, median_step_s: float | None) -> dict[str, Any] | None:
    """:func:`_training_model`'s step walk, or None where the row lacks what it needs (no plan, no offset, a
    time-scaled point: the walk's clock is the unscaled model's)."""
    from corridor.analytic.faults import TIMER_SLACK
    from corridor.analytic.stepwalk import Outage, StepPlan, calibrated, stall_s

    data = None if prediction is None else prediction.get("predicted.step_plan")
    if not isinstance(data, str) or into_step_s is None or k != 1.0:
        return None
    try:
        plan = StepPlan.from_text(data)
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if median_step_s is not None:
        plan = calibrated(plan, float(median_step_s))
    new_rtt = _new_rtt_ms(fault, 1.0)
    outage = Outage(float(into_step_s), float(fault.get("outage_s") or 0.0),
                    None if new_rtt is None else new_rtt / 2e3, float(fault.get("hold_s") or 0.0))
    on_time, via = stall_s(plan, outage)
    late, _ = stall_s(plan, outage, slack=TIMER_SLACK)
    out: dict[str, Any] = {"model_sender": "step-walk", "model_stall_s": on_time if math.isfinite(on_time) else None,
                           "model_via": via, "model_round_overhead_s": plan.overhead_s}
    if math.isfinite(late) and (not math.isfinite(on_time) or abs(late - on_time) > 1e-3):
        out["model_stall_alt_s"] = late
    return out


def _request_segments(r: Mapping[str, Any]) -> int:
    """TCP segments a request record's request took: its ``request_bytes``, or for a record without it its prompt
    at the default 4 bytes a token plus about 300 bytes of HTTP head and JSON."""
    size = r.get("request_bytes")
    if size is None and r.get("prompt_tokens") is not None:
        size = int(r["prompt_tokens"]) * PROMPT_BYTES_PER_TOKEN + REQUEST_HEAD_BYTES
    return 1 if size is None else max(1, math.ceil(int(size) / MSS_BYTES))


def _request_model(fault: Mapping[str, Any], requests: Sequence[Mapping[str, Any]], t_event: float, k: float,
                   measured: Mapping[str, Any]) -> dict[str, Any]:
    """The request row's model: each touched request's TTFT under the outage, the longest minus the median.

    Worked on the machine's clock (TCP's timers run on it; ``k`` scales the
    workload's own figures). A request sent while the link is down is retried
    from its own send time, on its keep-alive connection (the loss probe 2·srtt
    after it went out when it is several segments, about an RTO when it is one)
    or as a new connection's SYN; one already at the server loses its first
    token, which the server retries from that token's send time. The median TTFT
    of the untouched requests stands for the normal TTFT (plus one round trip for
    a new connection's handshake).

    The requests held back come through together, and the server runs prefills
    one at a time: :func:`_prefill_waits` queues every request of the point at
    the server in the order the model has them arrive, and a touched request
    pays its wait beyond the typical one.

    The walk is made twice: with every timer on time (``model_stall_s``) and with
    each retry allowed its timer's slack (:data:`corridor.analytic.faults.TIMER_SLACK`);
    when a retry falls just before the link's return the two differ by a whole
    back-off, and the second is ``model_stall_alt_s``.
    """
    from corridor.analytic.faults import TIMER_SLACK

    walks = [_request_walk(fault, requests, t_event, k, measured, slack) for slack in (0.0, TIMER_SLACK)]
    on_time, late = walks
    if on_time is None:
        return {}
    out = dict(on_time)
    alt = None if late is None else late.get("model_stall_s")
    if alt is not None and (out.get("model_stall_s") is None or abs(alt - out["model_stall_s"]) > 1e-3):
        out["model_stall_alt_s"] = alt
    return out


def _request_walk(fault: Mapping[str, Any], requests: Sequence[Mapping[str, Any]], t_event: float, k: float,
                  measured: Mapping[str, Any], slack: float) -> dict[str, Any] | None:
    """One walk of :func:`_request_model` with each retry allowed ``slack``; None when no request was touched."""
    from corridor.analytic.faults import first_through_s, idle_retries_s, syn_retries_s

    outage = float(fault.get("outage_s") or 0.0)
    one_way = float(fault.get("base_delay_ms") or 0.0) / 1e3
    rtt = 2 * one_way
    new_rtt = _new_rtt_ms(fault, 1.0)
    after = one_way if new_rtt is None else new_rtt / 2e3
    median = float(measured["median_ttft_s"]) * k
    syn = syn_retries_s()
    back = t_event + outage
    timed = [r for r in requests if r.get("ttft_s") is not None and r.get("t_send_monotonic_s") is not None]
    gaps = [float(r["tpot_s"]) * k for r in requests if r.get("tpot_s")]
    tpot = statistics.median(gaps) if gaps else 0.0  # the server's time between tokens
    # when each request reaches its server under the model, and what the outage alone does to its TTFT
    arrivals: list[tuple[float, Mapping[str, Any]]] = []
    touched: list[tuple[Mapping[str, Any], float, bool]] = []  # (record, TTFT before queueing, sent in the outage)
    for r in timed:
        sent = float(r["t_send_monotonic_s"]) - t_event
        ttft = float(r["ttft_s"]) * k
        new = bool(r.get("new_connection"))
        handshake = rtt if new else 0.0
        if 0 <= sent < back - t_event:
            segments = _request_segments(r)
            retries = syn if new else idle_retries_s(rtt, segments=segments)
            through = first_through_s(sent, outage, retries, slack=slack)
            if through is None:
                return {"model_stall_s": None, "model_via": "rto"}
            # the retry that comes through is one segment; the rest of a larger request follows one round trip
            # later, when its acknowledgement opens the window (one segment after a timeout on a keep-alive
            # connection; a new connection starts with one when its SYN went out three times or more, as Linux
            # does after RFC 6298 5.7)
            retried = sum(1 for x in retries if sent + x < through - 1e-9) + 1
            rest = 2 * after if segments > 1 and (not new or retried >= 2) else 0.0
            arrivals.append((through + (2 * after if new else 0.0) + after + rest, r))
            touched.append((r, through - sent + median + handshake + (after - one_way) + rest, True))
            continue
        arrivals.append((sent + handshake + one_way, r))
        if sent <= 0 < sent + ttft:
            first_token = sent + median - one_way  # when the server sent the first token
            # the answer's first event is one segment
            through = first_through_s(first_token, outage, idle_retries_s(rtt), slack=slack)
            if through is None:
                return {"model_stall_s": None, "model_via": "rto"}
            reached = through + after
            if 0 <= first_token < outage and tpot > 0:
                # the server streams on: the first token sent after the return reaches the client, whose SACK
                # marks the lost first one (RACK) and has it resent a round trip after that token went out
                n = math.ceil((outage - first_token) / tpot)  # the first token sent after the return
                if n < int(r.get("output_tokens") or 0):
                    reached = min(reached, first_token + n * tpot + 3 * after)
            touched.append((r, max(median + handshake, reached - sent), False))
    if not touched:
        return None
    waits = _prefill_waits(arrivals, k)
    held = {id(r) for r, _, sent_in in touched if sent_in}
    usual = statistics.median([w for r, w in waits.items() if r not in held] or [0.0])
    worst = max(ttft + (max(waits[id(r)] - usual, 0.0) if sent_in else 0.0) for r, ttft, sent_in in touched)
    return {"model_stall_s": (worst - median) / k, "model_via": "per-request", "model_sender": "per-request",
            "model_ttft_worst_s": worst / k, "model_prefill_wait_max_s": max(waits.values()) / k}


def _prefill_waits(arrivals: Sequence[tuple[float, Mapping[str, Any]]], k: float) -> dict[int, float]:
    """Each request's wait for its server's prefill (one at a time, first come first served), by record id.

    A request's prefill lasts what its server recorded holding it (``server_prefill_s``,
    the serving model's prefill for its prompt), or the median of the others.
    """
    holds = [float(r["server_prefill_s"]) * k for _, r in arrivals if r.get("server_prefill_s") is not None]
    typical = statistics.median(holds) if holds else 0.0
    free_at: dict[str, float] = {}
    waits: dict[int, float] = {}
    for at, r in sorted(arrivals, key=lambda pair: pair[0]):
        server = str(r.get("server"))
        start = max(at, free_at.get(server, at))
        hold = float(r["server_prefill_s"]) * k if r.get("server_prefill_s") is not None else typical
        free_at[server] = start + hold
        waits[id(r)] = start - at
    return waits


def _sweep_label(fault: Mapping[str, Any]) -> str:
    """The WAN sweep values of a fault record's point (``"3268km 1Gbit"``; empty when nothing is swept)."""
    from corridor.spec.units import format_rate

    parts = []
    if fault.get("sweep_distance_km") is not None:
        parts.append(f"{float(fault['sweep_distance_km']):g}km")
    if fault.get("sweep_delay_scale") is not None:
        parts.append(f"delay x{float(fault['sweep_delay_scale']):g}")
    if fault.get("sweep_rate_mbps") is not None:
        parts.append(format_rate(float(fault["sweep_rate_mbps"])))
    if fault.get("sweep_loss") is not None:
        parts.append(f"loss {float(fault['sweep_loss']):g}")
    if fault.get("sweep_cc") is not None:
        parts.append(str(fault["sweep_cc"]))
    return " ".join(parts)


# -- rows a user reads -----------------------------------------------------------------

#: Columns of :func:`fault_rows`, in the order the table prints them.
FAULT_COLUMNS = ("workload", "corridor", "fault", "measured stall", "model", "agreement", "reading")
#: Model and measurement agree when within this much of each other, or within AGREE_FRACTION of the model.
AGREE_S = 0.020
AGREE_FRACTION = 0.10
#: A stall below this fraction of the model's (and below RIDE_S) means the workload rode through the event.
RIDE_FRACTION = 0.25
RIDE_S = 0.050

_VIA = {
    "rto": "the outage plus TCP's retransmission back-off",
    "probe": "the outage plus a tail-loss probe and a round trip on the new path",
    "in-flight": "the outage plus a round trip (the sender was still sending when the link came back)",
    "per-request": "each request retried on its own TCP timers (keep-alive: loss probe then doubling RTO; "
                   "new connection: SYN every second)",
    "syn": "the outage plus the SYN's retries, one second apart",
    "none": "the outage alone",
    "slow-start": "the outage plus TCP's retransmission back-off, then the lost round resent from a one-segment "
                  "window in slow start",
    "acks": "the outage's lost ACKs alone (every round crossing it had reached the link before it)",
}


def fault_rows(impacts: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Rows a user reads, one per workload per fault event, from :func:`fault_impacts`.

    Repetitions of a point (same placement, sweep values, event and link) make
    one row: the measured stall is their median, with the range when there are
    several. Columns are :data:`FAULT_COLUMNS`; ``reading`` is a sentence saying
    what the event did to the workload and why, and whether the model agrees.
    """
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in impacts:
        key = (row.get("workload"), row.get("placement"), row.get("sweep") or "", row.get("fault_index"),
               row.get("link"), row.get("event"))
        groups.setdefault(key, []).append(row)
    out: list[dict[str, str]] = []
    for (workload, placement, sweep, _index, link, _event), rows in sorted(
            groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]), str(kv[0][2]),
                                            float(kv[1][0].get("at_s") or 0.0), str(kv[0][4]))):
        first = rows[0]
        measured = [float(r["measured_stall_s"]) for r in rows if r.get("measured_stall_s") is not None]
        models = [float(r["model_stall_s"]) for r in rows if r.get("model_stall_s") is not None]
        alts = [float(r["model_stall_alt_s"]) for r in rows if r.get("model_stall_alt_s") is not None]
        stall = statistics.median(measured) if measured else None
        model = statistics.median(models) if models else None
        alt = statistics.median(alts) if alts and model is not None else None
        noises = [float(r["measured_noise_s"]) for r in rows if r.get("measured_noise_s") is not None]
        noise = statistics.median(noises) if noises and measured else None
        if not measured:
            shown = "n/a"
        elif len(measured) == 1:
            shown = _fmt_s(measured[0])
        else:
            shown = f"{_fmt_s(stall)} [{_fmt_s(min(measured))}, {_fmt_s(max(measured))}], n={len(measured)}"
        if noise is not None:
            shown += f" (σ {_fmt_s(noise)})"
        if model is None:
            model_cell = "no outage"
        elif alt is None:
            model_cell = f"{_fmt_s(model)} ({first.get('model_via')})"
        else:
            model_cell = f"{_fmt_s(model)} or {_fmt_s(alt)} ({first.get('model_via')})"
        agreement = _agreement(stall, model)
        if alt is not None and model is not None and agreement != "agrees":
            # the measurement is judged against the outcome it is nearer
            other = _agreement(stall, alt)
            if other == "agrees" or (stall is not None and abs(stall - alt) < abs(stall - model)):
                model, alt, agreement = alt, model, other
        out.append({
            "workload": str(workload),
            "corridor": " ".join(p for p in (str(placement), f"({sweep})" if sweep else "") if p),
            "fault": f"{_event_phrase(first)} at {float(first.get('at_s') or 0.0):g} s on {link}",
            "measured stall": shown,
            "model": model_cell,
            "agreement": agreement,
            "reading": _reading(str(workload), first, rows, stall, model, agreement, alt)
            + _evidence(rows, stall, model, agreement, noise),
        })
    return out


def _evidence(rows: Sequence[Mapping[str, Any]], stall: float | None, model: float | None, agreement: str,
              noise: float | None) -> str:
    """What the reading adds in numbers: the frames the link dropped while down (per direction, the range over
    repetitions) and, where the measurement and the model differ by less than twice the point's own spread, that
    one step or request cannot tell them apart."""
    out = ""
    counts: dict[str, list[int]] = {}
    for r in rows:
        for direction, n in dict(r.get("link_drops_down") or {}).items():
            counts.setdefault(str(direction), []).append(int(n))
    if counts:
        parts = []
        for direction, ns in sorted(counts.items()):
            span = str(ns[0]) if min(ns) == max(ns) else f"{min(ns)}-{max(ns)}"
            parts.append(f"{span} {direction.replace('_to_', '→')}")
        out += f". The link dropped {' and '.join(parts)} frames while down"
    if (noise is not None and stall is not None and model is not None and agreement != "agrees"
            and abs(stall - model) <= 2.0 * noise):
        out += (f". The difference is within twice the spread of the point's other {_noun(rows)} "
                f"(σ {_fmt_s(noise)}): one of them cannot tell the model from the measurement")
    return out


def _noun(rows: Sequence[Mapping[str, Any]]) -> str:
    return "steps" if rows and rows[0].get("measured_by") == "train_step" else "TTFTs"


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if abs(seconds) < 1.0:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.1f} s" if abs(seconds) < 100 else f"{seconds:.0f} s"


def _event_phrase(row: Mapping[str, Any]) -> str:
    """``"a 2 s cut"``, ``"a 50 ms protection switch to 30 ms one way"``, ``"a rate drop to 400Mbit"``."""
    event = row.get("event")
    outage = float(row.get("outage_s") or 0.0)
    if event == CUT:
        return f"a {_fmt_s(outage)} cut"
    if event in (PROTECTION_SWITCH, DELAY):
        if row.get("delay_ms") is not None:
            path = f"{float(row['delay_ms']):g} ms one way"
        elif row.get("extra_delay_ms") is not None:
            path = f"{float(row['extra_delay_ms']):g} ms more one way"
        else:
            path = "a longer path"
        if event == DELAY:
            return f"a delay step to {path}"
        return f"a {_fmt_s(outage)} protection switch to {path}"
    if event == RATE and row.get("rate_mbps") is not None:
        from corridor.spec.units import format_rate

        return f"a rate drop to {format_rate(float(row['rate_mbps']))}"
    if event == LOSS and row.get("loss") is not None:
        return f"a {float(row['loss']) * 100:g} % loss burst"
    return f"a {event} event"


def _agreement(stall: float | None, model: float | None) -> str:
    if stall is None or model is None:
        return "n/a"
    tolerance = max(AGREE_S, AGREE_FRACTION * abs(model))
    if abs(stall - model) <= tolerance:
        return "agrees"
    return f"differs by {_fmt_s(stall - model).lstrip('-')} ({'longer' if stall > model else 'shorter'})"


def _reading(workload: str, first: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], stall: float | None,
             model: float | None, agreement: str, alt: float | None = None) -> str:
    """The sentence of a row: what the event did to the workload, and why.

    ``model`` is the outcome the measurement is judged against and ``alt`` the
    model's other outcome, when a retry fell just before the link's return.
    """
    event = _event_phrase(first)
    errors = sorted({str(r["fault_error"]) for r in rows if r.get("fault_error")})
    if errors:
        return f"{event} was not applied as scheduled ({'; '.join(errors)}); its row is no evidence"
    if stall is None:
        notes = sorted({str(r.get("note")) for r in rows if r.get("note")})
        return f"{workload}: no stall measured for {event} ({'; '.join(notes) or 'no records'})"
    what = "step" if first.get("measured_by") == "train_step" else "time to first token"
    if model is None:
        return (f"{workload}'s {what} grew {_fmt_s(stall)} during {event}; the link stayed up, so the model "
                "expects no stall, only the slower path")
    pattern = str(first.get("pattern") or "")
    if stall < max(RIDE_S, RIDE_FRACTION * model):
        why = ("between outer syncs" if "diloco" in pattern or "diloco" in workload else
               "no transfer of it was waiting on the link long enough to lose its window")
        return (f"{workload} rides through {event}: {_fmt_s(stall)} beyond its median {what} "
                f"({why}; a transfer crossing it stalls {_fmt_s(model)})")
    mechanism = _VIA.get(str(first.get("model_via")), "the outage")
    if alt is not None:
        mechanism += (f"; a retry fell just before the link came back, so TCP comes through after "
                      f"{_fmt_s(min(model, alt))} if that timer fires late enough, else one back-off later "
                      f"({_fmt_s(max(model, alt))})")
    if agreement == "agrees":
        return f"{workload} stalls {_fmt_s(stall)} for {event}: {mechanism}"
    return (f"{workload} stalls {_fmt_s(stall)} for {event}, {'longer' if stall > model else 'shorter'} than the "
            f"model's {_fmt_s(model)} ({mechanism}); the model does not explain this row")


def format_fault_table(rows: Sequence[Mapping[str, str]], *, width: int = 60) -> str:
    """The plain-text table of :func:`fault_rows` (the reading wraps at ``width``)."""
    import textwrap

    if not rows:
        return "(no fault rows: no finished point ran under a fault)"
    cols = list(FAULT_COLUMNS)
    wrap = {"reading": width, "fault": 32, "corridor": 24, "agreement": 16}
    wrapped = [{c: (textwrap.wrap(r[c], wrap[c]) or [""]) if c in wrap else [r[c]] for c in cols} for r in rows]
    widths = {c: max(len(c), *(max((len(x) for x in w[c]), default=0) for w in wrapped)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols).rstrip(), "  ".join("-" * widths[c] for c in cols)]
    for w in wrapped:
        for i in range(max(len(w[c]) for c in cols)):
            lines.append("  ".join((w[c][i] if i < len(w[c]) else "").ljust(widths[c]) for c in cols).rstrip())
    return "\n".join(lines)
