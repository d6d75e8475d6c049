"""The arm-integrity gate on doctored trials (issue 21): the path evidence is read from the real
testbed's counters exactly as a trial step reads it (testbeds/local/paths.py) and judged by the
trial's judge (trial/path.py). Real trials' evidence is checked by tests/e2e/test_sweep_run.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from meshlab import ebpf
from meshlab.testbeds.local import commands, paths
from meshlab.testbeds.local import state as tb_state
from meshlab.trial import path

pytestmark = [pytest.mark.root, pytest.mark.testbed]


def _finish(running) -> int:
    """Requests k6 measured; a doctored arm may fail some of them (k6 still exits 0)."""
    return running.wait()["http_reqs{scenario:measure}"]["count"]


def test_ebpf_detached_from_a_pod_during_the_window_is_rejected(ebpf_arm, load):
    """The client pod loses its programs mid-window. (The server keeps its own, so the maps
    stay pinned and the counters readable: with every pod detached they are unpinned, read as
    no change, and the hops' carriers fail instead.)"""
    state = tb_state.load()
    client = state.pair(1)["client"]
    before = paths.snapshot(state, 1)
    assert set(before["programs"].values()) == {"ebpf"}
    running = load(rate=100, seconds=4, mode="new-connection")
    time.sleep(1.5)  # inside the measured window
    ebpf.detach(Path(state.bpf_pin_root), pod_cgroups={client.name: state.cgroup(client.name)})
    try:
        requests = _finish(running)
        after = paths.snapshot(state, 1)
    finally:
        commands.set_dataplane("ebpf")  # the fixture's arm again, for the next test
    evidence, reasons = path.judge("ebpf", True, before, after, {}, requests)
    assert evidence.programs_end[client.name] == "off"
    assert any(
        "eBPF programs ebpf at the trial's end; found" in r and f"{client.name} in off" in r
        for r in reasons
    ), reasons
    # the counters still show the eBPF path for the part of the window before the detach
    assert evidence.counters["out_redirect"] > 0, evidence.counters


def test_a_program_left_attached_in_the_iptables_arm_is_rejected(iptables_arm, load):
    state = tb_state.load()
    client = state.pair(1)["client"]
    # a switch back to iptables that "forgot" the client pod's programs
    ebpf.attach(
        {client.name: state.cgroup(client.name)}, {client.name: client.ip}, "ebpf",
        pod_nodes={client.name: client.node}, pin_root=Path(state.bpf_pin_root),
    )  # fmt: skip
    try:
        before = paths.snapshot(state, 1)
        running = load(rate=100, seconds=3, mode="new-connection")
        requests = _finish(running)
        after = paths.snapshot(state, 1)
    finally:
        commands.set_dataplane("iptables")  # detaches what the doctoring left
    evidence, reasons = path.judge("iptables", True, before, after, {}, requests)
    assert evidence.programs_start[client.name] == "ebpf"
    assert any(f"found {client.name} in ebpf" in r for r in reasons), reasons
    # and the hop k6 -> client sidecar was not the REDIRECT rule's alone
    k6_hop = evidence.hops[path.K6]
    assert k6_hop.carrier != "iptables-redirect", k6_hop
    assert any(f"hop {path.K6} was carried by" in r for r in reasons), reasons


def test_the_undoctored_iptables_arm_passes(iptables_arm, load):
    """The same reading of a clean iptables trial: REDIRECT on both captured hops, no reason
    (so the two tests above fail for the doctoring, not for the reading)."""
    state = tb_state.load()
    before = paths.snapshot(state, 1)
    running = load(rate=100, seconds=3, mode="new-connection")
    requests = _finish(running)
    after = paths.snapshot(state, 1)
    evidence, reasons = path.judge("iptables", True, before, after, {}, requests)
    assert reasons == []
    assert evidence.hops[path.K6].carrier == "iptables-redirect"
    assert evidence.hops[path.INBOUND].carrier == "iptables-redirect"
    assert evidence.hops[path.K6].connections >= requests  # new-connection: one per request
