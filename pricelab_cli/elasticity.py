"""Price elasticities and profit from a price experiment: the randomised assignment is the
instrument for price.

The model
---------
Inside a group, demand responds to price with constant elasticities: a product-day whose log
price moved by ``d`` (against the product's reference price, the median of its recorded
prices before its experiment) and whose substitutes' log prices moved by ``x`` on average
sells ``mu * exp(e * d + g * x)`` where it would have sold ``mu``. ``e`` is the group's
own-price elasticity and ``g`` its cross-price elasticity: the change of a product's units,
in percent, when all its substitutes' prices move by 1%.

The moment
----------
At the true parameter, ``y * exp(-e * d)`` is what the day would have sold without the
price change: it has nothing to do with the randomised instrument ``z`` (own: the treated
flag; cross: the treated share of the product's substitute weight). The estimate is the
parameter at which that holds in the data. Each analysed product-day has its outcome ``y``
and hpte's counterfactual ``c`` (the product's baseline fitted on its history plus the
common date shock measured on control rows, least squares:
:func:`~pricelab_cli.hpte.detrend.detrended_outcomes`), which only takes noise out.

- *Within products* (when most of a group's volume is in units whose ``z`` varies over their
  days: random days, balanced switchbacks, crossovers): ``sum w (z - mean z) (y exp(-b x) -
  c) = 0`` over each unit's days, ``z`` centred on its weighted mean within the unit, so a
  product is compared with itself and errors in its counterfactual level cancel. It holds in
  expectation for any counterfactual and any price recorded on the days: price moves the
  design did not randomise (promotions, coupons, a unit price that is revenue over units)
  fall on both arms alike. A day without sales contributes its zero whatever its price (so
  days without a recorded price cost nothing; a day with sales and no price takes its
  unit's mean).
- *Between arms* (time-bound and triggered designs: a product sits in one arm): the arms'
  weighted means of ``y exp(-b x) - c`` agree. Cross-price effects have no between-arm
  moment here (a product's exposure is then fixed over its days; ``pricelab ipw`` compares
  exposed and unexposed products with the design's probabilities).

Weights: the unit's precision from its history (mean over variance of its daily outcome,
at most 1: a Poisson unit has 1) times, within products, the price change the instrument
made in the unit (its slope of ``x`` on ``z``, shrunk towards the group's by its noise). The
slope is taken on the other half of the unit's days (even and odd dates weigh each other),
so a weight shares no noise with the term it weighs, and a slope on the wrong side of the
group's counts as 0 (the sum then falls as the parameter rises, so it has one root).
Zero-sales days stay on the level scale: this is a ratio of means, not a regression of log
units (no log of 0, no day dropped).

Own first, then cross with the own effect held (``e d``), then own again with the cross
effect held (``g x``), which takes the substitutes' noise out of it.

The bootstrap
-------------
Units (products, or ``cluster_id`` inside the group when the assignment has clusters) are
resampled within their arm stratum, group by group, by hpte's bootstrap
(:func:`~pricelab_cli.hpte.bootstrap.bootstrap_draws`). Every unit's sums are taken at
Chebyshev nodes around the estimate, so a draw's moment at the nodes is an exact linear
statistic of the resample; its root is found on the interpolating polynomial. The interval
is the percentile interval of the draws (the other parameter held at its estimate).

Weak instrument
---------------
A group whose moment's slope at the root is within ``MIN_INSTRUMENT_T`` of its bootstrap
standard error of 0, or whose draws find no root near the estimate more than 2.5% of the
time (an unbounded interval), gets no number, and a warning names it: the policy barely
moved its prices (or its substitutes'), and a ratio over a denominator near 0 has no
useful interval.

Profit
------
With a unit cost per product, the profit ``(price - cost) * y`` of every product-day (a day
without a recorded price takes the product's last one) is detrended as an outcome, and its
treated-minus-control difference (within products, or between arms; every product weighted
equally, in money per product per day) is bootstrapped with the same units, per group and
for the whole catalog. The constant-elasticity profit-maximising price of a product is
``cost * e / (1 + e)``; a group's price change is ``r * e / (1 + e) - 1``, ``r`` the group's
cost share of revenue at reference prices and history volumes (the revenue-weighted mean
of its products' optimal changes). It exists when ``e < -1``; its interval is the same
transform of the draws, and it is flagged when it lies outside the price changes the
experiment tested (the middle 95% of its products' treated-minus-control price changes).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable

import numpy as np
import polars as pl

from pricelab_cli.errors import DataError, PricelabWarning
from pricelab_cli.hpte.bootstrap import bootstrap_draws, summarise_draws
from pricelab_cli.hpte.detrend import detrended_outcomes
from pricelab_cli.ids import row_positions
from pricelab_cli.spillover.ipw import substitute_weights

ELASTICITY_COLUMNS = ("group", "kind", "estimate", "se", "ci_low", "ci_high", "n_products")
BY_COLUMNS = ("feature", "bin", "estimate", "se", "ci_low", "ci_high", "n_products")
OPTIMUM_COLUMNS = (
    "group",
    "price_change",
    "ci_low",
    "ci_high",
    "tested_low",
    "tested_high",
    "inside_tested",
    "cost_share",
    "elasticity",
)
# A moment whose slope is within this many of its standard errors of 0 is a weak
# instrument (|t| < 3.16 is a first-stage F below 10, the usual rule of thumb).
MIN_INSTRUMENT_T = math.sqrt(10.0)
# Chebyshev nodes on [-1, 1]: each moment is interpolated through its values there (a smooth
# function of the parameter: sums of exponentials of it times price changes).
_NODES = 11
_CHEBYSHEV = np.cos(np.pi * (np.arange(_NODES) + 0.5) / _NODES)[::-1]
# Half-widths of the node ranges: a first search within 8 of 0, then nodes within 2.5 of its
# root (a draw with no root inside that range counts as none: the group is weak).
SEARCH_WIDTHS = (8.0, 2.5)
_GRID = 801
_TABLE_SCHEMA = {
    "group": pl.String,
    "kind": pl.String,
    "estimate": pl.Float64,
    "se": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "n_products": pl.Int64,
}


@dataclasses.dataclass(frozen=True, eq=False)
class ElasticityResult:
    """``table``: ``ELASTICITY_COLUMNS``, a row per group and kind (``profit`` rows end with
    the whole catalog's, its ``group`` null); ``optimum``: ``OPTIMUM_COLUMNS`` with a cost, else
    None; ``weak``: per kind, the groups left without a number and their instrument's
    t-statistic; ``draws``: per (group, kind), the bootstrap draws of the elasticity."""

    table: pl.DataFrame
    optimum: pl.DataFrame | None
    weak: dict[str, dict[str, float]]
    draws: dict[tuple[str, str], np.ndarray]
    designs: dict[str, str]  # per group: "within" or "between"
    by: pl.DataFrame | None = None  # ``BY_COLUMNS``: the own elasticity by product features


def estimate_elasticity(
    sales: pl.DataFrame | pl.LazyFrame,
    assignment: pl.DataFrame,
    products: pl.DataFrame,
    *,
    group_col: str = "category",
    price_col: str = "price",
    outcome: str = "units",
    edges: pl.DataFrame | None = None,
    cost_col: str | None = None,
    n_bootstrap: int = 500,
    seed: int = 0,
    engine=None,
    labels: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    by: list[str] | None = None,
) -> ElasticityResult:
    """Own-price (and with ``edges`` cross-price) elasticity of ``outcome`` per group of
    ``products[group_col]``, and with ``cost_col`` (a unit cost in ``products``) the policy's
    effect on profit and the profit-maximising price change (see the module docstring).
    ``by`` (product columns) adds the own elasticity by each column's values (``BY_COLUMNS``;
    a numeric column by its quartiles). ``progress`` is called with 1 after each group."""
    labels = {"sales": "sales", "products": "products", "edges": "edges", **(labels or {})}
    lazy = sales.lazy() if isinstance(sales, pl.DataFrame) else sales
    _check_inputs(lazy, products, group_col, price_col, cost_col, labels)
    for col in by or []:
        if col not in products.columns:
            raise DataError(
                f"{labels['products']}: no column {col!r} for --by (columns: {', '.join(products.columns)})."
            )
    # Least-squares residuals, not hpte's robust ones: winsorising clips the rows the
    # treatment raised more than the others, and the moment needs the outcome as it came.
    rows = detrended_outcomes(lazy, assignment, outcome, engine=engine, robust=False)
    prices = _price_changes(lazy, assignment, price_col, outcome)
    rows = _with_prices(rows, prices, price_col, labels["sales"])
    if edges is not None:
        rows = _with_exposure(rows, prices.days, assignment, edges, products)
    rows = _with_groups(rows, products, group_col, labels["products"])
    unit_col = "cluster_id" if "cluster_id" in assignment.columns else None
    if unit_col is not None:
        rows = rows.join(assignment.select("product_id", "date", "cluster_id"), on=["product_id", "date"], how="left")
    table_rows: list[tuple] = []
    weak: dict[str, dict[str, float]] = {"own": {}, "cross": {}}
    draws: dict[tuple[str, str], np.ndarray] = {}
    designs: dict[str, str] = {}
    fixed: list[str] = []  # groups whose products' exposure never changes over their days
    by_group = rows.partition_by("group", as_dict=True, maintain_order=True)
    for index, (key, part) in enumerate(by_group.items()):
        group = str(key[0])
        fits = _group_elasticities(part, unit_col, edges is not None, n_bootstrap, _group_seed(seed, index))
        for kind, fit in fits.items():
            if kind == "cross" and fit.moment == "between":
                fixed.append(group)
            elif fit.weak:
                weak[kind][group] = fit.t_instrument
            table_rows.append((group, kind, *fit.row(), fit.n_products))
            draws[(group, kind)] = fit.draws
        if "own" in fits:
            designs[group] = fits["own"].moment
        if progress is not None:
            progress(1)
    _warn_weak(weak, outcome)
    if fixed:
        warnings.warn(
            f"{outcome}: in {len(fixed)} group(s) no product's substitutes changed arm over its days (a time-bound or "
            "triggered design), so their cross-price elasticity is left empty; `pricelab ipw` compares exposed and "
            f"unexposed products with the design's probabilities: {', '.join(repr(g) for g in fixed[:5])}"
            f"{', ...' if len(fixed) > 5 else ''}.",
            PricelabWarning,
            stacklevel=2,
        )
    table = _table(table_rows)
    optimum = None
    if cost_col is not None:
        profit = _profit_rows(lazy, assignment, products, group_col, price_col, cost_col, outcome, unit_col, engine)
        profit_table = _profit_effects(profit, unit_col, n_bootstrap, seed)
        table = _table(pl.concat([table, profit_table]).rows())
        optimum = _optimum(table, draws, prices.history, rows, products, group_col, cost_col)
    by_table = _by_features(rows.drop("group"), products, by, unit_col, n_bootstrap, seed) if by else None
    return ElasticityResult(table, optimum, {k: v for k, v in weak.items() if v}, draws, designs, by_table)


def _by_features(
    rows: pl.DataFrame, products: pl.DataFrame, columns: list[str], unit_col: str | None, n_bootstrap: int, seed: int
) -> pl.DataFrame:
    """The own elasticity by each column's values (a numeric column with more than four
    values by its quartiles over the analysed products): which products are price-sensitive."""
    out = []
    ids = rows.schema["product_id"]
    analysed = rows.get_column("product_id").unique()
    for offset, col in enumerate(columns):
        values = products.select(pl.col("product_id").cast(ids, strict=False), pl.col(col)).filter(
            pl.col("product_id").is_in(analysed.implode())
        )
        series = values.get_column(col)
        if series.dtype.is_numeric() and series.n_unique() > 4:
            cuts = [float(q) for q in np.unique(np.nanquantile(series.cast(pl.Float64).to_numpy(), [0.25, 0.5, 0.75]))]
            shown = [f"<= {c:.4g}" for c in cuts] + [f"> {cuts[-1]:.4g}"]
            names = np.array([f"q{k + 1} ({w})" for k, w in enumerate(shown)], dtype=object)
            numbers = series.cast(pl.Float64).to_numpy()
            where = np.searchsorted(np.array(cuts), numbers, side="left")
            labels = names[np.minimum(where, len(cuts))]
            binned = pl.Series(labels, dtype=pl.String).set(pl.Series(np.isnan(numbers)), None)
        else:
            binned = series.cast(pl.String)
        bins = values.select("product_id").with_columns(bin=binned)
        part_rows = rows.join(bins, on="product_id", how="inner").filter(pl.col("bin").is_not_null())
        parts = part_rows.sort("bin", "product_id", "date").partition_by("bin", as_dict=True, maintain_order=True)
        for index, (key, part) in enumerate(parts.items()):
            fits = _group_elasticities(
                part, unit_col, False, n_bootstrap, _group_seed(seed + 1000 * (offset + 1), index)
            )
            if "own" in fits:
                fit = fits["own"]
                out.append((col, str(key[0]), *fit.row(), fit.n_products))
    return pl.DataFrame(
        out,
        schema={
            "feature": pl.String,
            "bin": pl.String,
            **{k: v for k, v in _TABLE_SCHEMA.items() if k not in ("group", "kind")},
        },
        orient="row",
    ).with_columns(pl.col("estimate", "se", "ci_low", "ci_high").fill_nan(None))


def _table(rows: list[tuple]) -> pl.DataFrame:
    return (
        pl.DataFrame(rows, schema=_TABLE_SCHEMA, orient="row")
        .with_columns(pl.col("estimate", "se", "ci_low", "ci_high").fill_nan(None))
        .sort(
            pl.col("group").is_null(),
            "group",
            pl.col("kind").replace_strict({"own": 0, "cross": 1, "profit": 2}),
            maintain_order=True,
        )
    )


def _warn_weak(weak: dict[str, dict[str, float]], outcome: str) -> None:
    for kind, groups in weak.items():
        if not groups:
            continue
        what = "the price" if kind == "own" else "the substitutes' prices"
        shown = ", ".join(f"{g!r} (t = {t:.2f})" for g, t in list(groups.items())[:5])
        warnings.warn(
            f"{outcome}: the policy barely moved {what} in {len(groups)} group(s), so their {kind} elasticity is "
            f"left empty (weak instrument: its moment's slope is within {MIN_INSTRUMENT_T:.2f} standard errors "
            f"of 0): {shown}{', ...' if len(groups) > 5 else ''}.",
            PricelabWarning,
            stacklevel=3,
        )


def _group_seed(seed: int, index: int) -> int:
    """Each group's draws from a stream of its own (groups are independent strata)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _check_inputs(
    sales: pl.LazyFrame,
    products: pl.DataFrame,
    group_col: str,
    price_col: str,
    cost_col: str | None,
    labels: dict[str, str],
) -> None:
    names = sales.collect_schema().names()
    if price_col not in names:
        raise DataError(
            f"{labels['sales']}: no price column {price_col!r} (columns: {', '.join(names)}); name it with --price-col."
        )
    for col, flag in ((group_col, "--group-col"), (cost_col, "--cost-col")):
        if col is not None and col not in products.columns:
            raise DataError(
                f"{labels['products']}: no column {col!r} (columns: {', '.join(products.columns)}); name it with {flag}."
            )
    if cost_col is not None:
        cost = products.get_column(cost_col)
        if not cost.dtype.is_numeric():
            raise DataError(
                f"{labels['products']}: column {cost_col!r} must be numeric (a unit cost); it is {cost.dtype}."
            )
        bad = products.filter(cost.is_null() | ~cost.cast(pl.Float64).is_finite() | (cost < 0))
        if bad.height:
            raise DataError(
                f"{labels['products']}: column {cost_col!r} must be a unit cost of 0 or more for every product; product "
                f"{bad['product_id'][0]!r} has {bad[cost_col][0]!r}."
            )


