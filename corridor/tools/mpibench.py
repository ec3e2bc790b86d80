"""OpenMPI's MPI_Allreduce across a running corridor, launched with ``corridor exec`` as mpirun's remote agent.

Stage: workload run (root). The network is a session
(:mod:`corridor.emulation.session`); ``mpirun`` itself runs inside the first
rank's host (``corridor exec HOST0 -- mpirun ...``), and reaches the other
hosts through a small agent script that mpirun calls the way it would call
ssh (``AGENT HOST COMMAND...``) and that runs ``corridor exec HOST -- sh -c
COMMAND``. Every byte between ranks goes over TCP on the emulated hosts'
addresses (``btl tcp,self`` and ``oob``, both limited to the sites' subnets),
so it crosses the same WAN links as corridor's own ring agent.

The argv and the agent script are built as data (:func:`mpirun_argv`,
:func:`agent_script`) and tested alone; :func:`run_mpi_allreduce` executes them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from corridor.emulation.api import package_env
from corridor.emulation.session import SessionInfo
from corridor.errors import AgentError, EmulationError

#: An MCA parameter a user may add: a plain name and a plain value (no shell, no spaces).
MCA_KEY = re.compile(r"[a-z][a-z0-9_]{0,80}")
MCA_VALUE = re.compile(r"[A-Za-z0-9_.,:-]{1,200}")

log = logging.getLogger(__name__)

#: ``coll_tuned_allreduce_algorithm`` values of Open MPI's tuned component; "default" keeps its own choice.
ALLREDUCE_ALGORITHMS: dict[str, int | None] = {
    "default": None,
    "linear": 1,
    "nonoverlapping": 2,
    "recursive_doubling": 3,
    "ring": 4,
    "segmented_ring": 5,
    "rabenseifner": 6,
}
#: The interpreter the ranks run with: this one (a venv made from /usr/bin/python3 with system site
#: packages sees Debian's python3-mpi4py, and numpy from the venv).
RANK_PYTHON = sys.executable


def missing_reason(python: str = RANK_PYTHON) -> str | None:
    """Why OpenMPI's all-reduce cannot run here, or None when mpirun and mpi4py are both present."""
    if shutil.which("mpirun") is None:
        return "mpirun is not installed (apt install openmpi-bin)"
    probe = subprocess.run([python, "-c", "import mpi4py, numpy"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return (f"{python} cannot import mpi4py and numpy (apt install python3-mpi4py, and use a venv made "
                "from /usr/bin/python3 with --system-site-packages)")
    return None


def agent_script(*, session: str, python: str, pythonpath: str) -> str:
    """The remote agent mpirun calls as ``AGENT HOST WORDS...``: the words run in HOST through ``sh -c``.

    mpirun builds its remote command for a shell (``PATH=...; export PATH; orted
    ...``), as ssh would pass it; the agent joins the words with spaces, as ssh
    does, and hands them to ``sh -c`` inside the emulated host.
    """
    return "\n".join([
        "#!/bin/sh",
        "# mpirun's remote agent: run the command in emulated host $1 of corridor network "
        f"{session} (made by corridor.tools.mpibench).",
        'host="$1"; shift',
        f"PYTHONPATH={shlex.quote(pythonpath)} exec {shlex.quote(python)} -m corridor exec "
        f'--session {shlex.quote(session)} "$host" -- /bin/sh -c "$*"',
        "",
    ])


def hostfile_text(addresses: Sequence[str]) -> str:
    """One slot per host, in rank order (mpirun maps by slot: rank i runs on the i-th).

    Hosts are given by address, not name: the emulated hosts reach no name
    server, and every lookup of a name would wait for its timeout.
    ``corridor exec`` takes the address in place of the name.
    """
    return "".join(f"{address} slots=1\n" for address in addresses)


def mpirun_argv(
    *,
    hosts: Sequence[str],
    hostfile: str,
    agent: str,
    subnets: Sequence[str],
    sizes_bytes: Sequence[int],
    iters: int,
    warmup: int,
    algorithm: str = "default",
    python: str = RANK_PYTHON,
    as_root: bool = False,
    extra_mca: Mapping[str, str] | None = None,
) -> list[str]:
    """mpirun's argv for one MPI_Allreduce sweep on ``hosts`` (one rank each), TCP only on ``subnets``.

    ``extra_mca`` adds MCA parameters (``btl_tcp_eager_limit``, say); the ones this function sets to keep
    the traffic on the corridor (agent, PML, BTL, interfaces, algorithm) cannot be replaced.
    """
    if algorithm not in ALLREDUCE_ALGORITHMS:
        raise AgentError(f"unknown Open MPI all-reduce algorithm {algorithm!r}; choose one of "
                         f"{', '.join(ALLREDUCE_ALGORITHMS)}")
    if not subnets:
        raise AgentError("no subnet to carry MPI traffic; the network has no hosts")
    nets = ",".join(subnets)
    argv = ["mpirun", "-np", str(len(hosts)), "--hostfile", hostfile]
    if as_root:
        argv.append("--allow-run-as-root")
    mca = {
        "plm_rsh_agent": agent,
        # mpirun starts every daemon itself: no daemon launches another through the agent.
        "plm_rsh_no_tree_spawn": "1",
        "pml": "ob1",
        "btl": "tcp,self",
        "btl_tcp_if_include": nets,
        "oob_tcp_if_include": nets,
    }
    algo = ALLREDUCE_ALGORITHMS[algorithm]
    if algo is not None:
        mca["coll_tuned_use_dynamic_rules"] = "1"
        mca["coll_tuned_allreduce_algorithm"] = str(algo)
    for key, value in (extra_mca or {}).items():
        if key in mca or not MCA_KEY.fullmatch(key) or not MCA_VALUE.fullmatch(value):
            raise AgentError(f"MCA parameter {key}={value!r} cannot be given: it is set by the benchmark or is "
                             "not a plain name and value (letters, digits, _ . , : -)")
        mca[key] = value
    for key, value in mca.items():
        argv += ["--mca", key, value]
    argv += ["--bind-to", "none", "--map-by", "slot", "-x", "PYTHONPATH", "-x", "PYTHONUNBUFFERED"]
    argv += [python, "-m", "corridor.agent.mpi_allreduce", "--sizes", ",".join(str(s) for s in sizes_bytes),
             "--iters", str(iters), "--warmup", str(warmup)]
    return argv


def parse_output(text: str) -> list[dict[str, Any]]:
    """The ``mpi_allreduce`` records in rank 0's output (other lines are mpirun's and are ignored)."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("kind") == "mpi_allreduce":
            records.append(rec)
    return records


def summarise(rec: dict[str, Any]) -> dict[str, Any]:
    """Median time, algbw and busbw (nccl-tests' all-reduce factor 2(n-1)/n) of one size's record."""
    times = sorted(float(t) for t in rec["times_s"])
    mid = len(times) // 2
    median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
    n = int(rec["n_ranks"])
    algbw = rec["size_bytes"] * 8 / median / 1e9 if median > 0 else 0.0
    return {**rec, "time_s": median, "algbw_gbps": algbw, "busbw_gbps": algbw * 2 * (n - 1) / n}


def run_mpi_allreduce(
    info: SessionInfo,
    *,
    hosts: Sequence[str],
    sizes_bytes: Sequence[int],
    iters: int = 3,
    warmup: int = 1,
    algorithm: str = "default",
    timeout_s: float = 600.0,
    extra_mca: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run one mpirun sweep on session ``info``; one summarised record per size.

    Raises AgentError with mpirun's own output when it fails or a reduction is wrong.
    """
    reason = missing_reason()
    if reason is not None:
        raise EmulationError(f"OpenMPI's all-reduce cannot run: {reason}")
    env = package_env()
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    from corridor.emulation.state import scratch_dir_prefix

    with tempfile.TemporaryDirectory(prefix=scratch_dir_prefix("mpi")) as scratch:
        agent = Path(scratch) / "corridor-exec-agent"
        agent.write_text(agent_script(session=info.name, python=sys.executable, pythonpath=env["PYTHONPATH"]))
        agent.chmod(0o700)
        hostfile = Path(scratch) / "hostfile"
        hostfile.write_text(hostfile_text([info.host(h).ip for h in hosts]))
        argv = mpirun_argv(hosts=hosts, hostfile=str(hostfile), agent=str(agent), subnets=info.subnets,
                           sizes_bytes=sizes_bytes, iters=iters, warmup=warmup, algorithm=algorithm,
                           as_root=os.geteuid() == 0, extra_mca=extra_mca)
        launcher = [sys.executable, "-m", "corridor", "exec", "--session", info.name, hosts[0], "--", *argv]
        log.info("running %s", shlex.join(launcher))
        try:
            proc = subprocess.run(launcher, capture_output=True, text=True, timeout=timeout_s, env=env,
                                  cwd=scratch, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AgentError(f"mpirun did not finish within {timeout_s:g} s; raise the timeout or use fewer "
                             "sizes") from exc
    records = parse_output(proc.stdout)
    if proc.returncode != 0 or len(records) != len(sizes_bytes):
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise AgentError(f"mpirun exited {proc.returncode} with {len(records)} of {len(sizes_bytes)} results; "
                         f"its output ends: {tail}")
    wrong = [r["size_bytes"] for r in records if not r.get("correct")]
    if wrong:
        raise AgentError(f"MPI_Allreduce returned wrong sums at sizes {wrong}; the MPI installation is broken")
    return [summarise(r) for r in records]
