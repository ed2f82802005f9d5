"""pricelab cluster: products that must share an arm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    ClusterCol,
    Columns,
    Format,
    Output,
    Quiet,
    Seed,
    Silent,
    StorageOption,
    UnitCol,
    Verbose,
    user_names,
)
from pricelab_cli.cli.present import report_clusters
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import start_run

# Loaded when the command runs.
io = lazy("pricelab_cli.io")


@app.command(
    epilog="Example: pricelab cluster --edges edges.parquet --products products.csv --max-size 50 --seed 0 -o clusters.parquet"
)
def cluster(
    edges: Annotated[str, typer.Option(help="Substitutes graph: src, dst, weight (as spillover-graph writes it).")],
    output: Output = "-",
    products: Annotated[
        str | None, typer.Option(help="product_id of every product; those on no edge get a cluster of their own.")
    ] = None,
    max_size: Annotated[
        int | None, typer.Option("--max-size", min=1, help="Hard bound on products per cluster.")
    ] = None,
    resolution: Annotated[
        float, typer.Option(help="Modularity resolution: above 1 gives more, smaller clusters.")
    ] = 1.0,
    plot: Annotated[Path | None, typer.Option(help="Draw the distribution of cluster sizes to this PNG.")] = None,
    unit_col: UnitCol = "product_id",
    cluster_col: ClusterCol = "cluster_id",
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Partition the substitutes graph into clusters (Leiden) that assign --clusters randomises together."""
    from pricelab_cli.plots import cluster_size_plot
    from pricelab_cli.spillover.cluster import leiden_clusters

    run = start_run(
        (quiet, silent),
        seed,
        fmt,
        output,
        str(plot) if plot else None,
        documents=(str(plot) if plot else None,),
        storage_option=storage_option,
    )
    edge_table = run.read(edges, required=["src", "dst", "weight"], allow_empty=products is not None)
    product_table = (
        run.read(
            products,
            required=["product_id"],
            rename=Columns(unit=unit_col).ids,
            unique=["product_id"],
            columns=["product_id"],
        )
        if products
        else None
    )
    with run.reporter.progress("leiden: clusters, then oversized ones split", 2) as advance:
        result = leiden_clusters(
            edge_table, product_table, max_size=max_size, resolution=resolution, seed=seed, progress=advance
        )
    run.write(user_names(result.clusters, unit_col=unit_col, cluster_col=cluster_col), output)
    if plot is not None:
        with io.atomic_path(str(plot)) as tmp:
            cluster_size_plot(result, tmp, max_size=max_size)
    report_clusters(run.reporter, result, max_size)