@dataclasses.dataclass(frozen=True, eq=False)
class _Prices:
    """``days``: ``product_id, date, d`` on the assignment's dates (``d`` null on a day
    without a recorded price); ``history``: per product, ``_reference`` (its median log
    price before its experiment) and its history's ``_history_mean`` and ``_history_var``
    of the outcome."""

    days: pl.DataFrame
    history: pl.DataFrame


def _price_changes(sales: pl.LazyFrame, assignment: pl.DataFrame, price_col: str, outcome: str) -> _Prices:
    """``d``: log price against the product's reference price (the median of its
    pre-experiment days with a price; null on a day without one, as a day without sales
    often is), with each product's history. A product outside the assignment takes the
    experiment's first date. The sales are read once."""
    first = assignment.lazy().group_by("product_id").agg(pl.col("date").min().alias("_first"))
    start, end = assignment.get_column("date").min(), assignment.get_column("date").max()
    prices = (
        sales.select(
            "product_id", "date", pl.col(price_col).cast(pl.Float64).alias("_price"), pl.col(outcome).cast(pl.Float64)
        )
        .filter(pl.col("date") <= end)
        .with_columns(pl.when(pl.col("_price") > 0).then(pl.col("_price").log()).alias("_log_price"))
        .join(first, on="product_id", how="left")
        .with_columns(pl.col("_first").fill_null(pl.lit(start)))
        .select("product_id", "date", outcome, "_log_price", "_first")
        .collect()
    )
    before = prices.filter(pl.col("date") < pl.col("_first")).select("product_id", outcome, "_log_price")
    # Sorted by product and value: the median, mean and variance below are the same bits
    # whatever order the input's rows came in (polars' own grouped sums are not).
    before = before.sort("product_id", pl.col(outcome), "_log_price", nulls_last=True)
    code = before.get_column("product_id").rank("dense").to_numpy().astype(np.int64) - 1
    n_products = int(code.max()) + 1 if len(code) else 0
    values = before.get_column(outcome).to_numpy()
    count = np.bincount(code, minlength=n_products).astype(np.float64)
    mean = np.bincount(code, weights=values, minlength=n_products) / np.maximum(count, 1)
    spread = np.bincount(code, weights=(values - mean[code]) ** 2, minlength=n_products) / np.maximum(count - 1, 1)
    history = (
        before.group_by("product_id", maintain_order=True)
        .agg(pl.col("_log_price").median().alias("_reference"))
        .with_columns(_history_mean=pl.Series(mean), _history_var=pl.Series(np.where(count > 1, spread, np.nan)))
    )
    days = (
        prices.filter(pl.col("date") >= start)
        .join(history.select("product_id", "_reference"), on="product_id", how="left")
        .select("product_id", "date", (pl.col("_log_price") - pl.col("_reference")).alias("d"))
    )
    return _Prices(days, history)


