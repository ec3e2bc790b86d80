"""Inference agent roles: an LLM serving endpoint, its clients, and the hosts they call.

Stage: workload run (inside each host; standard library only). Roles:

- ``inference-server`` (:func:`serve`): an OpenAI-compatible HTTP/1.1
  endpoint that behaves like an LLM server: ``POST /v1/completions`` and
  ``POST /v1/chat/completions``, streamed (``"stream": true``) or not, and
  ``GET /v1/models`` (the one model, ``model_name``). The server queues each
  request (``max_batch`` requests decode at once, ``queue_limit`` more may
  wait, prefills run one at a time), holds the prefill time, then streams the
  answer as server-sent events over chunked transfer encoding, one chunk per
  output token spaced one decode step (TPOT) apart: ``data: {json}`` with
  ``choices[0].text`` (completions) or ``choices[0].delta.content`` (chat),
  then a usage chunk when ``stream_options.include_usage`` is set, then
  ``data: [DONE]``. Without ``stream`` the whole answer is one JSON body
  (``choices``, ``usage``) sent when its last token is decoded.

  Token counts (the serving model times prefill by prompt tokens): a prompt
  has one token per whitespace-separated word (:func:`prompt_token_count`;
  for chat, the words of every message's text; a prompt of token ids, one per
  id), and the answer has exactly ``max_tokens`` tokens (``max_completion_tokens``
  for chat too; 16 when absent), each the word ``" tok"``. corridor-specific
  figures travel only as optional response headers (``X-Queue-S``,
  ``X-Prefill-S``, ``X-KV-*``), so a stock client (the ``openai`` package,
  benchmark tools) works unchanged.
  With ``prefill_peer`` set the server is the decode half of a disaggregated
  pair: it forwards the prompt to the peer and waits for the KV cache to
  arrive as the peer's response body before streaming. With ``mode:
  "prefill"`` it is that peer: it answers ``POST /v1/prefill`` after the
  prefill time with a body of KV-cache bytes.
- ``inference-store`` (:func:`store`): a store or tool host. ``POST
  /PATH?bytes=N&service_ms=M`` is answered after M ms with an N-byte body
  (retrieval fan-out, agent tool calls).
- ``message-replay`` (:func:`replay`): one host's part of a generic message
  trace replay (:func:`corridor.workloads.replay.run.replay_messages`).
- ``inference-client`` (:func:`client`): replays a schedule file (one JSON line
  per session: arrival time, token counts) open-loop at the recorded times, or
  closed-loop with ``concurrency`` users and a think time, and records one
  ``request`` record per LLM call (TTFT, TPOT, inter-token gaps, end-to-end)
  plus one ``session`` record per agentic chain or RAG session. It speaks the
  same protocol to any OpenAI-compatible endpoint: ``servers`` (host, port),
  ``api`` (``completions`` or ``chat``), ``path`` (default the API's
  ``/v1/...`` path), ``model_name``; with ``wait_ready_s`` it first polls the
  models list until the server answers (a server the user started). TTFT is
  the arrival of the first event with text; TPOT is the mean gap between
  events with text (time per output token for servers that stream one token
  per event, as corridor's, vLLM and SGLang do by default); the token count is
  the server's ``usage.completion_tokens`` when it sends one.

Protocol facts the capture converter (:mod:`corridor.traces.pcap`) relies on:
every byte on these TCP connections belongs to one HTTP *message unit* — a
request (head and body), a response with ``Content-Length`` (head and body),
the head of a chunked response, one chunk, or the final zero-length chunk.
Each role counts the units and bytes it sends and prints them in a
``traffic`` record at exit, so a capture can be checked against the run.

Every role follows :mod:`corridor.agent.lifecycle`: records as JSON lines on
stdout, ``READY <port>`` first where the role listens, ``DONE`` when its work
is finished, and an end when its stdin closes. Compute times (prefill, TPOT, service) are
multiplied by ``time_scale``; recorded durations are divided by it.

Run as ``python -m corridor.agent ROLE --config JSON`` (the runner does).
These roles take a plain JSON config rather than the rank/rendezvous
:class:`corridor.agent.runtime.AgentConfig`: a serving endpoint has no ranks.
:data:`ROLES` lists them for ``corridor.agent``'s registry.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from corridor import stats
from corridor.agent import lifecycle
from corridor.agent.lifecycle import EXIT_FAILURE, EXIT_STOPPED, emit, say_done, say_ready
from corridor.errors import AgentError
from corridor.workloads.inference.patterns import PATTERNS as SERVING_PATTERNS

COMPLETIONS_PATH = "/v1/completions"
CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
#: The request path of each API corridor's client can speak.
API_PATHS: dict[str, str] = {"completions": COMPLETIONS_PATH, "chat": CHAT_PATH}
#: Disaggregated serving's internal hop (decode server to prefill server); not an OpenAI path.
PREFILL_PATH = "/v1/prefill"
#: The model name the server lists and answers with unless its config names another.
DEFAULT_MODEL = "corridor"
#: Output tokens of a request that gives no ``max_tokens`` (the OpenAI completions default).
DEFAULT_MAX_TOKENS = 16
#: The text of every output token: one word, so an answer counts back to its tokens.
TOKEN_TEXT = " tok"
_ZERO_BLOCK = bytes(1 << 20)


# ----------------------------------------------------------------------------- shared helpers


class Traffic:
    """Counts the HTTP message units and bytes one agent sends."""

    def __init__(self) -> None:
        self.messages = 0
        self.size_bytes = 0

    def add(self, units: int, size_bytes: int) -> None:
        self.messages += units
        self.size_bytes += size_bytes

    def record(self, role: str, host: str) -> dict[str, Any]:
        return {"kind": "traffic", "role": role, "host": host, "messages_sent": self.messages,
                "bytes_sent": self.size_bytes}


def _head(start: str, headers: dict[str, Any]) -> bytes:
    lines = [start] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def chunk(payload: bytes) -> bytes:
    """One chunk of a chunked HTTP body."""
    return b"%x\r\n" % len(payload) + payload + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]] | None:
    """Read an HTTP head; None at a clean end of stream."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    text = raw.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in text[1:]:
        if line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return text[0], headers


#: Largest request body the inference server reads into memory (a completion request is JSON, a few KiB).
MAX_REQUEST_BODY_BYTES = 16 << 20
#: Largest body the store sends or drains, in bytes (a KV cache of a long prompt is a few GB).
MAX_TRANSFER_BYTES = 10**12
#: Longest service time a store request may ask for, in ms.
MAX_SERVICE_MS = 3_600_000.0
#: The longest start line a client keeps while waiting for its newline (``{"start_at": ...}`` is ~30 bytes).
MAX_START_LINE_BYTES = 4096


def bounded_size(text: str, limit: int, what: str) -> int:
    """A byte count a client sent (``Content-Length``, ``?bytes=``): a whole number from 0 to ``limit``.

    Raises RequestError (answered 400) otherwise, so no client can make an
    agent read or send without end.
    """
    value = text.strip()
    if not value.isdigit() or len(value) > len(str(limit)) or int(value) > limit:
        raise RequestError(f"{what} must be a whole number of bytes from 0 to {limit:,}, got {value[:40]!r}")
    return int(value)


