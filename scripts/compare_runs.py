#!/usr/bin/env python3
"""Hold one run of an experiment against another: the same verdict words, statistics within 10 % or CIs.

    .venv/bin/python scripts/compare_runs.py REFERENCE_RUN OTHER_RUN [--json]

For each workload and placement both runs judged, prints both verdicts, both
compared statistics with their 95 % intervals, and whether they agree (the same
words, and the statistic within 10 % of the reference or the two intervals
overlapping). Exit status 0 when every row agrees, 1 otherwise, 2 on bad input.
Typical use: a quickstart run on one machine against the same run spread over a
cluster's servers (docs/cluster.md).
"""

from __future__ import annotations

import argparse
import json
import sys

from corridor.errors import CorridorError
from corridor.results.compare import AGREE_FRACTION, compare_rows, read_verdict_rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference")
    parser.add_argument("other")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = parser.parse_args()
    try:
        rows, unmatched = compare_rows(read_verdict_rows(args.reference), read_verdict_rows(args.other))
    except CorridorError as exc:
        print(f"compare_runs: {exc}", file=sys.stderr)
        return 2
    ok = bool(rows) and all(r.agrees for r in rows)
    if args.json:
        print(json.dumps({"ok": ok, "rows": [r.as_dict() for r in rows], "only_in_one": [list(k) for k in unmatched]},
                         indent=1))
        return 0 if ok else 1
    for r in rows:
        diff = "-" if r.difference is None else f"{r.difference:+.1%}"
        how = ("same words" if r.same_words else f"WORDS DIFFER ({r.verdict_b})") + "; " + (
            f"within {AGREE_FRACTION:.0%}" if r.difference is not None and abs(r.difference) <= AGREE_FRACTION
            else "intervals overlap" if r.intervals_overlap else "STATISTIC DIFFERS")
        print(f"{r.workload} @ {r.placement}: {r.verdict_a}; {r.metric} {_fmt(r.measured_a)} "
              f"[{_fmt(r.interval_a[0])}, {_fmt(r.interval_a[1])}] vs {_fmt(r.measured_b)} "
              f"[{_fmt(r.interval_b[0])}, {_fmt(r.interval_b[1])}] ({diff}): {how}")
    for key in unmatched:
        print(f"{key[0]} @ {key[1]}: judged in one run only")
    print(f"{sum(r.agrees for r in rows)} of {len(rows)} rows agree")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
