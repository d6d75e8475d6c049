#!/usr/bin/env python3
"""Ansible dynamic inventory: the Pulumi stack's VMs when a stack is up, else the local testbed.

ansible.cfg sets `inventory = inventory/`, so plain `ansible-playbook experiment.yml` runs this
script with `--list`. Which testbed it yields:

  MESHLAB_INVENTORY=auto   (default) the stack if one is up and readable, else the local testbed
  MESHLAB_INVENTORY=local  the local testbed, without looking for Pulumi at all
  MESHLAB_INVENTORY=stack  the stack, or fail (exit 1) saying why
  MESHLAB_STACK=<name>     which stack (default: the one `pulumi stack select` chose)
  MESHLAB_STACK_OUTPUTS_FILE=<path>   read this recorded `pulumi stack output --json
                           --show-secrets` payload instead of asking the pulumi CLI
  MESHLAB_SSH_KEY_DIR=<dir>  where a generated SSH key is written (default: .meshlab/ssh/)

The chosen source is visible as the variable `meshlab_inventory_source`
(`ansible-inventory --list | grep meshlab_inventory_source`). Stdlib only: Ansible runs this with
the first python3 on PATH, not necessarily the project's venv.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # infra.inventory and infra.outputs are stdlib-only

from infra import outputs  # noqa: E402  (needs REPO_ROOT on sys.path)
from infra.inventory import local_testbed, to_script_json, with_identity_file  # noqa: E402

MODES = ("auto", "local", "stack")
# Bounds `pulumi stack output`: a few seconds with any backend, unless it waits on the network.
PULUMI_TIMEOUT_S = 60


class StackUnavailableError(Exception):
    """No stack outputs to use; the message says why (shown in forced stack mode)."""


class StackLockedError(Exception):
    """A stack exists but its outputs cannot be decrypted: never fall back silently."""


def main(argv: list[str]) -> int:
    env = os.environ
    if len(argv) > 1 and argv[1] == "--host":
        print("{}")  # every host's vars are in --list's _meta already
        return 0
    mode = env.get("MESHLAB_INVENTORY", "auto").strip().lower() or "auto"
    if mode not in MODES:
        print(f"MESHLAB_INVENTORY={mode!r}: expected one of {', '.join(MODES)}", file=sys.stderr)
        return 1
    try:
        inventory = choose(mode, env)
    except StackUnavailableError as err:
        print(f"meshlab inventory: MESHLAB_INVENTORY=stack but {err}", file=sys.stderr)
        return 1
    except StackLockedError as err:
        print(f"meshlab inventory: {err}", file=sys.stderr)
        return 1
    json.dump(to_script_json(inventory), sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


def choose(mode: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The YAML-shaped inventory for `mode`, tagged with where it came from."""
    if mode == "local":
        return _tag(local_testbed(), "local: MESHLAB_INVENTORY=local")
    try:
        stack_outputs, source = read_outputs(env)
        inventory = from_outputs(stack_outputs, env)
    except StackUnavailableError as err:
        if mode == "stack":
            raise
        return _tag(local_testbed(), f"local: {err}")
    return _tag(inventory, source)


def read_outputs(env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The stack outputs and a description of their source, or StackUnavailableError."""
    recorded = env.get("MESHLAB_STACK_OUTPUTS_FILE")
    if recorded:
        try:
            return json.loads(Path(recorded).read_text()), f"file: {recorded}"
        except (OSError, ValueError) as err:
            raise StackUnavailableError(f"MESHLAB_STACK_OUTPUTS_FILE={recorded}: {err}") from err
    cli = pulumi_cli(env)
    if cli is None:
        raise StackUnavailableError("no pulumi CLI on PATH or in ~/.pulumi/bin")
    stack = env.get("MESHLAB_STACK", "").strip()
    cmd = [cli, "stack", "output", "--json", "--show-secrets", "--non-interactive"]
    if stack:
        cmd += ["--stack", stack]
    try:
        done = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,  # a passphrase prompt must fail, not hang
            capture_output=True,
            text=True,
            timeout=PULUMI_TIMEOUT_S,
            env={**env, "PULUMI_SKIP_UPDATE_CHECK": "true"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise StackUnavailableError(f"`pulumi stack output` failed: {err}") from err
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no error text"])[-1]
        if "passphrase" in done.stderr.lower():
            # The stack is there (`pulumi up` ran) but the shell lacks its passphrase: falling
            # back to the local testbed would run the experiment somewhere unexpected.
            raise StackLockedError(
                f"the Pulumi stack needs its passphrase ({reason}); export "
                "PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE, "
                "or set MESHLAB_INVENTORY=local for the local testbed"
            )
        raise StackUnavailableError(f"no readable stack ({reason})")
    try:
        return json.loads(done.stdout), f"stack: {stack or 'selected'}"
    except ValueError as err:
        raise StackUnavailableError(f"`pulumi stack output` printed no JSON: {err}") from err


def pulumi_cli(env: Mapping[str, str]) -> str | None:
    found = shutil.which("pulumi", path=env.get("PATH"))
    if found:
        return found
    home = env.get("HOME")
    default = Path(home, ".pulumi", "bin", "pulumi") if home else None  # the installer's place
    return str(default) if default and os.access(default, os.X_OK) else None


def from_outputs(stack_outputs: dict[str, Any], env: Mapping[str, str]) -> dict:
    """The stack's `ansible_inventory`, logging in with the generated key if there is one."""
    inventory = stack_outputs.get(outputs.ANSIBLE_INVENTORY)
    if not isinstance(inventory, dict) or "all" not in inventory:
        raise StackUnavailableError(
            f"the stack has no `{outputs.ANSIBLE_INVENTORY}` output (not up?)"
        )
    private_key = stack_outputs.get(outputs.SSH_PRIVATE_KEY)
    if private_key:
        key_dir = Path(env.get("MESHLAB_SSH_KEY_DIR") or REPO_ROOT / ".meshlab" / "ssh")
        name = stack_outputs.get(outputs.CLUSTER_NAME) or "meshlab"
        inventory = with_identity_file(inventory, str(write_key(key_dir, name, private_key)))
    return inventory


def write_key(key_dir: Path, name: str, private_key: str) -> Path:
    """Write the key 0600, atomically, only when its content changed; return its path."""
    text = private_key if private_key.endswith("\n") else private_key + "\n"
    path = key_dir.resolve() / f"{name}_ed25519"
    digest = hashlib.sha256(text.encode()).digest()
    if path.exists() and hashlib.sha256(path.read_bytes()).digest() == digest:
        return path
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    Path(tmp).replace(path)
    return path


def _tag(inventory: dict[str, Any], source: str) -> dict[str, Any]:
    top = inventory["all"]
    return {"all": {**top, "vars": {**top.get("vars", {}), "meshlab_inventory_source": source}}}


if __name__ == "__main__":
    sys.exit(main(sys.argv))
