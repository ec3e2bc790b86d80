"""Corridors spread over several servers: the cluster file, the placer, and checks over ssh.

Stages: :mod:`corridor.cluster.spec` (spec, pure) reads and validates the cluster
file; :mod:`corridor.cluster.placer` (plan, pure) assigns every site and every
WAN link's wire node to a server; :mod:`corridor.cluster.ssh` (emulation) builds
the ssh argv lists and runs them; :mod:`corridor.cluster.doctor` (emulation)
checks that each server can take its part. See docs/cluster.md.
"""

from __future__ import annotations
