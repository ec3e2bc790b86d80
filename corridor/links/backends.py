"""The link backends: the one list of them, and the interface each implements.

Stage: emulation plug-in interface (pure at import, so the spec stage and the
command line can list the backends without loading one). A backend is what
runs inside a WAN link's wire node to honour the link contract
(:mod:`corridor.links.contract`): kernel ``netem`` (tc) or the ``userspace``
delay line. ``auto`` is not a backend but a choice resolved by
:func:`corridor.links.select.choose_backend`.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from typing import Any, Protocol

from corridor.errors import EmulationError

log = logging.getLogger(__name__)

#: The backends, in the order ``auto`` prefers them.
LINK_BACKENDS: tuple[str, ...] = ("netem", "userspace")
#: What a user may ask for: a backend, or ``auto``.
BACKEND_CHOICES: tuple[str, ...] = ("auto", *LINK_BACKENDS)


class Wire(Protocol):
    """What a backend needs of the node it runs in (a Mininet wire node, :class:`corridor.emulation.nodes.WireNode`).

    ``run_argv`` runs a command in the wire's namespace and returns its output
    (raising EmulationError on failure when ``check``); ``popen`` starts one.
    The backend keeps its own state on the wire (``delayline``, ``stats_path``,
    ``control_path``). Files the backend's process writes (``stats_path``) live
    where the wire runs, which is another machine for a wire on a cluster's
    server, so the backend reaches them through the wire (``file_exists``,
    ``read_text``, ``remove_file``); ``log_path`` is on this machine.
    """

    name: str
    delayline: subprocess.Popen[bytes] | None
    stats_path: str | None
    control_path: str | None
    log_path: str | None
    #: how often to look for the backend's readiness file (a remote look costs an ssh round trip)
    ready_poll_s: float

    def run_argv(self, argv: list[str], *, check: bool = True) -> str: ...

    def popen(self, *args: Any, **kwargs: Any) -> Any: ...

    def file_exists(self, path: str) -> bool: ...

    def read_text(self, path: str) -> str: ...

    def remove_file(self, path: str) -> None: ...

    def receivers(self) -> list[tuple[str, str]] | None:
        """``(netns file, interface)`` of the two interfaces the link sends into; None where not on this machine."""
        ...

    #: where the backend pinned the link's process (:class:`corridor.links.steering.LinePlacement`), if it did
    placement: Any
    #: how many delay lines the wire's network runs (its WAN links), for steering's rule
    network_lines: int


class LinkBackend(Protocol):
    """Configure a wire, read its statistics, tell whether it still runs, stop it."""

    name: str

    def start(self, wire: Any, intf_a: str, intf_b: str, a_to_b: Any, b_to_a: Any, *, stats_path: str | None,
              seed: int) -> None:
        """Make ``wire`` carry frames between its two interfaces under the two directions' contracts."""
        ...

    def stats(self, wire: Any) -> dict[str, Any]:
        """Per-direction counters of the link."""
        ...

    def alive(self, wire: Any) -> bool | None:
        """Whether the process carrying the link runs; None for a backend without one."""
        ...

    def stop(self, wire: Any) -> None:
        """Stop what :meth:`start` started (the wire's namespace goes with the node)."""
        ...


class NetemBackend:
    """Kernel tc: the wire bridges its two interfaces and shapes each egress (tbf for rate/queue, netem for delay)."""

    name = "netem"

    def start(self, wire: Wire, intf_a: str, intf_b: str, a_to_b: Any, b_to_a: Any, *, stats_path: str | None,
              seed: int) -> None:
        from corridor.links import netem

        for argv in (*netem.wire_setup_argv(intf_a, intf_b), *netem.egress_argv(intf_b, a_to_b),
                     *netem.egress_argv(intf_a, b_to_a)):
            wire.run_argv(argv)

    def stats(self, wire: Wire) -> dict[str, Any]:
        return {"tc": wire.run_argv(["tc", "-s", "-j", "qdisc", "show"], check=False)}

    def alive(self, wire: Wire) -> bool | None:
        return None  # no process: the qdiscs live as long as the namespace

    def stop(self, wire: Wire) -> None:
        return None  # the qdiscs go with the wire's namespace


