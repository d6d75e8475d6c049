"""meshlab/cloud.py (`meshlab up` / `meshlab down`): preflight lines and Automation API wiring.

No pulumi CLI exists here, so the Automation API's stack is replaced by a fake that plays back
what the real one does (text lines, engine events, outputs, CommandError).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from infra_mocks import REPO_ROOT
from pulumi import automation as auto
from pulumi.automation._cmd import CommandResult
from typer.testing import CliRunner

from infra import outputs
from meshlab import stack as cloud
from meshlab.cli import app
from meshlab.errors import MeshlabError

FIXTURE = Path(__file__).parent / "fixtures" / "stack_outputs_dev.json"


@pytest.fixture
def no_cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No pulumi on PATH, an empty HOME, no OS_* variables, no clouds.yaml anywhere."""
    for var in ("OS_CLOUD", "OS_AUTH_URL", "OS_CLIENT_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cloud, "SYSTEM_CLOUDS_YAML", tmp_path / "etc-clouds.yaml")
    return home


@pytest.fixture
def fake_cli(no_cloud: Path) -> Path:
    """A `pulumi` where the installer puts it (~/.pulumi/bin); it only answers `version`."""
    exe = no_cloud / ".pulumi" / "bin" / "pulumi"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\necho v3.272.0\n")
    exe.chmod(0o755)
    return exe


def test_missing_cli_is_one_line_with_the_fix(no_cloud: Path) -> None:
    with pytest.raises(MeshlabError) as caught:
        cloud.up("dev")
    message = str(caught.value)
    assert "pulumi CLI is not on PATH" in message
    assert "https://www.pulumi.com/docs/iac/download-install/" in message
    assert "\n" not in message


def test_cli_prints_the_error_as_one_line(no_cloud: Path) -> None:
    result = CliRunner().invoke(app, ["up", "--stack", "dev"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("meshlab: error: the pulumi CLI is not on PATH")


def test_missing_credentials_are_one_line_with_the_fix(fake_cli: Path) -> None:
    assert cloud.pulumi_cli() == fake_cli
    for action in (cloud.up, cloud.down):
        with pytest.raises(MeshlabError) as caught:
            action("dev")
        assert "no OpenStack credentials found" in str(caught.value)
        assert "OS_CLOUD" in str(caught.value) and "docs/cloud.md" in str(caught.value)


@pytest.mark.parametrize("var", ["OS_CLOUD", "OS_AUTH_URL"])
def test_credentials_from_the_environment(no_cloud: Path, var: str) -> None:
    assert cloud.openstack_credentials({var: "x", "HOME": str(no_cloud)}) == var


def test_credentials_from_clouds_yaml(no_cloud: Path, tmp_path: Path) -> None:
    env = {"HOME": str(no_cloud)}
    assert cloud.openstack_credentials(env, cwd=tmp_path) is None
    user_file = no_cloud / ".config" / "openstack" / "clouds.yaml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text("clouds: {}\n")
    assert cloud.openstack_credentials(env, cwd=tmp_path) == str(user_file)
    explicit = tmp_path / "elsewhere.yaml"
    explicit.write_text("clouds: {}\n")
    env["OS_CLIENT_CONFIG_FILE"] = str(explicit)
    assert cloud.openstack_credentials(env, cwd=tmp_path) == str(explicit)


def test_credentials_from_stack_config(no_cloud: Path, tmp_path: Path) -> None:
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text("config:\n  openstack:cloud: mycloud\n")
    env = {"HOME": str(no_cloud)}
    assert cloud.openstack_credentials(env, cwd=tmp_path, stack_file=stack_file) is None
    stack_file.write_text("config:\n  openstack:authUrl: https://keystone.example:5000/v3\n")
    found = cloud.openstack_credentials(env, cwd=tmp_path, stack_file=stack_file)
    assert found == "Pulumi.dev.yaml (openstack:authUrl)"


class FakeStack:
    """Plays back a successful `pulumi up` / `pulumi destroy` through the callbacks."""

    def __init__(self, fail_with: str | None = None) -> None:
        self.fail_with = fail_with
        self.calls: list[str] = []

    def _play(self, on_output: Any, on_event: Any) -> None:
        on_output("Updating (dev)\n")
        meta = SimpleNamespace(
            op=auto.OpType.CREATE, urn="urn:pulumi:dev::meshlab::openstack:Instance::nodes-x"
        )
        on_event(_event(resource_pre_event=SimpleNamespace(metadata=meta)))
        on_event(_event(res_outputs_event=SimpleNamespace()))
        if self.fail_with:
            raise auto.CommandError(CommandResult("", self.fail_with, 255))

    def up(self, on_output: Any, on_event: Any) -> Any:
        self.calls.append("up")
        self._play(on_output, on_event)
        recorded = json.loads(FIXTURE.read_text())
        result_outputs = {
            key: auto.OutputValue(value, secret=key == outputs.SSH_PRIVATE_KEY)
            for key, value in recorded.items()
        }
        summary = SimpleNamespace(resource_changes={"create": 29})
        return SimpleNamespace(outputs=result_outputs, summary=summary)

    def destroy(self, on_output: Any, on_event: Any) -> Any:
        self.calls.append("destroy")
        self._play(on_output, on_event)
        return SimpleNamespace(summary=SimpleNamespace(resource_changes={"delete": 29}))


def _event(**kinds: Any) -> SimpleNamespace:
    names = ("resource_pre_event", "res_outputs_event", "res_op_failed_event")
    return SimpleNamespace(**{name: kinds.get(name) for name in names})


@pytest.fixture
def cloud_ready(fake_cli: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("OS_CLOUD", "mycloud")
    seen: dict[str, Any] = {"stack": FakeStack(), "cli": fake_cli}

    def open_stack(**kwargs: Any) -> FakeStack:
        seen.update(kwargs)
        return seen["stack"]

    monkeypatch.setattr(auto, "create_or_select_stack", open_stack)
    monkeypatch.setattr(auto, "select_stack", open_stack)
    return seen


def test_up_runs_the_repository_program_and_prints_the_inventory(
    cloud_ready: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.up("dev")
    printed = capsys.readouterr().out
    assert cloud_ready["stack_name"] == "dev"
    assert cloud_ready["work_dir"] == str(REPO_ROOT)
    # Not on PATH: the Automation API is pointed at the installer's ~/.pulumi/bin/pulumi.
    assert cloud_ready["opts"].pulumi_command.command == str(cloud_ready["cli"])
    assert cloud_ready["stack"].calls == ["up"]
    assert "Updating (dev)" in printed
    assert "pulumi up: 29 create" in printed
    assert "meshlab-dev-worker-0" in printed and "10.42.0.20" in printed
    assert "kube_control_plane:" in printed  # the inventory, as YAML
    assert "ansible-playbook experiment.yml" in printed
    assert "PRIVATE KEY" not in printed  # secrets stay out of the terminal


def test_up_turns_pulumi_errors_into_one_line(cloud_ready: dict[str, Any]) -> None:
    cloud_ready["stack"] = FakeStack(
        fail_with="Updating (dev)\nerror: getting secrets manager: passphrase must be set"
    )
    with pytest.raises(MeshlabError) as caught:
        cloud.up("dev")
    assert str(caught.value) == (
        "pulumi failed: error: getting secrets manager: passphrase must be set"
    )


def test_down_destroys_the_selected_stack(
    cloud_ready: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.down("lab")
    assert cloud_ready["stack_name"] == "lab"
    assert cloud_ready["stack"].calls == ["destroy"]
    printed = capsys.readouterr().out
    assert "pulumi destroy: 29 delete" in printed
    assert "pulumi stack rm lab" in printed


def test_down_of_an_unknown_stack_says_so(
    cloud_ready: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(**kwargs: Any) -> None:
        raise auto.StackNotFoundError(CommandResult("", "error: no stack named 'gone'", 255))

    monkeypatch.setattr(auto, "select_stack", missing)
    with pytest.raises(MeshlabError, match="no Pulumi stack 'gone' to destroy"):
        cloud.down("gone")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("\n code: 255\n stdout: x\n stderr: error: boom\n", "error: boom"),
        ("warning: a\nerror: first\nerror: second\n", "error: second"),
        ("just text\nlast line\n", "last line"),
        ("", "no output"),
    ],
)
def test_pulumi_error_line(text: str, line: str) -> None:
    assert cloud.pulumi_error_line(text) == line
