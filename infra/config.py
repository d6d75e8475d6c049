"""Stack configuration: read once, validated before any resource exists, frozen.

`SCHEMA` mirrors the typed `config:` block of Pulumi.yaml (a unit test keeps the two equal). The
CLI applies Pulumi.yaml's defaults for a real stack; `parse` applies the same ones so that mocks and
`Pulumi.example.yaml` behave exactly like a deployed stack. Every error names its config key.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from infra.topology import ROLES, NodeSpec

PROJECT = "meshlab"

# key -> (Pulumi.yaml type, default); None means required (no default in Pulumi.yaml).
# Optional strings default to "" because a typed Pulumi.yaml key without a default is required.
SCHEMA: dict[str, tuple[str, Any]] = {
    "clusterName": ("string", ""),
    "image": ("string", None),
    "sshUser": ("string", "debian"),
    "sshPublicKey": ("string", ""),
    "externalNetwork": ("string", "public"),
    "operatorCidrs": ("array", None),
    "allowWorld": ("boolean", False),
    "subnetCidr": ("string", "10.42.0.0/24"),
    "dnsNameservers": ("array", []),
    "podCidr": ("string", "10.244.0.0/16"),
    "serviceCidr": ("string", "10.96.0.0/12"),
    "calicoEncapsulation": ("string", "ipip"),
    "controlPlaneCount": ("integer", 1),
    "workerCount": ("integer", 1),
    "loadtestCount": ("integer", 1),
    "monitoringCount": ("integer", 1),
    "flavor": ("string", ""),
    "monitoringFlavor": ("string", ""),
    "cpuPinning": ("boolean", False),
    "cpuThreadPolicy": ("string", "prefer"),
    "vcpus": ("integer", 4),
    "ramMb": ("integer", 8192),
    "volumeSizeGb": ("integer", 30),
    "volumeType": ("string", ""),
    "serverGroupPolicy": ("string", "anti-affinity"),
    "availabilityZone": ("string", ""),
}

SERVER_GROUP_POLICIES = ("anti-affinity", "soft-anti-affinity", "affinity", "soft-affinity")
CALICO_ENCAPSULATIONS = ("ipip", "vxlan", "none")
CPU_THREAD_POLICIES = ("prefer", "isolate", "require")
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com")  # fmt: skip
# A host name is "<clusterName>-control-plane-<n>" and must stay a 63-character DNS label.
CLUSTER_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
SSH_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Kubernetes nodes and kubeadm's preflight floor (2 CPUs, 1700 MB); boot volumes hold images too.
MIN_VCPUS, MIN_RAM_MB, MIN_VOLUME_GB = 2, 2048, 10


class ConfigError(pulumi.RunError):
    """Invalid stack configuration. RunError: pulumi prints the message, not a traceback."""


@dataclass(frozen=True)
class LabConfig:
    cluster_name: str
    image: str
    ssh_user: str
    ssh_public_key: str | None
    external_network: str
    operator_cidrs: tuple[str, ...]
    allow_world: bool
    subnet_cidr: str
    dns_nameservers: tuple[str, ...]
    pod_cidr: str
    service_cidr: str
    calico_encapsulation: str
    counts: tuple[tuple[str, int], ...]  # (role name, count) in ROLES order
    flavor: str | None
    monitoring_flavor: str | None
    cpu_pinning: bool
    cpu_thread_policy: str
    vcpus: int
    ram_mb: int
    volume_size_gb: int
    volume_type: str | None
    server_group_policy: str
    availability_zone: str | None

    def count(self, role: str) -> int:
        return dict(self.counts)[role]

    def nodes(self) -> list[NodeSpec]:
        """The VMs in a stable order: control plane first, bastion (first monitoring node) last."""
        specs = []
        for role in ROLES:
            flavor = self.flavor if role.in_cluster else (self.monitoring_flavor or self.flavor)
            if self.cpu_pinning and (role.in_cluster or not flavor):
                flavor = None
            for i in range(self.count(role.name)):
                name = f"{self.cluster_name}-{role.name}-{i}"
                specs.append(NodeSpec(name, role.name, i, role.groups, flavor))
        return specs


def load() -> LabConfig:
    """Read the stack's `meshlab:*` config once (the only place that reads config)."""
    cfg = pulumi.Config(PROJECT)
    return parse({key: cfg.get(key) for key in SCHEMA}, stack=pulumi.get_stack())


