"""Analytic model of LLM inference latency across a corridor.

Stage: analysis model (pure: no root, no network, no I/O). Everything here is
arithmetic on the model shape, the serving parameters and the path, so the
runner's ``predict`` and the experiments' "model vs measured" column use the
same formulas:

- prefill time = 2 x parameters x prompt tokens / (peak FLOP/s x MFU)
  (the forward pass costs about 2 FLOPs per parameter per token);
- TTFT = round trips x RTT + queueing + prefill (+ one TPOT for nothing: the
  first token is produced by the prefill pass itself);
- TPOT = the decode step time; the network does not change it while the
  tokens of one response fit the path's window (a steady stream of small
  messages spaced TPOT apart arrives spaced TPOT apart, shifted by one way);
- KV cache bytes per token = 2 (K and V) x layers x KV heads x head dim x
  bytes per element (DESIGN.md); a 70B-class shape holds 320 KiB per token;
- KV transfer time = one-way delay + bytes x 8 / (rate x 1448/1500: the
  link rate counts IP packets, TCP carries 1448 payload bytes in each 1500),
  plus what TCP slow
  start loses while it opens the window to the path's bandwidth-delay product
  (a fresh or idle connection doubles its window once per RTT from 10
  segments: about one RTT per round, less the data those rounds carry).

Round trips of the serving protocol (HTTP/1.1 over TCP, response streamed):
a request on a warm keep-alive connection costs one RTT before the first token
(request out, first token back); a fresh connection adds one more for the TCP
handshake (SYN, SYN-ACK; the request rides with the final ACK).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Initial congestion window of Linux TCP, segments (RFC 6928).
INITIAL_CWND_SEGMENTS = 10
#: IP packet size of a full-size segment.
MTU_BYTES = 1500
#: TCP payload per full-size segment at MTU 1500 with timestamps (20 IP + 20 TCP + 12 options).
MSS_BYTES = 1448


@dataclass(frozen=True)
class ModelShape:
    """What the latency model needs to know about an LLM."""

    name: str
    params: float  # parameter count
    layers: int
    kv_heads: int
    head_dim: int
    kv_bytes_per_elem: int = 2
    #: A scale model's factor (corridor.planning.scale): the KV cache moved per token is divided by it; compute is not.
    kv_scale: float = 1.0

    @property
    def kv_bytes_per_token(self) -> int:
        full = kv_bytes_per_token(self.layers, self.kv_heads, self.head_dim, self.kv_bytes_per_elem)
        return full if self.kv_scale == 1.0 else max(1, int(round(full / self.kv_scale)))


#: Shapes by name. Llama-2-13B uses full multi-head attention (40 KV heads);
#: 70B-class models use grouped-query attention with 8 KV heads (DESIGN.md).
MODELS: dict[str, ModelShape] = {
    "7b": ModelShape("7b", 6.7e9, 32, 32, 128),
    "13b": ModelShape("13b", 13e9, 40, 40, 128),
    "70b": ModelShape("70b", 70e9, 80, 8, 128),
}


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, bytes_per_elem: int = 2) -> int:
    """KV cache bytes one token occupies: 2 x layers x kv_heads x head_dim x bytes/elem."""
    return 2 * layers * kv_heads * head_dim * bytes_per_elem


def kv_cache_bytes(prompt_tokens: int, shape: ModelShape) -> int:
    """KV cache of a whole prompt, the payload a disaggregated prefill hands to decode."""
    return prompt_tokens * shape.kv_bytes_per_token


def prefill_time_s(prompt_tokens: int, params: float, *, peak_tflops: float, mfu: float) -> float:
    """Compute-bound prefill: 2 x params x tokens / (peak FLOP/s x MFU)."""
    if peak_tflops <= 0 or not 0 < mfu <= 1:
        raise ValueError("peak_tflops must be positive and mfu in (0, 1]")
    return 2.0 * params * prompt_tokens / (peak_tflops * 1e12 * mfu)


def slow_start_rounds(size_bytes: int, rate_mbps: float, rtt_s: float) -> int:
    """RTTs a fresh TCP connection spends below the path rate while sending ``size_bytes``.

    The window starts at 10 segments and doubles each RTT until it reaches the
    bandwidth-delay product; the rounds spent before that cost about one RTT
    each beyond the pure serialisation time (a standard approximation).
    """
    if rtt_s <= 0 or size_bytes <= 0:
        return 0
    bdp_segments = rate_mbps * 1e6 / 8 * rtt_s / MSS_BYTES
    if bdp_segments <= INITIAL_CWND_SEGMENTS:
        return 0
    rounds = math.ceil(math.log2(bdp_segments / INITIAL_CWND_SEGMENTS))
    # stop counting once the data would already have been sent during slow start
    sent = 0.0
    cwnd = float(INITIAL_CWND_SEGMENTS)
    for r in range(rounds):
        sent += cwnd * MSS_BYTES
        if sent >= size_bytes:
            return r + 1
        cwnd *= 2
    return rounds


def transfer_time_s(size_bytes: int, *, rate_mbps: float, one_way_s: float, rtt_s: float = 0.0,
                    warm: bool = False) -> float:
    """Time from the first byte sent to the last byte received over one TCP connection."""
    # link rates count whole IP packets (the link contract); TCP carries MSS bytes of each MTU
    rate_bps = rate_mbps * 1e6 * MSS_BYTES / MTU_BYTES
    serial = size_bytes * 8 / rate_bps
    rounds = 0 if warm else slow_start_rounds(size_bytes, rate_mbps, rtt_s)
    # Each slow-start round costs one RTT but still carries its window; only the time
    # beyond what that data would take at the full rate is a penalty.
    carried = min(INITIAL_CWND_SEGMENTS * (2**rounds - 1) * MSS_BYTES, size_bytes)
    penalty = max(rounds * rtt_s - carried * 8 / rate_bps, 0.0)
    return one_way_s + serial + penalty


def ttft_s(*, round_trips: float, rtt_s: float, prefill_s: float, queueing_s: float = 0.0,
           extra_s: float = 0.0) -> float:
    """TTFT = round trips x RTT + queueing + prefill (+ extra, e.g. a KV transfer)."""
    return round_trips * rtt_s + queueing_s + prefill_s + extra_s


def protocol_round_trips(*, new_connection: bool) -> int:
    """RTTs the HTTP/1.1 streaming protocol needs before the first token reaches the client."""
    return 2 if new_connection else 1


def e2e_s(ttft: float, output_tokens: int, tpot_s: float) -> float:
    """End-to-end latency of one streamed response: TTFT + (n - 1) x TPOT."""
    return ttft + max(output_tokens - 1, 0) * tpot_s


def chain_e2e_s(calls: int, per_call_s: float, tool_round_trips: int = 0, tool_rtt_s: float = 0.0,
                tool_service_s: float = 0.0) -> float:
    """A chain of K dependent calls, each optionally followed by a tool round trip."""
    return calls * per_call_s + tool_round_trips * (tool_rtt_s + tool_service_s)


def mm1_wait_s(arrival_rps: float, service_s: float) -> float:
    """Mean wait in an M/M/1 queue (a rough queueing term for a single prefill engine)."""
    rho = arrival_rps * service_s
    if rho >= 1:
        return math.inf
    return rho * service_s / (1 - rho)


def percentile(values: Sequence[float], q: float) -> float:
    """The project's one percentile definition (:func:`corridor.stats.percentile`); nan for no values."""
    from corridor.stats import percentile as one_percentile

    return one_percentile(values, q)


