"""SLO presets: a workload's ``slo:`` may name a published SLO (corridor.spec.slo_presets), not list thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_experiment_fakes import FAKE_EXPERIMENT, use_fakes, write_experiment  # noqa: F401

from corridor.errors import SpecError
from corridor.spec.experiment import load_experiment
from corridor.spec.slo_presets import SLO_PRESETS

#: The published figures (ms) each preset must carry: MLPerf Inference loadgen mlperf.conf; DistServe.
EXPECTED = {
    "mlperf-llama2-70b-server": (2000.0, 200.0, 99.0),
    "mlperf-llama2-70b-interactive": (450.0, 40.0, 99.0),
    "mlperf-llama31-405b-server": (6000.0, 175.0, 99.0),
    "distserve-13b-chat": (250.0, 100.0, 99.0),
    "distserve-175b": (4000.0, 200.0, 99.0),
}


def _with_chat_slo(tmp_path: Path, slo: str) -> str:
    text = FAKE_EXPERIMENT.replace("    slo: {ttft: 250ms, tpot: 100ms}", f"    slo: {slo}")
    assert text != FAKE_EXPERIMENT
    return write_experiment(tmp_path, text)


def test_every_preset_is_listed() -> None:
    assert set(SLO_PRESETS) == set(EXPECTED)
    assert all(p.source for p in SLO_PRESETS.values())


@pytest.mark.usefixtures("use_fakes")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_selects_its_thresholds(tmp_path: Path, name: str) -> None:
    slo = load_experiment(_with_chat_slo(tmp_path, name)).workload("chat").slo
    assert (slo.ttft_ms, slo.tpot_ms, slo.percentile) == EXPECTED[name]


@pytest.mark.usefixtures("use_fakes")
def test_unknown_preset_lists_the_allowed_names(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"workloads\[2\]\.slo: unknown SLO preset 'mlperf-llama2-7b-server'; "
                                        r"allowed: mlperf-llama2-70b-server, .*distserve-175b"):
        load_experiment(_with_chat_slo(tmp_path, "mlperf-llama2-7b-server"))


@pytest.mark.usefixtures("use_fakes")
def test_a_serving_preset_on_a_training_workload_is_refused(tmp_path: Path) -> None:
    text = FAKE_EXPERIMENT.replace("    slo: {max_slowdown: 1.1, marginal_slowdown: 1.5}",
                                   "    slo: mlperf-llama2-70b-server")
    with pytest.raises(SpecError, match=r"workloads\[0\]\.slo: SLO preset .* training workload needs a mapping"):
        load_experiment(write_experiment(tmp_path, text))
