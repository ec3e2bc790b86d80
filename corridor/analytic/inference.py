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

    @property
    def kv_bytes_per_token(self) -> int:
        return kv_bytes_per_token(self.layers, self.kv_heads, self.head_dim, self.kv_bytes_per_elem)


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
    """Linear-interpolated percentile (q in [0, 100]); nan for an empty sequence."""
    if not values:
        return math.nan
    s = sorted(values)
    if len(s) == 1:
        return float(s[0])
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))
