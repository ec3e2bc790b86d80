"""Agents: the programs that run inside emulated hosts and move a workload's real bytes.

Stage: workload run (inside each host). Everything in this package uses the
standard library only, so an agent starts fast in any network namespace; it is
started as ``python -m corridor.agent ROLE --config JSON`` by a workload
runner (:mod:`corridor.workloads`), which owns placement, ports and cleanup.
"""

from __future__ import annotations
