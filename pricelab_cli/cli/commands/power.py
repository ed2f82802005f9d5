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
from pricelab_cli.cli.present import report_grid, report_power
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import Run, engine_for, start_run

if TYPE_CHECKING:
    import polars as pl

    from pricelab_cli import io
    from pricelab_cli.design import Design
    from pricelab_cli.power import Arm
    from pricelab_cli.recommend import Candidate
else:
    # Loaded when a command first needs them: help, --version and `design` never do.
    io = lazy("pricelab_cli.io")
    pl = lazy("polars")


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
    reps: Annotated[
        int | None, typer.Option(help="Monte Carlo repetitions per design.", show_default="200; 30 with --recommend")
    ] = None,
    carryover_days: Annotated[
        str,
        typer.Option(
            help="Threat: the effect lingers, decaying over this many days; with --recommend a list of "
            "scenarios (e.g. 0,1,3).",
        ),
    ] = "0",
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
    recommend: Annotated[
        bool,
        typer.Option(
            "--recommend",
            help="Search kinds, block lengths and blackouts over the first --design's window under each "
            "--carryover-days scenario; -o gets the grid, and the minimax-RMSE design is flagged.",
        ),
    ] = False,
    recommend_out: Annotated[
        str | None, typer.Option(help="With --recommend: write the recommended design here, ready for assign.")
    ] = None,
    blocks: Annotated[
        str, typer.Option(help="With --recommend: block (crossover: phase) lengths to search, in days.")
    ] = "1,2,3,7,14",
    max_blackout: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="With --recommend: longest blackout after a switch to search, in days.",
            show_default="twice the longest --carryover-days",
        ),
    ] = None,
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
    from pricelab_cli.recommend import default_max_blackout, parse_blocks, parse_carryover

    png = (str(plot) if plot else None,)
    run = start_run(
        (quiet, silent),
        seed,
        fmt,
        output,
        repetitions_out,
        recommend_out,
        *png,
        documents=(*png, recommend_out),
        storage_option=storage_option,
    )
    scenarios = parse_carryover(carryover_days)
    _check_recommend_flags(recommend, recommend_out, scenarios, spillover, events, plot)
    grid_blocks = parse_blocks(blocks) if recommend else []
    columns = Columns(unit_col, time_col, cluster_col)
    inputs = _read_inputs(run, history, products, design_paths, clusters, edges, events, outcome, columns)
    if recommend:
        longest = default_max_blackout(scenarios) if max_blackout is None else max_blackout
        grid_reps = 30 if reps is None else reps
        with engine_for(run, engine, jobs) as chosen_engine:
            chosen = _recommend(
                run,
                inputs,
                outcome,
                effect,
                grid_reps,
                scenarios,
                grid_blocks,
                longest,
                seed,
                (output, repetitions_out),
                chosen_engine,
            )
        if recommend_out is not None:
            _write_recommendation(run, chosen.design, recommend_out, seed)
        return
    study_reps = 200 if reps is None else reps
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
            reps=study_reps,
            threats=Threats(carryover_days=scenarios[0], spillover=spillover),
            edges=inputs.edges,
            events=inputs.events,
            interval_reps=interval_reps,
            seed=seed,
            n_jobs=jobs,
            engine=chosen,
        )
    _write_outputs(run, summary, repetitions, output=output, repetitions_out=repetitions_out, plot=plot)
    report_power(run.reporter, summary, effect, study_reps)


def _check_recommend_flags(
    recommend: bool,
    recommend_out: str | None,
    scenarios: list[float],
    spillover: float,
    events: str | None,
    plot: Path | None,
) -> None:
    """Refuse flag combinations that cannot run, before any input is read."""
    from pricelab_cli.errors import UsageError

    if not recommend:
        if recommend_out is not None:
            raise UsageError("--recommend-out needs --recommend.")
        if len(scenarios) > 1:
            raise UsageError("a list of --carryover-days scenarios needs --recommend; without it give one number.")
        return
    if spillover:
        raise UsageError("--recommend does not plant --spillover; compare designs under spillover without it.")
    if events is not None:
        raise UsageError(
            "--recommend searches designs with dates; triggered designs (--events) are compared without it."
        )
    if plot is not None:
        raise UsageError("--plot draws a comparison of given designs; with --recommend the whole grid is in -o.")


def _recommend(
    run: Run,
    inputs: _Inputs,
    outcome: str,
    effect: float,
    reps: int,
    scenarios: list[float],
    blocks: list[int],
    max_blackout: int,
    seed: int,
    outputs: tuple[str, str | None],
    engine,
) -> Candidate:
    """The grid of ``power --recommend`` (``pricelab_cli.recommend``), written to ``output``;
    returns the recommended design."""
    from pricelab_cli.recommend import (
        MAX_BIAS_SE,
        candidate_designs,
        detrend_history,
        grid_study,
        recommended,
        summarise_grid,
    )

    template = inputs.arms[0].design
    if len({arm.design for arm in inputs.arms}) > 1:
        run.reporter.warn(
            "--recommend uses the first --design's dates and treat share; the other designs are not read."
        )
    candidates = candidate_designs(template, blocks, max_blackout)
    clusters = inputs.arms[-1].clusters
    window = max(c.design.n_days for c in candidates)
    screen = detrend_history(inputs.history, inputs.products, outcome, window)
    repetitions = grid_study(
        screen,
        inputs.products,
        candidates,
        scenarios,
        effect=effect,
        reps=reps,
        seed=seed,
        clusters=clusters,
        engine=engine,
    )
    grid = summarise_grid(repetitions, candidates, scenarios)
    output, repetitions_out = outputs
    run.write(grid, output, extra={"recommended": grid.filter(pl.col("recommended"))["design"][0]})
    if repetitions_out:
        labels = pl.DataFrame({"candidate": range(len(candidates)), "design": [c.label for c in candidates]})
        rows = repetitions.join(labels, on="candidate", how="left").drop("candidate")
        run.write(rows.select("design", pl.exclude("design")), repetitions_out)
    report_grid(run.reporter, grid, effect, reps, template.treat_share)
    chosen = grid.filter(pl.col("recommended")).row(0, named=True)
    if not chosen["honest"]:
        run.reporter.warn(
            f"no design of the grid keeps its carryover bias under {MAX_BIAS_SE:g} of its SE in every scenario; "
            f"the recommendation is the plain minimax-RMSE design, whose bias reaches {chosen['worst_bias_se']:.2f} "
            "of its SE (its 95% intervals will cover less often): consider a longer window or --max-blackout."
        )
    return recommended(grid, candidates)


def _write_recommendation(run: Run, design: Design, path: str, seed: int) -> None:
    """The recommended design as ``pricelab design`` writes one: its salt from the seed."""
    from pricelab_cli.design import salt_from_seed

    chosen = dataclasses.replace(design, salt="pending", salt_from="seed")
    chosen = dataclasses.replace(chosen, salt=salt_from_seed(seed, chosen))
    io.write_json({**chosen.to_dict(), "provenance": run.meta()}, path, storage_options=run.storage_options)


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
