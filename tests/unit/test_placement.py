"""The placement factor outside the testbed: the engine names each step's placement, a trial
refuses a testbed in the other one, pinning follows the placement, and the testbed state names
both nodes (the root tests in tests/testbed/test_two_nodes.py drive the real thing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from meshlab.errors import MeshlabError
from meshlab.experiment import engine
from meshlab.experiment.state import RunState
from meshlab.record.rundir import RunDir
from meshlab.synthetic import SyntheticSpec, write_run
from meshlab.testbeds.local import commands, step
from meshlab.testbeds.local import state as tb_state

STATE = tb_state.LocalState(
    prefix="meshlab",
    run_dir="/run/meshlab",
    cgroup_root="/sys/fs/cgroup/unified/meshlab",
    bpf_pin_root="/sys/fs/bpf/meshlab",
    node_netns="meshlab-node",
    gateway="198.18.255.1",
    nodes=[
        {"id": 1, "netns": "meshlab-node", "gateway": "198.18.255.1", "link_ip": "198.18.254.1"},
        {"id": 2, "netns": "meshlab-node2", "gateway": "198.18.255.2", "link_ip": "198.18.254.2"},
    ],
    placement="cross-node",
    cpus={
        "1": {"k6": "0", "client_sidecar": "0", "server_sidecar": "0", "app": "0"},
        "2": {"k6": "1", "client_sidecar": "1", "server_sidecar": "1", "app": "1"},
    },
    envoy_bin="/usr/bin/envoy",
    k6_bin="/usr/bin/k6",
    pods=[
        {"name": "client", "role": "client", "pair": 1, "ip": "198.18.1.10", "peer": "server"},
        {"name": "server", "role": "server", "pair": 1, "ip": "198.18.1.20", "peer": "client",
         "node": 2},
    ],
    services=[{"name": "server", "pair": 1, "vip": "198.19.0.1", "port": 80,
               "endpoint": "198.18.1.20", "target_port": 80}],
)  # fmt: skip


def _slot(entry: object) -> object:
    return type("S", (), {"entry": entry})()


def _two_placements(tmp_path: Path, keep: int) -> Path:
    """A running synthetic run over both placements with only its first `keep` trials."""
    run_dir = write_run(
        tmp_path,
        SyntheticSpec(rounds=2, placements=("cross-node", "same-node")),
    )
    doc = json.loads((run_dir / "manifest.json").read_text())
    doc["status"] = "running"
    (run_dir / "manifest.json").write_text(json.dumps(doc))
    for tdir in sorted((run_dir / "trials").iterdir())[keep:]:
        shutil.rmtree(tdir)
    return run_dir


def test_the_next_step_names_its_placement_and_the_block_in_its_label(tmp_path: Path) -> None:
    run_dir = _two_placements(tmp_path, keep=0)
    nxt = engine.next_step(RunState.load(RunDir(run_dir))).model_dump()
    first = RunDir(run_dir).load_manifest().plan[nxt["indexes"][0]]
    assert nxt["placement"] == first.placement
    assert nxt["label"].endswith(f"[{first.placement}]")


def test_a_trial_refuses_a_testbed_in_the_other_placement() -> None:
    entry = type("E", (), {"index": 7, "placement": "same-node"})()
    with pytest.raises(MeshlabError, match="trial 7: planned same-node, but the testbed is cross"):
        step.check_placement(STATE, _slot(entry))
    step.check_placement(STATE.model_copy(update={"placement": "same-node"}), _slot(entry))


def test_pinning_follows_the_placement_and_duet_pairs_keep_their_cpus(tmp_path: Path) -> None:
    run_dir = _two_placements(tmp_path, keep=0)
    manifest = RunDir(run_dir).load_manifest()
    exp = manifest.experiment
    cross = next(e for e in manifest.plan if e.placement == "cross-node")
    same = next(e for e in manifest.plan if e.placement == "same-node")
    assert step.cpus_for(exp, STATE, _slot(cross)) == exp.pinning_for("cross-node").model_dump()
    assert step.cpus_for(exp, STATE, _slot(same))["client_sidecar"] == "1"
    duet = exp.model_copy(update={"design": "duet"})
    two = cross.model_copy(update={"pair": 2})
    assert step.cpus_for(duet, STATE, _slot(two)) == STATE.cpus["2"]
    assert manifest.pinning == {p: exp.pinning_for(p).model_dump() for p in exp.placement}


def test_the_local_state_names_both_nodes_and_refuses_an_old_file(tmp_path: Path) -> None:
    assert STATE.node_names() == ["node", "node2"]
    assert STATE.netns_of("node2") == "meshlab-node2"
    assert STATE.netns_of("server") == "meshlab-server"
    assert STATE.pod("node2") is None
    with pytest.raises(MeshlabError, match="expected one of: node, node2, client, server"):
        STATE.pod("worker")
    assert STATE.components(1)["server_sidecar"].parts[-2:] == ("server", "sidecar")
    old = tmp_path / "testbed.json"
    old.write_text(json.dumps({k: v for k, v in STATE.model_dump().items() if k != "nodes"}))
    with pytest.raises(MeshlabError, match=r"nodes: required field is missing .*testbed up"):
        tb_state.load(old)


def test_a_placement_that_does_not_exist_is_refused_naming_the_choices() -> None:
    with pytest.raises(MeshlabError, match="--placement: 'same-host' is not a placement; expected"):
        commands._placement("same-host")


def test_the_roles_record_of_the_testbed_state_is_idempotent_and_validated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meshlab testbed record-state` (roles/local_state): the default file, written only when
    something changed, never replaced by an invalid document."""
    target = tmp_path / "testbed.json"

    class Where:
        state_file = target

    monkeypatch.setattr(tb_state, "topology", lambda: Where)
    layout = STATE.model_dump(mode="json")
    assert tb_state.record(layout, {"dataplane": {"1": "iptables"}}) is True
    assert tb_state.record(layout, {"dataplane": {"1": "iptables"}}) is False
    assert tb_state.record(layout, {"dataplane": {"1": "ebpf"}}) is True
    assert tb_state.load(target).dataplane == {"1": "ebpf"}
    before = target.read_text()
    with pytest.raises(MeshlabError, match="testbed state"):
        tb_state.record(layout, {"placement": "sideways"})
    assert target.read_text() == before