async def drain_body(reader: asyncio.StreamReader, size: int) -> None:
    """Read and discard ``size`` body bytes without holding them all."""
    left = size
    while left > 0:
        data = await reader.read(min(left, 1 << 20))
        if not data:
            raise ConnectionError(f"connection closed with {left} body bytes missing")
        left -= len(data)


async def write_zeros(writer: asyncio.StreamWriter, size: int) -> None:
    """Send ``size`` zero bytes with back-pressure."""
    left = size
    while left > 0:
        n = min(left, len(_ZERO_BLOCK))
        writer.write(_ZERO_BLOCK if n == len(_ZERO_BLOCK) else _ZERO_BLOCK[:n])
        left -= n
        await writer.drain()


def stdin_closed_event(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An event set when stdin reaches end of file (the runner's stop signal)."""
    event = asyncio.Event()

    def closed() -> None:
        loop.call_soon_threadsafe(event.set)

    lifecycle.on_stdin_closed(closed)
    return event


def stdin_start_then_end(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Future[str | None], asyncio.Event]:
    """The first line on stdin (None when stdin ends before one), and an event set when stdin ends."""
    first: asyncio.Future[str | None] = loop.create_future()
    ended = asyncio.Event()

    def give(line: str | None) -> None:
        if not first.done():
            first.set_result(line)

    def read() -> None:
        # the raw descriptor, as lifecycle.on_stdin_closed reads it (a daemon thread in a buffered reader
        # can abort the interpreter at exit)
        held = b""
        try:
            while chunk := os.read(0, 4096):
                if not first.done() and b"\n" in held + chunk:
                    line, _, _ = (held + chunk).partition(b"\n")
                    loop.call_soon_threadsafe(give, line.decode("utf-8", "replace"))
                    held = b""
                elif not first.done():
                    held = (held + chunk)[-MAX_START_LINE_BYTES:]
        except OSError:
            pass
        loop.call_soon_threadsafe(give, None)
        loop.call_soon_threadsafe(ended.set)

    threading.Thread(target=read, name="corridor-stdin", daemon=True).start()
    return first, ended


class Pacer:
    """Waits for absolute send times and says how much of any lateness the host caused.

    The loop's timer wakes up to a millisecond late (epoll rounds its timeout up)
    and, on a busy virtual machine, a few milliseconds late now and then; so the
    pacer sleeps on the timer only until ``COARSE_MARGIN_S`` before the target,
    then polls with ``sleep(0)`` so other tasks keep running, and in the last
    ``SPIN_S`` spins without yielding, since one loop iteration with many
    streams can itself take longer than that.

    Lateness then has two causes that the records keep apart: this process's
    own work (earlier sends of a burst, callbacks that ran first) and time the
    host did not run the thread at all (another task or an interrupt on its CPU,
    a virtual CPU descheduled). The second shows as wall time during which the
    thread's CPU clock did not advance while the pacer meant to run. ``wait``
    returns that share, capped at the lateness: the *host stall*.
    """

    COARSE_MARGIN_S = 0.005
    SPIN_S = 0.0005
    TIMER_ROUNDING_S = 0.001

    def __init__(self) -> None:
        self.mark()

    def mark(self) -> None:
        """Note that the thread means to run from now on (call after any await of the caller's own)."""
        self._t = time.monotonic()
        self._cpu = time.thread_time()

    async def wait(self, target: float) -> float:
        """Return once ``time.monotonic() >= target``; the host stall within the lateness, in seconds."""
        t_prev, cpu_prev, planned = self._t, self._cpu, 0.0
        while True:
            now = time.monotonic()
            cpu = time.thread_time()
            left = target - now
            if left <= 0:
                self._t, self._cpu = now, cpu
                off_cpu = (now - t_prev) - (cpu - cpu_prev) - planned
                return min(-left, max(off_cpu, 0.0))
            t_prev, cpu_prev, planned = now, cpu, 0.0
            if left > self.COARSE_MARGIN_S + self.TIMER_ROUNDING_S:
                # time asleep on purpose, the timer's rounding included, is not a stall
                planned = left - self.COARSE_MARGIN_S + self.TIMER_ROUNDING_S
                await asyncio.sleep(left - self.COARSE_MARGIN_S)
            elif left > self.SPIN_S:
                await asyncio.sleep(0)


async def sleep_until(target: float) -> None:
    """Sleep until ``time.monotonic() >= target`` with the :class:`Pacer`'s precision."""
    await Pacer().wait(target)


async def pace_until(target: float) -> None:
    """Sleep until ``target`` on the loop's timer (about 1 ms resolution, no spinning).

    Token pacing uses absolute targets, so timer lateness never accumulates
    into the mean TPOT; spinning here would starve the other streams.
    """
    left = target - time.monotonic()
    if left > 0:
        await asyncio.sleep(left)


def _quantile(values: list[float], q: float) -> float | None:
    """The q-quantile (0-1) by the project's one percentile definition; None for no values."""
    return stats.percentile(values, q * 100.0) if values else None


# ----------------------------------------------------------------------------- OpenAI-compatible protocol


class RequestError(AgentError):
    """A request the server cannot answer; ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True)
class CompletionRequest:
    """What the server needs from one completion request (see :func:`parse_request`)."""

    api: str  # "completions" or "chat"
    model: str
    prompt_tokens: int
    output_tokens: int
    stream: bool
    include_usage: bool


def prompt_token_count(text: str) -> int:
    """corridor's tokenisation rule: one token per whitespace-separated word."""
    return len(text.split())


def _prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, str):
        return prompt_token_count(prompt)
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return len(prompt)
    if isinstance(prompt, list) and len(prompt) == 1:
        return _prompt_tokens(prompt[0])
    raise RequestError("'prompt' must be a string, a list of token ids, or a list holding one of those")


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return prompt_token_count(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                total += prompt_token_count(part["text"])
        return total
    raise RequestError("a message's 'content' must be a string or a list of content parts")


def parse_request(api: str, body: bytes) -> CompletionRequest:
    """Read a ``/v1/completions`` (``api="completions"``) or ``/v1/chat/completions`` body.

    Prompt tokens follow :func:`prompt_token_count` over the prompt (or every
    message's text); a prompt of token ids counts one token per id. The answer
    has exactly ``max_tokens`` tokens (``max_completion_tokens`` also for chat;
    :data:`DEFAULT_MAX_TOKENS` when absent): the server never stops early.
    Raises :class:`RequestError` for a body a stock server would refuse.
    """
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not JSON ({exc}); send a JSON object") from None
    if not isinstance(req, dict):
        raise RequestError("the body must be a JSON object")
    if api == "chat":
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise RequestError("'messages' must be a non-empty list of message objects")
        prompt = sum(_content_tokens(m.get("content")) for m in messages)
        max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
    elif api == "completions":
        if "prompt" not in req:
            raise RequestError("'prompt' is required")
        prompt = _prompt_tokens(req["prompt"])
        max_tokens = req.get("max_tokens")
    else:
        raise RequestError(f"unknown API {api!r}", status=404)
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(f"'max_tokens' must be a whole number of at least 1, got {max_tokens!r}")
    if req.get("n", 1) != 1:
        raise RequestError("only 'n': 1 is served; send one request per completion")
    stream = req.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"'stream' must be true or false, got {stream!r}")
    options = req.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object")
    model = req.get("model", DEFAULT_MODEL)
    return CompletionRequest(api=api, model=str(model), prompt_tokens=prompt, output_tokens=max_tokens,
                             stream=stream, include_usage=bool(options.get("include_usage", False)))


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


DONE_EVENT = b"data: [DONE]\n\n"


class Reply:
    """The bytes of one answer: SSE events when streaming, else one JSON body.

    Every output token is :data:`TOKEN_TEXT` (one word, so the answer's text
    counts back to its token number under the same rule as prompts). The last
    token's event carries ``finish_reason: "length"``.
    """

    def __init__(self, req: CompletionRequest, rid: str, created: int) -> None:
        self.req = req
        chat = req.api == "chat"
        self.base: dict[str, Any] = {"id": ("chatcmpl-" if chat else "cmpl-") + rid,
                                     "object": "chat.completion.chunk" if chat else "text_completion",
                                     "created": created, "model": req.model}
        self._first = self._event(True, False)
        self._middle = self._event(False, False)
        self._last = self._event(req.output_tokens == 1, True)

    def _choice(self, first: bool, last: bool) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if self.req.api == "chat":
            choice["delta"] = {"role": "assistant", "content": TOKEN_TEXT} if first else {"content": TOKEN_TEXT}
        else:
            choice["text"] = TOKEN_TEXT
        choice.update({"logprobs": None, "finish_reason": "length" if last else None})
        return choice

    def _event(self, first: bool, last: bool) -> bytes:
        return b"data: " + _compact({**self.base, "choices": [self._choice(first, last)]}) + b"\n\n"

    def token_event(self, i: int) -> bytes:
        """The SSE event of output token ``i`` (0-based)."""
        if i == self.req.output_tokens - 1:
            return self._last
        return self._first if i == 0 else self._middle

    def usage(self) -> dict[str, int]:
        p, n = self.req.prompt_tokens, self.req.output_tokens
        return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}

    def usage_event(self) -> bytes:
        """The final chunk ``stream_options.include_usage`` asks for: no choices, the usage."""
        return b"data: " + _compact({**self.base, "choices": [], "usage": self.usage()}) + b"\n\n"

    def body(self) -> bytes:
        """The whole answer as one JSON object (``"stream": false``)."""
        text = TOKEN_TEXT * self.req.output_tokens
        if self.req.api == "chat":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "logprobs": None, "finish_reason": "length"}
            obj = {**self.base, "object": "chat.completion"}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
            obj = dict(self.base)
        return _compact({**obj, "choices": [choice], "usage": self.usage()})


