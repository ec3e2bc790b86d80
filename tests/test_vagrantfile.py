"""The Vagrantfile parses and provisions through the same setup script CI uses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_vagrantfile_is_valid_ruby() -> None:
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.skip("ruby is not installed (scripts/setup.sh --test installs it)")
    result = subprocess.run([ruby, "-c", str(REPO / "Vagrantfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Syntax OK" in result.stdout


def test_vagrant_provisions_with_the_ci_setup_script() -> None:
    vagrantfile = (REPO / "Vagrantfile").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    provision = re.findall(r"bash (/corridor/)?scripts/setup\.sh", vagrantfile)
    assert provision, "the Vagrantfile provisions with scripts/setup.sh"
    assert "bash scripts/setup.sh" in ci
    # No second copy of the install steps: the VM installs no packages of its own.
    assert "apt-get" not in vagrantfile and "pip install" not in vagrantfile
    assert "ubuntu-24.04" in vagrantfile or "ubuntu2404" in vagrantfile
    assert 'provider "virtualbox"' in vagrantfile and 'provider "libvirt"' in vagrantfile


def test_the_cluster_example_is_two_vms_provisioned_alike_and_named_in_its_cluster_file() -> None:
    from corridor.cluster.spec import load_cluster

    vagrantfile = (REPO / "clusters" / "vagrant" / "Vagrantfile").read_text()
    ruby = shutil.which("ruby")
    if ruby is not None:
        result = subprocess.run([ruby, "-c", str(REPO / "clusters" / "vagrant" / "Vagrantfile")],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
    assert "bash /corridor/scripts/setup.sh" in vagrantfile and "apt-get" not in vagrantfile
    addresses = dict(re.findall(r'"(s\d)" => "([\d.]+)"', vagrantfile))
    assert len(addresses) == 2 and 'private_network", ip: address' in vagrantfile
    cluster = load_cluster(REPO / "clusters" / "vagrant" / "cluster.yaml")
    assert {s.name: s.address for s in cluster.servers} == addresses
    assert all(s.python == "/opt/corridor-venv/bin/python" for s in cluster.servers)
    assert all(s.key_path == "/root/.ssh/corridor_cluster" for s in cluster.servers)
    assert "/root/.ssh/corridor_cluster" in vagrantfile
