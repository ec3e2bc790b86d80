"""Latency SLO presets named after their source, for inference workloads (``slo: mlperf-llama2-70b-server``).

Stage: spec (pure data; the experiment loader reads it, and ``corridor validate``
lists it beside its sources). Each preset is a TTFT limit, a TPOT limit and
the percentile they apply at, with where the figures come from:

- MLPerf Inference (mlcommons/inference, loadgen's ``mlperf.conf``, server and
  interactive scenarios, limits at p99): Llama-2-70B server TTFT 2 s / TPOT
  200 ms; Llama-2-70B interactive 450 ms / 40 ms; Llama-3.1-405B server 6 s /
  175 ms.
- DistServe (Zhong et al., OSDI 2024), chat SLOs used in its evaluation:
  13B chat TTFT 0.25 s / TPOT 0.1 s; 175B TTFT 4 s / TPOT 0.2 s. DistServe
  states attainment of both; corridor judges them at p99 like the rest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SloPreset:
    """A published latency SLO for LLM serving."""

    name: str
    ttft_ms: float
    tpot_ms: float
    percentile: float
    source: str


SLO_PRESETS: dict[str, SloPreset] = {
    p.name: p
    for p in (
        SloPreset("mlperf-llama2-70b-server", 2000.0, 200.0, 99.0,
                  "MLPerf Inference, loadgen mlperf.conf, Llama-2-70B server scenario"),
        SloPreset("mlperf-llama2-70b-interactive", 450.0, 40.0, 99.0,
                  "MLPerf Inference, loadgen mlperf.conf, Llama-2-70B interactive scenario"),
        SloPreset("mlperf-llama31-405b-server", 6000.0, 175.0, 99.0,
                  "MLPerf Inference, loadgen mlperf.conf, Llama-3.1-405B server scenario"),
        SloPreset("distserve-13b-chat", 250.0, 100.0, 99.0, "DistServe (OSDI 2024), 13B chatbot SLO"),
        SloPreset("distserve-175b", 4000.0, 200.0, 99.0, "DistServe (OSDI 2024), 175B chatbot SLO"),
    )
}
