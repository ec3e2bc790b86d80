"""``corridor clean --cluster``: run the one-machine clean on every server of a cluster, each scoped to itself.

Stage: emulation. One ssh call per server, in parallel, runs
``PYTHON -m corridor clean --json`` there (with ``sudo -n`` for a user other
than root), so each server removes what dead corridor runs left on it and only
that: the same rules as on one machine (:func:`corridor.emulation.state.clean`),
never a broad match by process name. :func:`parse_clean_report` reads a
server's JSON report; a server that cannot be reached, or whose clean failed,
is reported as not cleaned with ssh's or the server's own words.

A network spread over servers is recorded on the coordinator, not on the servers:
the coordinator's state holds each remote node's and process's ssh session.
So ``corridor clean --cluster`` first cleans the coordinator's own dead runs
(ending those sessions ends every node and process they held on the servers:
see :mod:`corridor.cluster.leash`), then cleans every server, and removes the
dead runs' folders under ``/run/corridor-cluster`` there
(:func:`forget_argv`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from corridor.cluster.spec import ClusterSpec, ServerSpec
from corridor.cluster.ssh import SshResult, run_ssh
from corridor.errors import ClusterError

#: How long one server's clean may take (it may end many processes, each with a grace period).
CLEAN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ServerClean:
    """What cleaning one server did, or why it could not."""

    server: str
    destination: str
    ok: bool
    report: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def lines(self) -> list[str]:
        """What a user reads for this server, one line per thing done."""
        head = f"{self.server} ({self.destination})"
        if not self.ok:
            return [f"{head}: NOT CLEANED: {self.error}"]
        r = self.report
        said = [f"removed run {run}" for run in r.get("runs", [])]
        said += [f"removed namespace {name}" for name in r.get("netns_removed", [])]
        said += [f"removed scratch directory {path}" for path in r.get("dirs_removed", [])]
        if r.get("killed_pids"):
            said.append(f"ended {len(r['killed_pids'])} processes")
        said += [f"left running: {live}" for live in r.get("skipped_live_runs", [])]
        said += [f"skipped: {problem}" for problem in r.get("problems", [])]
        return [f"{head}: {line}" for line in said] or [f"{head}: nothing to clean"]

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "destination": self.destination, "ok": self.ok, "report": self.report,
                "error": self.error}


#: A run's state directory name, as corridor makes them: nothing a path could be built from.
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def forget_argv(run_ids: Sequence[str]) -> list[str]:
    """The command that removes dead runs' folders on a server (delay-line files, agents' configurations)."""
    from corridor.cluster.build import REMOTE_STATE_ROOT

    for run_id in run_ids:
        if not _RUN_ID.match(run_id) or run_id in (".", ".."):
            raise ClusterError(f"refusing to remove {run_id!r} on the servers: not a run's name")
    return ["rm", "-rf", "--", *(f"{REMOTE_STATE_ROOT}/{run_id}" for run_id in run_ids)]


def clean_argv(server: ServerSpec, *, include_live: bool) -> list[str]:
    """The command a server runs: its own corridor's clean, as JSON."""
    return [server.python, "-m", "corridor", "clean", "--json", *(["--all"] if include_live else [])]


def parse_clean_report(server: ServerSpec, result: SshResult) -> ServerClean:
    """One server's outcome from its ssh call."""
    if not result.connected:
        return ServerClean(server.name, server.destination, False, error=f"ssh: {result.why_not_connected()}")
    text = result.stdout.strip()
    start = text.find("{")
    try:
        report = json.loads(text[start:]) if start >= 0 else None
    except ValueError:
        report = None
    if result.returncode != 0 or not isinstance(report, dict):
        words = (result.stderr.strip() or text).splitlines()
        return ServerClean(server.name, server.destination, False,
                           error=f"its clean exited {result.returncode}: {words[-1] if words else 'no output'}")
    return ServerClean(server.name, server.destination, True, report=report)


def clean_cluster(cluster: ClusterSpec, *, include_live: bool = False, forget: Sequence[str] = (),
                  run: Callable[..., SshResult] = run_ssh) -> list[ServerClean]:
    """Clean every server of ``cluster`` at once; one :class:`ServerClean` per server, in the file's order.

    ``forget`` names dead runs of this coordinator whose folders go from every server too.
    """
    servers: Sequence[ServerSpec] = cluster.servers
    forget_command = forget_argv(forget) if forget else None

    def one(server: ServerSpec) -> ServerClean:
        result = run(cluster, server, clean_argv(server, include_live=include_live), sudo=server.user != "root",
                     timeout_s=CLEAN_TIMEOUT_S)
        outcome = parse_clean_report(server, result)
        if outcome.ok and forget_command is not None:
            removed = run(cluster, server, forget_command, sudo=server.user != "root", timeout_s=60.0)
            if not removed.connected or removed.returncode != 0:
                why = removed.why_not_connected() if not removed.connected else removed.stderr.strip()
                return ServerClean(server.name, server.destination, False, report=outcome.report,
                                   error=f"could not remove the dead runs' folders: {why}")
            report = dict(outcome.report)
            report["dirs_removed"] = [*report.get("dirs_removed", []), *forget_command[3:]]
            return ServerClean(server.name, server.destination, True, report=report)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(servers)))) as pool:
        return list(pool.map(one, servers))
