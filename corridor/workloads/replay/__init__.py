"""Generic message-trace replay: ``run`` sends a recorded exchange again across a network.

Not a workload kind of the registry (an experiment does not name it): a
library function, :func:`corridor.workloads.replay.run.replay_messages`, for
scripts and tests (docs/workloads.md, "Message traces"). This file imports
nothing.
"""

from __future__ import annotations
