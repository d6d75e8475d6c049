"""inventory/meshlab_inventory.py, run the way Ansible runs it: an executable with --list.

Each test builds its own PATH (python3 and, when wanted, a fake `pulumi`) and HOME, so a pulumi
CLI or a stack on the developer's machine cannot leak in.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from infra_mocks import REPO_ROOT, run_lab

SCRIPT = REPO_ROOT / "inventory" / "meshlab_inventory.py"
FIXTURE = Path(__file__).parent / "fixtures" / "stack_outputs_dev.json"
BASTION = "meshlab-dev-monitoring-0"
WORKER = "meshlab-dev-worker-0"
CAT = shutil.which("cat")  # the sandbox PATH has python3 only


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, str]:
    """Environment with python3 on PATH and nothing else (no pulumi), and an empty HOME."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": str(bin_dir),
        "HOME": str(home),
        "MESHLAB_SSH_KEY_DIR": str(tmp_path / "keys"),
        "LANG": "C.UTF-8",
    }


def fake_pulumi(env: dict[str, str], body: str) -> Path:
    """Put a `pulumi` on PATH that logs its argv and cwd, then runs `body` (sh)."""
    log = Path(env["HOME"]) / "pulumi.log"
    exe = Path(env["PATH"].split(os.pathsep)[0]) / "pulumi"
    exe.write_text(f'#!/bin/sh\necho "$(pwd) $*" >> {shlex.quote(str(log))}\n{body}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return log


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *(args or ("--list",))],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd="/",  # Ansible may run it from anywhere
    )


