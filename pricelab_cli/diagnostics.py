"""Checks a reviewer asks for before trusting an experiment's estimate.

- ``carryover_check``: did the effect linger after a switch? For switchback designs
  (random days, crossover) the detrended outcome on the first analysed day(s) of a run of
  one arm is compared with the later days of runs of the same arm, product by product;
  ``carryover_table`` runs it for each outcome of a sales table.
- ``covariate_balance``: the standardised mean difference between the arms of each
  product feature and of pre-period sales (the treated share per day and the
  sample-ratio-mismatch test are :func:`pricelab_cli.assign.balance_report`).
- ``minimum_detectable_effect``: the smallest true effect the experiment as run would have
  found with the usual power, from its realised standard error.

The placebo test is :mod:`pricelab_cli.hpte.placebo`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats

from pricelab_cli.errors import DataError, PricelabWarning

# A check "passes" at this level; below it the report says to look again.
ALPHA = 0.05
# Power at which the minimum detectable effect is quoted.
MDE_POWER = 0.8
# |standardised mean difference| above this is the usual mark of an imbalance worth a look.
SMD_LIMIT = 0.1
# Products with both early and late days needed for a carryover contrast.
MIN_CARRYOVER_PRODUCTS = 10
# Days after a switch searched for the blackout that would remove the carryover.
MAX_BLACKOUT_SEARCH = 14
CARRYOVER_COLUMNS = (
    "arm",
    "first_days",
    "estimate",
    "se",
    "ci_low",
    "ci_high",
    "p_value",
    "n_products",
    "blackout_days",
    "suggested_blackout_days",
)


def minimum_detectable_effect(se: float, alpha: float = ALPHA, power: float = MDE_POWER) -> float:
    """Smallest true effect a two-sided test at ``alpha`` detects with probability
    ``power``: ``(z_(1-alpha/2) + z_power) * se`` (2.80 SEs at 5% and 80%)."""
    if se is None or not math.isfinite(se):
        return float("nan")
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)


def periods_since_switch(assignment: pl.DataFrame) -> pl.DataFrame:
    """Per assignment row: ``since`` = 1 on the first period of a run of one arm (blackout
    periods count), 2 on the next, ...; ``after_switch`` = the run follows a run of the
    other arm (False for each product's first run)."""
    return (
        assignment.lazy()
        .select("product_id", "date", "treated")
        .sort("product_id", "date")
        .with_columns(
            (pl.col("treated") != pl.col("treated").shift(1).over("product_id")).fill_null(False).alias("_change")
        )
        .with_columns(pl.col("_change").cast(pl.Int32).cum_sum().over("product_id").alias("_run"))
        .with_columns(
            (pl.int_range(pl.len()).over("product_id", "_run") + 1).alias("since"),
            (pl.col("_run") > 0).alias("after_switch"),
        )
        .drop("_change", "_run")
        .collect()
    )


def detrended_views(
    sales, assignment: pl.DataFrame, outcomes, *, paths: bool = True, rows: bool = True, engine=None
) -> tuple[pl.DataFrame | None, dict[str, pl.DataFrame]]:
    """From one layout of the panel and one detrending per outcome (the robust step, as in
    hpte): each outcome's treated-minus-control path (``outcome`` plus the columns of
    ``hpte.estimate.effect_path``, every product the robust step keeps; None when ``paths``
    is False) and its analysed experiment rows (``detrended_outcomes``'s table; empty when
    ``rows`` is False)."""
    from pricelab_cli.engine import default_engine
    from pricelab_cli.hpte.detrend import detrend_partitions, experiment_rows
    from pricelab_cli.hpte.estimate import effect_path
    from pricelab_cli.hpte.panel import partition_panel

    engine = default_engine(engine)
    frames, residuals = [], {}
    with partition_panel(sales, assignment, list(outcomes), price_col=None, engine=engine) as panel:
        for outcome in outcomes:
            detrended = detrend_partitions(panel, outcome, robust=True, engine=engine)
            if paths:
                path = effect_path(panel, detrended, np.ones(panel.n_products, dtype=bool), engine)
                frames.append(path.select(pl.lit(outcome).alias("outcome"), pl.all()))
            if rows:
                residuals[outcome] = experiment_rows(panel, detrended, engine)
    return (pl.concat(frames) if paths else None), residuals


@dataclasses.dataclass(frozen=True, eq=False)
class CarryoverCheck:
    """The carryover contrasts (``CARRYOVER_COLUMNS``, one row per arm) and, per arm and
    day after a switch, the contrast of that day alone against the later days
    (``profile``: ``arm``, ``since``, ``estimate``, ``se``, ``p_value``, ``n_products``)."""

    table: pl.DataFrame
    profile: pl.DataFrame

    def lingering(self) -> dict:
        """The control arm's row: the effect lingering into the first control days."""
        return self.table.filter(pl.col("arm") == "control").row(0, named=True)


def _contrast(rows: pl.DataFrame, early: pl.Expr, late: pl.Expr) -> tuple[float, float, float, int]:
    """Precision-weighted mean over products of (mean residual of early rows - mean of late
    rows): estimate, SE, two-sided normal p-value, products.

    A product's weight is the inverse of its residual standard deviation over the rows
    given, so each product's difference counts in units of its own noise (a noisy product
    no longer drowns the quiet ones, and a product's weight does not shrink with its sales
    as an inverse variance would make it); the SE is the sandwich (robust) SE of a weighted
    mean, valid whatever the weights."""
    per_product = (
        rows.group_by("product_id")
        .agg(
            pl.col("residual").filter(early).mean().alias("early"),
            pl.col("residual").filter(late).mean().alias("late"),
            pl.col("residual").var().alias("variance"),
        )
        .drop_nulls()
        .filter(pl.col("variance") > 0)
        # A group_by's order varies from run to run; the sums below must not.
        .sort("product_id")
    )
    d = (per_product["early"] - per_product["late"]).to_numpy()
    n = len(d)
    if n < MIN_CARRYOVER_PRODUCTS:
        return float("nan"), float("nan"), float("nan"), n
    w = 1.0 / np.sqrt(per_product["variance"].to_numpy())
    estimate = float((w * d).sum() / w.sum())
    se = float(np.sqrt((w * w * (d - estimate) ** 2).sum() * n / (n - 1)) / w.sum())
    p = float(2 * stats.norm.sf(abs(estimate) / se)) if se > 0 else (1.0 if estimate == 0 else 0.0)
    return estimate, se, p, n


def carryover_check(residuals: pl.DataFrame, assignment: pl.DataFrame, first_days: int = 1) -> CarryoverCheck:
    """Whether the outcome on the first ``first_days`` analysed days after a switch differs
    from the later days of the same arm.

    Parameters
    ----------
    residuals : ``product_id``, ``date``, ``residual`` of the analysed experiment rows
        (:func:`pricelab_cli.hpte.detrended_outcomes`).
    assignment : ``product_id``, ``date``, ``treated`` [, ``blackout``] (every row, blackout
        days included: they count as days after the switch).
    first_days : analysed days after a switch that count as "first".

    For each arm, each product contributes the mean residual of its first analysed days of
    runs that follow a switch minus the mean of its days further into a run (a product's own
    level cancels); the estimate is the mean over products, the SE their spread over the
    square root of their number. A lingering effect shows in the control arm with the
    effect's sign; an effect that builds up shows in the treated arm with the opposite sign.

    The suggested blackout is found day by day: the first analysed day after the current
    blackout is compared with the days after it; while it differs at ``ALPHA``, the blackout
    grows by a day (at most ``MAX_BLACKOUT_SEARCH`` days).
    """
    if first_days < 1:
        raise DataError(f"first_days {first_days} must be 1 or more.")
    since = periods_since_switch(assignment)
    rows = residuals.select("product_id", "date", "residual").join(since, on=["product_id", "date"], how="inner")
    blackout = 0
    if "blackout" in assignment.columns:
        # The blackout after a switch: the blackout days that open a run of one arm (a
        # balanced switchback's blackout days inside a run, where the arm did not change,
        # are not days after a switch).
        marked = (
            since.join(assignment.select("product_id", "date", "blackout"), on=["product_id", "date"])
            .sort("product_id", "date")
            .with_columns((pl.col("since") == 1).cast(pl.Int32).cum_sum().over("product_id").alias("_run"))
            .with_columns(pl.col("blackout").cast(pl.Int32).cum_min().over("product_id", "_run").alias("_leading"))
        )
        opening = marked.filter(pl.col("after_switch")).group_by("product_id", "_run").agg(pl.col("_leading").sum())
        blackout = int(opening["_leading"].to_numpy().max()) if opening.height else 0
    table_rows, profile_rows = [], []
    for arm, name in ((0, "control"), (1, "treated")):
        arm_rows = rows.filter(pl.col("treated") == arm)
        early = pl.col("after_switch") & (pl.col("since") <= blackout + first_days)
        late = pl.col("since") > blackout + first_days
        estimate, se, p, n = _contrast(arm_rows, early, late)
        suggested = blackout
        for day in range(blackout + 1, blackout + MAX_BLACKOUT_SEARCH + 1):
            d_est, d_se, d_p, d_n = _contrast(
                arm_rows, pl.col("after_switch") & (pl.col("since") == day), pl.col("since") > day
            )
            profile_rows.append((name, day, d_est, d_se, d_p, d_n))
            if not (d_p < ALPHA):
                break
            suggested = day
        half = 1.959963984540054 * se
        table_rows.append((name, first_days, estimate, se, estimate - half, estimate + half, p, n, blackout, suggested))
    table = pl.DataFrame(
        table_rows,
        schema={
            "arm": pl.String,
            "first_days": pl.Int64,
            "estimate": pl.Float64,
            "se": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
            "p_value": pl.Float64,
            "n_products": pl.Int64,
            "blackout_days": pl.Int64,
            "suggested_blackout_days": pl.Int64,
        },
        orient="row",
    ).with_columns(pl.col(pl.Float64).fill_nan(None))
    profile = pl.DataFrame(
        profile_rows,
        schema={
            "arm": pl.String,
            "since": pl.Int64,
            "estimate": pl.Float64,
            "se": pl.Float64,
            "p_value": pl.Float64,
            "n_products": pl.Int64,
        },
        orient="row",
    ).with_columns(pl.col(pl.Float64).fill_nan(None))
    return CarryoverCheck(table, profile)


def carryover_table(
    sales, assignment: pl.DataFrame | pl.LazyFrame, outcomes: Sequence[str], engine=None
) -> pl.DataFrame:
    """``outcome`` plus ``CARRYOVER_COLUMNS``, one block per outcome: ``carryover_check`` of
    each outcome's detrended experiment rows (sales and assignment as ``estimate_hpte`` takes
    them). Warns for an outcome when no product of the assignment switches arm.

    Meant to run after the estimate: the detrending's own warnings about these rows are not
    repeated."""
    grid = assignment.collect() if isinstance(assignment, pl.LazyFrame) else assignment
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, residuals = detrended_views(sales, grid, outcomes, paths=False, engine=engine)
    tables = []
    for name in outcomes:
        check = carryover_check(residuals[name], grid)
        tables.append(check.table.select(pl.lit(name).alias("outcome"), pl.all()))
        if check.table["n_products"].max() == 0:
            warnings.warn(
                f"carryover: no product of the assignment switches arm, so {name} has no carryover to check.",
                PricelabWarning,
                stacklevel=2,
            )
    return pl.concat(tables)


def covariate_balance(
    assignment: pl.DataFrame,
    products: pl.DataFrame | None = None,
    sales: pl.DataFrame | pl.LazyFrame | None = None,
    outcome: str = "units",
) -> pl.DataFrame:
    """Standardised mean difference between the arms of each numeric product feature and of
    pre-period sales.

    Every analysed (non-blackout) product-day counts once in its arm, so a between-product
    design compares products and a switchback design compares its days (where the SMD of a
    product feature is near zero by construction). Pre-period sales are each product's mean
    daily ``outcome`` before its first experiment date. ``SMD = (mean_T - mean_C) /
    sqrt((var_T + var_C) / 2)``. Returns ``variable``, ``mean_treated``, ``mean_control``,
    ``smd``, ``balanced`` (|SMD| <= ``SMD_LIMIT``).
    """
    analysed = assignment.lazy()
    if "blackout" in assignment.columns:
        analysed = analysed.filter(~pl.col("blackout"))
    # Product-days per arm, as weights of each product in each arm.
    weights = (
        analysed.group_by("product_id")
        .agg(
            pl.col("treated").cast(pl.Int64).sum().alias("_t"),
            (1 - pl.col("treated").cast(pl.Int64)).sum().alias("_c"),
        )
        .collect()
    )
    table = weights
    names: list[str] = []
    if products is not None:
        numeric = [c for c, t in products.schema.items() if c != "product_id" and (t.is_numeric() or t == pl.Boolean)]
        if numeric:
            features = products.select("product_id", *[pl.col(c).cast(pl.Float64) for c in numeric])
            table = table.join(features, on="product_id", how="left")
            names += numeric
    if sales is not None:
        start = assignment.lazy().group_by("product_id").agg(pl.col("date").min().alias("_start"))
        pre = (
            sales.lazy()
            .select("product_id", "date", outcome)
            .join(start, on="product_id", how="inner")
            .filter(pl.col("date") < pl.col("_start"))
            .group_by("product_id")
            .agg(pl.col(outcome).cast(pl.Float64).mean().alias(f"pre-period {outcome} per day"))
            .collect()
        )
        table = table.join(pre, on="product_id", how="left")
        names.append(f"pre-period {outcome} per day")
    rows = []
    for name in names:
        known = table.filter(pl.col(name).is_not_null() & pl.col(name).is_not_nan())
        x = known[name].to_numpy()
        wt, wc = known["_t"].to_numpy().astype(float), known["_c"].to_numpy().astype(float)
        if wt.sum() == 0 or wc.sum() == 0:
            continue
        mt, mc = np.average(x, weights=wt), np.average(x, weights=wc)
        vt = np.average((x - mt) ** 2, weights=wt)
        vc = np.average((x - mc) ** 2, weights=wc)
        pooled = math.sqrt((vt + vc) / 2)
        smd = (mt - mc) / pooled if pooled > 0 else 0.0
        rows.append((name, float(mt), float(mc), float(smd), bool(abs(smd) <= SMD_LIMIT)))
    return pl.DataFrame(
        rows,
        schema={
            "variable": pl.String,
            "mean_treated": pl.Float64,
            "mean_control": pl.Float64,
            "smd": pl.Float64,
            "balanced": pl.Boolean,
        },
        orient="row",
    )
