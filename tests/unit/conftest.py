"""Fixtures shared by the cluster tests (the render takes a few seconds: once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_render import render


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every cluster role template rendered with its defaults and the pinned versions."""
    return render(tmp_path_factory.mktemp("rendered"))
