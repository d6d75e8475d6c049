"""ansible-lint (production profile, .ansible-lint with an empty skip list) and --syntax-check of
the cluster playbooks, as CI runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cloud_render import BIN, ENV, REPO
from cloud_render import playbook as run_playbook

# Every role that is not part of the local testbed belongs to the cloud cluster.
CLUSTER_ROLES = sorted(
    p.name for p in (REPO / "roles").iterdir() if p.is_dir() and not p.name.startswith("local_")
)
PLAYBOOKS = ["playbooks/site.yml", "playbooks/cloud_arm.yml", "playbooks/cloud_flood.yml"]
# The entry playbook and its experiment stages, as a cloud inventory runs them.
EXPERIMENT_PLAYBOOKS = [
    "experiment.yml",
    "playbooks/preflight.yml",
    "playbooks/experiment_plan.yml",
    "playbooks/experiment_trials.yml",
]


def test_ansible_lint_production_profile_passes() -> None:
    paths = [*PLAYBOOKS, *EXPERIMENT_PLAYBOOKS[1:], "playbooks/tasks/trial_cloud.yml"]
    paths += ["playbooks/tasks/resolve_digest.yml", "playbooks/tasks/wait_for_vm.yml"]
    paths += ["playbooks/group_vars", *(f"roles/{r}" for r in CLUSTER_ROLES)]
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


@pytest.mark.parametrize("playbook", PLAYBOOKS + EXPERIMENT_PLAYBOOKS)
def test_playbook_syntax(playbook: str) -> None:
    proc = run_playbook(
        "--syntax-check", "-i", str(REPO / "tests/cloud/render_inventory.yml"), playbook,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _plan(tmp_path: Path, experiment: str) -> subprocess.CompletedProcess[str]:
    """experiment_plan.yml against the cloud-shaped inventory: it only runs on the controller."""
    return run_playbook(
        "-i", str(REPO / "tests/cloud/render_inventory.yml"), "playbooks/experiment_plan.yml",
        "-e", f"experiment={experiment}", "-e", f"results_dir={tmp_path}",
    )  # fmt: skip


def test_a_cloud_inventory_plans_for_the_cloud_testbed(tmp_path: Path) -> None:
    proc = _plan(tmp_path, "experiments/cloud.yml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (manifest_path,) = tmp_path.glob("cloud/*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["host"]["testbed"] == "cloud"
    assert manifest["inventory"]["groups"]["loadtest"] == ["lt1"]
    assert manifest["inventory"]["groups"]["kube_control_plane"] == ["cp1"]
    assert manifest["versions"]["k6"] == "1.1.0"
    assert manifest["versions"]["envoy"].startswith("istio-proxy ")


def test_a_cloud_inventory_refuses_two_placements_in_one_run(tmp_path: Path) -> None:
    proc = _plan(tmp_path, "experiments/smoke.yml")  # smoke runs cross-node and same-node
    assert proc.returncode != 0
    said = " ".join((proc.stdout + proc.stderr).split())
    assert "smoke.yml: placement: the cloud testbed runs one placement per run" in said
    assert not list(tmp_path.iterdir())


def test_a_cloud_inventory_refuses_a_duet_experiment_naming_the_field(tmp_path: Path) -> None:
    proc = _plan(tmp_path, "experiments/aa-duet.yml")
    assert proc.returncode != 0
    said = " ".join((proc.stdout + proc.stderr).split())  # the callback wraps long lines
    assert "aa-duet.yml: design: duet is not supported on the cloud testbed" in said
    assert not list(tmp_path.iterdir())  # nothing planned


# Variables that hold a path inside the checkout, which may be cloned anywhere (a path with a
# space, a 0700 home): a command given as one string splits them at the space.
CHECKOUT_PATHS = ("ansible_playbook_python", "playbook_dir", "role_path", "inventory_dir")


def _tasks(node: object):
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("tasks", "block", "rescue", "always", "pre_tasks", "post_tasks", "handlers"):
            yield from _tasks(node.get(key))


def test_no_command_splits_a_checkout_path_at_a_space() -> None:
    import yaml

    files = [*REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("playbooks/**/*.yml")]
    files.append(REPO / "experiment.yml")
    split = []
    for path in files:
        for task in _tasks(yaml.safe_load(path.read_text())):
            for module in ("ansible.builtin.command", "ansible.builtin.shell", "command", "shell"):
                line = task.get(module)
                if isinstance(line, str) and any(v in line for v in CHECKOUT_PATHS):
                    split.append(f"{path.relative_to(REPO)}: {task.get('name')}")
    assert len(files) > 40
    assert not split, f"give these commands as argv: {split}"
