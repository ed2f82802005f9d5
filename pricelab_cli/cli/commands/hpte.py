"""pricelab hpte: the heterogeneous panel treatment effect."""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    AsOf,
    ClusterCol,
    Columns,
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
    date_option,
    user_names,
)
from pricelab_cli.cli.present import report_hpte, report_placebo
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import Run, engine_for, start_run
from pricelab_cli.errors import PricelabWarning, UsageError

if TYPE_CHECKING:
    import polars as pl

    from pricelab_cli import io
    from pricelab_cli.hpte import HpteResult
    from pricelab_cli.hpte.placebo import PlaceboWindow
else:
    # Loaded when a command first needs them: help, --version and `design` never do.
    io = lazy("pricelab_cli.io")


@app.command(
    epilog="Example: pricelab hpte --sales sales.parquet --assignment assignment.parquet "
    "--outcome units --outcome revenue --features products.csv -o effects.csv --cate-out cate.parquet"
)
def hpte(
    # typer reads the command's flags, help texts and defaults from these declarations, so
    # each stays here in full (this is why the function is long); the body only reads the
    # inputs, calls the core, writes the outputs and reports.
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
    as_of: AsOf = None,
    sequential: Annotated[
        bool,
        typer.Option(
            "--sequential",
            help="Add cs_low, cs_high, lift_cs_low, lift_cs_high: a 95% confidence sequence, valid however many "
            "nights the experiment is read.",
        ),
    ] = False,
    sequential_horizon: Annotated[
        dt.date | None,
        date_option(
            "--sequential-horizon",
            "With --sequential: the night at which the sequence is tightest.",
            "the assignment's last date",
        ),
    ] = None,
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Estimate the average price effect per product per day (heterogeneous panel treatment effect)."""
    from pricelab_cli.diagnostics import carryover_table
    from pricelab_cli.hpte import estimate_hpte
    from pricelab_cli.hpte.placebo import estimate_placebo
    from pricelab_cli.sequential import as_it_stood as cut_and_listed

    outputs = _Outputs(output, cate_out, plot, outliers_out, placebo_out, carryover_out)
    run = start_run(
        (quiet, silent), seed, fmt, *outputs.paths(), documents=(outputs.plot_path,), storage_option=storage_option
    )
    columns = Columns(unit_col, time_col, cluster_col)
    outcomes = _checked_outcomes(
        outcome, columns, outlier_rule=outlier_rule, outlier_c=outlier_c, method=method, cate_out=cate_out
    )
    sales_table, assignment_table = _scan_inputs(run, sales, assignment, outcomes, columns)
    feature_table = run.read_if(features, required=["product_id"], rename=columns.ids, unique=["product_id"])
    if feature_table is not None and method is HpteMethod.did:
        run.reporter.warn("--features is used by the causal forest only; --method did ignores it.")
    # The options estimate_hpte and estimate_placebo share (their signatures type them).
    options: dict[str, Any] = dict(
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
    )
    if outlier_c is not None:
        options["outlier_c"] = outlier_c
    if sequential_horizon is not None and not sequential:
        raise UsageError("--sequential-horizon tunes the confidence sequence; give it with --sequential.")
    # Placebo and carryover read the experiment as it stood too, without the products that
    # have no sales row yet (estimate_hpte, given the whole plan for the sequence's tuning and
    # the date, makes the same cut and says so once).
    as_it_stood = assignment_table
    if as_of is not None and (placebo_out or carryover_out):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PricelabWarning)
            as_it_stood = cut_and_listed(assignment_table, sales_table, as_of)
    # The engine's stages are the progress: rows read, partitions, detrending, forest, draws.
    with engine_for(run, engine, jobs) as chosen:
        result = estimate_hpte(
            sales_table,
            assignment_table,
            effect_paths=plot is not None,
            engine=chosen,
            as_of=as_of,
            sequential=sequential,
            sequential_horizon=sequential_horizon,
            **options,
        )
        placebo = estimate_placebo(sales_table, as_it_stood, engine=chosen, **options) if placebo_out else None
        carryover = carryover_table(sales_table, as_it_stood, outcomes, chosen) if carryover_out else None
    _write_outputs(run, outputs, result, placebo, carryover, columns, bootstrap=bootstrap)
    report_hpte(run.reporter, result, method.value)
    if placebo_out and placebo is not None:
        report_placebo(run.reporter, placebo[0].effects, placebo[1], placebo_out)


@dataclasses.dataclass(frozen=True)
class _Outputs:
    """Where the run writes: the effects, and each optional output (None: not asked for)."""

    effects: str
    cate: str | None
    plot: Path | None
    outliers: str | None
    placebo: str | None
    carryover: str | None

    @property
    def plot_path(self) -> str | None:
        return str(self.plot) if self.plot else None

    def paths(self) -> tuple[str | None, ...]:
        """Every output, in the order the run's provenance records them."""
        return (self.effects, self.cate, self.plot_path, self.outliers, self.placebo, self.carryover)


def _checked_outcomes(
    outcome: list[str] | None,
    columns: Columns,
    *,
    outlier_rule: OutlierRule,
    outlier_c: float | None,
    method: HpteMethod,
    cate_out: str | None,
) -> list[str]:
    """The outcomes to estimate (each once, units by default), after the checks of flags that
    do not go together."""
    if outlier_c is not None and outlier_rule is OutlierRule.robust:
        raise UsageError("--outlier-c sets the quantile rule's tail share; give it with --outlier-rule quantile.")
    outcomes = list(dict.fromkeys(outcome or ["units"]))
    for name in outcomes:
        if name in ("product_id", "date", columns.unit, columns.time):
            raise UsageError(f"--outcome {name!r} names the product or date column; give a measure such as units.")
    if cate_out and method is HpteMethod.did:
        raise UsageError("--cate-out needs the causal forest; it does not apply to --method did.")
    return outcomes


def _scan_inputs(
    run: Run, sales: str, assignment: str, outcomes: list[str], columns: Columns
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(sales, assignment) as lazy scans under pricelab's column names; the assignment first."""
    # Repeated (product_id, date) rows are checked by the core on integer keys, several
    # times faster than a generic check on a catalog's panel; its message names the file.
    # Scanned, not read: the core reads it while planning the partitions and lets it go, so
    # a catalog's assignment (hundreds of millions of rows) is not held through the run.
    assignment_table = run.scan(
        assignment, required=list(io.ASSIGNMENT_COLUMNS), rename=columns.assignment, dates=["date"]
    )
    present = assignment_table.collect_schema()
    assignment_table = assignment_table.select(
        [c for c in ("product_id", "date", "treated", "blackout", "cluster_id") if c in present]
    )
    # The sales are scanned, not read: the core streams them in batches, keeping only the
    # columns it uses and no date after the experiment's last (a Parquet dataset's later
    # partitions are not even opened), and lays them out in partitions of products.
    return run.scan_sales(sales, outcomes, columns), assignment_table


def _write_outputs(
    run: Run,
    outputs: _Outputs,
    result: HpteResult,
    placebo: tuple[HpteResult, PlaceboWindow] | None,
    carryover: pl.DataFrame | None,
    columns: Columns,
    *,
    bootstrap: int,
) -> None:
    """Write the effects, then each optional output that was asked for (``placebo``: the
    placebo's result and window)."""
    run.write(result.effects, outputs.effects, extra={"n_bootstrap": bootstrap})
    if outputs.cate:
        # The forest's split shares travel with the CATEs (the report's "effect by feature").
        splits = {name: est.forest_splits_ for name, est in result.estimators.items()}
        run.write(user_names(result.cate, unit_col=columns.unit), outputs.cate, extra={"forest_splits": splits})
    if outputs.outliers:
        run.write(user_names(result.outliers, unit_col=columns.unit), outputs.outliers)
    if outputs.plot is not None:
        from pricelab_cli.plots import effect_path_plot

        assert result.paths is not None  # asked for with effect_paths=True
        with io.atomic_path(str(outputs.plot)) as tmp:
            effect_path_plot(result.paths, result.effects, str(tmp), spacing_days=result.spacing_days)
    if outputs.placebo and placebo is not None:
        run.write(placebo[0].effects, outputs.placebo)
    if outputs.carryover and carryover is not None:
        run.write(carryover, outputs.carryover)


def _label(path: str | None) -> str:
    return "standard input" if path == io.STDIO else str(path)
