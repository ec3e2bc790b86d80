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


def _custom_topos(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The ``topos`` dict as ``mn --custom`` sees it: the file run with exec(), no __file__."""
    pytest.importorskip("mininet.cli", reason="Mininet's Python package is not installed (apt install mininet)")
    path = REPO / "topologies" / "corridor_topos.py"
    scope: dict[str, object] = {"__name__": "corridor_topos"}
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), scope)  # noqa: S102 - as mn does
    return scope["topos"]  # type: ignore[return-value]


def test_mn_custom_lists_every_preset_and_those_of_corridor_topologies(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from corridor.spec.topospec import list_presets

    builtin = set(list_presets())
    extra = tmp_path / "mine"
    extra.mkdir()
    (extra / "my-corridor.yaml").write_text((REPO / "topologies" / "two-site.yaml").read_text().replace(
        "name: two-site", "name: my-corridor"))
    monkeypatch.setenv("CORRIDOR_TOPOLOGIES", str(extra))
    topos = _custom_topos(monkeypatch)
    assert builtin | {"my-corridor", "file"} <= set(topos)
    assert {"two-site", "national-hubs"} <= builtin


def test_mn_custom_without_corridor_topologies_lists_the_built_in_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    from corridor.spec.topospec import list_presets

    monkeypatch.delenv("CORRIDOR_TOPOLOGIES", raising=False)
    assert set(_custom_topos(monkeypatch)) == set(list_presets()) | {"file"}
