"""meshlab/ebpf: pure decisions of the loader (modes, requests, clang flags, CLI parsing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from meshlab.cli import app, ebpf_cmds
from meshlab.ebpf import build, dataplane
from meshlab.errors import MeshlabError

EBPF = {"ml_connect4", "ml_getsockopt", "ml_sockops"}
CONNECT = {"ml_connect4", "ml_getsockopt", "ml_sockops_rec"}


@pytest.mark.parametrize(
    ("names", "mode"),
    [
        (EBPF, "ebpf"),
        (CONNECT, "ebpf-connect"),
        (set(), "off"),
        ({"ml_connect4"}, "mixed"),
        (EBPF | {"ml_sockops_rec"}, "mixed"),
    ],
)
def test_cgroup_mode(names: set[str], mode: str) -> None:
    assert dataplane.cgroup_mode(names) == mode


@pytest.mark.parametrize(
    ("cgroups", "verdict", "mode"),
    [
        ({}, False, "off"),
        ({}, True, "mixed"),  # a verdict with nothing attached: leftovers
        ({"a": EBPF, "b": EBPF}, True, "ebpf"),
        ({"a": EBPF, "b": EBPF}, False, "mixed"),  # no splicing: not really the ebpf arm
        ({"a": CONNECT, "b": CONNECT}, False, "ebpf-connect"),
        ({"a": CONNECT}, True, "mixed"),
        ({"a": EBPF, "b": CONNECT}, True, "mixed"),  # duet pairs in different arms
    ],
)
def test_derive_mode(cgroups: dict, verdict: bool, mode: str) -> None:
    assert dataplane.derive_mode(cgroups, verdict) == mode


def test_every_mode_attaches_one_program_per_cgroup_hook() -> None:
    for progs in dataplane.CGROUP_PROGS.values():
        types = [dataplane.PROGS[name].attach_type for name in progs]
        assert sorted(types) == sorted(dataplane.CGROUP_ATTACH_TYPES)
    assert set(dataplane.CGROUP_PROGS) == set(dataplane.MODES)


@pytest.mark.parametrize(
    ("cgroups", "ips", "mode", "message"),
    [
        ({"c": Path("/cg/c")}, {"c": "198.18.1.10"}, "bpf", "mode must be one of"),
        ({}, {}, "ebpf", "no pod cgroups"),
        ({"c": Path("/cg/c")}, {}, "ebpf", "pod 'c' has a cgroup but no IP"),
        ({"c": Path("/cg/c")}, {"c": "fd00::1"}, "ebpf", "pod 'c': not an IPv4"),
    ],
)
def test_validate_request_names_the_problem(cgroups, ips, mode, message) -> None:
    with pytest.raises(MeshlabError, match=message):
        dataplane.validate_request(cgroups, ips, mode)


def test_pin_layout() -> None:
    pins = dataplane.Pins(Path("/sys/fs/bpf/meshlab"))
    assert pins.prog("ml_sockops_rec") == Path(
        "/sys/fs/bpf/meshlab/progs/mb_sockops/ml_sockops_rec"
    )
    assert pins.map("ml_sock_pairs") == Path("/sys/fs/bpf/meshlab/maps/ml_sock_pairs")


def test_clang_flags() -> None:
    argv = build.clang_argv(Path("a.c"), Path("a.o"), Path("b"), Path("h"), "x86_64")
    assert argv[:3] == ["clang", "-target", "bpf"]
    assert {"-O2", "-g", "-D__TARGET_ARCH_x86", "-Ib", "-Ih"} <= set(argv)
    with pytest.raises(MeshlabError, match="no BPF target arch"):
        build.clang_argv(Path("a.c"), Path("a.o"), Path("b"), Path("h"), "vax")


def test_cli_parses_pods() -> None:
    pods = ebpf_cmds._pods(["client=198.18.1.10=/cg/client", "server=198.18.1.20=/cg/a=b"], 3, "F")
    assert pods == [["client", "198.18.1.10", "/cg/client"], ["server", "198.18.1.20", "/cg/a=b"]]
    with pytest.raises(MeshlabError, match="--pod 'client=/cg': expected NAME=IP=CGROUP"):
        ebpf_cmds._pods(["client=/cg"], 3, "NAME=IP=CGROUP")


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ("server", "--node 'server': expected NAME=N"),
        ("server=two", "--node server=two: N must be a node number"),
        ("server=0", "eBPF attach: pod 'server': node must be 1..255, got 0"),
        ("other=2", "eBPF attach: pod 'other' has a node but no cgroup"),
    ],
)
def test_cli_refuses_a_bad_node(node: str, expected: str) -> None:
    result = CliRunner().invoke(
        app,
        ["ebpf", "attach", "--pod", "server=198.18.1.20=/cg/server", "--node", node],
    )
    assert result.exit_code == 2
    assert result.output.startswith(f"meshlab: error: {expected}")


def test_cli_error_is_one_line_and_exit_2() -> None:
    result = CliRunner().invoke(
        app, ["ebpf", "attach", "--mode", "ebpf", "--pod", "x=not-an-ip=/cg/x"]
    )
    assert result.exit_code == 2
    assert result.output.startswith("meshlab: error: eBPF attach: pod 'x': not an IPv4")
    assert result.output.count("\n") == 1
