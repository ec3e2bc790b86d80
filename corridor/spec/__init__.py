"""Input specs: what a user writes, read and validated before anything else runs.

Stage: spec (pure). Owns the quantity parser (``units``), the safe YAML loader
(``yamlio``), the validation toolkit (``validate``), topology files (``topospec``),
experiment files (``experiment``), their JSON Schemas (``schema``), SLO presets and
fault schedules (``faults``). Imports only ``corridor.errors``, ``corridor.stats``,
the geography and the workload kinds' declarations; never the emulation.
"""

from __future__ import annotations
