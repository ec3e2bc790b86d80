"""The inference agents' OpenAI-compatible wire format, without a network: request parsing, SSE chunks, framing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corridor.agent import inference as agent
from corridor.errors import SpecError
from corridor.workloads.inference import run as inf


def _req(api: str = "completions", **body: Any) -> agent.CompletionRequest:
    base: dict[str, Any] = {"model": "m", "max_tokens": 5}
    base.update({"prompt": "a b c"} if api == "completions" else {"messages": [{"role": "user", "content": "a b"}]})
    base.update(body)
    return agent.parse_request(api, json.dumps(base).encode())


# ----------------------------------------------------------------------------- request parsing


def test_prompt_tokens_are_whitespace_separated_words() -> None:
    assert agent.prompt_token_count("") == 0
    assert agent.prompt_token_count("  one\ttwo\nthree  four ") == 4
    assert _req(prompt="x " * 300).prompt_tokens == 300
    assert _req(prompt=list(range(77))).prompt_tokens == 77
    assert _req(prompt=["five words in this prompt"]).prompt_tokens == 5
    assert _req(prompt=[[1, 2, 3]]).prompt_tokens == 3


def test_chat_counts_the_words_of_every_message_and_text_part() -> None:
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "one two three"},
                                             {"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": None}]
    r = _req("chat", messages=messages)
    assert (r.api, r.prompt_tokens) == ("chat", 5)
    # max_completion_tokens is the newer name for chat and wins over max_tokens
    assert _req("chat", max_completion_tokens=9).output_tokens == 9


def test_the_generated_prompt_counts_back_to_its_tokens_and_bytes() -> None:
    for tokens, per in ((1, 4), (513, 4), (100, 1), (64, 7)):
        text = agent.prompt_text(tokens, per)
        assert agent.prompt_token_count(text) == tokens
        assert len(text) == tokens * max(per, 2)
        body = agent.completion_body("completions", "m", text, 3)
        assert agent.parse_request("completions", body).prompt_tokens == tokens
        chat = agent.completion_body("chat", "m", text, 3)
        parsed = agent.parse_request("chat", chat)
        assert (parsed.prompt_tokens, parsed.output_tokens, parsed.stream, parsed.include_usage) == (tokens, 3,
                                                                                                       True, True)


def test_defaults_follow_the_openai_api() -> None:
    r = agent.parse_request("completions", b'{"prompt": "hi"}')
    assert (r.model, r.output_tokens, r.stream, r.include_usage) == (agent.DEFAULT_MODEL, 16, False, False)
    r = _req(stream=True, stream_options={"include_usage": True})
    assert (r.model, r.output_tokens, r.stream, r.include_usage) == ("m", 5, True, True)


@pytest.mark.parametrize(("api", "body", "match"), [
    ("completions", b"not json", "not JSON"),
    ("completions", b"[1, 2]", "JSON object"),
    ("completions", b'{"max_tokens": 3}', "'prompt' is required"),
    ("completions", b'{"prompt": 5}', "'prompt' must be"),
    ("completions", b'{"prompt": ["a", "b"]}', "'prompt' must be"),
    ("completions", b'{"prompt": "a", "max_tokens": 0}', "max_tokens"),
    ("completions", b'{"prompt": "a", "max_tokens": 2.5}', "max_tokens"),
    ("completions", b'{"prompt": "a", "max_tokens": true}', "max_tokens"),
    ("completions", b'{"prompt": "a", "n": 2}', "'n': 1"),
    ("completions", b'{"prompt": "a", "stream": "yes"}', "'stream'"),
    ("completions", b'{"prompt": "a", "stream_options": 3}', "stream_options"),
    ("chat", b'{"messages": []}', "messages"),
    ("chat", b'{"prompt": "a"}', "messages"),
    ("chat", b'{"messages": ["hi"]}', "messages"),
    ("chat", b'{"messages": [{"role": "user", "content": 3}]}', "content"),
])
def test_bad_requests_are_refused_with_a_reason(api: str, body: bytes, match: str) -> None:
    with pytest.raises(agent.RequestError, match=match) as info:
        agent.parse_request(api, body)
    assert info.value.status == 400


# ----------------------------------------------------------------------------- what the server sends


def _events(raw: bytes) -> list[Any]:
    """Split SSE bytes into decoded ``data:`` payloads (``[DONE]`` kept as the string)."""
    out: list[Any] = []
    for event in raw.split(b"\n\n"):
        if event:
            assert event.startswith(b"data: "), event
            payload = event[len(b"data: "):]
            out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_stream_events_carry_one_token_each_and_finish_with_length(api: str) -> None:
    req = _req(api, max_tokens=4, stream=True, stream_options={"include_usage": True})
    reply = agent.Reply(req, "7", 1_700_000_000)
    raw = b"".join(reply.token_event(i) for i in range(4)) + reply.usage_event() + agent.DONE_EVENT
    events = _events(raw)
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": req.prompt_tokens, "completion_tokens": 4,
                                                         "total_tokens": req.prompt_tokens + 4}
    tokens = events[:-2]
    assert len(tokens) == 4
    for i, e in enumerate(tokens):
        assert e["id"] == ("chatcmpl-7" if api == "chat" else "cmpl-7")
        assert e["object"] == ("chat.completion.chunk" if api == "chat" else "text_completion")
        assert e["model"] == "m" and e["created"] == 1_700_000_000
        (choice,) = e["choices"]
        text = choice["delta"]["content"] if api == "chat" else choice["text"]
        assert text == agent.TOKEN_TEXT
        assert choice["finish_reason"] == ("length" if i == 3 else None)
        if api == "chat":
            assert ("role" in choice["delta"]) == (i == 0)


def test_a_one_token_answer_starts_and_finishes_in_one_event() -> None:
    reply = agent.Reply(_req("chat", max_tokens=1), "1", 0)
    (only,) = _events(reply.token_event(0))
    assert only["choices"][0]["delta"] == {"role": "assistant", "content": agent.TOKEN_TEXT}
    assert only["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_non_streaming_body_holds_every_token_and_the_usage(api: str) -> None:
    req = _req(api, max_tokens=6)
    body = json.loads(agent.Reply(req, "3", 5).body())
    (choice,) = body["choices"]
    text = choice["message"]["content"] if api == "chat" else choice["text"]
    assert agent.prompt_token_count(text) == 6
    assert choice["finish_reason"] == "length"
    assert body["object"] == ("chat.completion" if api == "chat" else "text_completion")
    assert body["usage"]["completion_tokens"] == 6 and body["usage"]["prompt_tokens"] == req.prompt_tokens


def test_models_list_and_error_objects() -> None:
    models = json.loads(agent.models_body("corridor-13b", 9))
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["corridor-13b"]
    err = json.loads(agent.error_body("queue full", "server_overloaded"))
    assert err["error"]["message"] == "queue full" and err["error"]["type"] == "server_overloaded"


@pytest.mark.parametrize(("path", "models"), [("/v1/completions", "/v1/models"),
                                              ("/v1/chat/completions", "/v1/models"),
                                              ("/openai/v1/chat/completions", "/openai/v1/models"),
                                              ("/generate", "/v1/models")])
def test_models_path_sits_beside_the_completions_path(path: str, models: str) -> None:
    assert agent.models_path(path) == models


# ----------------------------------------------------------------------------- what the client reads


def _server_stream(api: str, n: int, *, usage: bool = True) -> bytes:
    """A chunked body exactly as corridor's server frames it: one chunk per event, then the last chunk."""
    reply = agent.Reply(_req(api, max_tokens=n), "1", 0)
    events = [reply.token_event(i) for i in range(n)] + ([reply.usage_event()] if usage else [])
    return b"".join(agent.chunk(e) for e in [*events, agent.DONE_EVENT]) + agent.LAST_CHUNK


