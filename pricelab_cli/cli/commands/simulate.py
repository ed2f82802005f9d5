"""pricelab simulate catalog / sales: synthetic data with known truth."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    Columns,
    Format,
    InputPath,
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
from pricelab_cli.cli.registry import simulate_app
from pricelab_cli.cli.run import Run, start_run

if TYPE_CHECKING:
    import polars as pl

    from pricelab_cli.simulate import SimulatedSales

# Loaded when a command first needs them: help, --version and `design` never do.
io = lazy("pricelab_cli.io")


@simulate_app.command(
    "catalog",
    epilog="Example: pricelab simulate catalog --n-products 500 --n-groups 20 --seed 1 -o products.csv --edges-out true_edges.csv",
)
def simulate_catalog_command(
    output: Output = "-",
    n_products: Annotated[int, typer.Option(help="Number of products.")] = 200,
    n_groups: Annotated[int, typer.Option(help="Number of categories.")] = 10,
    community_size: Annotated[int, typer.Option(help="Products per planted substitute community.")] = 5,
    id_prefix: Annotated[str | None, typer.Option(help="Text ids PREFIX000001... instead of integers.")] = None,
    edges_out: Annotated[str | None, typer.Option(help="Write the planted substitute edges (the truth) here.")] = None,
    elasticity_range: Annotated[
        str | None,
        typer.Option(help="LOW,HIGH: add an `elasticity` column, one own-price elasticity per category (planted)."),
    ] = None,
    price_change_range: Annotated[
        str | None,
        typer.Option(help="LOW,HIGH: add a `price_change` column, each product's price change when treated."),
    ] = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Write a synthetic product catalog (features, categories, planted communities)."""
    from pricelab_cli.simulate import simulate_catalog

    run = start_run((quiet, silent), seed, fmt, output, edges_out)
    products, edges = simulate_catalog(
        n_products=n_products,
        n_groups=n_groups,
        community_size=community_size,
        seed=seed,
        id_prefix=id_prefix,
        elasticity_range=_pair("--elasticity-range", elasticity_range),
        price_change_range=_pair("--price-change-range", price_change_range),
    )
    run.write(products, output)
    if edges_out:
        run.write(edges, edges_out)
    run.reporter.say(f"{products.height} products in {n_groups} categories; {edges.height} planted substitute edges")


def _pair(flag: str, text: str | None) -> tuple[float, float] | None:
    """``LOW,HIGH`` as two numbers (None stays None)."""
    from pricelab_cli.errors import UsageError

    if text is None:
        return None
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"{flag} must be two numbers LOW,HIGH (e.g. -3,-0.3); got {text!r}.") from None
    return low, high


# The options of `simulate sales` that are settings of the model, named once here.
HistoryDays = Annotated[int, typer.Option(help="Days of history before the experiment.")]
PriceChange = Annotated[float, typer.Option(help="Relative price change of treated cells (-0.1 = 10% cut).")]
Elasticity = Annotated[float, typer.Option(help="Average own-price elasticity.")]
Heterogeneity = Annotated[float, typer.Option(help="How strongly elasticity varies with quality.")]
TrendSd = Annotated[float, typer.Option(help="Spread of product trends (log units per year).")]
Weekly = Annotated[float, typer.Option(help="Amplitude of the weekly pattern (log units).")]
ShockSd = Annotated[float, typer.Option(help="Spread of store-wide daily shocks (log units).")]
PromoRate = Annotated[float, typer.Option(help="Daily chance a product starts a promotion.")]
PromoDepth = Annotated[float, typer.Option(help="Promotion price cut.")]
OutlierShare = Annotated[float, typer.Option(help="Share of products with a sudden unexplained level shift.")]
CarryoverDays = Annotated[float, typer.Option(help="Decay time of the effect after treatment stops (0 = none).")]
Spillover = Annotated[bool, typer.Option("--spillover/--no-spillover", help="Treated prices move substitutes' demand.")]
BaseUnits = Annotated[float, typer.Option(help="Typical daily units of a product.")]
Dispersion = Annotated[float, typer.Option(help="Negative-binomial shape (larger = closer to Poisson).")]
ContaminationShare = Annotated[
    float, typer.Option(help="Share of products whose sales are spoiled (see --contamination-kinds).")
]
ContaminationKinds = Annotated[
    str, typer.Option(help="Comma-separated kinds dealt out in turn: noise, jump, spike, stockout, outlier.")
]


