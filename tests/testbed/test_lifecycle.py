"""`up` is idempotent and heals; `status --json` keeps its contract; bad input gets one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meshlab import ansible
from meshlab.errors import MeshlabError
from meshlab.testbeds.local import commands

pytestmark = [pytest.mark.root, pytest.mark.testbed]


def test_status_json_contract(testbed, cli):
    proc = cli("testbed", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["dataplane"] in ("no-mesh", "iptables", "ebpf", "ebpf-connect")
    assert set(doc["flood"]) >= {"pods", "services", "rules"}
    assert doc["server_url"] == "http://198.19.0.1/get"
    for name in ("client", "server"):
        pod = doc["pods"][name]
        assert pod["netns"] == f"meshlab-{name}" and pod["ip"].startswith("198.18.")
        assert pod["pids"], f"{name} has no processes"


@pytest.mark.slow
def test_up_restarts_a_killed_sidecar_and_a_second_up_changes_nothing(iptables_arm, wait_until):
    """Also what `up` checks in one shell rather than a module per item: a deleted certificate
    and a changed pod launcher are put back."""
    tb = iptables_arm
    pid = int(open("/run/meshlab/client-envoy.pid").read())  # noqa: PTH123, SIM115
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not os.path.exists(f"/proc/{pid}/status"), timeout=5)  # noqa: PTH110
    assert tb.curl("client", tb.status["server_url"])[0] != "200"
    cert, launcher = Path("/run/meshlab/pki/server.crt"), Path("/run/meshlab/bin/podexec")
    script = launcher.read_bytes()
    cert.unlink()
    launcher.write_bytes(script + b"# changed\n")

    healed = commands.up()
    assert healed.changed >= 3
    assert tb.curl("client", tb.status["server_url"])[0] == "200"
    assert cert.stat().st_size > 0 and launcher.read_bytes() == script

    again = commands.up()
    assert again.changed == 0, "a second `testbed up` must change nothing"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["testbed", "up", "--flood", "50x"], "expected PODSxSERVICES such as 50x500"),
        (["testbed", "up", "--flood", "0x10"], "needs at least 1 pod and 1 service"),
        (
            ["testbed", "up", "--dataplane", "bogus"],
            "expected one of no-mesh, iptables, ebpf, ebpf-connect",
        ),
        (["testbed", "exec", "nope", "--", "true"], "unknown pod 'nope'; expected one of: node"),
        (["testbed", "flood", "x"], "is not a flood size"),
    ],
)
def test_bad_input_gets_one_line_naming_the_problem(testbed, cli, argv, expected):
    proc = cli(*argv)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("meshlab: error: ")
    assert expected in lines[0]


# As uid 65534 neither the checkout nor the Python installation may be in reach (both sit under
# root's 0700 home on this machine kind), so the command is loaded as root (its --help builds
# every parameter) and the process then drops to nobody before it runs: what is tested is the
# refusal, not whether nobody can read root's files.
AS_NOBODY = """
import contextlib, io, os
from meshlab.cli import app
from meshlab.testbeds.local import state  # noqa: F401
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    app(["testbed", "status", "--help"], prog_name="meshlab")
os.setgroups([]); os.setgid(65534); os.setuid(65534)
app(["testbed", "status"], prog_name="meshlab")
"""


def test_not_root_is_refused_in_one_line(testbed):
    nobody = subprocess.run(
        [sys.executable, "-c", AS_NOBODY], capture_output=True, text=True, check=False
    )
    assert nobody.returncode == 2, nobody.stderr
    assert nobody.stderr.strip().startswith("meshlab: error: the local testbed needs root")


def test_a_missing_package_is_named(testbed):
    with pytest.raises(
        MeshlabError, match="missing program no-such-proxy: install the Debian package no-such-pkg"
    ):
        ansible.run_playbook(
            "playbooks/local_flood.yml",
            {
                "meshlab_local_flood": "off",
                "local_preflight_programs": [{"cmd": "no-such-proxy", "pkg": "no-such-pkg"}],
            },
            quiet=True,
        )
