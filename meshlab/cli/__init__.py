"""The `meshlab` command line: one typer app (contract: docs/architecture.md, "CLI").

Visible: run, report, compare, export, preflight, up, down and the `testbed` group. Hidden
groups hold what the playbooks call (`engine`, `ebpf`, `rules`) and the benchmarks (`bench`): one
parser, one error format (`meshlab: error: ...`, exit 2) for humans and Ansible alike.
"""

from __future__ import annotations

from meshlab.cli import bench_cmds, ebpf_cmds, engine_cmds, rules_cmds, testbed_cmds
from meshlab.cli.top import app

app.add_typer(testbed_cmds.app, name="testbed")
app.add_typer(engine_cmds.app, name="engine", hidden=True)
app.add_typer(ebpf_cmds.app, name="ebpf", hidden=True)
app.add_typer(rules_cmds.app, name="rules", hidden=True)
app.add_typer(bench_cmds.app, name="bench", hidden=True)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="meshlab")
