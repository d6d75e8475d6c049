"""Fixtures shared by the cluster tests (the render takes a few seconds: once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cloud_render import render


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every cluster role template rendered with its defaults and the pinned versions."""
    return render(tmp_path_factory.mktemp("rendered"))


@pytest.fixture(autouse=True)
def _no_host_lease(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests drive the engine on synthetic runs; the host's testbed lease (held by a real
    run, or by nobody) is not theirs to check or take. test_lease tests the lease itself."""
    if request.module.__name__ != "test_lease":
        from meshlab.testbeds.local import LocalTestbed, lease

        monkeypatch.setattr(lease, "require_held", lambda *a, **k: None)
        monkeypatch.setattr(lease, "release_playbook_run", lambda *a, **k: False)
        monkeypatch.setattr(LocalTestbed, "hold", lambda self, run: None)
