"""Analytic models: what the corridor should do to a workload, from the plan's numbers alone.

Stage: model (pure: no root, no network, no I/O). The workload runners store
these predictions beside every measurement; run standalone, they answer for
scales no machine can emulate (thousands of GPUs, 400 Gbit/s wavelengths).
"""

from __future__ import annotations
