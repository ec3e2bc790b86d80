"""Inference workload runner: LLM serving traffic between clients and GPU sites.

Stage: workload run (drives a :class:`corridor.emulation.api.Network`; root
only when that network needs it). It places the agents of
:mod:`corridor.agent.inference` on hosts, hands the client a schedule, collects
the records, and always stops every process it started. ``validate`` and
``predict`` are pure; ``summarize`` turns records into per-run figures
(percentiles, SLO goodput, network share against a ``local`` baseline) for the
experiments and the report.

Patterns (``PATTERNS``; each is one object in
:mod:`corridor.workloads.inference.patterns`, read by the client agent and by
:func:`predict` alike):

- ``chat``: one streamed completion per arrival.
- ``agentic``: a chain of ``calls`` dependent completions; with ``stores``
  hosts, a tool call to one of them follows every call but the last.
- ``batch``: offline, closed loop at ``concurrency``; throughput counts.
- ``rag``: ``rag_fanout`` parallel fetches of ``rag_doc_bytes`` from the
  ``stores`` hosts, then a completion whose prompt grew by ``rag_doc_tokens``
  per document.
- ``disagg``: the client talks to the decode server (``servers``), which sends
  the prompt to a prefill server (``prefill``) and receives the prompt's KV
  cache (bytes per token from the model shape) before streaming tokens.

Hosts: ``{"servers": [...], "clients": [...], "prefill": [...], "stores": [...]}``.

Protocol: clients and servers speak the OpenAI-compatible API (see
:mod:`corridor.agent.inference` for the token-count rule). ``api`` picks
``completions`` or ``chat``, ``endpoint_path`` overrides the request path,
``model_name`` is the model requests name and corridor's server lists. With
``server_command`` (an argv; ``{port}``, ``{ip}`` and ``{host}`` are filled in)
and ``server_port``, each ``servers`` host runs the user's own server (vLLM,
SGLang, llama.cpp, ...) instead of corridor's, at the same ``nice`` value; the
clients wait until its ``/v1/models`` answers, then measure it the same way. Such a server reports no
``traffic`` record and follows no serving model of corridor's, so ``predict``
then describes corridor's model, not it.

Default SLOs follow DistServe (Zhong et al., OSDI 2024) for a 13B chat model:
TTFT 0.25 s and TPOT 0.1 s; set them in each workload's ``slo`` block
(DESIGN.md lists the alternatives: 175B 4 s/0.2 s, Vidur TTFT p90 2 s, Mooncake
TBT 100-300 ms).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import IO, Any

from corridor.agent.inference import API_PATHS
from corridor.emulation.api import Network
from corridor.emulation.state import scratch_dir_prefix
from corridor.errors import AgentError, CorridorError, SpecError, UnitError
from corridor.planning.plan import Plan
from corridor.spec.units import parse_duration_ms
from corridor.spec.validate import check_keys
from corridor.stats import percentile as stats_percentile
from corridor.traces import REQUEST_FORMATS, ReplayWindow, read_requests
from corridor.workloads.agents import AgentProcess, percentile_stats, sched_error_stats
from corridor.workloads.inference import model as analytic
from corridor.workloads.inference.patterns import PATTERNS as SERVING_PATTERNS
from corridor.workloads.inference.patterns import ModelContext, ModelTerms, PathFigures

log = logging.getLogger(__name__)

#: Seconds between the start line the clients get and the start it names: the line reaches each client
#: within milliseconds, over ssh too. Clients on different machines need their clocks in step (NTP).
CLIENT_START_MARGIN_S = 0.1

def _wait_client_ready(client: AgentProcess, commands: Sequence[_ServerCommand], deadline: float) -> None:
    """Wait until ``client`` says READY; a user's server command that ends meanwhile is named as the cause."""
    while True:
        try:
            left = deadline - time.monotonic()
            client.wait_ready(max(min(left, 0.5) if commands else left, 0.1))
            return
        except AgentError:
            for s in commands:
                if s.proc.poll() is not None:
                    raise AgentError(f"the server command on {s.host} ended before the clients started: "
                                     f"{s.output_tail()}; check server_command and server_port") from None
            if client.proc.poll() is not None or time.monotonic() >= deadline:
                raise


#: Pattern name -> what it does (the pattern objects are :data:`corridor.workloads.inference.patterns.PATTERNS`).
PATTERNS: dict[str, str] = {name: pattern.description for name, pattern in SERVING_PATTERNS.items()}
ARRIVALS: tuple[str, ...] = ("poisson", "bursty", "uniform", "closed", "trace")
LENGTH_DISTS: tuple[str, ...] = ("fixed", "exponential", "lognormal")
CONNECTIONS: tuple[str, ...] = ("keepalive", "per_request")