# ----------------------------------------------------------------------------- serving simulation


@dataclass(frozen=True)
class Leg:
    """One direction-pair between two hosts as the serving simulation needs it."""

    one_way_s: float  # request direction
    back_s: float  # answer direction
    rate_bps: float  # payload bits per second of the bottleneck
    queue_bytes: int = 0

    @property
    def rtt_s(self) -> float:
        return self.one_way_s + self.back_s


@dataclass(frozen=True)
class ServingSetup:
    """The serving system the agents run: one client-to-server leg, the engine, and for disagg the KV leg.

    ``prefill_s`` maps prompt tokens to seconds. ``kv`` is the prefill-to-decode
    leg (the prefill host answers over it) and ``kv_bytes_per_token`` its payload.
    """

    client: Leg
    prefill_s_per_token: float
    prefill_base_s: float
    tpot_s: float
    max_batch: int = 64
    warm_connections: int = 4
    new_connection_each_call: bool = False
    kv: Leg | None = None
    kv_bytes_per_token: int = 0
    cc: str = "bbr"
    extra_before_s: float = 0.0  # e.g. RAG retrieval before the call
    tool_s: float = 0.0  # between the calls of one agentic session

    def prefill_s(self, tokens: int) -> float:
        return self.prefill_base_s + self.prefill_s_per_token * tokens


