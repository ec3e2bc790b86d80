"""OpenAI-compatible serving driven by real clients, and corridor's client against another server.

Loopback tests (no root) check that the official ``openai`` package can drive
corridor's server and that corridor's client can measure a second server
implementation. The root tests do both across the ``two-site`` corridor (25 ms
one way): the ``openai`` package's TTFT and TPOT agree with corridor's own
client on the same server, and corridor's client sees the other server's TTFT
as one RTT plus its fixed first-token delay.

Run as a script, this file is that second server (``serve``) or the ``openai``
package's measuring client (``openai-client``), so the emulated hosts can run
them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve()

# ----------------------------------------------------------------------------- a second server implementation


class TinyHandler(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible server on the standard library's http.server, with fixed token timing.

    The first token leaves ``first_token_s`` after the request arrives; the rest
    follow ``token_gap_s`` apart; it streams exactly ``max_tokens`` tokens.
    """

    protocol_version = "HTTP/1.1"
    # tokens are small writes spaced less than an RTT apart: Nagle would hold them for the ACK
    disable_nagle_algorithm = True
    first_token_s = 0.040
    token_gap_s = 0.010
    model = "tiny"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "test"}]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        arrived = time.monotonic()
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        chat = self.path == "/v1/chat/completions"
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            self._json(404, {"error": {"message": "not found"}})
            return
        n = int(req.get("max_tokens") or 16)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(n):
            time.sleep(max(arrived + self.first_token_s + i * self.token_gap_s - time.monotonic(), 0.0))
            choice = {"index": 0, "delta": {"content": f" w{i}"}} if chat else {"index": 0, "text": f" w{i}"}
            self._event({"id": "t", "object": "chat.completion.chunk" if chat else "text_completion",
                         "model": self.model, "choices": [choice]})
        if (req.get("stream_options") or {}).get("include_usage"):
            self._event({"id": "t", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": n,
                                                             "total_tokens": n + 1}})
        self._send_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _event(self, obj: Any) -> None:
        self._send_chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def tiny_server(bind: str, port: int) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((bind, port), TinyHandler)


# ----------------------------------------------------------------------------- the openai package as a client


def openai_client(base_url: str, *, api: str, requests: int, prompt_tokens: int, max_tokens: int,
                  model: str) -> list[dict[str, Any]]:
    """Stream ``requests`` completions one after another with the ``openai`` package; TTFT/TPOT of each.

    One extra request comes first (not measured), as corridor's client warms its connections.
    """
    for key in list(os.environ):
        if key.lower().endswith("_proxy"):
            del os.environ[key]  # the emulated host reaches the server directly
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="corridor", max_retries=0, timeout=60.0)
    prompt = "word " * prompt_tokens
    out = []
    for i in range(requests + 1):
        times: list[float] = []
        usage = None
        t0 = time.monotonic()
        if api == "chat":
            stream: Any = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, stream=True,
                stream_options={"include_usage": True})
            for ev in stream:
                if ev.choices and ev.choices[0].delta.content:
                    times.append(time.monotonic())
                if ev.usage is not None:
                    usage = ev.usage.completion_tokens
        else:
            stream = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, stream=True,
                                               stream_options={"include_usage": True})
            for ev in stream:
                if ev.choices and ev.choices[0].text:
                    times.append(time.monotonic())
                if ev.usage is not None:
                    usage = ev.usage.completion_tokens
        if i:
            out.append({"ttft_s": times[0] - t0, "tpot_s": (times[-1] - times[0]) / (len(times) - 1),
                        "events": len(times), "usage_tokens": usage})
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python {HERE.name}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="the tiny OpenAI-compatible server")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--first-token-ms", type=float, default=40.0)
    s.add_argument("--token-gap-ms", type=float, default=10.0)
    c = sub.add_parser("openai-client", help="measure with the openai package; prints JSON lines")
    c.add_argument("--base-url", required=True)
    c.add_argument("--api", default="completions")
    c.add_argument("--requests", type=int, default=10)
    c.add_argument("--prompt-tokens", type=int, default=512)
    c.add_argument("--max-tokens", type=int, default=16)
    c.add_argument("--model", default="corridor")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        TinyHandler.first_token_s = args.first_token_ms / 1e3
        TinyHandler.token_gap_s = args.token_gap_ms / 1e3
        tiny_server(args.bind, args.port).serve_forever()
        return 0
    for rec in openai_client(args.base_url, api=args.api, requests=args.requests, prompt_tokens=args.prompt_tokens,
                             max_tokens=args.max_tokens, model=args.model):
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# ----------------------------------------------------------------------------- helpers for the tests

