"""One validation toolkit: every document and parameter block names the nearest allowed key or choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from corridor.errors import SpecError
from corridor.spec.experiment import load_experiment
from corridor.spec.validate import check_choice, check_keys, did_you_mean
from corridor.workloads import registry

QUICKSTART = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.yaml"


def test_did_you_mean() -> None:
    assert did_you_mean("rtae", ["rate", "delay"]) == "did you mean 'rate'? "
    assert did_you_mean("zzz", ["rate", "delay"]) == ""


def test_keys_and_choices_name_the_nearest() -> None:
    with pytest.raises(SpecError, match=r"x.yaml: sweep.rtae: unknown key 'rtae'; did you mean 'rate'\? allowed"):
        check_keys({"rtae": 1}, {"rate", "delay"}, path="x.yaml", where="sweep")
    with pytest.raises(SpecError, match="did you mean 'cubic'"):
        check_choice("cubik", ("bbr", "cubic", "reno"), path="x.yaml", key="cc")


@pytest.mark.parametrize(("old", "new", "hint"), [
    ("topology: two-site", "topolgy: two-site", "did you mean 'topology'"),  # experiment top level
    ("    params: {steps: 20,", "    params: {stpes: 20,", "did you mean 'steps'"),  # training parameters
    ("params: {requests: 80,", "params: {reqests: 80,", "did you mean 'requests'"),  # inference parameters
    ("slo: {ttft: 250ms, tpot: 100ms, percentile: 90, goodput: 0.9}\n    max_ranks: 1\n    placements: "
     "[urumqi-serves-shanghai]\n    timeout: 60s\n  - name: agentic",
     "slo: {ttft: 250ms, tpot: 100ms, percentle: 90, goodput: 0.9}\n    max_ranks: 1\n    placements: "
     "[urumqi-serves-shanghai]\n    timeout: 60s\n  - name: agentic", "did you mean 'percentile'"),  # SLO block
])
def test_every_block_of_an_experiment_suggests(tmp_path: Path, old: str, new: str, hint: str) -> None:
    text = QUICKSTART.read_text()
    assert old in text
    path = tmp_path / "q.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(SpecError, match=hint):
        load_experiment(str(path))


def test_an_slo_in_params_is_refused_not_ignored() -> None:
    with pytest.raises(SpecError, match="slo block"):
        registry.get("inference").validate({"pattern": "chat", "slo_ttft_s": 1.0}, where="x.yaml")


@pytest.mark.parametrize(("override", "key"), [("rate: 10mbps", "overrides.rate"), ("loss: 2", "overrides.loss"),
                                               ("links: [no-such-link]", "overrides.links")])
def test_a_bad_override_fails_at_load_naming_the_experiment(tmp_path: Path, override: str, key: str) -> None:
    text = QUICKSTART.read_text().replace("topology: two-site\n", f"topology: two-site\noverrides: {{{override}}}\n")
    path = tmp_path / "q.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_experiment(str(path))
    assert str(info.value).startswith(f"{path}: {key}: "), str(info.value)