def error_body(message: str, kind: str = "invalid_request_error") -> bytes:
    """An OpenAI-style error object."""
    return _compact({"error": {"message": message, "type": kind, "param": None, "code": None}})


def models_body(model: str, created: int) -> bytes:
    """The ``GET /v1/models`` answer: the one model this server serves."""
    return _compact({"object": "list", "data": [{"id": model, "object": "model", "created": created,
                                                 "owned_by": "corridor"}]})


def completion_body(api: str, model: str, prompt: str, output_tokens: int, *, include_usage: bool = True) -> bytes:
    """A streamed request body for ``api`` ("completions" or "chat") as a stock client sends it."""
    body: dict[str, Any] = {"model": model}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    body.update({"max_tokens": output_tokens, "stream": True})
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return _compact(body)


def prompt_text(tokens: int, bytes_per_token: int) -> str:
    """A prompt of exactly ``tokens`` tokens under :func:`prompt_token_count`, ``bytes_per_token`` bytes each.

    Each token is a word of ``bytes_per_token - 1`` letters and a space (at least one letter).
    """
    return ("x" * max(bytes_per_token - 1, 1) + " ") * tokens


class EventStream:
    """Incremental reader of a streamed completion's response body: bytes in, token arrival times out.

    Pure (no I/O): :meth:`feed` each read with its arrival time. Undoes the
    body's framing (chunked, ``Content-Length`` or to end of connection), splits
    the server-sent events, and records the time of every event that carries
    text (``choices[].text`` or ``choices[].delta.content``), the ``usage``
    object if one comes, and whether ``data: [DONE]`` came. Events that arrive
    in one read share its time, as they arrived together.
    """

    def __init__(self, headers: dict[str, str]) -> None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.framing = "chunked"
        elif "content-length" in headers:
            self.framing = "length"
        else:
            self.framing = "close"
        self.left = int(headers.get("content-length", "0")) if self.framing == "length" else 0
        self.raw = bytearray()
        self.text = bytearray()
        self.token_times: list[float] = []
        self.usage: dict[str, Any] | None = None
        self.done_marker = False
        self.ended = self.framing == "length" and self.left == 0
        self.error: str | None = None

    def feed(self, data: bytes, now: float) -> None:
        """Take the next bytes of the body (bytes past its end are ignored)."""
        if self.ended:
            return
        if self.framing == "chunked":
            self.raw += data
            self._dechunk()
        elif self.framing == "length":
            take = data[: self.left]
            self.left -= len(take)
            self.text += take
            self.ended = self.left == 0
        else:
            self.text += data
        self._events(now)

    def finish(self, now: float) -> None:
        """The connection ended: the end of a body framed by it (any unterminated last event counts)."""
        if self.framing == "close" and not self.ended:
            self.ended = True
            self.text += b"\n\n"
            self._events(now)

    def _dechunk(self) -> None:
        raw = self.raw
        pos = 0
        while True:
            end = raw.find(b"\r\n", pos)
            if end < 0:
                break
            try:
                size = int(bytes(raw[pos:end]).split(b";")[0].strip(), 16)
            except ValueError:
                raise ValueError(f"a bad chunk size line {bytes(raw[pos:end][:40])!r}") from None
            if size == 0:
                # the last chunk, then trailer lines (rare) and an empty line
                if raw.find(b"\r\n\r\n", end) >= 0:
                    self.ended = True
                    pos = len(raw)
                break
            if len(raw) < end + 2 + size + 2:
                break
            self.text += raw[end + 2:end + 2 + size]
            pos = end + 2 + size + 2
        del raw[:pos]

    def _events(self, now: float) -> None:
        if b"\r\n" in self.text:
            # SSE lines may end in CRLF (a CR at the end waits here for its LF)
            self.text = bytearray(bytes(self.text).replace(b"\r\n", b"\n"))
        while True:
            end = self.text.find(b"\n\n")
            if end < 0:
                return
            event = bytes(self.text[:end])
            del self.text[: end + 2]
            self._event(event, now)

    def _event(self, event: bytes, now: float) -> None:
        data = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if not data:
            return
        payload = b"\n".join(data)
        if payload.strip() == b"[DONE]":
            self.done_marker = True
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            self.error = f"an event that is not JSON: {payload[:80]!r}"
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            err = obj["error"]
            self.error = str(err.get("message", err) if isinstance(err, dict) else err)
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            text = choice.get("text")
            if text is None and isinstance(choice.get("delta"), dict):
                text = choice["delta"].get("content")
            if text:
                self.token_times.append(now)
                break
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage

    @property
    def tokens(self) -> int:
        """Output tokens: the server's ``usage.completion_tokens`` when sent, else the events with text."""
        if self.usage is not None and isinstance(self.usage.get("completion_tokens"), int):
            return int(self.usage["completion_tokens"])
        return len(self.token_times)


