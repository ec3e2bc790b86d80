"""Agents listen only on their own emulated address and bound every control line they read."""

from __future__ import annotations

import random
import socket
import threading
from typing import Any

import pytest

from corridor.agent import runtime
from corridor.agent.runtime import Agent, AgentConfig, AgentFailure


def test_an_agent_binds_its_own_address_not_every_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    bound: list[Any] = []
    real_bind = socket.socket.bind

    def spy(self: socket.socket, address: Any) -> None:
        bound.append(address)
        real_bind(self, address)

    monkeypatch.setattr(socket.socket, "bind", spy)
    port = random.randint(40000, 60000)
    cfg = AgentConfig(rank=0, n_ranks=1, host="h", site="s", ip="127.0.0.2", rendezvous_ip="127.0.0.2",
                      rendezvous_port=port, timeout_s=10, stall_timeout_s=5)
    agent = Agent(cfg)
    agent.start()
    assert len(bound) >= 2, "the listener and the rendezvous server both bind"
    assert {address[0] for address in bound} == {"127.0.0.2"}


def test_a_control_line_without_an_end_is_refused() -> None:
    left, right = socket.socketpair()
    try:
        right.settimeout(10)

        def send() -> None:
            try:
                left.sendall(b"{" + b"x" * (runtime.MAX_LINE_BYTES + 10))
            except OSError:
                pass  # the reader gave up and closed: that is the point

        sender = threading.Thread(target=send)
        sender.start()
        with pytest.raises(AgentFailure, match="longer than"):
            runtime._Lines(right).recv("a rendezvous hello", None)
        right.close()
        sender.join(timeout=10)
    finally:
        left.close()
        right.close()


def test_a_short_control_line_still_reads() -> None:
    left, right = socket.socketpair()
    try:
        left.sendall(b'{"rank": 3}\n{"rank": 4}\n')
        lines = runtime._Lines(right)
        assert lines.recv("a hello", None) == {"rank": 3}
        assert lines.recv("a hello", None) == {"rank": 4}
    finally:
        left.close()
        right.close()


# -- the inference server and the store trust no size a client sends --------------------------------------------


async def _ask(handler: Any, request: bytes) -> bytes:
    """Send ``request`` to ``handler`` served on loopback; return what comes back within 3 s."""
    import asyncio

    server = await asyncio.start_server(handler, host="127.0.0.1", port=0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(4096), timeout=3.0)
        except asyncio.TimeoutError:
            answer = b""
        writer.close()
    return answer


def _handler(role: str) -> Any:
    from corridor.agent import inference

    return inference.Store({}).handle if role == "store" else inference.Server({}).handle


@pytest.mark.parametrize(
    ("role", "request_bytes"),
    [
        ("server", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n{}"),
        ("server", b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n"),
        ("server", b"POST /v1/completions HTTP/1.1\r\nContent-Length: lots\r\n\r\n"),
        ("store", b"POST /kv?bytes=" + b"9" * 40 + b" HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ("store", b"POST /kv?bytes=-1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ("store", b"POST /kv?bytes=10&service_ms=nan HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ("store", b"POST /kv?bytes=10 HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
    ],
    ids=["server-huge-length", "server-negative-length", "server-text-length", "store-40-digit-bytes",
         "store-negative-bytes", "store-nan-service", "store-huge-length"],
)
def test_sizes_from_a_client_are_bounded(role: str, request_bytes: bytes) -> None:
    import asyncio

    answer = asyncio.run(_ask(_handler(role), request_bytes))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_the_store_still_answers_a_sane_request() -> None:
    import asyncio

    answer = asyncio.run(_ask(_handler("store"), b"POST /kv?bytes=10 HTTP/1.1\r\nContent-Length: 0\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\0" * 10)


def _rank(rank: int, port: int, secret: str) -> AgentConfig:
    return AgentConfig(rank=rank, n_ranks=2, host=f"h{rank}", site="s", ip="127.0.0.3", rendezvous_ip="127.0.0.3",
                       rendezvous_port=port, timeout_s=15, stall_timeout_s=5, secret=secret)


def test_a_peer_without_the_runs_secret_gets_no_peer_table() -> None:
    import json

    secret = "11" * 16
    port = random.randint(40000, 60000)
    rank0 = Agent(_rank(0, port, secret))
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            rank0.start()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    # an impostor claims rank 1 with a made-up proof: the connection is closed, no peer table comes back
    impostor = None
    for _ in range(100):
        try:
            impostor = socket.create_connection(("127.0.0.3", port), timeout=2)
            break
        except OSError:
            threading.Event().wait(0.05)
    assert impostor is not None
    hello = {"rank": 1, "host": "h1", "site": "s", "ip": "127.0.0.9", "port": 1, "mac": "00" * 32}
    impostor.sendall((json.dumps(hello) + "\n").encode())
    impostor.settimeout(5)
    assert impostor.recv(4096) == b"", "an impostor must not receive the peer table"
    impostor.close()
    # the real rank 1, holding the secret, still joins
    rank1 = Agent(_rank(1, port, secret))
    rank1.start()
    server.join(10)
    assert not errors, errors
    assert set(rank0.peers) == {0, 1} and rank0.peers[1].host == "h1"


def test_a_peer_with_another_runs_secret_is_refused_too() -> None:
    port = random.randint(40000, 60000)
    rank0 = Agent(_rank(0, port, "22" * 16))
    threading.Thread(target=lambda: _quiet(rank0.start), daemon=True).start()
    wrong = Agent(_rank(1, port, "33" * 16))
    with pytest.raises(AgentFailure):
        wrong.start()


def _quiet(fn: Any) -> None:
    try:
        fn()
    except BaseException:  # noqa: BLE001 - the rank 0 of a refused run times out; nothing to report
        pass
