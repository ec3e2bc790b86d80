"""Planning: a validated spec turned into the exact network to build, before anything runs.

Stage: plan (pure). ``plan`` is the frozen plan, ``planner`` builds it from a
topology, ``points`` expands an experiment into units of work with the plan each
placement runs on, ``scale`` divides rates and sizes for scale-model emulation.
Imports the spec and geography stages; never the emulation.
"""

from __future__ import annotations
