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


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="meshlab")
    sys.exit(0)
