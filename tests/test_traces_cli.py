"""``corridor trace info`` and ``corridor trace convert`` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from corridor.cli import cli

AZURE = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
         "2023-11-16 18:17:00.0000000,100,10\n2023-11-16 18:17:01.0000000,300,30\n"
         "2023-11-16 18:17:02.0000000,200,20\n")


def test_info_on_an_azure_trace(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(AZURE)
    res = CliRunner().invoke(cli, ["trace", "info", str(path)])
    assert res.exit_code == 0, res.output
    assert "azure request trace" in res.output
    assert "requests      3" in res.output
    assert "span          2.000 s" in res.output
    assert "prompt tokens mean 200" in res.output
    res = CliRunner().invoke(cli, ["trace", "info", str(path), "--speed", "2", "--cap", "2"])
    assert "requests      2" in res.output and "span          0.500 s" in res.output


def test_info_on_mooncake_and_generic(tmp_path: Path) -> None:
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": []}) + "\n")
    res = CliRunner().invoke(cli, ["trace", "info", str(mc)])
    assert res.exit_code == 0 and "mooncake request trace" in res.output and "requests      1" in res.output
    g = tmp_path / "g.jsonl"
    g.write_text("".join(json.dumps({"time_s": i * 0.5, "src": "a", "dst": "b", "bytes": 100, "kind": "tcp"}) + "\n"
                         for i in range(4)))
    res = CliRunner().invoke(cli, ["trace", "info", str(g)])
    assert res.exit_code == 0 and "messages      4" in res.output and "bytes         400" in res.output


@pytest.mark.parametrize("content, words", [
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:00,-1,1\n", "bad.csv:2"),
    ("TIME,Ctx\n", "bad.csv:1"),
])
def test_info_on_a_malformed_trace_exits_2_with_file_and_line(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    res = CliRunner().invoke(cli, ["trace", "info", str(path), "--format", "azure"])
    assert res.exit_code == 2
    assert words in res.output
    assert "Traceback" not in res.output


def test_convert_a_capture(tmp_path: Path) -> None:
    scapy_all = pytest.importorskip("scapy.all")
    pkts = []
    for i, size in enumerate((10, 20, 30)):
        p = scapy_all.Ether() / scapy_all.IP(src="10.9.0.1", dst="10.9.0.2") / scapy_all.UDP(sport=1, dport=2) / (
            b"x" * size)
        p.time = 1.0 + i
        pkts.append(p)
    pcap = tmp_path / "c.pcap"
    scapy_all.wrpcap(str(pcap), pkts)
    out = tmp_path / "c.jsonl"
    res = CliRunner().invoke(cli, ["trace", "convert", str(pcap), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 3 messages, 60 bytes" in res.output
    assert len(out.read_text().splitlines()) == 3
    res = CliRunner().invoke(cli, ["trace", "info", str(pcap)])
    assert res.exit_code == 0 and "messages      3" in res.output and "flows         1 (0 TCP)" in res.output


def test_convert_rejects_a_non_capture(tmp_path: Path) -> None:
    bad = tmp_path / "x.pcap"
    bad.write_text("nope")
    res = CliRunner().invoke(cli, ["trace", "convert", str(bad), "-o", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "x.pcap" in res.output


def test_trace_info_json_counts_requests(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json as _json

    from click.testing import CliRunner

    from corridor.cli import cli as _cli

    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n")
    result = CliRunner().invoke(_cli, ["trace", "info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = _json.loads(result.output)
    assert summary["format"] == "azure" and summary["requests"] == 2
    assert summary["prompt_tokens"]["max"] == 4808
