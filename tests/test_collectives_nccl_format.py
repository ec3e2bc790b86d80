"""``bench collective --format nccl-tests``: a parser written from nccl-tests' output format reads it (no root)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner

from corridor.agent.collectives import busbw_factor
from corridor.cli import cli
from corridor.cli.bench_collective import nccl_tests_lines, table_lines


@dataclass(frozen=True)
class Row:
    size_bytes: int
    count: int
    dtype: str
    redop: str
    root: int
    time_us: float
    algbw_gbs: float
    busbw_gbs: float
    wrong: str
    inplace_time_us: float
    inplace_algbw_gbs: float
    inplace_busbw_gbs: float
    inplace_wrong: str


@dataclass(frozen=True)
class Report:
    rows: list[Row]
    out_of_bounds: int
    avg_busbw_gbs: float
    comments: list[str]


def parse_nccl_tests(text: str) -> Report:
    """nccl-tests stdout: '#' comment lines, one 13-column row per size, then the two summary lines."""
    rows: list[Row] = []
    comments: list[str] = []
    oob: int | None = None
    avg: float | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            body = line[1:].strip()
            if body.startswith("Out of bounds values"):
                oob = int(body.split(":", 1)[1].split()[0])
            elif body.startswith("Avg bus bandwidth"):
                avg = float(body.split(":", 1)[1].split()[0])
            else:
                comments.append(body)
            continue
        f = line.split()
        assert len(f) == 13, f"a result row has 13 columns: {line!r}"
        rows.append(Row(int(f[0]), int(f[1]), f[2], f[3], int(f[4]), float(f[5]), float(f[6]), float(f[7]), f[8],
                        float(f[9]), float(f[10]), float(f[11]), f[12]))
    assert oob is not None and avg is not None, "the closing summary lines are missing"
    return Report(rows, oob, avg, comments)


def _records(algorithm: str, n: int, times_s: dict[int, float]) -> list[dict[str, Any]]:
    out = []
    for size, t in times_s.items():
        algbw = size * 8 / t / 1e9
        out.append({"kind": "collective", "algorithm": algorithm, "size_bytes": size, "n_ranks": n, "iters": 5,
                    "time_s": t, "algbw_gbps": algbw, "busbw_gbps": algbw * busbw_factor(algorithm, n),
                    "wan_bytes": 2 * size, "predicted_time_s": t * 0.9, "error_pct": 11.1})
    return out


TIMES = {65536: 0.000042, 1 << 20: 0.0031, 16 << 20: 0.0525, 256 << 20: 1.37}


@pytest.mark.parametrize(("algorithm", "redop", "root", "per_rank"), [
    ("ring", "sum", -1, False),
    ("all_gather", "none", -1, True),
    ("reduce_scatter", "sum", -1, True),
    ("parameter_server", "sum", 0, False),
])
def test_parser_reads_sizes_times_and_bandwidths(algorithm: str, redop: str, root: int, per_rank: bool) -> None:
    n = 4
    records = _records(algorithm, n, TIMES)
    text = "\n".join(nccl_tests_lines(records, ranks=[f"h{i}" for i in range(n)], header="test", iters=5,
                                      warmup=2))
    report = parse_nccl_tests(text)
    assert [r.size_bytes for r in report.rows] == list(TIMES)
    for row, rec in zip(report.rows, records, strict=True):
        assert row.count == rec["size_bytes"] // 4 // (n if per_rank else 1)
        assert (row.dtype, row.redop, row.root) == ("float", redop, root)
        # time in microseconds, to the precision nccl-tests prints (2 decimals, then 1, then none)
        assert row.time_us == pytest.approx(rec["time_s"] * 1e6, abs=0.5)
        # algbw = bytes / time in GB/s; busbw = algbw x the collective's factor
        assert row.algbw_gbs == pytest.approx(rec["size_bytes"] / (rec["time_s"] * 1e9), abs=0.005)
        assert row.busbw_gbs == pytest.approx(rec["busbw_gbps"] / 8, abs=0.005)
        assert (row.inplace_time_us, row.inplace_algbw_gbs, row.inplace_busbw_gbs) == (
            row.time_us, row.algbw_gbs, row.busbw_gbs)
        assert row.wrong == row.inplace_wrong == "N/A"
    assert report.out_of_bounds == 0
    mean_busbw = sum(r["busbw_gbps"] / 8 for r in records) / len(records)
    assert report.avg_busbw_gbs == pytest.approx(mean_busbw, rel=1e-5)
    assert any("in-place columns repeat the out-of-place" in c for c in report.comments)
    assert any(c.startswith("nThread 1 nGpus 1 minBytes 65536 maxBytes 268435456 step: 16(factor)")
               for c in report.comments)


def test_time_cell_precision_follows_nccl_tests() -> None:
    records = _records("ring", 2, {4096: 42.123456e-6, 8192: 123.456e-6, 16384: 12345.6e-6})
    rows = [line for line in nccl_tests_lines(records, ranks=["a", "b"], header="x", iters=1, warmup=None)
            if not line.startswith("#")]
    assert [line.split()[5] for line in rows] == ["42.12", "123.5", "12346"]


def test_nccl_tests_and_default_tables_agree_on_the_same_records() -> None:
    records = _records("ring", 4, TIMES)
    report = parse_nccl_tests("\n".join(nccl_tests_lines(records, ranks=["a", "b", "c", "d"], header="x", iters=5,
                                                         warmup=None)))
    default = [line.split() for line in table_lines(records)[1:]]
    for row, cells in zip(report.rows, default, strict=True):
        assert int(cells[1]) == row.count
        assert float(cells[2]) * 1e3 == pytest.approx(row.time_us, rel=1e-3, abs=5)  # ms (2 decimals) vs us
        assert float(cells[4]) / 8 == pytest.approx(row.busbw_gbs, abs=0.005)  # Gbit/s vs GB/s


def test_local_run_prints_a_table_the_parser_reads() -> None:
    result = CliRunner().invoke(cli, ["bench", "collective", "--local", "--sizes", "64KiB..256KiB", "--iters", "1",
                                      "--min-time", "0s", "--warmup", "0", "--format", "nccl-tests"])
    assert result.exit_code == 0, result.output
    report = parse_nccl_tests(result.stdout)
    assert [r.size_bytes for r in report.rows] == [65536, 131072, 262144]
    for row in report.rows:
        assert row.time_us > 0
        # the bandwidth columns follow from the time column (printed rounded to 0.01 GB/s)
        assert row.algbw_gbs == pytest.approx(row.size_bytes / (row.time_us * 1e3), abs=0.01)
        assert row.busbw_gbs == pytest.approx(row.algbw_gbs * 1.5, abs=0.02)  # ring all-reduce on 4 ranks
