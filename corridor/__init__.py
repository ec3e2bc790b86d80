"""corridor: emulate long-haul compute corridors and judge which AI workloads tolerate them.

Stages, left to right (each imports only from stages before it):
spec -> model -> plan -> emulation -> workload run -> records -> analysis -> plots/report.
"""

from __future__ import annotations

__version__ = "0.1.0"
