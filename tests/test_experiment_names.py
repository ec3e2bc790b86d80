"""Experiment, placement, workload, tenant and role names are strict: no escaping runs/, no colliding point ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_experiment_fakes import FAKE_EXPERIMENT, use_fakes  # noqa: F401

from corridor.errors import SpecError
from corridor.spec.experiment import load_experiment

pytestmark = pytest.mark.usefixtures("use_fakes")

BAD_NAMES = ["/tmp/evil", "../up", "a|b", ".hidden", "x" * 65, "two words", "tab\there", "semi;colon", "é"]

#: Where a name sits in the fake experiment: (text to replace, its replacement with NAME, key in the error).
SLOTS = {
    "experiment": ("name: fake", "name: NAME", "name"),
    "placement": ("name: urumqi-serves-shanghai", "name: NAME", "placements[1].name"),
    "workload": ("name: diloco", "name: NAME", "workloads[1].name"),
    "tenant": ("name: chat-with-dp", "name: NAME", "tenants[0].name"),
    "role": ("ranks: [remote, city]", "ranks: [remote, city]\n    roles: {NAME: [remote]}", "placements[1].roles"),
}


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "names.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("slot", sorted(SLOTS))
@pytest.mark.parametrize("bad", BAD_NAMES)
def test_unsafe_names_are_refused_naming_the_key(tmp_path: Path, slot: str, bad: str) -> None:
    old, new, key = SLOTS[slot]
    assert old in FAKE_EXPERIMENT
    text = FAKE_EXPERIMENT.replace(old, new.replace("NAME", json.dumps(bad)), 1)  # a JSON string is YAML too
    with pytest.raises(SpecError, match=rf"names\.yaml: {re.escape(key)}.*is not a safe name"):
        load_experiment(_write(tmp_path, text))


@pytest.mark.parametrize("good", ["chat+dp-sync", "hami-115k", "Run_2.v3", "x" * 64])
def test_safe_names_load(tmp_path: Path, good: str) -> None:
    text = FAKE_EXPERIMENT.replace("name: chat-with-dp", f"name: '{good}'").replace("name: fake", f"name: '{good}'")
    exp = load_experiment(_write(tmp_path, text))
    assert exp.name == good and exp.tenants[0].name == good


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("servers: [remote]", "servers: [hami]", "placements[1].servers"),
        ("clients: [city]", "clients: [city, moon]", "placements[1].clients"),
        ("ranks: [remote, city]", "ranks: [remote, cty]", "placements[1].ranks"),
        ("ranks: [remote, city]", "ranks: [remote, city]\n    roles: {prefill: [mars]}", "placements[1].roles.prefill"),
    ],
)
def test_placement_sites_are_checked_against_the_topology_at_load(tmp_path: Path, old: str, new: str,
                                                                   key: str) -> None:
    text = FAKE_EXPERIMENT.replace(old, new, 1)
    with pytest.raises(SpecError, match=rf"names\.yaml: {re.escape(key)}: no site .* in topology two-site; "
                                        r"its sites: city, remote"):
        load_experiment(_write(tmp_path, text))
