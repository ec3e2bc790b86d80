"""Choosing hosts for a placement: which emulated hosts of which sites run a workload's agents.

Stage: plan (pure). Shared by every workload kind's ``hosts``: a placement names
sites; a plan has hosts per site and role (``gpu``, ``client``); a workload may
cap how many it uses (``max_ranks``), in which case hosts are taken round-robin
across the sites so a trimmed job still spans the corridor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corridor.errors import SpecError


def balanced_hosts(plan: Any, sites: Sequence[str], role: str, limit: int | None, placement: str) -> list[str]:
    """Hosts of ``role`` at ``sites``, site by site; at most ``limit``, balanced across the sites."""
    per_site: list[list[str]] = []
    for site in sites:
        try:
            plan.site(site)
        except KeyError:
            names = ", ".join(s.name for s in plan.sites)
            raise SpecError(f"placement {placement!r} names site {site!r}, but the topology {plan.name!r} "
                            f"has only: {names}") from None
        found = [h.name for h in plan.hosts(site=site, role=role)]
        if not found:
            raise SpecError(f"placement {placement!r}: site {site!r} has no {role} hosts in topology {plan.name!r}")
        per_site.append(found)
    if limit is None:
        return [h for hosts in per_site for h in hosts]
    chosen: list[list[str]] = [[] for _ in per_site]
    total = 0
    depth = 0
    while total < limit and any(depth < len(h) for h in per_site):
        for i, hosts in enumerate(per_site):
            if depth < len(hosts) and total < limit:
                chosen[i].append(hosts[depth])
                total += 1
        depth += 1
    return [h for hosts in chosen for h in hosts]


def role_hosts(plan: Any, placement: Any, max_ranks: int | None, role_names: Sequence[str]) -> dict[str, list[str]]:
    """Hosts per serving role: ``servers``, ``clients`` and any extra role (``prefill``, ``decode``, ...).

    ``role_names`` are roles other placements use; a placement that does not name
    them (the local baseline) gets them from its own GPU hosts of the server
    sites, as many as there are servers, so e.g. prefill and decode stay on
    different hosts.
    """
    roles = dict(placement.roles)
    hosts: dict[str, list[str]] = {
        "servers": balanced_hosts(plan, placement.servers, "gpu", max_ranks, placement.name),
        "clients": balanced_hosts(plan, placement.clients, "client", None, placement.name),
    }
    missing = [r for r in role_names if r not in roles]
    for role, sites in roles.items():
        hosts[role] = balanced_hosts(plan, sites, "gpu", max_ranks, placement.name)
    if missing:
        pool = [h for h in balanced_hosts(plan, placement.servers, "gpu", None, placement.name)
                if h not in hosts["servers"]] or list(hosts["servers"])
        n = len(hosts["servers"])
        for i, role in enumerate(missing):
            hosts[role] = [pool[(i * n + j) % len(pool)] for j in range(n)]
    return hosts
