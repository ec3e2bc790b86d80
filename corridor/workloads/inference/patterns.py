"""Inference patterns: each is one object that gives the client's session, its host needs and the model's terms.

Stage: workload plug-in, shared by the client agent (standard library only,
inside the emulated hosts) and the analytic model (pure). A pattern's
:meth:`ServingPattern.session` is what one scheduled arrival does on the
client (one completion, a chain of them with tool calls, retrieval then a
completion); :meth:`ServingPattern.model_terms` gives the serving model
(:mod:`corridor.workloads.inference.model`) the same shape: the prompt the
server really sees, the round trips before it, the KV cache's leg, the calls per
session. So the session the agents run and the session the model walks come
from one place. Adding a pattern is one class here and one entry in
:data:`PATTERNS`. This module imports nothing beyond the standard library: the
model's side gets the plan's figures through :class:`ModelContext`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PathFigures:
    """One direction of a path between two sites, as the model uses it."""

    rtt_s: float
    rate_mbps: float


@dataclass(frozen=True)
class ModelContext:
    """What a pattern's model terms may look at: the host groups' sites and the paths between them.

    ``path(a, b)`` gives the figures from site ``a`` to site ``b``.
    """

    client_site: str
    group_sites: Mapping[str, Sequence[str]]
    path: Callable[[str, str], PathFigures]


@dataclass(frozen=True)
class ModelTerms:
    """A pattern's share of the model: what it adds to a plain completion.

    ``prompt_extra_tokens``: tokens added to every prompt (retrieved documents);
    ``before_s``: time spent before the completion is sent (retrieval);
    ``tool_s``: one tool round trip between chained calls (``tool_calls`` of
    them); ``kv_from`` the site a KV cache comes from (disaggregated serving);
    ``calls`` per session; ``session`` says which session figure the model gives.
    """

    prompt_extra_tokens: int = 0
    before_s: float = 0.0
    tool_s: float = 0.0
    tool_calls: int = 0
    kv_from: str | None = None
    calls: int = 1
    session: str | None = None  # "retrieval" or "chain": the model reports a session figure
    figures: dict[str, Any] = field(default_factory=dict)


class ServingPattern:
    """A plain completion per arrival (``chat``); the other patterns override what differs."""

    name = "chat"
    description = "one streamed completion per arrival"
    #: each decode server asks its own prefill host for the KV cache (``prefill`` hosts, one per server)
    prefill_peers = False

    def check_params(self, p: Any) -> tuple[str, str] | None:
        """A problem with the parameters as (message, key), or None."""
        return None

    def check_hosts(self, groups: Mapping[str, Sequence[str]]) -> str | None:
        """A problem with the host groups, or None."""
        return None

    def first_call_id(self, session_id: str) -> str | None:
        """The request id of a session's first call, so the client can build it ahead; None when it cannot."""
        return session_id

    def model_terms(self, p: Any, ctx: ModelContext) -> ModelTerms:
        return ModelTerms()

    async def session(self, client: Any, spec: Mapping[str, Any], sid: str, t_sched: float | None, sent: Any,
                      first: dict[str, Any]) -> None:
        """Run one scheduled arrival on ``client`` (a :class:`corridor.agent.inference.Client`)."""
        client.records.append(await client.llm_call(sid, int(spec["prompt_tokens"]), int(spec["output_tokens"]),
                                                    t_sched, first, sent))


class Batch(ServingPattern):
    name = "batch"
    description = "offline closed-loop load; throughput only"

    def check_params(self, p: Any) -> tuple[str, str] | None:
        if p.arrival != "closed":
            return "pattern 'batch' runs closed-loop; set arrival: closed", "arrival"
        return None


class Disagg(ServingPattern):
    name = "disagg"
    description = "prefill and decode on different hosts; the KV cache moves between them"
    prefill_peers = True

    def check_params(self, p: Any) -> tuple[str, str] | None:
        if p.shape.kv_bytes_per_token <= 0:
            return "disaggregated serving needs a model shape with a KV cache", "model"
        if p.server_command is not None:
            return ("pattern 'disagg' needs corridor's own servers (they move the KV cache); drop server_command",
                    "server_command")
        return None

    def check_hosts(self, groups: Mapping[str, Sequence[str]]) -> str | None:
        if len(groups.get("prefill", [])) != len(groups["servers"]):
            return "pattern 'disagg' needs one 'prefill' host per decode host in 'servers'"
        return None

    def model_terms(self, p: Any, ctx: ModelContext) -> ModelTerms:
        return ModelTerms(kv_from=ctx.group_sites["prefill"][0])


