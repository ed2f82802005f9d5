"""pricelab spillover-graph: substitutes estimated from price and sales history."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    Columns,
    EngineOption,
    Format,
    Output,
    Quiet,
    Silent,
    StorageOption,
    TimeCol,
    UnitCol,
    UnusedSeed,
    Verbose,
    date_option,
)
from pricelab_cli.cli.present import report_spillover_graph
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import Run, engine_for, start_run
from pricelab_cli.errors import UsageError

if TYPE_CHECKING:
    import polars as pl
else:
    # Loaded when a command first needs them: help, --version and `design` never do.
    pl = lazy("polars")


@app.command(
    "spillover-graph",
    epilog="Example: pricelab spillover-graph --sales history.parquet --products products.csv "
    "--group-col category --fdr 0.05 -o edges.parquet",
)
def spillover_graph_command(
    sales: Annotated[str, typer.Option(help="Daily history: product_id, date, outcome and price (a year is typical).")],
    output: Output = "-",
    products: Annotated[
        str | None, typer.Option(help="product_id and --group-col: pairs inside a group are candidates.")
    ] = None,
    pairs: Annotated[str | None, typer.Option(help="src, dst: the candidate pairs, instead of groups.")] = None,
    group_col: Annotated[
        str, typer.Option("--group-col", help="Products sharing a value are candidate pairs.")
    ] = "category",
    outcome: Annotated[str, typer.Option(help="Demand column (log(1 + demand) is regressed).")] = "units",
    price_col: Annotated[str, typer.Option("--price-col", help="Price column (must be positive).")] = "price",
    fdr: Annotated[float, typer.Option(help="Benjamini-Hochberg false-discovery rate over all tested pairs.")] = 0.05,
    keep_complements: Annotated[
        bool, typer.Option("--keep-complements", help="Keep significant negative cross-elasticities too.")
    ] = False,
    hac_lags: Annotated[int, typer.Option(min=0, help="Days of residual autocorrelation the SEs allow for.")] = 14,
    since: Annotated[
        dt.date | None, date_option("--since", "Use only history on or after this date (e.g. the last year).")
    ] = None,
    all_pairs: Annotated[
        str | None, typer.Option("--all-pairs", help="Also write every candidate pair: estimate, SE, q-value, status.")
    ] = None,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    engine: EngineOption = None,
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: UnusedSeed = 0,
) -> None:
    """Find substitutes: does the price of src move the demand of dst? (cross-price elasticities, FDR cut)."""
    from pricelab_cli.spillover.graph import spillover_graph

    run = start_run((quiet, silent), seed, fmt, output, all_pairs, storage_option=storage_option)
    if products is None and pairs is None:
        raise UsageError("give --products (with --group-col) or --pairs to say which pairs to test.")
    columns = Columns(unit_col, time_col)
    sales_table = _read_sales(run, sales, columns, outcome=outcome, price_col=price_col, since=since)
    product_table = run.read_if(
        products,
        required=["product_id"] if pairs else ["product_id", group_col],
        rename=columns.ids,
        unique=["product_id"],
        columns=["product_id", group_col],
    )
    pair_table = run.read_if(pairs, required=["src", "dst"])
    with engine_for(run, engine, 1) as chosen:
        graph = spillover_graph(
            sales_table,
            product_table,
            group_col=group_col,
            pairs=pair_table,
            outcome=outcome,
            price_col=price_col,
            fdr=fdr,
            keep_complements=keep_complements,
            hac_lags=hac_lags,
            engine=chosen,
        )
    run.write(graph.edges, output)
    if all_pairs:
        run.write(graph.pairs, all_pairs)
    report_spillover_graph(run.reporter, graph, keep_complements)


def _read_sales(
    run: Run, sales: str, columns: Columns, *, outcome: str, price_col: str, since: dt.date | None
) -> pl.DataFrame:
    """The history the regressions use: only their columns, and with --since no earlier row
    (a date-partitioned folder's earlier partitions are not even opened)."""
    from pricelab_cli.errors import EmptyTableError

    table = run.read(
        sales,
        required=["product_id", "date", outcome, price_col],
        rename=columns.panel,
        dates=["date"],
        unique=["product_id", "date"],
        columns=["product_id", "date", outcome, price_col],
        where=None if since is None else pl.col("date") >= since,
    )
    if since is not None and table.height == 0:
        raise EmptyTableError(f"{sales}: no row is dated on or after --since {since}; give an earlier date.")
    return table
