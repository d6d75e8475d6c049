"""`ansible-playbook experiment.yml`, the project's own entry command, without the CLI (issue
18): from a checkout whose path holds a space, a run killed with -9 mid-run leaves nothing
running, and the playbook resumes it (`-e resume=RUN_DIR`) to exactly the planned trials and
its report. One run for both, of smoke.yml's same-node block (a user's own experiment file in
the checkout): the pod moves are the same roles, run by `make lab`'s whole smoke run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_experiment_run import (
    _check_complete,
    _leftovers,
    _one_node_smoke,
    _only_run_dir,
    _wait_for_trials,
)

pytestmark = [pytest.mark.root, pytest.mark.testbed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LEASE = Path("/run/meshlab.lease")
SPEC = "experiments/smoke-same-node.yml"


def _checkout_with_a_space(tmp_path: Path) -> Path:
    """A clone of this checkout, as a user would have it, under a 0700 directory whose path
    holds a space; uncommitted edits copied over (a test of the working tree), and the eBPF
    objects `make setup` builds. The venv stays the one this test runs in."""
    parent = tmp_path / "check out"
    parent.mkdir(mode=0o700)
    dest = parent / "meshlab"
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    changed = subprocess.run(
        ["git", "ls-files", "-z", "--modified", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    for name in filter(None, (n.decode() for n in changed)):
        src, dst = REPO / name, dest / name
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
        else:  # deleted in the working tree
            dst.unlink(missing_ok=True)
    shutil.copytree(REPO / "bpf" / "build", dest / "bpf" / "build")
    _one_node_smoke(dest / SPEC)
    return dest


def _playbook(checkout: Path, results: Path, *extra: str) -> subprocess.Popen[str]:
    """As the README says: the venv's ansible-playbook, run in the checkout."""
    env = {**os.environ, "PATH": f"{Path(sys.prefix) / 'bin'}:{os.environ['PATH']}"}
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.Popen(
        ["ansible-playbook", "experiment.yml", "-e", f"experiment={SPEC}",
         "-e", f"results_dir={results}", *extra],
        cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def test_a_playbook_killed_mid_run_is_resumed_by_the_playbook_to_its_report(
    tmp_path: Path,
) -> None:
    checkout = _checkout_with_a_space(tmp_path)
    results = tmp_path / "results"
    proc = _playbook(checkout, results)
    _wait_for_trials(results, proc, 1)
    run_dir = _only_run_dir(results)
    holder = json.loads(LEASE.read_text())
    assert holder["pid"] == proc.pid, holder  # the main process, not a task's worker
    assert holder["what"] == f"ansible-playbook {run_dir}"

    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _leftovers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _leftovers(), _leftovers()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    finished = len(list(run_dir.glob("trials/*/trial.json")))
    assert manifest["status"] == "running" and 1 <= finished < len(manifest["plan"])

    # The dead playbook's lease is taken over; the playbook alone finishes the run.
    resumed = _playbook(checkout, results, "-e", f"resume={run_dir}")
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out[-3000:]
    manifest = _check_complete(run_dir)
    assert manifest["status"] == "complete"
    assert (run_dir / "derived" / "report.html").stat().st_size > 0
    assert manifest["spec_file"] == SPEC
    assert not LEASE.exists(), LEASE.read_text()  # the play ended: the testbed is free again