@dataclass
class _PooledConn:
    cwnd: float  # bytes
    ssthresh: float
    last_s: float


@dataclass
class _Flow:
    call: int
    left: float
    conn: _PooledConn


class _KvLink:
    """Fluid model of KV-cache transfers sharing one path: per-connection windows, slow start, idle restart.

    Each tick every active flow may send its window's worth per RTT; when the
    flows together ask for more than the link carries they share it in
    proportion to their windows. A window below ssthresh doubles per RTT; a
    loss-based sender whose flows overfill BDP plus queue cuts its windows
    (x0.7, cubic); BBR keeps its windows at twice the BDP. A connection idle for
    longer than its RTO halves its window once per RTO (Linux's restart after
    idle), down to the initial window.
    """

    def __init__(self, leg: Leg, cc: str) -> None:
        self.leg = leg
        self.cc = cc
        self.t = 0.0
        self.flows: list[_Flow] = []
        self.bdp = leg.rate_bps / 8 * leg.rtt_s
        self.rto = max(0.2, 0.2 + leg.rtt_s)  # Linux: 200 ms minimum plus about one smoothed RTT
        self.dt = max(leg.rtt_s / 8, 1e-4)

    def restart(self, conn: _PooledConn, now: float) -> None:
        idle = now - conn.last_s
        init = INITIAL_CWND_SEGMENTS * MSS_BYTES
        while idle > self.rto and conn.cwnd > init:
            conn.cwnd = max(init, conn.cwnd / 2)
            idle -= self.rto

    def start(self, call: int, size: float, conn: _PooledConn) -> None:
        self.restart(conn, self.t)
        self.flows.append(_Flow(call, size, conn))

    def _settled(self) -> bool:
        """Whether the windows stay as they are: every flow out of slow start and the link full."""
        if self.cc == "bbr":
            return all(f.conn.cwnd >= 2 * self.bdp for f in self.flows)
        return (all(f.conn.cwnd >= f.conn.ssthresh for f in self.flows)
                and sum(f.conn.cwnd for f in self.flows) >= self.bdp)

    def step(self, until: float) -> list[tuple[int, float]]:
        """Advance to ``until``; (call, time its last byte left) for flows that finished."""
        done: list[tuple[int, float]] = []
        rtt = max(self.leg.rtt_s, 1e-6)
        while self.t < until - 1e-12 and self.flows:
            dt = min(self.dt, until - self.t)
            rate = self.leg.rate_bps / 8
            if self._settled():
                # windows no longer change: jump to the first finish (or ``until``) in one step
                share = [f.conn.cwnd / rtt * min(1.0, rate / sum(g.conn.cwnd / rtt for g in self.flows))
                         for f in self.flows]
                dt = max(dt, min(until - self.t, min(f.left / r for f, r in zip(self.flows, share, strict=True))))
            want = [min(f.conn.cwnd / rtt * dt, f.left) for f in self.flows]
            cap = rate * dt
            total = sum(want)
            scale = min(1.0, cap / total) if total > 0 else 1.0
            for f, w in zip(self.flows, want, strict=True):
                sent = w * scale
                f.left -= sent
                if f.left <= 1e-6:
                    done.append((f.call, self.t + dt * (sent / w if w > 0 else 1.0)))
            grow = 2 ** min(dt / rtt, 30.0)
            for f in self.flows:
                c = f.conn
                c.cwnd = c.cwnd * grow if c.cwnd < c.ssthresh else c.cwnd + MSS_BYTES * dt / rtt
                if self.cc == "bbr":
                    c.cwnd = min(c.cwnd, 2 * self.bdp + MSS_BYTES)
            if self.cc != "bbr" and sum(f.conn.cwnd for f in self.flows) > self.bdp + self.leg.queue_bytes:
                for f in self.flows:
                    f.conn.cwnd = f.conn.ssthresh = max(0.7 * f.conn.cwnd, 2 * MSS_BYTES)
            self.t += dt
            finished = {c for c, _ in done}
            for f in self.flows:
                if f.call in finished:
                    f.conn.last_s = self.t
            self.flows = [f for f in self.flows if f.call not in finished]
        if until < math.inf:
            self.t = max(self.t, until)
        return done


