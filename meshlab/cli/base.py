"""What every `meshlab` command shares: one way to fail, one way to print JSON."""

from __future__ import annotations

import json
from typing import Any

import click
import typer
from typer.core import TyperGroup

from meshlab.errors import MeshlabError

ERROR_PREFIX = "meshlab: error: "


class OneLineErrors(TyperGroup):
    """A MeshlabError anywhere below prints as one line on stderr and exits 2 (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MeshlabError as err:
            for line in err.lines:
                typer.echo(f"{ERROR_PREFIX}{line}", err=True)
            raise typer.Exit(2) from None


def typer_app(help_: str) -> typer.Typer:
    return typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False, help=help_)


def print_json(doc: Any, *, indent: int | None = None) -> None:
    """The machine-readable answer of a command (what the playbooks read from stdout)."""
    typer.echo(json.dumps(doc, indent=indent, sort_keys=indent is not None))
