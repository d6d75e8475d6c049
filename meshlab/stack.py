"""`meshlab up` / `meshlab down`: the OpenStack lab's Pulumi stack, through the Automation API.

Runs the local program (Pulumi.yaml at the repository root, `main: infra/`), streams Pulumi's own
output with a live status line, then prints the nodes and the Ansible inventory. Anything the
user must fix first (no pulumi CLI, no OpenStack credentials, a Pulumi error) is one MeshlabError
line that says what to do.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml
from rich.console import Console
from rich.table import Table

from infra import outputs as keys
from meshlab.errors import MeshlabError
from meshlab.paths import REPO as REPO_ROOT

T = TypeVar("T")
SYSTEM_CLOUDS_YAML = Path("/etc/openstack/clouds.yaml")
INSTALL_HINT = "install it (https://www.pulumi.com/docs/iac/download-install/) and rerun"
CREDENTIALS_HINT = (
    "set OS_CLOUD to an entry of clouds.yaml (~/.config/openstack/clouds.yaml), "
    "or source your project's openrc file (OS_AUTH_URL, ...); see docs/cloud.md"
)


def up(stack: str) -> None:
    """Create or update the stack, then print its nodes and Ansible inventory."""
    console = Console()
    workspace_stack = _open(stack, create=True)
    console.print(f"[bold]pulumi up[/] stack [cyan]{stack}[/] (program {REPO_ROOT / 'infra'})")
    with _Progress(console, "up") as progress:
        result = _run(
            lambda: workspace_stack.up(on_output=progress.output, on_event=progress.event)
        )
    values = {key: out.value for key, out in result.outputs.items() if not out.secret}
    summary = result.summary.resource_changes or {}
    console.print(f"pulumi up: {_changes(summary)}")
    for renderable in render_summary(values, generated_key=keys.SSH_PRIVATE_KEY in result.outputs):
        console.print(renderable)


def down(stack: str) -> None:
    """Destroy every resource of the stack (its history stays; `pulumi stack rm` drops it)."""
    console = Console()
    workspace_stack = _open(stack, create=False)
    console.print(f"[bold]pulumi destroy[/] stack [cyan]{stack}[/]")
    with _Progress(console, "destroy") as progress:
        result = _run(
            lambda: workspace_stack.destroy(on_output=progress.output, on_event=progress.event)
        )
    console.print(f"pulumi destroy: {_changes(result.summary.resource_changes or {})}")
    console.print(
        f"All cloud resources of stack {stack} are gone. The inventory now yields the local "
        f"testbed. `pulumi stack rm {stack}` also drops the stack's history and config."
    )


def pulumi_cli(env: Mapping[str, str] | None = None) -> Path | None:
    """The pulumi CLI: on PATH, or where its installer puts it (~/.pulumi/bin)."""
    env = os.environ if env is None else env
    found = shutil.which("pulumi", path=env.get("PATH"))
    if found:
        return Path(found)
    home = env.get("HOME")
    default = Path(home, ".pulumi", "bin", "pulumi") if home else None
    return default if default and os.access(default, os.X_OK) else None


def openstack_credentials(
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stack_file: Path | None = None,
) -> str | None:
    """Where the OpenStack provider will find credentials, or None if it will find none.

    The provider reads OS_* variables, clouds.yaml (OS_CLIENT_CONFIG_FILE, the current
    directory, ~/.config/openstack, /etc/openstack) or `openstack:authUrl` in the stack config.
    """
    env = os.environ if env is None else env
    for var in ("OS_CLOUD", "OS_AUTH_URL"):
        if env.get(var):
            return var
    places = [Path(env["OS_CLIENT_CONFIG_FILE"])] if env.get("OS_CLIENT_CONFIG_FILE") else []
    places += [(cwd or Path.cwd()) / "clouds.yaml", REPO_ROOT / "clouds.yaml"]
    if env.get("HOME"):
        places.append(Path(env["HOME"], ".config", "openstack", "clouds.yaml"))
    places.append(SYSTEM_CLOUDS_YAML)
    for place in places:
        if place.is_file():
            return str(place)
    if stack_file is not None and stack_file.is_file():
        config = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
        if config.get("openstack:authUrl"):
            return f"{stack_file.name} (openstack:authUrl)"
    return None


def render_summary(outputs: Mapping[str, Any], generated_key: bool) -> list[Any]:
    """What `meshlab up` prints after a successful update: nodes, inventory, next steps."""
    table = Table(title="nodes", title_justify="left")
    for column in ("name", "role", "private IP", "public IP", "flavor"):
        table.add_column(column)
    for node in outputs.get(keys.NODES) or []:
        table.add_row(
            node["name"],
            node["role"],
            node["private_ip"],
            node.get("public_ip") or "-",
            node.get("flavor") or "-",
        )
    inventory = yaml.safe_dump(outputs.get(keys.ANSIBLE_INVENTORY), sort_keys=False, width=1000)
    bastion = outputs.get(keys.BASTION) or {}
    login = f"{outputs.get(keys.SSH_USER, 'debian')}@{bastion.get('public_ip', '?')}"
    key_note = (
        "the generated SSH key is written to .meshlab/ssh/ by the inventory on first use"
        if generated_key
        else "SSH uses your own key (meshlab:sshPublicKey)"
    )
    return [
        table,
        "[bold]ansible inventory[/] (what inventory/ yields for this stack):",
        inventory,
        f"bastion: ssh {login}   ({key_note})",
        "next: ansible-playbook experiment.yml   (or: meshlab run experiments/cloud.yml)",
    ]


def _open(stack: str, create: bool) -> Any:
    """Preflight checks, then the Automation API stack for the repository's program."""
    cli = pulumi_cli()
    if cli is None:
        raise MeshlabError(f"the pulumi CLI is not on PATH or in ~/.pulumi/bin: {INSTALL_HINT}")
    where = openstack_credentials(stack_file=REPO_ROOT / f"Pulumi.{stack}.yaml")
    if where is None:
        raise MeshlabError(f"no OpenStack credentials found: {CREDENTIALS_HINT}")
    from pulumi import automation as auto

    def select() -> Any:
        # On PATH: the Automation API finds it itself; else point it at the installer's root.
        root = None if shutil.which("pulumi") else str(cli.parent.parent)
        opts = auto.LocalWorkspaceOptions(
            pulumi_command=auto.PulumiCommand(root=root),
            env_vars={"PULUMI_SKIP_UPDATE_CHECK": "true"},
        )
        if create:
            return auto.create_or_select_stack(stack_name=stack, work_dir=str(REPO_ROOT), opts=opts)
        try:
            return auto.select_stack(stack_name=stack, work_dir=str(REPO_ROOT), opts=opts)
        except auto.StackNotFoundError as err:
            raise MeshlabError(f"no Pulumi stack {stack!r} to destroy (`pulumi stack ls`)") from err

    return _run(select)