@dataclass(frozen=True)
class Call:
    """One LLM call of the schedule: when its session starts (open loop), lengths, client and session."""

    t_s: float
    prompt_tokens: int
    output_tokens: int
    client: int = 0
    session: int = 0
    index: int = 0  # position in its session (agentic chains)


def simulate_serving(sessions: Sequence[Sequence[Call]], setup: ServingSetup, *, closed: bool = False,
                     concurrency: int = 1, clients: int = 1) -> list[dict[str, float]]:
    """Replay the request schedule through the serving model the agents implement; one dict per call.

    The server admits ``max_batch`` requests at once, runs prefills one at a time
    in arrival order (FIFO), then streams tokens ``tpot_s`` apart. A call takes
    an idle keep-alive connection (each client opens ``warm_connections`` per
    server before the run) or pays a handshake. Disaggregated serving sends the
    prompt on to the prefill host over a pooled connection, and the KV cache
    comes back over the shared :class:`_KvLink`. Open loop: each session starts
    at its first call's ``t_s``; closed loop: ``concurrency`` users per client
    take sessions in turn. Returns ``ttft_s``, ``tpot_s``, ``e2e_s``,
    ``queue_s`` (slot and prefill wait) and, for disagg, ``kv_transfer_s``.
    """
    import heapq
    import itertools

    leg = setup.client
    order = itertools.count()
    events: list[tuple[float, int, str, Any]] = []
    out: dict[tuple[int, int], dict[str, float]] = {}
    idle_conns = [setup.warm_connections] * max(1, clients)
    slots_free = setup.max_batch
    slot_wait: list[tuple[int, int]] = []
    prefill_free_at = 0.0
    peers: list[_PooledConn] = []
    kv = _KvLink(setup.kv, setup.cc) if setup.kv is not None else None
    state: dict[tuple[int, int], dict[str, Any]] = {}

    def push(t: float, kind: str, data: Any) -> None:
        heapq.heappush(events, (t, next(order), kind, data))

    def send(key: tuple[int, int], t: float) -> None:
        s, i = key
        call = sessions[s][i]
        st = state[key] = {"t_send": t + (setup.extra_before_s if i == 0 else 0.0), "client": call.client}
        t0 = st["t_send"]
        if setup.new_connection_each_call or idle_conns[call.client] <= 0:
            t0 += leg.rtt_s
            st["own_conn"] = True
        else:
            idle_conns[call.client] -= 1
            st["own_conn"] = False
        push(t0 + leg.one_way_s, "arrive", key)

    def prefilled(key: tuple[int, int], t: float) -> None:
        """Prefill of ``key`` runs now (FIFO behind earlier ones); schedule what follows it."""
        nonlocal prefill_free_at
        call = sessions[key[0]][key[1]]
        start = max(t, prefill_free_at)
        prefill_free_at = start + setup.prefill_s(call.prompt_tokens)
        state[key]["queue"] = state[key].get("queue", 0.0) + start - t
        push(prefill_free_at, "kv" if kv is not None else "first", key)

    def first_token(key: tuple[int, int], t: float) -> None:
        nonlocal slots_free
        call = sessions[key[0]][key[1]]
        st = state[key]
        ttft = t + leg.back_s - st["t_send"]
        decode_s = max(call.output_tokens - 1, 0) * setup.tpot_s
        rec = {"ttft_s": ttft, "tpot_s": setup.tpot_s, "e2e_s": ttft + decode_s,
               "queue_s": st.get("queue", 0.0), "t_send_s": st["t_send"]}
        if "kv_s" in st:
            rec["kv_transfer_s"] = st["kv_s"]
        out[key] = rec
        push(t + decode_s, "free", key)
        push(t + decode_s + leg.back_s, "done", key)

    if closed:
        pending = list(range(len(sessions)))
        per_client: list[list[int]] = [[] for _ in range(max(1, clients))]
        for s in pending:
            per_client[sessions[s][0].client % len(per_client)].append(s)
        queues = [iter(q) for q in per_client]
        for q in queues:
            for _ in range(concurrency):
                first = next(q, None)
                if first is not None:
                    send((first, 0), 0.0)
    else:
        for s, calls in enumerate(sessions):
            if calls:
                push(calls[0].t_s, "send", (s, 0))

    def next_time() -> float:
        return events[0][0] if events else math.inf

    while events or (kv is not None and kv.flows):
        if kv is not None and kv.flows:
            horizon = min(next_time(), kv.t + (math.inf if kv._settled() else kv.dt))
            for key_index, t_left in kv.step(horizon):
                key = divmod(key_index, 1 << 20)
                state[key]["kv_s"] = t_left + setup.kv.one_way_s - state[key]["kv_start"] if setup.kv else 0.0
                push(t_left + (setup.kv.back_s if setup.kv else 0.0), "first", key)
            if next_time() > kv.t:
                continue
        t, _, kind, key = heapq.heappop(events)
        if kv is not None and not kv.flows:
            kv.t = max(kv.t, t)
        if kind == "send":
            send(key, t)
        elif kind == "arrive":
            if slots_free > 0:
                slots_free -= 1
                push(t, "admitted", key)
            else:
                slot_wait.append(key)
                state[key]["wait_from"] = t
        elif kind == "admitted":
            if kv is not None and setup.kv is not None:
                conn_t = t
                if peers:
                    conn = peers.pop(0)
                else:
                    conn = _PooledConn(INITIAL_CWND_SEGMENTS * MSS_BYTES, math.inf, t)
                    conn_t += setup.kv.rtt_s
                state[key]["conn"] = conn
                push(conn_t + setup.kv.back_s, "at_prefill", key)
            else:
                prefilled(key, t)
        elif kind == "at_prefill":
            prefilled(key, t)
        elif kind == "kv" and kv is not None:
            call = sessions[key[0]][key[1]]
            state[key]["kv_start"] = t
            kv.start(key[0] * (1 << 20) + key[1], float(call.prompt_tokens * setup.kv_bytes_per_token),
                     state[key]["conn"])
        elif kind == "first":
            if "conn" in state[key]:
                peers.append(state[key].pop("conn"))
            first_token(key, t)
        elif kind == "free":
            if slot_wait:
                waiting = slot_wait.pop(0)
                state[waiting]["queue"] = t - state[waiting].pop("wait_from")
                push(t, "admitted", waiting)
            else:
                slots_free += 1
        elif kind == "done":
            st = state[key]
            if not st["own_conn"] or not setup.new_connection_each_call:
                idle_conns[st["client"]] += 1
            s, i = key
            if i + 1 < len(sessions[s]):
                send((s, i + 1), t + setup.tool_s)
            elif closed:
                nxt = next(queues[sessions[s][0].client % len(queues)], None)
                if nxt is not None:
                    send((nxt, 0), t)
    return [out[k] for k in sorted(out)]