def _with_prices(rows: pl.DataFrame, prices: _Prices, price_col: str, label: str) -> pl.DataFrame:
    found = (
        rows.join(prices.days, on=["product_id", "date"], how="left")
        .join(prices.history, on="product_id", how="left")
        .with_columns(pl.col("_history_mean", "_history_var").fill_null(0.0).fill_nan(0.0))
    )
    # A product needs a reference price and a price on some analysed day; its other days
    # stay (a day without sales has no price, and its zero is data).
    priced = found.group_by("product_id").agg(
        (pl.col("_reference").is_not_null().all() & pl.col("d").is_not_null().any()).alias("_priced")
    )
    lost = priced.filter(~pl.col("_priced")).get_column("product_id")
    if lost.len():
        warnings.warn(
            f"{label}: {lost.len()} product(s) have no positive {price_col!r} before their experiment (no reference "
            f"price) or none on an analysed day, and are left out, e.g. {lost.sort()[0]!r}.",
            PricelabWarning,
            stacklevel=3,
        )
        found = found.join(lost.to_frame(), on="product_id", how="anti")
    return found


def _with_exposure(
    rows: pl.DataFrame, days: pl.DataFrame, assignment: pl.DataFrame, edges: pl.DataFrame, products: pl.DataFrame
) -> pl.DataFrame:
    """``x``: the weighted mean log price change of a row's substitutes that have a price
    that day (null when none has), and ``z_cross``: the treated share of all its
    substitutes' weight (the instrument), with ipw's substitutes
    (:func:`~pricelab_cli.spillover.ipw.substitute_weights`: positive weights between two
    products of the products table)."""
    ids = products.get_column("product_id").cast(rows.schema["product_id"], strict=False)
    weights = substitute_weights(edges, ids, stacklevel=4)
    dates = rows.get_column("date").unique().sort()
    date_numbers = dates.to_physical().to_numpy()

    def grid(frame: pl.DataFrame, column: str, fill: float) -> np.ndarray:
        """``frame[column]`` laid out as products x analysed dates (``fill`` elsewhere)."""
        out = np.full((len(ids), len(dates)), fill)
        product = row_positions(frame.get_column("product_id"), ids)
        day = frame.get_column("date").to_physical().to_numpy()
        at = np.minimum(np.searchsorted(date_numbers, day), len(dates) - 1)
        inside = (product >= 0) & (date_numbers[at] == day)
        out[product[inside], at[inside]] = frame.get_column(column).cast(pl.Float64).to_numpy()[inside]
        return out

    price = grid(days.drop_nulls("d"), "d", np.nan)
    seen = np.isfinite(price)
    treated = grid(assignment, "treated", 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (weights @ np.where(seen, price, 0.0)) / (weights @ seen.astype(np.float64))
        z = (weights @ treated) / np.asarray(weights.sum(axis=1))
    product = row_positions(rows.get_column("product_id"), ids)
    day = np.searchsorted(date_numbers, rows.get_column("date").to_physical().to_numpy())
    known = product >= 0
    pick = (np.where(known, product, 0), day)
    return rows.with_columns(
        x=pl.Series(np.where(known, x[pick], np.nan)).fill_nan(None),
        z_cross=pl.Series(np.where(known, z[pick], np.nan)).fill_nan(None),
    )


def _with_groups(rows: pl.DataFrame, products: pl.DataFrame, group_col: str, label: str) -> pl.DataFrame:
    groups = products.select(
        pl.col("product_id").cast(rows.schema["product_id"], strict=False), pl.col(group_col).cast(pl.String)
    ).rename({group_col: "group"})
    joined = rows.join(groups, on="product_id", how="left")
    lost = joined.filter(pl.col("group").is_null()).get_column("product_id").unique(maintain_order=True)
    if lost.len():
        warnings.warn(
            f"{label}: {lost.len()} analysed product(s) have no {group_col!r} and are left out, e.g. {lost[0]!r}.",
            PricelabWarning,
            stacklevel=3,
        )
    return joined.filter(pl.col("group").is_not_null()).sort("group", "product_id", "date")


@dataclasses.dataclass(frozen=True, eq=False)
class _Fit:
    """One parameter of one group: estimate, its draws, the instrument's t-statistic."""

    estimate: float
    draws: np.ndarray
    t_instrument: float
    unbounded: float  # share of the draws with no root near the estimate
    n_products: int
    moment: str

    @property
    def weak(self) -> bool:
        """No number: the instrument is weak, or more than 2.5% of the draws have no root
        near the estimate (the 95% interval is then not bounded)."""
        return not abs(self.t_instrument) >= MIN_INSTRUMENT_T or self.unbounded > 0.025

    def row(self) -> tuple[float, float, float, float]:
        if self.weak or not np.isfinite(self.estimate):
            nan = float("nan")
            return nan, nan, nan, nan
        boot = summarise_draws(self.draws)
        return self.estimate, boot.se, boot.ci_low, boot.ci_high


def _group_elasticities(
    part: pl.DataFrame, unit_col: str | None, cross: bool, n_bootstrap: int, seed: int
) -> dict[str, _Fit]:
    """Own, then (with edges) cross with the own effect as offset, then own again with the
    cross effect as offset. Empty when the group lacks an arm."""
    treated = part.get_column("treated").to_numpy().astype(np.float64)
    if treated.all() or not treated.any():
        return {}
    key = part.get_column(unit_col if unit_col is not None else "product_id")
    unit = key.rank("dense").to_numpy().astype(np.int64) - 1
    data = _Rows(
        y=(part.get_column("residual") + part.get_column("counterfactual")).to_numpy(),
        c=part.get_column("counterfactual").to_numpy(),
        unit=unit,
        half=(part.get_column("date").cast(pl.Int32).to_numpy() % 2).astype(np.int64),
        product=part.get_column("product_id"),
        history_mean=part.get_column("_history_mean").to_numpy(),
        history_var=part.get_column("_history_var").to_numpy(),
    )
    n_units = int(unit.max()) + 1
    d = _filled(part.get_column("d").to_numpy().astype(np.float64), treated, unit, n_units)
    own = data.fit(treated, d, np.zeros(len(d)), n_bootstrap, seed)
    if not cross:
        return {"own": own}
    z = part.get_column("z_cross").fill_null(0.0).to_numpy()
    x = _filled(part.get_column("x").to_numpy().astype(np.float64), z, unit, n_units)
    own_effect = own.estimate * d if np.isfinite(own.estimate) else np.zeros(len(d))
    cross_fit = data.fit(z, x, own_effect, n_bootstrap, seed + 1, allow_between=False)
    if np.isfinite(cross_fit.estimate) and not cross_fit.weak:
        own = data.fit(treated, d, cross_fit.estimate * x, n_bootstrap, seed)
    return {"own": own, "cross": cross_fit}


@dataclasses.dataclass(frozen=True, eq=False)
class _Rows:
    """A group's rows: outcome, counterfactual, resampling unit, product, the half of the
    days a row is in (date parity), and the product's history summary."""

    y: np.ndarray
    c: np.ndarray
    unit: np.ndarray
    half: np.ndarray
    product: pl.Series
    history_mean: np.ndarray
    history_var: np.ndarray

    def fit(
        self, z: np.ndarray, x: np.ndarray, offset: np.ndarray, n_bootstrap: int, seed: int, allow_between: bool = True
    ) -> _Fit:
        """The parameter of ``x`` with instrument ``z`` (the other parameter's log effect
        ``offset`` held), its draws and its instrument's strength."""
        n_units = int(self.unit.max()) + 1
        count = np.bincount(self.unit, minlength=n_units).astype(np.float64)
        # x is needed where there are sales (a day without sales contributes its zero
        # whatever the price); a day with sales and no recorded price takes its unit's mean
        # price change in its arm.
        x = _filled(x, z, self.unit, n_units)
        mean = np.bincount(self.unit, weights=self.history_mean, minlength=n_units) / count
        spread = np.bincount(self.unit, weights=self.history_var, minlength=n_units) / count
        precision = np.divide(mean, np.maximum(spread, mean), out=np.zeros(n_units), where=mean > 0)
        zc = z - (np.bincount(self.unit, weights=z, minlength=n_units) / count)[self.unit]
        z_var = np.bincount(self.unit, weights=zc * zc, minlength=n_units)
        level = np.bincount(self.unit, weights=np.clip(self.c, 0, None), minlength=n_units)
        varies = (z_var > 1e-12) & (level > 0)
        within = bool(level[varies].sum() >= 0.5 * level.sum())
        if within:
            keep = varies[self.unit]
            # Each half of a unit's days is weighted by the price change the instrument made
            # in the other half (its slope of x on z), so a weight shares no noise with the
            # term it weighs; a slope on the wrong side of the group's counts as 0.
            slopes = [_slope(z, x, self.unit, n_units, self.half == h) for h in (0, 1)]
            direction = np.sign(np.nansum([np.nansum(s * precision) for s in slopes])) or -1.0
            weight = [precision * np.clip(np.nan_to_num(s) * direction, 0.0, None) * direction for s in slopes]
            row_weight = np.where(self.half == 0, weight[1][self.unit], weight[0][self.unit])
        elif allow_between:
            keep = np.ones(len(z), dtype=bool)
            row_weight = precision[self.unit]
        else:
            return _Fit(float("nan"), np.full(n_bootstrap, np.nan), 0.0, 1.0, 0, "between")
        has_t = np.bincount(self.unit, weights=(z > 0) & keep, minlength=n_units) > 0
        has_c = np.bincount(self.unit, weights=(z <= 0) & keep, minlength=n_units) > 0
        moment = _Moment(
            y=self.y[keep] * np.exp(-offset[keep]),
            c=self.c[keep],
            x=x[keep],
            z=z[keep],
            unit=self.unit[keep],
            n_units=n_units,
            weight=row_weight[keep],
            within=within,
        )
        estimate, drawn, t_instrument, unbounded = moment.solve(
            has_t.astype(np.int8) + 2 * has_c.astype(np.int8), n_bootstrap, seed
        )
        n_products = int(self.product.filter(pl.Series(keep)).n_unique())
        return _Fit(estimate, drawn, t_instrument, unbounded, n_products, "within" if within else "between")


def _filled(x: np.ndarray, z: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    """``x`` with each missing value replaced by its unit's mean on the rows of the same arm
    (``z > 0`` or not), else the unit's mean, else 0."""
    seen = np.isfinite(x)
    if seen.all():
        return x
    x0 = np.where(seen, x, 0.0)
    out = x.copy()
    arm = z > 0
    for on in (True, False):
        rows = arm == on
        n = np.bincount(unit, weights=seen & rows, minlength=n_units)
        m = np.divide(
            np.bincount(unit, weights=x0 * rows, minlength=n_units), n, out=np.full(n_units, np.nan), where=n > 0
        )
        out = np.where(~seen & rows, m[unit], out)
    n = np.bincount(unit, weights=seen, minlength=n_units)
    overall = np.divide(np.bincount(unit, weights=x0, minlength=n_units), n, out=np.zeros(n_units), where=n > 0)
    return np.where(np.isnan(out), overall[unit], out)


def _slope(z: np.ndarray, x: np.ndarray, unit: np.ndarray, n_units: int, rows: np.ndarray) -> np.ndarray:
    """Per unit, the least-squares slope of ``x`` on ``z`` over ``rows`` (NaN where ``z``
    does not vary there), shrunk towards the mean of the units' slopes by how noisy it is
    (empirical Bayes: its sampling variance against the units' spread of true slopes, by the
    method of moments). Promotions and coupons make a unit's slope over a few days noisy;
    the shrunk slope is nearer the price change the instrument made."""
    w = rows.astype(np.float64)
    n = np.bincount(unit, weights=w, minlength=n_units)
    with np.errstate(divide="ignore", invalid="ignore"):
        zm = np.bincount(unit, weights=z * w, minlength=n_units) / n
        xm = np.bincount(unit, weights=x * w, minlength=n_units) / n
        zc = (z - zm[unit]) * w
        szz = np.bincount(unit, weights=zc * zc, minlength=n_units)
        szx = np.bincount(unit, weights=zc * (x - xm[unit]), minlength=n_units)
        slope = np.where(szz > 1e-12, szx / szz, np.nan)
        residual = (x - xm[unit] - np.nan_to_num(slope)[unit] * (z - zm[unit])) * w
        noise = np.bincount(unit, weights=residual * residual, minlength=n_units) / np.maximum(n - 2, 1) / szz
    known = np.isfinite(slope) & np.isfinite(noise)
    if known.sum() < 3:
        return slope
    centre = float(slope[known].mean())
    spread = max(float(slope[known].var()) - float(noise[known].mean()), 1e-6)
    return np.where(known, centre + spread / (spread + noise) * (slope - centre), slope)


@dataclasses.dataclass(frozen=True, eq=False)
class _Moment:
    """The moment of one parameter: ``y`` already divided by the other parameter's effect."""

    y: np.ndarray
    c: np.ndarray
    x: np.ndarray
    z: np.ndarray
    unit: np.ndarray
    n_units: int
    weight: np.ndarray  # per row
    within: bool

    def node_statistics(self, nodes: np.ndarray) -> np.ndarray:
        """Per unit, the sums the moment is made of at each node (units x columns).

        Within: ``sum w (z - mean z) (y exp(-b x) - c)`` over the unit's days (``mean z`` the
        rows' ``w``-weighted mean): at the true ``b`` the untreated outcome ``y exp(-b x)`` is
        unrelated to the randomised ``z``. Between: ``sum_T w y exp(-b x)``, ``sum_C w y
        exp(-b x)`` at every node, then ``sum_T w c``, ``sum_C w c``,
        ``sum_T w``, ``sum_C w``: the arms' weighted means of the untreated outcome less the
        counterfactual agree at the true ``b``."""
        n = self.n_units
        untreated = self.y[:, None] * np.exp(-self.x[:, None] * nodes[None, :])
        if self.within:
            # z centred on the unit's mean with the rows' own weights, so sum w (z - mean z)
            # is 0 in every unit and its counterfactual's level error cancels exactly.
            total = np.bincount(self.unit, weights=self.weight, minlength=n)
            mean_z = np.divide(
                np.bincount(self.unit, weights=self.weight * self.z, minlength=n),
                total,
                out=np.zeros(n),
                where=total != 0,
            )
            w = self.weight * (self.z - mean_z[self.unit])
            by_unit = np.stack(
                [np.bincount(self.unit, weights=w * untreated[:, j], minlength=n) for j in range(len(nodes))], 1
            )
            return by_unit - np.bincount(self.unit, weights=w * self.c, minlength=n)[:, None]
        arms = (self.z > 0, self.z <= 0)
        sums = [
            np.stack(
                [
                    np.bincount(self.unit, weights=self.weight * untreated[:, j] * arm, minlength=n)
                    for j in range(len(nodes))
                ],
                1,
            )
            for arm in arms
        ]
        rest = [np.bincount(self.unit, weights=self.weight * self.c * arm, minlength=n) for arm in arms]
        rest += [np.bincount(self.unit, weights=self.weight * arm, minlength=n) for arm in arms]
        return np.column_stack([sums[0], sums[1], *rest])

    def value(self, stats: np.ndarray, n_nodes: int) -> np.ndarray:
        """The moment at every node from (draws x columns) sums of ``node_statistics``."""
        if self.within:
            return stats
        treated, control = stats[:, :n_nodes], stats[:, n_nodes : 2 * n_nodes]
        c_t, c_c, w_t, w_c = (stats[:, 2 * n_nodes + k][:, None] for k in range(4))
        with np.errstate(divide="ignore", invalid="ignore"):
            return (treated - c_t) / w_t - (control - c_c) / w_c

    def solve(self, stratum: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, np.ndarray, float, float]:
        """The root, its bootstrap draws, the instrument's t-statistic (slope at the root
        over the draws' spread of it) and the share of draws with no root in range."""
        centre = 0.0
        for half_width in SEARCH_WIDTHS:  # a wide search, then nodes around its root
            nodes = centre + half_width * _CHEBYSHEV
            stats = self.node_statistics(nodes)
            root, slope, beyond = _roots(self.value(stats.sum(axis=0)[None, :], _NODES), nodes)
            if not np.isfinite(root[0]) or beyond[0]:
                return float("nan"), np.full(n_bootstrap, np.nan), 0.0, 1.0
            centre = float(root[0])
        drawn = bootstrap_draws(stats.sum(axis=0), stats, stratum, n_bootstrap, seed)
        roots, slopes, beyond = _roots(self.value(drawn, _NODES), nodes)
        spread = float(np.nanstd(slopes, ddof=1)) if np.isfinite(slopes).sum() > 1 else float("nan")
        t_instrument = float(slope[0]) / spread if spread > 0 else 0.0
        unbounded = float((beyond | np.isnan(roots)).mean()) if len(roots) else 0.0
        return centre, roots, t_instrument, unbounded


def _roots(values: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``values`` (a moment at the Chebyshev ``nodes``): the root of its
    interpolating polynomial inside the nodes' range (the one nearest the centre; the edge
    it lies beyond when there is none, NaN when the moment is not finite), the polynomial's
    slope at the centre, and whether the root lies beyond an edge."""
    low, high = float(nodes.min()), float(nodes.max())
    half = (high - low) / 2
    scaled = (nodes - (low + high) / 2) / half
    basis = np.polynomial.chebyshev.chebvander(scaled, _NODES - 1)
    good = np.isfinite(values).all(axis=1)
    coefficients = np.zeros((len(values), _NODES))
    if good.any():
        coefficients[good] = np.linalg.solve(basis, values[good].T).T
    grid = np.linspace(scaled.min(), scaled.max(), _GRID)
    on_grid = coefficients @ np.polynomial.chebyshev.chebvander(grid, _NODES - 1).T
    change = np.signbit(on_grid[:, :-1]) != np.signbit(on_grid[:, 1:])
    distance = np.where(change, np.abs(np.arange(_GRID - 1) - (_GRID - 1) / 2), np.inf)
    at = np.argmin(distance, axis=1)
    pick = np.arange(len(values))
    found = good & np.isfinite(distance[pick, at])
    left, right = on_grid[pick, at], on_grid[pick, at + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(found, grid[at] + (grid[at + 1] - grid[at]) * left / (left - right), 0.0)
    derivative = np.polynomial.chebyshev.chebder(coefficients.T).T
    for _ in range(3):  # Newton's method on the polynomial from the grid's bracket
        value = np.polynomial.chebyshev.chebval(x, coefficients.T, tensor=False)
        slope_x = np.polynomial.chebyshev.chebval(x, derivative.T, tensor=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(found & (slope_x != 0), x - value / slope_x, x)
    inside = found & (np.abs(x) <= 1)
    # No root in the range: the root lies beyond the edge the moment points to (its sign at
    # the centre against its slope); such a draw sits at that edge, and more than 2.5% of
    # them leave the interval unbounded (``_Fit.weak``).
    centre_value = np.polynomial.chebyshev.chebval(0.0, coefficients.T, tensor=False)
    centre_slope_x = np.polynomial.chebyshev.chebval(0.0, derivative.T, tensor=False)
    beyond = np.where(centre_value * centre_slope_x < 0, 1.0, -1.0)
    roots = np.where(inside, (low + high) / 2 + x * half, np.nan)
    roots = np.where(~inside & good, (low + high) / 2 + beyond * half, roots)
    centre_slope = np.where(good, centre_slope_x / half, np.nan)
    return roots, np.atleast_1d(centre_slope), good & ~inside


def _profit_rows(
    sales: pl.LazyFrame,
    assignment: pl.DataFrame,
    products: pl.DataFrame,
    group_col: str,
    price_col: str,
    cost_col: str,
    outcome: str,
    unit_col: str | None,
    engine,
) -> pl.DataFrame:
    """Detrended profit ``(price - cost) * outcome`` of every analysed product-day (a day
    without a price takes the product's last one), with its group and unit."""
    ids = sales.collect_schema()["product_id"]
    cost = products.select(
        pl.col("product_id").cast(ids, strict=False), pl.col(cost_col).cast(pl.Float64).alias("_cost")
    )
    profit = (
        sales.select("product_id", "date", pl.col(price_col).cast(pl.Float64).alias("_price"), pl.col(outcome))
        .sort("product_id", "date")
        .with_columns(pl.when(pl.col("_price") > 0).then(pl.col("_price")).forward_fill().over("product_id"))
        .join(cost.lazy(), on="product_id", how="inner")
        .select(
            "product_id",
            "date",
            ((pl.col("_price") - pl.col("_cost")) * pl.col(outcome)).fill_null(0.0).alias("_profit"),
        )
        # Collected whole (three columns): read as a stream of batches, the window above
        # lost products' rows (seen at 20,000 products).
        .collect()
    )
    rows = detrended_outcomes(profit, assignment, "_profit", engine=engine, robust=False)
    groups = products.select(
        pl.col("product_id").cast(ids, strict=False), pl.col(group_col).cast(pl.String).alias("group")
    )
    rows = rows.join(groups, on="product_id", how="inner")
    if unit_col is not None:
        rows = rows.join(assignment.select("product_id", "date", unit_col), on=["product_id", "date"], how="left")
    return rows


def _profit_effects(rows: pl.DataFrame, unit_col: str | None, n_bootstrap: int, seed: int) -> pl.DataFrame:
    """The treated-minus-control mean profit residual per product per day: per group, then
    for the whole catalog (group null)."""
    out = []
    parts = list(rows.partition_by("group", as_dict=True, maintain_order=True).items())
    parts.append(((None,), rows))
    for index, (key, part) in enumerate(parts):
        estimate, draws, n_products = _difference(part, unit_col, n_bootstrap, _group_seed(seed + 7, index))
        boot = summarise_draws(draws)
        out.append((key[0], "profit", estimate, boot.se, boot.ci_low, boot.ci_high, n_products))
    return _table(out)


def _difference(part: pl.DataFrame, unit_col: str | None, n_bootstrap: int, seed: int) -> tuple[float, np.ndarray, int]:
    """Treated minus control mean residual (every unit weighted equally): within units when
    most units have both arms, else between the arms' units; with its bootstrap draws."""
    treated = part.get_column("treated").to_numpy().astype(bool)
    key = part.get_column(unit_col if unit_col is not None else "product_id")
    unit = key.rank("dense").to_numpy().astype(np.int64) - 1
    n = int(unit.max()) + 1 if len(unit) else 0
    r = part.get_column("residual").to_numpy()
    n_t = np.bincount(unit, weights=treated, minlength=n)
    n_c = np.bincount(unit, weights=~treated, minlength=n)
    mean_t = np.divide(np.bincount(unit, weights=r * treated, minlength=n), n_t, out=np.zeros(n), where=n_t > 0)
    mean_c = np.divide(np.bincount(unit, weights=r * ~treated, minlength=n), n_c, out=np.zeros(n), where=n_c > 0)
    has_t, has_c = n_t > 0, n_c > 0
    both = has_t & has_c
    if not (has_t.any() and has_c.any()):
        return float("nan"), np.full(n_bootstrap, np.nan), int(part.get_column("product_id").n_unique())
    if both.sum() >= 0.5 * n:
        value = np.where(both, mean_t - mean_c, 0.0)
        influence = value / both.sum()
        estimate = float(influence.sum())
    else:
        influence = np.where(has_t & ~has_c, mean_t / max(int((has_t & ~has_c).sum()), 1), 0.0) - np.where(
            has_c & ~has_t, mean_c / max(int((has_c & ~has_t).sum()), 1), 0.0
        )
        estimate = float(influence.sum())
    stratum = has_t.astype(np.int8) + 2 * has_c.astype(np.int8)
    draws = bootstrap_draws(np.array([estimate]), influence[:, None], stratum, n_bootstrap, seed)[:, 0]
    return estimate, draws, int(part.get_column("product_id").n_unique())


def _optimum(
    table: pl.DataFrame,
    draws: dict[tuple[str, str], np.ndarray],
    history: pl.DataFrame,
    rows: pl.DataFrame,
    products: pl.DataFrame,
    group_col: str,
    cost_col: str,
) -> pl.DataFrame:
    """Per group with an own elasticity: the constant-elasticity profit-maximising price
    change ``r e / (1 + e) - 1`` with the same transform of the draws, and the range of
    price changes the experiment tested (its products' treated changes and 0)."""
    ids = rows.schema["product_id"]
    reference = (
        history.select(
            "product_id", pl.col("_reference").exp().alias("_price"), pl.col("_history_mean").alias("_volume")
        )
        .join(
            products.select(
                pl.col("product_id").cast(ids, strict=False),
                pl.col(cost_col).cast(pl.Float64).alias("_cost"),
                pl.col(group_col).cast(pl.String).alias("group"),
            ),
            on="product_id",
        )
        .group_by("group")
        .agg(
            ((pl.col("_cost") * pl.col("_volume")).sum() / (pl.col("_price") * pl.col("_volume")).sum()).alias(
                "cost_share"
            )
        )
    )

    # Each product's policy change: its mean log price change on treated days less that on
    # control days (its own, else its group's; promotions fall on both alike); the range
    # runs over the middle 95% of the products.
    control = rows.filter(pl.col("treated") == 0)
    group_control = control.group_by("group").agg(pl.col("d").mean().alias("_group_c"))
    tested = (
        rows.filter(pl.col("treated") == 1)
        .group_by("group", "product_id")
        .agg(pl.col("d").mean().alias("_t"))
        .join(control.group_by("product_id").agg(pl.col("d").mean().alias("_c")), on="product_id", how="left")
        .join(group_control, on="group", how="left")
        .with_columns((pl.col("_t") - pl.coalesce("_c", "_group_c", pl.lit(0.0))).exp().sub(1).alias("_change"))
        .group_by("group")
        .agg(
            pl.min_horizontal(pl.col("_change").quantile(0.025), pl.lit(0.0)).alias("tested_low"),
            pl.max_horizontal(pl.col("_change").quantile(0.975), pl.lit(0.0)).alias("tested_high"),
        )
    )
    share = dict(reference.select("group", "cost_share").iter_rows())
    out = []
    for row in table.filter(pl.col("kind") == "own").iter_rows(named=True):
        group, e = row["group"], row["estimate"]
        r = share.get(group)
        if e is None or r is None or not np.isfinite(r):
            continue
        change = r * e / (1 + e) - 1 if e < -1 else float("nan")
        drawn = draws[(group, "own")]
        # A draw at or above -1 has no optimum (raise the price without end): it counts as
        # beyond every finite one, and an interval end among those draws is left empty.
        huge = 1e300
        with np.errstate(divide="ignore", invalid="ignore"):
            optimal = np.where(drawn < -1, r * drawn / (1 + drawn) - 1, huge)
        low, high = (float(v) for v in np.quantile(optimal[~np.isnan(drawn)], [0.025, 0.975]))
        low, high = (v if v < huge / 2 else float("inf") for v in (low, high))
        out.append((group, change, low, high, r, e))
    optimum = pl.DataFrame(
        out,
        schema={
            "group": pl.String,
            "price_change": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
            "cost_share": pl.Float64,
            "elasticity": pl.Float64,
        },
        orient="row",
    ).join(tested, on="group", how="left")
    return optimum.with_columns(
        pl.col("price_change").fill_nan(None),
        pl.col("ci_low", "ci_high").fill_nan(None).replace(float("inf"), None),
        inside_tested=pl.when(pl.col("price_change").is_not_nan()).then(
            pl.col("price_change").is_between(pl.col("tested_low"), pl.col("tested_high"))
        ),
    ).select(OPTIMUM_COLUMNS)