from corridor.emulation.api import LocalNetwork, package_env, python_argv  # noqa: E402
from corridor.stats import median  # noqa: E402
from corridor.workloads.inference import run as inf  # noqa: E402


def _start_corridor_server(popen: Any, cfg: dict[str, Any]) -> tuple[subprocess.Popen[bytes], int]:
    """Start corridor's inference-server agent (``popen(argv, **kwargs)``); returns it and its port."""
    proc = popen(python_argv("corridor.agent", "inference-server", "--config", json.dumps(cfg)),
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("READY "), f"server did not start: {line!r} {proc.stderr.read().decode()[-800:]}"
    return proc, int(line.split()[1])


def _stop(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """Stop an agent (stdin closes) and return the records it printed."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    try:
        out = proc.stdout.read()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]


SERVER = {"tpot_ms": 20.0, "prefill_ms_per_token": 0.1, "model_name": "corridor-13b", "time_scale": 1.0}


def _have_openai() -> None:
    try:
        import openai  # noqa: F401
    except ImportError:
        pytest.skip("needs the openai package (pip install openai; it is in the 'test' extra)")


@pytest.fixture
def local_server() -> Iterator[int]:
    """corridor's server on loopback (no root)."""
    proc, port = _start_corridor_server(
        lambda argv, **kw: subprocess.Popen(argv, env=package_env(), **kw),
        {**SERVER, "bind": "127.0.0.1", "tpot_ms": 5.0, "prefill_ms_per_token": 0.02})
    try:
        yield port
    finally:
        _stop(proc)


# ----------------------------------------------------------------------------- loopback (no root)


def test_openai_package_drives_corridors_server_every_way(local_server: int) -> None:
    _have_openai()
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{local_server}/v1", api_key="x", max_retries=0,
                           http_client=openai.DefaultHttpxClient(trust_env=False))
    assert [m.id for m in client.models.list()] == ["corridor-13b"]

    done = client.completions.create(model="corridor-13b", prompt="one two three", max_tokens=7)
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (3, 7)
    assert done.choices[0].finish_reason == "length" and len(done.choices[0].text.split()) == 7

    chat = client.chat.completions.create(model="corridor-13b", messages=[{"role": "user", "content": "a b c d"}],
                                          max_tokens=4)
    assert chat.choices[0].message.role == "assistant" and len((chat.choices[0].message.content or "").split()) == 4
    assert chat.usage is not None and chat.usage.prompt_tokens == 4

    texts = []
    usage = None
    for ev in client.chat.completions.create(model="corridor-13b", messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=5, stream=True, stream_options={"include_usage": True}):
        if ev.choices:
            texts.append(ev.choices[0].delta.content)
        if ev.usage is not None:
            usage = ev.usage
    assert len(texts) == 5 and all(texts) and usage is not None and usage.completion_tokens == 5

    stream = client.completions.create(model="corridor-13b", prompt="x", max_tokens=3, stream=True)
    assert [ev.choices[0].text for ev in stream] == [" tok"] * 3

    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="corridor-13b", prompt="x", max_tokens=0)


def test_openai_package_measures_what_corridors_client_measures_on_loopback(local_server: int) -> None:
    _have_openai()
    ours = openai_client(f"http://127.0.0.1:{local_server}/v1", api="completions", requests=5, prompt_tokens=256,
                         max_tokens=8, model="corridor-13b")
    assert all(r["events"] == 8 and r["usage_tokens"] == 8 for r in ours)
    # 256 tokens x 0.02 ms of prefill, then one token every 5 ms
    assert median([r["tpot_s"] for r in ours]) == pytest.approx(0.005, rel=0.3)


