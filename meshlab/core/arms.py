"""The dataplane arms: the one list every layer checks against."""

from __future__ import annotations

from typing import Literal

Dataplane = Literal["iptables", "ebpf", "ebpf-connect"]
DATAPLANES: tuple[str, ...] = ("iptables", "ebpf", "ebpf-connect")
# The local testbed's eBPF programs: connect/getsockopt redirect, with or without the
# sockops/sk_msg splice of local socket pairs.
EBPF_DATAPLANES: tuple[str, ...] = ("ebpf", "ebpf-connect")
# The cloud testbed switches Merbridge off or on: it has no connect-only variant.
CLOUD_DATAPLANES: tuple[str, ...] = ("iptables", "ebpf")


def needs_ebpf(dataplane: str) -> bool:
    return dataplane in EBPF_DATAPLANES
