"""pytest plugin for scripted corridor topology tests (registered as ``pytest11``).

Stage: tooling. Registers the project's markers and skips tests whose needs
(root, Mininet) this machine cannot meet, always saying why.
"""

from __future__ import annotations

import os
import shutil

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root and network namespaces (Mininet, tc, veth)")
    config.addinivalue_line("markers", "netem: needs a kernel with sch_netem")
    config.addinivalue_line("markers", "slow: takes more than about 20 seconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _root_skip_reason()
    if reason is None:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(marker)
