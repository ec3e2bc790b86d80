"""``corridor schema``: the JSON Schemas accept every built-in topology and experiment and reject bad documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corridor.cli import cli
from corridor.spec.schema import schema_for
from corridor.spec.yamlio import loads_yaml

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra (pip install -e .[test])")

REPO = Path(__file__).resolve().parent.parent
FILES = [("topology", p) for p in sorted((REPO / "topologies").glob("*.yaml"))]
FILES += [("experiment", p) for p in sorted((REPO / "experiments").glob("*.yaml"))]


def _validator(kind: str) -> Any:
    result = CliRunner().invoke(cli, ["schema", kind])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_there_are_files_of_both_kinds() -> None:
    assert {kind for kind, _ in FILES} == {"topology", "experiment"} and len(FILES) >= 6


@pytest.mark.parametrize(("kind", "path"), FILES, ids=[p.name for _, p in FILES])
def test_every_built_in_file_is_valid(kind: str, path: Path) -> None:
    data = loads_yaml(path.read_text(encoding="utf-8"), path=str(path))
    errors = [f"{list(e.path)}: {e.message}" for e in _validator(kind).iter_errors(data)]
    assert errors == []


TWO_SITE = {"sites": {"a": {"place": "urumqi"}, "b": {"place": "shanghai"}},
            "links": [{"between": ["a", "b"], "delay": "25ms"}]}


@pytest.mark.parametrize(("change", "where"), [
    ({"colour": "red"}, []),  # unknown top-level key
    ({"sites": {}}, ["sites"]),  # no site
    ({"links": [{"delay": "25ms"}]}, ["links", 0]),  # between missing
    ({"links": [{"between": ["a", "b"], "dealy": "25ms"}]}, ["links", 0]),  # misspelt key
    ({"links": [{"between": ["a", "b"], "fibre": "copper"}]}, ["links", 0, "fibre"]),
    ({"sites": {"a": {"kind": "moon"}}}, ["sites", "a"]),
    ({"sites": {"a": {"hosts": {"gpu": -1}}}}, ["sites", "a"]),
])
def test_bad_topologies_are_rejected(change: dict[str, Any], where: list[Any]) -> None:
    validator = _validator("topology")
    assert list(validator.iter_errors(TWO_SITE)) == []
    errors = list(validator.iter_errors({**TWO_SITE, **change}))
    assert errors and any(list(e.absolute_path)[:len(where)] == where for e in errors)


EXPERIMENT = {"topology": "two-site", "workloads": [
    {"name": "chat", "type": "chat", "params": {"requests": 10}, "slo": {"ttft": "250ms", "tpot": "100ms"}},
    {"name": "dp", "type": "allreduce", "params": {"steps": 5}, "slo": {"max_slowdown": 1.1}},
]}


@pytest.mark.parametrize("change", [
    {"topology": None},
    {"sweep": {"distance": ["1000km"], "colour": ["red"]}},
    {"workloads": [{"name": "x", "type": "no-such-pattern"}]},
    {"workloads": [{"name": "x", "type": "chat", "params": {"steps": 5}}]},  # a training key on chat
    {"workloads": [{"name": "x", "type": "allreduce", "slo": {"ttft": "1s"}}]},  # an inference SLO on training
    {"workloads": [{"name": "x", "type": "allreduce", "timout": "1s"}]},
    {"repetitions": 0},
])
def test_bad_experiments_are_rejected(change: dict[str, Any]) -> None:
    validator = _validator("experiment")
    assert list(validator.iter_errors(EXPERIMENT)) == []
    doc = {**EXPERIMENT, **change}
    if change.get("topology", "") is None:
        del doc["topology"]
    assert list(validator.iter_errors(doc))


def test_schema_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "topology.schema.json"
    result = CliRunner().invoke(cli, ["schema", "topology", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == schema_for("topology")
