"""One agent protocol for every role (no root, loopback): READY, records, DONE, stop on stdin's end.

A mesh rank (``collective``) and a stream role (``inference-store``,
``inference-client``) are started through the same handle,
:class:`corridor.workloads.agents.AgentProcess`, and each must say READY with a
port, print its records as JSON lines, and end when its stdin closes: a mesh
rank whose peers never come, and a client whose requests are not yet due,
stop within seconds with the stop status instead of waiting out their time
limits.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from corridor.agent.lifecycle import EXIT_STOPPED
from corridor.emulation.api import LocalNetwork
from corridor.workloads.agents import AgentProcess

NET = LocalNetwork({"x": "a", "y": "b"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mesh_config(rank: int, port: int, timeout_s: float = 60.0) -> dict[str, object]:
    return {"rank": rank, "n_ranks": 2, "host": "xy"[rank], "site": "ab"[rank], "ip": "127.0.0.1",
            "rendezvous_ip": "127.0.0.1", "rendezvous_port": port, "timeout_s": timeout_s,
            "stall_timeout_s": 10, "job": {"algorithm": "ring", "sizes_bytes": [4096], "iters": 1},
            "secret": "ab" * 16}


def test_mesh_ranks_say_ready_print_records_and_done(tmp_path: Path) -> None:
    port = _free_port()
    ranks = [AgentProcess(NET, "xy"[r], "collective", _mesh_config(r, port), str(tmp_path), name=f"rank{r}")
             for r in range(2)]
    try:
        ports = [a.wait_ready(30.0) for a in ranks]
        assert all(p > 0 for p in ports) and ports[0] != port  # its mesh listener, not the rendezvous
        for a in ranks:
            assert a.proc.wait(timeout=60) == 0, a.stderr_tail()
            assert a.said_done
        records = [a.records() for a in ranks]
    finally:
        for a in ranks:
            a.stop()
            a.close()
    assert records[0] and {r["kind"] for recs in records for r in recs} <= {"collective", "collective_rank"}
    assert {r["rank"] for recs in records for r in recs} == {0, 1}
    assert ranks[0].ready_after_s is not None and ranks[0].ready_after_s > 0
    # the config went to the agent as a file only its owner reads, not on the command line
    assert (tmp_path / "rank0.json").stat().st_mode & 0o777 == 0o600
    assert "secret" not in " ".join(ranks[0].proc.args)  # type: ignore[arg-type]


def test_a_mesh_rank_stops_when_its_stdin_closes(tmp_path: Path) -> None:
    # rank 1 of two waits for a rank 0 that never comes; its runner's stop ends it at once
    agent = AgentProcess(NET, "y", "collective", _mesh_config(1, _free_port()), str(tmp_path))
    try:
        agent.wait_ready(30.0)
        t0 = time.monotonic()
        agent.close_stdin()
        assert agent.proc.wait(timeout=10) == EXIT_STOPPED
        assert time.monotonic() - t0 < 5.0
        errors = [r for r in agent.records() if r["kind"] == "agent_error"]
    finally:
        agent.stop()
        agent.close()
    assert errors and "stopped by its runner" in errors[0]["error"]


def test_a_store_says_ready_and_reports_its_traffic_when_stopped(tmp_path: Path) -> None:
    agent = AgentProcess(NET, "x", "inference-store", {"host": "x", "bind": "127.0.0.1", "timeout_s": 30},
                         str(tmp_path))
    try:
        port = agent.wait_ready(30.0)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /r?bytes=10&service_ms=0 HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            reply = b""
            while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < 10:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
        agent.stop()
        assert agent.proc.returncode == 0
        records = agent.records()
    finally:
        agent.stop()
        agent.close()
    assert records == [{"kind": "traffic", "role": "inference-store", "host": "x", "messages_sent": 1,
                        "bytes_sent": records[0]["bytes_sent"]}]
    assert records[0]["bytes_sent"] > 10


@pytest.mark.parametrize("stop_early", [False, True])
def test_a_client_ends_with_done_or_with_the_stop_status(tmp_path: Path, stop_early: bool) -> None:
    # nothing listens on port 9: a due request fails at once; one due in a minute is never sent
    schedule = tmp_path / "schedule.jsonl"
    t_s = 60.0 if stop_early else 0.0
    schedule.write_text(json.dumps({"id": "s0", "t_s": t_s, "prompt_tokens": 4, "output_tokens": 2}) + "\n")
    cfg = {"host": "x", "servers": [["127.0.0.1", 9]], "schedule": str(schedule), "warm_connections": 0,
           "timeout_s": 120}
    agent = AgentProcess(NET, "x", "inference-client", cfg, str(tmp_path))
    try:
        if stop_early:
            time.sleep(1.0)
            agent.close_stdin()
        status = agent.proc.wait(timeout=30)
        records = agent.records()
    finally:
        agent.stop()
        agent.close()
    kinds = [r["kind"] for r in records]
    assert kinds[-1] == "traffic"
    if stop_early:
        assert status == EXIT_STOPPED and not agent.said_done and "request" not in kinds
    else:
        assert status == 0 and agent.said_done
        assert [r["ok"] for r in records if r["kind"] == "request"] == [False]


def test_clients_started_apart_begin_their_schedule_together_at_the_start_line(tmp_path: Path) -> None:
    # Two clients split one schedule; the second starts 0.6 s after the first (as a start over ssh can).
    # Each says READY and waits; both take time zero from the one start line, so their first sends,
    # scheduled 50 ms apart, go out 50 ms apart and not 0.65 s apart.
    agents = []
    try:
        for name, t_s in (("x", 0.0), ("y", 0.05)):
            schedule = tmp_path / f"schedule-{name}.jsonl"
            schedule.write_text(json.dumps({"id": name, "t_s": t_s, "prompt_tokens": 4, "output_tokens": 2}) + "\n")
            cfg = {"host": name, "servers": [["127.0.0.1", 9]], "schedule": str(schedule), "warm_connections": 0,
                   "timeout_s": 60, "start_on_signal": True}
            agents.append(AgentProcess(NET, name, "inference-client", cfg, str(tmp_path)))
            if name == "x":
                time.sleep(0.6)
        for agent in agents:
            assert agent.wait_ready(30) == 0
        time.sleep(0.3)  # neither sends before the start line, however long it waits
        start_at = time.time() + 0.2
        for agent in agents:
            assert agent.proc.stdin is not None
            agent.proc.stdin.write((json.dumps({"start_at": start_at}) + "\n").encode())
            agent.proc.stdin.flush()
        sent = {}
        for agent in agents:
            assert agent.proc.wait(timeout=30) == 0 and agent.said_done
            [request] = [r for r in agent.records() if r["kind"] == "request"]
            sent[agent.host] = request["t_send_monotonic_s"]
    finally:
        for agent in agents:
            agent.stop()
            agent.close()
    assert sent["y"] - sent["x"] == pytest.approx(0.05, abs=0.02)
    assert abs(sent["x"] - (time.monotonic() - (time.time() - start_at))) < 0.05


def test_a_client_waiting_for_its_start_is_stopped_by_the_end_of_stdin(tmp_path: Path) -> None:
    schedule = tmp_path / "schedule.jsonl"
    schedule.write_text(json.dumps({"id": "s0", "t_s": 0.0, "prompt_tokens": 4, "output_tokens": 2}) + "\n")
    cfg = {"host": "x", "servers": [["127.0.0.1", 9]], "schedule": str(schedule), "warm_connections": 0,
           "timeout_s": 60, "start_on_signal": True}
    agent = AgentProcess(NET, "x", "inference-client", cfg, str(tmp_path))
    try:
        agent.wait_ready(30)
        agent.close_stdin()
        assert agent.proc.wait(timeout=30) == EXIT_STOPPED
        assert [r for r in agent.records() if r["kind"] == "request"] == []
    finally:
        agent.stop()
        agent.close()


def test_the_documented_exit_statuses_are_the_lifecycles() -> None:
    from corridor.agent import lifecycle

    doc = (Path(__file__).resolve().parent.parent / "docs" / "workloads.md").read_text(encoding="utf-8")
    row = next(line for line in doc.splitlines() if line.startswith("| exit status |"))
    documented = {word: int(number) for number, word in
                  (part.strip().split(" ", 1) for part in row.split("|")[2].split(","))}
    constants = {name: value for name, value in vars(lifecycle).items() if name.startswith("EXIT_")}
    assert sorted(documented.values()) == sorted(constants.values())
    assert documented["stopped"] == lifecycle.EXIT_STOPPED and documented["done"] == lifecycle.EXIT_OK
