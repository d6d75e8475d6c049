"""`meshlab ebpf ...` (hidden): build, check, attach, detach and inspect the eBPF arm.

    meshlab ebpf attach --mode ebpf --pod client=198.18.1.10=/sys/fs/cgroup/unified/meshlab/client \
        --pod server=198.18.1.20=/sys/fs/cgroup/unified/meshlab/server --node server=2 --json
    meshlab ebpf detach --cgroup-root /sys/fs/cgroup/unified/meshlab --json
    meshlab ebpf status --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from meshlab.cli.base import print_json, typer_app
from meshlab.core.arms import EBPF_DATAPLANES
from meshlab.errors import MeshlabError
from meshlab.testbeds.local.topology import topology

DEFAULT_PIN_ROOT = topology().bpf_pin_root  # the local testbed's pins
app = typer_app("The eBPF arm's programs: build, check, attach, detach, status (docs/ebpf.md).")
PinRoot = Annotated[Path, typer.Option(help="bpffs directory of the arm's pins")]
Json = Annotated[bool, typer.Option("--json", help="print the result as JSON")]


def _pods(specs: list[str], fields: int, form: str, option: str = "--pod") -> list[list[str]]:
    """`--pod NAME=IP=CGROUP` (attach), `--pod NAME=CGROUP` (detach), `--node NAME=N`, split."""
    out = []
    for spec in specs:
        parts = spec.split("=", fields - 1)
        if len(parts) != fields or not all(parts):
            raise MeshlabError(f"{option} {spec!r}: expected {form}")
        out.append(parts)
    return out


def _show(result: dict[str, Any], as_json: bool) -> None:
    from meshlab.ebpf import dataplane

    if as_json:
        print_json(result, indent=2)
        return
    typer.echo(f"mode: {result['mode']}  (pins: {result['pin_root']})")
    for cgroup, entries in result["cgroups"].items():
        progs = ", ".join(f"{e['attach_type']}={e['program']}" for e in entries)
        typer.echo(f"  {cgroup}: {progs}")
    typer.echo(f"  msg_verdict on {dataplane.SOCKHASH}: {result['msg_verdict_attached']}")
    for name, count in result["maps"].items():
        typer.echo(f"  map {name}: {count['entries']}/{count['max_entries']}")
    if result["counters"]:
        typer.echo("  counters: " + " ".join(f"{k}={v}" for k, v in result["counters"].items()))


@app.command()
def attach(
    pod: Annotated[list[str], typer.Option(help="a meshed pod: NAME=IP=CGROUP (repeat per pod)")],
    mode: Annotated[str, typer.Option(help=" | ".join(EBPF_DATAPLANES))] = "ebpf",
    node: Annotated[
        list[str] | None,
        typer.Option(help="the node a pod runs on: NAME=N (repeat; default 1 for every pod)"),
    ] = None,
    pin_root: PinRoot = DEFAULT_PIN_ROOT,
    as_json: Json = False,
) -> None:
    """Attach (or switch) the eBPF arm for these pods."""
    from meshlab.ebpf import dataplane

    pods = _pods(pod, 3, "NAME=IP=CGROUP")
    cgroups = {name: Path(cg) for name, _ip, cg in pods}
    ips = {name: ip for name, ip, _cg in pods}
    nodes = {}
    for name, number in _pods(node or [], 2, "NAME=N", "--node"):
        if not number.isdigit():
            raise MeshlabError(f"--node {name}={number}: N must be a node number (1, 2, ...)")
        nodes[name] = int(number)
    result = dataplane.attach(cgroups, ips, mode, pod_nodes=nodes, pin_root=pin_root)
    _show(result, as_json)


@app.command()
def detach(
    pod: Annotated[
        list[str] | None,
        typer.Option(help="take only this pod out: NAME=CGROUP (repeat); default: everything"),
    ] = None,
    cgroup_root: Annotated[
        Path | None,
        typer.Option(help="also remove ml_* programs attached under this subtree (lost pins)"),
    ] = None,
    pin_root: PinRoot = DEFAULT_PIN_ROOT,
    as_json: Json = False,
) -> None:
    """Detach the eBPF arm (from some pods, or everything and unpin)."""
    from meshlab.ebpf import dataplane

    pods = {name: Path(cg) for name, cg in _pods(pod, 2, "NAME=CGROUP")} if pod else None
    result = dataplane.detach(pin_root, cgroup_root, pods)
    if as_json:
        print_json(result, indent=2)
    else:
        n = sum(len(v) for v in result["cgroups"].values())
        typer.echo(f"detached {n} program(s); unpinned: {result['unpinned']}")


@app.command()
def status(pin_root: PinRoot = DEFAULT_PIN_ROOT, as_json: Json = False) -> None:
    """Attached programs, map counts, mode per pod cgroup."""
    from meshlab.ebpf import dataplane

    _show(dataplane.status(pin_root), as_json)


@app.command()
def build(
    force: Annotated[bool, typer.Option(help="rebuild even if up to date")] = False,
    as_json: Json = False,
) -> None:
    """Compile bpf/*.c into bpf/build/ against this kernel's BTF."""
    from meshlab.ebpf import build as builder

    objects = {k: str(v) for k, v in builder.ensure_built(force=force).items()}
    if as_json:
        print_json({"objects": objects}, indent=2)
    else:
        typer.echo("built: " + ", ".join(sorted(objects)))


@app.command()
def check() -> None:
    """Check the kernel and toolchain features the eBPF arm needs."""
    from meshlab.ebpf import features

    features.require(build=True)
    typer.echo("eBPF arm: every kernel and toolchain feature is present")
