"""Corridor presets for Mininet's own command line.

    sudo mn --custom topologies/corridor_topos.py --topo two-site --switch lxbr --controller none

starts a preset with Mininet's CLI (``rem-gpu1 ping cty-gpu1``). Site switches,
routers and WAN wires come from corridor's own node classes whatever
``--switch`` says. WAN links use the link backend chosen like ``--link-backend
auto`` (netem where the kernel has it, else the userspace delay line); pass
one explicitly as ``--topo two-site,userspace``. A topology file works as
``--topo file,/path/to/spec.yaml``.
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from corridor.emulation.topo import CorridorTopo  # noqa: E402
from corridor.links.select import choose_backend  # noqa: E402
from corridor.planner import build_plan  # noqa: E402
from corridor.spec import load_topology  # noqa: E402


def _make(name: str):  # type: ignore[no-untyped-def]
    def build(arg: str = "auto", path: str | None = None) -> CorridorTopo:
        if name == "file":
            spec = load_topology(arg if path is None else path)
            backend = "auto" if path is None else arg
        else:
            spec, backend = load_topology(name), arg
        choice = choose_backend(backend)
        print(f"*** corridor: {spec.name} with the {choice.name} link backend ({choice.reason})")
        state_dir = tempfile.mkdtemp(prefix="corridor-mn-")
        return CorridorTopo(plan=build_plan(spec), backend=choice.name, state_dir=state_dir)

    return build


topos = {name: _make(name) for name in ("two-site", "local", "xinjiang-coastal", "east-data-west", "file")}