class UserspaceBackend:
    """The delay-line process inside the wire, reading both interfaces with AF_PACKET."""

    name = "userspace"
    ready_timeout_s = 15.0

    def start(self, wire: Wire, intf_a: str, intf_b: str, a_to_b: Any, b_to_a: Any, *, stats_path: str | None,
              seed: int) -> None:
        from corridor.emulation.api import package_env
        from corridor.links import userspace

        if stats_path is None:
            raise EmulationError(f"wire {wire.name}: the userspace backend needs a stats path")
        wire.stats_path = stats_path
        wire.control_path = userspace.control_path_for(stats_path)
        for stale in (stats_path, wire.control_path):
            wire.remove_file(stale)
        for intf in (intf_a, intf_b):
            for argv in userspace.prepare_argv(intf):
                wire.run_argv(argv)
        placement = self.steer(wire)
        wire.placement = placement
        argv = userspace.delayline_argv(intf_a, intf_b, a_to_b, b_to_a, stats_path=stats_path, seed=seed,
                                        control_path=wire.control_path,
                                        cpu=placement.cpu if placement is not None else None)
        log_path = wire.log_path or stats_path + ".log"
        with open(log_path, "wb") as log_file:
            proc = wire.popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=package_env())
        wire.delayline = proc
        deadline = time.monotonic() + self.ready_timeout_s
        while not wire.file_exists(stats_path):
            if proc.poll() is not None:
                with open(log_path, errors="replace") as f:
                    tail = f.read()[-2000:]
                raise EmulationError(f"wire {wire.name}: the delay line exited with status {proc.returncode}: "
                                     f"{tail}")
            if time.monotonic() > deadline:
                raise EmulationError(f"wire {wire.name}: the delay line did not become ready within "
                                     f"{self.ready_timeout_s:g} s")
            time.sleep(wire.ready_poll_s)

    @staticmethod
    def steer(wire: Wire) -> Any:
        """Pin this wire's line to a CPU and steer its receivers' stacks off it (:mod:`corridor.links.steering`).

        The placement, or None: steering off, one CPU, a wire or receiver on another machine, or a kernel
        without receive packet steering (logged).
        """
        from corridor.links import steering

        # the network's line count travels with each wire, so a network built by `mn --custom` counts as well
        with steering.expecting(wire.network_lines):
            placement, why_not = steering.place_line(wire.receivers())
        if placement is None:
            log.info("wire %s: not steered: %s", wire.name, why_not)
        return placement

    def stats(self, wire: Wire) -> dict[str, Any]:
        from corridor.links import userspace

        if wire.stats_path is None:
            raise EmulationError(f"wire {wire.name}: its delay line was never started")
        return dict(userspace.stats_from_text(wire.read_text(wire.stats_path), where=wire.stats_path))

    def alive(self, wire: Wire) -> bool | None:
        proc = wire.delayline
        return proc is not None and proc.poll() is None

    def stop(self, wire: Wire) -> None:
        proc = wire.delayline
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        wire.delayline = None


#: The backends by name (the one registry; LINK_BACKENDS lists the same names).
BACKENDS: dict[str, LinkBackend] = {"netem": NetemBackend(), "userspace": UserspaceBackend()}
assert tuple(BACKENDS) == LINK_BACKENDS


def get_backend(name: str) -> LinkBackend:
    """The backend called ``name`` (EmulationError naming the backends otherwise; ``auto`` is resolved earlier)."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise EmulationError(f"unknown link backend {name!r}; use one of {', '.join(BACKENDS)} (or auto, which "
                             "corridor.links.select resolves)") from None
