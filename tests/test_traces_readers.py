"""Trace readers: small generated traces in each format, windows, and a table of malformed inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corridor.errors import TraceError
from corridor.traces import ReplayWindow, detect_format, generic, read_requests

SAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "azure_llm_inference_2023_code.csv"

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:04.0319600,3180,8
2023-11-16 18:17:05.0000000,110,27
2023-11-16 18:17:07.5000000,7433,14
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _mooncake(tmp_path: Path) -> Path:
    lines = [{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [0, 1, 2]},
             {"timestamp": 1500, "input_length": 6472, "output_length": 26, "hash_ids": [0, 3]},
             {"timestamp": 4000, "input_length": 100, "output_length": 1, "hash_ids": []}]
    return _write(tmp_path, "mc.jsonl", "".join(json.dumps(x) + "\n" for x in lines))


def _generic(tmp_path: Path) -> Path:
    lines = [{"time_s": 0.0, "src": "a", "dst": "b", "bytes": 100, "kind": "request"},
             {"time_s": 0.25, "src": "b", "dst": "a", "bytes": 20, "kind": "token"},
             {"time_s": 1.0, "src": "b", "dst": "a", "bytes": 20, "kind": "token"}]
    return _write(tmp_path, "g.jsonl", "".join(json.dumps(x) + "\n" for x in lines))


def test_azure_reads_times_relative_to_first_request(tmp_path: Path) -> None:
    reqs = list(read_requests(_write(tmp_path, "a.csv", AZURE)))
    assert [r.prompt_tokens for r in reqs] == [4808, 3180, 110, 7433]
    assert [r.output_tokens for r in reqs] == [10, 8, 27, 14]
    assert reqs[0].t_s == 0.0
    assert reqs[1].t_s == pytest.approx(0.052, abs=1e-6)
    assert reqs[3].t_s == pytest.approx(3.52004, abs=1e-6)
    assert [r.line for r in reqs] == [2, 3, 4, 5]


def test_window_speed_and_cap(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.csv", AZURE)
    reqs = list(read_requests(path, window=ReplayWindow(start_s=0.5, window_s=3.0, speed=2.0)))
    # records at 1.02 s and 3.52 s fall in [0.5, 3.5) -> only the first; re-based and halved
    assert [r.prompt_tokens for r in reqs] == [110]
    assert reqs[0].t_s == pytest.approx((1.02004 - 0.5) / 2, abs=1e-6)
    capped = list(read_requests(path, window=ReplayWindow(cap=2)))
    assert len(capped) == 2


def test_mooncake_reads_milliseconds_and_hash_ids(tmp_path: Path) -> None:
    reqs = list(read_requests(_mooncake(tmp_path)))
    assert [r.t_s for r in reqs] == [0.0, 1.5, 4.0]
    assert reqs[0].hash_ids == (0, 1, 2)
    assert reqs[1].prompt_tokens == 6472 and reqs[1].output_tokens == 26


def test_generic_round_trip(tmp_path: Path) -> None:
    msgs = list(generic.read(_generic(tmp_path), ReplayWindow(speed=0.5)))
    assert [m.time_s for m in msgs] == [0.0, 0.5, 2.0]
    out = tmp_path / "out.jsonl"
    with out.open("w") as f:
        assert generic.write(msgs, f) == (3, 140)
    again = list(generic.read(out))
    assert [(m.src, m.dst, m.size_bytes, m.kind) for m in again] == [(m.src, m.dst, m.size_bytes, m.kind)
                                                                      for m in msgs]


def test_readers_stream_lazily(tmp_path: Path) -> None:
    # a bad line after the first record must not be read until the iterator gets there
    path = _write(tmp_path, "a.csv", AZURE + "garbage\n")
    it = read_requests(path)
    assert next(it).prompt_tokens == 4808
    with pytest.raises(TraceError, match=r"a\.csv:6"):
        list(it)


@pytest.mark.parametrize("name, maker", [("a.csv", lambda p: _write(p, "a.csv", AZURE)),
                                         ("mc.jsonl", _mooncake), ("g.jsonl", _generic)])
def test_detect_format(tmp_path: Path, name: str, maker: object) -> None:
    path = maker(tmp_path)  # type: ignore[operator]
    assert detect_format(path) == {"a.csv": "azure", "mc.jsonl": "mooncake", "g.jsonl": "generic"}[name]


BAD_AZURE = [
    ("bad header", "TIME,Ctx,Gen\n2023-11-16 18:17:03.97,1,1\n", 1, "bad header"),
    ("bad timestamp", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-13-45 99:17:03.97,1,1\n", 2, "bad timestamp"),
    ("timestamp text", "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n", 2, "bad timestamp"),
    ("negative length", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,-5,1\n", 2, "negative"),
    ("non-integer", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,1.5,1\n", 2, "whole number"),
    ("truncated line", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,1,1\n2023-11-16 18:1",
     3, "3 comma-separated"),
    ("backwards", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:04,1,1\n2023-11-16 18:17:03,1,1\n",
     3, "backwards"),
]

BAD_JSONL = [
    ("mooncake", "truncated line", '{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 10, "inp',
     2, "truncated"),
    ("mooncake", "bad timestamp", '{"timestamp": "soon", "input_length": 5, "output_length": 1}\n', 1,
     "bad timestamp"),
    ("mooncake", "negative length", '{"timestamp": 1, "input_length": -5, "output_length": 1}\n', 1, "negative"),
    ("mooncake", "missing key", '{"timestamp": 1, "input_length": 5}\n', 1, "missing"),
    ("mooncake", "bad hash ids", '{"timestamp": 1, "input_length": 5, "output_length": 1, "hash_ids": "x"}\n', 1,
     "hash_ids"),
    ("mooncake", "not an object", '[1, 2, 3]\n', 1, "JSON object"),
    ("generic", "truncated line", '{"time_s": 0, "src": "a", "dst": "b", "bytes": 5, "kind": "x"}\n{"time_s"', 2,
     "truncated"),
    ("generic", "bad timestamp", '{"time_s": -1, "src": "a", "dst": "b", "bytes": 5, "kind": "x"}\n', 1,
     "bad timestamp"),
    ("generic", "negative length", '{"time_s": 0, "src": "a", "dst": "b", "bytes": -5, "kind": "x"}\n', 1,
     "negative"),
    ("generic", "empty endpoint", '{"time_s": 0, "src": "", "dst": "b", "bytes": 5, "kind": "x"}\n', 1, "src"),
]


@pytest.mark.parametrize("label, text, line, words", BAD_AZURE, ids=[b[0] for b in BAD_AZURE])
def test_malformed_azure_names_file_and_line(tmp_path: Path, label: str, text: str, line: int, words: str) -> None:
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(TraceError, match=rf"bad\.csv:{line}: .*{words}"):
        list(read_requests(path, "azure"))


@pytest.mark.parametrize("fmt, label, text, line, words", BAD_JSONL, ids=[f"{b[0]}-{b[1]}" for b in BAD_JSONL])
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, fmt: str, label: str, text: str, line: int,
                                             words: str) -> None:
    path = _write(tmp_path, "bad.jsonl", text)
    with pytest.raises(TraceError, match=rf"bad\.jsonl:{line}: .*{words}"):
        list(read_requests(path, fmt) if fmt == "mooncake" else generic.read(path))


@pytest.mark.parametrize("kwargs", [{"speed": 0}, {"speed": -1}, {"window_s": 0}, {"start_s": -1}, {"cap": -1}])
def test_bad_window_options(kwargs: dict[str, float]) -> None:
    with pytest.raises(TraceError):
        ReplayWindow(**kwargs)  # type: ignore[arg-type]


def test_unknown_format_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "what.txt", "hello\n")
    with pytest.raises(TraceError, match=r"what\.txt:1"):
        detect_format(path)


def test_real_azure_sample_first_ten_minutes() -> None:
    if not SAMPLE.exists():
        pytest.skip(f"Azure sample not present at {SAMPLE} (CC-BY 4.0, from Azure/AzurePublicDataset)")
    reqs = list(read_requests(SAMPLE, window=ReplayWindow(window_s=600.0)))
    assert len(reqs) == 1482
    assert all(0 <= r.t_s < 600 for r in reqs)
    assert all(b.t_s >= a.t_s for a, b in zip(reqs, reqs[1:], strict=False))
    assert reqs[0].prompt_tokens == 4808 and reqs[0].output_tokens == 10


# -- hostile input: every malformed file is a TraceError naming file and line, sizes are bounded ------------------

_AZ_HEAD = b"TIMESTAMP,ContextTokens,GeneratedTokens\n"
_AZ_ROW = b"2023-11-16 18:17:03.9799600,%s,%s\n"


def _mc(input_length: bytes = b"5", timestamp: bytes = b"0") -> bytes:
    return b'{"timestamp": %s, "input_length": %s, "output_length": 1}\n' % (timestamp, input_length)


def _gen(size: bytes = b"5", time_s: bytes = b"0") -> bytes:
    return b'{"time_s": %s, "src": "a", "dst": "b", "bytes": %s, "kind": "x"}\n' % (time_s, size)


HOSTILE = [
    ("azure", "header without a newline", b"TIMESTAMP,ContextTokens,GeneratedTokens", 1, "no newline"),
    ("azure", "invalid utf-8", _AZ_HEAD + _AZ_ROW % (b"48\xff8", b"1"), 2, "not UTF-8"),
    ("azure", "40-digit token count", _AZ_HEAD + _AZ_ROW % (b"9" * 40, b"1"), 2, "at most 10,000,000"),
    ("azure", "5000-digit token count", _AZ_HEAD + _AZ_ROW % (b"1", b"9" * 5000), 2, "at most 10,000,000"),
    ("azure", "one token over the bound", _AZ_HEAD + _AZ_ROW % (b"10000001", b"1"), 2, "at most 10,000,000"),
    ("azure", "a line with no end", _AZ_HEAD + b"2023-11-16 18:17:03," + b"1" * (2 << 20), 2, "longer than"),
    ("mooncake", "5000-digit json integer", _mc(input_length=b"9" * 5000), 1, "at most 10,000,000|digits"),
    ("mooncake", "huge integer timestamp", _mc(timestamp=b"9" * 400), 1, "bad timestamp"),
    ("mooncake", "invalid utf-8", _mc() + b'{"timestamp": 1, "input_length": 5, "output_length": 1, "x": "\xc3"}\n',
     2, "not UTF-8"),
    ("mooncake", "nesting bomb", b"[" * 200_000 + b"\n", 1, "JSON"),
    ("mooncake", "a line with no end", b'{"timestamp": 0, "pad": "' + b"x" * (2 << 20), 1, "longer than"),
    ("generic", "40-digit byte count", _gen(size=b"9" * 40), 1, "at most 1,000,000,000,000"),
    ("generic", "byte count just over the bound", _gen(size=b"1000000000001"), 1, "at most 1,000,000,000,000"),
    ("generic", "5000-digit time", _gen(time_s=b"9" * 5000), 1, "digits|bad timestamp"),
    ("generic", "huge integer time", _gen(time_s=b"9" * 400), 1, "bad timestamp"),
    ("generic", "invalid utf-8", b"\xff\xfe" + _gen(), 1, "not UTF-8"),
]


def _read_all(fmt: str, path: Path) -> list[object]:
    return list(generic.read(path) if fmt == "generic" else read_requests(path, fmt))


@pytest.mark.parametrize("fmt, label, data, line, words", HOSTILE, ids=[f"{h[0]}-{h[1]}" for h in HOSTILE])
def test_hostile_input_is_a_trace_error_with_file_and_line(tmp_path: Path, fmt: str, label: str, data: bytes,
                                                          line: int, words: str) -> None:
    path = tmp_path / "bad.trace"
    path.write_bytes(data)
    with pytest.raises(TraceError, match=rf"bad\.trace:{line}: .*({words})") as info:
        _read_all(fmt, path)
    assert len(str(info.value)) < 500, "the message must not echo the hostile input"


def test_counts_at_the_bounds_are_accepted(tmp_path: Path) -> None:
    azure_path = tmp_path / "ok.csv"
    azure_path.write_bytes(_AZ_HEAD + _AZ_ROW % (b"10000000", b"0"))
    assert [r.prompt_tokens for r in read_requests(azure_path, "azure")] == [10_000_000]
    generic_path = tmp_path / "ok.jsonl"
    generic_path.write_bytes(_gen(size=b"1000000000000"))
    assert [m.size_bytes for m in generic.read(generic_path)] == [10**12]


@pytest.mark.parametrize("data", [HOSTILE[1][2], HOSTILE[6][2]], ids=["azure-utf8", "mooncake-digits"])
def test_the_cli_exits_2_naming_file_and_line(tmp_path: Path, data: bytes) -> None:
    from click.testing import CliRunner

    from corridor.cli import cli

    path = tmp_path / ("bad.csv" if data.startswith(b"TIMESTAMP") else "bad.jsonl")
    path.write_bytes(data)
    result = CliRunner().invoke(cli, ["trace", "info", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path.name}:" in result.output and "Traceback" not in result.output
