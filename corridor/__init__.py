"""corridor: emulate long-haul compute corridors and judge which AI workloads tolerate them.

Stages, left to right, one package each (a pure stage never imports a later one):
spec/ -> geography/, analytic/ -> planning/ -> emulation/ (with links/) ->
workloads/ (with agent/, traces/) and tools/ -> results/ (records, verdicts, figures, report).
cli/ drives them all; validation/ compares the models with the published record;
cluster/ spreads a network over servers. ``errors`` and ``stats`` serve every stage.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

#: The directory that holds this package: a checkout's root, with topologies/ and experiments/ beside it.
CHECKOUT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
