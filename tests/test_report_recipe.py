"""The pandas recipe of docs/report.md reproduces the verdict table's median step time, on a fake run."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_experiment_fakes import run_fake, use_fakes  # noqa: F401

from corridor.cli import cli
from corridor.results.rundir import read_run
from corridor.results.verdict import compute_verdicts

pd = pytest.importorskip("pandas", reason="pandas comes with the analysis extra (pip install -e .[analysis])")

DOC = Path(__file__).resolve().parent.parent / "docs" / "report.md"


def _recipe() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    (recipe,) = [b for b in blocks if "median_ms" in b]
    return recipe


def _run_recipe(csv_path: str, workload: str) -> Any:
    code = _recipe()
    code, n_csv = re.subn(r'^CSV = ".*"$', f"CSV = {csv_path!r}", code, flags=re.M)
    code, n_workload = re.subn(r'^WORKLOAD = ".*"$', f"WORKLOAD = {workload!r}", code, flags=re.M)
    assert n_csv == n_workload == 1, "the recipe names its CSV and workload on lines of their own"
    scope: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - the documentation's own code
    return scope["median_ms"]


def _key(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


@pytest.mark.parametrize("workload", ["dp", "diloco"])
def test_the_pandas_recipe_gives_the_verdict_tables_numbers(workload: str, tmp_path: Path,
                                                            use_fakes: None) -> None:  # noqa: F811
    run_dir = run_fake(tmp_path)
    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", run_dir, "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    median_ms = _run_recipe(str(out / "records-train_step.csv"), workload)
    by_key = {(placement, _key(distance)): float(value)
              for (placement, distance, *_rest), value in median_ms.items()}
    verdicts = [v for v in compute_verdicts(read_run(run_dir)) if v.workload == workload and v.group == workload]
    assert len(verdicts) == 2  # two swept distances
    for v in verdicts:
        assert v.metric == "median step time" and v.unit == "ms"
        assert by_key[(v.placement, _key(v.sweep["distance_km"]))] == pytest.approx(v.measured, rel=1e-9)
        assert by_key[("local", None)] == pytest.approx(v.baseline, rel=1e-9)
