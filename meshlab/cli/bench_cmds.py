"""`meshlab bench ...` (hidden; the Makefile's bench-* targets): benchmarks, not tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meshlab.cli.base import typer_app

app = typer_app(
    "Benchmarks (not tests): make bench-testbed, bench-dataplane, bench-report, calibration."
)


@app.command()
def testbed() -> None:
    """Seconds to bring the testbed up and to write the 50x500 flood; k6 through the mesh."""
    from meshlab.bench import testbed_bench

    raise typer.Exit(testbed_bench.main())


@app.command()
def dataplane() -> None:
    """experiments/dataplane.yml: iptables vs ebpf vs ebpf-connect, with the verdict tables."""
    from meshlab.bench import dataplane_bench

    raise typer.Exit(dataplane_bench.main())


@app.command()
def report(
    rounds: Annotated[int, typer.Option()] = 50,
    samples: Annotated[int, typer.Option(help="latency samples in total")] = 1_000_000,
    keep: Annotated[Path | None, typer.Option(help="write the run here and keep it")] = None,
) -> None:
    """Time `meshlab report` on a large synthetic run (goal: 30 s)."""
    from meshlab.bench import report_bench

    raise typer.Exit(report_bench.main(rounds, samples, keep))


@app.command()
def calibration(
    simulations: Annotated[int, typer.Option(help="simulated experiments per row")] = 2000,
    seed: Annotated[int, typer.Option()] = 2026,
    only: Annotated[
        str,
        typer.Option(
            help="comma-separated sections: designs, storms, walltime, stoprule, power, "
            "outliers, covariate (default: all)"
        ),
    ] = "",
) -> None:
    """Simulated family false positives, coverage, power and rounds of the decision rules:
    designs, storms, equal-wall-time designs, the adaptive level, MDE, outlier flags and the
    host-speed covariate (docs/methodology.md)."""
    from meshlab.bench import calibration_bench

    sections = tuple(s.strip() for s in only.split(",") if s.strip()) or calibration_bench.SECTIONS
    try:
        code = calibration_bench.main(simulations, seed, sections)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--only") from None
    raise typer.Exit(code)