def test_corridors_client_measures_a_server_started_by_its_own_command() -> None:
    first_ms, gap_ms = 30.0, 8.0
    p = inf.validate({"requests": 6, "arrival": "uniform", "rate_rps": 10, "output_tokens": 6, "prompt_tokens": 64,
                      "api": "chat", "model_name": "tiny", "server_port": _free_port(),
                      "server_command": [sys.executable, str(HERE), "serve", "--bind", "{ip}", "--port", "{port}",
                                         "--first-token-ms", str(first_ms), "--token-gap-ms", str(gap_ms)]},
                     where="test")
    recs = inf.run(LocalNetwork({"srv": "a", "cli": "b"}), p, hosts={"servers": ["srv"], "clients": ["cli"]}, seed=1,
                   timeout_s=40)
    reqs = [r for r in recs if r["kind"] == "request"]
    assert len(reqs) == 6 and all(r["ok"] for r in reqs), reqs
    assert all(r["tokens_received"] == 6 and r["done_marker"] and r["server_prefill_s"] is None for r in reqs)
    # never before the server's delay; on a shared loopback its threads may wake a few ms late
    assert all(r["ttft_s"] >= first_ms / 1e3 for r in reqs)
    assert median([r["ttft_s"] for r in reqs]) == pytest.approx(first_ms / 1e3, abs=0.010)
    assert median([r["tpot_s"] for r in reqs]) == pytest.approx(gap_ms / 1e3, rel=0.2)
    # only corridor's own agents report traffic; the user's server does not
    assert [r["role"] for r in recs if r["kind"] == "traffic"] == ["inference-client"]


def test_a_server_command_that_fails_is_reported() -> None:
    from corridor.errors import AgentError

    p = inf.validate({"requests": 2, "server_port": _free_port(),
                      "server_command": [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]},
                     where="test")
    with pytest.raises(AgentError, match="no model here"):
        inf.run(LocalNetwork({"srv": "a", "cli": "b"}), p, hosts={"servers": ["srv"], "clients": ["cli"]}, seed=1,
                timeout_s=20)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tiny_server_runs_in_this_process_too() -> None:
    # the second implementation answers the openai package as well, so it is a fair stand-in for a real server
    _have_openai()
    import openai

    srv = tiny_server("127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", api_key="x", max_retries=0,
                               http_client=openai.DefaultHttpxClient(trust_env=False))
        assert [m.id for m in client.models.list()] == ["tiny"]
        texts = [ev.choices[0].text for ev in client.completions.create(model="tiny", prompt="x", max_tokens=3,
                                                                         stream=True)]
        assert texts == [" w0", " w1", " w2"]
    finally:
        srv.shutdown()
        srv.server_close()


# ----------------------------------------------------------------------------- across the corridor (root)

FAR_SERVER, FAR_CLIENT = "rem-gpu1", "cty-cli1"


def _records(proc: subprocess.Popen[bytes], timeout_s: float) -> list[dict[str, Any]]:
    """Its records once it exits; an agent's stdin (when piped) stays open until then, as the protocol asks."""
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait()
    finally:
        timer.cancel()
        if proc.stdin is not None:
            proc.stdin.close()
    assert proc.returncode == 0, err.decode()[-1500:]
    return [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]


