"""pricelab assign: expand a design to one row per product and date."""

from __future__ import annotations

from typing import Annotated

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    ClusterCol,
    Columns,
    EventCol,
    Format,
    InputPath,
    Output,
    Quiet,
    Silent,
    StorageOption,
    TimeCol,
    UnitCol,
    UnusedSeed,
    Verbose,
    user_names,
)
from pricelab_cli.cli.present import report_balance
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import start_run

# Loaded when a command first needs them: help, --version and `design` never do.
io = lazy("pricelab_cli.io")


@app.command(epilog="Example: pricelab assign --design design.json --products products.csv -o assignment.parquet")
def assign(
    design_path: Annotated[str, typer.Option("--design", help="Design JSON written by `pricelab design`.")],
    products: InputPath,
    output: Output = "-",
    clusters: Annotated[str | None, typer.Option(help="product_id, cluster_id: assign whole clusters.")] = None,
    events: Annotated[str | None, typer.Option(help="product_id, event_date: windows of a triggered design.")] = None,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    cluster_col: ClusterCol = "cluster_id",
    event_col: EventCol = "event_date",
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: UnusedSeed = 0,
) -> None:
    """Expand a design to one row per product and experiment date (hash-based, stable)."""
    run = start_run((quiet, silent), seed, fmt, output, storage_option=storage_option)
    spec = run.read_design(design_path)
    columns = Columns(unit=unit_col, cluster=cluster_col)
    ids = columns.ids
    # Assignment hashes product ids only: the catalog's other columns are never read.
    product_table = run.read(
        products, required=["product_id"], rename=ids, unique=["product_id"], columns=["product_id"]
    )
    cluster_table = run.read_clusters(clusters, columns, unique=False)
    event_table = (
        run.read(
            events, required=["product_id", "event_date"], rename={**ids, event_col: "event_date"}, dates=["event_date"]
        )
        if events
        else None
    )
    if spec.kind != "triggered" and event_table is not None:
        run.reporter.warn(f"--events is used by triggered designs only; {spec.kind} ignores it.")
    if spec.kind == "triggered" and spec.salt_from == "seed":
        run.reporter.warn(
            f"{design_path}: the salt was derived from --seed, the kind, the name and the window length; the "
            "events (which set this experiment's dates) are not part of it, so another triggered experiment with "
            "the same seed and name treats the same products. Give each experiment its own --name or --salt."
        )
    from pricelab_cli.assign import BalanceTally, plan_assignment

    plan = plan_assignment(spec, product_table, clusters=cluster_table, events=event_table)
    # The rows are made and written in pieces, never all held at once: a date at a time for
    # a folder partitioned by date, else whole products at a time (the file's row order).
    pieces = plan.by_date() if io.is_folder_output(output) else plan.by_products()
    tally = BalanceTally()
    renamed = (
        user_names(p, unit_col=unit_col, time_col=time_col, cluster_col=cluster_col) for p in tally.count(pieces)
    )
    run.write(renamed, output, partition_by=time_col)
    report_balance(run.reporter, plan.balance(tally), spec)
