"""pricelab elasticity: own- and cross-price elasticities per group, and profit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    ClusterCol,
    Columns,
    EngineOption,
    Format,
    Output,
    Quiet,
    Seed,
    Silent,
    StorageOption,
    TimeCol,
    UnitCol,
    Verbose,
)
from pricelab_cli.cli.present import report_elasticity
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import engine_for, start_run

if TYPE_CHECKING:
    from pricelab_cli import io
else:
    # Loaded when a command first needs them: help, --version and `design` never do.
    io = lazy("pricelab_cli.io")


@app.command(
    epilog="Example: pricelab elasticity --sales sales.parquet --assignment assignment.parquet "
    "--products products.csv --group-col category --price-col price --outcome units --edges edges.parquet "
    "--cost-col cost -o elasticity.csv --optimum-out optimum.csv"
)
def elasticity(
    sales: Annotated[str, typer.Option(help="Sales with prices and each product's history before the experiment.")],
    assignment: Annotated[str, typer.Option(help="The assignment written by `pricelab assign`.")],
    products: Annotated[str, typer.Option(help="Products with the group column (and the cost column).")],
    output: Output = "-",
    group_col: Annotated[str, typer.Option(help="Products' column whose groups each get an elasticity.")] = "category",
    price_col: Annotated[
        str, typer.Option(help="Sales' price column (the price the product sold at that day).")
    ] = "price",
    outcome: Annotated[str, typer.Option(help="Outcome column of the sales (units).")] = "units",
    edges: Annotated[
        str | None, typer.Option(help="Substitutes graph src, dst, weight: adds the cross-price rows.")
    ] = None,
    cost_col: Annotated[
        str | None, typer.Option(help="Products' unit cost column: adds the profit rows and --optimum-out.")
    ] = None,
    optimum_out: Annotated[
        str | None,
        typer.Option(help="With --cost-col: write each group's profit-maximising price change (and the range tested)."),
    ] = None,
    by: Annotated[
        list[str] | None,
        typer.Option(
            help="Products' feature column (repeatable): the own elasticity by its values (numeric: quartiles)."
        ),
    ] = None,
    by_out: Annotated[
        str | None, typer.Option(help="With --by: write feature, bin, estimate, se, ci_low, ci_high, n_products here.")
    ] = None,
    bootstrap: Annotated[
        int, typer.Option(help="Bootstrap draws over randomisation units for the intervals (20 or more).")
    ] = 500,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    cluster_col: ClusterCol = "cluster_id",
    engine: EngineOption = None,
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Own- and cross-price elasticity per group, with the randomised assignment as the instrument for price."""
    from pricelab_cli.elasticity import estimate_elasticity
    from pricelab_cli.errors import UsageError
    from pricelab_cli.hpte.bootstrap import check_bootstrap

    check_bootstrap(bootstrap, "--bootstrap")
    if optimum_out and not cost_col:
        raise UsageError("--optimum-out needs --cost-col (the unit cost the optimum is taken against).")
    if bool(by) != bool(by_out):
        raise UsageError("--by and --by-out go together: --by names the feature columns, --by-out where their rows go.")
    run = start_run((quiet, silent), seed, fmt, output, optimum_out, by_out, storage_option=storage_option)
    columns = Columns(unit_col, time_col, cluster_col)
    assignment_table = run.read_assignment(assignment, columns)
    sales_table = run.scan_sales(sales, [outcome, price_col], columns)
    wanted = ["product_id", group_col] + ([cost_col] if cost_col else []) + list(by or [])
    product_table = run.read(
        products, required=wanted, rename=columns.ids, unique=["product_id"], columns=list(dict.fromkeys(wanted))
    )
    edge_table = run.read(edges, required=["src", "dst", "weight"], allow_empty=True) if edges else None
    labels = {"sales": sales, "products": products, "edges": edges or "edges"}
    with engine_for(run, engine, 0) as chosen:
        groups = product_table.get_column(group_col).n_unique()
        with run.reporter.progress("groups", groups) as advance:
            result = estimate_elasticity(
                sales_table,
                assignment_table,
                product_table,
                group_col=group_col,
                price_col=price_col,
                outcome=outcome,
                edges=edge_table,
                cost_col=cost_col,
                n_bootstrap=bootstrap,
                seed=seed,
                engine=chosen,
                labels=labels,
                progress=advance,
                by=list(by) if by else None,
            )
    if optimum_out and result.optimum is not None:
        run.write(result.optimum, optimum_out)
    if by_out and result.by is not None:
        run.write(result.by, by_out)
    run.write(result.table, output)
    report_elasticity(run.reporter, result, outcome)
