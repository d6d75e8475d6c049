"""The lab network: private network + subnet, a router to the external network, security groups.

Ingress policy (`ingress_rules`, plain data so tests read the same policy the resources get):
SSH, the Kubernetes API, Grafana and Prometheus only from the operator CIDRs; TCP/UDP/ICMP between
lab nodes; Calico's encapsulation as configured. Nothing else. Egress keeps Neutron's default
allow-all rules: nodes fetch packages and images.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_openstack as openstack

from infra.config import LabConfig

# Security groups: which ports each one opens to the operator, and which roles carry it.
OPERATOR_PORTS: dict[str, tuple[tuple[str, int], ...]] = {
    "ssh": (("SSH", 22),),
    "kube-api": (("Kubernetes API", 6443),),
    "monitoring": (("Grafana", 3000), ("Prometheus", 9090)),
}
ROLE_GROUPS: dict[str, tuple[str, ...]] = {
    "control-plane": ("internal", "ssh", "kube-api"),
    "worker": ("internal", "ssh"),
    "loadtest": ("internal", "ssh"),
    "monitoring": ("internal", "ssh", "monitoring"),
}
# Calico's node-to-node dataplane (docs: "Configure IP-in-IP / VXLAN encapsulation"). BGP
# (TCP 179) carries routes in the ipip and none modes; VXLAN mode needs no BGP.
CALICO_RULES: dict[str, tuple[tuple[str, str, int | None], ...]] = {
    "ipip": (("Calico BGP", "tcp", 179), ("Calico IP-in-IP", "ipip", None)),
    "vxlan": (("Calico VXLAN", "udp", 4789),),
    "none": (("Calico BGP", "tcp", 179),),
}


@dataclass(frozen=True)
class Rule:
    """One ingress rule: from a CIDR (`remote_ip_prefix`) or from members of `internal`."""

    group: str
    description: str
    protocol: str
    port_min: int | None = None
    port_max: int | None = None
    remote_ip_prefix: str | None = None

    @property
    def ethertype(self) -> str:
        if self.remote_ip_prefix is None:
            return "IPv4"
        return f"IPv{ipaddress.ip_network(self.remote_ip_prefix).version}"

    @property
    def slug(self) -> str:
        port = f"-{self.port_min}" if self.port_min is not None else ""
        source = (self.remote_ip_prefix or "nodes").replace("/", "_").replace(":", "-")
        return f"{self.group}-{self.protocol}{port}-from-{source}"


def ingress_rules(cfg: LabConfig) -> list[Rule]:
    """Every ingress rule the lab opens, in a stable order."""
    rules = []
    for group, ports in OPERATOR_PORTS.items():
        for description, port in ports:
            text = f"{description} from the operator"
            rules += [Rule(group, text, "tcp", port, port, cidr) for cidr in cfg.operator_cidrs]
    rules += [
        Rule("internal", "TCP between lab nodes", "tcp", 1, 65535),
        Rule("internal", "UDP between lab nodes", "udp", 1, 65535),
        Rule("internal", "ICMP between lab nodes", "icmp"),
    ]
    for description, protocol, port in CALICO_RULES[cfg.calico_encapsulation]:
        rules.append(Rule("internal", description, protocol, port, port))
    return rules


class LabNetwork(pulumi.ComponentResource):
    """Network, subnet, router with its external gateway, and the lab's security groups."""

    network: openstack.networking.Network
    subnet: openstack.networking.Subnet
    router_interface: openstack.networking.RouterInterface
    security_groups: dict[str, openstack.networking.SecGroup]

    def __init__(self, name: str, cfg: LabConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("meshlab:openstack:LabNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        prefix = cfg.cluster_name
        self.network = openstack.networking.Network(
            f"{name}-net", name=f"{prefix}-net", admin_state_up=True, opts=child
        )
        self.subnet = openstack.networking.Subnet(
            f"{name}-subnet",
            name=f"{prefix}-subnet",
            network_id=self.network.id,
            cidr=cfg.subnet_cidr,
            ip_version=4,
            enable_dhcp=True,
            dns_nameservers=list(cfg.dns_nameservers) or None,
            opts=child,
        )
        external = openstack.networking.get_network_output(
            name=cfg.external_network, external=True, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        router = openstack.networking.Router(
            f"{name}-router",
            name=f"{prefix}-router",
            external_network_id=external.id,
            admin_state_up=True,
            opts=child,
        )
        self.router_interface = openstack.networking.RouterInterface(
            f"{name}-router-if", router_id=router.id, subnet_id=self.subnet.id, opts=child
        )
        self.security_groups = {
            group: openstack.networking.SecGroup(
                f"{name}-sg-{group}",
                name=f"{prefix}-{group}",
                description=_SG_DESCRIPTIONS[group],
                opts=child,
            )
            for group in ("internal", *OPERATOR_PORTS)
        }
        for rule in ingress_rules(cfg):
            self._add(name, rule)
        self.register_outputs(
            {
                "network_id": self.network.id,
                "subnet_id": self.subnet.id,
                "security_group_ids": {g: sg.id for g, sg in self.security_groups.items()},
            }
        )

    def _add(self, name: str, rule: Rule) -> None:
        internal = self.security_groups["internal"]
        openstack.networking.SecGroupRule(
            f"{name}-rule-{rule.slug}",
            security_group_id=self.security_groups[rule.group].id,
            direction="ingress",
            ethertype=rule.ethertype,
            protocol=rule.protocol,
            port_range_min=rule.port_min,
            port_range_max=rule.port_max,
            remote_ip_prefix=rule.remote_ip_prefix,
            remote_group_id=None if rule.remote_ip_prefix else internal.id,
            description=rule.description,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def security_group_ids(self, role: str) -> list[pulumi.Output[str]]:
        """The security groups a node of `role` carries on its port."""
        return [self.security_groups[group].id for group in ROLE_GROUPS[role]]


_SG_DESCRIPTIONS = {
    "internal": "meshlab: all TCP/UDP/ICMP and Calico's dataplane between lab nodes",
    "ssh": "meshlab: SSH from the operator CIDRs",
    "kube-api": "meshlab: Kubernetes API from the operator CIDRs",
    "monitoring": "meshlab: Grafana and Prometheus from the operator CIDRs",
}
