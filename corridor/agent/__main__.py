"""``python -m corridor.agent ROLE --config JSON``: start one agent in this host.

Stage: workload run (standard library only). :data:`ROLES` is the explicit
registry of roles; each is a function taking the connected
:class:`corridor.agent.runtime.Agent`. ``--config`` is a JSON object (or
``@path`` to a file holding one) with the fields of
:class:`corridor.agent.runtime.AgentConfig`.
"""

from __future__ import annotations

import argparse
import sys

from corridor.agent.collectives import role_collective
from corridor.agent.runtime import AgentConfig, AgentFailure, RoleFn, run_role
from corridor.agent.training import role_train

ROLES: dict[str, RoleFn] = {
    "collective": role_collective,
    "train": role_train,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corridor.agent", description=__doc__)
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--config", required=True, help="JSON object, or @file")
    args = parser.parse_args(argv)
    try:
        cfg = AgentConfig.from_json(args.config)
    except (AgentFailure, ValueError, TypeError, OSError) as exc:
        print(f"corridor agent: bad --config: {exc}", file=sys.stderr)
        return 2
    return run_role(ROLES[args.role], cfg)


if __name__ == "__main__":
    sys.exit(main())
