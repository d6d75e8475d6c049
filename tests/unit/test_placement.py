"""The placement factor outside the testbed: the engine names each step's placement, a trial
refuses a testbed in the other one, pinning follows the placement, and the testbed state names
both nodes (the root tests in tests/testbed/test_two_nodes.py drive the real thing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from meshlab.analysis.synthetic import SyntheticSpec, write_run
from meshlab.errors import MeshlabError
from meshlab.experiment import engine, netns_trial
from meshlab.record import store
from meshlab.testbed import commands
from meshlab.testbed import state as tb_state

STATE = {
    "prefix": "meshlab",
    "node_netns": "meshlab-node",
    "gateway": "198.18.255.1",
    "nodes": [
        {"id": 1, "netns": "meshlab-node", "gateway": "198.18.255.1", "link_ip": "198.18.254.1"},
        {"id": 2, "netns": "meshlab-node2", "gateway": "198.18.255.2", "link_ip": "198.18.254.2"},
    ],
    "placement": "cross-node",
    "cpus": {
        "1": {"k6": "0", "client_sidecar": "0", "server_sidecar": "0", "app": "0"},
        "2": {"k6": "1", "client_sidecar": "1", "server_sidecar": "1", "app": "1"},
    },
    "pods": [
        {"name": "client", "role": "client", "pair": 1, "ip": "198.18.1.10", "node": 1},
        {"name": "server", "role": "server", "pair": 1, "ip": "198.18.1.20", "node": 2},
    ],
}


def _two_placements(tmp_path: Path, keep: int) -> Path:
    """A running synthetic run over both placements with only its first `keep` trials."""
    run_dir = write_run(
        tmp_path,
        SyntheticSpec(rounds=2, placements=("cross-node", "same-node"), write_samples=False),
    )
    doc = json.loads((run_dir / "manifest.json").read_text())
    doc["status"] = "running"
    (run_dir / "manifest.json").write_text(json.dumps(doc))
    for tdir in sorted((run_dir / "trials").iterdir())[keep:]:
        shutil.rmtree(tdir)
    return run_dir


def test_the_next_step_names_its_placement_and_the_block_in_its_label(tmp_path: Path) -> None:
    run_dir = _two_placements(tmp_path, keep=0)
    nxt = engine.next_step(run_dir)
    first = store.load_manifest(run_dir).plan[nxt["indexes"][0]]
    assert nxt["placement"] == first.placement
    assert nxt["label"].endswith(f"[{first.placement}]")


def test_a_trial_refuses_a_testbed_in_the_other_placement() -> None:
    entry = type("E", (), {"index": 7, "placement": "same-node"})()
    with pytest.raises(MeshlabError, match="trial 7: planned same-node, but the testbed is cross"):
        netns_trial._check_placement(STATE, entry)
    netns_trial._check_placement({**STATE, "placement": "same-node"}, entry)
    # a testbed recorded before placements existed is on one node
    netns_trial._check_placement({k: v for k, v in STATE.items() if k != "placement"}, entry)


def test_pinning_follows_the_placement_and_duet_pairs_keep_their_cpus(tmp_path: Path) -> None:
    run_dir = _two_placements(tmp_path, keep=0)
    manifest = store.load_manifest(run_dir)
    exp = manifest.experiment
    cross = next(e for e in manifest.plan if e.placement == "cross-node")
    same = next(e for e in manifest.plan if e.placement == "same-node")
    assert netns_trial._cpus(exp, STATE, cross) == exp.pinning_for("cross-node").model_dump()
    assert netns_trial._cpus(exp, STATE, same)["client_sidecar"] == "1"
    duet = exp.model_copy(update={"design": "duet"})
    two = cross.model_copy(update={"pair": 2})
    assert netns_trial._cpus(duet, STATE, two) == STATE["cpus"]["2"]
    assert manifest.pinning == {p: exp.pinning_for(p).model_dump() for p in exp.placement}


def test_the_testbed_state_names_both_nodes_and_old_states_have_one() -> None:
    assert tb_state.node_names(STATE) == ["node", "node2"]
    assert tb_state.netns_of(STATE, "node2") == "meshlab-node2"
    assert tb_state.netns_of(STATE, "server") == "meshlab-server"
    assert tb_state.check_pod(STATE, "node2") is None
    with pytest.raises(MeshlabError, match="expected one of: node, node2, client, server"):
        tb_state.check_pod(STATE, "worker")
    old = {k: v for k, v in STATE.items() if k != "nodes"}
    assert tb_state.node_netns(old) == ["meshlab-node"]


def test_a_placement_that_does_not_exist_is_refused_naming_the_choices() -> None:
    with pytest.raises(MeshlabError, match="--placement: 'same-host' is not a placement; expected"):
        commands._placement("same-host")
