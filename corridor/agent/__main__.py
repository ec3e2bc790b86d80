"""``python -m corridor.agent ROLE --config JSON``: start one agent in this host, whatever its role.

Stage: workload run (standard library only). :data:`ROLES` is the one explicit
table of roles, and every role has one lifecycle (:mod:`corridor.agent.lifecycle`):
a JSON config (``--config`` is a JSON object, or ``@path`` to a file holding
one), ``READY <port>`` on stdout once it accepts connections, its records as
JSON lines on stdout, ``DONE`` when its work is finished, an end when its stdin
closes, a watchdog, a raised priority and the same exit statuses. What differs
is only how a role's config is read: the mesh roles (``train``,
``collective``) join ranks through a rendezvous and take the fields of
:class:`corridor.agent.runtime.AgentConfig`; the others take their own object.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corridor.agent.lifecycle import EXIT_BAD_CONFIG


@dataclass(frozen=True)
class Role:
    """One agent role: how it starts from its JSON config, and what it does."""

    name: str
    kind: str  # "mesh" (ranks meet through a rendezvous; AgentConfig) or "stream" (a plain JSON object)
    describe: str


ROLES: dict[str, Role] = {r.name: r for r in (
    Role("train", "mesh", "one rank of a training job: compute and gradient synchronisation per step"),
    Role("collective", "mesh", "one rank of a collective benchmark (nccl-tests style size sweep)"),
    Role("inference-server", "stream", "an OpenAI-compatible LLM server following the serving model"),
    Role("inference-client", "stream", "an LLM client: arrivals, streaming, TTFT/TPOT per request"),
    Role("inference-store", "stream", "a retrieval or tool store answering fixed-size reads"),
    Role("message-replay", "stream", "one host of a generic message-trace replay"),
)}


def _read_config(text: str) -> Any:
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as handle:
            text = handle.read()
    return json.loads(text)


def run(role: str, config_text: str) -> int:
    """Start ``role`` with its config; returns the process exit status."""
    spec = ROLES[role]
    try:
        config = _read_config(config_text)
    except (ValueError, OSError) as exc:
        print(f"corridor agent: bad --config for {role}: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if spec.kind == "mesh":
        from corridor.agent.collectives import role_collective
        from corridor.agent.runtime import AgentConfig, AgentFailure, run_role
        from corridor.agent.training import role_train

        functions: dict[str, Callable[..., Any]] = {"train": role_train, "collective": role_collective}
        try:
            cfg = AgentConfig.from_json(json.dumps(config))
        except (AgentFailure, ValueError, TypeError) as exc:
            print(f"corridor agent: bad --config for {role}: {exc}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        return run_role(functions[role], cfg)
    from corridor.agent.inference import start

    if not isinstance(config, dict):
        print(f"corridor agent: bad --config for {role}: expected a JSON object", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return start(role, config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corridor.agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--config", required=True, help="JSON object, or @file")
    args = parser.parse_args(argv)
    return run(args.role, args.config)


if __name__ == "__main__":
    sys.exit(main())
