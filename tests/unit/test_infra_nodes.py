"""LabNodes, the keypair and the pinned flavor under mocks: what each VM is built from."""

from __future__ import annotations

import pytest
from infra_mocks import (
    FLAVOR,
    FLAVOR_ACCESS,
    FLOATING_IP,
    IMAGE_ID,
    INSTANCE,
    KEYPAIR,
    MOCK_PRIVATE_KEY,
    NETWORK,
    NODE_SLUGS,
    PORT,
    PRIVATE_KEY,
    PROJECT_ID,
    ROUTER,
    ROUTER_INTERFACE,
    SEC_GROUP,
    SEC_GROUP_RULE,
    SERVER_GROUP,
    SUBNET,
    run_lab,
)

from infra import outputs


def test_default_graph_counts() -> None:
    run = run_lab()
    assert run.counts() == {
        "meshlab:openstack:LabNetwork": 1,
        "meshlab:openstack:LabKeypair": 1,
        "meshlab:openstack:LabNodes": 1,
        NETWORK: 1,
        SUBNET: 1,
        ROUTER: 1,
        ROUTER_INTERFACE: 1,
        SEC_GROUP: 4,
        SEC_GROUP_RULE: 4 + 3 + 2,  # operator ports x 1 CIDR, TCP/UDP/ICMP, BGP + IP-in-IP
        SERVER_GROUP: 1,
        PORT: 4,
        INSTANCE: 4,
        FLOATING_IP: 1,
        KEYPAIR: 1,
        PRIVATE_KEY: 1,
    }


def test_counts_follow_config() -> None:
    run = run_lab(
        {
            "workerCount": "3",
            "loadtestCount": "2",
            "monitoringCount": "2",
            "operatorCidrs": '["198.51.100.0/24", "2001:db8::/48"]',
        }
    )
    instances = [r.name for r in run.mocks.of_type(INSTANCE)]
    slugs = ["control-plane-0", "worker-0", "worker-1", "worker-2", "loadtest-0", "loadtest-1"]
    assert instances == sorted(f"nodes-{s}" for s in [*slugs, "monitoring-0", "monitoring-1"])
    assert run.counts()[SEC_GROUP_RULE] == 4 * 2 + 5
    assert run.counts()[FLOATING_IP] == 1  # only the bastion is public


def test_instances_boot_from_30gb_volumes() -> None:
    run = run_lab()
    (image_lookup,) = [c for c in run.mocks.calls if c.token.endswith("getImage")]
    assert image_lookup.args == {"name": "debian-12-genericcloud-amd64", "mostRecent": True}
    for vm in run.mocks.of_type(INSTANCE):
        assert vm.inputs["blockDevices"] == [
            {
                "uuid": IMAGE_ID,
                "sourceType": "image",
                "destinationType": "volume",
                "volumeSize": 30,
                "bootIndex": 0,
                "deleteOnTermination": True,
            }
        ], vm.name


def test_volume_size_type_and_image_id_from_config() -> None:
    image = "0d5e8a1c-0c4b-4f5e-9d3a-6f1e2b3c4d5e"
    run = run_lab({"volumeSizeGb": "80", "volumeType": "ssd", "image": image})
    assert not [c for c in run.mocks.calls if c.token.endswith("getImage")]
    for vm in run.mocks.of_type(INSTANCE):
        (device,) = vm.inputs["blockDevices"]
        assert (device["uuid"], device["volumeSize"], device["volumeType"]) == (image, 80, "ssd")


def test_instance_names_flavors_keys_networks_metadata() -> None:
    run = run_lab()
    groups = {
        "control-plane-0": "k8s_cluster,kube_control_plane",
        "worker-0": "k8s_cluster,kube_node",
        "loadtest-0": "k8s_cluster,kube_node,loadtest",
        "monitoring-0": "monitoring",
    }
    for slug in NODE_SLUGS:
        vm = run.mocks.named(f"nodes-{slug}").inputs
        assert vm["name"] == f"meshlab-dev-{slug}"
        assert vm["flavorName"] == "m1.large"
        assert "flavorId" not in vm
        assert vm["keyPair"] == "meshlab-dev"
        assert vm["networks"] == [{"port": f"nodes-{slug}-port-id"}]
        assert vm["schedulerHints"] == [{"group": "nodes-group-id"}]
        assert vm["metadata"] == {
            "meshlab_cluster": "meshlab-dev",
            "meshlab_role": slug.rsplit("-", 1)[0],
            "ansible_groups": groups[slug],
        }
        assert vm["userData"].startswith("#cloud-config\n")
        assert "securityGroups" not in vm  # they live on the ports


