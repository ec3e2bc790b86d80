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

import atexit
import cmd
import inspect
import os
import shutil
import sys
import tempfile

from mininet.cli import CLI

# mn runs this file with exec() and no __file__; the code object still knows its path.
_HERE = os.path.dirname(os.path.abspath(inspect.currentframe().f_code.co_filename))  # type: ignore[union-attr]
sys.path.insert(0, os.path.dirname(_HERE))

from corridor.emulation.network import resolve_backend  # noqa: E402
from corridor.emulation.topo import CorridorTopo  # noqa: E402
from corridor.planning.points import plan_for_topology  # noqa: E402
from corridor.spec.topospec import list_presets, topologies_dir  # noqa: E402

# Corridor node names contain '-' (rem-gpu1); let Mininet's CLI read them as node names.
CLI.identchars = cmd.IDENTCHARS + "-"


def _presets() -> dict[str, str]:
    """Preset name -> its YAML file: the files beside this one, and every preset of $CORRIDOR_TOPOLOGIES
    (which wins where both have a name)."""
    found = {f[: -len(".yaml")]: os.path.join(_HERE, f) for f in sorted(os.listdir(_HERE)) if f.endswith(".yaml")}
    found.update({name: str(topologies_dir() / f"{name}.yaml") for name in list_presets()})
    return found


def _make(name: str, preset_path: str | None = None):  # type: ignore[no-untyped-def]
    def build(arg: str = "auto", path: str | None = None) -> CorridorTopo:
        if name == "file":
            plan = plan_for_topology(arg if path is None else path)
            backend = "auto" if path is None else arg
        else:
            plan, backend = plan_for_topology(preset_path or name), arg
        name_, reason = resolve_backend(backend)
        print(f"*** corridor: {plan.name} with the {name_} link backend ({reason})")
        state_dir = tempfile.mkdtemp(prefix="corridor-mn-")
        atexit.register(shutil.rmtree, state_dir, True)
        return CorridorTopo(plan=plan, backend=name_, state_dir=state_dir)

    return build


topos = {**{name: _make(name, path) for name, path in _presets().items()}, "file": _make("file")}
