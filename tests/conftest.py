"""Suite-wide rules: root-only tests fail loudly when not run as root (CI is root); they are
never silently skipped."""

from __future__ import annotations

import os

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    needs_root = item.get_closest_marker("root") or item.get_closest_marker("testbed")
    if needs_root and os.geteuid() != 0:
        pytest.fail(
            "this test needs root (namespaces, iptables, cgroups, eBPF): run as root", False
        )
