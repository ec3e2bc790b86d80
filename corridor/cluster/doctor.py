"""``corridor doctor --cluster``: can every server of a cluster take its part of a corridor?

Stage: emulation (reads only; the netem probe runs in a scratch namespace on the
server and removes it). For each server one ssh call runs :data:`PROBE_SCRIPT`
under its login shell; the script prints one ``check<TAB>status<TAB>detail``
line per check, which :func:`parse_probe` reads and :func:`findings_from_probe`
turns into the same :class:`~corridor.tools.doctor.Finding` rows the one-machine
doctor prints. Checked: the key file, the ssh login with it, root or
passwordless sudo, the server's python, Mininet importable, corridor importable
at the coordinator's version, iperf3, ping, tc, ip and mnexec on PATH, and
whether the kernel has sch_netem (a warning only: the userspace backend works
without it). Servers are checked in parallel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from corridor import __version__
from corridor.cluster.spec import ClusterSpec, ServerSpec
from corridor.cluster.ssh import SshResult, run_ssh
from corridor.tools.doctor import Finding

#: The tools a server runs a corridor with.
REMOTE_TOOLS = ("iperf3", "ping", "tc", "ip", "mnexec")
_TOOL_FIX = {"iperf3": "apt install iperf3", "ping": "apt install iputils-ping", "tc": "apt install iproute2",
             "ip": "apt install iproute2", "mnexec": "apt install mininet"}

#: Run on the server as ``sh -c PROBE_SCRIPT probe PYTHON``. POSIX sh only: the server may have no bash.
PROBE_SCRIPT = r"""
py="$1"
say() { printf '%s\t%s\t%s\n' "$1" "$2" "$(printf '%s' "$3" | tr '\t\n' '  ')"; }
uid=$(id -u)
sudo_cmd=""
if [ "$uid" = 0 ]; then
  say root ok "logged in as root"
elif sudo -n true 2>/dev/null; then
  say root ok "uid $uid with passwordless sudo"; sudo_cmd="sudo -n"
else
  say root fail "uid $uid, and sudo asks for a password or is not allowed"
fi
say cores info "$(nproc 2>/dev/null || echo unknown)"
if command -v "$py" >/dev/null 2>&1; then
  say python ok "$(command -v "$py") $("$py" -c 'import platform; print(platform.python_version())' 2>&1)"
else
  say python fail "$py is not on PATH"
fi
if out=$("$py" -c 'import mininet.net as m; print(m.VERSION, m.__file__)' 2>&1); then
  say mininet ok "$out"; else say mininet fail "$(printf '%s' "$out" | tail -n 1)"; fi
if out=$("$py" -c 'import corridor; print(corridor.__version__)' 2>&1); then
  say corridor ok "$out"; else say corridor fail "$(printf '%s' "$out" | tail -n 1)"; fi
for tool in iperf3 ping tc ip mnexec; do
  if where=$(command -v "$tool"); then say "tool:$tool" ok "$where"; else say "tool:$tool" fail "not on PATH"; fi
done
# corridor's probes in a scratch namespace (they need root): NAME PROBE_FUNCTION
probe() {
  if [ "$uid" != 0 ] && [ -z "$sudo_cmd" ]; then say "$1" fail "not probed: the probe needs root"; return; fi
  if out=$($sudo_cmd "$py" -c "from corridor.links.probe import $2
r = $2()
print(('ok' if r.ok else 'no') + ' ' + r.reason)" 2>&1); then
    case "$out" in ok*) say "$1" ok "${out#ok }";; *) say "$1" fail "${out#no }";; esac
  else
    say "$1" fail "the probe did not run: $(printf '%s' "$out" | tail -n 1)"
  fi
}
probe sch_netem probe_netem
probe vxlan probe_vxlan
"""


@dataclass(frozen=True)
class ServerReport:
    """Every finding for one server; ``ok`` when all required ones pass."""

    server: str
    destination: str  # user@address:port
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings if f.required)

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "destination": self.destination, "ok": self.ok,
                "findings": [f.as_dict() for f in self.findings]}


def probe_argv(server: ServerSpec) -> list[str]:
    """The remote argv of the probe (run through :func:`corridor.cluster.ssh.run_ssh`)."""
    return ["sh", "-c", PROBE_SCRIPT, "probe", server.python]


def parse_probe(stdout: str) -> dict[str, tuple[str, str]]:
    """The probe's lines as ``{check: (status, detail)}``; lines of any other shape are skipped."""
    found: dict[str, tuple[str, str]] = {}
    for line in stdout.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3 and parts[1] in ("ok", "fail", "info"):
            found[parts[0]] = (parts[1], parts[2].strip())
    return found