async def read_event_stream(reader: asyncio.StreamReader, headers: dict[str, str]) -> EventStream:
    """Read a streamed completion's body to its end (one await per read, not per event)."""
    stream = EventStream(headers)
    while not stream.ended:
        data = await reader.read(65536)
        now = time.monotonic()
        if not data:
            if stream.framing != "close":
                raise asyncio.IncompleteReadError(bytes(stream.raw), None)
            stream.finish(now)
            break
        stream.feed(data, now)
    return stream


async def _error_detail(reader: asyncio.StreamReader, headers: dict[str, str]) -> str:
    """The message of an error answer's JSON body, as ': message' (empty when there is none to read)."""
    size = int(headers.get("content-length", "0") or 0)
    if not 0 < size <= 65536:
        return ""
    body = await reader.readexactly(size)
    try:
        err = json.loads(body).get("error", {})
        message = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    return f": {message}" if message else ""


async def wait_until_serving(addr: tuple[str, int], path: str, budget_s: float) -> float:
    """Poll ``GET path`` (the models list) at ``addr`` until it answers 200; seconds waited.

    For a server started by a user's command, which may take minutes to load
    a model. Raises ConnectionError when ``budget_s`` runs out.
    """
    t0 = time.monotonic()
    last = "no answer"
    while True:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr), timeout=5.0)
            try:
                writer.write(_head(f"GET {path} HTTP/1.1", {"Host": f"{addr[0]}:{addr[1]}",
                                                            "Connection": "close"}))
                head = await asyncio.wait_for(read_head(reader), timeout=5.0)
            finally:
                writer.close()
            if head is not None and " 200 " in head[0] + " ":
                return time.monotonic() - t0
            last = repr(head[0]) if head else "connection closed"
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - t0 > budget_s:
            raise ConnectionError(f"{addr[0]}:{addr[1]} did not answer GET {path} within {budget_s:g} s ({last})")
        await asyncio.sleep(0.2)


def models_path(completions_path: str) -> str:
    """The models list beside a completions path (``/x/v1/chat/completions`` -> ``/x/v1/models``)."""
    for suffix in (CHAT_PATH, COMPLETIONS_PATH):
        if completions_path.endswith(suffix):
            return completions_path[: -len(suffix)] + MODELS_PATH
    return MODELS_PATH


# ----------------------------------------------------------------------------- server


class ServingSlots:
    """Admission, prefill and decode slots of one serving endpoint."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.scale = float(cfg.get("time_scale", 1.0))
        self.max_batch = int(cfg.get("max_batch", 64))
        self.queue_limit = int(cfg.get("queue_limit", 1024))
        self.tpot_s = float(cfg.get("tpot_ms", 20.0)) / 1e3
        per_token = cfg.get("prefill_ms_per_token")
        if per_token is not None:
            self.prefill_s_per_token = float(per_token) / 1e3
        else:
            flops = float(cfg.get("peak_tflops", 989.0)) * 1e12 * float(cfg.get("mfu", 0.5))
            self.prefill_s_per_token = 2.0 * float(cfg.get("params", 13e9)) / flops
        self.prefill_base_s = float(cfg.get("prefill_base_ms", 0.0)) / 1e3
        self.kv_bytes_per_token = int(cfg.get("kv_bytes_per_token", 0))
        self.slots = asyncio.Semaphore(self.max_batch)
        self.prefill_lock = asyncio.Lock()
        self.waiting = 0

    def prefill_s(self, prompt_tokens: int) -> float:
        return (self.prefill_base_s + self.prefill_s_per_token * prompt_tokens) * self.scale


class Server:
    """The ``inference-server`` role (both the whole endpoint and either disaggregated half)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.mode = str(cfg.get("mode", "serve"))  # "serve" or "prefill"
        self.engine = ServingSlots(cfg)
        self.traffic = Traffic()
        self.peer: tuple[str, int] | None = None
        if cfg.get("prefill_peer"):
            host, port = cfg["prefill_peer"]
            self.peer = (str(host), int(port))
        self.peer_pool: collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            collections.deque())
        self.model = str(cfg.get("model_name", DEFAULT_MODEL))
        self.created = int(time.time())
        self.served = 0
        self.rejected = 0

    def answer_json(self, writer: asyncio.StreamWriter, status: str, body: bytes) -> None:
        """One whole response with a JSON body (one message unit)."""
        msg = _head(f"HTTP/1.1 {status}", {"Content-Type": "application/json", "Content-Length": len(body)}) + body
        writer.write(msg)
        self.traffic.add(1, len(msg))

    def answer_error(self, writer: asyncio.StreamWriter, exc: RequestError) -> None:
        reason = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  503: "Service Unavailable"}.get(exc.status, "Error")
        self.answer_json(writer, f"{exc.status} {reason}", error_body(str(exc), exc.kind))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await read_head(reader)
                if head is None:
                    break
                start, headers = head
                try:
                    size = bounded_size(headers.get("content-length", "0"), MAX_REQUEST_BODY_BYTES, "Content-Length")
                except RequestError as exc:
                    self.answer_error(writer, exc)
                    await writer.drain()
                    break  # the body's end is unknown: the connection cannot carry another request
                body = await reader.readexactly(size) if size else b""
                method, _, rest = start.partition(" ")
                path = rest.split(" ", 1)[0].split("?", 1)[0]
                if method == "POST" and path == PREFILL_PATH:
                    await self.answer_prefill(writer, headers.get("x-corridor-api", "completions"), body)
                elif method == "POST" and path in (COMPLETIONS_PATH, CHAT_PATH):
                    await self.answer_completion(writer, "chat" if path == CHAT_PATH else "completions", body)
                elif method == "GET" and path == MODELS_PATH:
                    self.answer_json(writer, "200 OK", models_body(self.model, self.created))
                elif path in (COMPLETIONS_PATH, CHAT_PATH, MODELS_PATH, PREFILL_PATH):
                    self.answer_error(writer, RequestError(f"{method} is not allowed on {path}", status=405))
                else:
                    self.answer_error(writer, RequestError(
                        f"no route {path}; this server answers {COMPLETIONS_PATH}, {CHAT_PATH} and {MODELS_PATH}",
                        status=404, kind="not_found_error"))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _admit(self) -> bool:
        eng = self.engine
        if eng.slots.locked() and eng.waiting >= eng.queue_limit:
            return False
        eng.waiting += 1
        try:
            await eng.slots.acquire()
        finally:
            eng.waiting -= 1
        return True

    async def _prefill(self, prompt_tokens: int) -> tuple[float, float]:
        """Hold the prefill engine; returns (queue wait before prefill, prefill time) in raw seconds."""
        t0 = time.monotonic()
        async with self.engine.prefill_lock:
            t1 = time.monotonic()
            await pace_until(t1 + self.engine.prefill_s(prompt_tokens))
            return t1 - t0, time.monotonic() - t1

    async def answer_prefill(self, writer: asyncio.StreamWriter, api: str, body: bytes) -> None:
        try:
            prompt = parse_request(api, body).prompt_tokens
        except RequestError as exc:
            self.answer_error(writer, exc)
            return
        t_arrive = time.monotonic()
        if not await self._admit():
            self.answer_error(writer, RequestError("the prefill server's queue is full", status=503,
                                                   kind="server_overloaded"))
            return
        try:
            _, prefill = await self._prefill(prompt)
        finally:
            self.engine.slots.release()
        kv_bytes = prompt * self.engine.kv_bytes_per_token
        msg = _head("HTTP/1.1 200 OK", {
            "Content-Type": "application/octet-stream", "Content-Length": kv_bytes,
            "X-Queue-S": f"{time.monotonic() - t_arrive - prefill:.6f}", "X-Prefill-S": f"{prefill:.6f}",
            "X-Sent-At": f"{time.time():.6f}",
        })
        writer.write(msg)
        await write_zeros(writer, kv_bytes)
        self.traffic.add(1, len(msg) + kv_bytes)
        self.served += 1

    async def _remote_prefill(self, api: str, body: bytes) -> dict[str, str]:
        """Ask the prefill peer to run the prefill; read the KV cache it sends back."""
        assert self.peer is not None
        if self.peer_pool:
            reader, writer = self.peer_pool.popleft()
        else:
            reader, writer = await asyncio.open_connection(*self.peer)
        msg = _head(f"POST {PREFILL_PATH} HTTP/1.1", {"Host": self.peer[0], "Content-Type": "application/json",
                                                      "X-Corridor-Api": api, "Content-Length": len(body)}) + body
        writer.write(msg)
        self.traffic.add(1, len(msg))
        head = await read_head(reader)
        if head is None:
            raise ConnectionError("prefill peer closed the connection")
        status, headers = head
        if " 200 " not in status + " ":
            raise ConnectionError(f"prefill peer answered {status!r}")
        size = int(headers.get("content-length", "0"))
        t_head = time.time()
        await drain_body(reader, size)
        t_done = time.time()
        self.peer_pool.append((reader, writer))
        sent_at = float(headers.get("x-sent-at", t_head))
        return {"X-Queue-S": headers.get("x-queue-s", "0"), "X-Prefill-S": headers.get("x-prefill-s", "0"),
                "X-KV-Bytes": str(size), "X-KV-Transfer-S": f"{t_done - sent_at:.6f}"}

    async def answer_completion(self, writer: asyncio.StreamWriter, api: str, body: bytes) -> None:
        try:
            req = parse_request(api, body)
        except RequestError as exc:
            self.answer_error(writer, exc)
            return
        output = req.output_tokens
        t_arrive = time.monotonic()
        if not await self._admit():
            self.answer_error(writer, RequestError("the server's queue is full; retry later", status=503,
                                                   kind="server_overloaded"))
            self.rejected += 1
            return
        try:
            if self.peer is not None:
                extra = await self._remote_prefill(api, body)
            else:
                queued, prefill = await self._prefill(req.prompt_tokens)
                extra = {"X-Queue-S": f"{time.monotonic() - t_arrive - prefill:.6f}", "X-Prefill-S": f"{prefill:.6f}"}
            self.served += 1
            reply = Reply(req, str(self.served), int(time.time()))
            t_first = time.monotonic()
            step_s = self.engine.tpot_s * self.engine.scale
            if not req.stream:
                # the whole answer leaves when its last token is decoded
                await pace_until(t_first + (output - 1) * step_s)
                payload = reply.body()
                msg = _head("HTTP/1.1 200 OK", {"Content-Type": "application/json", "Content-Length": len(payload),
                                                **extra}) + payload
                writer.write(msg)
                self.traffic.add(1, len(msg))
                return
            head = _head("HTTP/1.1 200 OK", {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                             "Transfer-Encoding": "chunked", **extra})
            for i in range(output):
                if i:
                    await pace_until(t_first + i * step_s)
                data = chunk(reply.token_event(i))
                units = 1
                if i == 0:
                    data = head + data
                    units += 1
                if i == output - 1:
                    # the end of the stream leaves with the last token
                    if req.include_usage:
                        data += chunk(reply.usage_event())
                        units += 1
                    data += chunk(DONE_EVENT) + LAST_CHUNK
                    units += 2
                writer.write(data)
                self.traffic.add(units, len(data))
                await writer.drain()
        finally:
            self.engine.slots.release()


