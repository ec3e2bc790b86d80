"""The link backends: the one list of them, and the interface each implements.

Stage: emulation plug-in interface (pure at import, so the spec stage and the
command line can list the backends without loading one). A backend is what
runs inside a WAN link's wire node to honour the link contract
(:mod:`corridor.links.contract`): kernel ``netem`` (tc) or the ``userspace``
delay line. ``auto`` is not a backend but a choice resolved by
:func:`corridor.links.select.choose_backend`.
"""

from __future__ import annotations

from typing import Any, Protocol

#: The backends, in the order ``auto`` prefers them.
LINK_BACKENDS: tuple[str, ...] = ("netem", "userspace")
#: What a user may ask for: a backend, or ``auto``.
BACKEND_CHOICES: tuple[str, ...] = ("auto", *LINK_BACKENDS)


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
