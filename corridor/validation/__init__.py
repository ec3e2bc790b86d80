"""Validation against the published record: corridor's model set beside what others measured or simulated.

Stage: analysis/model (pure: no root, no network, no I/O). Each module holds one
published source as data (the figures, where they come from, what was read
from the source and what had to be assumed) and a function that recomputes
corridor's figure for the same case, so ``corridor validate`` and the tests
compare the two without running anything:

- :mod:`corridor.validation.latency`: CAICT Q1 2024 hub-cluster latencies per
  network layer, and the fit of the layers' stretch and overheads to them;
- :mod:`corridor.validation.streaming_diloco`: Table 4 of Streaming DiLoCo
  (bandwidth needed for a compute utilisation) against
  :mod:`corridor.analytic.diloco`.

The latency SLO presets (:mod:`corridor.spec.slo_presets`) live with the experiment
spec that selects them; ``corridor validate`` lists them with their sources.
"""

from __future__ import annotations
