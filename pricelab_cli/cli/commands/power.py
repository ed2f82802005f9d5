"""pricelab power: compare designs on the user's own history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    ClusterCol,
    EngineOption,
    Format,
    InputPath,
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
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import engine_for, start_run
from pricelab_cli.design import design_from_dict

# Loaded when a command first needs them: help, --version and `design` never do.
io = lazy("pricelab_cli.io")


@app.command(
    epilog="Example: pricelab power --history history.parquet --products products.csv --design tb.json "
    "--design rd.json --design co.json --effect 0.05 --reps 200 --outcome units -o power.csv"
)
def power(
    history: InputPath,
    products: InputPath,
    design_paths: Annotated[
        list[str], typer.Option("--design", metavar="PATH", help="A design JSON; repeat to compare designs.")
    ],
    output: Output = "-",
    outcome: Annotated[str, typer.Option(help="Outcome column of the history.")] = "units",
    effect: Annotated[float, typer.Option(help="Relative effect injected on treated cells (0.05 = +5%).")] = 0.05,
    reps: Annotated[int, typer.Option(help="Monte Carlo repetitions per design.")] = 200,
    carryover_days: Annotated[
        float, typer.Option(help="Threat: the effect lingers, decaying over this many days.")
    ] = 0.0,
    edges: Annotated[str | None, typer.Option(help="Substitute edges src,dst,weight (for --spillover).")] = None,
    spillover: Annotated[
        float, typer.Option(help="Threat: share of the effect leaking onto substitutes, opposite sign.")
    ] = 0.0,
    clusters: Annotated[
        str | None, typer.Option(help="product_id,cluster_id: also run every design by cluster.")
    ] = None,
    events: Annotated[
        str | None, typer.Option(help="product_id,event_date inside the history, for triggered designs.")
    ] = None,
    interval_reps: Annotated[
        int | None, typer.Option(help="Repetitions that also bootstrap intervals.", show_default="all")
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap draws in those repetitions.")] = 200,
    trees: Annotated[int, typer.Option(min=1, help="Causal-forest trees per estimate in the study.")] = 10,
    outlier_rule: Annotated[
        OutlierRule, typer.Option(help="hpte's outlier rule inside the study (robust or quantile, as in hpte).")
    ] = OutlierRule.robust,
    jobs: Annotated[int, typer.Option(help="Worker processes (0: all cores).", show_default="all cores")] = 0,
    engine: EngineOption = None,
    repetitions_out: Annotated[str | None, typer.Option(help="Also write every repetition's estimate here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw SE and bias per design to this PNG.")] = None,
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
    """Compare designs on your own history by Monte Carlo: bias, SE, RMSE, power, coverage, MDE."""
    from pricelab_cli.power import HpteEstimator, Threats, design_arms, power_study

    run = start_run(
        (quiet, silent),
        seed,
        fmt,
        output,
        repetitions_out,
        str(plot) if plot else None,
        documents=(str(plot) if plot else None,),
        storage_option=storage_option,
    )
    ids = {unit_col: "product_id"}
    history_table = run.read(
        history,
        required=["product_id", "date", outcome],
        rename={**ids, time_col: "date"},
        dates=["date"],
        unique=["product_id", "date"],
    )
    product_table = run.read(products, required=["product_id"], rename=ids, unique=["product_id"])
    designs = [design_from_dict(io.read_json(p, storage_options=run.storage_options), source=p) for p in design_paths]
    cluster_table = (
        run.read(
            clusters,
            required=["product_id", "cluster_id"],
            rename={**ids, cluster_col: "cluster_id"},
            unique=["product_id"],
        )
        if clusters
        else None
    )
    edge_table = run.read(edges, required=["src", "dst", "weight"]) if edges else None
    event_table = (
        run.read(events, required=["product_id", "event_date"], rename=ids, dates=["event_date"]) if events else None
    )
    arms = design_arms(designs, cluster_table)
    with engine_for(run, engine, jobs) as chosen:
        summary, repetitions = power_study(
            history_table,
            product_table,
            arms,
            estimator=HpteEstimator(
                features=product_table, n_bootstrap=bootstrap, n_estimators=trees, outlier_rule=outlier_rule.value
            ),
            outcome=outcome,
            effect=effect,
            reps=reps,
            threats=Threats(carryover_days=carryover_days, spillover=spillover),
            edges=edge_table,
            events=event_table,
            interval_reps=interval_reps,
            seed=seed,
            n_jobs=jobs,
            engine=chosen,
        )
    run.write(summary, output)
    if repetitions_out:
        run.write(repetitions, repetitions_out)
    if plot is not None:
        from pricelab_cli import plots

        with io.atomic_path(str(plot)) as tmp:
            plots.power_bars(summary, tmp)
    table = Table(title=f"designs on this history: +{effect:.1%} injected, {reps} repetitions", title_justify="left")
    for col in ("design", "bias", "se", "rmse", "power", "coverage", "mde"):
        table.add_column(col, justify="right" if col != "design" else "left")
    for row in summary.iter_rows(named=True):
        cells = [row["design"]] + [
            "-" if row[c] is None else f"{row[c]:.4g}" for c in ("bias", "se", "rmse", "power", "coverage", "mde")
        ]
        table.add_row(*cells)
    run.reporter.table(table)