@dataclass(frozen=True)
class InferenceParams:
    """Validated parameters of one inference workload (units in the names)."""

    pattern: str = "chat"
    requests: int = 200
    arrival: str = "poisson"
    rate_rps: float = 5.0
    burst_on_s: float = 1.0
    burst_off_s: float = 1.0
    concurrency: int = 4
    think_time_s: float = 0.0
    prompt_tokens: int = 512
    output_tokens: int = 64
    length_dist: str = "fixed"
    length_sigma: float = 0.5
    max_prompt_tokens: int = 32768
    max_output_tokens: int = 4096
    trace: str | None = None
    trace_format: str | None = None
    trace_start_s: float = 0.0
    trace_window_s: float | None = None
    trace_speed: float = 1.0
    model: str = "13b"
    peak_tflops: float = 989.0
    mfu: float = 0.5
    prefill_ms_per_token: float | None = None
    prefill_base_ms: float = 0.0
    tpot_ms: float = 20.0
    max_batch: int = 64
    queue_limit: int = 1024
    connection: str = "keepalive"
    warm_connections: int = 4
    prompt_bytes_per_token: int = 4
    calls: int = 10
    tool_request_bytes: int = 512
    tool_response_bytes: int = 2048
    tool_service_ms: float = 0.0
    rag_fanout: int = 4
    rag_doc_bytes: int = 16384
    rag_doc_tokens: int = 512
    rag_service_ms: float = 0.0
    nice: int = -10
    client_realtime_priority: int = 10
    api: str = "completions"
    model_name: str = "corridor"
    endpoint_path: str | None = None
    server_command: tuple[str, ...] | None = None
    server_port: int | None = None
    #: A scale model's factor (corridor.planning.scale): KV bytes per token are the model shape's / kv_scale.
    kv_scale: float = 1.0

    @property
    def shape(self) -> analytic.ModelShape:
        shape = analytic.MODELS[self.model]
        return shape if self.kv_scale == 1.0 else replace(shape, kv_scale=self.kv_scale)

    def prefill_s(self, prompt_tokens: int) -> float:
        if self.prefill_ms_per_token is not None:
            return (self.prefill_base_ms + self.prefill_ms_per_token * prompt_tokens) / 1e3
        return self.prefill_base_ms / 1e3 + analytic.prefill_time_s(
            prompt_tokens, self.shape.params, peak_tflops=self.peak_tflops, mfu=self.mfu)


_POSITIVE = {"rate_rps", "burst_on_s", "peak_tflops", "tpot_ms", "trace_speed", "length_sigma"}
_NON_NEGATIVE = {"burst_off_s", "think_time_s", "trace_start_s", "prefill_base_ms", "tool_service_ms",
                 "rag_service_ms", "prefill_ms_per_token"}
_AT_LEAST_ONE = {"requests", "concurrency", "max_batch", "calls", "rag_fanout", "max_prompt_tokens",
                 "max_output_tokens", "prompt_bytes_per_token"}
_COUNTS = {"client_realtime_priority", "prompt_tokens", "output_tokens", "queue_limit", "warm_connections",
           "tool_request_bytes", "tool_response_bytes", "rag_doc_bytes", "rag_doc_tokens"}
_CHOICES: dict[str, Sequence[str]] = {"pattern": tuple(PATTERNS), "arrival": ARRIVALS, "length_dist": LENGTH_DISTS,
                                      "connection": CONNECTIONS, "api": tuple(API_PATHS)}


def _number(key: str, value: Any, where: str) -> float:
    if isinstance(value, str) and (key.endswith("_ms") or key.endswith("_s")):
        # The unit is in the key's name, so a unit in the value would be a second, possibly different one.
        in_ms = key.endswith("_ms")
        try:
            ms = parse_duration_ms(value)
            instead = f" ({key}: {ms if in_ms else ms / 1e3:g} for {value!r})"
        except UnitError:
            instead = ""
        raise SpecError(
            f"{value!r} has a unit, but {key} is already in {'milliseconds' if in_ms else 'seconds'} "
            f"(the unit is in its name); drop the unit and write a bare number{instead}",
            path=where, key=key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"expected a number, got {value!r}", path=where, key=key)
    return float(value)


