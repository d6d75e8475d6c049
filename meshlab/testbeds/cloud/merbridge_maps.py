"""What of Merbridge 0.8.1 is on a node, read from the trial agent's bpftool output.

The agent (roles/trial_agent) records `bpftool -j cgroup show /sys/fs/cgroup`, `bpftool -j map
show` and `bpftool -j map dump id N` of Merbridge's maps; this module turns those into typed
records. Every layout, name and size comes from meshlab/testbeds/cloud/facts
(merbridge-0.8.1.yml: the
Makefile's `bpftool map create` sizes and bpf/headers/helpers.h's structs; bpftool-7.1.0.yml: the
JSON shapes): a map whose sizes differ from the facts is refused rather than misread.

Pure: no I/O beyond reading the facts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from meshlab.testbeds.cloud import upstream

NAME_LEN = upstream.value("bpftool", "obj_name_len") - 1  # the kernel keeps 15 characters


class DumpError(ValueError):
    """A recorded dump that does not have the shape the facts say (names the map and entry)."""


@dataclass(frozen=True)
class Attachment:
    """A program attached to a node's root cgroup, as bpftool listed it."""

    prog_id: int
    attach_type: str  # bpftool's command-line name (connect4, sock_ops, ...)
    name: str
    merbridge: bool


@dataclass(frozen=True)
class CgroupInfo:
    cgroup_id: int
    is_in_mesh: int
    key_hex: str  # the entry's key as `bpftool map delete ... key hex` wants it


@dataclass(frozen=True)
class Origin:
    ip: str
    port: int
    pid: int
    flags: int


@dataclass(frozen=True)
class Pair:
    sip: str
    dip: str
    sport: int
    dport: int


def _same_name(kernel_name: str, full_name: str) -> bool:
    """bpftool shows either the kernel's 15-character name or the BTF function name."""
    return kernel_name == full_name or kernel_name == full_name[:NAME_LEN]


@cache
def _attach_names() -> dict[str, str]:
    """bpftool 7.1.0's attach type names (libbpf's) -> the command-line names the facts use."""
    libbpf = upstream.value("bpftool", "attach_type_names")
    return {v: k for k, v in libbpf.items()} | {k: k for k in libbpf}


def attachments(cgroup_show: Sequence[Mapping[str, Any]]) -> list[Attachment]:
    """`bpftool -j cgroup show /sys/fs/cgroup` -> attachments, Merbridge's marked."""
    expected = {
        a["attach"]: a["function"] for a in upstream.value("merbridge", "cgroup_attachments")
    }
    out = []
    for row in cgroup_show:
        attach = _attach_names().get(str(row.get("attach_type")), str(row.get("attach_type")))
        name = str(row.get("name", ""))
        ours = attach in expected and _same_name(name, expected[attach])
        out.append(Attachment(int(row["id"]), attach, name, ours))
    return out


def merbridge_map_names() -> dict[str, dict[str, Any]]:
    return upstream.value("merbridge", "pinned_maps")


def find_maps(map_show: Iterable[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Map ids per Merbridge map name, from `bpftool -j map show` (names cut to 15 characters);
    a map of that name with other key/value sizes is not Merbridge's and is left out."""
    found: dict[str, list[int]] = {}
    for row in map_show:
        for name, spec in merbridge_map_names().items():
            if _same_name(str(row.get("name", "")), name) and (
                row.get("bytes_key"),
                row.get("bytes_value"),
            ) == (spec["key"], spec["value"]):
                found.setdefault(name, []).append(int(row["id"]))
    return found


def _bytes(cells: Sequence[Any], want: int, what: str) -> bytes:
    try:
        data = bytes(int(str(c), 16) for c in cells)
    except (TypeError, ValueError) as err:
        raise DumpError(f"{what}: not bpftool's hex bytes ({err})") from None
    if len(data) != want:
        raise DumpError(f"{what}: {len(data)} bytes, the facts say {want}")
    return data


def _fields(layout_fact: str, data: bytes) -> dict[str, bytes]:
    return {
        f["field"]: data[f["offset"] : f["offset"] + f["size"]]
        for f in upstream.value("merbridge", layout_fact)
    }


def _ipv4(word16: bytes) -> str:
    """An IPv4 address kept as the last u32 of a u32[4], in network order (set_ipv4)."""
    return str(ipaddress.IPv4Address(word16[12:16]))


def _entries(dump: Sequence[Mapping[str, Any]], name: str) -> Iterable[tuple[int, bytes, bytes]]:
    spec = merbridge_map_names()[name]
    for i, entry in enumerate(dump):
        if not isinstance(entry, Mapping) or "key" not in entry or "value" not in entry:
            raise DumpError(f"{name} entry {i}: no key/value (bpftool -j map dump shape)")
        key = _bytes(entry["key"], spec["key"], f"{name} entry {i} key")
        value = _bytes(entry["value"], spec["value"], f"{name} entry {i} value")
        yield i, key, value


def cgroup_info(dump: Sequence[Mapping[str, Any]]) -> dict[int, CgroupInfo]:
    """cgroup_info_map: cgroup id -> what Merbridge decided at that cgroup's first connect."""
    out = {}
    for i, key, value in _entries(dump, "cgroup_info_map"):
        f = _fields("cgroup_info_layout", value)
        cgroup_id = int.from_bytes(key, "little")
        if int.from_bytes(f["id"], "little") != cgroup_id:
            raise DumpError(f"cgroup_info_map entry {i}: value id differs from key {cgroup_id}")
        out[cgroup_id] = CgroupInfo(
            cgroup_id, int.from_bytes(f["is_in_mesh"], "little"), " ".join(f"{b:02x}" for b in key)
        )
    return out


def process_ip(dump: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """process_ip: tgid -> the pod IP sockops learned for that process."""
    return {
        int.from_bytes(key, "little"): str(ipaddress.IPv4Address(value))
        for _, key, value in _entries(dump, "process_ip")
    }


def local_pod_ips(dump: Sequence[Mapping[str, Any]]) -> set[str]:
    """local_pod_ips: the meshed pods' IPs the controller registered on this node."""
    return {_ipv4(key) for _, key, _ in _entries(dump, "local_pod_ips")}


def pair_original_dst(dump: Sequence[Mapping[str, Any]]) -> dict[Pair, Origin]:
    """pair_original_dst: socket pair -> the destination its connect asked for."""
    out = {}
    for _, key, value in _entries(dump, "pair_original_dst"):
        k, v = _fields("pair_layout", key), _fields("origin_info_layout", value)
        pair = Pair(
            _ipv4(k["sip"]), _ipv4(k["dip"]),
            int.from_bytes(k["sport"], "big"), int.from_bytes(k["dport"], "big"),
        )  # fmt: skip
        out[pair] = Origin(
            _ipv4(v["ip"]),
            int.from_bytes(v["port"], "big"),
            int.from_bytes(v["pid"], "little"),
            int.from_bytes(v["flags"], "little"),
        )
    return out


def in_rewrite_range(ip: str) -> bool:
    """The 127.128.0.0/12 destinations connect4 rewrites app connects to (pod IP unknown)."""
    net = upstream.value("merbridge", "legacy_outbound_rewrite")["network"]
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(net)
