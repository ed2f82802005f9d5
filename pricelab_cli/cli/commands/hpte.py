"""pricelab hpte: the heterogeneous panel treatment effect."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    ClusterCol,
    EngineOption,
    Format,
    HpteMethod,
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
    user_names,
)
from pricelab_cli.cli.present import report_hpte
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import ACTIVE, engine_for, start_run
from pricelab_cli.errors import UsageError

# Loaded when a command first needs them: help, --version and `design` never do.
pl = lazy("polars")
io = lazy("pricelab_cli.io")


@app.command(
    epilog="Example: pricelab hpte --sales sales.parquet --assignment assignment.parquet "
    "--outcome units --outcome revenue --features products.csv -o effects.csv --cate-out cate.parquet"
)
def hpte(
    sales: InputPath,
    assignment: InputPath,
    output: Output = "-",
    outcome: Annotated[
        list[str] | None,
        typer.Option("--outcome", metavar="COLUMN", help="Outcome column; repeat for several.", show_default="units"),
    ] = None,
    features: Annotated[
        str | None, typer.Option(help="Product features for the causal forest (product_id + columns).")
    ] = None,
    method: Annotated[
        HpteMethod, typer.Option(help="hpte, or did: classic mean-after minus mean-before difference in differences.")
    ] = HpteMethod.hpte,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap draws for the SE (0: none).")] = 500,
    outlier_rule: Annotated[
        OutlierRule,
        typer.Option(
            help="robust: robust residuals and screens that adapt to the share of wild products; "
            "quantile: the method source's rule (drop a tail share C / n_products)."
        ),
    ] = OutlierRule.robust,
    outlier_c: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="With --outlier-rule quantile: drop about C products (tail share C / n).", show_default="4"
        ),
    ] = None,
    no_outlier_filter: Annotated[
        bool, typer.Option("--no-outlier-filter", help="Keep every product (residuals are still winsorised).")
    ] = False,
    outliers_out: Annotated[
        str | None,
        typer.Option(
            "--outliers-out", help="Write every dropped, winsorised or stock-out product with the reason here."
        ),
    ] = None,
    no_detrend: Annotated[
        bool, typer.Option("--no-detrend", help="Fit each product's level only (no trend or weekday terms).")
    ] = False,
    no_fill_zeros: Annotated[
        bool,
        typer.Option(
            "--no-fill-zeros",
            help="Leave a product-date without a sales row absent (unknown) instead of reading it as zero sales.",
        ),
    ] = False,
    trees: Annotated[int, typer.Option(min=1, help="Trees in the causal forest.")] = 100,
    jobs: Annotated[
        int,
        typer.Option(
            help="Worker processes for the per-partition steps and threads for the forest (0: all cores).",
            show_default="all cores",
        ),
    ] = 0,
    engine: EngineOption = None,
    partition_rows: Annotated[
        int | None,
        typer.Option(
            "--partition-rows",
            min=1000,
            help="Sales rows per partition of products, one task's share of the work; the result does not "
            "depend on it.",
            show_default="4,000,000",
        ),
    ] = None,
    cate_out: Annotated[
        str | None, typer.Option("--cate-out", help="Write product_id, cate (per-product effect) here.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw the treated-minus-control path of detrended outcomes to this PNG.")
    ] = None,
    placebo_out: Annotated[
        str | None,
        typer.Option(
            "--placebo-out",
            help="Also run the estimator on a fake experiment inside the history (the last stretch as long as the "
            "experiment, same arms) and write its effects here; warns when its p-value is below 0.05.",
        ),
    ] = None,
    carryover_out: Annotated[
        str | None,
        typer.Option(
            "--carryover-out",
            help="Switchback designs: write the carryover check here (first analysed day after a switch against "
            "the later days of the same arm, per outcome and arm, with the blackout that would remove it).",
        ),
    ] = None,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    cluster_col: ClusterCol = "cluster_id",
    price_col: Annotated[
        str, typer.Option("--price-col", help="Price column of the sales (a forest feature).")
    ] = "price",
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Estimate the average price effect per product per day (heterogeneous panel treatment effect)."""
    from pricelab_cli.hpte import estimate_hpte

    run = start_run(
        (quiet, silent),
        seed,
        fmt,
        output,
        cate_out,
        str(plot) if plot else None,
        outliers_out,
        placebo_out,
        carryover_out,
        documents=(str(plot) if plot else None,),
        storage_option=storage_option,
    )
    if outlier_c is not None and outlier_rule is OutlierRule.robust:
        raise UsageError("--outlier-c sets the quantile rule's tail share; give it with --outlier-rule quantile.")
    outcomes = list(dict.fromkeys(outcome or ["units"]))
    for name in outcomes:
        if name in ("product_id", "date", unit_col, time_col):
            raise UsageError(f"--outcome {name!r} names the product or date column; give a measure such as units.")
    if cate_out and method is HpteMethod.did:
        raise UsageError("--cate-out needs the causal forest; it does not apply to --method did.")
    ids = {unit_col: "product_id"}
    # Repeated (product_id, date) rows are checked by the core on integer keys, several
    # times faster than a generic check on a catalog's panel; its message names the file.
    # Scanned, not read: the core reads it while planning the partitions and lets it go, so
    # a catalog's assignment (hundreds of millions of rows) is not held through the run.
    assignment_table = io.scan_table(
        assignment,
        required=list(io.ASSIGNMENT_COLUMNS),
        rename={**ids, time_col: "date", cluster_col: "cluster_id"},
        dates=["date"],
        storage_options=run.storage_options,
    )
    present = assignment_table.collect_schema()
    assignment_table = assignment_table.select(
        [c for c in ("product_id", "date", "treated", "blackout", "cluster_id") if c in present]
    )
    # The sales are scanned, not read: the core streams them in batches, keeping only the
    # columns it uses and no date after the experiment's last (a Parquet dataset's later
    # partitions are not even opened), and lays them out in partitions of products.
    sales_table = io.scan_table(
        sales,
        required=["product_id", "date", *outcomes],
        rename={**ids, time_col: "date"},
        dates=["date"],
        storage_options=run.storage_options,
    )
    feature_table = run.read(features, required=["product_id"], rename=ids, unique=["product_id"]) if features else None
    if feature_table is not None and method is HpteMethod.did:
        run.reporter.warn("--features is used by the causal forest only; --method did ignores it.")
    options = dict(
        outcomes=outcomes,
        features=feature_table,
        method=method.value,
        n_bootstrap=bootstrap,
        seed=seed,
        outlier_rule=outlier_rule.value,
        outlier_filter=not no_outlier_filter,
        detrend=not no_detrend,
        fill_zeros=not no_fill_zeros,
        n_estimators=trees,
        price_col=price_col,
        labels={"sales": _label(sales), "assignment": _label(assignment), "features": _label(features)},
        n_jobs=jobs,
        rows_per_partition=partition_rows,
        **({} if outlier_c is None else {"outlier_c": outlier_c}),
    )
    # The engine's stages are the progress: rows read, partitions, detrending, forest, draws.
    with engine_for(run, engine, jobs) as chosen:
        result = estimate_hpte(sales_table, assignment_table, effect_paths=plot is not None, engine=chosen, **options)
        if placebo_out:
            from pricelab_cli.hpte.placebo import estimate_placebo

            placebo, window = estimate_placebo(sales_table, assignment_table, engine=chosen, **options)
        if carryover_out:
            carryover = _carryover_table(sales_table, assignment_table, outcomes, chosen)
    run.write(result.effects, output, extra={"n_bootstrap": bootstrap})
    if cate_out:
        # The forest's split shares travel with the CATEs (the report's "effect by feature").
        splits = {name: est.forest_splits_ for name, est in result.estimators.items()}
        run.write(user_names(result.cate, unit_col=unit_col), cate_out, extra={"forest_splits": splits})
    if outliers_out:
        run.write(user_names(result.outliers, unit_col=unit_col), outliers_out)
    if plot is not None:
        from pricelab_cli.plots import effect_path_plot

        with io.atomic_path(str(plot)) as tmp:
            effect_path_plot(result.paths, result.effects, tmp, spacing_days=result.spacing_days)
    if placebo_out:
        from pricelab_cli.hpte.placebo import placebo_warnings

        run.write(placebo.effects, placebo_out)
    if carryover_out:
        run.write(carryover, carryover_out)
    report_hpte(run.reporter, result, method.value)
    if placebo_out:
        run.reporter.say(
            f"placebo: fake experiment {window.fake_start} to {window.fake_end} ({window.periods} periods before "
            f"the start on {window.real_start}), written to {placebo_out}"
        )
        for message in placebo_warnings(placebo.effects, window):
            run.reporter.warn(message)


def _carryover_table(sales, assignment, outcomes: list[str], engine) -> pl.DataFrame:
    """``outcome`` plus the carryover check's columns, for each outcome (``hpte --carryover-out``)."""
    from pricelab_cli.diagnostics import carryover_check, detrended_views

    grid = assignment.collect() if isinstance(assignment, pl.LazyFrame) else assignment
    with warnings.catch_warnings():
        # The estimate has already said what it had to about these rows.
        warnings.simplefilter("ignore")
        _, residuals = detrended_views(sales, grid, outcomes, paths=False, engine=engine)
    tables = []
    for name in outcomes:
        check = carryover_check(residuals[name], grid)
        tables.append(check.table.select(pl.lit(name).alias("outcome"), pl.all()))
        if check.table["n_products"].max() == 0:
            ACTIVE.reporter.warn(
                f"carryover: no product of the assignment switches arm, so {name} has no carryover to check."
            )
    return pl.concat(tables)


def _label(path: str | None) -> str:
    return "standard input" if path == io.STDIO else str(path)