def validate(params: Mapping[str, Any], *, where: str) -> InferenceParams:
    """Check an inference workload's parameters; unknown keys and bad values raise SpecError."""
    # kv_scale is set by the experiment's scale key (corridor.planning.scale), not by a workload's params
    known = {f.name: f for f in fields(InferenceParams) if f.name != "kv_scale"}
    for key in ("slo_ttft_s", "slo_tpot_s"):
        if key in params:
            raise SpecError("the SLO is set in the workload's slo block (e.g. slo: {ttft: 250ms, tpot: 100ms}), "
                            "which the verdict judges; remove it from params", path=where, key=key)
    check_keys(params, known, path=where, what="parameter")
    values: dict[str, Any] = {}
    for key, raw in params.items():
        if key in _CHOICES:
            if raw not in _CHOICES[key]:
                raise SpecError(f"{raw!r} is not one of {', '.join(_CHOICES[key])}", path=where, key=key)
            values[key] = raw
        elif key in _ENDPOINT_KEYS:
            values[key] = _endpoint_value(key, raw, where)
        elif key in ("trace", "trace_format"):
            if raw is not None and not isinstance(raw, str):
                raise SpecError(f"expected a string, got {raw!r}", path=where, key=key)
            values[key] = raw
        elif key == "model":
            if raw not in analytic.MODELS:
                raise SpecError(f"unknown model {raw!r}; known shapes: {', '.join(analytic.MODELS)}", path=where,
                                key=key)
            values[key] = raw
        elif raw is None and key in ("trace_window_s", "prefill_ms_per_token"):
            values[key] = None
        else:
            num = _number(key, raw, where)
            if key == "nice":
                if num != int(num) or not -20 <= num <= 19:
                    raise SpecError(f"must be a whole number in [-20, 19], got {raw!r}", path=where, key=key)
                values[key] = int(num)
                continue
            if key in _AT_LEAST_ONE or key in _COUNTS:
                if num != int(num):
                    raise SpecError(f"expected a whole number, got {raw!r}", path=where, key=key)
                lowest = 1 if key in _AT_LEAST_ONE else 0
                if num < lowest:
                    raise SpecError(f"must be at least {lowest}, got {raw!r}", path=where, key=key)
                values[key] = int(num)
                continue
            if key in _POSITIVE or key == "trace_window_s":
                if num <= 0:
                    raise SpecError(f"must be positive, got {raw!r}", path=where, key=key)
            elif key in _NON_NEGATIVE and num < 0:
                raise SpecError(f"must not be negative, got {raw!r}", path=where, key=key)
            if key == "mfu" and not 0 < num <= 1:
                raise SpecError(f"must be in (0, 1], got {raw!r}", path=where, key=key)
            values[key] = num
    p = InferenceParams(**values)
    if p.arrival == "trace" and not p.trace:
        raise SpecError("arrival 'trace' needs a trace file", path=where, key="trace")
    if p.trace and p.arrival != "trace":
        raise SpecError("a trace is given but arrival is not 'trace'", path=where, key="arrival")
    if p.trace_format is not None and p.trace_format not in REQUEST_FORMATS:
        raise SpecError(f"{p.trace_format!r} is not one of {', '.join(REQUEST_FORMATS)}", path=where,
                        key="trace_format")
    if (p.server_command is None) != (p.server_port is None):
        raise SpecError("server_command and server_port go together: give the port the command's server listens on",
                        path=where, key="server_port" if p.server_port is None else "server_command")
    problem = SERVING_PATTERNS[p.pattern].check_params(p)
    if problem is not None:
        raise SpecError(problem[0], path=where, key=problem[1])
    return p


_ENDPOINT_KEYS = ("model_name", "endpoint_path", "server_command", "server_port")


def _endpoint_value(key: str, raw: Any, where: str) -> Any:
    """Check one of the keys that say which OpenAI-compatible endpoint the clients call and who serves it."""
    if key == "server_port":
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 65535:
            raise SpecError(f"must be a TCP port in [1, 65535], got {raw!r}", path=where, key=key)
        return raw
    if key == "server_command":
        if (not isinstance(raw, (list, tuple)) or not raw
                or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in raw)):
            raise SpecError(f"must be a non-empty list of arguments (argv; {{port}} and {{ip}} are filled in), "
                            f"got {raw!r}", path=where, key=key)
        return tuple(str(a) for a in raw)
    if raw is None and key == "endpoint_path":
        return None
    if not isinstance(raw, str) or not raw:
        raise SpecError(f"expected a non-empty string, got {raw!r}", path=where, key=key)
    if key == "endpoint_path" and not raw.startswith("/"):
        raise SpecError(f"must be a URL path starting with '/', like '/v1/completions', got {raw!r}", path=where,
                        key=key)
    return raw


# ----------------------------------------------------------------------------- schedule


def _length(rng: random.Random, mean: int, dist: str, sigma: float, cap: int) -> int:
    if dist == "fixed" or mean == 0:
        value = mean
    elif dist == "exponential":
        value = int(round(rng.expovariate(1.0 / mean)))
    else:  # lognormal with the given mean
        mu = math.log(mean) - sigma * sigma / 2
        value = int(round(rng.lognormvariate(mu, sigma)))
    return max(1, min(value, cap))


