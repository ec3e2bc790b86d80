"""Workload runners: place agents on a network's hosts, run them, collect their records.

Stage: workload run. Each workload module (``training``, ``inference``)
exposes ``validate``, ``run``, ``predict`` and ``PATTERNS`` (see
INTERFACES.md); runners drive any :class:`corridor.emulation.api.Network`.
"""

from __future__ import annotations
