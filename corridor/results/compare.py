"""Two runs of one experiment side by side: the same verdict words, and statistics that agree.

Stage: results (pure; reads two run directories' ``derived/verdicts.csv``). Used to
hold a run on another set-up (a network spread over a cluster's servers, another
machine, another link backend) against a reference run: for each workload and
placement both runs judged, the verdict words must be the same, and the compared
statistic must be within :data:`AGREE_FRACTION` of the reference, or the two 95 %
intervals must overlap (the runs cannot be told apart). ``scripts/compare_runs.py``
prints the table.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corridor.errors import CorridorError

#: How far apart two measurements of one statistic may be and still agree, as a fraction of the reference.
AGREE_FRACTION = 0.10


@dataclass(frozen=True)
class RowComparison:
    """One workload at one placement in both runs."""

    workload: str
    placement: str
    metric: str
    verdict_a: str
    verdict_b: str
    measured_a: float | None
    measured_b: float | None
    interval_a: tuple[float | None, float | None]
    interval_b: tuple[float | None, float | None]

    @property
    def same_words(self) -> bool:
        return self.verdict_a == self.verdict_b

    @property
    def difference(self) -> float | None:
        """(b - a) / a, or None where either run has no value or the reference is zero."""
        if self.measured_a is None or self.measured_b is None or self.measured_a == 0:
            return None
        return (self.measured_b - self.measured_a) / abs(self.measured_a)

    @property
    def intervals_overlap(self) -> bool:
        low_a, high_a = self.interval_a
        low_b, high_b = self.interval_b
        if None in (low_a, high_a, low_b, high_b):
            return False
        assert low_a is not None and high_a is not None and low_b is not None and high_b is not None
        return low_a <= high_b and low_b <= high_a

    @property
    def statistic_agrees(self) -> bool:
        diff = self.difference
        return (diff is not None and abs(diff) <= AGREE_FRACTION) or self.intervals_overlap

    @property
    def agrees(self) -> bool:
        return self.same_words and self.statistic_agrees

    def as_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "placement": self.placement, "metric": self.metric,
                "verdict_a": self.verdict_a, "verdict_b": self.verdict_b, "measured_a": self.measured_a,
                "measured_b": self.measured_b, "interval_a": list(self.interval_a),
                "interval_b": list(self.interval_b), "difference": self.difference,
                "intervals_overlap": self.intervals_overlap, "agrees": self.agrees}


def _number(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def read_verdict_rows(run_dir: str | Path) -> dict[tuple[str, str], dict[str, str]]:
    """``derived/verdicts.csv`` of a run, by (workload, placement)."""
    path = Path(run_dir) / "derived" / "verdicts.csv"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise CorridorError(f"{path} does not exist; run `corridor verdicts {run_dir}` first") from None
    except OSError as exc:
        raise CorridorError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return {(row["workload"], row["placement"]): row for row in rows}


def compare_rows(a: dict[tuple[str, str], dict[str, str]], b: dict[tuple[str, str], dict[str, str]]
                 ) -> tuple[list[RowComparison], list[tuple[str, str]]]:
    """Comparisons for every (workload, placement) both runs have, and the keys only one of them has."""
    out = []
    for key in sorted(set(a) & set(b)):
        ra, rb = a[key], b[key]
        out.append(RowComparison(
            workload=key[0], placement=key[1], metric=ra.get("metric", ""), verdict_a=ra.get("verdict", ""),
            verdict_b=rb.get("verdict", ""), measured_a=_number(ra.get("measured")),
            measured_b=_number(rb.get("measured")),
            interval_a=(_number(ra.get("ci_low")), _number(ra.get("ci_high"))),
            interval_b=(_number(rb.get("ci_low")), _number(rb.get("ci_high")))))
    return out, sorted(set(a) ^ set(b))