def _feed(stream: agent.EventStream, raw: bytes, step: int) -> None:
    for k, pos in enumerate(range(0, len(raw), step)):
        stream.feed(raw[pos:pos + step], float(k))


@pytest.mark.parametrize("api", ["completions", "chat"])
@pytest.mark.parametrize("step", [1, 3, 17, 100000])
def test_client_reads_tokens_usage_and_done_however_the_bytes_are_split(api: str, step: int) -> None:
    raw = _server_stream(api, 5)
    stream = agent.EventStream({"transfer-encoding": "chunked"})
    _feed(stream, raw, step)
    assert stream.ended and stream.done_marker and stream.error is None
    assert len(stream.token_times) == 5 and stream.tokens == 5
    assert stream.usage is not None and stream.usage["completion_tokens"] == 5
    # a token's time is the time of the read that completed its event
    assert stream.token_times == sorted(stream.token_times)
    if step == 100000:
        assert stream.token_times == [0.0] * 5


def test_client_counts_events_when_no_usage_comes() -> None:
    stream = agent.EventStream({"transfer-encoding": "chunked"})
    stream.feed(_server_stream("completions", 3, usage=False), 1.0)
    assert stream.usage is None and stream.tokens == 3


def test_a_server_that_reports_usage_sets_the_token_count() -> None:
    # two tokens per event, as some servers stream: usage says how many tokens came
    body = (b'data: {"choices":[{"index":0,"text":" a b"}]}\n\n' * 3
            + b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}}\n\n'
            + agent.DONE_EVENT)
    stream = agent.EventStream({"content-length": str(len(body))})
    stream.feed(body + b"HTTP/1.1 200 OK\r\n", 2.0)  # bytes past the body are not this answer's
    assert stream.ended and stream.done_marker
    assert len(stream.token_times) == 3 and stream.tokens == 6


