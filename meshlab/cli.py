"""The `meshlab` command line (contract: docs/architecture.md, "CLI")."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from meshlab.errors import MeshlabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Paired, noise-gated benchmarks of sidecar redirection: iptables vs eBPF.",
)
testbed_app = typer.Typer(no_args_is_help=True, help="The local testbed (network namespaces).")
app.add_typer(testbed_app, name="testbed")


def _fail(err: Exception) -> None:
    typer.echo(f"meshlab: error: {err}", err=True)
    raise typer.Exit(2)


# --- experiments ---------------------------------------------------------------------------


@app.command()
def run(
    experiment: Annotated[
        Path, typer.Argument(help="an experiment definition, e.g. experiments/default.yml")
    ],
    resume: Annotated[
        Path | None, typer.Option(help="continue this interrupted run directory")
    ] = None,
    results_dir: Annotated[Path, typer.Option(help="where run directories go")] = Path("results"),
    report_: Annotated[
        bool, typer.Option("--report/--no-report", help="build the report at the end")
    ] = True,
) -> None:
    """Run a paired experiment (experiment.yml through ansible-runner) with a progress bar."""
    from meshlab.experiment import runner

    try:
        runner.run(experiment, resume, results_dir, report=report_)
    except MeshlabError as err:
        _fail(err)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# --- report / compare (meshlab.analysis) -----------------------------------------------------


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory under results/")]) -> None:
    """(Re)build RUN_DIR/derived/: tables, statistics, figures, summary.md and report.html."""
    from meshlab.analysis.report import build

    try:
        out = build(run_dir)
    except MeshlabError as err:
        _fail(err)
    typer.echo(f"report: {out}")


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="the first run directory")],
    run_b: Annotated[Path, typer.Argument(help="the rerun to compare against it")],
    force: Annotated[bool, typer.Option(help="compare even if the specs differ")] = False,
) -> None:
    """Did a rerun (e.g. in a quieter cloud) agree with the first run?"""
    from meshlab.analysis.compare import compare as compare_runs

    try:
        text = compare_runs(run_a, run_b, force=force)
    except MeshlabError as err:
        _fail(err)
    typer.echo(text)


# --- cloud (Pulumi Automation API) -----------------------------------------------------------


@app.command()
def up(stack: Annotated[str, typer.Option(help="Pulumi stack name")] = "dev") -> None:
    """Provision the OpenStack lab with Pulumi (needs the pulumi CLI and cloud credentials)."""
    from meshlab import cloud

    try:
        cloud.up(stack)
    except MeshlabError as err:
        _fail(err)


@app.command()
def down(stack: Annotated[str, typer.Option(help="Pulumi stack name")] = "dev") -> None:
    """Destroy the OpenStack lab (pulumi destroy)."""
    from meshlab import cloud

    try:
        cloud.down(stack)
    except MeshlabError as err:
        _fail(err)


# --- the local testbed ---------------------------------------------------------------------


def _testbed_call(fn, *args, **kwargs):
    from meshlab.testbed import commands  # noqa: F401  (imported lazily: ansible is slow to load)

    try:
        return fn(*args, **kwargs)
    except MeshlabError as err:
        _fail(err)


@testbed_app.command("up")
def testbed_up(
    dataplane: Annotated[str, typer.Option(help="iptables | ebpf | ebpf-connect")] = "iptables",
    flood: Annotated[
        str, typer.Option(help="kube-proxy flood PODSxSERVICES, e.g. 50x500, or off")
    ] = "off",
    duet: Annotated[
        bool, typer.Option(help="add a second client/server pair (duet designs)")
    ] = False,
) -> None:
    """Bring the local testbed up (idempotent; restarts dead daemons)."""
    from meshlab.testbed import commands

    _testbed_call(commands.up, dataplane, flood, duet)


@testbed_app.command("dataplane")
def testbed_dataplane(
    arm: Annotated[str, typer.Argument(help="iptables | ebpf | ebpf-connect")],
    pair: Annotated[list[int] | None, typer.Option(help="only this pod pair (repeatable)")] = None,
) -> None:
    """Switch the dataplane arm at runtime (workloads keep running)."""
    from meshlab.testbed import commands

    _testbed_call(commands.set_dataplane, arm, pair)


@testbed_app.command("flood")
def testbed_flood(
    size: Annotated[str, typer.Argument(help="PODSxSERVICES (e.g. 50x500) or off")],
) -> None:
    """Write (or remove) kube-proxy-shaped flood rules in the node namespace."""
    from meshlab.testbed import commands

    _testbed_call(commands.set_flood, size)


@testbed_app.command("status")
def testbed_status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show the testbed: pods, processes, arm, flood, rule count."""
    import json

    from meshlab.testbed import state

    def read() -> dict:
        state.require_root()
        return state.status(state.load())

    doc = _testbed_call(read)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(
        f"dataplane: {doc['dataplane']}   flood: {doc['flood']['spec']} "
        f"({doc['flood']['rules']} iptables-save lines in {doc['node']['netns']})"
    )
    typer.echo(f"server_url: {doc['server_url']}")
    for name, pod in doc["pods"].items():
        up = "up" if pod["up"] else "DOWN"
        typer.echo(f"  {name:8} {pod['ip']:14} {pod['netns']:16} {up:4} pids {pod['pids']}")


@testbed_app.command(
    "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def testbed_exec(
    ctx: typer.Context,
    pod: Annotated[str, typer.Argument(help="node, client, server, ...")],
) -> None:
    """Run a command inside a pod: meshlab testbed exec POD -- CMD..."""
    from meshlab.testbed import commands

    rc = _testbed_call(commands.exec_in_pod, pod, list(ctx.args))
    raise typer.Exit(rc)


@testbed_app.command("down")
def testbed_down() -> None:
    """Remove every namespace, rule, pin, cgroup and process the testbed made."""
    from meshlab.testbed import commands

    _testbed_call(commands.down)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="meshlab")
    sys.exit(0)
