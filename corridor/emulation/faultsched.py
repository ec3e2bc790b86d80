"""Applying a fault schedule to a running WAN link, on either backend.

Stage: emulation (root). :class:`LinkSchedule` takes the compiled steps of
:func:`corridor.spec.faults.link_changes` for one link and puts the link's wire node
into each step's state at its due monotonic time:

- userspace backend: every step is written to the delay line's control pipe at
  once, ahead of time, with its due time; the delay line's own timer applies it
  (within tens of microseconds), and its stats report when each was applied;
- netem backend: a thread sleeps to each due time and runs ``tc qdisc change``
  (argv from :func:`corridor.links.netem.change_argv`) on both egresses inside
  the wire node; the applied time is when tc returned (a few milliseconds late).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from corridor.errors import EmulationError
from corridor.spec.faults import LinkChange

log = logging.getLogger(__name__)

#: How long :meth:`LinkSchedule.applied` waits for the delay line's stats to report past steps.
REPORT_WAIT_S = 0.6


class LinkSchedule:
    """The steps of one link's fault schedule, sent or running; :meth:`applied` says what happened."""

    def __init__(self, link: str, wire: Any, changes: Sequence[LinkChange], t0_monotonic_s: float, *,
                 first_id: int = 1) -> None:
        self.link = link
        self.wire = wire
        self.changes = list(changes)
        self.t0 = t0_monotonic_s
        self.ids = [first_id + i for i in range(len(self.changes))]
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._netem_applied: dict[int, dict[str, Any]] = {}

    @property
    def userspace(self) -> bool:
        return getattr(self.wire, "control_path", None) is not None

    def start(self) -> None:
        if not self.changes:
            return
        if self.userspace:
            from corridor.links import userspace

            lines = userspace.command_lines([(self.t0 + c.at_s, c.state()) for c in self.changes],
                                            first_id=self.ids[0])
            userspace.send_commands(self.wire.control_path, lines)
            return
        if getattr(self.wire, "link_intfs", None) is None or getattr(self.wire, "link_directions", None) is None:
            raise EmulationError(f"WAN link {self.link}: its wire node cannot be changed in place")
        self._thread = threading.Thread(target=self._run_netem, name=f"faults-{self.link}", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run_netem(self) -> None:
        for command_id, change in zip(self.ids, self.changes, strict=True):
            due = self.t0 + change.at_s
            if self._cancel.wait(max(0.0, due - time.monotonic())):
                return
            try:
                apply_netem_state(self.wire, change.state())
            except EmulationError as exc:
                log.warning("WAN link %s: fault step %s failed: %s", self.link, change.step, exc)
                self._netem_applied[command_id] = {"error": str(exc)}
                continue
            self._netem_applied[command_id] = {"applied_monotonic_s": time.monotonic()}

    def applied(self) -> list[dict[str, Any]]:
        """Per step, in order: ``{"applied_monotonic_s": t}``, ``{"error": why}`` or ``{}`` (not applied)."""
        if not self.userspace:
            return [dict(self._netem_applied.get(i, {})) for i in self.ids]
        from corridor.links import userspace

        past = {i for i, c in zip(self.ids, self.changes, strict=True) if self.t0 + c.at_s <= time.monotonic()}
        deadline = time.monotonic() + REPORT_WAIT_S
        seen: dict[int, dict[str, Any]] = {}
        while True:
            try:
                stats = userspace.read_stats(self.wire.stats_path)
            except EmulationError as exc:
                return [{"error": str(exc)} for _ in self.ids]
            for entry in (stats.get("control") or {}).get("applied") or []:
                if isinstance(entry, dict) and entry.get("id") in self.ids:
                    seen[int(entry["id"])] = {"applied_monotonic_s": entry.get("applied_monotonic_s")}
            if past <= set(seen) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return [seen.get(i, {}) for i in self.ids]


def apply_netem_state(wire: Any, state: dict[str, Any]) -> None:
    """Put both egresses of a netem wire node into ``state`` now (``{}``: the link's own parameters)."""
    from corridor.emulation.nodes import run_in
    from corridor.links import netem

    intf_a, intf_b = wire.link_intfs
    a_to_b, b_to_a = wire.link_directions
    for intf, base in ((intf_b, a_to_b), (intf_a, b_to_a)):
        direction, down = netem.faulted_direction(base, state)
        for argv in netem.change_argv(intf, direction, down=down):
            run_in(wire, argv)


def restore_link(wire: Any) -> None:
    """Drop pending fault steps and restore the link's own parameters at once."""
    if getattr(wire, "control_path", None) is not None:
        from corridor.links import userspace

        userspace.send_commands(wire.control_path, [userspace.RESET_LINE])
        return
    if getattr(wire, "link_intfs", None) is not None and getattr(wire, "link_directions", None) is not None:
        apply_netem_state(wire, {})


class FaultInjector:
    """A point's fault schedule on every WAN link it names, as a context manager around the workloads.

    On entry the schedule starts (t0 = now); on exit every link it touched is
    reset to its own parameters and :attr:`records` holds one ``fault`` record
    per event per link (:func:`corridor.spec.faults.fault_records`). ``net`` needs
    ``schedule_link_events`` and ``reset_link`` (:class:`corridor.emulation.network.CorridorNetwork`).
    """

    def __init__(self, events: Sequence[Any], plan: Any, net: Any) -> None:
        from corridor.spec.faults import link_changes

        self.events = list(events)
        self.net = net
        self.time_scale = float(getattr(net, "time_scale", 1.0) or 1.0)
        self.changes = link_changes(self.events, [link.name for link in plan.wan_links], time_scale=self.time_scale)
        emulated = getattr(net, "plan", plan)
        self.base = {link.name: {"delay_ms": link.a_to_b.delay_ms, "rate_mbps": link.a_to_b.rate_mbps}
                     for link in emulated.wan_links}
        self.t0 = 0.0
        self.schedules: dict[str, Any] = {}
        self.records: list[dict[str, Any]] = []

    def __enter__(self) -> FaultInjector:
        if not callable(getattr(self.net, "schedule_link_events", None)):
            raise EmulationError("this network cannot change its links while running, so the experiment's "
                                 "faults cannot be applied; run it on the emulated network (netem or userspace)")
        self.t0 = time.monotonic()
        try:
            for link, steps in self.changes.items():
                if steps:
                    self.schedules[link] = self.net.schedule_link_events(link, steps, self.t0)
        except BaseException:
            self._reset()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        from corridor.spec.faults import fault_records

        applied = {link: schedule.applied() for link, schedule in self.schedules.items()}
        self._reset()
        self.records = fault_records(self.events, {k: v for k, v in self.changes.items() if v}, self.t0, applied,
                                     self.base, time_scale=self.time_scale)

    def _reset(self) -> None:
        for link in self.schedules:
            try:
                self.net.reset_link(link)
            except EmulationError as exc:  # the link check after the point reports a dead link
                log.warning("WAN link %s: restoring it after its faults failed: %s", link, exc)
