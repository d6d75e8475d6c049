"""`meshlab testbed ...`: the local testbed (network namespaces on this host)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from meshlab.cli.base import print_json, typer_app
from meshlab.core.arms import DATAPLANES
from meshlab.core.placement import PLACEMENTS

app = typer_app("The local testbed (network namespaces).")
ARM_HELP = " | ".join(DATAPLANES)


@app.command("up")
def testbed_up(
    dataplane: Annotated[str, typer.Option(help=ARM_HELP)] = "iptables",
    flood: Annotated[
        str, typer.Option(help="kube-proxy flood PODSxSERVICES, e.g. 50x500, or off")
    ] = "off",
    duet: Annotated[
        bool, typer.Option(help="add a second client/server pair (duet designs)")
    ] = False,
    placement: Annotated[
        str,
        typer.Option(
            help=f"{' | '.join(PLACEMENTS)}: cross-node puts the server pods on node 2 "
            "(on a running testbed: moves them)"
        ),
    ] = "same-node",
) -> None:
    """Bring the local testbed up (idempotent; restarts dead daemons)."""
    from meshlab.testbeds.local import commands

    commands.up(dataplane, flood, duet, placement)


@app.command("dataplane")
def local_dataplane(
    arm: Annotated[str, typer.Argument(help=ARM_HELP)],
    pair: Annotated[list[int] | None, typer.Option(help="only this pod pair (repeatable)")] = None,
) -> None:
    """Switch the dataplane arm at runtime (workloads keep running)."""
    from meshlab.testbeds.local import commands

    commands.set_dataplane(arm, pair)


@app.command("flood")
def testbed_flood(
    size: Annotated[str, typer.Argument(help="PODSxSERVICES (e.g. 50x500) or off")],
) -> None:
    """Write (or remove) kube-proxy-shaped flood rules in the node namespace."""
    from meshlab.testbeds.local import commands

    commands.set_flood(size)


@app.command("status")
def testbed_status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show the testbed: pods, processes, arm, flood, rule count."""
    from meshlab.testbeds.local import state

    state.require_root()
    doc = state.status(state.load())
    if as_json:
        print_json(doc, indent=2)
        return
    typer.echo(
        f"dataplane: {doc['dataplane']}   flood: {doc['flood']['spec']} "
        f"({doc['flood']['rules']} iptables-save lines in {doc['node']['netns']})"
    )
    typer.echo(f"server_url: {doc['server_url']}   placement: {doc['placement']}")
    for name, pod in doc["pods"].items():
        up = "up" if pod["up"] else "DOWN"
        typer.echo(
            f"  {name:8} {pod['ip']:14} {pod['netns']:16} on {pod['node']:14} {up:4} "
            f"pids {pod['pids']}"
        )


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def testbed_exec(
    ctx: typer.Context,
    pod: Annotated[str, typer.Argument(help="node, node2, client, server, ...")],
) -> None:
    """Run a command inside a pod: meshlab testbed exec POD -- CMD..."""
    from meshlab.testbeds.local import commands

    raise typer.Exit(commands.exec_in_pod(pod, list(ctx.args)))


@app.command("down")
def testbed_down() -> None:
    """Remove every namespace, rule, pin, cgroup and process the testbed made."""
    from meshlab.testbeds.local import commands

    commands.down()


@app.command("apply-arm", hidden=True)
def testbed_apply_arm(
    arm: Annotated[str, typer.Argument(help=ARM_HELP)],
    pair: Annotated[list[int] | None, typer.Option(help="only this pod pair (repeatable)")] = None,
) -> None:
    """(roles/local_dataplane) Put pod pairs in an arm; what changed, as JSON. No lease: the
    play that calls it belongs to a command that holds it."""
    from meshlab.testbeds.local import dataplane
    from meshlab.testbeds.local import state as tb_state

    current = tb_state.load()
    change = dataplane.apply(current, arm, pair)
    tb_state.save(current)
    print_json(change.as_dict())


@app.command("record-state", hidden=True)
def testbed_record_state(
    topology: Annotated[str, typer.Option(help="the play's topology, JSON")],
    update: Annotated[str, typer.Option(help="keys to record over it (flood, ...), JSON")] = "{}",
) -> None:
    """(roles/local_state) Write testbed.json: the topology over what was recorded, then the
    update, validated before it replaces the file."""
    from meshlab.errors import MeshlabError
    from meshlab.testbeds.local import state as tb_state

    try:
        docs = json.loads(topology), json.loads(update)
    except json.JSONDecodeError as err:
        raise MeshlabError(f"record-state: not valid JSON ({err})") from None
    print_json({"changed": tb_state.record(*docs)})
