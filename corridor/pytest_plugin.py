"""pytest plugin for scripted corridor topology tests (registered as ``pytest11``).

Stage: tooling. Install corridor and these are available in any test suite::

    import pytest

    @pytest.mark.corridor_root
    def test_urumqi_beijing_rtt(corridor_network):
        net = corridor_network("xinjiang-coastal")          # built now, torn down after the test
        rtt = net_rtt_ms(net, "urm-gpu1", "bj-cli1")
        assert rtt.median < 50

Fixtures
- ``corridor_network``: a factory ``(topology, backend="auto", time_scale=1.0, **overrides)`` that
  builds a :class:`corridor.emulation.network.CorridorNetwork` and always tears it down,
  whatever the test did (failed assertion, exception, Ctrl-C).
- ``corridor_backend``: the backend the tests should use (``--corridor-backend``, default auto).

Markers
- ``corridor_root`` (alias ``root``): needs root and Mininet; skipped with the reason when missing.
- ``netem``, ``slow``: as the project uses them.

Measurement helpers live in :mod:`corridor.testing` (``rtt_ms``, ``tcp_goodput_mbps``,
``udp_loss``, ``run_training``, ``run_inference``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def _root_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: network namespaces, tc and Mininet (run pytest as root)"
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        return "needs Mininet's Python module (apt install mininet; use a venv with --system-site-packages)"
    if shutil.which("mnexec") is None:
        return "needs mnexec on PATH (apt install mininet)"
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("corridor")
    group.addoption("--corridor-backend", default="auto", choices=("auto", "netem", "userspace"),
                    help="link backend for corridor_network fixtures (default: auto)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root and network namespaces (Mininet, tc, veth)")
    config.addinivalue_line("markers", "corridor_root: needs root and Mininet to build a corridor network")
    config.addinivalue_line("markers", "netem: needs a kernel with sch_netem")
    config.addinivalue_line("markers", "slow: takes more than about 20 seconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _root_skip_reason()
    if reason is None:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if "root" in item.keywords or "corridor_root" in item.keywords:
            item.add_marker(marker)


@pytest.fixture
def corridor_backend(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--corridor-backend"))


@pytest.fixture
def corridor_network(corridor_backend: str) -> Iterator[Callable[..., Any]]:
    """Factory fixture: build a corridor network for this test; every one is torn down afterwards."""
    reason = _root_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    from corridor.emulation.network import CorridorNetwork
    from corridor.planner import build_plan
    from corridor.spec import load_topology, override_links

    opened: list[CorridorNetwork] = []

    def make(topology: str, *, backend: str | None = None, time_scale: float = 1.0, **overrides: Any) -> Any:
        spec = load_topology(topology)
        if overrides:
            spec = override_links(spec, **overrides)
        net = CorridorNetwork(build_plan(spec), backend=backend or corridor_backend, time_scale=time_scale,
                              label=f"pytest:{topology}")
        opened.append(net)
        net.start()
        return net

    try:
        yield make
    finally:
        for net in reversed(opened):
            net.stop()