def test_cloud_init_is_minimal_yaml() -> None:
    import yaml

    from infra.nodes import USER_DATA

    assert yaml.safe_load(USER_DATA) == {
        "ssh_pwauth": False,
        "disable_root": True,
        "package_update": True,
        "packages": ["python3"],
    }


@pytest.mark.parametrize(
    "policy", ["anti-affinity", "soft-anti-affinity", "affinity", "soft-affinity"]
)
def test_server_group_policy_is_one_string(policy: str) -> None:
    run = run_lab({"serverGroupPolicy": policy})
    (group,) = run.mocks.of_type(SERVER_GROUP)
    # The provider takes `policies` as a single string; a list passes mocks but fails Check.
    assert group.inputs == {"name": "meshlab-dev-nodes", "policies": policy}


def test_pinned_flavor_extra_specs_and_use() -> None:
    run = run_lab({"flavor": "", "cpuPinning": "true", "cpuThreadPolicy": "isolate"})
    (flavor,) = run.mocks.of_type(FLAVOR)
    assert flavor.inputs == {
        "name": "meshlab-dev-pinned-4c8g",
        "vcpus": 4,
        "ram": 8192,
        "disk": 0,
        "isPublic": False,
        "extraSpecs": {
            "hw:cpu_policy": "dedicated",
            "hw:cpu_thread_policy": "isolate",
            "hw:emulator_threads_policy": "isolate",
            "hw:numa_nodes": "1",
        },
    }
    (access,) = run.mocks.of_type(FLAVOR_ACCESS)
    assert access.inputs == {"flavorId": "pinned-flavor-id", "tenantId": PROJECT_ID}
    for vm in run.mocks.of_type(INSTANCE):
        assert vm.inputs["flavorId"] == "pinned-flavor-id", vm.name
        assert "flavorName" not in vm.inputs
    assert {n["flavor"] for n in run.outputs[outputs.NODES]} == {"meshlab-dev-pinned-4c8g"}


def test_pinning_keeps_an_explicit_monitoring_flavor() -> None:
    run = run_lab({"cpuPinning": "true", "monitoringFlavor": "m1.medium", "vcpus": "8"})
    assert run.mocks.named("pinned-flavor").inputs["vcpus"] == 8
    monitoring = run.mocks.named("nodes-monitoring-0").inputs
    assert monitoring["flavorName"] == "m1.medium" and "flavorId" not in monitoring
    assert run.mocks.named("nodes-worker-0").inputs["flavorId"] == "pinned-flavor-id"


def test_no_flavor_is_created_without_pinning() -> None:
    run = run_lab()
    assert run.counts()[FLAVOR] == 0 and run.counts()[FLAVOR_ACCESS] == 0
    assert not [c for c in run.mocks.calls if c.token.endswith("getAuthScope")]


def test_generated_keypair_exports_a_secret_private_key() -> None:
    run = run_lab()
    (key,) = run.mocks.of_type(PRIVATE_KEY)
    assert key.inputs == {"algorithm": "ED25519"}
    (keypair,) = run.mocks.of_type(KEYPAIR)
    assert keypair.inputs == {"name": "meshlab-dev", "publicKey": "ssh-ed25519 AAAAmock"}
    assert run.outputs[outputs.SSH_PRIVATE_KEY] == MOCK_PRIVATE_KEY
    assert run.secret_outputs == {outputs.SSH_PRIVATE_KEY}


def test_imported_public_key_generates_nothing() -> None:
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKey operator@laptop"
    run = run_lab({"sshPublicKey": public, "clusterName": "lab-a"})
    assert run.counts()[PRIVATE_KEY] == 0
    (keypair,) = run.mocks.of_type(KEYPAIR)
    assert keypair.inputs == {"name": "lab-a", "publicKey": public}
    assert outputs.SSH_PRIVATE_KEY not in run.outputs
    assert run.mocks.named("nodes-worker-0").inputs["name"] == "lab-a-worker-0"