def findings_from_probe(server: ServerSpec, probe: dict[str, tuple[str, str]], *,
                        coordinator_version: str = __version__) -> list[Finding]:
    """One :class:`Finding` per check, with the fix for each failure; a missing line is a failure."""

    def get(name: str) -> tuple[str, str]:
        return probe.get(name, ("fail", "the probe printed nothing for this check"))

    findings: list[Finding] = []
    status, detail = get("root")
    findings.append(Finding("root", status == "ok", detail,
                            f"log in as root, or give {server.user} passwordless sudo on {server.name}"))
    status, detail = get("cores")
    if server.cores is None or not detail.isdigit():
        findings.append(Finding("cores", True, detail, required=False))
    else:
        enough = server.cores <= int(detail)
        findings.append(Finding(
            "cores", enough, f"{detail}, the cluster file says {server.cores}",
            f"lower servers.{server.name}.cores to at most {detail}: the placer trusts it", required=False))
    status, detail = get("python")
    findings.append(Finding("python", status == "ok", detail,
                            f"install python3 on {server.name}, or set servers.{server.name}.python"))
    status, detail = get("mininet")
    findings.append(Finding("mininet module", status == "ok", detail,
                            f"apt install mininet on {server.name}, and point servers.{server.name}.python at a "
                            "venv made with --system-site-packages"))
    status, detail = get("corridor")
    if status == "ok":
        same = detail == coordinator_version
        findings.append(Finding(
            "corridor version", same,
            f"{detail}" + ("" if same else f", the coordinator runs {coordinator_version}"),
            f"install corridor {coordinator_version} on {server.name} (the same checkout or release as here)"))
    else:
        findings.append(Finding("corridor version", False, f"cannot import corridor: {detail}",
                                f"install corridor {coordinator_version} for {server.python} on {server.name}"))
    for tool in REMOTE_TOOLS:
        status, detail = get(f"tool:{tool}")
        findings.append(Finding(tool, status == "ok", detail, f"{_TOOL_FIX[tool]} on {server.name}"))
    status, detail = get("sch_netem")
    findings.append(Finding("sch_netem", status == "ok", detail,
                            "the userspace link backend will be used on this server", required=False))
    status, detail = get("vxlan")
    findings.append(Finding("vxlan", status == "ok", detail,
                            f"links that cross servers ride VXLAN: use a kernel with CONFIG_VXLAN on {server.name} "
                            "(every stock Debian and Ubuntu kernel has it), or pin every site to one server"))
    return findings


def check_server(cluster: ClusterSpec, server: ServerSpec, *,
                 runner: Callable[..., SshResult] = run_ssh, timeout_s: float = 60.0) -> ServerReport:
    """Check one server: its key file here, the ssh login, then the probe's findings."""
    destination = f"{server.destination}:{server.port}"
    if not os.access(server.key_path, os.R_OK):
        why = "does not exist" if not os.path.exists(server.key_path) else "cannot be read"
        return ServerReport(server.name, destination, (Finding(
            "ssh key", False, f"{server.key_path} {why}",
            f"give servers.{server.name}.key the private key that logs in as {server.user}"),))
    mode = os.stat(server.key_path).st_mode
    if mode & 0o077:
        return ServerReport(server.name, destination, (Finding(
            "ssh key", False,
            f"{server.key_path} is readable by others (mode {mode & 0o777:o}), so ssh will not use it",
            f"chmod 600 {server.key_path}"),))
    result = runner(cluster, server, probe_argv(server), timeout_s=timeout_s)
    if not result.connected:
        return ServerReport(server.name, destination, (
            Finding("ssh key", True, server.key_path),
            Finding("ssh", False, f"cannot log in as {destination}: {result.why_not_connected()}",
                    f"check the address and port, that sshd runs on {server.name}, and that the public half of "
                    f"{server.key_path} is in {server.user}'s authorized_keys there"),
        ))
    findings = [Finding("ssh key", True, server.key_path),
                Finding("ssh", True, f"logged in as {destination}")]
    findings.extend(findings_from_probe(server, parse_probe(result.stdout)))
    return ServerReport(server.name, destination, tuple(findings))


def check_cluster(cluster: ClusterSpec, *, runner: Callable[..., SshResult] = run_ssh,
                  timeout_s: float = 60.0) -> list[ServerReport]:
    """Check every server of ``cluster`` at once; the reports come back in cluster-file order."""
    servers: Sequence[ServerSpec] = cluster.servers
    with ThreadPoolExecutor(max_workers=min(8, len(servers))) as pool:
        futures = [pool.submit(check_server, cluster, s, runner=runner, timeout_s=timeout_s) for s in servers]
        return [f.result() for f in futures]
