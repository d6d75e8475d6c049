"""The top-level commands: run an experiment, report it, compare two runs, the cloud lab."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshlab.cli.base import typer_app

app = typer_app("Paired, noise-gated benchmarks of sidecar redirection: iptables vs eBPF.")


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
    repeat: Annotated[
        int, typer.Option(help="K independent runs, then how far their estimates spread")
    ] = 1,
) -> None:
    """Run a paired experiment (experiment.yml through ansible-runner) with progress. Exit
    codes: 0 every primary question decided, 3 inconclusive, 4 environment unfit, 2 error."""
    from meshlab.experiment import runner

    try:
        closed = runner.run(experiment, resume, results_dir, report=report_, repeat=repeat)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(runner.exit_code(closed))


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory under results/")]) -> None:
    """(Re)build RUN_DIR/derived/: tables, statistics, figures, summary.md and report.html."""
    from meshlab.analysis.report.report import build

    typer.echo(f"report: {build(run_dir)}")


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="the first run directory")],
    run_b: Annotated[Path, typer.Argument(help="the rerun to compare against it")],
    force: Annotated[bool, typer.Option(help="compare even if the specs differ")] = False,
) -> None:
    """Did a rerun (e.g. in a quieter cloud) agree with the first run?"""
    from meshlab.analysis.report.compare import compare as compare_runs

    typer.echo(compare_runs(run_a, run_b, force=force))


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a run directory under results/")],
    format_: Annotated[
        str, typer.Option("--format", help="smp (Service Mesh Performance) or csv")
    ] = "smp",
    out: Annotated[
        Path | None, typer.Option(help="where to write (default RUN_DIR/derived/export/FORMAT)")
    ] = None,
) -> None:
    """Export RUN_DIR's results: one SMP result per arm x block, or one CSV per block."""
    from meshlab.export.write import export as export_run

    typer.echo(f"export: {export_run(run_dir, format_, out)}")


@app.command()
def preflight(
    experiment: Annotated[
        Path, typer.Argument(help="the experiment definition the cloud run will use")
    ] = Path("experiments/cloud.yml"),
    resume: Annotated[Path | None, typer.Option(help="check this run's experiment")] = None,
) -> None:
    """Check the cloud lab before installing anything: VMs reachable, image digests resolvable,
    every node's CPU budget (also during an arm switch), kernel features (needs a stack); says
    what it checked and what it could not."""
    from meshlab import ansible, paths
    from meshlab.testbeds.cloud.preflight import summary

    run = ansible.run_playbook(
        "playbooks/preflight.yml",
        {
            "experiment": str(experiment),
            "resume": str(resume or ""),
            "preflight_experiment_only": True,
        },
        inventory=str(paths.REPO / "inventory"),
        title="preflight",
        quiet=True,
    )
    for line in summary(ansible.set_fact(run, "meshlab_preflight_report")):
        typer.echo(f"preflight: {line}")
    typer.echo(f"preflight: done in {run.seconds} s")


@app.command()
def up(stack: Annotated[str, typer.Option(help="Pulumi stack name")] = "dev") -> None:
    """Provision the OpenStack lab with Pulumi (needs the pulumi CLI and cloud credentials)."""
    from meshlab import stack as pulumi_stack

    pulumi_stack.up(stack)


@app.command()
def down(stack: Annotated[str, typer.Option(help="Pulumi stack name")] = "dev") -> None:
    """Destroy the OpenStack lab (pulumi destroy)."""
    from meshlab import stack as pulumi_stack

    pulumi_stack.down(stack)
