"""Compose the lab from its components and compute the stack outputs (no side effects)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_openstack as openstack

from infra import outputs
from infra.config import LabConfig
from infra.flavor import PinnedFlavor
from infra.inventory import NodeFacts, build_inventory
from infra.keys import LabKeypair
from infra.network import LabNetwork
from infra.nodes import LabNodes


@dataclass(frozen=True)
class Lab:
    cfg: LabConfig
    network: LabNetwork
    keypair: LabKeypair
    pinned: PinnedFlavor | None
    nodes: LabNodes
    outputs: dict[str, pulumi.Output[Any]]


def build(cfg: LabConfig) -> Lab:
    """Declare every resource of the lab; `cfg` is already validated."""
    network = LabNetwork("network", cfg)
    keypair = LabKeypair("ssh", cfg)
    pinned = PinnedFlavor("pinned", cfg) if cfg.cpu_pinning else None
    nodes = LabNodes(
        "nodes",
        cfg,
        network,
        keypair_name=keypair.keypair.name,
        image_id=_image_id(cfg),
        pinned_flavor=pinned.flavor if pinned else None,
    )
    return Lab(cfg, network, keypair, pinned, nodes, _outputs(cfg, nodes, keypair))


def export(lab: Lab) -> None:
    for key, value in lab.outputs.items():
        pulumi.export(key, value)


def cluster_vars(cfg: LabConfig) -> dict[str, str]:
    """Group vars of `k8s_cluster`: what the cluster roles must agree on with the network."""
    return {
        "meshlab_cluster_name": cfg.cluster_name,
        "meshlab_pod_cidr": cfg.pod_cidr,
        "meshlab_service_cidr": cfg.service_cidr,
        "meshlab_calico_encapsulation": cfg.calico_encapsulation,
    }


def _outputs(cfg: LabConfig, nodes: LabNodes, keypair: LabKeypair) -> dict[str, pulumi.Output[Any]]:
    def inventory(entries: list[dict[str, Any]]) -> dict[str, Any]:
        facts = [NodeFacts.from_output(entry) for entry in entries]
        return build_inventory(facts, cfg.ssh_user, cluster_vars(cfg))

    def bastion(entries: list[dict[str, Any]]) -> dict[str, Any]:
        entry = next(e for e in entries if e["name"] == nodes.bastion.name)
        return {key: entry[key] for key in ("name", "private_ip", "public_ip")}

    result: dict[str, pulumi.Output[Any]] = {
        outputs.CLUSTER_NAME: pulumi.Output.from_input(cfg.cluster_name),
        outputs.NODES: nodes.facts,
        outputs.SSH_USER: pulumi.Output.from_input(cfg.ssh_user),
        outputs.BASTION: nodes.facts.apply(bastion),
        outputs.ANSIBLE_INVENTORY: nodes.facts.apply(inventory),
    }
    if keypair.private_key is not None:
        result[outputs.SSH_PRIVATE_KEY] = keypair.private_key
    return result


def _image_id(cfg: LabConfig) -> pulumi.Input[str]:
    """The boot volume's source image: `image` as given if it is an ID, else looked up by name."""
    try:
        return str(uuid.UUID(cfg.image))
    except ValueError:
        image = openstack.images.get_image_output(name=cfg.image, most_recent=True)
        return image.id
