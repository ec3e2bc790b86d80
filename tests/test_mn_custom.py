"""`mn --custom topologies/corridor_topos.py` starts a preset under Mininet's own CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.corridor_root
def test_mn_custom_two_site_pings_across_the_corridor() -> None:
    if shutil.which("mn") is None:
        pytest.skip("mn is not on PATH (apt install mininet)")
    result = subprocess.run(
        ["mn", "--custom", "topologies/corridor_topos.py", "--topo", "two-site,userspace", "--switch", "lxbr",
         "--controller", "none"],
        input="rem-gpu1 ping -c 3 -i 0.2 cty-cli1\nexit\n", cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    out = result.stdout + result.stderr
    assert "Caught exception" not in out, out[-2000:]
    assert "3 received, 0% packet loss" in out, out[-2000:]
    assert "userspace link backend" in out
