"""The inference workload kind: LLM serving patterns across the corridor.

``kind`` is the registry's plug-in (pure), ``model`` the analytic TTFT/TPOT model
(pure), ``run`` validates parameters and runs clients and servers on a network
(workload run). A pure caller imports ``kind`` or ``model``, never ``run``; this
file imports nothing, so importing one leaves the others out.
"""

from __future__ import annotations
