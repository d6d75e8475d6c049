"""Opt-in suite against a real cloud cluster, through testinfra's ansible backend.

    pytest tests/cloud --cluster-inventory PATH [--merbridge-state present|absent]

PATH is an Ansible inventory with the Pulumi program's groups (k8s_cluster, kube_control_plane,
kube_node, loadtest, monitoring), e.g. `ansible-inventory -i inventory/ --list > cloud.json`.
Without the option (or MESHLAB_CLUSTER_INVENTORY) every test here is collected and skipped with
that reason: CI has no cloud.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

KUBECTL = "sudo -n /usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster-inventory",
        default=os.environ.get("MESHLAB_CLUSTER_INVENTORY"),
        help="inventory of a cloud testbed built by playbooks/site.yml (enables -m cluster)",
    )
    parser.addoption(
        "--merbridge-state",
        default=os.environ.get("MESHLAB_MERBRIDGE_STATE", "absent"),
        choices=["present", "absent"],
        help="the arm the cluster is expected to be in (default absent, site.yml's default)",
    )


def _inventory(config: pytest.Config) -> str | None:
    # getoption's default covers `pytest tests`, where this conftest is not an initial one.
    return config.getoption("--cluster-inventory", default=None) or os.environ.get(
        "MESHLAB_CLUSTER_INVENTORY"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _inventory(config):
        return
    skip = pytest.mark.skip(
        reason="needs a cloud cluster: pass --cluster-inventory PATH (tests/cloud/conftest.py)"
    )
    for item in items:
        if item.get_closest_marker("cluster"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def inventory(pytestconfig: pytest.Config) -> str:
    path = _inventory(pytestconfig)
    assert path and Path(path).exists(), f"inventory {path!r} not found"
    return path


@pytest.fixture(scope="session")
def expected_merbridge_state(pytestconfig: pytest.Config) -> str:
    return pytestconfig.getoption("--merbridge-state", default="absent")


@pytest.fixture(scope="session")
def groups(inventory: str) -> dict[str, list[str]]:
    from testinfra.utils.ansible_runner import AnsibleRunner

    runner = AnsibleRunner(inventory)
    return {
        g: runner.get_hosts(g)
        for g in ("k8s_cluster", "kube_control_plane", "kube_node", "loadtest", "monitoring")
    }


@pytest.fixture(scope="session")
def host_of(inventory: str) -> Callable[[str], Any]:
    import testinfra

    cache: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in cache:
            cache[name] = testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def control_plane(groups: dict[str, list[str]], host_of: Callable[[str], Any]) -> Any:
    return host_of(groups["kube_control_plane"][0])


@pytest.fixture(scope="session")
def kubectl(control_plane: Any) -> Callable[..., Any]:
    """kubectl on the control plane; returns parsed JSON for `-o json` calls, else the result."""

    def run(*args: str, stdin: str | None = None, check: bool = True) -> Any:
        command = f"{KUBECTL} {' '.join(shlex.quote(a) for a in args)}"
        if stdin is not None:
            command = f"printf %s {shlex.quote(stdin)} | {command}"
        result = control_plane.run(command)
        if check:
            assert result.rc == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        if "-o" in args and args[args.index("-o") + 1] == "json":
            return json.loads(result.stdout)
        return result

    return run
