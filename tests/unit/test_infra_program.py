"""The whole program under mocks: stack outputs, the entry point, isolation, speed.

Inputs and outputs are read as the engine has them (apis.md §3); every run gets fresh mocks.
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys

import pulumi
from infra_mocks import (
    BASTION_IP,
    FLAVOR,
    INSTANCE,
    NODE_SLUGS,
    REPO_ROOT,
    fresh_engine,
    lab_config,
    mock_ip,
    run_lab,
)

from infra import outputs


def test_outputs_shape() -> None:
    run = run_lab()
    assert set(run.outputs) == {
        outputs.CLUSTER_NAME,
        outputs.NODES,
        outputs.SSH_USER,
        outputs.BASTION,
        outputs.ANSIBLE_INVENTORY,
        outputs.SSH_PRIVATE_KEY,
    }
    assert run.outputs[outputs.SSH_USER] == "debian"
    assert run.outputs[outputs.CLUSTER_NAME] == "meshlab-dev"
    assert run.outputs[outputs.NODES] == [
        {
            "name": f"meshlab-dev-{slug}",
            "role": slug.rsplit("-", 1)[0],
            "groups": groups,
            "private_ip": mock_ip(slug.rsplit("-", 1)[0], 0),
            "public_ip": BASTION_IP if slug.startswith("monitoring") else None,
            "flavor": "m1.large",
        }
        for slug, groups in zip(
            NODE_SLUGS,
            [
                ["k8s_cluster", "kube_control_plane"],
                ["k8s_cluster", "kube_node"],
                ["k8s_cluster", "kube_node", "loadtest"],
                ["monitoring"],
            ],
            strict=True,
        )
    ]
    assert run.outputs[outputs.BASTION] == {
        "name": "meshlab-dev-monitoring-0",
        "private_ip": mock_ip("monitoring", 0),
        "public_ip": BASTION_IP,
    }
    inventory = run.outputs[outputs.ANSIBLE_INVENTORY]["all"]
    assert inventory["vars"]["meshlab_testbed_name"] == "cloud"
    assert inventory["hosts"]["meshlab-dev-monitoring-0"]["ansible_host"] == BASTION_IP
    worker = inventory["hosts"]["meshlab-dev-worker-0"]
    assert worker["ansible_host"] == mock_ip("worker", 0)
    assert f"debian@{BASTION_IP}" in worker["ansible_ssh_common_args"]
    cluster = inventory["children"]["k8s_cluster"]
    assert cluster["vars"]["meshlab_pod_cidr"] == "10.244.0.0/16"
    assert list(cluster["children"]["kube_control_plane"]["hosts"]) == [
        "meshlab-dev-control-plane-0"
    ]
    assert list(inventory["children"]["loadtest"]["hosts"]) == ["meshlab-dev-loadtest-0"]
    json.dumps(run.outputs)  # plain data all the way down: pulumi can store it


def test_entry_point_exports_the_outputs() -> None:
    fresh_engine(lab_config())
    captured: dict = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output:
        runpy.run_path(str(REPO_ROOT / "infra" / "__main__.py"), run_name="meshlab_main")
        stack_outputs = pulumi.runtime.get_root_resource().outputs
        return pulumi.Output.all(**stack_outputs).apply(captured.update)

    program()
    assert set(captured) == {
        "cluster_name",
        "nodes",
        "ssh_user",
        "bastion",
        "ansible_inventory",
        "ssh_private_key",
    }
    assert len(captured["nodes"]) == 4


def test_runs_do_not_leak_into_each_other() -> None:
    big = run_lab({"workerCount": "3", "cpuPinning": "true"})
    small = run_lab()
    assert big.counts()[INSTANCE] == 6 and small.counts()[INSTANCE] == 4
    assert small.counts()[FLAVOR] == 0
    assert len(small.outputs[outputs.NODES]) == 4
    assert pulumi.runtime.get_root_resource() is not None


def test_program_imports_and_runs_under_mocks_in_well_under_a_second() -> None:
    script = (
        "import sys, time; t = time.perf_counter(); "
        f"sys.path.insert(0, {str(REPO_ROOT / 'tests' / 'unit')!r}); "
        "import infra_mocks; run = infra_mocks.run_lab(); "
        "print(time.perf_counter() - t, len(run.mocks.resources))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    seconds, registered = done.stdout.split()
    assert int(registered) == 32
    assert float(seconds) < 1.0, f"import + mock run took {float(seconds):.2f} s"
