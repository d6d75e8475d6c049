"""The lab's VMs: a server group, and per node a port and an instance booting from a volume.

Only the bastion (the first monitoring node) gets a floating IP; Ansible reaches the other nodes
through it. Each instance's metadata carries its role and Ansible groups, so the cloud's own view
(`openstack server show`) says what the inventory says.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_openstack as openstack

from infra.config import LabConfig
from infra.network import LabNetwork
from infra.topology import NodeSpec

# Minimal on purpose: Ansible does everything else, idempotently and under lint and tests.
USER_DATA = """#cloud-config
ssh_pwauth: false
disable_root: true
package_update: true
packages:
  - python3
"""


class LabNodes(pulumi.ComponentResource):
    """All nodes of the lab; `facts` is the `nodes` stack output (one dict per node)."""

    server_group: openstack.compute.ServerGroup
    ports: dict[str, openstack.networking.Port]
    instances: dict[str, openstack.compute.Instance]
    floating_ip: openstack.networking.FloatingIp
    bastion: NodeSpec
    facts: pulumi.Output[list[dict[str, Any]]]

    def __init__(
        self,
        name: str,
        cfg: LabConfig,
        network: LabNetwork,
        keypair_name: pulumi.Input[str],
        image_id: pulumi.Input[str],
        pinned_flavor: openstack.compute.Flavor | None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("meshlab:openstack:LabNodes", name, None, opts)
        self._cfg, self._network = cfg, network
        self.server_group = openstack.compute.ServerGroup(
            f"{name}-group",
            name=f"{cfg.cluster_name}-nodes",
            policies=cfg.server_group_policy,  # one policy string, as the provider expects it
            opts=pulumi.ResourceOptions(parent=self),
        )
        specs = cfg.nodes()
        self.bastion = next(spec for spec in specs if spec.role == "monitoring")
        self.ports, self.instances = {}, {}
        for spec in specs:
            slug = f"{name}-{spec.role}-{spec.index}"
            self.ports[spec.name] = self._port(slug, spec)
            self.instances[spec.name] = self._instance(
                slug, spec, keypair_name, image_id, pinned_flavor
            )
        self.floating_ip = openstack.networking.FloatingIp(
            f"{name}-bastion-fip",
            pool=cfg.external_network,  # the provider wants the external network's *name* here
            port_id=self.ports[self.bastion.name].id,
            description=f"{cfg.cluster_name}: bastion and monitoring",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[network.router_interface]),
        )
        self.facts = pulumi.Output.all(*[self._facts(spec, pinned_flavor) for spec in specs])
        self.register_outputs({"nodes": self.facts, "bastion_ip": self.floating_ip.address})

    def _port(self, slug: str, spec: NodeSpec) -> openstack.networking.Port:
        cfg = self._cfg
        pairs = None
        if cfg.calico_encapsulation == "none" and "k8s_cluster" in spec.groups:
            # Unencapsulated pod traffic leaves with pod source IPs; port security drops those
            # unless the pod CIDR is an allowed address pair (Calico's OpenStack guidance).
            pairs = [openstack.networking.PortAllowedAddressPairArgs(ip_address=cfg.pod_cidr)]
        return openstack.networking.Port(
            f"{slug}-port",
            name=spec.name,
            network_id=self._network.network.id,
            fixed_ips=[openstack.networking.PortFixedIpArgs(subnet_id=self._network.subnet.id)],
            security_group_ids=self._network.security_group_ids(spec.role),
            allowed_address_pairs=pairs,
            admin_state_up=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _instance(
        self,
        slug: str,
        spec: NodeSpec,
        keypair_name: pulumi.Input[str],
        image_id: pulumi.Input[str],
        pinned_flavor: openstack.compute.Flavor | None,
    ) -> openstack.compute.Instance:
        cfg = self._cfg
        boot = openstack.compute.InstanceBlockDeviceArgs(
            uuid=image_id,
            source_type="image",
            destination_type="volume",
            volume_size=cfg.volume_size_gb,
            volume_type=cfg.volume_type,
            boot_index=0,
            delete_on_termination=True,
        )
        return openstack.compute.Instance(
            slug,
            name=spec.name,
            flavor_name=spec.flavor,
            flavor_id=pinned_flavor.id if spec.flavor is None and pinned_flavor else None,
            key_pair=keypair_name,
            block_devices=[boot],
            networks=[openstack.compute.InstanceNetworkArgs(port=self.ports[spec.name].id)],
            scheduler_hints=[
                openstack.compute.InstanceSchedulerHintArgs(group=self.server_group.id)
            ],
            user_data=USER_DATA,
            metadata={
                "meshlab_cluster": cfg.cluster_name,
                "meshlab_role": spec.role,
                "ansible_groups": ",".join(spec.groups),
            },
            availability_zone=cfg.availability_zone,
            # cloud-init's package step needs the router's external gateway in place.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self._network.router_interface]),
        )

    def _facts(
        self, spec: NodeSpec, pinned_flavor: openstack.compute.Flavor | None
    ) -> pulumi.Output[dict[str, Any]]:
        port = self.ports[spec.name]
        return pulumi.Output.all(
            name=self.instances[spec.name].name,
            role=spec.role,
            groups=list(spec.groups),
            private_ip=port.all_fixed_ips.apply(lambda ips: ips[0]),
            public_ip=self.floating_ip.address if spec == self.bastion else None,
            flavor=spec.flavor if spec.flavor or pinned_flavor is None else pinned_flavor.name,
        )
