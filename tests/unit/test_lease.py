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

from meshlab.cluster import lease as cluster_lease
from meshlab.errors import MeshlabError
from meshlab.testbed import lease


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
         "import sys; from meshlab.testbed import lease; from pathlib import Path; "
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
