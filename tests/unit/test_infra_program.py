"""The Pulumi program under mocks: the resource graph, the inputs the provider gets, outputs.

Inputs are read as the engine received them (wire names, camelCase), which is what the real
provider checks; see ../shared/research/apis.md §3.
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from collections import Counter

import pulumi
import pytest
from infra_mocks import (
    BASTION_IP,
    EXTERNAL_NET_ID,
    FLAVOR,
    FLAVOR_ACCESS,
    FLOATING_IP,
    IMAGE_ID,
    INSTANCE,
    KEYPAIR,
    MOCK_PRIVATE_KEY,
    NETWORK,
    PORT,
    PRIVATE_KEY,
    PROJECT_ID,
    REPO_ROOT,
    ROUTER,
    ROUTER_INTERFACE,
    SEC_GROUP,
    SEC_GROUP_RULE,
    SERVER_GROUP,
    SUBNET,
    fresh_engine,
    lab_config,
    mock_ip,
    run_lab,
)

from infra import outputs

NODE_SLUGS = ["control-plane-0", "worker-0", "loadtest-0", "monitoring-0"]
SG = {g: f"network-sg-{g}-id" for g in ("internal", "ssh", "kube-api", "monitoring")}


def counts(run) -> Counter:
    return Counter(r.typ for r in run.mocks.resources)


def ingress(run) -> set[tuple]:
    """(group id, protocol, min, max, source) of every rule; source is a CIDR or a group id."""
    rules = run.mocks.of_type(SEC_GROUP_RULE)
    assert all(r.inputs["direction"] == "ingress" for r in rules)
    return {
        (
            r.inputs["securityGroupId"],
            r.inputs["protocol"],
            r.inputs.get("portRangeMin"),
            r.inputs.get("portRangeMax"),
            r.inputs.get("remoteIpPrefix") or r.inputs.get("remoteGroupId"),
        )
        for r in rules
    }


def test_default_graph_counts() -> None:
    run = run_lab()
    assert counts(run) == {
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
    assert counts(run)[SEC_GROUP_RULE] == 4 * 2 + 5
    assert counts(run)[FLOATING_IP] == 1  # only the bastion is public


def test_network_subnet_router() -> None:
    run = run_lab({"dnsNameservers": '["9.9.9.9"]'})
    assert run.mocks.named("network-net").inputs["name"] == "meshlab-dev-net"
    subnet = run.mocks.named("network-subnet").inputs
    assert subnet["cidr"] == "10.42.0.0/24"
    assert subnet["ipVersion"] == 4
    assert subnet["networkId"] == "network-net-id"
    assert subnet["dnsNameservers"] == ["9.9.9.9"]
    assert run.mocks.named("network-router").inputs["externalNetworkId"] == EXTERNAL_NET_ID
    router_if = run.mocks.named("network-router-if").inputs
    assert router_if == {"routerId": "network-router-id", "subnetId": "network-subnet-id"}
    (lookup,) = [c for c in run.mocks.calls if c.token.endswith("getNetwork")]
    assert lookup.args == {"name": "public", "external": True}


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


def test_ingress_rules_default() -> None:
    op = "198.51.100.0/24"
    assert ingress(run_lab()) == {
        (SG["ssh"], "tcp", 22, 22, op),
        (SG["kube-api"], "tcp", 6443, 6443, op),
        (SG["monitoring"], "tcp", 3000, 3000, op),
        (SG["monitoring"], "tcp", 9090, 9090, op),
        (SG["internal"], "tcp", 1, 65535, SG["internal"]),
        (SG["internal"], "udp", 1, 65535, SG["internal"]),
        (SG["internal"], "icmp", None, None, SG["internal"]),
        (SG["internal"], "tcp", 179, 179, SG["internal"]),
        (SG["internal"], "ipip", None, None, SG["internal"]),
    }


def test_no_ingress_is_open_to_the_world_by_default() -> None:
    run = run_lab({"operatorCidrs": '["198.51.100.0/24", "2001:db8::/48"]'})
    for rule in run.mocks.of_type(SEC_GROUP_RULE):
        source = rule.inputs.get("remoteIpPrefix")
        if source is None:
            assert rule.inputs["remoteGroupId"] == SG["internal"], rule.name
            continue
        assert source in ("198.51.100.0/24", "2001:db8::/48"), rule.name
        assert rule.inputs["ethertype"] == ("IPv6" if ":" in source else "IPv4"), rule.name
        assert rule.inputs["protocol"] == "tcp" and rule.inputs["portRangeMin"] in (
            22,
            6443,
            3000,
            9090,
        )


def test_world_is_open_only_when_allowed() -> None:
    run = run_lab({"operatorCidrs": '["0.0.0.0/0"]', "allowWorld": "true"})
    world = [r for r in run.mocks.of_type(SEC_GROUP_RULE) if r.inputs.get("remoteIpPrefix")]
    assert {r.inputs["remoteIpPrefix"] for r in world} == {"0.0.0.0/0"}
    assert len(world) == 4


@pytest.mark.parametrize(
    ("mode", "calico"),
    [
        ("vxlan", {(SG["internal"], "udp", 4789, 4789, SG["internal"])}),
        ("none", {(SG["internal"], "tcp", 179, 179, SG["internal"])}),
    ],
)
def test_calico_rules_follow_encapsulation(mode: str, calico: set) -> None:
    rules = ingress(run_lab({"calicoEncapsulation": mode}))
    base = {
        (SG["internal"], "tcp", 1, 65535, SG["internal"]),
        (SG["internal"], "udp", 1, 65535, SG["internal"]),
        (SG["internal"], "icmp", None, None, SG["internal"]),
    }
    assert {r for r in rules if r[-1] == SG["internal"]} == base | calico


def test_ports_carry_their_roles_security_groups() -> None:
    run = run_lab()
    expected = {
        "control-plane-0": [SG["internal"], SG["ssh"], SG["kube-api"]],
        "worker-0": [SG["internal"], SG["ssh"]],
        "loadtest-0": [SG["internal"], SG["ssh"]],
        "monitoring-0": [SG["internal"], SG["ssh"], SG["monitoring"]],
    }
    for slug, groups in expected.items():
        port = run.mocks.named(f"nodes-{slug}-port").inputs
        assert port["securityGroupIds"] == groups, slug
        assert port["networkId"] == "network-net-id"
        assert port["fixedIps"] == [{"subnetId": "network-subnet-id"}]
        assert "allowedAddressPairs" not in port


def test_unencapsulated_calico_allows_pod_ips_on_cluster_ports_only() -> None:
    run = run_lab({"calicoEncapsulation": "none"})
    for slug in NODE_SLUGS:
        pairs = run.mocks.named(f"nodes-{slug}-port").inputs.get("allowedAddressPairs")
        if slug.startswith("monitoring"):
            assert pairs is None
        else:
            assert pairs == [{"ipAddress": "10.244.0.0/16"}], slug


def test_floating_ip_only_on_the_bastion() -> None:
    run = run_lab()
    (fip,) = run.mocks.of_type(FLOATING_IP)
    assert fip.inputs["pool"] == "public"  # the provider wants the network *name*
    assert fip.inputs["portId"] == "nodes-monitoring-0-port-id"


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
    assert counts(run)[FLAVOR] == 0 and counts(run)[FLAVOR_ACCESS] == 0
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
    assert counts(run)[PRIVATE_KEY] == 0
    (keypair,) = run.mocks.of_type(KEYPAIR)
    assert keypair.inputs == {"name": "lab-a", "publicKey": public}
    assert outputs.SSH_PRIVATE_KEY not in run.outputs
    assert run.mocks.named("nodes-worker-0").inputs["name"] == "lab-a-worker-0"


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
    assert inventory["vars"]["meshlab_testbed_kind"] == "k8s"
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
    assert counts(big)[INSTANCE] == 6 and counts(small)[INSTANCE] == 4
    assert counts(small)[FLAVOR] == 0
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
