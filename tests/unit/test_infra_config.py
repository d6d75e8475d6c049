"""infra/config.py: the typed schema, defaults, and validation that names the config key."""

from __future__ import annotations

import json

import pytest
import yaml
from infra_mocks import REPO_ROOT, fresh_engine, lab_config, run_program

from infra import config
from infra.config import SCHEMA, ConfigError, parse

BASE = {"image": "debian-12", "flavor": "m1.large", "operatorCidrs": '["198.51.100.0/24"]'}


def parse_with(**overrides: str | None) -> config.LabConfig:
    raw = {**BASE, **overrides}
    return parse({key: value for key, value in raw.items() if value is not None}, stack="dev")


def error_of(**overrides: str | None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_with(**overrides)
    return str(caught.value)


def test_pulumi_yaml_schema_matches_the_program() -> None:
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == config.PROJECT
    assert project["main"] == "infra/"
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": ".venv"},
    }
    declared = project["config"]
    assert set(declared) == set(SCHEMA)
    for key, (kind, default) in SCHEMA.items():
        assert declared[key]["type"] == kind, key
        assert declared[key].get("default") == default, key
        assert len(declared[key]["description"]) > 10, key
        if kind == "array":
            assert declared[key]["items"] == {"type": "string"}, key


def test_defaults_give_the_thesis_shape() -> None:
    cfg = parse_with()
    assert cfg.cluster_name == "meshlab-dev"
    assert [(n.name, n.role, n.flavor) for n in cfg.nodes()] == [
        ("meshlab-dev-control-plane-0", "control-plane", "m1.large"),
        ("meshlab-dev-worker-0", "worker", "m1.large"),
        ("meshlab-dev-loadtest-0", "loadtest", "m1.large"),
        ("meshlab-dev-monitoring-0", "monitoring", "m1.large"),
    ]
    assert cfg.volume_size_gb == 30
    assert cfg.server_group_policy == "anti-affinity"
    assert cfg.operator_cidrs == ("198.51.100.0/24",)
    assert cfg.allow_world is False
    assert cfg.ssh_public_key is None


def test_example_stack_file_is_valid_and_has_the_thesis_shape() -> None:
    example = yaml.safe_load((REPO_ROOT / "Pulumi.example.yaml").read_text())["config"]
    assert example["openstack:cloud"]
    raw = {}
    for key, value in example.items():
        namespace, _, name = key.partition(":")
        if namespace == "meshlab":
            # How Pulumi hands values to the program: arrays as JSON, booleans lowercase.
            raw[name] = json.dumps(value) if isinstance(value, list | bool) else str(value)
    cfg = parse(raw, stack="example")
    roles = [node.role for node in cfg.nodes()]
    assert roles == ["control-plane", "worker", "loadtest", "monitoring"]
    assert cfg.volume_size_gb == 30
    assert cfg.vcpus == 4 and cfg.ram_mb == 8192


def test_groups_per_role() -> None:
    groups = {node.role: node.groups for node in parse_with(workerCount="2").nodes()}
    assert groups == {
        "control-plane": ("k8s_cluster", "kube_control_plane"),
        "worker": ("k8s_cluster", "kube_node"),
        "loadtest": ("k8s_cluster", "kube_node", "loadtest"),
        "monitoring": ("monitoring",),
    }


def test_pinning_gives_cluster_nodes_the_pinned_flavor_and_monitoring_its_own() -> None:
    cfg = parse_with(flavor=None, cpuPinning="true", monitoringFlavor="m1.medium")
    flavors = {node.role: node.flavor for node in cfg.nodes()}
    assert flavors == {
        "control-plane": None,
        "worker": None,
        "loadtest": None,
        "monitoring": "m1.medium",
    }
    only_pinned = parse_with(flavor=None, cpuPinning="true")
    assert {node.flavor for node in only_pinned.nodes()} == {None}


