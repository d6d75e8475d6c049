"""infra/inventory.py: the pure inventory builder and its script (--list) form."""

from __future__ import annotations

import shlex

import pytest
from infra_mocks import REPO_ROOT  # noqa: F401  (puts the repository root on sys.path)

from infra.inventory import (
    NodeFacts,
    build_inventory,
    jump_args,
    local_testbed,
    to_script_json,
    with_identity_file,
)

CP = NodeFacts(
    "lab-control-plane-0", "control-plane", ("k8s_cluster", "kube_control_plane"), "10.0.0.10"
)
WORKER = NodeFacts("lab-worker-0", "worker", ("k8s_cluster", "kube_node"), "10.0.0.20", flavor="m1")
LOAD = NodeFacts(
    "lab-loadtest-0", "loadtest", ("k8s_cluster", "kube_node", "loadtest"), "10.0.0.30"
)
MON = NodeFacts("lab-monitoring-0", "monitoring", ("monitoring",), "10.0.0.40", "203.0.113.7")
NODES = [CP, WORKER, LOAD, MON]


def test_groups_and_nesting() -> None:
    children = build_inventory(NODES, "debian", {"meshlab_pod_cidr": "10.244.0.0/16"})["all"][
        "children"
    ]
    assert children == {
        "k8s_cluster": {
            "vars": {"meshlab_pod_cidr": "10.244.0.0/16"},
            "children": {
                "kube_control_plane": {"hosts": {CP.name: {}}},
                "kube_node": {"hosts": {WORKER.name: {}, LOAD.name: {}}},
            },
        },
        "loadtest": {"hosts": {LOAD.name: {}}},
        "monitoring": {"hosts": {MON.name: {}}},
    }


def test_all_vars_mark_the_cloud_testbed() -> None:
    assert build_inventory(NODES, "ubuntu")["all"]["vars"] == {
        "ansible_user": "ubuntu",
        "ansible_python_interpreter": "/usr/bin/python3",
        "meshlab_testbed_name": "cloud",
        "meshlab_bastion": MON.name,
    }


def test_public_node_is_reached_directly_private_ones_through_the_bastion() -> None:
    hosts = build_inventory(NODES, "debian")["all"]["hosts"]
    assert hosts[MON.name] == {
        "ansible_host": "203.0.113.7",
        "meshlab_node_ip": "10.0.0.40",
        "meshlab_node_role": "monitoring",
    }
    worker = hosts[WORKER.name]
    assert worker["ansible_host"] == "10.0.0.20"
    assert worker["meshlab_node_ip"] == "10.0.0.20"
    assert worker["meshlab_flavor"] == "m1"
    assert worker["meshlab_jump"] == "debian@203.0.113.7"
    assert worker["ansible_ssh_common_args"] == jump_args("debian@203.0.113.7")
    for node in (CP, LOAD):
        assert hosts[node.name]["meshlab_jump"] == "debian@203.0.113.7"


def test_jump_args_are_what_ssh_receives() -> None:
    # Ansible shlex-splits ansible_ssh_common_args; ssh then runs the ProxyCommand via a shell.
    argv = shlex.split(jump_args("debian@203.0.113.7", "/keys/my lab key"))
    assert argv[0] == "-o"
    name, _, command = argv[1].partition("=")
    assert name == "ProxyCommand"
    assert shlex.split(command) == [
        "ssh", "-W", "%h:%p", "-q",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-i", "/keys/my lab key",
        "debian@203.0.113.7",
    ]  # fmt: skip
    assert "-i" not in shlex.split(shlex.split(jump_args("u@h"))[1].partition("=")[2])


def test_identity_file_reaches_hosts_and_the_jump_hop() -> None:
    inventory = build_inventory(NODES, "debian")
    keyed = with_identity_file(inventory, "/k/id")
    assert keyed["all"]["vars"]["ansible_ssh_private_key_file"] == "/k/id"
    assert keyed["all"]["hosts"][WORKER.name]["ansible_ssh_common_args"] == jump_args(
        "debian@203.0.113.7", "/k/id"
    )
    assert "ansible_ssh_common_args" not in keyed["all"]["hosts"][MON.name]
    assert keyed["all"]["children"] == inventory["all"]["children"]
    assert "ansible_ssh_private_key_file" not in inventory["all"]["vars"]  # input untouched
    assert build_inventory(NODES, "debian", identity_file="/k/id") == keyed


def test_a_bastion_is_required() -> None:
    with pytest.raises(ValueError, match="bastion"):
        build_inventory([CP, WORKER], "debian")


@pytest.mark.parametrize(
    "groups",
    [("k8s_cluster",), ("kube_node",), ("k8s_cluster", "kube_node", "etcd")],
)
def test_inconsistent_groups_are_refused(groups: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="lab-odd-0"):
        build_inventory([MON, NodeFacts("lab-odd-0", "worker", groups, "10.0.0.9")], "debian")


def test_node_facts_round_trip_the_stack_output() -> None:
    assert [NodeFacts.from_output(n.as_output()) for n in NODES] == NODES
    assert MON.as_output() == {
        "name": MON.name,
        "role": "monitoring",
        "groups": ["monitoring"],
        "private_ip": "10.0.0.40",
        "public_ip": "203.0.113.7",
        "flavor": None,
    }


def test_script_json_form() -> None:
    script = to_script_json(build_inventory(NODES, "debian", {"meshlab_pod_cidr": "p"}))
    assert script["all"]["children"] == ["k8s_cluster", "loadtest", "monitoring"]
    assert script["all"]["vars"]["meshlab_testbed_name"] == "cloud"
    assert sorted(script["all"]["hosts"]) == sorted(n.name for n in NODES)
    assert script["k8s_cluster"] == {
        "vars": {"meshlab_pod_cidr": "p"},
        "children": ["kube_control_plane", "kube_node"],
    }
    assert script["kube_node"] == {"hosts": [WORKER.name, LOAD.name]}
    assert script["loadtest"] == {"hosts": [LOAD.name]}
    assert script["monitoring"] == {"hosts": [MON.name]}
    assert script["_meta"]["hostvars"][LOAD.name]["ansible_host"] == "10.0.0.30"
    assert set(script["_meta"]["hostvars"]) == {n.name for n in NODES}


def test_local_testbed() -> None:
    assert to_script_json(local_testbed()) == {
        "_meta": {
            "hostvars": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                }
            }
        },
        "all": {"children": ["local"]},
        "local": {"hosts": ["localhost"], "vars": {"meshlab_testbed_name": "local"}},
    }


def test_local_testbed_is_the_one_meshlab_runs_by_default() -> None:
    # meshlab.ansible runs playbooks on this same inventory when given none; keep them equal.
    from meshlab.ansible import LOCAL_INVENTORY

    assert local_testbed() == LOCAL_INVENTORY
