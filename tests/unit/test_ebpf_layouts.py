"""meshlab/ebpf/layouts.py: byte layouts shared with bpf/headers/meshlab.h, and drift checks
between the C sources and the Python tables that name their maps, programs and counters."""

from __future__ import annotations

import re
import struct
import sys
from pathlib import Path

import pytest

from meshlab.ebpf import dataplane, layouts

BPF = Path(__file__).resolve().parents[2] / "bpf"
LE = sys.byteorder == "little"


def test_ip_is_network_order() -> None:
    assert layouts.ip4("198.18.1.20") == bytes([198, 18, 1, 20])
    assert layouts.ip4_str(bytes([127, 0, 0, 6])) == "127.0.0.6"


@pytest.mark.parametrize("bad", ["", "198.18.1", "::1", "198.18.1.300", "pod"])
def test_ip_rejects_non_ipv4(bad: str) -> None:
    with pytest.raises(ValueError, match="IPv4"):
        layouts.ip4(bad)


def test_pair_layout_is_ips_then_host_order_ports() -> None:
    pair = layouts.Pair("198.18.1.10", "127.0.0.1", 40000, 15001)
    raw = pair.encode()
    assert len(raw) == layouts.Pair.SIZE == 12
    assert raw[:8] == bytes([198, 18, 1, 10, 127, 0, 0, 1])
    assert raw[8:] == struct.pack("=HH", 40000, 15001)  # host order, as the programs store
    if LE:
        assert raw[10:12] == bytes([0x99, 0x3A])  # 15001 little-endian
    assert layouts.Pair.decode(raw) == pair


def test_reversed_pair_is_the_peer_key() -> None:
    pair = layouts.Pair("198.18.1.10", "198.18.1.20", 40000, 15006)
    assert pair.reversed() == layouts.Pair("198.18.1.20", "198.18.1.10", 15006, 40000)
    assert pair.reversed().reversed() == pair


def test_origin_roundtrip_and_size() -> None:
    origin = layouts.Origin("198.19.0.1", 80, layouts.ORIGIN_OUTBOUND)
    raw = origin.encode()
    assert len(raw) == layouts.Origin.SIZE == 8
    assert layouts.Origin.decode(raw) == origin
    with pytest.raises(ValueError, match="8 bytes"):
        layouts.Origin.decode(raw[:6])


def test_pod_roundtrip_and_size() -> None:
    pod = layouts.Pod("198.18.1.20", 2)
    raw = pod.encode()
    assert len(raw) == layouts.Pod.SIZE == 8
    assert raw[:4] == bytes([198, 18, 1, 20]) and layouts.Pod.decode(raw) == pod
    with pytest.raises(ValueError, match="8 bytes"):
        layouts.Pod.decode(raw[:4])


def test_percpu_sum_adds_every_cpu_slot() -> None:
    raw = b"".join(layouts.u64(n) for n in (1, 0, 40, 1))
    assert layouts.percpu_sum(raw) == 42
    assert layouts.percpu_sum(b"") == 0


# --- drift between C and Python --------------------------------------------------------------


def _c(path: str) -> str:
    return (BPF / path).read_text()


def test_counter_names_match_the_enum() -> None:
    enum = re.search(r"enum ml_stat \{(.*?)\};", _c("headers/meshlab.h"), re.S).group(1)
    slots = re.findall(r"ML_STAT_(\w+)", enum)
    assert slots[-1] == "MAX"
    assert [s.lower() for s in slots[:-1]] == list(layouts.STAT_NAMES)


def test_struct_layouts_match_the_header() -> None:
    header = _c("headers/meshlab.h")
    pair = re.search(r"struct ml_pair \{(.*?)\};", header, re.S).group(1)
    assert re.findall(r"__u(\d+) (\w+);", pair) == [
        ("32", "sip"),
        ("32", "dip"),
        ("16", "sport"),
        ("16", "dport"),
    ]
    origin = re.search(r"struct ml_origin \{(.*?)\};", header, re.S).group(1)
    assert re.findall(r"__u(\d+) (\w+);", origin) == [("32", "ip"), ("16", "port"), ("16", "flags")]
    pod = re.search(r"struct ml_pod \{(.*?)\};", header, re.S).group(1)
    assert re.findall(r"__u(\d+) (\w+);", pod) == [("32", "ip"), ("32", "node")]
    assert re.search(r"#define ML_ORIGIN_OUTBOUND (\d+)", header).group(1) == str(
        layouts.ORIGIN_OUTBOUND
    )
    assert re.search(r"#define ML_ORIGIN_BYPASS (\d+)", header).group(1) == str(
        layouts.ORIGIN_BYPASS
    )


def test_loader_knows_every_map_the_programs_declare() -> None:
    declared = re.findall(r"\}\s*(\w+)\s+SEC\(\"\.maps\"\)", _c("headers/maps.h"))
    assert sorted(declared) == sorted(dataplane.MAPS)
    assert all(len(name) < 16 for name in declared)  # the kernel keeps 15 chars of a name


def test_loader_knows_every_program_and_its_object() -> None:
    found = {}
    for src in BPF.glob("mb_*.c"):
        for name in re.findall(r"SEC\(\"[^\"]+\"\)\s*\nint (\w+)\(", src.read_text()):
            found[name] = src.stem
    assert found == {name: prog.obj for name, prog in dataplane.PROGS.items()}
    assert all(len(name) < 16 for name in found)
