"""ansible-lint (production profile, .ansible-lint with an empty skip list) and --syntax-check of
the cluster playbooks, as CI runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = dict(
    os.environ,
    PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    ANSIBLE_NOCOLOR="1",
    NO_COLOR="1",
)
# Every role that is not part of the local testbed belongs to the cloud cluster.
CLUSTER_ROLES = sorted(
    p.name for p in (REPO / "roles").iterdir() if p.is_dir() and not p.name.startswith("testbed_")
)
PLAYBOOKS = ["playbooks/site.yml", "playbooks/cluster_arm.yml", "playbooks/cluster_flood.yml"]


def test_ansible_lint_production_profile_passes() -> None:
    paths = [*PLAYBOOKS, "playbooks/group_vars", *(f"roles/{r}" for r in CLUSTER_ROLES)]
    proc = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--profile=production", "--nocolor", *paths],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "production" in proc.stderr + proc.stdout


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook: str) -> None:
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "--syntax-check",
            "-i",
            str(REPO / "tests/cluster/render_inventory.yml"),
            playbook,
        ],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