async def _serve_async(cfg: dict[str, Any], make_handler: Callable[[], Any], role: str) -> int:
    loop = asyncio.get_running_loop()
    stop = stdin_closed_event(loop)
    obj = make_handler()
    srv = await asyncio.start_server(obj.handle, host=str(cfg.get("bind", "0.0.0.0")), port=int(cfg.get("port", 0)),
                                     backlog=1024)
    say_ready(srv.sockets[0].getsockname()[1])
    async with srv:
        await stop.wait()
    emit(obj.traffic.record(role, str(cfg.get("host", ""))))
    return 0


def serve(config: dict[str, Any]) -> int:
    """Role ``inference-server``: run an LLM endpoint until stdin closes."""
    return asyncio.run(_serve_async(config, lambda: Server(config), "inference-server"))


class Store:
    """The ``inference-store`` role: answers each request with N bytes after M ms."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.scale = float(cfg.get("time_scale", 1.0))
        self.traffic = Traffic()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await read_head(reader)
                if head is None:
                    break
                start, headers = head
                try:
                    length = bounded_size(headers.get("content-length", "0"), MAX_TRANSFER_BYTES, "Content-Length")
                    query = parse_qs(urlsplit(start.split(" ")[1] if " " in start else "").query)
                    size = bounded_size(query.get("bytes", ["0"])[0], MAX_TRANSFER_BYTES, "bytes")
                    service_ms = float(query.get("service_ms", ["0"])[0])
                    if not 0.0 <= service_ms <= MAX_SERVICE_MS:  # also refuses nan
                        raise RequestError(f"service_ms must be from 0 to {MAX_SERVICE_MS:g}")
                except (RequestError, ValueError) as exc:
                    body = json.dumps({"error": str(exc)}).encode()
                    writer.write(_head("HTTP/1.1 400 Bad Request", {"Content-Type": "application/json",
                                                                     "Content-Length": len(body)}) + body)
                    await writer.drain()
                    break
                await drain_body(reader, length)
                if service_ms > 0:
                    await pace_until(time.monotonic() + service_ms / 1e3 * self.scale)
                msg = _head("HTTP/1.1 200 OK", {"Content-Type": "application/octet-stream", "Content-Length": size})
                writer.write(msg)
                await write_zeros(writer, size)
                self.traffic.add(1, len(msg) + size)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


def store(config: dict[str, Any]) -> int:
    """Role ``inference-store``: a retrieval store or tool host, until stdin closes."""
    return asyncio.run(_serve_async(config, lambda: Store(config), "inference-store"))


# ----------------------------------------------------------------------------- client


class Pool:
    """Keep-alive connections to one address."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.addr = addr
        self.idle: collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = collections.deque()
        self.opened = 0

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        conn = await asyncio.open_connection(*self.addr)
        self.opened += 1
        return conn

    async def warm(self, n: int) -> None:
        conns = await asyncio.gather(*(self.open() for _ in range(n)))
        self.idle.extend(conns)