def parse(raw: Mapping[str, str | None], stack: str) -> LabConfig:
    """Typed, validated config from raw strings as Pulumi stores them (arrays as JSON)."""
    reader = _Reader(raw)
    values = {key: reader.read(key) for key in SCHEMA}
    checks: list[Callable[[dict[str, Any], _Reader], None]] = [
        _check_names, _check_operator_cidrs, _check_networks, _check_counts, _check_compute,
    ]  # fmt: skip
    for check in checks:
        check(values, reader)
    if reader.errors:
        raise ConfigError("invalid stack configuration: " + "; ".join(reader.errors))
    return LabConfig(
        cluster_name=values["clusterName"] or f"{PROJECT}-{stack}".lower(),
        image=values["image"],
        ssh_user=values["sshUser"],
        ssh_public_key=values["sshPublicKey"] or None,
        external_network=values["externalNetwork"],
        operator_cidrs=tuple(values["operatorCidrs"]),
        allow_world=values["allowWorld"],
        subnet_cidr=values["subnetCidr"],
        dns_nameservers=tuple(values["dnsNameservers"]),
        pod_cidr=values["podCidr"],
        service_cidr=values["serviceCidr"],
        calico_encapsulation=values["calicoEncapsulation"],
        counts=tuple((role.name, values[role.count_key]) for role in ROLES),
        flavor=values["flavor"] or None,
        monitoring_flavor=values["monitoringFlavor"] or None,
        cpu_pinning=values["cpuPinning"],
        cpu_thread_policy=values["cpuThreadPolicy"],
        vcpus=values["vcpus"],
        ram_mb=values["ramMb"],
        volume_size_gb=values["volumeSizeGb"],
        volume_type=values["volumeType"] or None,
        server_group_policy=values["serverGroupPolicy"],
        availability_zone=values["availabilityZone"] or None,
    )


class _Reader:
    """Turns raw strings into typed values, collecting one message per bad key."""

    def __init__(self, raw: Mapping[str, str | None]) -> None:
        self.raw = raw
        self.errors: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.errors.append(f"{PROJECT}:{key}: {message}")

    def read(self, key: str) -> Any:
        kind, default = SCHEMA[key]
        text = self.raw.get(key)
        value = default
        if text is not None:
            try:
                value = _PARSERS[kind](text)
            except ValueError as err:
                self.fail(key, f"expected {kind}, got {text!r} ({err})")
                return _EMPTY[kind] if default is None else default
        if default is None and value in (None, "", []):
            self.fail(key, f"is required ({_EXAMPLES[key]})")
            return _EMPTY[kind]
        return list(value) if isinstance(value, list) else value


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError("use true or false")
    return lowered == "true"


def _parse_array(text: str) -> list[str]:
    value = json.loads(text) if text.strip().startswith("[") else None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("a YAML list of strings")
    return [item.strip() for item in value]


_PARSERS: dict[str, Callable[[str], Any]] = {
    "string": str.strip,
    "integer": int,
    "boolean": _parse_bool,
    "array": _parse_array,
}
_EMPTY: dict[str, Any] = {"string": "", "integer": 0, "boolean": False, "array": []}
_EXAMPLES = {
    "image": "the Glance image name or ID to boot, e.g. debian-12-genericcloud-amd64",
    "operatorCidrs": "the CIDRs you connect from, e.g. [203.0.113.0/24]",
}