def _run(action: Callable[[], T]) -> T:
    """Call the Automation API; turn its errors into one actionable line."""
    from pulumi import automation as auto

    try:
        return action()
    except auto.CommandError as err:
        raise MeshlabError(f"pulumi failed: {pulumi_error_line(str(err))}") from err
    except auto.InvalidVersionError as err:
        raise MeshlabError(f"the pulumi CLI is too old ({err}): {INSTALL_HINT}") from err
    except FileNotFoundError as err:  # the CLI vanished between the check and the call
        raise MeshlabError(f"the pulumi CLI could not be run ({err}): {INSTALL_HINT}") from err


def pulumi_error_line(text: str) -> str:
    """The most telling line of a failed pulumi command's output."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^(error|stderr: error):", line)]
    if errors:
        return errors[-1].removeprefix("stderr: ")
    return lines[-1] if lines else "no output"


def _changes(summary: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {op}" for op, count in sorted(summary.items())) or "no changes"


class _Progress:
    """Streams pulumi's text output and keeps a status line with resource counts."""

    def __init__(self, console: Console, verb: str) -> None:
        self.console, self.verb = console, verb
        self.done = self.failed = 0
        self.current = "starting"
        self.status = console.status(self._line())

    def _line(self) -> str:
        return f"pulumi {self.verb}: {self.done} done, {self.failed} failed ({self.current})"

    def __enter__(self) -> _Progress:
        self.status.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.status.stop()

    def output(self, text: str) -> None:
        self.console.print(text.rstrip("\n"), markup=False, highlight=False, style="dim")

    def event(self, event: Any) -> None:
        if event.resource_pre_event is not None:
            meta = event.resource_pre_event.metadata
            if str(getattr(meta.op, "value", meta.op)) != "same":
                name = meta.urn.rsplit("::", 1)[-1]
                self.current = f"{getattr(meta.op, 'value', meta.op)} {name}"
        elif event.res_outputs_event is not None:
            self.done += 1
        elif event.res_op_failed_event is not None:
            self.failed += 1
        self.status.update(self._line())
