"""Which nodes the lab has: roles, the config key that counts each, and their Ansible groups.

Group membership is decided here, once; the instance metadata, the `nodes` output and the
inventory all take it from these tuples.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    """A kind of node: how many come from which key, and the Ansible groups it joins."""

    name: str
    count_key: str
    groups: tuple[str, ...]
    in_cluster: bool  # Kubernetes nodes: measured, so they get the pinned flavor


ROLES: tuple[Role, ...] = (
    Role("control-plane", "controlPlaneCount", ("k8s_cluster", "kube_control_plane"), True),
    Role("worker", "workerCount", ("k8s_cluster", "kube_node"), True),
    Role("loadtest", "loadtestCount", ("k8s_cluster", "kube_node", "loadtest"), True),
    Role("monitoring", "monitoringCount", ("monitoring",), False),
)


@dataclass(frozen=True)
class NodeSpec:
    """One VM to create. `flavor` None means the pinned flavor this stack creates."""

    name: str
    role: str
    index: int
    groups: tuple[str, ...]
    flavor: str | None