def test_crlf_events_several_per_read_and_a_body_that_ends_with_the_connection() -> None:
    body = (b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\r\n\r\n'
            b': a comment line\r\n\r\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\r\n\r\n'
            b'data: {"choices":[{"index":0,"delta":{"content":" there"}}]}\r')
    stream = agent.EventStream({})
    assert stream.framing == "close"
    stream.feed(body, 1.0)
    stream.feed(b"\n\r\ndata: [DONE]", 2.0)
    assert not stream.ended and stream.token_times == [1.0, 2.0]
    stream.finish(3.0)
    assert stream.ended and stream.done_marker


def test_errors_in_the_stream_are_reported() -> None:
    stream = agent.EventStream({"transfer-encoding": "chunked"})
    stream.feed(agent.chunk(b'data: {"error":{"message":"model overloaded"}}\n\n') + agent.LAST_CHUNK, 0.0)
    assert stream.ended and stream.error == "model overloaded" and stream.token_times == []
    stream = agent.EventStream({"transfer-encoding": "chunked"})
    stream.feed(agent.chunk(b"data: {broken\n\n"), 0.0)
    assert stream.error is not None and "not JSON" in stream.error
    with pytest.raises(ValueError, match="chunk size"):
        agent.EventStream({"transfer-encoding": "chunked"}).feed(b"zz\r\n", 0.0)


def test_the_last_chunk_may_carry_trailers() -> None:
    stream = agent.EventStream({"transfer-encoding": "chunked"})
    stream.feed(agent.chunk(agent.DONE_EVENT) + b"0\r\nX-Trailer: 1\r\n", 0.0)
    assert not stream.ended
    stream.feed(b"\r\n", 0.0)
    assert stream.ended and stream.done_marker


# ----------------------------------------------------------------------------- workload parameters


def test_endpoint_parameters_validate() -> None:
    p = inf.validate({"api": "chat", "model_name": "llama", "endpoint_path": "/openai/v1/chat/completions",
                      "server_command": ["vllm", "serve", "--port", "{port}", 8], "server_port": 8000}, where="t")
    assert p.server_command == ("vllm", "serve", "--port", "{port}", "8")
    assert inf.server_command_argv(p.server_command, port=8000, ip="10.0.0.2", host="h1") == [
        "vllm", "serve", "--port", "8000", "8"]
    assert inf.validate({}, where="t").api == "completions"


@pytest.mark.parametrize(("params", "key"), [
    ({"api": "responses"}, "api"),
    ({"endpoint_path": "v1/completions"}, "endpoint_path"),
    ({"model_name": ""}, "model_name"),
    ({"server_command": [], "server_port": 80}, "server_command"),
    ({"server_command": "vllm serve", "server_port": 80}, "server_command"),
    ({"server_command": ["x"], "server_port": 0}, "server_port"),
    ({"server_command": ["x"], "server_port": "80"}, "server_port"),
    ({"server_command": ["x"]}, "server_port"),
    ({"server_port": 8000}, "server_command"),
    ({"server_command": ["x"], "server_port": 80, "pattern": "disagg", "model": "70b"}, "server_command"),
])
def test_bad_endpoint_parameters_name_the_key(params: dict[str, Any], key: str) -> None:
    with pytest.raises(SpecError) as info:
        inf.validate(params, where="exp.yaml")
    assert key in str(info.value)
