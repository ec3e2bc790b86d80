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
- ``--corridor-cluster FILE`` builds every ``corridor_network`` across the servers of that cluster
  file instead of on this machine (docs/cluster.md); pytest must then run where the servers are
  reachable.

Markers (namespaced, so they cannot clash with a project's own ``root`` or ``slow``)
- ``corridor_root``: needs root and Mininet; skipped with the reason when either is missing. Only
  the marker counts: a test that merely has ``root`` in its name or a parameter id is left alone.
- ``corridor_netem``: needs a kernel with sch_netem.
- ``corridor_slow``: takes more than about 20 seconds (deselect with ``-m "not corridor_slow"``).

Measurement helpers live in :mod:`corridor.testing` (``rtt_ms``, ``tcp_goodput_mbps``,
``udp_loss``, ``run_training``, ``run_inference``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from corridor.links.backends import BACKEND_CHOICES


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
    group.addoption("--corridor-backend", default="auto", choices=BACKEND_CHOICES,
                    help="link backend for corridor_network fixtures (default: auto)")
    group.addoption("--corridor-cluster", default=None, metavar="FILE",
                    help="build corridor_network fixtures across this cluster file's servers (docs/cluster.md)")


#: The markers this plugin registers, and nothing else: every project that installs corridor loads it.
MARKERS = {
    "corridor_root": "needs root and Mininet to build a corridor network (network namespaces, tc, veth); "
                     "skipped with the reason otherwise",
    "corridor_netem": "needs a kernel with sch_netem",
    "corridor_slow": "takes more than about 20 seconds",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, meaning in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _root_skip_reason()
    if reason is None:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        # By marker, not keyword: a keyword match would also catch a test named test_root_cause.
        if item.get_closest_marker("corridor_root") is not None:
            item.add_marker(marker)


def _cluster(request: pytest.FixtureRequest) -> Any:
    """The ``--corridor-cluster`` file, validated (a bad one fails the test with the file's own error)."""
    path = request.config.getoption("--corridor-cluster")
    if not path:
        return None
    from corridor.cluster.spec import load_cluster

    return load_cluster(path)


@pytest.fixture
def corridor_backend(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--corridor-backend"))


@pytest.fixture
def corridor_network(corridor_backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Factory fixture: build a corridor network for this test; every one is torn down afterwards."""
    reason = _root_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    from corridor.emulation.network import CorridorNetwork
    from corridor.planning.points import plan_for_topology

    cluster = _cluster(request)
    opened: list[CorridorNetwork] = []

    def make(topology: str, *, backend: str | None = None, time_scale: float = 1.0, **overrides: Any) -> Any:
        plan = plan_for_topology(topology, **overrides)
        if cluster is not None:
            from corridor.cluster.placer import pins_within

            placed = pins_within(plan, cluster)
        net = CorridorNetwork(plan, backend=backend or corridor_backend, time_scale=time_scale,
                              label=f"pytest:{topology}", cluster=placed if cluster is not None else None)
        opened.append(net)
        net.start()
        return net

    try:
        yield make
    finally:
        for net in reversed(opened):
            net.stop()
