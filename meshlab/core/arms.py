"""The dataplane arms: the one list every layer checks against."""

from __future__ import annotations

from typing import Literal

Dataplane = Literal["no-mesh", "iptables", "ebpf", "ebpf-connect"]
DATAPLANES: tuple[str, ...] = ("no-mesh", "iptables", "ebpf", "ebpf-connect")
# The floor: the same pods and pinning with no capture and no eBPF, so k6 reaches nginx
# directly through kube-proxy's DNAT; the sidecars keep running, idle. No mTLS, no policy.
NO_MESH = "no-mesh"
# The local testbed's eBPF programs: connect/getsockopt redirect, with or without the
# sockops/sk_msg splice of local socket pairs.
EBPF_DATAPLANES: tuple[str, ...] = ("ebpf", "ebpf-connect")
# The cloud testbed switches Merbridge off or on: it has no connect-only variant, no floor.
CLOUD_DATAPLANES: tuple[str, ...] = ("iptables", "ebpf")


def needs_ebpf(dataplane: str) -> bool:
    return dataplane in EBPF_DATAPLANES


def is_mesh(dataplane: str) -> bool:
    """Every arm but the floor carries mesh traffic through the sidecars (mTLS, policy)."""
    return dataplane != NO_MESH
