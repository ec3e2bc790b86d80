"""Shared fixtures: the repository root, and the shared data folder when it exists."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the checkout (real traces); tests using it skip when it is absent."""
    path = REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"no shared data folder at {path} (it holds the real Azure trace sample)")
    return path
