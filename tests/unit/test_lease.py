"""One holder at a time: the local testbed's lease file and the cloud lab's Lease."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import kubernetes_validate
import pytest

from meshlab.errors import MeshlabError
from meshlab.testbeds.cloud import lease as cluster_lease
from meshlab.testbeds.local import lease

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sleeper():
    """Another live process, not an ancestor of this one."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path, sleeper) -> None:
    path = tmp_path / "lease"
    held = lease.acquire("meshlab run results/default/x", pid=sleeper.pid, path=path)
    with pytest.raises(MeshlabError) as err:
        lease.acquire("meshlab testbed dataplane ebpf", path=path)
    msg = str(err.value)
    assert re.fullmatch(
        rf"testbed busy: meshlab run results/default/x \(pid {sleeper.pid}\) since \d\d:\d\d UTC",
        msg,
    ), msg
    assert lease.read(path) == held  # nothing changed


def test_descendants_share_the_lease(tmp_path: Path) -> None:
    path = tmp_path / "lease"
    mine = lease.acquire("meshlab run x", path=path)
    child = subprocess.run(
        [sys.executable, "-c",
         "import sys; from meshlab.testbeds.local import lease; from pathlib import Path; "
         "h = lease.acquire('ansible-playbook experiment.yml', path=Path(sys.argv[1])); "
         "print(h.pid); lease.require_held(path=Path(sys.argv[1]))", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert int(child.stdout) == os.getpid() == mine.pid
    lease.release(mine, path)
    assert lease.read(path) is None


def test_a_dead_holders_lease_is_taken_over(tmp_path: Path, sleeper) -> None:
    path = tmp_path / "lease"
    lease.acquire("meshlab run x", pid=sleeper.pid, path=path)
    sleeper.kill()
    sleeper.wait()
    assert lease.current(path) is None
    assert lease.acquire("meshlab run y", path=path).pid == os.getpid()


def test_a_recycled_pid_is_not_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "lease"
    record = {
        "what": "meshlab run x",
        "pid": os.getpid(),
        "started": 1,
        "since": "2026-12-01T19:21:00+00:00",
    }
    path.write_text(json.dumps(record))
    assert lease.current(path) is None  # same pid, another process (start time differs)


def test_a_step_whose_run_is_gone_stops(tmp_path: Path, sleeper) -> None:
    path = tmp_path / "lease"
    with pytest.raises(MeshlabError, match="its holder is gone"):
        lease.require_held(path=path)
    lease.acquire("meshlab run other", pid=sleeper.pid, path=path)
    with pytest.raises(MeshlabError, match=r"it is held by meshlab run other"):
        lease.require_held(path=path)


def _p(pid: int, *argv: str, comm: str | None = None) -> lease.Proc:
    return lease.Proc(pid, comm or Path(argv[0]).name[:15], argv)


PLAYBOOK = ("/venv/bin/python3", "/venv/bin/ansible-playbook", "experiment.yml")
STEP = _p(900, "/venv/bin/python", "-m", "meshlab", "engine", "next", "RUN")
MODULE = _p(800, "/venv/bin/python", "/root/.ansible/tmp/x/AnsiballZ_command.py")
SHELL = _p(700, "/bin/sh", "-c", "/venv/bin/python /root/.ansible/tmp/x/AnsiballZ_command.py")


def test_the_main_playbook_process_holds_not_its_worker_fork() -> None:
    """Issue 18: a task's worker is a fork of the main ansible-playbook process with the same
    command line; it lives for one task, the main process for the run."""
    worker = _p(600, *PLAYBOOK, comm="ansible-playboo")
    main = _p(500, *PLAYBOOK, comm="ansible-playboo")
    login = _p(400, "-bash")
    assert lease.run_holder([STEP, MODULE, SHELL, worker, main, login]) == 500
    # the same without the kernel's comm (python running the script) and under ansible-runner
    worker, main = _p(600, *PLAYBOOK), _p(500, *PLAYBOOK)
    runner = _p(450, "/venv/bin/python", "/venv/bin/ansible-runner", "run", "pdd")
    assert lease.run_holder([STEP, MODULE, SHELL, worker, main, runner, login]) == 500


def test_without_a_playbook_above_the_parent_holds() -> None:
    assert lease.run_holder([STEP, _p(300, "-bash"), _p(1, "/sbin/init")]) == 300
    # a path that merely contains the word is not ansible-playbook
    odd = _p(300, "/opt/ansible-playbook-tools/bin/python", "x.py")
    assert lease.run_holder([STEP, odd]) == 300


def test_a_playbook_run_keeps_the_lease_across_its_tasks(tmp_path: Path) -> None:
    """A real process tree shaped like Ansible's: a main process named ansible-playbook forks
    one worker per task, and each task's step runs below its worker. The first task takes the
    lease, the second (another worker, the first one gone) still holds it, the last releases."""
    path = tmp_path / "lease"
    step = (
        "import sys; from pathlib import Path; from meshlab.testbeds.local import lease; "
        "p = Path(sys.argv[2]); what = sys.argv[1]; "
        "h = lease.acquire('ansible-playbook experiment.yml', pid=lease.playbook_ancestor(), "
        "path=p) if what == 'init' else lease.require_held(path=p); "
        "print(h.pid) if what != 'finish' else print(lease.release_playbook_run(path=p))"
    )
    # Run as `python .../ansible-playbook`, as the venv's entry script appears in ps; not by a
    # shebang, which cannot name an interpreter under a path with a space.
    script = tmp_path / "ansible-playbook"
    script.write_text(
        "import os, subprocess, sys\n"
        "for task in ('init', 'next', 'finish'):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:  # the task's worker\n"
        f"        out = subprocess.run([{sys.executable!r}, '-c', {step!r}, task, {str(path)!r}],\n"
        "                             capture_output=True, text=True)\n"
        "        print(task, out.stdout.strip() or out.stderr.strip(), flush=True)\n"
        "        os._exit(out.returncode)\n"
        "    _, status = os.waitpid(pid, 0)\n"
        "    if status: sys.exit(1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert lines["init"] == lines["next"], lines  # the same holder across two workers
    assert lines["finish"] == "True"
    assert lease.read(path) is None


# ---- the cloud lab's coordination.k8s.io Lease --------------------------------------------

NOW = datetime(2026, 12, 1, 19, 21, tzinfo=UTC)


def test_a_free_cluster_is_taken_and_renewed_by_the_same_run() -> None:
    first = cluster_lease.decide(None, "ctl:/r/1", "meshlab", NOW)
    assert first is not None and first["spec"]["holderIdentity"] == "ctl:/r/1"
    kubernetes_validate.validate(first, "1.35", strict=True)
    later = cluster_lease.decide(first, "ctl:/r/1", "meshlab", NOW + timedelta(minutes=5))
    assert later["spec"]["acquireTime"] == first["spec"]["acquireTime"]
    assert later["spec"]["renewTime"] > first["spec"]["renewTime"]


def test_another_run_is_refused_until_the_lease_expires() -> None:
    held = cluster_lease.decide(None, "alice:/r/1", "meshlab", NOW)
    with pytest.raises(
        MeshlabError,
        match=r"testbed busy: alice:/r/1 holds Lease meshlab/meshlab-testbed since 19:21 UTC",
    ):
        cluster_lease.decide(held, "bob:/r/2", "meshlab", NOW + timedelta(minutes=10))
    late = NOW + timedelta(seconds=cluster_lease.DURATION_S + 1)
    taken = cluster_lease.decide(held, "bob:/r/2", "meshlab", late)
    assert taken["spec"]["holderIdentity"] == "bob:/r/2" and taken["spec"]["leaseTransitions"] == 1


def test_only_the_holder_releases() -> None:
    held = cluster_lease.decide(None, "alice:/r/1", "meshlab", NOW)
    assert cluster_lease.decide(held, "alice:/r/1", "meshlab", NOW, release=True) is None
    with pytest.raises(MeshlabError, match="does not hold it"):
        cluster_lease.decide(held, "bob:/r/2", "meshlab", NOW, release=True)


FAKE_KUBECTL = """#!/usr/bin/env python3
# kubectl for one Lease kept in a file: get -o json, apply -f -, delete; logs every apply.
import json, pathlib, sys
store = pathlib.Path(sys.argv[0]).with_name("lease.json")
log = pathlib.Path(sys.argv[0]).with_name("applied.jsonl")
if "get" in sys.argv:
    print(store.read_text() if store.exists() else "")
elif "apply" in sys.argv:
    doc = sys.stdin.read()
    store.write_text(doc)
    with log.open("a") as f:
        f.write(json.dumps(json.loads(doc)) + "\\n")
elif "delete" in sys.argv:
    store.unlink(missing_ok=True)
"""


def _cloud_holder_expression() -> str:
    """meshlab_lease_holder as the cloud trial play defines it."""
    import yaml

    plays = yaml.safe_load((REPO / "playbooks/experiment_trials.yml").read_text())
    (cloud,) = [p for p in plays if p["hosts"] == "k8s_cluster"]
    return cloud["vars"]["meshlab_lease_holder"]


def _lease_play(tmp_path: Path, run_dir: str, release: bool = False):
    from cloud_render import playbook

    kubectl = tmp_path / "kubectl"
    if not kubectl.exists():
        kubectl.write_text(FAKE_KUBECTL)
        kubectl.chmod(0o755)
    extra = tmp_path / f"vars-{len(list(tmp_path.glob('vars-*')))}.json"
    extra.write_text(json.dumps({
        "meshlab_lease_holder": _cloud_holder_expression(), "meshlab_run_dir": run_dir,
        "meshlab_kubectl": str(kubectl), "release": release,
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
    }))  # fmt: skip
    return playbook("-i", "localhost,", "-c", "local", "tests/cloud/lease_play.yml",
                    "-e", f"@{extra}")  # fmt: skip


def test_the_cloud_lease_is_held_by_the_run_not_by_a_task(tmp_path: Path) -> None:
    """Issue 18 on the cloud path: ansible-playbook experiment.yml on a cloud inventory holds
    the cluster's Lease as the controller's run (host:run dir), the same from every task's
    worker; another run is refused naming it; the holder gives it back."""
    import socket

    first = _lease_play(tmp_path, "results/cloud/A")
    assert first.returncode == 0, first.stdout[-3000:]
    applied = [json.loads(line) for line in (tmp_path / "applied.jsonl").read_text().splitlines()]
    assert len(applied) == 2  # taken, then renewed from another task
    assert {a["spec"]["holderIdentity"] for a in applied} == {
        f"{socket.gethostname()}:results/cloud/A"
    }
    assert applied[0]["spec"]["acquireTime"] == applied[1]["spec"]["acquireTime"]
    assert applied[1]["spec"]["leaseTransitions"] == 0

    second = _lease_play(tmp_path, "results/cloud/B")
    assert second.returncode != 0
    said = " ".join(second.stdout.split())
    assert f"testbed busy: {socket.gethostname()}:results/cloud/A holds Lease meshlab/" in said

    done = _lease_play(tmp_path, "results/cloud/A", release=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert not (tmp_path / "lease.json").exists()