@pytest.mark.parametrize(
    ("overrides", "key", "expected"),
    [
        ({"image": None}, "meshlab:image", "is required"),
        ({"operatorCidrs": None}, "meshlab:operatorCidrs", "is required"),
        ({"operatorCidrs": "[]"}, "meshlab:operatorCidrs", "is required"),
        ({"operatorCidrs": '["0.0.0.0/0"]'}, "meshlab:operatorCidrs", "meshlab:allowWorld"),
        ({"operatorCidrs": '["::/0"]'}, "meshlab:operatorCidrs", "whole internet"),
        ({"operatorCidrs": '["10.0.0.300/24"]'}, "meshlab:operatorCidrs", "not a CIDR"),
        ({"operatorCidrs": '["198.51.100.7/24"]'}, "meshlab:operatorCidrs", "host bits"),
        ({"operatorCidrs": "198.51.100.0/24"}, "meshlab:operatorCidrs", "list of strings"),
        ({"controlPlaneCount": "0"}, "meshlab:controlPlaneCount", "at least 1"),
        ({"workerCount": "0"}, "meshlab:workerCount", "at least 1"),
        ({"loadtestCount": "-1"}, "meshlab:loadtestCount", "at least 1"),
        ({"monitoringCount": "0"}, "meshlab:monitoringCount", "at least 1"),
        ({"workerCount": "two"}, "meshlab:workerCount", "expected integer"),
        ({"flavor": None}, "meshlab:flavor", "meshlab:cpuPinning"),
        ({"subnetCidr": "10.42.0.0/33"}, "meshlab:subnetCidr", "not a CIDR"),
        ({"subnetCidr": "fd00::/64"}, "meshlab:subnetCidr", "IPv4-only"),
        ({"subnetCidr": "10.42.0.0/29"}, "meshlab:subnetCidr", "too few addresses"),
        ({"podCidr": "10.42.0.0/16"}, "meshlab:podCidr", "overlaps meshlab:subnetCidr"),
        ({"serviceCidr": "10.244.0.0/20"}, "meshlab:serviceCidr", "overlaps meshlab:podCidr"),
        ({"dnsNameservers": '["dns.example"]'}, "meshlab:dnsNameservers", "not an IP"),
        ({"calicoEncapsulation": "gre"}, "meshlab:calicoEncapsulation", "ipip, vxlan, none"),
        ({"serverGroupPolicy": "spread"}, "meshlab:serverGroupPolicy", "soft-anti-affinity"),
        ({"cpuThreadPolicy": "any"}, "meshlab:cpuThreadPolicy", "prefer, isolate"),
        ({"cpuPinning": "yes"}, "meshlab:cpuPinning", "true or false"),
        ({"cpuPinning": "true", "vcpus": "1"}, "meshlab:vcpus", "at least 2"),
        ({"cpuPinning": "true", "ramMb": "1024"}, "meshlab:ramMb", "at least 2048"),
        ({"volumeSizeGb": "5"}, "meshlab:volumeSizeGb", "at least 10"),
        ({"sshPublicKey": "AAAAC3Nza"}, "meshlab:sshPublicKey", "OpenSSH public key"),
        ({"sshUser": "Debian User"}, "meshlab:sshUser", "login name"),
        ({"clusterName": "Meshlab_Lab"}, "meshlab:clusterName", "lowercase"),
        ({"externalNetwork": ""}, "meshlab:externalNetwork", "must not be empty"),
    ],
)
def test_bad_values_are_refused_naming_the_key(overrides: dict, key: str, expected: str) -> None:
    message = error_of(**overrides)
    assert f"{key}: " in message
    assert expected in message


def test_world_cidr_is_accepted_only_with_allow_world() -> None:
    cfg = parse_with(operatorCidrs='["0.0.0.0/0"]', allowWorld="true")
    assert cfg.operator_cidrs == ("0.0.0.0/0",)


def test_all_problems_are_reported_at_once() -> None:
    message = error_of(image=None, workerCount="0", serverGroupPolicy="x")
    for key in ("meshlab:image", "meshlab:workerCount", "meshlab:serverGroupPolicy"):
        assert key in message


def test_a_bare_address_is_a_host_cidr() -> None:
    assert parse_with(operatorCidrs='["198.51.100.7"]').operator_cidrs == ("198.51.100.7/32",)


def test_config_error_is_a_clean_pulumi_error() -> None:
    # RunError makes `pulumi up` print the message alone, without a Python traceback.
    import pulumi

    assert issubclass(ConfigError, pulumi.RunError)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"operatorCidrs": '["0.0.0.0/0"]'}, "meshlab:operatorCidrs"),
        ({"workerCount": "0"}, "meshlab:workerCount"),
        ({"flavor": ""}, "meshlab:flavor"),
    ],
)
def test_bad_config_fails_before_any_resource_registers(overrides: dict, key: str) -> None:
    mocks = fresh_engine(lab_config(overrides))
    with pytest.raises(ConfigError, match=key):
        run_program(mocks)
    assert mocks.resources == []
    assert mocks.calls == []
