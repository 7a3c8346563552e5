"""The ``wdgrid`` command line, one module per audience: ``local`` (train here: ``run``, ``demo``, and the hidden
``drive`` the controller starts per sweep), ``server`` (``serve``) and ``client`` (talk to a running controller).
They share one error format and one progress display (``_common``). Heavy imports (torch, Ray) happen inside the
commands that need them, so that ``wdgrid --help`` and ``wdgrid --version`` answer at once."""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated

import typer

from service.cli import client, local, server

__all__ = ["app"]

app = typer.Typer(
    name="wdgrid",
    help="(α, λ) grid searches for L2 regularization vs decoupled weight decay (Loshchilov & Hutter, ICLR 2019).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: rich's markup ate every "[default: ...]" of our help texts and printed <bool> beside plain flags.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        print(f"wdgrid {version('wdgrid')}")
        raise typer.Exit()


@app.callback()
def main(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """wdgrid: measure how separable the learning rate α and the weight decay λ are."""


for part in (local.app, server.app, client.app):
    for command in part.registered_commands:
        app.registered_commands.append(command)