def listing(env: dict[str, str]) -> dict:
    done = run_script(env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_local(inventory: dict) -> None:
    assert inventory["local"] == {
        "hosts": ["localhost"],
        "vars": {"meshlab_testbed_name": "local"},
    }
    assert inventory["_meta"]["hostvars"] == {
        "localhost": {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        }
    }
    assert "k8s_cluster" not in inventory


def test_script_is_executable_and_alone_in_the_inventory_dir() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")
    tracked = subprocess.run(
        ["git", "ls-files", "inventory"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked in ([], ["inventory/meshlab_inventory.py"])  # [] before the first commit


def test_no_pulumi_cli_gives_the_local_testbed_fast(sandbox: dict[str, str]) -> None:
    started = time.perf_counter()
    inventory = listing(sandbox)
    elapsed = time.perf_counter() - started
    assert_local(inventory)
    assert inventory["all"]["vars"]["meshlab_inventory_source"].startswith("local: no pulumi CLI")
    assert elapsed < 1.0, f"the local inventory took {elapsed:.2f} s"


def test_recorded_stack_outputs_give_the_cloud_testbed(
    sandbox: dict[str, str], tmp_path: Path
) -> None:
    inventory = listing({**sandbox, "MESHLAB_STACK_OUTPUTS_FILE": str(FIXTURE)})
    assert "local" not in inventory
    assert inventory["all"]["children"] == ["k8s_cluster", "loadtest", "monitoring"]
    assert inventory["all"]["vars"]["meshlab_testbed_name"] == "cloud"
    assert inventory["all"]["vars"]["meshlab_inventory_source"] == f"file: {FIXTURE}"
    assert inventory["kube_control_plane"] == {"hosts": ["meshlab-dev-control-plane-0"]}
    assert inventory["kube_node"] == {"hosts": [WORKER, "meshlab-dev-loadtest-0"]}
    assert inventory["loadtest"] == {"hosts": ["meshlab-dev-loadtest-0"]}
    assert inventory["monitoring"] == {"hosts": [BASTION]}
    assert inventory["k8s_cluster"]["vars"]["meshlab_calico_encapsulation"] == "ipip"
    hostvars = inventory["_meta"]["hostvars"]
    assert hostvars[BASTION]["ansible_host"] == "203.0.113.10"
    assert hostvars[WORKER]["ansible_host"] == "10.42.0.20"
    # The generated key is written 0600 and used for the node and the jump hop alike.
    key = tmp_path / "keys" / "meshlab-dev_ed25519"
    recorded = json.loads(FIXTURE.read_text())
    assert key.read_text() == recorded["ssh_private_key"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert inventory["all"]["vars"]["ansible_ssh_private_key_file"] == str(key)
    assert f"-i {key} debian@203.0.113.10" in hostvars[WORKER]["ansible_ssh_common_args"]
    assert "ansible_ssh_common_args" not in hostvars[BASTION]


def test_an_imported_key_writes_no_key_file(sandbox: dict[str, str], tmp_path: Path) -> None:
    recorded = json.loads(FIXTURE.read_text())
    del recorded["ssh_private_key"]
    payload = tmp_path / "outputs.json"
    payload.write_text(json.dumps(recorded))
    inventory = listing({**sandbox, "MESHLAB_STACK_OUTPUTS_FILE": str(payload)})
    assert "ansible_ssh_private_key_file" not in inventory["all"]["vars"]
    assert " -i " not in inventory["_meta"]["hostvars"][WORKER]["ansible_ssh_common_args"]
    assert not (tmp_path / "keys").exists()


def test_the_fixture_is_what_the_program_exports() -> None:
    # The payload must keep the output shape; regenerate: python tests/unit/infra_mocks.py
    assert json.loads(FIXTURE.read_text()) == run_lab().outputs


def test_forcing_local_ignores_any_stack(sandbox: dict[str, str]) -> None:
    log = fake_pulumi(sandbox, f"{CAT} {shlex.quote(str(FIXTURE))}")
    env = {**sandbox, "MESHLAB_INVENTORY": "local", "MESHLAB_STACK_OUTPUTS_FILE": str(FIXTURE)}
    inventory = listing(env)
    assert_local(inventory)
    assert inventory["all"]["vars"]["meshlab_inventory_source"] == "local: MESHLAB_INVENTORY=local"
    assert not log.exists()


def test_forcing_the_stack_fails_loudly_without_one(sandbox: dict[str, str]) -> None:
    done = run_script({**sandbox, "MESHLAB_INVENTORY": "stack"})
    assert done.returncode == 1
    assert done.stdout == ""
    assert "MESHLAB_INVENTORY=stack but no pulumi CLI" in done.stderr


def test_unknown_mode_is_refused(sandbox: dict[str, str]) -> None:
    done = run_script({**sandbox, "MESHLAB_INVENTORY": "cloud"})
    assert done.returncode == 1
    assert "expected one of auto, local, stack" in done.stderr


def test_the_pulumi_cli_is_asked_for_the_named_stack(sandbox: dict[str, str]) -> None:
    log = fake_pulumi(sandbox, f"{CAT} {shlex.quote(str(FIXTURE))}")
    inventory = listing({**sandbox, "MESHLAB_STACK": "dev"})
    assert inventory["all"]["vars"]["meshlab_inventory_source"] == "stack: dev"
    assert inventory["monitoring"] == {"hosts": [BASTION]}
    assert log.read_text().splitlines() == [
        f"{REPO_ROOT} stack output --json --show-secrets --non-interactive --stack dev"
    ]


def test_the_selected_stack_is_used_without_meshlab_stack(sandbox: dict[str, str]) -> None:
    log = fake_pulumi(sandbox, f"{CAT} {shlex.quote(str(FIXTURE))}")
    assert listing(sandbox)["all"]["vars"]["meshlab_inventory_source"] == "stack: selected"
    assert log.read_text().removeprefix(f"{REPO_ROOT} ").split() == [
        "stack",
        "output",
        "--json",
        "--show-secrets",
        "--non-interactive",
    ]


def test_the_installers_pulumi_in_home_is_found(sandbox: dict[str, str]) -> None:
    bin_dir = Path(sandbox["HOME"], ".pulumi", "bin")
    bin_dir.mkdir(parents=True)
    exe = bin_dir / "pulumi"
    exe.write_text(f"#!/bin/sh\n{CAT} {shlex.quote(str(FIXTURE))}\n")
    exe.chmod(0o755)
    assert listing(sandbox)["all"]["vars"]["meshlab_testbed_name"] == "cloud"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("echo 'error: no stack selected' >&2; exit 255", "no stack selected"),
        ("echo '{}'", "no `ansible_inventory` output"),
        ("echo 'not json'", "printed no JSON"),
    ],
)
def test_no_usable_stack_falls_back_to_the_local_testbed(
    sandbox: dict[str, str], body: str, reason: str
) -> None:
    fake_pulumi(sandbox, body)
    inventory = listing(sandbox)
    assert_local(inventory)
    assert reason in inventory["all"]["vars"]["meshlab_inventory_source"]
    forced = run_script({**sandbox, "MESHLAB_INVENTORY": "stack"})
    assert forced.returncode == 1 and reason in forced.stderr


def test_a_locked_stack_never_falls_back_silently(sandbox: dict[str, str]) -> None:
    fake_pulumi(
        sandbox,
        "echo 'error: passphrase must be set with PULUMI_CONFIG_PASSPHRASE' >&2; exit 255",
    )
    done = run_script(sandbox)
    assert done.returncode == 1
    assert "PULUMI_CONFIG_PASSPHRASE" in done.stderr
    assert "MESHLAB_INVENTORY=local" in done.stderr


def test_host_mode_defers_to_meta(sandbox: dict[str, str]) -> None:
    done = run_script(sandbox, "--host", "localhost")
    assert (done.returncode, json.loads(done.stdout)) == (0, {})


def ansible_inventory(env: dict[str, str]) -> dict:
    """`ansible-inventory --list` from the repository root: ansible.cfg picks inventory/."""
    venv_bin = Path(sys.executable).parent
    done = subprocess.run(
        [str(venv_bin / "ansible-inventory"), "--list"],
        env={**env, "ANSIBLE_HOME": str(Path(env["HOME"], ".ansible"))},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "[WARNING]" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def test_ansible_reads_the_stack_with_no_flags(sandbox: dict[str, str]) -> None:
    seen = ansible_inventory({**sandbox, "MESHLAB_STACK_OUTPUTS_FILE": str(FIXTURE)})
    assert seen["monitoring"]["hosts"] == [BASTION]
    assert set(seen["kube_node"]["hosts"]) == {WORKER, "meshlab-dev-loadtest-0"}
    assert seen["_meta"]["hostvars"][WORKER]["meshlab_testbed_name"] == "cloud"


def test_ansible_reads_the_local_testbed_with_no_stack(sandbox: dict[str, str]) -> None:
    seen = ansible_inventory(sandbox)
    assert seen["local"]["hosts"] == ["localhost"]
    assert seen["_meta"]["hostvars"]["localhost"]["meshlab_testbed_name"] == "local"
    assert seen["_meta"]["hostvars"]["localhost"]["ansible_connection"] == "local"