class Rag(ServingPattern):
    name = "rag"
    description = "parallel retrieval from store hosts, then a completion with the documents in the prompt"

    def check_hosts(self, groups: Mapping[str, Sequence[str]]) -> str | None:
        if not groups.get("stores"):
            return "pattern 'rag' needs at least one host in 'stores'"
        return None

    def first_call_id(self, session_id: str) -> str | None:
        return None  # the prompt holds the documents, known only after retrieval

    def model_terms(self, p: Any, ctx: ModelContext) -> ModelTerms:
        st = ctx.path(ctx.client_site, ctx.group_sites["stores"][0])
        retrieval = st.rtt_s + p.rag_service_ms / 1e3 + p.rag_fanout * p.rag_doc_bytes * 8 / (st.rate_mbps * 1e6)
        return ModelTerms(prompt_extra_tokens=p.rag_fanout * p.rag_doc_tokens, before_s=retrieval,
                          session="retrieval", figures={"retrieval_s": retrieval})

    async def session(self, client: Any, spec: Mapping[str, Any], sid: str, t_sched: float | None, sent: Any,
                      first: dict[str, Any]) -> None:
        cfg = client.cfg
        t_start = time.monotonic()
        fanout = int(cfg.get("rag_fanout", 4))
        doc_bytes = int(cfg.get("rag_doc_bytes", 16384))
        t_r = time.monotonic()
        error = None
        try:
            await asyncio.gather(*(client.fetch(client.next_store_addr(), "/doc", doc_bytes,
                                                float(cfg.get("rag_service_ms", 0.0)), 256)
                                   for _ in range(fanout)))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            error = f"retrieval: {exc}"
        retrieval_s = (time.monotonic() - t_r) / client.scale
        prompt = int(spec["prompt_tokens"]) + fanout * int(cfg.get("rag_doc_tokens", 512))
        rec = await client.llm_call(sid, prompt, int(spec["output_tokens"]), t_sched,
                                    {"session_id": sid, "retrieval_s": retrieval_s, **first})
        if error:
            rec["ok"], rec["error"] = False, error
        client.records.append(rec)
        client.records.append(client.session_record(sid, t_sched, t_start, self.name, calls=1, ok=bool(rec["ok"]),
                                                    retrieval_s=retrieval_s))


class Agentic(ServingPattern):
    name = "agentic"
    description = "a chain of dependent completions, optionally with tool round trips to a store host"

    def first_call_id(self, session_id: str) -> str | None:
        return session_id + ".0"

    def model_terms(self, p: Any, ctx: ModelContext) -> ModelTerms:
        stores = ctx.group_sites.get("stores") or []
        if not stores:
            return ModelTerms(calls=p.calls, session="chain")
        tool_rtt = ctx.path(ctx.client_site, stores[0]).rtt_s
        return ModelTerms(calls=p.calls, tool_s=tool_rtt + p.tool_service_ms / 1e3, tool_calls=p.calls - 1,
                          session="chain", figures={"tool_rtt_s": tool_rtt})

    async def session(self, client: Any, spec: Mapping[str, Any], sid: str, t_sched: float | None, sent: Any,
                      first: dict[str, Any]) -> None:
        cfg = client.cfg
        # The session begins when its first request left. The arrival loop sends it before this coroutine
        # runs (``sent``), and the first call's e2e counts from that send: a session's e2e from a later
        # clock reading would come out shorter than its calls and tool round trips added up.
        t_start = float(sent[1]) if sent is not None else time.monotonic()
        prompt, output = int(spec["prompt_tokens"]), int(spec["output_tokens"])
        calls = int(cfg.get("calls", 10))
        tool_s = 0.0
        ok = True
        for c in range(calls):
            rec = await client.llm_call(f"{sid}.{c}", prompt, output, t_sched if c == 0 else None,
                                        {"session_id": sid, "call_index": c, **(first if c == 0 else {})},
                                        sent if c == 0 else None)
            client.records.append(rec)
            ok = ok and bool(rec["ok"])
            if not rec["ok"]:
                break
            if client.stores and c < calls - 1:
                try:
                    tool_s += await client.fetch(client.next_store_addr(), "/tool",
                                                 int(cfg.get("tool_response_bytes", 2048)),
                                                 float(cfg.get("tool_service_ms", 0.0)),
                                                 int(cfg.get("tool_request_bytes", 512)))
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    ok = False
                    client.records[-1]["error"] = f"tool call: {exc}"
                    break
        client.records.append(client.session_record(sid, t_sched, t_start, self.name, calls=calls, ok=ok,
                                                    tool_s=tool_s))


#: Every inference pattern (a workload's ``pattern``), in the order ``--help`` lists them.
PATTERNS: dict[str, ServingPattern] = {p.name: p for p in (ServingPattern(), Agentic(), Batch(), Rag(), Disagg())}
