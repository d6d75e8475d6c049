"""The dedicated-CPU flavor, created only when `cpuPinning: true`.

Pinned vCPUs (`hw:cpu_policy=dedicated`) stop the noisy neighbours and CPU steal that made the
thesis' numbers unusable; emulator threads go to their own pCPU and the guest stays on one NUMA
node. Creating flavors needs admin rights in most clouds (docs/cloud.md says what to do without).
The flavor is private and shared with this project only.
"""

from __future__ import annotations

import pulumi
import pulumi_openstack as openstack

from infra.config import LabConfig


def extra_specs(cfg: LabConfig) -> dict[str, str]:
    return {
        "hw:cpu_policy": "dedicated",
        "hw:cpu_thread_policy": cfg.cpu_thread_policy,
        "hw:emulator_threads_policy": "isolate",
        "hw:numa_nodes": "1",
    }


class PinnedFlavor(pulumi.ComponentResource):
    """A private flavor with dedicated vCPUs, and access to it for the current project."""

    flavor: openstack.compute.Flavor

    def __init__(self, name: str, cfg: LabConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("meshlab:openstack:PinnedFlavor", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.flavor = openstack.compute.Flavor(
            f"{name}-flavor",
            name=f"{cfg.cluster_name}-pinned-{cfg.vcpus}c{cfg.ram_mb // 1024}g",
            vcpus=cfg.vcpus,
            ram=cfg.ram_mb,
            disk=0,  # nodes boot from volume; 0 lets any volume size through
            is_public=False,
            extra_specs=extra_specs(cfg),
            opts=child,
        )
        scope = openstack.identity.get_auth_scope_output(
            name="current", opts=pulumi.InvokeOutputOptions(parent=self)
        )
        openstack.compute.FlavorAccess(
            f"{name}-access", flavor_id=self.flavor.id, tenant_id=scope.project_id, opts=child
        )
        self.register_outputs({"flavor_id": self.flavor.id, "flavor_name": self.flavor.name})