def schedule(params: InferenceParams, *, seed: int) -> Iterator[dict[str, Any]]:
    """The sessions to run, in arrival order: ``{"id", "t_s", "prompt_tokens", "output_tokens"}``.

    Streamed: a trace is read line by line. ``t_s`` is ignored for closed-loop arrivals.
    """
    p = params
    if p.arrival == "trace":
        assert p.trace is not None
        window = ReplayWindow(start_s=p.trace_start_s, window_s=p.trace_window_s, speed=p.trace_speed,
                              cap=p.requests)
        for i, req in enumerate(read_requests(p.trace, p.trace_format, window)):
            yield {"id": f"r{i}", "t_s": req.t_s, "prompt_tokens": min(max(req.prompt_tokens, 1), p.max_prompt_tokens),
                   "output_tokens": min(max(req.output_tokens, 1), p.max_output_tokens), "trace_line": req.line}
        return
    rng = random.Random(seed)
    t = 0.0
    for i in range(p.requests):
        if p.arrival == "poisson":
            t += rng.expovariate(p.rate_rps) if i else 0.0
        elif p.arrival == "uniform":
            t = i / p.rate_rps
        elif p.arrival == "bursty":
            # Poisson at rate_rps during "on" periods, silence during "off" periods.
            t += rng.expovariate(p.rate_rps) if i else 0.0
            period = p.burst_on_s + p.burst_off_s
            if t % period >= p.burst_on_s:
                t = (t // period + 1) * period
        yield {"id": f"r{i}", "t_s": t,
               "prompt_tokens": _length(rng, p.prompt_tokens, p.length_dist, p.length_sigma, p.max_prompt_tokens),
               "output_tokens": _length(rng, p.output_tokens, p.length_dist, p.length_sigma, p.max_output_tokens)}


# ----------------------------------------------------------------------------- running


def _hosts(hosts: Sequence[str] | Mapping[str, Sequence[str]], params: InferenceParams) -> dict[str, list[str]]:
    if not isinstance(hosts, Mapping):
        raise AgentError("inference needs hosts as {'servers': [...], 'clients': [...], ...}")
    out = {k: list(v) for k, v in hosts.items()}
    allowed = {"servers", "clients", "prefill", "stores"}
    if set(out) - allowed:
        raise AgentError(f"unknown host group(s) {', '.join(sorted(set(out) - allowed))}; use {', '.join(allowed)}")
    for need in ("servers", "clients"):
        if not out.get(need):
            raise AgentError(f"inference needs at least one host in {need!r}")
    problem = SERVING_PATTERNS[params.pattern].check_hosts(out)
    if problem is not None:
        raise AgentError(problem)
    return out


class _ServerCommand:
    """A user's own OpenAI-compatible server, started by its command on an emulated host."""

    def __init__(self, net: Network, host: str, argv: Sequence[str], workdir: str) -> None:
        self.host = host
        self.role = "server_command"
        self.log_path = os.path.join(workdir, f"server-command-{host}-{len(os.listdir(workdir))}.log")
        self.log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = net.popen(host, list(argv), stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def output_tail(self) -> str:
        self.log.flush()
        try:
            with open(self.log_path, "rb") as f:
                text = f.read()[-600:].decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        rc = self.proc.poll()
        return (f"exit status {rc}; " if rc is not None else "") + (text or "no output")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate by pid (SIGTERM, then SIGKILL if it lingers)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=2.0)

    def close(self) -> None:
        self.log.close()


def server_command_argv(command: Sequence[str], *, port: int, ip: str, host: str) -> list[str]:
    """The user's server command with ``{port}``, ``{ip}`` and ``{host}`` filled in."""
    return [a.replace("{port}", str(port)).replace("{ip}", ip).replace("{host}", host) for a in command]


def _base_config(params: InferenceParams, net: Network, host: str) -> dict[str, Any]:
    # listen on the host's own address only (on a LocalNetwork: loopback, not every interface)
    return {"host": host, "time_scale": float(net.time_scale), "nice": params.nice, "bind": net.host_ip(host)}


def _server_config(params: InferenceParams, net: Network, host: str, mode: str, timeout_s: float) -> dict[str, Any]:
    shape = params.shape
    # seconds per 1000 prompt tokens equals milliseconds per token
    per_token_ms = params.prefill_s(1000) - params.prefill_base_ms / 1e3
    return {**_base_config(params, net, host), "mode": mode, "tpot_ms": params.tpot_ms,
            "prefill_ms_per_token": per_token_ms,
            "prefill_base_ms": params.prefill_base_ms, "max_batch": params.max_batch,
            "queue_limit": params.queue_limit, "kv_bytes_per_token": shape.kv_bytes_per_token,
            "model_name": params.model_name, "timeout_s": timeout_s}


def run(net: Network, params: InferenceParams, *, hosts: Sequence[str] | Mapping[str, Sequence[str]], seed: int,
        timeout_s: float, progress: Callable[[str], None] | None = None,
        workdir: str | None = None) -> list[dict[str, Any]]:
    """Run the workload on ``net``; returns request, session, throughput and traffic records.

    Raises AgentError naming the host whose agent failed; leaves no process behind.
    """
    say = progress or (lambda _msg: None)
    groups = _hosts(hosts, params)
    own_dir = workdir is None
    wdir = tempfile.mkdtemp(prefix=scratch_dir_prefix("inf")) if workdir is None else workdir
    agents: list[AgentProcess] = []
    commands: list[_ServerCommand] = []
    deadline = time.monotonic() + timeout_s
    try:
        def server_cfg(host: str, mode: str) -> dict[str, Any]:
            return _server_config(params, net, host, mode, timeout_s)

        prefill_ports: list[int] = []
        prefill_agents = [AgentProcess(net, h, "inference-server", server_cfg(h, "prefill"), wdir)
                          for h in groups.get("prefill", [])]
        agents += prefill_agents
        for a in prefill_agents:
            prefill_ports.append(a.wait_ready(max(deadline - time.monotonic(), 1.0)))
        store_agents = [AgentProcess(net, h, "inference-store",
                                     {**_base_config(params, net, h), "timeout_s": timeout_s}, wdir)
                        for h in groups.get("stores", [])]
        agents += store_agents
        servers: list[AgentProcess] = []
        wait_ready_s = 0.0
        if params.server_command is not None:
            assert params.server_port is not None
            for h in groups["servers"]:
                argv = server_command_argv(params.server_command, port=params.server_port, ip=net.host_ip(h), host=h)
                if params.nice != 0 and shutil.which("nice"):
                    # the same claim on the CPU as corridor's own servers, so a busy host treats both alike
                    argv = ["nice", "-n", str(params.nice), *argv]
                commands.append(_ServerCommand(net, h, argv, wdir))
            server_ports = [params.server_port] * len(commands)
            # the clients wait until each server answers its models list; the run's time limit covers that
            wait_ready_s = max(deadline - time.monotonic() - 10.0, 1.0)
            say(f"{len(commands)} server command(s) started; starting {len(groups['clients'])} client(s)")
        else:
            for i, h in enumerate(groups["servers"]):
                cfg = server_cfg(h, "serve")
                if SERVING_PATTERNS[params.pattern].prefill_peers:
                    peer = groups["prefill"][i]
                    cfg["prefill_peer"] = [net.host_ip(peer), prefill_ports[i]]
                servers.append(AgentProcess(net, h, "inference-server", cfg, wdir))
            agents += servers
            server_ports = [a.wait_ready(max(deadline - time.monotonic(), 1.0)) for a in servers]
            say(f"{len(servers)} server(s) ready; starting {len(groups['clients'])} client(s)")
        store_ports = [a.wait_ready(max(deadline - time.monotonic(), 1.0)) for a in store_agents]

        clients: list[AgentProcess] = []
        files = []
        for c in groups["clients"]:
            path = os.path.join(wdir, f"schedule-{c}.jsonl")
            files.append(open(path, "w", encoding="utf-8"))  # noqa: SIM115 - closed below
        n = 0
        for n, spec in enumerate(schedule(params, seed=seed), start=1):
            files[(n - 1) % len(files)].write(json.dumps(spec, separators=(",", ":")) + "\n")
        for f in files:
            f.close()
        say(f"schedule of {n} session(s) written")
        client_timeout = max(deadline - time.monotonic() - 5.0, 1.0)
        for j, c in enumerate(groups["clients"]):
            cfg = {**_base_config(params, net, c), "pattern": params.pattern,
                   "servers": [[net.host_ip(s), port] for s, port in zip(groups["servers"], server_ports, strict=True)],
                   "server_names": groups["servers"],
                   "stores": [[net.host_ip(s), port] for s, port in
                              zip(groups.get("stores", []), store_ports, strict=True)],
                   "schedule": os.path.join(wdir, f"schedule-{c}.jsonl"),
                   "arrival": "closed" if params.arrival == "closed" else "open",
                   "concurrency": params.concurrency, "think_time_s": params.think_time_s, "seed": seed + j,
                   "connection": params.connection, "warm_connections": params.warm_connections,
                   "prompt_bytes_per_token": params.prompt_bytes_per_token, "calls": params.calls,
                   "tool_request_bytes": params.tool_request_bytes, "tool_response_bytes": params.tool_response_bytes,
                   "tool_service_ms": params.tool_service_ms, "rag_fanout": params.rag_fanout,
                   "rag_doc_bytes": params.rag_doc_bytes, "rag_doc_tokens": params.rag_doc_tokens,
                   "rag_service_ms": params.rag_service_ms, "timeout_s": client_timeout,
                   "realtime_priority": params.client_realtime_priority, "api": params.api,
                   "path": params.endpoint_path, "model_name": params.model_name, "wait_ready_s": wait_ready_s,
                   "start_on_signal": True}
            clients.append(AgentProcess(net, c, "inference-client", cfg, wdir))
        agents += clients
        # The clients split one schedule: they start it together once all are ready, not each as soon as
        # its own start-up ends (a start over ssh takes a tenth of a second, and would shift one client's
        # arrivals against another's).
        for a in clients:
            _wait_client_ready(a, commands, deadline)
        start_line = (json.dumps({"start_at": time.time() + CLIENT_START_MARGIN_S}) + "\n").encode()
        for a in clients:
            assert a.proc.stdin is not None
            try:
                a.proc.stdin.write(start_line)
                a.proc.stdin.flush()
            except OSError as exc:  # it ended between READY and its start
                raise AgentError(f"inference client on {a.host} could not be started ({exc}): "
                                 f"{a.stderr_tail()}") from None
        for a in clients:
            while True:
                left = deadline - time.monotonic()
                try:
                    a.proc.wait(timeout=max(min(left, 0.5 if commands else left), 0.1))
                    break
                except subprocess.TimeoutExpired:
                    if left <= 0.5:
                        raise AgentError(f"inference client on {a.host} did not finish within {timeout_s:g}s"
                                         ) from None
                for s in commands:
                    if s.proc.poll() is not None:
                        raise AgentError(f"the server command on {s.host} ended before the clients did: "
                                         f"{s.output_tail()}; check server_command and server_port")
            if a.proc.returncode != 0:
                servers_said = "".join(f"; server command on {s.host}: {s.output_tail()}" for s in commands)
                raise AgentError(f"inference client on {a.host} failed: {a.stderr_tail()}{servers_said}")
        say("clients done; stopping servers")
        records: list[dict[str, Any]] = []
        for a in clients:
            records += a.records()
        for a in agents:
            if a not in clients:
                a.stop()
                if a.proc.returncode not in (0, None):
                    raise AgentError(f"{a.role} on {a.host} failed: {a.stderr_tail()}")
                records += a.records()
        for rec in records:
            rec.setdefault("time_scale", float(net.time_scale))
        return records
    finally:
        for a in agents:
            try:
                a.stop(timeout_s=2.0)
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("stopping %s on %s: %s", a.role, a.host, exc)
            a.close()
        for s in commands:
            try:
                s.stop()
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("stopping the server command on %s: %s", s.host, exc)
            s.close()
        if own_dir:
            shutil.rmtree(wdir, ignore_errors=True)


# ----------------------------------------------------------------------------- model


def _site(plan: Plan, host: str) -> str:
    try:
        return plan.host(host).site
    except KeyError:
        raise CorridorError(f"host {host!r} is not in plan {plan.name!r}") from None


def predict(params: InferenceParams, plan: Plan, *, hosts: Sequence[str] | Mapping[str, Sequence[str]],
            time_scale: float = 1.0, percentile: float | None = None, seed: int | None = None) -> dict[str, Any]:
    """Model figures for the workload's own request schedule: TTFT and TPOT percentiles, e2e, network part.

    The schedule (:func:`schedule`: the seeded arrivals and lengths, or the
    trace's) is replayed through the serving simulation
    (:func:`corridor.workloads.inference.model.simulate_serving`), so queueing at the
    prefill engine, concurrent KV transfers and slow start after idle count.
    ``ttft_s``/``tpot_s`` are the ``percentile``-th percentiles (the SLO's; 99
    when not given, the SLO default), and ``ttft_p50_s``, ``ttft_p90_s``,
    ``ttft_p99_s``, ``ttft_mean_s`` (likewise tpot, e2e) come with them;
    ``percentile`` names the one in ``ttft_s``. ``seed`` is the run's schedule
    seed; without it five seeded schedules are pooled. The closed formula for
    one request on an idle system stays as ``ttft_unloaded_s``. Pure apart from
    reading a trace file; ``time_scale`` is echoed back.
    """
    groups = _hosts(hosts, params)
    p = params
    c_site = _site(plan, groups["clients"][0])
    s_site = _site(plan, groups["servers"][0])
    terms = SERVING_PATTERNS[p.pattern].model_terms(p, _model_context(plan, groups, c_site))
    path = plan.path_params(c_site, s_site)
    rtt_s = path.rtt_ms / 1e3
    new_conn = p.connection == "per_request"
    rounds = analytic.protocol_round_trips(new_connection=new_conn)
    prefill_s = p.prefill_s(p.prompt_tokens + terms.prompt_extra_tokens)
    tpot_s = p.tpot_ms / 1e3
    extra_s = 0.0
    out: dict[str, Any] = {"pattern": p.pattern, "client_site": c_site, "server_site": s_site, "rtt_s": rtt_s,
                           "round_trips": rounds,
                           "round_trips_are": "TCP handshake, request + first token" if new_conn
                           else "request + first token (warm keep-alive connection)",
                           "prefill_s": prefill_s, "tpot_s": tpot_s, "time_scale": time_scale}
    if terms.kv_from is not None:
        kv_path = plan.path_params(terms.kv_from, s_site)
        back = plan.path_params(s_site, terms.kv_from)
        kv_bytes = analytic.kv_cache_bytes(p.prompt_tokens, p.shape)
        kv_s = analytic.transfer_time_s(kv_bytes, rate_mbps=kv_path.rate_mbps, one_way_s=kv_path.one_way_ms / 1e3,
                                     rtt_s=kv_path.rtt_ms / 1e3)
        # decode -> prefill request (one way), then the KV cache comes back (its one way is in kv_s)
        extra_s = back.one_way_ms / 1e3 + kv_s
        # a connection whose window is already open (or a congestion control that remembers the
        # path's rate, like BBR) skips most of slow start: the warm figure is the lower bound
        kv_warm_s = analytic.transfer_time_s(kv_bytes, rate_mbps=kv_path.rate_mbps,
                                             one_way_s=kv_path.one_way_ms / 1e3, warm=True)
        out.update({"kv_bytes": kv_bytes, "kv_bytes_per_token": p.shape.kv_bytes_per_token,
                    "kv_transfer_s": kv_s, "kv_transfer_warm_s": kv_warm_s, "kv_rate_mbps": kv_path.rate_mbps})
    ttft = analytic.ttft_s(round_trips=rounds, rtt_s=rtt_s, prefill_s=prefill_s, extra_s=extra_s)
    e2e = analytic.e2e_s(ttft, p.output_tokens, tpot_s)
    out.update({"ttft_unloaded_s": ttft, "e2e_unloaded_s": e2e, "network_ttft_s": rounds * rtt_s + extra_s})
    out.update(_simulated(p, terms, plan, groups, c_site, s_site, percentile, seed))
    if terms.session == "retrieval":
        out.update({**terms.figures, "session_e2e_s": terms.before_s + e2e})
    elif terms.session == "chain":
        tool_rtt = float(terms.figures.get("tool_rtt_s", 0.0))
        out.update({"calls": terms.calls,
                    "session_e2e_s": analytic.chain_e2e_s(terms.calls, e2e, terms.tool_calls, tool_rtt,
                                                          p.tool_service_ms / 1e3),
                    "network_session_s": terms.calls * rounds * rtt_s + terms.tool_calls * tool_rtt})
    return out


def _model_context(plan: Plan, groups: Mapping[str, Sequence[str]], c_site: str) -> ModelContext:
    def path(a: str, b: str) -> PathFigures:
        there = plan.path_params(a, b)
        return PathFigures(rtt_s=there.rtt_ms / 1e3, rate_mbps=there.rate_mbps)

    return ModelContext(client_site=c_site,
                        group_sites={g: [_site(plan, h) for h in hs] for g, hs in groups.items()},
                        path=path)


def _leg(plan: Plan, a: str, b: str) -> analytic.Leg:
    there, back = plan.path_params(a, b), plan.path_params(b, a)
    return analytic.Leg(one_way_s=there.one_way_ms / 1e3, back_s=back.one_way_ms / 1e3,
                        rate_bps=there.rate_mbps * 1e6 * analytic.MSS_BYTES / analytic.MTU_BYTES,
                        queue_bytes=there.queue_bytes)


#: Schedules pooled when the run's seed is not known (fewer when the schedule is long).
_MODEL_SEEDS = (1, 2, 3, 4, 5)


def _simulated(p: InferenceParams, terms: ModelTerms, plan: Plan, groups: Mapping[str, Sequence[str]], c_site: str,
               s_site: str, percentile: float | None, seed: int | None) -> dict[str, Any]:
    """Percentiles of the serving simulation over the workload's schedule (see :func:`predict`)."""
    q = 99.0 if percentile is None else float(percentile)
    kv_leg = None if terms.kv_from is None else _leg(plan, terms.kv_from, s_site)
    per_token = p.prefill_s(1000) - p.prefill_base_ms / 1e3  # seconds per 1000 tokens = ms per token
    setup = analytic.ServingSetup(
        client=_leg(plan, c_site, s_site), prefill_s_per_token=per_token / 1e3, prefill_base_s=p.prefill_base_ms / 1e3,
        tpot_s=p.tpot_ms / 1e3, max_batch=p.max_batch, warm_connections=p.warm_connections,
        new_connection_each_call=p.connection == "per_request", kv=kv_leg,
        kv_bytes_per_token=p.shape.kv_bytes_per_token, extra_before_s=terms.before_s, tool_s=terms.tool_s)
    n_clients = max(1, len(groups["clients"]))
    calls_per_session = terms.calls
    results: list[dict[str, float]] = []
    # pool up to five schedules, fewer for long ones: the pooled calls stay about 2,000 or fewer
    pooled = _MODEL_SEEDS[:max(1, min(len(_MODEL_SEEDS), 2000 // max(1, p.requests * calls_per_session)))]
    for one_seed in ([seed] if seed is not None or p.arrival == "trace" else list(pooled)):
        sessions = []
        for n, spec in enumerate(schedule(p, seed=0 if one_seed is None else one_seed)):
            prompt = int(spec["prompt_tokens"]) + terms.prompt_extra_tokens
            sessions.append([analytic.Call(t_s=float(spec["t_s"]), prompt_tokens=prompt,
                                           output_tokens=int(spec["output_tokens"]), client=n % n_clients, session=n,
                                           index=i) for i in range(calls_per_session)])
        results += analytic.simulate_serving(sessions, setup, closed=p.arrival == "closed",
                                             concurrency=p.concurrency, clients=n_clients)
    out: dict[str, Any] = {"percentile": q, "simulated_calls": len(results)}
    for key in ("ttft_s", "tpot_s", "e2e_s", "queue_s", "kv_transfer_s"):
        values = [r[key] for r in results if key in r]
        if not values:
            continue
        stem = key[:-2]
        for pq in sorted({50.0, 90.0, 99.0, q}):
            out[f"{stem}_p{pq:g}_s"] = stats_percentile(values, pq)
        out[f"{stem}_mean_s"] = sum(values) / len(values)
        if key != "kv_transfer_s":  # kv_transfer_s stays the one-request figure; these are percentiles
            out[key] = stats_percentile(values, q)
    return out


# ----------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class Slo:
    """Latency targets a request must meet to count as goodput."""

    ttft_s: float = 0.25
    tpot_s: float = 0.1


def summarize(records: Sequence[Mapping[str, Any]], slo: Slo | Mapping[str, float] | None = None,
              baseline: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Per-run figures from ``request`` (and ``session``, ``throughput``) records.

    ``slo`` defaults to DistServe's chat targets (TTFT 0.25 s, TPOT 0.1 s).
    With ``baseline`` (the same workload on the ``local`` topology), adds the
    added TTFT/e2e and the share of end-to-end latency the network caused.
    """
    if slo is None:
        target = Slo()
    elif isinstance(slo, Slo):
        target = slo
    else:
        target = Slo(**dict(slo))
    reqs = [r for r in records if r.get("kind") == "request"]
    ok = [r for r in reqs if r.get("ok")]
    ttft = [float(r["ttft_s"]) for r in ok if r.get("ttft_s") is not None]
    tpot = [float(r["tpot_s"]) for r in ok if r.get("tpot_s") is not None]
    e2e = [float(r["e2e_s"]) for r in ok if r.get("e2e_s") is not None]
    good = [r for r in ok if float(r["ttft_s"]) <= target.ttft_s
            and (r.get("tpot_s") is None or float(r["tpot_s"]) <= target.tpot_s)]
    span = [float(r["t_send_s"]) + float(r["e2e_s"]) for r in ok if r.get("t_send_s") is not None]
    starts = [float(r["t_send_s"]) for r in ok if r.get("t_send_s") is not None]
    duration = (max(span) - min(starts)) if span and starts else math.nan
    out: dict[str, Any] = {"requests": len(reqs), "ok": len(ok), "errors": len(reqs) - len(ok),
                           "slo_ttft_s": target.ttft_s, "slo_tpot_s": target.tpot_s,
                           "goodput_fraction": len(good) / len(reqs) if reqs else math.nan,
                           "goodput_rps": len(good) / duration if duration and duration > 0 else math.nan,
                           "duration_s": duration}
    out.update(percentile_stats(ttft, "ttft_s"))
    out.update(percentile_stats(tpot, "tpot_s"))
    out.update(percentile_stats(e2e, "e2e_s"))
    out.update(sched_error_stats(reqs))
    gaps = [float(r["gap_max_s"]) for r in ok if r.get("gap_max_s") is not None]
    out["gap_max_p99_s"] = analytic.percentile(gaps, 99)
    kv = [float(r["kv_transfer_s"]) for r in ok if r.get("kv_transfer_s") is not None]
    if kv:
        out.update(percentile_stats(kv, "kv_transfer_s"))
        out["kv_bytes_mean"] = sum(float(r["kv_bytes"]) for r in ok if "kv_bytes" in r) / len(kv)
    sessions = [r for r in records if r.get("kind") == "session"]
    if sessions:
        out["sessions"] = len(sessions)
        out.update(percentile_stats([float(s["e2e_s"]) for s in sessions if s.get("ok")], "session_e2e_s"))
    thr = [r for r in records if r.get("kind") == "throughput"]
    if thr:
        dur = max(float(r["duration_s"]) for r in thr)
        out["throughput_rps"] = sum(int(r["requests"]) for r in thr) / dur if dur > 0 else math.nan
        out["throughput_tokens_per_s"] = sum(int(r["output_tokens"]) for r in thr) / dur if dur > 0 else math.nan
    if baseline is not None:
        base = summarize(baseline, target)
        out["baseline_ttft_s_mean"] = base["ttft_s_mean"]
        out["baseline_tpot_s_mean"] = base["tpot_s_mean"]
        out["baseline_e2e_s_mean"] = base["e2e_s_mean"]
        out["added_ttft_s"] = out["ttft_s_mean"] - base["ttft_s_mean"]
        out["added_e2e_s"] = out["e2e_s_mean"] - base["e2e_s_mean"]
        out["tpot_change"] = out["tpot_s_mean"] / base["tpot_s_mean"] - 1 if base["tpot_s_mean"] else math.nan
        out["network_share"] = out["added_e2e_s"] / out["e2e_s_mean"] if out["e2e_s_mean"] else math.nan
        if sessions and "session_e2e_s_mean" in base:
            out["added_session_e2e_s"] = out["session_e2e_s_mean"] - base["session_e2e_s_mean"]
    return out


def traffic_totals(records: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """Messages and bytes all agents sent (their ``traffic`` records)."""
    msgs = sum(int(r["messages_sent"]) for r in records if r.get("kind") == "traffic")
    size = sum(int(r["bytes_sent"]) for r in records if r.get("kind") == "traffic")
    return msgs, size


def params_dict(params: InferenceParams) -> dict[str, Any]:
    """The resolved parameters as a JSON-able dict (for run manifests)."""
    return asdict(params)

