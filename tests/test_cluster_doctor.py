"""ssh argv builders (corridor.cluster.ssh) and the cluster doctor's probe and findings, without a network."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corridor import __version__
from corridor.cli import cli
from corridor.cluster import doctor as cluster_doctor
from corridor.cluster.doctor import PROBE_SCRIPT, check_server, findings_from_probe, parse_probe, probe_argv
from corridor.cluster.spec import ClusterSpec, ServerSpec, loads_cluster
from corridor.cluster.ssh import SSH_FAILED, SshResult, remote_command, ssh_argv, ssh_options

SERVER = ServerSpec(name="alpha", address="192.0.2.10", user="ops", key_path="/keys/alpha", port=2222)


def option_values(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]


def test_ssh_argv_uses_the_key_alone_without_prompts() -> None:
    argv = ssh_argv(SERVER, ["id", "-u"])
    assert argv[0] == "ssh" and argv[-3:] == ["--", "ops@192.0.2.10", "id -u"]
    assert argv[argv.index("-i") + 1] == "/keys/alpha" and argv[argv.index("-p") + 1] == "2222"
    options = option_values(argv)
    for wanted in ("IdentitiesOnly=yes", "BatchMode=yes", "PasswordAuthentication=no", "ConnectTimeout=5",
                   "StrictHostKeyChecking=accept-new"):
        assert wanted in options
    assert not any(o.startswith("UserKnownHostsFile") for o in options)


def test_known_hosts_file_makes_host_key_checking_strict() -> None:
    options = option_values(ssh_options(SERVER, known_hosts="/c/known_hosts", connect_timeout_s=2))
    assert "UserKnownHostsFile=/c/known_hosts" in options and "StrictHostKeyChecking=yes" in options
    assert "GlobalKnownHostsFile=/dev/null" in options and "ConnectTimeout=2" in options
    assert "StrictHostKeyChecking=accept-new" not in options


@pytest.mark.parametrize(("argv", "sudo", "expected"), [
    (["echo", "a b", "$HOME;rm"], False, ["echo", "a b", "$HOME;rm"]),
    (["tc", "qdisc", "show"], True, ["sudo", "-n", "--", "tc", "qdisc", "show"]),
    (["sh", "-c", "echo 'x'\n"], False, ["sh", "-c", "echo 'x'\n"]),
])
def test_remote_command_is_quoted_once_for_the_remote_shell(argv: list[str], sudo: bool, expected: list[str]) -> None:
    line = remote_command(argv, sudo=sudo)
    assert shlex.split(line) == expected


def test_remote_command_needs_a_word() -> None:
    with pytest.raises(ValueError):
        remote_command([])


def test_ssh_result_says_why_it_did_not_connect() -> None:
    refused = SshResult("a", ("ssh",), SSH_FAILED, "", "warning\nssh: connect to host x port 22: Connection refused\n")
    assert not refused.connected and refused.why_not_connected().endswith("Connection refused")
    assert not SshResult("a", ("ssh",), SSH_FAILED, "", "", timed_out=True).connected
    assert SshResult("a", ("ssh",), 1, "", "").connected  # the remote command failed; the login worked


GOOD_PROBE = "\n".join([
    "root\tok\tlogged in as root",
    "cores\tinfo\t16",
    "python\tok\t/usr/bin/python3 3.11.2",
    "mininet\tok\t2.3.0 /usr/lib/python3/dist-packages/mininet/net.py",
    f"corridor\tok\t{__version__}",
    "tool:iperf3\tok\t/usr/bin/iperf3",
    "tool:ping\tok\t/usr/bin/ping",
    "tool:tc\tok\t/usr/sbin/tc",
    "tool:ip\tok\t/usr/sbin/ip",
    "tool:mnexec\tok\t/usr/bin/mnexec",
    "sch_netem\tok\ta netem qdisc could be added in a scratch namespace",
    "vxlan\tok\ta VXLAN interface could be made in a scratch namespace",
    "some noise from a login banner",
]) + "\n"


def by_name(findings: Any) -> dict[str, Any]:
    return {f.name: f for f in findings}


def test_parse_probe_reads_tab_separated_lines_and_skips_the_rest() -> None:
    probe = parse_probe(GOOD_PROBE + "half\tline\nbad\tmaybe\tx\n")
    assert probe["cores"] == ("info", "16") and probe["tool:tc"] == ("ok", "/usr/sbin/tc")
    assert "half" not in probe and "bad" not in probe and len(probe) == 12


def test_a_good_probe_gives_only_passing_findings() -> None:
    findings = findings_from_probe(SERVER, parse_probe(GOOD_PROBE))
    assert all(f.ok for f in findings)
    assert {"root", "cores", "python", "mininet module", "corridor version", "iperf3", "ping", "tc", "ip", "mnexec",
            "sch_netem", "vxlan"} == set(by_name(findings))


@pytest.mark.parametrize(("line", "check", "fix"), [
    ("root\tfail\tuid 1000, and sudo asks for a password", "root", "passwordless sudo on alpha"),
    ("mininet\tfail\tModuleNotFoundError: No module named 'mininet'", "mininet module", "apt install mininet"),
    ("corridor\tok\t0.0.1", "corridor version", f"install corridor {__version__} on alpha"),
    ("corridor\tfail\tModuleNotFoundError: No module named 'corridor'", "corridor version", "install corridor"),
    ("tool:iperf3\tfail\tnot on PATH", "iperf3", "apt install iperf3 on alpha"),
    ("python\tfail\tpython3 is not on PATH", "python", "servers.alpha.python"),
    ("vxlan\tfail\tthis kernel has no VXLAN (CONFIG_VXLAN; ip said: Unknown device type)", "vxlan", "CONFIG_VXLAN"),
])
def test_each_failed_check_fails_with_its_fix(line: str, check: str, fix: str) -> None:
    name = line.split("\t")[0]
    text = "\n".join(x for x in GOOD_PROBE.splitlines() if not x.startswith(name + "\t")) + "\n" + line + "\n"
    found = by_name(findings_from_probe(SERVER, parse_probe(text)))
    assert not found[check].ok and found[check].required and fix in found[check].fix
    assert sum(not f.ok for f in found.values()) == 1


def test_version_mismatch_names_both_versions() -> None:
    text = GOOD_PROBE.replace(f"corridor\tok\t{__version__}", "corridor\tok\t0.0.1")
    found = by_name(findings_from_probe(SERVER, parse_probe(text), coordinator_version="9.9"))
    assert found["corridor version"].detail == "0.0.1, the coordinator runs 9.9"


def test_no_netem_is_a_warning_and_a_missing_line_is_a_failure() -> None:
    text = GOOD_PROBE.replace("sch_netem\tok\ta netem", "sch_netem\tfail\tthis kernel has no sch_netem")
    text = "\n".join(x for x in text.splitlines() if not x.startswith("tool:ping"))
    found = by_name(findings_from_probe(SERVER, parse_probe(text)))
    assert not found["sch_netem"].ok and not found["sch_netem"].required
    assert not found["ping"].ok and "printed nothing" in found["ping"].detail


def test_probe_script_runs_under_sh_and_reports_a_missing_python() -> None:
    # The real script, run here (not over ssh) with an interpreter that does not exist, so nothing is probed.
    server = ServerSpec(name="alpha", address="192.0.2.10", user="ops", key_path="/k", python="/nonexistent/py")
    argv = probe_argv(server)
    assert argv[:2] == ["sh", "-c"] and argv[2] == PROBE_SCRIPT and argv[-1] == "/nonexistent/py"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    probe = parse_probe(done.stdout)
    assert probe["python"] == ("fail", "/nonexistent/py is not on PATH")
    assert probe["mininet"][0] == "fail" and probe["corridor"][0] == "fail"
    assert probe["cores"][0] == "info" and probe["cores"][1].isdigit()
    assert probe["tool:ip"][0] == "ok" or probe["tool:ip"] == ("fail", "not on PATH")
    assert probe["sch_netem"][0] == "fail" and probe["vxlan"][0] == "fail"
    assert set(probe) >= {"root", "cores", "python", "mininet", "corridor", "sch_netem", "vxlan",
                          *(f"tool:{t}" for t in ("iperf3", "ping", "tc", "ip", "mnexec"))}


def two_servers(tmp_path: Path) -> ClusterSpec:
    key = tmp_path / "key"
    key.write_text("not really a key", encoding="utf-8")
    key.chmod(0o600)
    return loads_cluster(f"servers:\n  alpha: {{address: 192.0.2.10, user: root, key: {key}}}\n"
                         f"  beta: {{address: 192.0.2.11, user: root, key: {key}}}\n", path="c.yaml")


def fake_runner(answers: dict[str, SshResult]) -> Any:
    calls: list[tuple[str, list[str]]] = []

    def run(cluster: ClusterSpec, server: ServerSpec, argv: list[str], **_: Any) -> SshResult:
        calls.append((server.name, argv))
        return answers[server.name]

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_check_server_without_a_key_file_does_not_ssh(tmp_path: Path) -> None:
    cluster = loads_cluster("servers: {alpha: {address: 192.0.2.10, user: root, key: missing}}", base_dir=tmp_path)
    runner = fake_runner({})
    report = check_server(cluster, cluster.servers[0], runner=runner)
    assert not report.ok and [f.name for f in report.findings] == ["ssh key"]
    assert "does not exist" in report.findings[0].detail and runner.calls == []


def test_check_server_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    cluster = two_servers(tmp_path)
    Path(cluster.servers[0].key_path).chmod(0o644)
    runner = fake_runner({})
    report = check_server(cluster, cluster.servers[0], runner=runner)
    assert not report.ok and "readable by others (mode 644)" in report.findings[0].detail
    assert report.findings[0].fix.startswith("chmod 600 ") and runner.calls == []


@pytest.mark.parametrize(("stated", "ok"), [(None, True), (8, True), (16, True), (17, False)])
def test_stated_cores_above_the_servers_own_are_a_warning(stated: int | None, ok: bool) -> None:
    server = ServerSpec(name="alpha", address="192.0.2.10", user="ops", key_path="/k", cores=stated)
    found = by_name(findings_from_probe(server, parse_probe(GOOD_PROBE)))["cores"]
    assert found.ok is ok and not found.required
    if not ok:
        assert "16, the cluster file says 17" in found.detail and "at most 16" in found.fix


def test_check_server_unreachable_and_reachable(tmp_path: Path) -> None:
    cluster = two_servers(tmp_path)
    runner = fake_runner({
        "alpha": SshResult("alpha", ("ssh",), 0, GOOD_PROBE, ""),
        "beta": SshResult("beta", ("ssh",), SSH_FAILED, "", "root@192.0.2.11: Permission denied (publickey)."),
    })
    alpha = check_server(cluster, cluster.server("alpha"), runner=runner)
    beta = check_server(cluster, cluster.server("beta"), runner=runner)
    assert alpha.ok and by_name(alpha.findings)["ssh"].detail == "logged in as root@192.0.2.10:22"
    assert not beta.ok and [f.name for f in beta.findings] == ["ssh key", "ssh"]
    assert "Permission denied (publickey)" in beta.findings[1].detail
    assert runner.calls[0] == ("alpha", probe_argv(cluster.server("alpha")))


def test_cli_doctor_cluster_prints_every_server_and_exits_1_when_one_fails(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = two_servers(tmp_path)
    path = tmp_path / "cluster.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in {"servers": {
        s.name: {"address": s.address, "user": s.user, "key": s.key_path} for s in cluster.servers}}.items()),
        encoding="utf-8")
    answers = {"alpha": SshResult("alpha", ("ssh",), 0, GOOD_PROBE, ""),
               "beta": SshResult("beta", ("ssh",), 0, GOOD_PROBE.replace("tool:tc\tok", "tool:tc\tfail"), "")}
    real = cluster_doctor.check_cluster
    monkeypatch.setattr(cluster_doctor, "check_cluster",
                        lambda c, **kw: real(c, runner=fake_runner(answers), **kw))
    result = CliRunner().invoke(cli, ["doctor", "--cluster", str(path)])
    assert result.exit_code == 1, result.output
    assert "alpha (root@192.0.2.10:22): ready" in result.output
    assert "beta (root@192.0.2.11:22): NOT READY" in result.output
    assert "1 of 2 servers are not ready" in result.output
    result = CliRunner().invoke(cli, ["doctor", "--cluster", str(path), "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and data["ok"] is False and data["coordinator_version"] == __version__
    assert [(s["server"], s["ok"]) for s in data["servers"]] == [("alpha", True), ("beta", False)]
    answers["beta"] = answers["alpha"]
    result = CliRunner().invoke(cli, ["doctor", "--cluster", str(path)])
    assert result.exit_code == 0 and "all 2 servers are ready" in result.output


def test_cli_doctor_cluster_refuses_a_bad_file_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("servers: {alpha: {address: 192.0.2.10, user: root}}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["doctor", "--cluster", str(path)])
    assert result.exit_code == 2 and "servers.alpha.key: missing" in result.output
