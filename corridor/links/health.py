"""Link health of one point: was every WAN link alive, current and clean while the point ran.

Stage: workload run (pure, standard library only; the runner feeds it what it
observed). The runner probes each WAN link just before and just after a point
(:class:`LinkProbe`: is the link's process alive, and its statistics) and
samples the statistics while the point runs (``link_sample`` records).
:func:`assess` turns those into one :class:`LinkHealth` per link:

- alive: the delay-line process runs (the userspace backend; netem has no
  process to watch) and its stats file does not say it stopped;
- fresh: the statistics' own timestamp advanced during the point and was never
  older than :data:`STALE_AFTER_S` when read (a wedged or dead process stops
  writing them);
- readable: every read of the statistics succeeded;
- clean: no drops other than the configured loss and queue overflow (send
  failures and frames the delay line could not parse).

A *fatal* problem (dead, stale, unreadable, counters that went backwards)
means the link itself failed: the point's measurements say nothing about the
corridor, so the runner stops and a resume retries the point. A non-fatal one
(unexpected drops, a stall the link recovered from) is recorded with the point
and its verdict is not judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Statistics older than this when read mean the process stopped writing them (it writes every 0.2 s).
STALE_AFTER_S = 2.0
DIRECTIONS = ("a_to_b", "b_to_a")
#: Drops that are part of the link's contract: configured loss and drop-tail queue overflow.
EXPECTED_DROPS = ("drops_queue", "drops_loss")
#: Drops that are not: frames the link failed to send, and frames it could not parse.
UNEXPECTED_DROPS = ("drops_tx", "malformed")
#: Field of a (flattened) stats document and of a ``link_sample`` record that carry the time.
TIME_FIELD = "time_monotonic_s"
AGE_FIELD = "stats_age_s"


@dataclass(frozen=True)
class LinkProbe:
    """One look at a link from outside, before or after a point."""

    link: str
    #: The runner's time.monotonic() when it looked (the delay line stamps its stats with the same clock).
    at_monotonic_s: float
    #: Whether the link's process runs; None where the backend has no process to watch (netem).
    alive: bool | None
    #: The link's statistics, flattened ("a_to_b.drops_tx", "time_monotonic_s", ...); empty when unreadable.
    stats: Mapping[str, Any]
    #: Why the statistics could not be read, or None.
    error: str | None = None
    pid: int | None = None

    def stats_age_s(self) -> float | None:
        """How old the statistics were when read, or None when they carry no time."""
        stamp = _number(self.stats.get(TIME_FIELD))
        return None if stamp is None else self.at_monotonic_s - stamp


@dataclass(frozen=True)
class LinkHealth:
    """The health verdict of one link over one point."""

    link: str
    alive: bool | None
    fresh: bool | None
    readable: bool
    #: Drops other than configured loss and queue overflow during the point; None when not counted.
    unexpected_drops: int | None
    problems: tuple[str, ...] = ()
    fatal: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "fatal": self.fatal, "alive": self.alive, "fresh": self.fresh,
                "readable": self.readable, "unexpected_drops": self.unexpected_drops,
                "problems": list(self.problems)}


def probe_problems(probe: LinkProbe, *, max_age_s: float = STALE_AFTER_S) -> list[str]:
    """What is fatally wrong with a link from one probe alone (an empty list when nothing is)."""
    problems: list[str] = []
    pid = f" (pid {probe.pid})" if probe.pid is not None else ""
    if probe.alive is False:
        problems.append(f"its delay-line process{pid} is not running")
    if probe.error is not None:
        problems.append(f"its statistics could not be read: {probe.error}")
        return problems
    state = probe.stats.get("state")
    if state is not None and state != "running":
        reason = probe.stats.get("exit_reason")
        problems.append(f"its delay line says it {state}" + (f" ({reason})" if reason else ""))
    age = probe.stats_age_s()
    if age is not None and age > max_age_s and probe.alive is not False:
        problems.append(f"its statistics are {age:.1f} s old (written every 0.2 s while it forwards)")
    return problems


def assess(
    samples: Iterable[Mapping[str, Any]],
    before: Mapping[str, LinkProbe],
    after: Mapping[str, LinkProbe],
    *,
    max_age_s: float = STALE_AFTER_S,
    max_unexpected_drops: int = 0,
) -> dict[str, LinkHealth]:
    """One :class:`LinkHealth` per link probed before or after the point.

    ``samples`` are the point's ``link_sample`` records (flattened statistics
    with ``link``, ``t_s``, and ``stats_age_s`` or ``error`` where known).
    A link probed only on one side is judged on that side; a link with no
    probe at all is not judged.
    """
    by_link: dict[str, list[Mapping[str, Any]]] = {}
    for sample in samples:
        by_link.setdefault(str(sample.get("link")), []).append(sample)
    out: dict[str, LinkHealth] = {}
    for name in sorted({*before, *after}):
        out[name] = _assess_link(name, by_link.get(name, []), before.get(name), after.get(name),
                                 max_age_s=max_age_s, max_unexpected_drops=max_unexpected_drops)
    return out


def _assess_link(
    name: str,
    samples: Sequence[Mapping[str, Any]],
    before: LinkProbe | None,
    after: LinkProbe | None,
    *,
    max_age_s: float,
    max_unexpected_drops: int,
) -> LinkHealth:
    fatal: list[str] = []
    minor: list[str] = []
    probes = [p for p in (before, after) if p is not None]
    for probe in probes:
        for problem in probe_problems(probe, max_age_s=max_age_s):
            when = "before" if probe is before else "after"
            fatal.append(f"{problem} ({when} the point)")
    sample_errors = [str(s["error"]) for s in samples if s.get("error")]
    if sample_errors:
        fatal.append(f"its statistics could not be read while the point ran: {sample_errors[0]}")
    readable = all(p.error is None for p in probes) and not sample_errors
    alive_values = [p.alive for p in probes if p.alive is not None]
    alive = None if not alive_values else all(alive_values)
    if any(p.stats.get("state") not in (None, "running") for p in probes if p.error is None):
        alive = False

    fresh: bool | None = None
    t_before = _number(before.stats.get(TIME_FIELD)) if before is not None else None
    t_after = _number(after.stats.get(TIME_FIELD)) if after is not None else None
    if t_before is not None and t_after is not None:
        fresh = t_after > t_before
        if not fresh:
            fatal.append("its statistics did not advance during the point")
    ages = [a for a in (_number(s.get(AGE_FIELD)) for s in samples) if a is not None]
    if ages:
        worst = max(ages)
        if worst > max_age_s:
            fresh = False
            minor.append(f"its statistics went {worst:.1f} s without an update while the point ran")
        elif fresh is None:
            fresh = True
    if any("statistics are" in p for p in fatal):
        fresh = False

    pid_before = before.stats.get("pid") if before is not None else None
    pid_after = after.stats.get("pid") if after is not None else None
    if pid_before is not None and pid_after is not None and pid_before != pid_after:
        fatal.append(f"its delay line was restarted during the point (pid {pid_before} -> {pid_after})")

    unexpected: int | None = None
    if before is not None and after is not None and before.error is None and after.error is None:
        unexpected, notes, backwards = _unexpected_drops(before.stats, after.stats)
        if backwards:
            fatal.append(f"its counters went backwards ({', '.join(backwards)}): the process was restarted")
        elif unexpected is not None and unexpected > max_unexpected_drops:
            minor.append(f"{unexpected} frames dropped other than by the configured loss and queue overflow "
                         f"({', '.join(notes)})")
    return LinkHealth(link=name, alive=alive, fresh=fresh, readable=readable, unexpected_drops=unexpected,
                      problems=tuple(fatal + minor), fatal=bool(fatal))


def _unexpected_drops(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[int | None, list[str], list[str]]:
    """(unexpected drops during the point, per-counter notes, counters that went backwards)."""
    total: int | None = None
    notes: list[str] = []
    backwards: list[str] = []
    for direction in DIRECTIONS:
        for key in UNEXPECTED_DROPS:
            field = f"{direction}.{key}"
            start, end = _number(before.get(field)), _number(after.get(field))
            if start is None or end is None:
                continue
            delta = int(end - start)
            if delta < 0:
                backwards.append(field)
                continue
            total = (total or 0) + delta
            if delta:
                notes.append(f"{field} +{delta}")
    return total, notes, backwards


def summary(health: Mapping[str, LinkHealth]) -> dict[str, Any]:
    """What a ``point`` record carries as ``link_health``: ``ok`` (every link healthy) and the verdict per link."""
    return {"ok": all(h.ok for h in health.values()),
            "links": {name: h.as_dict() for name, h in sorted(health.items())}}


def failure_message(health: Mapping[str, LinkHealth]) -> str | None:
    """One sentence per fatally failed link, or None when no link failed."""
    failed = [h for h in health.values() if h.fatal]
    if not failed:
        return None
    return "; ".join(f"WAN link {h.link}: {', '.join(h.problems)}" for h in failed)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
