"""One record schema: docs/report.md lists exactly the kinds corridor/results/records.py declares; writers use them."""

from __future__ import annotations

import re
from pathlib import Path

from corridor.results import records

REPO = Path(__file__).resolve().parent.parent


def _documented_kinds() -> list[str]:
    text = (REPO / "docs" / "report.md").read_text(encoding="utf-8")
    start = text.index("Every line of `records.jsonl` has a `kind`")
    table = text[start:text.index("Workload records carry", start)]
    return [m.group(1) for m in re.finditer(r"^\| `(\w+)` \|", table, flags=re.M)]


def test_docs_list_exactly_the_schema_kinds() -> None:
    documented = _documented_kinds()
    assert len(documented) == len(set(documented)), "a kind is listed twice"
    assert set(documented) == set(records.SCHEMA), (
        f"only in docs: {sorted(set(documented) - set(records.SCHEMA))}; "
        f"only in corridor/results/records.py: {sorted(set(records.SCHEMA) - set(documented))}")


def test_every_kind_written_in_the_package_is_declared() -> None:
    written: set[str] = set()
    for path in (REPO / "corridor").rglob("*.py"):
        written.update(re.findall(r'"kind": "(\w+)"', path.read_text(encoding="utf-8")))
    assert written, "the scan found no record writers"
    assert written <= set(records.SCHEMA), f"undeclared kinds: {sorted(written - set(records.SCHEMA))}"


def test_missing_fields_are_named() -> None:
    kind = records.SCHEMA[records.TRAIN_STEP]
    assert kind.missing({"kind": "train_step", "step": 1}) == [f for f in kind.required if f != "step"]
    assert records.kind_of({"kind": "no-such"}) is None
