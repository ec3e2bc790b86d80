"""The training workload kind: gradient-sync patterns across the corridor.

``kind`` is the registry's plug-in (pure), ``patterns`` the pattern objects that
give both the agents' schedule and the model's walk (pure), ``model`` the analytic
step-time model (pure), ``run`` validates parameters and runs the agents on a
network (workload run). A pure caller imports ``kind``, ``patterns`` or ``model``,
never ``run``; this file imports nothing, so importing one leaves the others out.
"""

from __future__ import annotations
