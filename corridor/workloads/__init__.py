"""Workloads: the kinds that run across a corridor, the registry of them, and the runner.

Stage: workload run. One package per kind (``training/``, ``inference/``, ``bulk/``),
each holding its parameters, patterns, analytic model, measure/judge and run;
``kind`` is the protocol a kind implements and ``registry`` the one list of kinds.
``replay/`` sends a generic message trace again; ``agents`` is the runners'
one handle on a started agent, whatever its role. ``runner`` runs an experiment's points into a
run directory (root); ``runcost`` and ``runnercost`` measure what running costs.
Kinds return flat records with a ``kind`` and units in key names, and drive any
:class:`corridor.emulation.api.Network`.
"""

from __future__ import annotations
