"""Results: the run directory and everything read from it.

Stage: records, analysis, plots and report (pure; no root, no network). ``rundir``
is the run directory's contract and ``records`` its record schema; ``verdict``
judges placements, ``plots`` and ``mapplot`` draw figures, ``report`` writes the
HTML/Markdown report, ``flent`` exports link samples. Reads run directories only;
never imports the emulation or the run-time workload code.
"""

from __future__ import annotations
