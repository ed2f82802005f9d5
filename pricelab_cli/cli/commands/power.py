"""pricelab power: compare designs on the user's own history."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    ClusterCol,
    Columns,
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
from pricelab_cli.cli.present import report_power
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import Run, engine_for, start_run

if TYPE_CHECKING:
    import polars as pl

    from pricelab_cli import io
    from pricelab_cli.power import Arm
else:
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
    from pricelab_cli.power import HpteEstimator, Threats, power_study

    png = (str(plot) if plot else None,)
    run = start_run(
        (quiet, silent), seed, fmt, output, repetitions_out, *png, documents=png, storage_option=storage_option
    )
    columns = Columns(unit_col, time_col, cluster_col)
    inputs = _read_inputs(run, history, products, design_paths, clusters, edges, events, outcome, columns)
    with engine_for(run, engine, jobs) as chosen:
        summary, repetitions = power_study(
            inputs.history,
            inputs.products,
            inputs.arms,
            estimator=HpteEstimator(
                features=inputs.products, n_bootstrap=bootstrap, n_estimators=trees, outlier_rule=outlier_rule.value
            ),
            outcome=outcome,
            effect=effect,
            reps=reps,
            threats=Threats(carryover_days=carryover_days, spillover=spillover),
            edges=inputs.edges,
            events=inputs.events,
            interval_reps=interval_reps,
            seed=seed,
            n_jobs=jobs,
            engine=chosen,
        )
    _write_outputs(run, summary, repetitions, output=output, repetitions_out=repetitions_out, plot=plot)
    report_power(run.reporter, summary, effect, reps)


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """The study's inputs under pricelab's column names (None: an optional input not given)
    and its arms: each design, and with clusters its cluster-level twin."""

    history: pl.DataFrame
    products: pl.DataFrame
    arms: list[Arm]
    edges: pl.DataFrame | None
    events: pl.DataFrame | None


def _read_inputs(
    run: Run,
    history: str,
    products: str,
    design_paths: list[str],
    clusters: str | None,
    edges: str | None,
    events: str | None,
    outcome: str,
    columns: Columns,
) -> _Inputs:
    """Read every input, in the order of the flags' help (an error names the first bad one)."""
    from pricelab_cli.power import design_arms

    history_table = run.read(
        history,
        required=["product_id", "date", outcome],
        rename=columns.panel,
        dates=["date"],
        unique=["product_id", "date"],
    )
    product_table = run.read(products, required=["product_id"], rename=columns.ids, unique=["product_id"])
    designs = [run.read_design(p) for p in design_paths]
    cluster_table = run.read_clusters(clusters, columns)
    edge_table = run.read_if(edges, required=["src", "dst", "weight"])
    event_table = run.read_if(events, required=["product_id", "event_date"], rename=columns.ids, dates=["event_date"])
    return _Inputs(history_table, product_table, design_arms(designs, cluster_table), edge_table, event_table)


def _write_outputs(
    run: Run,
    summary: pl.DataFrame,
    repetitions: pl.DataFrame,
    *,
    output: str,
    repetitions_out: str | None,
    plot: Path | None,
) -> None:
    """Write the summary, then the repetitions and the plot when asked for."""
    run.write(summary, output)
    if repetitions_out:
        run.write(repetitions, repetitions_out)
    if plot is not None:
        from pricelab_cli import plots

        with io.atomic_path(str(plot)) as tmp:
            plots.power_bars(summary, str(tmp))