@simulate_app.command(
    "sales",
    epilog="Example: pricelab simulate sales --products products.csv --assignment assignment.parquet "
    "--edges true_edges.csv --seed 1 -o sales.parquet --truth-out truth.json",
)
def simulate_sales_command(
    products: InputPath,
    output: Output = "-",
    assignment: Annotated[
        str | None, typer.Option(help="Assignment that drives treatment (else history only).")
    ] = None,
    edges: Annotated[
        str | None, typer.Option(help="Substitute edges src,dst,weight (cross-price elasticities).")
    ] = None,
    start: Annotated[
        dt.date | None, date_option("--start", "First panel date.", "assignment start - history days")
    ] = None,
    end: Annotated[dt.date | None, date_option("--end", "Last panel date.", "assignment end")] = None,
    history_days: HistoryDays = 365,
    price_change: PriceChange = -0.10,
    elasticity: Elasticity = -2.0,
    heterogeneity: Heterogeneity = 0.5,
    trend_sd: TrendSd = 0.3,
    weekly: Weekly = 0.2,
    shock_sd: ShockSd = 0.05,
    promo_rate: PromoRate = 0.05,
    promo_depth: PromoDepth = 0.2,
    outlier_share: OutlierShare = 0.0,
    carryover_days: CarryoverDays = 0.0,
    spillover: Spillover = True,
    base_units: BaseUnits = 20.0,
    dispersion: Dispersion = 5.0,
    truth_out: Annotated[str | None, typer.Option(help="Write the true effects (JSON) here.")] = None,
    product_truth_out: Annotated[str | None, typer.Option(help="Write per-product true effects here.")] = None,
    contamination: ContaminationShare = 0.0,
    contamination_kinds: ContaminationKinds = "noise,jump,spike,stockout",
    clean_out: Annotated[
        str | None, typer.Option(help="Write the same panel without the contamination here (same draws otherwise).")
    ] = None,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Write a daily sales and price panel with known trend, shocks, promotions and effects."""
    from pricelab_cli.simulate import simulate_sales

    outputs = (output, truth_out, product_truth_out, clean_out)
    run = start_run((quiet, silent), seed, fmt, *outputs, documents=(truth_out,), storage_option=storage_option)
    names = _ColumnNames(unit_col, time_col)
    product_table, assignment_table, edge_table = _read_tables(run, names, products, assignment, edges)
    result = simulate_sales(
        product_table,
        assignment=assignment_table,
        edges=edge_table,
        start=start,
        end=end,
        history_days=history_days,
        price_change=price_change,
        elasticity=elasticity,
        heterogeneity=heterogeneity,
        trend_sd=trend_sd,
        weekly=weekly,
        shock_sd=shock_sd,
        promo_rate=promo_rate,
        promo_depth=promo_depth,
        outlier_share=outlier_share,
        carryover_days=carryover_days,
        spillover=spillover,
        base_units=base_units,
        dispersion=dispersion,
        contamination=contamination,
        contamination_kinds=contamination_kinds,
        seed=seed,
    )
    _write_results(run, names, result, *outputs)


@dataclasses.dataclass(frozen=True)
class _ColumnNames:
    """The user's names of the product and date columns (--unit-col, --time-col)."""

    unit_col: str
    time_col: str


def _read_tables(
    run: Run, names: _ColumnNames, products: str, assignment: str | None, edges: str | None
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]:
    """The products, assignment and edges tables, with pricelab's column names."""
    columns = Columns(unit=names.unit_col, time=names.time_col)
    product_table = run.read(products, required=["product_id"], rename=columns.ids, unique=["product_id"])
    assignment_table = run.read_assignment(assignment, columns) if assignment else None
    edge_table = run.read(edges, required=["src", "dst", "weight"]) if edges else None
    return product_table, assignment_table, edge_table


def _write_results(
    run: Run,
    names: _ColumnNames,
    result: SimulatedSales,
    output: str,
    truth_out: str | None,
    product_truth_out: str | None,
    clean_out: str | None,
) -> None:
    """Write the panel and the asked-for truth and clean panel (user's column names), and say
    what was made."""
    columns = {"unit_col": names.unit_col, "time_col": names.time_col}
    run.write(user_names(result.sales, **columns), output)
    if clean_out:
        run.write(user_names(result.clean_sales, **columns), clean_out)
    if truth_out:
        io.write_json({**result.truth, "provenance": run.meta()}, truth_out)
    if product_truth_out:
        run.write(user_names(result.product_truth, unit_col=names.unit_col), product_truth_out)
    truth = result.truth
    effect = (
        "no experiment" if truth["effect"] is None else f"true effect {truth['effect']:.4g} units per product per day"
    )
    run.reporter.say(f"{result.sales.height:,} product-days, {truth['start']} to {truth['end']}; {effect}")
