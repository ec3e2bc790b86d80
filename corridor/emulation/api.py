"""The interface workload runners use to drive a network, emulated or local.

Stage: emulation. Workload code (training, inference, trace replay) is written
against :class:`Network` only, so the same runner drives a Mininet corridor
(:class:`corridor.emulation.network.CorridorNetwork`, root) or
:class:`LocalNetwork`, where every "host" is this machine's loopback (no root,
no WAN: used by unit tests and as a smoke path).

Ports: agents always listen on ports the runner chose, never on fixed ones, so
several ranks can share one address on a LocalNetwork.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from corridor import CHECKOUT_ROOT


class Network(Protocol):
    """What a workload runner may do with a network."""

    #: "userspace", "netem" or "local"
    backend: str
    #: Time-scale factor k (rates / k, delays and compute x k); 1.0 when unscaled.
    time_scale: float

    def hosts(self) -> list[str]:
        """Names of the traffic hosts."""
        ...

    def host_ip(self, host: str) -> str:
        """The address other hosts use to reach ``host``."""
        ...

    def host_site(self, host: str) -> str:
        """The site name of ``host``."""
        ...

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``'s network namespace; kwargs go to Popen."""
        ...

    def run(self, host: str, argv: Sequence[str], *, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``host`` to completion, capturing text output."""
        ...


def python_argv(module: str, *args: str) -> list[str]:
    """argv that runs ``python -m module args`` with this interpreter and package path."""
    return [sys.executable, "-m", module, *args]


def package_env() -> dict[str, str]:
    """Environment for child processes: makes ``corridor`` importable from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = CHECKOUT_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class LocalNetwork:
    """Every host is this machine's loopback: no root, no emulated WAN.

    ``sites`` maps host name -> site name. Useful for unit tests of agents and
    for a smoke run of a workload on a laptop.
    """

    backend = "local"

    def __init__(self, sites: dict[str, str], *, time_scale: float = 1.0) -> None:
        self._sites = dict(sites)
        self.time_scale = time_scale

    def hosts(self) -> list[str]:
        return list(self._sites)

    def host_ip(self, host: str) -> str:
        self._check(host)
        return "127.0.0.1"

    def host_site(self, host: str) -> str:
        self._check(host)
        return self._sites[host]

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        self._check(host)
        kwargs.setdefault("env", package_env())
        return subprocess.Popen(list(argv), **kwargs)

    def run(self, host: str, argv: Sequence[str], *, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        self._check(host)
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, env=package_env(), check=False
        )

    def _check(self, host: str) -> None:
        if host not in self._sites:
            raise KeyError(f"no host {host!r}; hosts are {', '.join(self._sites)}")
