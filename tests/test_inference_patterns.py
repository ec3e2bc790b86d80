"""Inference patterns are objects: one class gives the client's session, the host needs and the model's terms."""

from __future__ import annotations

from typing import Any

import pytest

from corridor.agent.inference import Client
from corridor.errors import AgentError, SpecError
from corridor.planning.points import plan_for_topology
from corridor.workloads.inference import patterns
from corridor.workloads.inference import run as inf

HOSTS = {"servers": ["rem-gpu1"], "clients": ["cty-cli1"], "stores": ["cty-gpu1"]}


def test_each_pattern_is_registered_once_under_its_own_name() -> None:
    assert all(name == pattern.name for name, pattern in patterns.PATTERNS.items())
    assert inf.PATTERNS == {name: pattern.description for name, pattern in patterns.PATTERNS.items()}
    assert set(patterns.PATTERNS) == {"chat", "agentic", "batch", "rag", "disagg"}


def test_the_model_takes_the_prompt_and_session_from_the_pattern_object(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_for_topology("two-site")
    p = inf.validate({"pattern": "chat", "requests": 20, "prompt_tokens": 512}, where="t")
    before = inf.predict(p, plan, hosts=HOSTS, seed=3)

    class LongerPrompt(patterns.ServingPattern):
        def model_terms(self, params: Any, ctx: patterns.ModelContext) -> patterns.ModelTerms:
            return patterns.ModelTerms(prompt_extra_tokens=1000, before_s=0.5, session="retrieval",
                                       figures={"retrieval_s": 0.5})

    monkeypatch.setitem(patterns.PATTERNS, "chat", LongerPrompt())
    after = inf.predict(p, plan, hosts=HOSTS, seed=3)
    # the unloaded TTFT grows by exactly the prefill of the added tokens, and the session figure appears
    added_prefill_s = after["prefill_s"] - before["prefill_s"]
    assert added_prefill_s == pytest.approx(p.prefill_s(1512) - p.prefill_s(512))
    assert after["ttft_unloaded_s"] - before["ttft_unloaded_s"] == pytest.approx(added_prefill_s)
    assert "session_e2e_s" not in before
    assert after["session_e2e_s"] == pytest.approx(0.5 + after["e2e_unloaded_s"])


def test_rag_adds_its_documents_and_retrieval_and_agentic_its_chain() -> None:
    plan = plan_for_topology("two-site")
    rtt_s = plan.path_params("city", "remote").rtt_ms / 1e3
    rag = inf.validate({"pattern": "rag", "requests": 10, "rag_fanout": 3, "rag_doc_tokens": 100}, where="t")
    chat = inf.validate({"pattern": "chat", "requests": 10, "prompt_tokens": rag.prompt_tokens + 300}, where="t")
    assert inf.predict(rag, plan, hosts=HOSTS, seed=1)["prefill_s"] == inf.predict(chat, plan, hosts=HOSTS,
                                                                                   seed=1)["prefill_s"]
    chain = inf.validate({"pattern": "agentic", "calls": 4, "requests": 3}, where="t")
    out = inf.predict(chain, plan, hosts=HOSTS, seed=1)
    # the store sits in the client's own site: four calls across the corridor, three tool calls that are not
    assert out["calls"] == 4
    assert out["network_session_s"] == pytest.approx(4 * rtt_s + 3 * plan.path_params("city", "city").rtt_ms / 1e3)


def test_a_pattern_names_what_it_needs() -> None:
    with pytest.raises(SpecError, match="closed-loop"):
        inf.validate({"pattern": "batch", "arrival": "poisson"}, where="t")
    plan = plan_for_topology("two-site")
    p = inf.validate({"pattern": "rag"}, where="t")
    with pytest.raises(AgentError, match="'stores'"):
        inf.predict(p, plan, hosts={"servers": ["rem-gpu1"], "clients": ["cty-cli1"]})
    d = inf.validate({"pattern": "disagg"}, where="t")
    with pytest.raises(AgentError, match="one 'prefill' host per decode host"):
        inf.predict(d, plan, hosts=HOSTS)


def test_the_client_agent_refuses_a_pattern_it_has_no_object_for() -> None:
    with pytest.raises(AgentError, match="unknown pattern 'gossip'; use one of chat, agentic"):
        Client({"pattern": "gossip", "servers": [["10.0.0.1", 8000]]})
    assert Client({"pattern": "rag", "servers": [["10.0.0.1", 8000]]}).pattern_obj is patterns.PATTERNS["rag"]
