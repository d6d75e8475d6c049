"""`meshlab engine ...` (hidden): the experiment engine's steps, as experiment.yml calls them.
Each prints one typed message on stdout (meshlab/experiment/protocol.py), one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from meshlab.cli.base import print_json, typer_app
from meshlab.errors import MeshlabError

if TYPE_CHECKING:
    from pydantic import BaseModel

app = typer_app("The experiment engine's steps (called by experiment.yml).")


def _say(message: BaseModel) -> None:
    typer.echo(message.model_dump_json())


def _json(text: str | None, option: str, kind: type = dict) -> Any:
    if not text:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise MeshlabError(f"{option}: not valid JSON ({err})") from None
    if not isinstance(doc, kind):
        raise MeshlabError(f"{option}: expected a JSON {'object' if kind is dict else 'list'}")
    return doc


@app.command()
def init(
    spec: Annotated[Path, typer.Option(help="the experiment definition")],
    results_dir: Annotated[Path, typer.Option()] = Path("results"),
    resume: Annotated[str, typer.Option(help="an interrupted run directory ('' = new run)")] = "",
    testbed: Annotated[str, typer.Option(help="local | cloud")] = "local",
    inventory_json: Annotated[str, typer.Option(help="cloud: groups -> hosts")] = "",
    versions_json: Annotated[str, typer.Option(help="cloud: pinned versions")] = "",
    images_json: Annotated[str, typer.Option(help="cloud: {key: {image, tag, digest}}")] = "",
) -> None:
    """Validate the definition, write manifest.json with the seeded plan (or resume one)."""
    from meshlab.experiment import engine

    _say(
        engine.init(
            spec,
            results_dir,
            Path(resume) if resume else None,
            testbed,
            _json(inventory_json, "--inventory-json"),
            _json(versions_json, "--versions-json"),
            _json(images_json, "--images-json"),
        )
    )


@app.command("next")
def next_(run_dir: Path) -> None:
    """(cloud) The next plan step and the arms it needs, or done."""
    from meshlab.experiment import cloud_steps

    _say(cloud_steps.next_cloud(run_dir))


@app.command()
def run(run_dir: Path) -> None:
    """(local) Run steps in this process until the plan is done, the noise budget is spent or
    the next step needs another placement or flood; progress goes to the run's events.jsonl."""
    from meshlab.experiment import local_steps

    _say(local_steps.run_local(run_dir))


@app.command()
def prepare(
    run_dir: Path,
    index: Annotated[int, typer.Option()],
    target_url: Annotated[str, typer.Option(help="the server as k6 reaches it: http://HOST")],
    k6_memory_limit: Annotated[
        str, typer.Option(help="the k6 container's memory limit (workload_k6_memory), e.g. 1Gi")
    ] = "1Gi",
) -> None:
    """(cloud) Create a trial's directory and load.js; say what runs where."""
    from meshlab.experiment import cloud_steps

    print_json(cloud_steps.prepare(run_dir, index, target_url, _bytes(k6_memory_limit)))


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (512Mi, 1Gi, 1G, 1000000) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix) and quantity[: -len(suffix)].isdigit():
            return int(quantity[: -len(suffix)]) * factor
    if quantity.isdigit():
        return int(quantity)
    raise MeshlabError(f"--k6-memory-limit: {quantity!r} is not a memory quantity such as 1Gi")


@app.command()
def ingest(
    run_dir: Path,
    index: Annotated[int, typer.Option()],
    raw: Annotated[Path, typer.Option(help="directory of the fetched raw files")],
) -> None:
    """(cloud) Judge a trial from the raw files fetched from the nodes."""
    from meshlab.experiment import cloud_steps

    _say(cloud_steps.ingest(run_dir, index, raw))


@app.command()
def finish(run_dir: Path, interrupted: Annotated[bool, typer.Option()] = False) -> None:
    """Close the run: complete, interrupted or environment-unfit."""
    from meshlab.experiment import engine

    _say(engine.finish(run_dir, interrupted))


@app.command()
def preflight(
    spec: Annotated[Path, typer.Option(help="the experiment definition")] = Path(
        "experiments/cloud.yml"
    ),
    resume: Annotated[str, typer.Option(help="a run directory: check its experiment")] = "",
    images_json: Annotated[str, typer.Option(help="{key: {image, tag, pinned, resolved}}")] = "",
    nodes_json: Annotated[str, typer.Option(help="[{name, groups, vcpus, memory_mb, ...}]")] = "",
    kubelet_json: Annotated[str, typer.Option(help="{reserved_cpus, ...}")] = "",
    manifests: Annotated[str, typer.Option(help="directory of the rendered manifests")] = "",
    kubelet_minor: Annotated[int, typer.Option(help="Kubernetes minor version (1.x)")] = 35,
) -> None:
    """(cloud) What the cluster cannot run, refused before the install (playbooks/preflight.yml)."""
    from meshlab.testbeds.cloud import preflight as checks

    print_json(
        checks.run(
            spec,
            Path(resume) if resume else None,
            _json(images_json, "--images-json"),
            _json(nodes_json, "--nodes-json", list),
            _json(kubelet_json, "--kubelet-json"),
            Path(manifests) if manifests else None,
            kubelet_minor,
        ),
        indent=None,
    )


@app.command("arm-ready")
def arm_ready(
    snapshots: Annotated[Path, typer.Option(help="directory of the nodes' snapshot JSON files")],
    dataplane: Annotated[str, typer.Option(help="iptables | ebpf")],
    rearm: Annotated[
        bool, typer.Option(help="print the cgroup_info_map entries to delete")
    ] = False,
    probe_dir: Annotated[str, typer.Option(help="directory of the probe's answers")] = "",
) -> None:
    """(cloud) Before the trials: is the arm on every node what it says? (cluster.arm_ready)"""
    from meshlab.testbeds.cloud import arm_ready as checks

    print_json(
        checks.run(snapshots, dataplane, rearm, Path(probe_dir) if probe_dir else None),
        indent=None,
    )


@app.command("cluster-lease")
def cluster_lease(
    holder: Annotated[str, typer.Option(help="who asks: controller and run directory")],
    namespace: Annotated[str, typer.Option()] = "meshlab",
    lease_json: Annotated[str, typer.Option(help="kubectl get lease -o json ('' = none)")] = "",
    release: Annotated[bool, typer.Option(help="give it up (delete) instead")] = False,
) -> None:
    """(cloud) The Lease manifest to apply for this run, {"delete": true}, or a refusal naming
    the run that holds the cluster."""
    from meshlab.testbeds.cloud import lease

    manifest = lease.decide(_json(lease_json, "--lease-json"), holder, namespace, release=release)
    print_json({"delete": True} if manifest is None else {"apply": manifest})
