"""What the rest of a run costs: network build and teardown against host count, and agent start-up per host.

Stage: emulation (root). For each host count N it generates a topology
(N hosts in as few sites as the 16-host site limit allows, a star of 1 Gbit/s
WAN links carried by the userspace delay line), builds it with
:class:`corridor.emulation.network.CorridorNetwork`, starts one agent
(``inference-store``, which prints ``READY`` once it listens) in every host
at once and times each to ready, stops them, and tears the network down.
:func:`growth` says whether build plus teardown grows at most linearly with
N. The runner's own overhead per point is measured without a network by
:mod:`corridor.workloads.runnercost`. ``corridor bench cost`` prints both.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from corridor import stats
from corridor.errors import AgentError, EmulationError
from corridor.planning.plan import Plan
from corridor.workloads.agents import AgentProcess

#: How long every agent of a network gets to print READY.
AGENT_READY_TIMEOUT_S = 120.0


#: Places of the generated sites (one site per place, 16 hosts at most per site).
SITE_PLACES = ("urumqi", "shanghai", "hami", "beijing", "karamay", "shenzhen", "zhongwei", "hangzhou", "qingyang",
               "guangzhou", "ulanqab", "chengdu", "horinger", "chongqing", "changji", "kashgar")


def site_host_counts(hosts: int) -> list[int]:
    """Hosts per site for ``hosts`` hosts: as few sites as the per-site limit allows, filled evenly."""
    from corridor.spec.topospec import MAX_HOSTS_PER_SITE

    if hosts < 2:
        raise EmulationError(f"a generated network needs at least 2 hosts, got {hosts}")
    sites = max(2, -(-hosts // MAX_HOSTS_PER_SITE))
    if sites > len(SITE_PLACES):
        raise EmulationError(f"at most {len(SITE_PLACES) * MAX_HOSTS_PER_SITE} hosts, got {hosts}")
    base, extra = divmod(hosts, sites)
    return [base + (1 if index < extra else 0) for index in range(sites)]


def host_count_topology(hosts: int, *, name: str = "cost") -> dict[str, Any]:
    """The generated topology's sites and links, one host per site: a star of WAN links (25 ms, 1 Gbit/s)."""
    counts = site_host_counts(hosts)
    sites = {f"site{i}": dict(place=SITE_PLACES[i], code=f"s{i}", kind="gpu", hosts={"gpu": 1})
             for i in range(len(counts))}
    links = [{"between": ["site0", f"site{i}"], "name": f"hub-{i}", "delay": "25ms", "rate": "1Gbit"}
             for i in range(1, len(counts))]
    return {"name": name, "description": f"{hosts} hosts in {len(counts)} sites (corridor bench cost)",
            "sites": sites, "links": links}


def host_count_plan(hosts: int) -> Plan:
    """The plan of a generated network of ``hosts`` hosts in a star of sites.

    The topology is validated as written (one host per site), then each site gets its
    share of the hosts. A network above the spec's total host limit is built this way
    only here, to show the cost curve past that limit.
    """
    from corridor.planning.planner import build_plan
    from corridor.spec.topospec import parse_topology

    spec = parse_topology(host_count_topology(hosts), path=f"<bench cost: {hosts} hosts>")
    sites = tuple(replace(site, hosts=(("gpu", count),))
                  for site, count in zip(spec.sites, site_host_counts(hosts), strict=True))
    return build_plan(replace(spec, sites=sites))


@dataclass(frozen=True)
class BuildCost:
    """One network of ``hosts`` hosts: build, agents, teardown."""

    hosts: int
    nodes: int  # hosts, switches, routers and wires Mininet built
    build_s: float
    teardown_s: float
    agent_ready_median_s: float
    agent_ready_max_s: float
    agents_wall_s: float  # from starting the first agent to the last one's READY

    @property
    def total_s(self) -> float:
        return self.build_s + self.teardown_s

    @property
    def per_host_s(self) -> float:
        return self.total_s / self.hosts

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_s": self.total_s, "per_host_s": self.per_host_s}


def growth(costs: Sequence[BuildCost], *, slack: float = 1.25) -> tuple[bool, list[float]]:
    """Whether build plus teardown grows at most linearly with host count, and the exponent of each step.

    Linear or better means the time per host does not rise by more than ``slack`` from
    any network to the next larger one (a fixed start-up cost makes it fall). Each
    exponent is the slope of log(time) over log(hosts) between two neighbouring sizes:
    1 is linear, 2 quadratic.
    """
    ordered = sorted(costs, key=lambda c: c.hosts)
    linear = True
    exponents: list[float] = []
    for small, large in zip(ordered, ordered[1:], strict=False):
        if large.per_host_s > small.per_host_s * slack:
            linear = False
        if small.total_s > 0 and large.total_s > 0 and large.hosts != small.hosts:
            exponents.append(math.log(large.total_s / small.total_s) / math.log(large.hosts / small.hosts))
    return linear, exponents


def start_agents(net: Any, hosts: Sequence[str]) -> tuple[list[float], float]:
    """Start one agent per host at once; seconds from each start to its READY, and the wall time for all."""
    from corridor.emulation.state import scratch_dir_prefix

    workdir = tempfile.mkdtemp(prefix=scratch_dir_prefix("cost"))
    started = time.monotonic()
    agents: list[AgentProcess] = []
    try:
        for host in hosts:
            config = {"host": host, "bind": net.host_ip(host), "timeout_s": AGENT_READY_TIMEOUT_S}
            agents.append(AgentProcess(net, host, "inference-store", config, workdir))
        deadline = started + AGENT_READY_TIMEOUT_S
        for agent in agents:
            try:
                agent.wait_ready(max(deadline - time.monotonic(), 0.0))
            except AgentError as exc:
                waiting = sum(1 for a in agents if a.port is None)
                raise EmulationError(f"{waiting} agent(s) not ready within {AGENT_READY_TIMEOUT_S:g} s: "
                                     f"{exc}") from None
        wall = time.monotonic() - started
        ready = [a.ready_after_s for a in agents]
    finally:
        for agent in agents:
            agent.stop(timeout_s=10.0)
            agent.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return [r for r in ready if r is not None], wall


def measure_build(hosts: int, *, progress: Callable[[str], None] | None = None) -> BuildCost:
    """Build the ``hosts``-host network, start and stop an agent on every host, tear it down; time each."""
    from corridor.emulation.network import CorridorNetwork

    say = progress or (lambda _msg: None)
    plan = host_count_plan(hosts)
    net = CorridorNetwork(plan, backend="userspace", label=f"bench-cost-{hosts}")
    say(f"{hosts} hosts: building")
    started = time.monotonic()
    try:
        net.start()
        build_s = time.monotonic() - started
        nodes = len(net._net.hosts) + len(net._net.switches) if net._net is not None else 0
        say(f"{hosts} hosts: built in {build_s:.1f} s; starting {hosts} agents")
        ready, wall = start_agents(net, net.hosts())
    finally:
        say(f"{hosts} hosts: tearing down")
        torn = time.monotonic()
        net.stop()
        teardown_s = time.monotonic() - torn
    return BuildCost(hosts=hosts, nodes=nodes, build_s=build_s, teardown_s=teardown_s,
                     agent_ready_median_s=stats.median(ready), agent_ready_max_s=max(ready), agents_wall_s=wall)
