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


TEARDOWN = Path(__file__).resolve().parents[2] / "roles/local_teardown/files/teardown.sh"


@pytest.mark.root
def test_a_stale_pid_file_naming_an_unrelated_process_leaves_it_running(tmp_path: Path) -> None:
    """Issue 20: pids wrap within minutes under load, so a pid file left behind may name
    someone else's process by now. teardown.sh stops a pid-file process only when it lives in
    the testbed (its namespaces or cgroups); the daemon role stops one only by name too."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / "client-envoy.pid").write_text(f"{bystander.pid}\n")
        out = subprocess.run(
            ["sh", str(TEARDOWN), "mltest-stale", str(run_dir), str(tmp_path / "cg"),
             str(tmp_path / "pins")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert bystander.poll() is None, "teardown killed a process outside the testbed"
        assert not run_dir.exists()  # the stale file went with the runtime directory
        # the sidecar stop of local_netns (a moved pod's Envoy) checks the name as well
        pidfile = tmp_path / "server-envoy.pid"
        pidfile.write_text(f"{bystander.pid}\n")
        stop = subprocess.run(
            ["start-stop-daemon", "--stop", "--quiet", "--oknodo", "--pidfile", str(pidfile),
             "--name", "envoy"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert stop.returncode == 0 and bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
