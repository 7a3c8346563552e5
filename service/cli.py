"""The ``wdgrid`` command line. Heavy imports (torch) happen inside the commands that need them, so that
``wdgrid --help`` and ``wdgrid --version`` answer at once."""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated

import typer

app = typer.Typer(
    name="wdgrid",
    help="(α, λ) grid searches for L2 regularization vs decoupled weight decay (Loshchilov & Hutter, ICLR 2019).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
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


@app.command()
def demo(
    epochs: Annotated[int, typer.Option(min=1, max=200, help="Epochs per optimizer.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of initialization and batch order.")] = 0,
) -> None:
    """Train one small MLP on MNIST-1D with each of sgd, sgdw, adam and adamw (cosine schedule); about 10 s on CPU."""
    from rich.console import Console
    from rich.table import Table

    from workers.demo import run_demo

    console = Console()
    with console.status(f"training 4 optimizers × {epochs} epochs on MNIST-1D …"):
        results = run_demo(epochs=epochs, seed=seed)
    table = Table(title=f"MNIST-1D, MLP, {epochs} epochs, cosine schedule")
    for column in ("optimizer", "α (lr)", "λ (raw, per step)", "test error %", "seconds"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.optimizer, f"{r.lr:g}", f"{r.weight_decay:.3g}", f"{r.test_error:.1f}", f"{r.seconds:.1f}")
    console.print(table)
