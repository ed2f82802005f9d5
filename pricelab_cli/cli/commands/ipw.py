"""pricelab ipw: direct and spillover effects from the exposure probabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    AsOf,
    ClusterCol,
    Columns,
    DrawnFrom,
    EngineOption,
    Format,
    OutlierRule,
    Output,
    Quiet,
    Seed,
    Silent,
    StorageOption,
    TimeCol,
    UnitCol,
    Verbose,
)
from pricelab_cli.cli.present import report_ipw
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import engine_for, start_run

if TYPE_CHECKING:
    from pricelab_cli import io
else:
    # Loaded when a command first needs them: help, --version and `design` never do.
    io = lazy("pricelab_cli.io")


@app.command(
    epilog="Example: pricelab ipw --sales sales.parquet --assignment assignment.parquet --edges edges.parquet "
    "--design design.json --products products.csv --outcome units -o spillover.csv"
)
def ipw(
    sales: Annotated[str, typer.Option(help="Sales with each product's history before the experiment.")],
    assignment: Annotated[str, typer.Option(help="The assignment written by `pricelab assign` from --design.")],
    edges: Annotated[str, typer.Option(help="Substitutes graph src, dst, weight: dst is exposed through src.")],
    design_path: DrawnFrom,
    products: Annotated[str, typer.Option(help="The products table the assignment was made from.")],
    output: Output = "-",
    clusters: Annotated[
        str | None, typer.Option(help="product_id, cluster_id used by assign (else the assignment's cluster_id).")
    ] = None,
    outcome: Annotated[str, typer.Option(help="Outcome column of the sales.")] = "units",
    exposure_threshold: Annotated[
        float, typer.Option(help="Exposed when the treated share of incoming substitute weight exceeds this.")
    ] = 0.0,
    replays: Annotated[int, typer.Option(min=1, help="Replays of the design when probabilities are not exact.")] = 200,
    bootstrap: Annotated[
        int, typer.Option(help="Bootstrap draws over randomisation units for the SE (20 or more).")
    ] = 500,
    clip: Annotated[
        float | None, typer.Option(help="Raise exposure probabilities below this to it (weights at most 1/clip).")
    ] = None,
    outlier_rule: Annotated[
        OutlierRule, typer.Option(help="Residuals as hpte makes them: robust or quantile (least squares).")
    ] = OutlierRule.robust,
    as_of: AsOf = None,
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
    """Direct and spillover effects by inverse-probability weighting, with exposure probabilities from the design."""
    from pricelab_cli.sequential import as_it_stood
    from pricelab_cli.spillover.ipw import ipw_effects

    run = start_run((quiet, silent), seed, fmt, output, storage_option=storage_option)
    spec = run.read_design(design_path)
    columns = Columns(unit_col, time_col, cluster_col)
    assignment_table = run.read_assignment(assignment, columns)
    # The outcome and nothing after the experiment's last date (never analysed).
    # Scanned, as for hpte: the detrending streams the sales into partitions of products,
    # reading only these columns and no date after the assignment's last.
    sales_table = run.scan_sales(sales, [outcome], columns)
    if as_of is not None:  # the experiment as it stood: its rows up to the date, and the sales with them
        assignment_table = as_it_stood(assignment_table, sales_table, as_of)
    edge_table = run.read(edges, required=["src", "dst", "weight"], allow_empty=True)
    product_table = run.read(
        products, required=["product_id"], rename=columns.ids, unique=["product_id"], columns=["product_id"]
    )
    cluster_table = run.read_clusters(clusters, columns)
    with (
        engine_for(run, engine, 0) as chosen,
        run.reporter.progress("exposure replays", replays if exposure_threshold > 0 else 0) as advance,
    ):
        result = ipw_effects(
            sales_table,
            assignment_table,
            edge_table,
            spec,
            product_table,
            clusters=cluster_table,
            outcome=outcome,
            exposure_threshold=exposure_threshold,
            replays=replays,
            bootstrap=bootstrap,
            clip=clip,
            outlier_rule=outlier_rule.value,
            seed=seed,
            progress=advance,
            engine=chosen,
        )
    run.write(result.effects, output)
    report_ipw(run.reporter, result, outcome)