def _network(reader: _Reader, key: str, text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        reader.fail(key, f"{text!r} is not a CIDR ({err})")
        raise


def _check_names(values: dict[str, Any], reader: _Reader) -> None:
    name = values["clusterName"]
    if name and not CLUSTER_NAME_RE.match(name):
        reader.fail("clusterName", f"{name!r}: use 2-40 lowercase letters, digits and '-'")
    if not SSH_USER_RE.match(values["sshUser"]):
        reader.fail("sshUser", f"{values['sshUser']!r} is not a login name (the image's user)")
    key = values["sshPublicKey"]
    if key and key.split()[0] not in SSH_KEY_TYPES:
        reader.fail("sshPublicKey", "expected an OpenSSH public key, e.g. 'ssh-ed25519 AAAA...'")
    if not values["externalNetwork"]:
        reader.fail("externalNetwork", "must not be empty: the network floating IPs come from")


def _check_operator_cidrs(values: dict[str, Any], reader: _Reader) -> None:
    normalized = []
    for text in values["operatorCidrs"]:
        try:
            net = _network(reader, "operatorCidrs", text)
        except ValueError:
            continue
        if net.prefixlen == 0 and not values["allowWorld"]:
            reader.fail(
                "operatorCidrs",
                f"{text} opens SSH, the Kubernetes API, Grafana and Prometheus to the whole "
                f"internet; list your own CIDRs, or set {PROJECT}:allowWorld true to mean it",
            )
        normalized.append(str(net))
    values["operatorCidrs"] = normalized


def _check_networks(values: dict[str, Any], reader: _Reader) -> None:
    nets = {}
    for key in ("subnetCidr", "podCidr", "serviceCidr"):
        try:
            net = _network(reader, key, values[key])
        except ValueError:
            continue
        if net.version != 4:
            reader.fail(key, f"{values[key]} is IPv6; the lab is IPv4-only")
            continue
        nets[key] = net
    for i, (key_a, net_a) in enumerate(nets.items()):
        for key_b, net_b in list(nets.items())[i + 1 :]:
            if net_a.overlaps(net_b):
                reader.fail(key_b, f"{net_b} overlaps {PROJECT}:{key_a} {net_a}")
    subnet = nets.get("subnetCidr")
    wanted = sum(values[role.count_key] for role in ROLES)
    # Neutron keeps the network/broadcast addresses, the gateway and a few DHCP/router ports.
    if subnet is not None and subnet.num_addresses - 8 < wanted:
        reader.fail("subnetCidr", f"{subnet} has too few addresses for {wanted} nodes")
    for server in values["dnsNameservers"]:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            reader.fail("dnsNameservers", f"{server!r} is not an IP address")
    if values["calicoEncapsulation"] not in CALICO_ENCAPSULATIONS:
        reader.fail("calicoEncapsulation", f"expected one of {', '.join(CALICO_ENCAPSULATIONS)}")


def _check_counts(values: dict[str, Any], reader: _Reader) -> None:
    for role in ROLES:
        if values[role.count_key] < 1:
            reader.fail(role.count_key, f"needs at least 1 {role.name} node")


def _check_compute(values: dict[str, Any], reader: _Reader) -> None:
    if not values["cpuPinning"] and not values["flavor"]:
        reader.fail(
            "flavor",
            f"set it to an existing flavor name (4 vCPU / 8 GB for the thesis' shape), "
            f"or set {PROJECT}:cpuPinning true to create a dedicated-CPU flavor",
        )
    if values["cpuThreadPolicy"] not in CPU_THREAD_POLICIES:
        reader.fail("cpuThreadPolicy", f"expected one of {', '.join(CPU_THREAD_POLICIES)}")
    if values["cpuPinning"] and values["vcpus"] < MIN_VCPUS:
        reader.fail("vcpus", f"kubeadm needs at least {MIN_VCPUS} vCPUs per node")
    if values["cpuPinning"] and values["ramMb"] < MIN_RAM_MB:
        reader.fail("ramMb", f"kubeadm needs at least {MIN_RAM_MB} MB per node")
    if values["volumeSizeGb"] < MIN_VOLUME_GB:
        reader.fail("volumeSizeGb", f"at least {MIN_VOLUME_GB} GB: the OS plus container images")
    if values["serverGroupPolicy"] not in SERVER_GROUP_POLICIES:
        reader.fail("serverGroupPolicy", f"expected one of {', '.join(SERVER_GROUP_POLICIES)}")
