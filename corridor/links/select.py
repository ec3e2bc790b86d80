"""Which link backend a network is built with, and why.

Stage: emulation (calls the netem probe, which needs root). ``auto`` takes
netem where it works (kernel tc is cheaper and better tested than a process
per link) and the userspace delay line everywhere else; an explicit ``netem``
on a kernel without it is an error that names the fix. The reason travels
with the choice so commands can print it and store it with results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from corridor.errors import EmulationError
from corridor.links.backends import BACKEND_CHOICES
from corridor.links.probe import probe_netem

log = logging.getLogger("corridor.links.select")

#: Backends a user can ask for; ``auto`` resolves to one of the others (the list lives in links/backends.py).
BACKENDS = BACKEND_CHOICES


@dataclass(frozen=True)
class BackendChoice:
    """The backend a network is built with (``netem`` or ``userspace``) and a sentence saying why."""

    name: str
    reason: str


def choose_backend(requested: str) -> BackendChoice:
    """Resolve ``--link-backend`` to a backend, probing netem when that decides it."""
    if requested not in BACKENDS:
        raise EmulationError(f"unknown link backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if requested == "userspace":
        return BackendChoice("userspace", "userspace delay line requested")
    probe = probe_netem()
    if requested == "netem":
        if not probe.ok:
            raise EmulationError(
                f"the netem link backend cannot run here: {probe.reason}; "
                "use --link-backend userspace or run in the VM (python -m corridor.tools.vm -- ...)"
            )
        return BackendChoice("netem", f"netem requested and available: {probe.reason}")
    if probe.ok:
        choice = BackendChoice("netem", f"auto: kernel netem works here ({probe.reason})")
    else:
        choice = BackendChoice("userspace", f"auto: netem unavailable, using the userspace delay line ({probe.reason})")
    log.info("link backend: %s (%s)", choice.name, choice.reason)
    return choice