@pytest.mark.corridor_root
def test_openai_package_agrees_with_corridors_client_across_two_site(corridor_network: Any, tmp_path: Path) -> None:
    """The ``openai`` package and corridor's client, one streamed completion at a time each, on one server.

    The package stops reading a stream at ``data: [DONE]`` and closes the response before the
    chunked body's end has been parsed, so its HTTP library cannot reuse the connection: every
    streamed request opens a new one and pays the TCP handshake (one more RTT). corridor's client
    is compared in the same mode (``connection: per_request``); its keep-alive figure shows the
    handshake's cost.
    """
    _have_openai()
    net = corridor_network("two-site")
    rtt_s = net.plan.path_params("city", "remote").rtt_ms / 1e3
    ip = net.host_ip(FAR_SERVER)
    prompt, output, n = 512, 16, 12
    server, port = _start_corridor_server(lambda argv, **kw: net.popen(FAR_SERVER, argv, **kw),
                                          {**SERVER, "bind": ip, "host": FAR_SERVER, "timeout_s": 120})
    try:
        def openai_run() -> list[dict[str, Any]]:
            argv = [sys.executable, str(HERE), "openai-client", "--base-url", f"http://{ip}:{port}/v1", "--requests",
                    str(n), "--prompt-tokens", str(prompt), "--max-tokens", str(output), "--model", "corridor-13b"]
            return _records(net.popen(FAR_CLIENT, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE), 60)

        def corridor_run(connection: str) -> list[dict[str, Any]]:
            schedule = tmp_path / f"schedule-{connection}.jsonl"
            schedule.write_text("".join(json.dumps({"id": f"r{i}", "t_s": 0, "prompt_tokens": prompt,
                                                    "output_tokens": output}) + "\n" for i in range(n)))
            cfg = {"host": FAR_CLIENT, "servers": [[ip, port]], "schedule": str(schedule), "arrival": "closed",
                   "concurrency": 1, "warm_connections": 1, "connection": connection, "model_name": "corridor-13b",
                   "timeout_s": 60}
            argv = python_argv("corridor.agent", "inference-client", "--config", json.dumps(cfg))
            recs = _records(net.popen(FAR_CLIENT, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE), 90)
            return [r for r in recs if r["kind"] == "request"]

        theirs = openai_run()
        ours = corridor_run("per_request")
        warm = corridor_run("keepalive")
    finally:
        served = _stop(server)
    assert len(theirs) == n and all(r["events"] == output and r["usage_tokens"] == output for r in theirs)
    assert len(ours) == n and all(r["ok"] and r["new_connection"] for r in ours)
    assert len(warm) == n and all(r["ok"] and not r["new_connection"] for r in warm)
    ttft_theirs, ttft_ours = median([r["ttft_s"] for r in theirs]), median([r["ttft_s"] for r in ours])
    tpot_theirs, tpot_ours = median([r["tpot_s"] for r in theirs]), median([r["tpot_s"] for r in ours])
    ttft_warm = median([r["ttft_s"] for r in warm])
    print(f"\n{n} streamed completions each ({prompt} prompt tokens, {output} output) across two-site "
          f"(RTT {rtt_s * 1e3:.1f} ms): openai package TTFT p50 {ttft_theirs * 1e3:.2f} ms, TPOT p50 "
          f"{tpot_theirs * 1e3:.3f} ms; corridor's client (a new connection per request) TTFT p50 "
          f"{ttft_ours * 1e3:.2f} ms ({(ttft_theirs / ttft_ours - 1) * 100:+.2f} %), TPOT p50 {tpot_ours * 1e3:.3f} ms "
          f"({(tpot_theirs / tpot_ours - 1) * 100:+.2f} %); corridor's client on a warm connection TTFT p50 "
          f"{ttft_warm * 1e3:.2f} ms")
    prefill_s = prompt * SERVER["prefill_ms_per_token"] / 1e3
    # corridor's client: the handshake, then the request and the first token, then the prefill
    assert ttft_ours == pytest.approx(2 * rtt_s + prefill_s, rel=0.10)
    assert ttft_warm == pytest.approx(rtt_s + prefill_s, rel=0.10)
    # the acceptance: the stock package measures what corridor's client measures
    assert ttft_theirs == pytest.approx(ttft_ours, rel=0.05)
    assert tpot_theirs == pytest.approx(tpot_ours, rel=0.05)
    assert tpot_ours == pytest.approx(SERVER["tpot_ms"] / 1e3, rel=0.05)
    assert any(r["kind"] == "traffic" for r in served)


@pytest.mark.corridor_root
def test_corridors_client_measures_another_server_across_two_site(corridor_network: Any) -> None:
    net = corridor_network("two-site")
    rtt_s = net.plan.path_params("city", "remote").rtt_ms / 1e3
    first_ms, gap_ms, output = 40.0, 10.0, 8
    p = inf.validate({"requests": 10, "arrival": "uniform", "rate_rps": 4, "output_tokens": output,
                      "prompt_tokens": 256, "model_name": "tiny", "server_port": 8000,
                      "server_command": [sys.executable, str(HERE), "serve", "--bind", "{ip}", "--port", "{port}",
                                         "--first-token-ms", str(first_ms), "--token-gap-ms", str(gap_ms)]},
                     where="test")
    recs = inf.run(net, p, hosts={"servers": [FAR_SERVER], "clients": [FAR_CLIENT]}, seed=1, timeout_s=60)
    reqs = [r for r in recs if r["kind"] == "request"]
    ttft, tpot = median([r["ttft_s"] for r in reqs]), median([r["tpot_s"] for r in reqs])
    print(f"\ncorridor's client against the tiny http.server implementation across two-site: TTFT p50 "
          f"{ttft * 1e3:.2f} ms vs RTT + first-token delay {rtt_s * 1e3 + first_ms:.2f} ms; TPOT p50 "
          f"{tpot * 1e3:.3f} ms vs {gap_ms:.1f} ms")
    assert len(reqs) == 10 and all(r["ok"] and r["tokens_received"] == output for r in reqs)
    assert ttft == pytest.approx(rtt_s + first_ms / 1e3, rel=0.05)
    assert tpot == pytest.approx(gap_ms / 1e3, rel=0.05)
