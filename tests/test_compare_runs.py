"""Two runs held against each other (corridor.results.compare, scripts/compare_runs.py)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from corridor.errors import CorridorError
from corridor.results.compare import compare_rows, read_verdict_rows

FIELDS = ["workload", "placement", "metric", "verdict", "measured", "ci_low", "ci_high"]
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_runs.py"


def run_dir(tmp_path: Path, name: str, rows: list[list[str]]) -> Path:
    out = tmp_path / name
    (out / "derived").mkdir(parents=True)
    with open(out / "derived" / "verdicts.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        writer.writerows(rows)
    return out


def test_words_and_statistics_are_compared_row_by_row(tmp_path: Path) -> None:
    a = run_dir(tmp_path, "a", [["chat", "far", "TTFT p90", "tolerates", "100", "90", "120"],
                                ["dp", "far", "median step time", "does not tolerate", "650", "610", "680"],
                                ["pipe", "far", "median step time", "does not tolerate", "330", "329", "330"],
                                ["agent", "far", "TTFT p90", "tolerates", "66", "65", "79"],
                                ["only-a", "far", "TTFT p90", "tolerates", "1", "1", "1"]])
    b = run_dir(tmp_path, "b", [["chat", "far", "TTFT p90", "tolerates", "130", "115", "140"],  # +30 %, overlap
                                ["dp", "far", "median step time", "does not tolerate", "700", "690", "705"],  # +7.7 %
                                ["pipe", "far", "median step time", "does not tolerate", "400", "398", "401"],
                                ["agent", "far", "TTFT p90", "inconclusive", "67", "60", "90"]])
    rows, unmatched = compare_rows(read_verdict_rows(a), read_verdict_rows(b))
    by = {r.workload: r for r in rows}
    assert unmatched == [("only-a", "far")]
    assert by["chat"].difference == pytest.approx(0.30) and by["chat"].intervals_overlap and by["chat"].agrees
    assert by["dp"].difference == pytest.approx(50 / 650) and not by["dp"].intervals_overlap and by["dp"].agrees
    assert not by["pipe"].statistic_agrees and not by["pipe"].agrees  # +21 %, intervals apart
    assert by["agent"].statistic_agrees and not by["agent"].same_words and not by["agent"].agrees
    done = subprocess.run([sys.executable, str(SCRIPT), str(a), str(b), "--json"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and [r["agrees"] for r in report["rows"]] == [False, True, True, False]
    same = subprocess.run([sys.executable, str(SCRIPT), str(a), str(a)], capture_output=True, text=True, timeout=60)
    assert same.returncode == 0 and "5 of 5 rows agree" in same.stdout


def test_a_run_without_verdicts_names_the_command_that_makes_them(tmp_path: Path) -> None:
    with pytest.raises(CorridorError, match="run `corridor verdicts"):
        read_verdict_rows(tmp_path)
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "does not exist" in done.stderr
