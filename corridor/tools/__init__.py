"""Measurement tools around a corridor: check, link bench, capture, MPI bench, doctor, netem VM.

Stage: emulation and workload run (most need root). Each module backs one CLI
command: ``check`` measures every WAN link against its contract, ``linkbench``
the delay line's fidelity, ``capture`` a link's packets as a trace, ``mpibench``
OpenMPI across a corridor, ``doctor`` what this machine can emulate, ``vm`` runs a
command in a netem-capable kernel. May import every earlier stage; nothing pure
imports this package.
"""

from __future__ import annotations
