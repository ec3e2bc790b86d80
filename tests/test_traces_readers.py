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
