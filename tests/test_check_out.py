"""``corridor check --out DIR``: raw ping and iperf3 output kept by link and direction, with a summary (no root).

A fake network answers the tools with captured output from tests/data, so the
whole command runs without namespaces.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corridor.cli import cli
from corridor.cli.common import fail
from corridor.errors import CorridorError
from corridor.tools.check import CheckOptions, Measurement, RawOutputs, check_summary, write_check_dir

DATA = Path(__file__).parent / "data"
PING = (DATA / "ping-two-site.txt").read_text()
TCP_SERVER = (DATA / "iperf3-tcp-server.json").read_text()
UDP_SERVER = (DATA / "iperf3-udp-server.json").read_text()


def _client_json(test: str, n: int) -> str:
    return json.dumps({"start": {"test_start": {"protocol": test}}, "end": {"sum_sent": {"bytes": 1000 + n}}})


class _Server:
    """A finished iperf3 server process that printed ``text``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.done = False

    def poll(self) -> int | None:
        return 0 if self.done else None

    def communicate(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        self.done = True
        return self.text.encode(), b""

    def kill(self) -> None:
        self.done = True

    def wait(self) -> int:
        return 0


class FakeNet:
    backend = "fake"
    backend_reason = "answers with captured tool output"

    def __init__(self, plan: Any, *, fail_udp: bool = False) -> None:
        self.plan = plan
        self.fail_udp = fail_udp
        self.servers: list[str] = []
        self.clients = 0

    def run(self, host: str, argv: list[str], *, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        if argv[0] == "ping":
            count = int(argv[argv.index("-c") + 1])
            return subprocess.CompletedProcess(argv, 0, PING if count > 1 else "1 packets transmitted\n", "")
        udp = "-u" in argv
        self.servers.append(UDP_SERVER if udp else TCP_SERVER)
        self.clients += 1
        if udp and self.fail_udp:
            return subprocess.CompletedProcess(argv, 1, '{"error": "unable to send"}', "iperf3: error\n")
        return subprocess.CompletedProcess(argv, 0, _client_json("UDP" if udp else "TCP", self.clients), "")

    def popen(self, host: str, argv: list[str]) -> _Server:
        net = self

        class Lazy(_Server):
            """The server's output is known once the client has run."""

            def communicate(self, timeout: float | None = None) -> tuple[bytes, bytes]:
                self.text = net.servers[-1]
                return super().communicate(timeout)

        return Lazy("")


@pytest.fixture
def fake_network(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    made: dict[str, Any] = {}

    @contextmanager
    def network_or_fail(plan: Any, backend: str, **kwargs: Any) -> Iterator[FakeNet]:
        made["net"] = FakeNet(plan, fail_udp=made.get("fail_udp", False))
        try:
            yield made["net"]
        except CorridorError as exc:  # as the real one: a library error is one line, exit 1
            fail(str(exc), code=1)

    monkeypatch.setattr("corridor.cli.system.network_or_fail", network_or_fail)
    return made


def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_out_keeps_every_raw_output_named_by_link_and_direction(tmp_path: Path, fake_network: dict[str, Any]) -> None:
    out = tmp_path / "check"
    result = CliRunner().invoke(cli, ["check", "two-site", "--out", str(out), "--json"])
    assert result.exit_code in (0, 1), result.output
    link = fake_network["net"].plan.wan_links[0].name
    expected = {f"{link}.ping.a_to_b.output.txt": PING}
    for tool, direction, server in (("iperf3-tcp", "a_to_b", TCP_SERVER), ("iperf3-tcp", "b_to_a", TCP_SERVER),
                                    ("iperf3-udp", "a_to_b", UDP_SERVER)):
        expected[f"{link}.{tool}.{direction}.server.json"] = server
    for name, text in expected.items():
        assert (out / name).read_text() == text, name  # byte for byte what the tool printed
    clients = sorted(p.name for p in out.glob("*.client.json"))
    # the captured TCP sample is out of this link's tolerance, so each direction is measured a second time
    # (check repeats an out-of-tolerance TCP test once), and that attempt is kept under its own name too
    again = {f"{link}.iperf3-tcp.a_to_b-again.client.json", f"{link}.iperf3-tcp.b_to_a-again.client.json"}
    assert again <= set(clients) and len(clients) == 5
    assert all(json.loads((out / c).read_text())["end"] for c in clients)

    summary = _strict((out / "summary.json").read_text())
    assert summary["format_version"] == 1 and summary["kind"] == "corridor-check"
    assert summary["complete"] is True and summary["error"] is None and summary["backend"] == "fake"
    assert {f["file"] for f in summary["files"]} | {"summary.json"} == {p.name for p in out.iterdir()}
    assert {(f["tool"], f["direction"], f["role"]) for f in summary["files"]} >= {
        ("ping", "a_to_b", "output"), ("iperf3-tcp", "b_to_a", "server"), ("iperf3-udp", "a_to_b", "client")}
    assert [m["metric"] for m in summary["measurements"]] == ["rtt_median", "tcp_a_to_b", "tcp_b_to_a",
                                                              "loss_a_to_b"]
    # the summary agrees with what the command printed and its exit status
    printed = json.loads(result.stdout)
    assert [m["measured"] for m in printed["measurements"]] == [m["measured"] for m in summary["measurements"]]
    assert summary["ok"] is printed["ok"] is (result.exit_code == 0)


def test_a_failed_tool_still_leaves_its_output_and_an_incomplete_summary(tmp_path: Path,
                                                                       fake_network: dict[str, Any]) -> None:
    fake_network["fail_udp"] = True
    out = tmp_path / "check"
    result = CliRunner().invoke(cli, ["check", "two-site", "--out", str(out)])
    assert result.exit_code == 1
    assert "iperf3 client" in result.output
    summary = _strict((out / "summary.json").read_text())
    assert summary["complete"] is False and "iperf3 client" in summary["error"] and summary["ok"] is False
    link = fake_network["net"].plan.wan_links[0].name
    assert json.loads((out / f"{link}.iperf3-udp.a_to_b.client.json").read_text()) == {"error": "unable to send"}
    assert (out / f"{link}.iperf3-udp.a_to_b.stderr.txt").read_text() == "iperf3: error\n"
    assert (out / f"{link}.ping.a_to_b.output.txt").read_text() == PING


def test_a_non_empty_out_directory_is_refused_before_building(tmp_path: Path, fake_network: dict[str, Any]) -> None:
    (tmp_path / "old.txt").write_text("x")
    result = CliRunner().invoke(cli, ["check", "two-site", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not empty" in result.output and "net" not in fake_network


def test_summary_is_strict_json_and_repeated_runs_get_distinct_names(tmp_path: Path) -> None:
    raw = RawOutputs()
    raw.add("a/b link", "ping", "a_to_b", "output", "one")
    raw.add("a/b link", "ping", "a_to_b", "output", "two")
    m = Measurement("a/b link", "rtt_median", "ms", 50.0, float("nan"), 49.0, 51.0)
    summary = check_summary(topology="t", backend="b", backend_reason="r", options=CheckOptions(),
                            measurements=[m], raw=raw)
    path = write_check_dir(tmp_path / "d", summary, raw)
    data = _strict(path.read_text())
    assert data["measurements"][0]["measured"] is None and data["ok"] is False
    names = [f["file"] for f in data["files"]]
    assert names == ["a_b_link.ping.a_to_b.output.txt", "a_b_link.ping.a_to_b.output.2.txt"]
    assert [(tmp_path / "d" / n).read_text() for n in names] == ["one", "two"]
