"""The `pricelab` program and its command groups; each command file registers itself here."""

from __future__ import annotations

from typing import Annotated

import typer

import pricelab_cli

app = typer.Typer(
    name="pricelab",
    help="Design, assign and analyse price experiments on a product catalog.\n\n"
    "Example: pricelab design random-days --start 2026-03-02 --end 2026-03-29 -o design.json",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: text in brackets stays as written (rich markup would eat "[...]"), flags
    # show as flags and choices as choices.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


simulate_app = typer.Typer(
    help="Synthetic catalogs and sales panels with known effects (to test designs and estimators).\n\n"
    "Example: pricelab simulate catalog --n-products 200 -o products.csv --edges-out true_edges.csv",
    no_args_is_help=True,
)

app.add_typer(simulate_app, name="simulate")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"pricelab {pricelab_cli.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Design, assign and analyse price experiments on a product catalog."""
