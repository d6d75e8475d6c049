"""`down` leaves nothing behind: no namespace, rule, process, cgroup, pin or file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from meshlab.testbeds.local import commands

pytestmark = [pytest.mark.root, pytest.mark.testbed, pytest.mark.slow]


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def test_down_leaves_nothing_then_up_restores(testbed):
    # In the eBPF arm with a flood, so that programs, pins, raw rules and 100k rules all exist.
    commands.set_dataplane("ebpf")
    commands.set_flood("50x500")
    doc = testbed.status
    assert doc["ebpf"]["loaded"] and Path("/sys/fs/bpf/meshlab").exists()
    cgroup_parent = Path(doc["pods"]["client"]["cgroup"]).parents[1]
    daemon_pids = [pid for pod in doc["pods"].values() for pid in pod["pids"]]
    assert daemon_pids

    commands.down()

    assert "meshlab-" not in _run("ip", "netns", "list")
    assert not (cgroup_parent / "meshlab").exists()
    assert not Path("/run/meshlab").exists()
    assert not Path("/sys/fs/bpf/meshlab").exists()
    for pid in daemon_pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} survived down"
    saved = _run("iptables-save")
    assert "KUBE-" not in saved and "ISTIO_" not in saved
    assert "veth-" not in _run("ip", "-o", "link", "show")
    assert "meshlab" not in _run("bpftool", "cgroup", "tree")
    assert "ml_" not in _run("bpftool", "prog", "show")  # no program of ours is still loaded
    # A second down is a no-op, not an error.
    assert commands.down().changed == 0

    commands.up()
    assert testbed.curl("client", testbed.status["server_url"])[0] == "200"
