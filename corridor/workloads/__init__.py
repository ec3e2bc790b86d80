"""Workload runners: place agents on a network's hosts, run them, collect their records.

Stage: workload run. Each workload module (``training``, ``inference``)
exposes ``validate(params, *, where)``, ``run(net, params, *, hosts, seed, timeout_s)``,
``predict(params, plan, *, hosts)`` and ``PATTERNS``, and returns flat records with a
``kind`` and units in key names; runners drive any :class:`corridor.emulation.api.Network`.
"""

from __future__ import annotations
