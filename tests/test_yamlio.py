"""The safe YAML loader: alias bombs, oversize files, duplicate keys and bad bytes are refused fast, naming the file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from corridor.errors import SpecError
from corridor.spec import yamlio
from corridor.spec.experiment import list_experiments, load_experiment
from corridor.spec.topospec import list_presets, load_topology, loads_topology

REPO = Path(__file__).resolve().parent.parent

#: "Billion laughs": nine levels of nine aliases, under 400 bytes, 9**9 scalars once expanded, as a list item value.
BOMB = "\n  - &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  - &{chr(c)} [{', '.join(['*' + chr(c - 1)] * 9)}]\n" for c in range(ord("b"), ord("j"))
)


def test_the_bomb_is_small() -> None:
    assert len(BOMB) < 400


def _load_in_child(loader: str, path: Path) -> dict[str, object]:
    """Load ``path`` in a child process (the old loaders hung on a bomb); returns the error and the time taken."""
    code = (
        "import json, sys, time\n"
        f"from corridor.{loader.rsplit('.', 1)[0]} import {loader.rsplit('.', 1)[1]} as load\n"
        "from corridor.errors import SpecError\n"
        "started = time.monotonic()\n"
        "try:\n"
        "    load(sys.argv[1])\n"
        "    error = None\n"
        "except SpecError as exc:\n"
        "    error = str(exc)[:2000]\n"
        "print(json.dumps({'error': error, 'elapsed_s': time.monotonic() - started}))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              timeout=20, cwd=REPO, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{loader} still ran after 20 s on a {len(path.read_bytes())}-byte alias bomb")
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("loader", "text"),
    [
        ("spec.topospec.load_topology", "name:" + BOMB + "sites: {}\n"),  # the old loaders put it in an error message
        ("spec.experiment.load_experiment", "topology: two-site\nname:" + BOMB),
    ],
)
def test_the_loaders_refuse_an_alias_bomb_fast(tmp_path: Path, loader: str, text: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    result = _load_in_child(loader, path)
    assert isinstance(result["error"], str) and re.search(r"bomb\.yaml: line \d+: its aliases expand", result["error"])
    assert isinstance(result["elapsed_s"], float) and result["elapsed_s"] < 1.0


def test_a_few_shared_aliases_are_fine() -> None:
    text = "base: &b {rate: 1Gbit, loss: 0.5}\nlinks: [*b, *b, *b]\n"
    assert yamlio.loads_yaml(text)["links"][2] == {"rate": "1Gbit", "loss": 0.5}


def test_the_experiment_loader_refuses_duplicate_keys(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("topology: two-site\nseed: 1\nplacements: [{name: local}]\nseed: 2\n")
    with pytest.raises(SpecError, match=r"dup\.yaml: line 4, column 1: not valid YAML: duplicate key 'seed'"):
        load_experiment(str(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", "cannot be recursive"),
        ("[" * 5000 + "]" * 5000, "nested too deeply|not valid YAML"),
        ("a: !!python/object:os.system x\n", "not valid YAML"),
        ("a: {b: 1, b: 2}\n", "duplicate key 'b'"),
        ("a: [unclosed\n", r"line \d+, column \d+: not valid YAML"),
    ],
)
def test_bad_documents_are_spec_errors_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=rf"doc\.yaml: .*({message})"):
        yamlio.loads_yaml(text, path="doc.yaml")


def test_an_oversize_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * yamlio.MAX_DOCUMENT_BYTES + "\n")
    with pytest.raises(SpecError, match=r"big\.yaml: is larger than 1024 KiB"):
        yamlio.load_yaml(path)
    with pytest.raises(SpecError, match=r"big\.yaml: is larger than"):
        load_experiment(str(path))


def test_invalid_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError, match=r"latin\.yaml: is not UTF-8"):
        load_topology(str(path))
    with pytest.raises(SpecError, match=r"latin\.yaml: is not UTF-8"):
        load_experiment(str(path))


def test_loads_topology_goes_through_the_safe_loader() -> None:
    with pytest.raises(SpecError, match=r"t\.yaml: line \d+: its aliases expand"):
        loads_topology("description:" + BOMB, path="t.yaml")


def test_every_built_in_spec_still_loads() -> None:
    for name in list_presets():
        load_topology(name)
    for name in list_experiments():
        load_experiment(name)
