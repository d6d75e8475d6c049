"""Byte layouts of the eBPF maps' keys and values (pure; mirrors bpf/headers/meshlab.h).

IPv4 addresses are stored in network byte order, ports in host byte order — the
programs normalise the kernel's mixed encodings to exactly this.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
from dataclasses import dataclass

# Host byte order for ports and counters, as the BPF programs see them.
_HOST = "<" if sys.byteorder == "little" else ">"

ORIGIN_OUTBOUND = 1  # app -> 127.0.0.1:15001
ORIGIN_BYPASS = 2  # sidecar -> peer pod IP:15006

# enum ml_stat order in bpf/headers/meshlab.h
STAT_NAMES: tuple[str, ...] = (
    "out_redirect",
    "bypass",
    "pod_unknown",
    "bind_fail",
    "orig_dst_hit",
    "orig_dst_miss",
    "pair_recorded",
    "sockhash_add",
    "sockhash_fail",
    "cross_node",
    "msg_outbound",
    "msg_bypass",
    "msg_inbound",
)


def ip4(addr: str) -> bytes:
    """An IPv4 address as the 4 network-order bytes the maps use."""
    try:
        ip = ipaddress.IPv4Address(addr)
    except ValueError as err:
        raise ValueError(f"not an IPv4 address: {addr!r}") from err
    return ip.packed


def ip4_str(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def u32(value: int) -> bytes:
    return struct.pack(_HOST + "I", value)


def u64(value: int) -> bytes:
    return struct.pack(_HOST + "Q", value)


def read_u64(raw: bytes) -> int:
    return struct.unpack(_HOST + "Q", raw[:8])[0]


@dataclass(frozen=True)
class Pair:
    """struct ml_pair: one TCP connection seen from the socket that owns the key."""

    sip: str
    dip: str
    sport: int
    dport: int

    SIZE = 12

    def encode(self) -> bytes:
        return ip4(self.sip) + ip4(self.dip) + struct.pack(_HOST + "HH", self.sport, self.dport)

    @classmethod
    def decode(cls, raw: bytes) -> Pair:
        if len(raw) != cls.SIZE:
            raise ValueError(f"ml_pair is {cls.SIZE} bytes, got {len(raw)}")
        sport, dport = struct.unpack(_HOST + "HH", raw[8:12])
        return cls(ip4_str(raw[0:4]), ip4_str(raw[4:8]), sport, dport)

    def reversed(self) -> Pair:
        """The peer socket's key (what sk_msg looks up)."""
        return Pair(self.dip, self.sip, self.dport, self.sport)


@dataclass(frozen=True)
class Origin:
    """struct ml_origin: the original destination of a redirected connection."""

    ip: str
    port: int
    flags: int

    SIZE = 8

    def encode(self) -> bytes:
        return ip4(self.ip) + struct.pack(_HOST + "HH", self.port, self.flags)

    @classmethod
    def decode(cls, raw: bytes) -> Origin:
        if len(raw) != cls.SIZE:
            raise ValueError(f"ml_origin is {cls.SIZE} bytes, got {len(raw)}")
        port, flags = struct.unpack(_HOST + "HH", raw[4:8])
        return cls(ip4_str(raw[0:4]), port, flags)


@dataclass(frozen=True)
class Pod:
    """struct ml_pod: a registered pod's IP and the node it runs on (ids start at 1)."""

    ip: str
    node: int = 1

    SIZE = 8

    def encode(self) -> bytes:
        return ip4(self.ip) + u32(self.node)

    @classmethod
    def decode(cls, raw: bytes) -> Pod:
        if len(raw) != cls.SIZE:
            raise ValueError(f"ml_pod is {cls.SIZE} bytes, got {len(raw)}")
        return cls(ip4_str(raw[0:4]), struct.unpack(_HOST + "I", raw[4:8])[0])


def percpu_sum(raw: bytes, value_size: int = 8) -> int:
    """Sum of a per-CPU u64 value as returned by a lookup (one 8-byte-aligned slot per CPU)."""
    stride = (value_size + 7) // 8 * 8
    return sum(read_u64(raw[i : i + 8]) for i in range(0, len(raw) - stride + 1, stride))