class Client:
    """The ``inference-client`` role."""

    # Building a request takes tens of microseconds, now and then half a millisecond on a
    # busy machine; a trace's bursts put many requests within that of each other.
    PREPARE_AHEAD = 64
    PREPARE_SLACK_S = 0.002

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.scale = float(cfg.get("time_scale", 1.0))
        self.pattern = str(cfg.get("pattern", "chat"))
        if self.pattern not in SERVING_PATTERNS:
            raise AgentError(f"unknown pattern {self.pattern!r}; use one of {', '.join(SERVING_PATTERNS)}")
        self.pattern_obj = SERVING_PATTERNS[self.pattern]
        self.host = str(cfg.get("host", ""))
        self.servers = [(str(h), int(p)) for h, p in cfg["servers"]]
        self.server_names = list(cfg.get("server_names", [f"{h}:{p}" for h, p in self.servers]))
        self.stores = [(str(h), int(p)) for h, p in cfg.get("stores", [])]
        self.keepalive = str(cfg.get("connection", "keepalive")) == "keepalive"
        self.bytes_per_token = int(cfg.get("prompt_bytes_per_token", 4))
        self.api = str(cfg.get("api", "completions"))
        if self.api not in API_PATHS:
            raise AgentError(f"unknown API {self.api!r}; use one of {', '.join(API_PATHS)}")
        self.path = str(cfg.get("path") or API_PATHS[self.api])
        self.model = str(cfg.get("model_name", DEFAULT_MODEL))
        self.include_usage = bool(cfg.get("include_usage", True))
        self.pools = {addr: Pool(addr) for addr in self.servers + self.stores}
        self.traffic = Traffic()
        self.records: list[dict[str, Any]] = []
        self.t0 = 0.0
        self.prepared = False
        self.next_server = 0
        self.next_store = 0
        self.timeout_s = float(cfg.get("timeout_s", 600.0))

    # -- one HTTP exchange ---------------------------------------------------------------
    async def _conn(self, addr: tuple[str, int]) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], bool]:
        pool = self.pools[addr]
        if self.keepalive and pool.idle:
            return pool.idle.popleft(), False
        return await pool.open(), True

    def _release(self, addr: tuple[str, int], conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        if self.keepalive:
            self.pools[addr].idle.append(conn)
        else:
            conn[1].close()

    def _completion_request(self, rid: str, prompt: int, output: int, addr: tuple[str, int]) -> bytes:
        # the prompt's words set its token count on corridor's server (prompt_token_count)
        body = completion_body(self.api, self.model, prompt_text(prompt, self.bytes_per_token), output,
                               include_usage=self.include_usage)
        return _head(f"POST {self.path} HTTP/1.1", {
            "Host": f"{addr[0]}:{addr[1]}", "Content-Type": "application/json", "Accept": "text/event-stream",
            "X-Request-Id": rid, "Content-Length": len(body)}) + body

    def prepare_call(self, rid: str, prompt: int, output: int) -> tuple[int, tuple[str, int], bytes]:
        """Pick the server and build the request before its send time."""
        idx = self.next_server % len(self.servers)
        self.next_server += 1
        addr = self.servers[idx]
        return idx, addr, self._completion_request(rid, prompt, output, addr)

    def send_now(self, prep: tuple[int, tuple[str, int], bytes]
                 ) -> tuple[float, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
        """Write a prepared request on an idle keep-alive connection now, without yielding.

        Returns the send time and the connection (None when a new connection must be opened;
        the caller opens it, and TTFT then includes the handshake).
        """
        _, addr, msg = prep
        t_send = time.monotonic()
        if self.keepalive and self.pools[addr].idle:
            conn = self.pools[addr].idle.popleft()
            conn[1].write(msg)
            self.traffic.add(1, len(msg))
            return t_send, conn
        return t_send, None

    async def llm_call(self, rid: str, prompt: int, output: int, t_sched: float | None, extra: dict[str, Any],
                       sent: tuple[tuple[int, tuple[str, int], bytes], float,
                                   tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] | None = None
                       ) -> dict[str, Any]:
        """One streamed completion; returns its ``request`` record (durations unscaled)."""
        if sent is None:
            prep = self.prepare_call(rid, prompt, output)
            t_send, conn = self.send_now(prep)
        else:
            prep, t_send, conn = sent
        idx, addr, msg = prep
        k = self.scale
        rec: dict[str, Any] = {
            "kind": "request", "pattern": self.pattern, "request_id": rid, "client": self.host,
            "server": self.server_names[idx], "prompt_tokens": prompt, "output_tokens": output,
            "t_sched_s": None if t_sched is None else (t_sched - self.t0) / k, "t_send_s": (t_send - self.t0) / k,
            # unscaled, on the machine's monotonic clock: lines the request up with the runner's fault records
            "t_send_monotonic_s": t_send, "request_bytes": len(msg),
            "ttft_s": None, "tpot_s": None, "e2e_s": None, "ok": False, "error": None, "time_scale": k, **extra}
        try:
            rec["new_connection"] = conn is None
            if conn is None:
                conn = await self.pools[addr].open()
                conn[1].write(msg)
                self.traffic.add(1, len(msg))
            reader, writer = conn
            head = await read_head(reader)
            if head is None:
                raise ConnectionError("server closed the connection")
            status, headers = head
            if " 200 " not in status + " ":
                raise ConnectionError(f"server answered {status!r}{await _error_detail(reader, headers)}")
            stream = await read_event_stream(reader, headers)
            t_done = time.monotonic()
            if stream.framing == "close":
                conn[1].close()
            else:
                self._release(addr, conn)
            conn = None
            times = stream.token_times
            if not times:
                raise ConnectionError(stream.error or "response carried no tokens")
            gaps = [(b - a) / k for a, b in zip(times, times[1:], strict=False)]
            tokens = stream.tokens
            rec.update({
                "ttft_s": (times[0] - t_send) / k,
                "tpot_s": (times[-1] - times[0]) / k / (len(times) - 1) if len(times) > 1 else None,
                "e2e_s": (t_done - t_send) / k, "tokens_received": tokens, "events_received": len(times),
                "done_marker": stream.done_marker,
                "gap_p50_s": _quantile(gaps, 0.5), "gap_p99_s": _quantile(gaps, 0.99),
                "gap_max_s": max(gaps) if gaps else None,
                # corridor's server says how long the request queued and prefilled; others say nothing
                "server_queue_s": float(headers["x-queue-s"]) / k if "x-queue-s" in headers else None,
                "server_prefill_s": float(headers["x-prefill-s"]) / k if "x-prefill-s" in headers else None,
                "ok": tokens == output and stream.error is None,
                "error": stream.error or (None if tokens == output else f"short response: {tokens} of {output} tokens"),
            })
            if "x-kv-bytes" in headers:
                rec["kv_bytes"] = int(headers["x-kv-bytes"])
                rec["kv_transfer_s"] = float(headers["x-kv-transfer-s"]) / k
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"
            rec["e2e_s"] = (time.monotonic() - t_send) / k
            if conn is not None:
                conn[1].close()
        except asyncio.CancelledError:
            # the run's deadline passed with this request unanswered: keep it, as a failure
            rec["error"] = "timeout: no complete answer before the run's deadline"
            self.records.append(rec)
            if conn is not None:
                conn[1].close()
            raise
        return rec

    async def fetch(self, addr: tuple[str, int], path: str, size_bytes: int, service_ms: float,
                    body_bytes: int = 0) -> float:
        """One request to a store/tool host; returns its duration (unscaled seconds)."""
        t0 = time.monotonic()
        conn, _ = await self._conn(addr)
        reader, writer = conn
        body = b"q" * body_bytes
        msg = _head(f"POST {path}?bytes={size_bytes}&service_ms={service_ms:g} HTTP/1.1",
                    {"Host": f"{addr[0]}:{addr[1]}", "Content-Length": len(body)}) + body
        writer.write(msg)
        self.traffic.add(1, len(msg))
        head = await read_head(reader)
        if head is None:
            raise ConnectionError("store closed the connection")
        await drain_body(reader, int(head[1].get("content-length", "0")))
        self._release(addr, conn)
        return (time.monotonic() - t0) / self.scale

    def next_store_addr(self) -> tuple[str, int]:
        addr = self.stores[self.next_store % len(self.stores)]
        self.next_store += 1
        return addr

    # -- one session (pattern) -------------------------------------------------------------
    async def session(self, spec: dict[str, Any], t_sched: float | None, sent: Any = None,
                      stall_s: float | None = None) -> None:
        """One scheduled arrival, as the workload's pattern shapes it (:mod:`corridor.workloads.inference.patterns`)."""
        # the first call of a scheduled session carries how much of its send lateness the host caused
        first = {} if stall_s is None else {"sched_stall_s": stall_s / self.scale}
        sid = str(spec.get("id", len(self.records)))
        await self.pattern_obj.session(self, spec, sid, t_sched, sent, first)

    def session_record(self, sid: str, t_sched: float | None, t_start: float, pattern: str, *, calls: int, ok: bool,
                       **extra: Any) -> dict[str, Any]:
        """The ``session`` record of a multi-call or retrieval session that began at ``t_start`` (monotonic)."""
        return {"kind": "session", "pattern": pattern, "session_id": sid, "client": self.host, "calls": calls,
                "e2e_s": (time.monotonic() - t_start) / self.scale, **extra, "ok": ok, "time_scale": self.scale,
                "t_sched_s": None if t_sched is None else (t_sched - self.t0) / self.scale}

    # -- arrival processes -----------------------------------------------------------------
    async def prepare(self) -> None:
        """What comes before the schedule's time zero: wait for a user's server, warm the connections."""
        if self.prepared:
            return
        self.prepared = True
        cfg = self.cfg
        wait_s = float(cfg.get("wait_ready_s", 0.0))
        timeout_s = float(cfg.get("timeout_s", 600.0))
        if wait_s > 0:
            # a server started by the user's own command: wait until it serves (not counted in traffic,
            # which compares corridor's own agents with a capture); the wait comes out of the time limit
            t_wait = time.monotonic()
            await asyncio.gather(*(wait_until_serving(addr, models_path(self.path), wait_s)
                                   for addr in self.servers))
            timeout_s = max(timeout_s - (time.monotonic() - t_wait), 1.0)
        self.timeout_s = timeout_s
        warm = int(cfg.get("warm_connections", 1)) if self.keepalive else 0
        if warm:
            await asyncio.gather(*(pool.warm(warm) for pool in self.pools.values()))

    async def run(self, t0: float | None = None) -> None:
        """Replay the schedule from ``t0`` (this machine's monotonic clock; default: just after preparing)."""
        cfg = self.cfg
        await self.prepare()
        self.t0 = time.monotonic() + float(cfg.get("start_delay_s", 0.05)) if t0 is None else t0
        deadline = self.t0 + self.timeout_s
        tasks: set[asyncio.Task[None]] = set()
        pacer = Pacer()
        with open(cfg["schedule"], encoding="utf-8") as f:
            if str(cfg.get("arrival", "open")) == "closed":
                await self._closed(f)
            else:
                source = self._prepared(f)
                ahead: collections.deque[tuple[float, dict[str, Any], Any]] = collections.deque()
                following = next(source, None)
                while ahead or following is not None:
                    if not ahead and following is not None:
                        ahead.append(following)
                        following = next(source, None)
                    # requests of a burst are due together: build the ones after this while
                    # there is time to spare, so that each send then costs only its write
                    while (following is not None and len(ahead) < self.PREPARE_AHEAD
                           and ahead[0][0] - time.monotonic() > self.PREPARE_SLACK_S):
                        ahead.append(following)
                        following = next(source, None)
                    target, spec, prep = ahead.popleft()
                    if target > deadline:
                        break
                    stall = await pacer.wait(target)
                    # the request leaves here, not in the session task, which runs only after
                    # every callback already queued in this loop iteration
                    sent = None if prep is None else (prep, *self.send_now(prep))
                    task = asyncio.ensure_future(self.session(spec, target, sent, stall))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0.0))
        late = list(tasks)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    def _prepared(self, lines: Any) -> Any:
        """Schedule lines as (send time, spec, prepared request or None for RAG, which fetches first)."""
        for line in lines:
            if not line.strip():
                continue
            spec = json.loads(line)
            prep = None
            rid = self.pattern_obj.first_call_id(str(spec.get("id", "")))
            if rid is not None:
                prep = self.prepare_call(rid, int(spec["prompt_tokens"]), int(spec["output_tokens"]))
            yield self.t0 + float(spec["t_s"]) * self.scale, spec, prep

    async def _closed(self, lines: Any) -> None:
        """Closed loop: ``concurrency`` users each send, wait for the answer, think, repeat."""
        think_s = float(self.cfg.get("think_time_s", 0.0)) * self.scale
        rng = random.Random(int(self.cfg.get("seed", 1)))
        lock = asyncio.Lock()
        it = iter(lines)

        async def next_spec() -> dict[str, Any] | None:
            async with lock:
                for line in it:
                    if line.strip():
                        spec: dict[str, Any] = json.loads(line)
                        return spec
            return None

        async def user() -> None:
            while True:
                spec = await next_spec()
                if spec is None:
                    return
                await self.session(spec, time.monotonic())
                if think_s > 0:
                    await asyncio.sleep(rng.expovariate(1.0 / think_s))

        await sleep_until(self.t0)
        t_begin = time.monotonic()
        users = [asyncio.ensure_future(user()) for _ in range(int(self.cfg.get("concurrency", 4)))]
        _, late = await asyncio.wait(users, timeout=self.timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
        self.records.append({"kind": "throughput", "pattern": self.pattern, "client": self.host,
                             "duration_s": (time.monotonic() - t_begin) / self.scale,
                             "requests": sum(1 for r in self.records if r["kind"] == "request" and r["ok"]),
                             "output_tokens": sum(r.get("tokens_received", 0) for r in self.records
                                                  if r["kind"] == "request"),
                             "time_scale": self.scale})


async def _client_async(cfg: dict[str, Any]) -> int:
    cl = Client(cfg)
    loop = asyncio.get_running_loop()
    t0 = None
    if cfg.get("start_on_signal"):
        # Every client of a point replays one schedule split between them: they start together, at the
        # wall-clock time the runner sends once all are READY, not each when its own start-up ended.
        start, stop = stdin_start_then_end(loop)
        await cl.prepare()
        say_ready(0)
        line = await start
        if line is None:  # stopped before the start
            return EXIT_STOPPED
        try:
            start_at = float(json.loads(line)["start_at"])
        except (ValueError, KeyError, TypeError) as exc:
            print(f"inference-client: the start line must be {{\"start_at\": EPOCH_SECONDS}}: {exc}",
                  file=sys.stderr)
            return EXIT_FAILURE
        t0 = time.monotonic() + (start_at - time.time())
    else:
        stop = stdin_closed_event(loop)
    work = asyncio.ensure_future(cl.run(t0))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopped = not work.done()
        if stopped:  # the runner closed stdin first: keep the requests that finished, and say so
            work.cancel()
            await asyncio.wait({work})
        else:
            work.result()  # the client's own failure, raised here
    finally:
        stopper.cancel()
        for pool in cl.pools.values():
            for _, writer in pool.idle:
                writer.close()
    for rec in cl.records:
        emit(rec)
    emit(cl.traffic.record("inference-client", cl.host))
    if stopped:
        return EXIT_STOPPED
    say_done()
    return 0


def client(config: dict[str, Any]) -> int:
    """Role ``inference-client``: replay the schedule, print records, exit (early on stdin's end, keeping them)."""
    # A collector pause of several milliseconds would show up as scheduling error.
    gc.disable()
    return asyncio.run(_client_async(config))


# ----------------------------------------------------------------------------- message replay


def stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Lines from stdin as they come; None at end of file."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        try:
            for raw in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, raw)
        except (OSError, ValueError):
            pass
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, daemon=True).start()
    return queue


