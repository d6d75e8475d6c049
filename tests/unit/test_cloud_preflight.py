"""The preflight refuses in the first minute what the cloud path used to refuse, or hit, after the
install: a node too small for its pods, an ebpf arm without a resolvable Merbridge digest, a
kernel Merbridge cannot run on. Python checks first, then the playbooks as experiment.yml runs them
(every VM on a closed loopback port or on this machine; the registry on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloud_render import DIGEST, REPO, fake_registry, playbook
from test_cloud_schedule import KUBELET_MINOR, kubelet, stack_hosts
from typer.testing import CliRunner

from meshlab.cli import app
from meshlab.testbeds.cloud.preflight import summary as preflight_summary

MERBRIDGE = {"image": "ghcr.io/merbridge/merbridge", "tag": "0.8.1"}


def images(**merbridge: str) -> str:
    return json.dumps({"merbridge": {**MERBRIDGE, "pinned": "", "resolved": "", **merbridge}})


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    """`meshlab engine preflight ARGV`: (exit code, its JSON line or its refusal lines, with the
    `meshlab: ` prefix cut so the lines read as the refusals themselves)."""
    result = CliRunner().invoke(app, ["engine", "preflight", *argv])
    return result.exit_code, [line.removeprefix("meshlab: ") for line in result.output.splitlines()]


def budget_args(rendered: Path, hosts: list[dict[str, Any]]) -> list[str]:
    return [
        f"--nodes-json={json.dumps(hosts)}",
        f"--manifests={rendered}",
        f"--kubelet-json={json.dumps(kubelet(rendered))}",
        f"--kubelet-minor={KUBELET_MINOR}",
    ]


def budget(capsys: pytest.CaptureFixture[str], rendered: Path, **stack: str):
    """The default experiment, its digest resolved, on the stack with this config."""
    return run(
        capsys,
        "--spec=experiments/cloud.yml",
        f"--images-json={images(resolved=DIGEST)}",
        *budget_args(rendered, stack_hosts(**stack)),
    )


def test_the_default_stack_passes_and_says_what_it_checked(
    rendered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = budget(capsys, rendered)
    assert rc == 0, out
    (line,) = out
    result = json.loads(line)
    assert result["images"]["merbridge"] == {**MERBRIDGE, "digest": DIGEST}
    loadtest = next(n for n in result["nodes"].values() if n["role"] == "loadtest")
    assert loadtest["requested_cpu_m_during_switch"] <= loadtest["allocatable_cpu_m"] == 3000


def test_a_stack_whose_loadtest_node_is_too_small_is_refused_in_one_line(
    rendered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = budget(capsys, rendered, vcpus="2", ramMb="8192")
    assert rc == 2
    assert out and all(line.startswith("error: ") for line in out)
    lt = [line for line in out if "-loadtest-0 (loadtest)" in line]
    assert lt, out
    assert "CPU requests 2550m > allocatable 1000m (2 vCPU - 1 reserved" in lt[0]
    assert "workload_k6_cpu" in lt[0]  # names the field that sets the biggest request


def test_an_ebpf_arm_whose_digest_cannot_be_resolved_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out = run(
        capsys, "--spec=experiments/cloud.yml", f"--images-json={images(error='HTTP 404')}"
    )
    assert rc == 2
    assert out == [
        "error: experiments/cloud.yml: arms.ebpf.dataplane: ebpf needs "
        "ghcr.io/merbridge/merbridge:0.8.1 by digest, which the controller could not resolve "
        "(HTTP 404) and meshlab_images.merbridge.digest does not pin"
    ]


def test_an_iptables_only_experiment_needs_no_digest(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run(capsys, "--spec=experiments/aa.yml", f"--images-json={images(error='offline')}")
    assert rc == 0, out
    assert json.loads(out[0])["images"]["merbridge"]["digest"] == ""


def test_a_pinned_digest_that_no_longer_matches_the_tag_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = "sha256:" + "f" * 64
    rc, out = run(
        capsys,
        "--spec=experiments/cloud.yml",
        f"--images-json={images(pinned=other, resolved=DIGEST)}",
    )
    assert rc == 2
    assert out[0].startswith(f"error: meshlab_images.merbridge.digest: pinned {other} but")
    # Pinned and the registry unreachable: the pin is used.
    rc, out = run(capsys, "--spec=experiments/cloud.yml", f"--images-json={images(pinned=other)}")
    assert rc == 0 and json.loads(out[0])["images"]["merbridge"]["digest"] == other


def test_a_kernel_merbridge_cannot_run_on_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    hosts = [
        {"name": "lt1", "groups": ["k8s_cluster", "kube_node", "loadtest"], "vcpus": 4,
         "memory_mb": 8192, "kernel": "5.4.0-150-generic", "cgroup2": False},
    ]  # fmt: skip
    rc, out = run(
        capsys,
        "--spec=experiments/cloud.yml",
        f"--images-json={images(resolved=DIGEST)}",
        f"--nodes-json={json.dumps(hosts)}",
    )
    assert rc == 2
    assert out[0] == (
        "error: node lt1: kernel 5.4.0-150-generic < 5.7, the least Merbridge 0.8.1 runs on "
        "(its README.md)"
    )
    assert out[1].startswith("error: node lt1: no cgroup v2")


def test_a_design_the_cluster_cannot_run_is_refused_by_the_preflight(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out = run(capsys, "--spec=experiments/aa-duet.yml", "--images-json={}")
    assert rc == 2
    assert out[0].startswith("error: experiments/aa-duet.yml: design: duet is not supported")


# ---- the playbooks ----------------------------------------------------------------------------


def test_same_node_on_the_cloud_is_refused_where_it_does_not_fit_and_two_placements_always(
    rendered: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = yaml.safe_load((REPO / "experiments/cloud.yml").read_text())
    same = tmp_path / "same.yml"
    same.write_text(yaml.safe_dump({**base, "placement": ["same-node"]}))
    argv = [f"--spec={same}", f"--images-json={images(resolved=DIGEST)}"]
    rc, out = run(capsys, *argv, *budget_args(rendered, stack_hosts()))
    assert rc == 2
    assert any(
        line.startswith("error: placement: same-node puts k6 and the server on one node: ")
        and "(loadtest)" in line
        for line in out
    ), out
    rc, out = run(capsys, *argv, *budget_args(rendered, stack_hosts(vcpus="8", ramMb="16384")))
    assert rc == 0, out
    both = tmp_path / "both.yml"
    both.write_text(yaml.safe_dump({**base, "placement": ["cross-node", "same-node"]}))
    rc, out = run(capsys, f"--spec={both}", f"--images-json={images(resolved=DIGEST)}")
    assert rc == 2 and "placement: the cloud testbed runs one placement per run" in out[0], out


def test_experiment_yml_runs_the_preflight_first() -> None:
    plays = yaml.safe_load((REPO / "experiment.yml").read_text())
    assert plays[0]["ansible.builtin.import_playbook"] == "playbooks/preflight.yml"
    assert plays[1]["ansible.builtin.import_playbook"] == "playbooks/experiment_plan.yml"


def test_the_registry_token_flow_resolves_the_digest(tmp_path: Path) -> None:
    out = tmp_path / "digest.json"
    with fake_registry() as url:
        proc = playbook(
            "-i", "localhost,", "tests/cloud/resolve_digest.yml",
            "-e", f"registry={url}", "-e", f"out={out}",
        )  # fmt: skip
        seen = list(fake_registry.seen)  # type: ignore[attr-defined]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert json.loads(out.read_text()) == {"digest": DIGEST, "error": ""}
    assert seen == [
        "HEAD /v2/merbridge/merbridge/manifests/0.8.1",
        "GET /token?scope=repository:merbridge/merbridge:pull&service=ghcr.io",
        "HEAD /v2/merbridge/merbridge/manifests/0.8.1",
    ]


def test_an_unreachable_registry_gives_a_reason(tmp_path: Path) -> None:
    out = tmp_path / "digest.json"
    proc = playbook(
        "-i", "localhost,", "tests/cloud/resolve_digest.yml",
        "-e", "registry=http://127.0.0.1:1", "-e", f"out={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    result = json.loads(out.read_text())
    assert result["digest"] == ""
    assert result["error"].startswith("http://127.0.0.1:1/v2/merbridge/merbridge/manifests/0.8.1:")
    assert "refused" in result["error"].lower()


def test_experiment_yml_stops_on_an_unresolvable_digest_before_plan_and_install(
    tmp_path: Path,
) -> None:
    # Issue 15, defect 5: the refusal came after site.yml's 15-25 minutes. Now the first play
    # refuses; no VM is contacted (they sit on a closed loopback port) and nothing is planned.
    proc = playbook(
        "-i", "tests/cloud/preflight_inventory.yml", "experiment.yml",
        "-e", "experiment=experiments/cloud.yml", "-e", f"results_dir={tmp_path}",
        "-e", "preflight_registry_url=http://127.0.0.1:1",
    )  # fmt: skip
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert "arms.ebpf.dataplane: ebpf needs ghcr.io/merbridge/merbridge:0.8.1 by digest" in said
    assert "PLAY [Preflight: every VM" not in said and "PLAY [Prepare every VM" not in said
    assert list(tmp_path.iterdir()) == []  # no run planned


def test_the_preflight_budgets_real_facts_and_refuses_a_two_cpu_machine(tmp_path: Path) -> None:
    # Every "VM" is this machine (local connection): play 2 gathers its facts, play 3 renders the
    # roles with the run's variables and refuses, since 2 vCPUs cannot hold the k6 pod.
    inventory = yaml.safe_load((REPO / "tests/cloud/preflight_inventory.yml").read_text())
    python = "{{ ansible_playbook_python }}"
    inventory["all"]["vars"] = {"ansible_connection": "local", "ansible_python_interpreter": python}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    with fake_registry() as url:
        proc = playbook(
            "-i", str(tmp_path / "inventory.yml"), "playbooks/preflight.yml",
            "-e", "experiment=experiments/cloud.yml", "-e", f"preflight_registry_url={url}",
            "-e", "workload_k6_cpu=3",
        )  # fmt: skip
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, said[-3000:]
    assert "PLAY [Preflight: every pod fits its node" in said
    # k6 at 3 CPUs (an -e override reached the render) + its sidecar: 4 exclusive CPUs.
    assert "error: node lt1 (loadtest): CPU requests 4550m > allocatable" in said, said[-3000:]


def test_meshlab_preflight_without_a_cloud_says_it_checked_the_experiment_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Issue 22: it used to print only "preflight: ok (0 changed, 3.4 s)" with no node checked.
    monkeypatch.setenv("MESHLAB_INVENTORY", "local")
    result = CliRunner().invoke(app, ["preflight", "experiments/cloud.yml"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("preflight: checked the experiment only; no nodes to check")
    assert (
        "preflight: checked: experiments/cloud.yml against what the cloud testbed runs"
        in (lines[1])
    )
    assert not any(line.rstrip().endswith("ok") or ": ok " in line for line in lines)


def test_meshlab_preflight_without_a_cloud_still_refuses_what_the_cloud_cannot_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MESHLAB_INVENTORY", "local")
    base = yaml.safe_load((REPO / "experiments/cloud.yml").read_text())
    duet = tmp_path / "duet.yml"
    duet.write_text(yaml.safe_dump({**base, "design": "duet"}))
    result = CliRunner().invoke(app, ["preflight", str(duet)])
    assert result.exit_code != 0
    assert "design: duet is not supported on the cloud testbed" in " ".join(result.output.split())


# ---- the preflight says what it checked and what it could not -----------------------------------


def test_the_preflight_summary_never_says_a_bare_ok() -> None:
    no_cloud = {"experiment": "experiments/cloud.yml", "experiment_checked": True, "nodes": []}
    lines = preflight_summary(no_cloud)
    assert lines[0].startswith("checked the experiment only; no nodes to check")
    assert any(line.startswith("not checked: image digests, the VMs") for line in lines)
    cloud = {
        **no_cloud,
        "nodes": ["cp1", "w1", "lt1"],
        "monitoring": ["mon1"],
        "images": {
            "merbridge": {
                "image": "ghcr.io/merbridge/merbridge",
                "tag": "0.8.1",
                "digest": DIGEST,
            }
        },
        "budgets_checked": True,
    }
    lines = preflight_summary(cloud)
    assert f"checked: merbridge image ghcr.io/merbridge/merbridge:0.8.1 is {DIGEST}" in lines
    assert any("4 VMs answer over SSH" in line for line in lines)
    assert any("on the 3 Kubernetes nodes" in line for line in lines)
    assert lines[-1].startswith("not checked here: that Merbridge's programs attach")
    assert preflight_summary(None)[0].startswith("nothing checked")
    assert all(line.strip() != "ok" for line in lines)
