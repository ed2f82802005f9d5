"""pricelab monitor: every night of a running experiment, with its always-valid interval."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from pricelab_cli.cli.options import (
    AsOf,
    AssignmentFile,
    ClusterCol,
    Columns,
    DrawnFrom,
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
    date_option,
)
from pricelab_cli.cli.present import report_monitor
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import engine_for, start_run


@app.command(
    epilog="Example: pricelab monitor --design design.json --assignment assignment.parquet "
    "--sales sales/ --outcome units --min-effect 0.01 -o monitor.csv"
)
def monitor(
    design_path: DrawnFrom,
    assignment: AssignmentFile,
    sales: Annotated[str, typer.Option(help="The sales so far, with each product's history before the experiment.")],
    output: Output = "-",
    outcome: Annotated[
        list[str] | None,
        typer.Option("--outcome", metavar="COLUMN", help="Outcome column; repeat for several.", show_default="units"),
    ] = None,
    as_of: AsOf = None,
    min_effect: Annotated[
        float | None,
        typer.Option(
            "--min-effect",
            help="Relative effect too small to matter (0.01 = 1%): a night whose lift's sequence lies within "
            "plus or minus it says 'stop: futile'.",
        ),
    ] = None,
    sequential_horizon: Annotated[
        dt.date | None,
        date_option("--sequential-horizon", "The night at which the sequence is tightest.", "the design's planned end"),
    ] = None,
    exact_nights: Annotated[
        bool,
        typer.Option(
            "--exact-nights",
            help="Estimate every past night whole, as that night's hpte --as-of run printed it (costs a run a "
            "night); by default past nights are replayed with tonight's model in one pass.",
        ),
    ] = False,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap draws for each night's SE.")] = 500,
    trees: Annotated[int, typer.Option(min=1, help="Trees in the causal forest.")] = 100,
    jobs: Annotated[
        int, typer.Option(help="Worker processes and forest threads (0: all cores).", show_default="all cores")
    ] = 0,
    engine: EngineOption = None,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    cluster_col: ClusterCol = "cluster_id",
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Replay every night of the experiment up to today (or --as-of): estimate, fixed and always-valid intervals, decision."""
    from pricelab_cli.monitor import monitor_nights

    run = start_run((quiet, silent), seed, fmt, output, storage_option=storage_option)
    columns = Columns(unit_col, time_col, cluster_col)
    outcomes = list(dict.fromkeys(outcome or ["units"]))
    spec = run.read_design(design_path)
    assignment_table = run.read_assignment(assignment, columns)
    sales_table = run.scan_sales(sales, outcomes, columns)
    with engine_for(run, engine, jobs) as chosen:
        table = monitor_nights(
            sales_table,
            assignment_table,
            outcomes=outcomes,
            as_of=as_of,
            min_effect=min_effect,
            horizon=sequential_horizon or spec.end,
            exact_nights=exact_nights,
            n_bootstrap=bootstrap,
            n_estimators=trees,
            seed=seed,
            n_jobs=jobs,
            engine=chosen,
        )
    run.write(table, output)
    report_monitor(run.reporter, table)