class Replayer:
    """The ``message-replay`` role: sends its share of a generic message trace, times what it receives.

    ``sends`` is a JSON-lines file of ``{"seq", "t_s", "dst", "bytes"}`` this host
    sends (in time order); ``expect`` one of ``{"seq", "src", "bytes"}`` it will
    receive. One TCP connection per (source, destination) pair carries that
    pair's messages back to back, so the receiver knows where each ends from
    the sizes alone and adds no framing bytes (only a one-line hello before
    the start).
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.host = str(cfg["host"])
        self.scale = float(cfg.get("time_scale", 1.0))
        self.expect: dict[str, collections.deque[list[int]]] = collections.defaultdict(collections.deque)
        self.pending = 0
        with open(cfg["expect"], encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    e = json.loads(line)
                    self.expect[str(e["src"])].append([int(e["seq"]), int(e["bytes"])])
                    self.pending += 1
        self.received = asyncio.Event()
        if self.pending == 0:
            self.received.set()
        self.records: list[dict[str, Any]] = []
        self.t0 = 0.0
        self.traffic = Traffic()

    def _done(self, src: str, seq: int) -> None:
        self.records.append({"kind": "message_recv", "seq": seq, "src": src, "dst": self.host,
                             "t_done_s": (time.monotonic() - self.t0) / self.scale})
        self.pending -= 1
        if self.pending == 0:
            self.received.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = (await reader.readline()).decode("ascii", "replace").split()
            if len(hello) != 2 or hello[0] != "corridor-replay":
                return
            src = hello[1]
            queue = self.expect[src]
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                n = len(data)
                while n and queue:
                    head = queue[0]
                    take = min(n, head[1])
                    head[1] -= take
                    n -= take
                    if head[1] == 0:
                        queue.popleft()
                        self._done(src, head[0])
                while queue and queue[0][1] == 0:  # zero-byte messages complete with what precedes them
                    self._done(src, queue.popleft()[0])
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def send_all(self, peers: dict[str, list[Any]]) -> None:
        sends = []
        with open(self.cfg["sends"], encoding="utf-8") as f:
            sends = [json.loads(line) for line in f if line.strip()]
        writers: dict[str, asyncio.StreamWriter] = {}
        for dst in sorted({str(x["dst"]) for x in sends}):
            ip, port = peers[dst]
            _, w = await asyncio.open_connection(str(ip), int(port))
            w.write(f"corridor-replay {self.host}\n".encode("ascii"))
            writers[dst] = w
        pacer = Pacer()
        for x in sends:
            target = self.t0 + float(x["t_s"]) * self.scale
            stall = await pacer.wait(target)
            w = writers[str(x["dst"])]
            t_send = time.monotonic()
            size = int(x["bytes"])
            left = size
            while left > 0:
                n = min(left, len(_ZERO_BLOCK))
                w.write(_ZERO_BLOCK if n == len(_ZERO_BLOCK) else _ZERO_BLOCK[:n])
                left -= n
            self.traffic.add(1, size)
            self.records.append({"kind": "message_sent", "seq": int(x["seq"]), "src": self.host, "dst": x["dst"],
                                 "bytes": size, "t_sched_s": (target - self.t0) / self.scale,
                                 "t_send_s": (t_send - self.t0) / self.scale, "sched_stall_s": stall / self.scale})
            if w.transport.get_write_buffer_size() > (8 << 20):
                await w.drain()
                pacer.mark()
        for w in writers.values():
            await w.drain()


async def _replay_async(cfg: dict[str, Any]) -> int:
    loop = asyncio.get_running_loop()
    control = stdin_lines(loop)
    rep = Replayer(cfg)
    srv = await asyncio.start_server(rep.handle, host=str(cfg.get("bind", "0.0.0.0")), port=0, backlog=1024)
    say_ready(srv.sockets[0].getsockname()[1])
    async with srv:
        line = await control.get()
        if line is None:
            return 0
        ctl = json.loads(line)
        rep.t0 = time.monotonic() + (float(ctl["start_at"]) - time.time())
        await rep.send_all(ctl["peers"])
        await rep.received.wait()
        say_done()
        while await control.get() is not None:
            pass
    for rec in rep.records:
        emit(rec)
    emit(rep.traffic.record("message-replay", rep.host))
    return 0


def replay(config: dict[str, Any]) -> int:
    """Role ``message-replay``: one host's part of a generic message trace replay."""
    gc.disable()
    return asyncio.run(_replay_async(config))


#: This module's roles, for ``corridor.agent``'s ROLES registry.
ROLES: dict[str, Callable[[dict[str, Any]], int]] = {
    "inference-server": serve,
    "inference-client": client,
    "inference-store": store,
    "message-replay": replay,
}


def _raise_priority(cfg: dict[str, Any]) -> None:
    """The runner asks for nice -10 by default and, for the client, a low real-time priority."""
    lifecycle.raise_priority(int(cfg.get("nice", 0)), int(cfg.get("realtime_priority", 0)))


def start(role: str, config: dict[str, Any]) -> int:
    """Run one of :data:`ROLES` with the shared lifecycle (priority, watchdog)."""
    _raise_priority(config)
    limit_s = float(config.get("timeout_s", 3600.0)) + float(config.get("wait_ready_s", 0.0)) + 30.0
    lifecycle.start_watchdog(limit_s, role)
    return ROLES[role](config)

