"""Sessions (`corridor up/exec/down`) and the mpirun launch, without root: records, lookup, argv, parsing.

The state root points into tmp_path; the "owner" of a live session is this
test process or a process the test starts itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corridor.cli import cli
from corridor.emulation import session as session_mod
from corridor.emulation import state as state_mod
from corridor.errors import AgentError, EmulationError
from corridor.tools.mpibench import agent_script, hostfile_text, mpirun_argv, parse_output, summarise


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(state_mod, "STATE_ROOT", tmp_path / "state")
    monkeypatch.setattr(state_mod, "ALLOW_STATE_ROOT_OUTSIDE_RUN", True)
    (tmp_path / "state").mkdir()
    return tmp_path / "state"


def _info(run_dir: Path, name: str, pid: int) -> session_mod.SessionInfo:
    return session_mod.SessionInfo(
        name=name, topology="two-site", backend="userspace", backend_reason="asked", run_dir=run_dir,
        owner_pid=pid, owner_start_ticks=state_mod.proc_start_ticks(pid),
        hosts=(session_mod.SessionHost("rem-gpu1", "remote", "gpu", "10.1.0.1"),
               session_mod.SessionHost("cty-gpu1", "city", "gpu", "10.2.0.1")),
        subnets=("10.1.0.0/24", "10.2.0.0/24"), created=1.0,
    )


def _record(root: Path, name: str, pid: int) -> session_mod.SessionInfo:
    run_dir = root / f"{pid}-{name}"
    (run_dir / "netns").mkdir(parents=True)
    info = _info(run_dir, name, pid)
    session_mod._write_session(info)
    return info


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_session_record_round_trips(root: Path) -> None:
    info = _record(root, "alpha", os.getpid())
    again = session_mod.read_session(info.run_dir)
    assert again == info
    assert info.host("cty-gpu1").ip == "10.2.0.1"
    assert info.resolve("10.2.0.1") == "cty-gpu1"
    assert info.resolve("cty-r") == "cty-r"


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(format=99), "format 99"),
    (lambda d: d.pop("hosts"), "missing or malformed"),
    (lambda d: d.update(owner_pid="x"), "missing or malformed"),
    (lambda d: d.update(hosts=[{"name": "a"}]), "missing or malformed"),
])
def test_a_bad_session_record_is_refused_with_the_reason(root: Path, mutate: Any, needle: str) -> None:
    data = _info(root, "alpha", os.getpid()).as_dict()
    mutate(data)
    with pytest.raises(ValueError, match=needle):
        session_mod.SessionInfo.from_dict(data, root)


def test_find_session_picks_by_name_and_refuses_ambiguity(root: Path) -> None:
    with pytest.raises(EmulationError, match="no network is up"):
        session_mod.find_session()
    _record(root, "alpha", os.getpid())
    assert session_mod.find_session().name == "alpha"
    _record(root, "beta", os.getpid())
    with pytest.raises(EmulationError, match="2 networks are up"):
        session_mod.find_session()
    assert session_mod.find_session("beta").name == "beta"
    with pytest.raises(EmulationError, match="no network named 'gamma'"):
        session_mod.find_session("gamma")


def test_a_session_whose_up_died_is_not_running_and_says_how_to_clean(root: Path) -> None:
    _record(root, "ghost", _dead_pid())
    assert session_mod.list_sessions() == []
    assert [s.name for s in session_mod.list_sessions(include_dead=True)] == ["ghost"]
    with pytest.raises(EmulationError, match="corridor clean"):
        session_mod.find_session("ghost")


def test_exec_refuses_a_node_that_is_not_pinned(root: Path) -> None:
    info = _record(root, "alpha", os.getpid())
    with pytest.raises(EmulationError, match="no node 'rem-gpu1'"):
        info.netns_path("rem-gpu1")  # no mounted pin in a tmp folder
    with pytest.raises(EmulationError, match="no node"):
        info.netns_path("../../etc")


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a b", "x" * 64, "..", "é"])
def test_bad_session_names_are_refused(name: str) -> None:
    with pytest.raises(EmulationError, match="not usable"):
        session_mod.check_name(name)


def test_exec_without_a_command_says_how_to_give_one() -> None:
    result = CliRunner().invoke(cli, ["exec", "rem-gpu1", "--"])
    assert result.exit_code == 2
    assert "give the command" in result.output


def test_exec_with_no_network_up_says_how_to_start_one(root: Path) -> None:
    result = CliRunner().invoke(cli, ["exec", "rem-gpu1", "--", "true"])
    assert result.exit_code == 1
    assert "corridor up" in result.output


# -- mpirun launch ------------------------------------------------------------------------------


def test_mpirun_argv_keeps_mpi_on_tcp_over_the_sites_and_forces_the_algorithm() -> None:
    argv = mpirun_argv(hosts=["a", "b", "c", "d"], hostfile="/h", agent="/agent",
                       subnets=["10.1.0.0/24", "10.2.0.0/24"], sizes_bytes=[1 << 20, 4 << 20], iters=3,
                       warmup=1, algorithm="ring", python="/py", as_root=True)
    pairs = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "--mca"}
    assert argv[:3] == ["mpirun", "-np", "4"]
    assert "--allow-run-as-root" in argv
    assert pairs["plm_rsh_agent"] == "/agent"
    assert pairs["btl"] == "tcp,self"
    assert pairs["btl_tcp_if_include"] == pairs["oob_tcp_if_include"] == "10.1.0.0/24,10.2.0.0/24"
    assert pairs["coll_tuned_use_dynamic_rules"] == "1" and pairs["coll_tuned_allreduce_algorithm"] == "4"
    assert argv[argv.index("--sizes") + 1] == f"{1 << 20},{4 << 20}"
    default = mpirun_argv(hosts=["a", "b"], hostfile="/h", agent="/agent", subnets=["10.1.0.0/24"],
                          sizes_bytes=[4], iters=1, warmup=0)
    assert "coll_tuned_allreduce_algorithm" not in default and "--allow-run-as-root" not in default


def test_mpirun_argv_adds_a_users_mca_parameters_but_not_over_its_own() -> None:
    argv = mpirun_argv(hosts=["a", "b"], hostfile="/h", agent="/agent", subnets=["10.1.0.0/24"],
                       sizes_bytes=[4], iters=1, warmup=0, extra_mca={"btl_tcp_eager_limit": "8388608"})
    pairs = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "--mca"}
    assert pairs["btl_tcp_eager_limit"] == "8388608" and pairs["btl"] == "tcp,self"


@pytest.mark.parametrize("kwargs, needle", [
    ({"algorithm": "bogus"}, "unknown Open MPI all-reduce algorithm"),
    ({"subnets": []}, "no subnet"),
    ({"extra_mca": {"btl": "tcp,self,sm"}}, "set by the benchmark"),
    ({"extra_mca": {"btl_tcp_eager_limit": "1; rm -rf /"}}, "plain name and value"),
    ({"extra_mca": {"-x": "1"}}, "plain name and value"),
])
def test_mpirun_argv_refuses_bad_input(kwargs: dict[str, Any], needle: str) -> None:
    base: dict[str, Any] = {"hosts": ["a", "b"], "hostfile": "/h", "agent": "/x", "subnets": ["10.1.0.0/24"],
                            "sizes_bytes": [4], "iters": 1, "warmup": 0}
    with pytest.raises(AgentError, match=needle):
        mpirun_argv(**{**base, **kwargs})


def test_the_agent_script_runs_mpiruns_words_in_the_named_host(tmp_path: Path) -> None:
    """Run the generated agent with a stand-in `python` that prints the argv it got."""
    fake = tmp_path / "fakepy"
    fake.write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
    fake.chmod(0o755)
    agent = tmp_path / "agent"
    agent.write_text(agent_script(session="s 1", python=str(fake), pythonpath="/p"))
    agent.chmod(0o755)
    out = subprocess.run([str(agent), "10.2.0.1", "PATH=/x ; export PATH ;", "orted", "-mca", "a", '"b;c"'],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["-m", "corridor", "exec", "--session", "s 1", "10.2.0.1", "--", "/bin/sh", "-c",
                   'PATH=/x ; export PATH ; orted -mca a "b;c"']


def test_hostfile_gives_one_slot_per_address_in_rank_order() -> None:
    assert hostfile_text(["10.1.0.1", "10.2.0.1"]) == "10.1.0.1 slots=1\n10.2.0.1 slots=1\n"


def test_parse_output_keeps_rank_zeros_records_only() -> None:
    rec = {"kind": "mpi_allreduce", "size_bytes": 1 << 20, "n_ranks": 4, "times_s": [0.4, 0.2, 0.3],
           "correct": True, "hosts": []}
    text = "\n".join(["Warning: Permanently added", json.dumps(rec), "{not json", json.dumps({"kind": "other"})])
    parsed = parse_output(text)
    assert parsed == [rec]
    s = summarise(parsed[0])
    assert s["time_s"] == pytest.approx(0.3)
    assert s["algbw_gbps"] == pytest.approx((1 << 20) * 8 / 0.3 / 1e9)
    assert s["busbw_gbps"] == pytest.approx(s["algbw_gbps"] * 1.5)


@pytest.mark.parametrize("argv", [["--sizes", "3"], ["--sizes", ""], ["--sizes", "8", "--iters", "0"]])
def test_the_rank_program_refuses_bad_arguments(argv: list[str]) -> None:
    from corridor.agent.mpi_allreduce import parse_args

    with pytest.raises(SystemExit):
        parse_args(argv)
