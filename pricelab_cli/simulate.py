"""Synthetic catalogs, substitute graphs and daily sales panels whose effects are known.

The estimators (``hpte``, ``spillover-graph``, ``cluster``, ``ipw``, ``power``) are tested
against data made here, so the data-generating process below is the contract: change it and
the truth changes with it.

Catalog (``simulate_catalog``)
------------------------------
Products are spread over ``n_groups`` categories whose sizes differ by at most one. Inside a
category they are cut, in random order, into planted communities of ``community_size``
products (the last one of a category may be smaller). Every ordered pair of distinct products
of a community is a substitute edge ``src -> dst``; in addition each product whose category
has another community gets, with probability 1/5, one edge to a product drawn uniformly from
the other communities of its category. Edge weights are cross-price elasticities drawn
uniformly in [0.4, 0.9] (positive: substitutes).

Sales (``simulate_sales``)
--------------------------
For product ``i`` on panel day ``t`` (``t = 0`` on the first panel date; ``dow_t`` is the
weekday, Monday = 0), with ``c = price_change`` and ``T_it`` the assigned treated flag::

    promo_it  = 1 - promo_depth on promotion days, else 1
    price_it  = base_price_i * promo_it * (1 + c * T_it)
    log lambda_it = a_i + b_i * t / 365
                  + weekly * cos(2 pi (dow_t - phi_i) / 7)
                  + g_t
                  + e_i * log(promo_it)             + e_i * log(1 + c) * d_it
                  + sum_j w_ji * log(promo_jt)      + [spillover] sum_j w_ji * log(1 + c) * T_jt
                  + s_i * 1[t >= tau_i]
    units_it ~ Poisson(lambda_it * G_it),  G_it ~ Gamma(shape=dispersion, scale=1/dispersion)

- ``a_i = log(base_units) + N(0, 0.5^2)``, ``b_i ~ N(0, trend_sd^2)``, weekly peak day
  ``phi_i ~ N(5, 1)`` (near Saturday), ``g_t ~ N(0, shock_sd^2)`` is one store-wide shock per
  date shared by every product.
- Own elasticity ``e_i = elasticity * (1 + heterogeneity * tanh(quality_i)) * m(brand_i)``
  with ``m`` from ``BRAND_MULTIPLIERS`` (1 for any other brand), so the effect varies with
  features the causal forest can split on.
- Promotions: on each day each product starts a promotion with probability ``promo_rate``,
  lasting 1-7 days (uniform); a start during a running promotion can extend it. Promotions run
  in history and experiment alike; they are the independent own-price variation from which
  cross-price effects can be estimated, so their cross-price terms always apply.
- ``w_ji`` is the weight of edge ``j -> i``: the price of ``j`` moves the demand of ``i``.
  ``spillover`` switches only the treatment's price change of ``j`` on or off.
- Carryover: the dose ``d_it`` is 1 on treated days; on untreated days
  ``d_it = d_i,t-1 * exp(-1 / carryover_days)`` (so ``d = T`` when ``carryover_days`` is 0).
  The price is back to normal on untreated days; only the demand effect lingers.
- Outliers: ``round(outlier_share * n)`` products, chosen at random, shift their level by
  ``s_i ~ N(0, 1.5^2)`` (a factor ``exp(s_i)``) from a date ``tau_i`` drawn uniformly in the
  last third of the panel, unrelated to treatment.
- Units are negative binomial (Poisson-gamma) with mean ``lambda_it`` and variance
  ``lambda_it + lambda_it^2 / dispersion``. Blackout days are ordinary days here.

Contamination
-------------
``contamination`` is the share of products (``round(share * n)``, chosen at random) whose
sales are spoiled in one of ``contamination_kinds`` (dealt out in turn, so the kinds are
equally common). Its draws come from a generator of their own (seeded from ``seed``), so the
clean panel (``SimulatedSales.clean_sales``) is the same panel without them, draw for draw.
With ``u_it`` the clean units:

- ``noise``: ``Poisson(u_it * H_it)``, ``H_it ~ Gamma(NOISE_SHAPE, 1 / NOISE_SHAPE)``: the same
  mean, wild day-to-day swings in history and experiment alike.
- ``jump``: from a day ``tau_i`` drawn uniformly in the product's experiment window (the last
  third of the panel without one), ``Poisson((m_i - 1) * lambda0_it)`` extra units,
  ``m_i ~ U(JUMP_LOW, JUMP_HIGH)``: the level multiplies several-fold, and the extra demand
  does not respond to price (a listing change, a competitor leaving).
- ``spike``: on each day with probability ``SPIKE_RATE``, ``Poisson(K * lambda0_it)`` extra
  units, ``K ~ U(SPIKE_LOW, SPIKE_HIGH)``: bulk orders.
- ``stockout``: two runs of ``STOCKOUT_MIN..STOCKOUT_MAX`` zero-sales days, one starting in
  the history and one in the experiment window (anywhere in the panel without one).
- ``outlier``: the multiplicative family: like ``outlier_share`` above, ``lambda`` shifts by a
  factor ``exp(s_i)``, ``s_i ~ N(0, 1.5^2)``, from a day in the last third of the panel, and
  the treatment effect scales with it.

The first four are additive: they leave the demand's response to price alone, so the truth
is the clean panel's (for ``stockout``, the effect on demand, which the zero days hide).
``outlier`` carries the effect, so the truth is computed on the shifted demand and
``effect_clean`` gives the clean panel's.

Truth
-----
``lambda0_it`` is the expected units with no treatment anywhere: the formula above without
the ``d_it`` and ``T_jt`` terms (promotions, trend, weekly pattern, shocks and outlier shifts
kept). For a product in the assignment, over its non-blackout experiment dates ``D_i``:

- ``baseline_i = mean_{t in D_i} lambda0_it``
- ``cate_i = baseline_i * (exp(e_i log(1 + c)) - 1)``: the expected change in daily units if
  the product is treated on those dates while no other product is (direct effect).
- ``cate_global_i = baseline_i * (exp((e_i + W_i) log(1 + c)) - 1)``, ``W_i = sum_j w_ji``,
  when ``spillover`` is on (every product treated), else ``cate_i``.
- ``cate_realised_i``: as ``cate_i`` but on the demand level left by the substitutes'
  assigned arms, ``lambda0_it * exp(sum_j w_ji log(1 + c) T_jt)`` averaged over ``D_i``;
  the direct effect a randomised comparison measures when treatment spills over (equal to
  ``cate_i`` without spillover). Only its average, ``effect_realised``, is reported.
- ``effect`` and ``effect_global`` average these over products, each weighted equally;
  ``lift = effect / mean baseline``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
from scipy import sparse

from pricelab_cli.errors import DataError, EmptyTableError, UsageError
from pricelab_cli.tables import assignment_flags, check_columns, check_numeric, check_unique, parse_dates

BRAND_MULTIPLIERS: Mapping[str, float] = {
    "acme": 0.8,
    "bolt": 0.9,
    "crest": 1.0,
    "delta": 1.1,
    "ember": 1.2,
}
DEFAULT_BASE_PRICE = 20.0
EDGE_WEIGHT_LOW, EDGE_WEIGHT_HIGH = 0.4, 0.9
CROSS_EDGE_RATE = 0.2
PROMO_MAX_DAYS = 7
LEVEL_SD = 0.5
OUTLIER_SHIFT_SD = 1.5
WEEKLY_PEAK_DAY = 5.0
PRODUCT_TRUTH_COLUMNS = ("product_id", "cate", "cate_global", "baseline", "outlier", "elasticity", "contamination")
CONTAMINATION_KINDS = ("noise", "jump", "spike", "stockout", "outlier")
ADDITIVE_CONTAMINATION = ("noise", "jump", "spike", "stockout")
NOISE_SHAPE = 0.05
JUMP_LOW, JUMP_HIGH = 3.0, 6.0
SPIKE_RATE = 1.0 / 30.0
SPIKE_LOW, SPIKE_HIGH = 20.0, 50.0
STOCKOUT_MIN, STOCKOUT_MAX = 5, 10
SALES_COLUMNS = ("product_id", "date", "units", "price", "revenue")

_EPOCH = dt.date(1970, 1, 1)


@dataclasses.dataclass(frozen=True, eq=False)
class SimulatedSales:
    """A simulated panel with its known truth.

    Attributes
    ----------
    sales : ``product_id``, ``date``, ``units`` (Int64), ``price``, ``revenue`` (Float64);
        one row per product and date, products in input order, dates increasing.
    truth : JSON-serialisable summary: ``effect``, ``effect_global``, ``lift``, ``baseline``
        (None without an assignment), ``n_products`` (assigned), ``n_catalog``,
        ``n_outliers`` and ``n_edges`` (whole catalog), the panel dates and every parameter.
    product_truth : one row per product in the assignment: ``product_id``, ``cate``,
        ``cate_global``, ``baseline`` (units per day; null when the product has no
        non-blackout experiment date in the panel), ``outlier``, ``elasticity``,
        ``contamination`` (the kind, null for a clean product).
    clean_sales : the same panel without the contamination (same draws otherwise); the
        same frame as ``sales`` when there is none.
    """

    sales: pl.DataFrame
    truth: dict
    product_truth: pl.DataFrame
    clean_sales: pl.DataFrame | None = None


# --------------------------------------------------------------------------- catalog


def simulate_catalog(
    n_products: int = 200,
    n_groups: int = 10,
    community_size: int = 5,
    seed: int = 0,
    id_prefix: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Simulate a product catalog and its planted substitutes graph.

    Parameters
    ----------
    n_products : number of products (ids 1..n).
    n_groups : number of categories (``cat_00``, ...), sizes differing by at most one.
    community_size : size of the planted substitute communities inside each category.
    seed : seed of the only random generator used.
    id_prefix : when given, ids are text ``f"{id_prefix}{i:06d}"`` instead of integers.

    Returns
    -------
    products : ``product_id``, ``category``, ``community`` (planted community, Int64),
        ``size``, ``quality`` (about standard normal), ``base_price`` (lognormal, median
        near 20, rounded to cents), ``brand`` (one of ``BRAND_MULTIPLIERS``).
    true_edges : ``src``, ``dst``, ``weight`` (cross-price elasticity in [0.4, 0.9]),
        ``community`` (the community of ``src`` for within-community edges, -1 for the
        sparse edges between communities of a category), sorted by ``src``, ``dst``.
    """
    _check_count("n_products", n_products, 1)
    _check_count("n_groups", n_groups, 1)
    _check_count("community_size", community_size, 1)
    _check_count("seed", seed, 0)
    if n_groups > n_products:
        raise UsageError(
            f"`n_groups` is {n_groups} but there are only {n_products} products; "
            "every category needs at least one product."
        )
    n = n_products
    rng = np.random.default_rng(seed)

    category = rng.permutation(np.arange(n) % n_groups)
    # Sorting by category then a random key lays each category out in random order, so
    # consecutive ranks form the communities without a loop over categories.
    order = np.lexsort((rng.random(n), category))
    cat_size = np.bincount(category, minlength=n_groups)
    cat_start = np.cumsum(cat_size) - cat_size
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - cat_start[category[order]]
    local = rank // community_size
    communities_per_cat = -(-cat_size // community_size)
    community = (np.cumsum(communities_per_cat) - communities_per_cat)[category] + local
    comm_first_rank = local * community_size
    comm_len = np.minimum(community_size, cat_size[category] - comm_first_rank)

    quality = rng.standard_normal(n)
    size = rng.lognormal(0.0, 0.5, n)
    price_noise = rng.standard_normal(n)
    base_price = DEFAULT_BASE_PRICE * np.exp(0.15 * quality + 0.3 * np.log(size) + 0.3 * price_noise)
    brand_index = rng.integers(0, len(BRAND_MULTIPLIERS), n)

    outside = cat_size[category] - comm_len
    cross_src = np.flatnonzero((outside > 0) & (rng.random(n) < CROSS_EDGE_RATE))
    target_draw = rng.random(n)[cross_src]
    # Draw a rank among the category's products outside the source's community, then skip
    # over that community's block of ranks.
    target_rank = np.floor(target_draw * outside[cross_src]).astype(np.int64)
    target_rank += np.where(target_rank >= comm_first_rank[cross_src], comm_len[cross_src], 0)
    cross_dst = order[cat_start[category[cross_src]] + target_rank]

    members = pl.DataFrame({"src_row": np.arange(n), "community": community})
    within = (
        members.join(members.rename({"src_row": "dst_row"}), on="community")
        .filter(pl.col("src_row") != pl.col("dst_row"))
        .sort("src_row", "dst_row")
    )
    edge_src = np.concatenate([within["src_row"].to_numpy(), cross_src])
    edge_dst = np.concatenate([within["dst_row"].to_numpy(), cross_dst])
    edge_comm = np.concatenate([within["community"].to_numpy(), np.full(len(cross_src), -1)])
    weight = rng.uniform(EDGE_WEIGHT_LOW, EDGE_WEIGHT_HIGH, len(edge_src))
    edge_order = np.lexsort((edge_dst, edge_src))

    ids = _catalog_ids(n, id_prefix)
    width = max(2, len(str(n_groups - 1)))
    products = pl.DataFrame(
        {
            "product_id": ids,
            "category": "cat_" + pl.Series(category).cast(pl.String).str.zfill(width),
            "community": pl.Series(community, dtype=pl.Int64),
            "size": np.round(size, 3),
            "quality": np.round(quality, 4),
            "base_price": np.maximum(np.round(base_price, 2), 0.01),
            "brand": pl.Series(list(BRAND_MULTIPLIERS)).gather(brand_index),
        }
    )
    true_edges = pl.DataFrame(
        {
            "src": ids.gather(edge_src[edge_order]),
            "dst": ids.gather(edge_dst[edge_order]),
            "weight": weight[edge_order],
            "community": pl.Series(edge_comm[edge_order], dtype=pl.Int64),
        }
    )
    return products, true_edges


def _catalog_ids(n: int, id_prefix: str | None) -> pl.Series:
    numbers = pl.Series("product_id", np.arange(1, n + 1, dtype=np.int64))
    if id_prefix is None:
        return numbers
    return (id_prefix + numbers.cast(pl.String).str.zfill(6)).alias("product_id")


# --------------------------------------------------------------------------- sales


def simulate_sales(
    products: pl.DataFrame,
    *,
    assignment: pl.DataFrame | None = None,
    edges: pl.DataFrame | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    history_days: int = 365,
    price_change: float = -0.10,
    elasticity: float = -2.0,
    heterogeneity: float = 0.5,
    trend_sd: float = 0.3,
    weekly: float = 0.2,
    shock_sd: float = 0.05,
    promo_rate: float = 0.05,
    promo_depth: float = 0.2,
    outlier_share: float = 0.0,
    carryover_days: float = 0.0,
    spillover: bool = True,
    base_units: float = 20.0,
    dispersion: float = 5.0,
    contamination: float = 0.0,
    contamination_kinds: Sequence[str] = ADDITIVE_CONTAMINATION,
    seed: int = 0,
) -> SimulatedSales:
    """Simulate daily sales of ``products`` under an assignment, with the known truth.

    The model and the truth are defined in the module docstring.

    Parameters
    ----------
    products : must have ``product_id``; ``base_price`` (default 20), ``quality``
        (default 0) and ``brand`` (default multiplier 1) are used when present.
    assignment : ``product_id``, ``date``, ``treated`` (0/1), optional ``blackout``; products
        absent from it are never treated. Rows outside the panel dates are ignored.
    edges : substitutes graph ``src``, ``dst``, ``weight`` (cross-price elasticity of the
        demand of ``dst`` to the price of ``src``); none means no cross-price effects.
    start, end : panel dates (inclusive). By default the panel runs from ``history_days``
        days before the first assignment date to the last one; without an assignment give
        ``end`` (and ``start``, else ``history_days`` days ending at ``end``) or ``start``.
    history_days : pre-experiment days, or the panel length when there is no assignment.
    price_change : relative price change of treated cells (-0.10 is a 10% cut); > -1.
    elasticity, heterogeneity : own-price elasticity and how much it varies with quality.
    trend_sd, weekly, shock_sd : product trend spread (log units per year), weekly
        amplitude (log units), store-wide daily shock spread.
    promo_rate, promo_depth : daily promotion start probability and relative price cut.
    outlier_share : share of products whose level jumps late in the panel.
    carryover_days : time constant (days) of the treatment effect's decay after treatment.
    spillover : whether treating ``src`` moves the demand of ``dst`` through the edges.
    base_units, dispersion : typical daily units and the negative binomial shape.
    contamination, contamination_kinds : share of products whose sales are spoiled, and
        how (see "Contamination" in the module docstring).
    seed : seed of the random generators (the contamination has its own, derived from it).

    Returns
    -------
    SimulatedSales
        With the same seed, products and dates, ``lambda0`` and the promotions do not
        depend on the assignment or on the treatment parameters.
    """
    params = _checked_params(
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
        base_units=base_units,
        dispersion=dispersion,
        contamination=contamination,
    )
    kinds = _checked_kinds(contamination_kinds)
    _check_count("seed", seed, 0)
    start, end = _as_date(start, "start"), _as_date(end, "end")
    ids = _checked_product_ids(products)
    n = len(ids)
    base_price, quality, brand_multiplier = _product_features(products)
    plan = None if assignment is None else _checked_assignment(assignment, ids)
    start, end = _panel_dates(plan, start, end, history_days)
    n_days = (end - start).days + 1
    weight_matrix = _edge_matrix(edges, ids)

    treated = np.zeros((n, n_days), dtype=bool)
    assigned = np.zeros(n, dtype=bool)
    # Analysed cells (non-blackout experiment dates in the panel) as coordinates: they are
    # a small part of the panel, so the truth is summed over them alone.
    analysed_rows = analysed_days = np.zeros(0, dtype=np.int64)
    if plan is not None:
        rows, day_numbers, plan_treated, plan_blackout = plan
        assigned[rows] = True
        day = day_numbers - (start - _EPOCH).days
        inside = (day >= 0) & (day < n_days)
        treated[rows[inside], day[inside]] = plan_treated[inside]
        keep = inside & ~plan_blackout
        analysed_rows, analysed_days = rows[keep], day[keep]

    own_elasticity = elasticity * (1.0 + heterogeneity * np.tanh(quality)) * brand_multiplier
    rng = np.random.default_rng(seed)
    lambda0, promo, outlier = _untreated_demand(
        rng,
        start=start,
        n_days=n_days,
        own_elasticity=own_elasticity,
        weight_matrix=weight_matrix,
        params=params,
    )
    log_cut = math.log1p(price_change)
    expected_units = _treatment_multiplier(
        treated,
        own_elasticity=own_elasticity,
        weight_matrix=weight_matrix if spillover else None,
        log_cut=log_cut,
        carryover_days=carryover_days,
    )
    expected_units *= lambda0
    spoil = _Contamination.draw(seed, n, n_days, params["contamination"], kinds, analysed_rows, analysed_days)
    shifted_mean = spoil.shifted_means(expected_units) if spoil.any_outlier else None
    units = _negative_binomial(rng, expected_units, dispersion)
    del expected_units
    clean_units = units
    if spoil.rows.size:
        units = spoil.apply(units, lambda0, shifted_mean, dispersion)

    price = np.where(promo, 1.0 - promo_depth, 1.0)
    price *= np.where(treated, 1.0 + price_change, 1.0)
    price *= base_price[:, None]
    day_numbers = (np.arange(n_days) + (start - _EPOCH).days).astype(np.int32)
    keys = pl.DataFrame(
        {
            "product_id": ids.gather(np.repeat(np.arange(n), n_days)),
            "date": pl.Series(np.tile(day_numbers, n)).cast(pl.Date),
        }
    )

    def sales_frame(counts: np.ndarray) -> pl.DataFrame:
        return keys.with_columns(units=pl.Series(counts.ravel()), price=pl.Series(price.ravel())).with_columns(
            revenue=pl.col("units") * pl.col("price")
        )

    sales = sales_frame(units)
    clean_sales = sales_frame(clean_units) if spoil.rows.size else sales

    incoming_weight = np.zeros(n) if weight_matrix is None else np.asarray(weight_matrix.sum(axis=1)).ravel()
    realised_spill = None
    if spillover and weight_matrix is not None and len(analysed_rows):
        spill = (weight_matrix @ treated.astype(np.float64)) * log_cut
        realised_spill = spill[analysed_rows, analysed_days]
    truth_inputs = dict(
        ids=ids,
        assigned=assigned,
        analysed_rows=analysed_rows,
        analysed_days=analysed_days,
        own_elasticity=own_elasticity,
        incoming_weight=incoming_weight if spillover else np.zeros(n),
        log_cut=log_cut,
        outlier=outlier,
        realised_spill=realised_spill,
        contamination=spoil.kind_labels(),
    )
    product_truth, summary = _truth(lambda0=lambda0, **truth_inputs)
    clean_summary = summary
    if spoil.any_outlier:
        # The multiplicative kind carries the effect: the truth follows the shifted demand.
        product_truth, summary = _truth(lambda0=spoil.shift_lambda(lambda0), **truth_inputs)
    truth = {
        "description": (
            "effect: mean over assigned products (equal weights) of the expected change in "
            "daily units on their non-blackout experiment dates if the product alone is "
            "treated (no spillover, no carryover); effect_realised: the same direct effect at "
            "the demand level the substitutes' assigned arms leave each product on those dates "
            "(what a randomised comparison measures under spillover); effect_global: the same when every "
            "product is treated (substitutes' price changes spill over when spillover is "
            "on); lift: effect divided by the mean untreated baseline."
        ),
        **summary,
        "n_catalog": n,
        "n_outliers": int(outlier.sum()),
        "n_contaminated": int(spoil.rows.size),
        "contaminated_by_kind": spoil.counts(),
        "effect_clean": clean_summary["effect"],
        "contamination_kinds": list(kinds),
        "n_edges": 0 if weight_matrix is None else int(weight_matrix.nnz),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "n_days": n_days,
        **params,
        "spillover": bool(spillover),
        "seed": int(seed),
    }
    return SimulatedSales(
        sales=sales.select(SALES_COLUMNS),
        truth=truth,
        product_truth=product_truth,
        clean_sales=clean_sales.select(SALES_COLUMNS),
    )


def _untreated_demand(
    rng: np.random.Generator,
    *,
    start: dt.date,
    n_days: int,
    own_elasticity: np.ndarray,
    weight_matrix: sparse.csr_matrix | None,
    params: Mapping[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``lambda0`` (products x days), the promotion calendar and the outlier flags.

    Every draw is made in a fixed order and scaled afterwards, so under one seed the
    untreated world does not depend on the assignment or the treatment parameters.
    """
    n = len(own_elasticity)
    level = math.log(params["base_units"]) + LEVEL_SD * rng.standard_normal(n)
    slope = params["trend_sd"] * rng.standard_normal(n)
    peak_day = WEEKLY_PEAK_DAY + rng.standard_normal(n)
    outlier_key = rng.random(n)
    outlier_when = rng.random(n)
    outlier_shift = OUTLIER_SHIFT_SD * rng.standard_normal(n)
    shock = params["shock_sd"] * rng.standard_normal(n_days)
    promo = _promotion_days(rng.random((n, n_days)), params["promo_rate"])

    days = np.arange(n_days)
    weekday = (start.weekday() + days) % 7
    log_lambda0 = params["weekly"] * np.cos(2.0 * np.pi / 7.0 * (weekday[None, :] - peak_day[:, None]))
    log_lambda0 += level[:, None] + slope[:, None] * (days / 365.0)[None, :] + shock[None, :]
    promo_log_price = promo * math.log1p(-params["promo_depth"])
    log_lambda0 += own_elasticity[:, None] * promo_log_price
    if weight_matrix is not None:
        log_lambda0 += weight_matrix @ promo_log_price
    del promo_log_price

    n_outliers = int(np.floor(params["outlier_share"] * n + 0.5))
    outlier = np.zeros(n, dtype=bool)
    outlier[np.argsort(outlier_key, kind="stable")[:n_outliers]] = True
    first_late_day = (2 * n_days) // 3
    shift_day = first_late_day + np.floor(outlier_when * (n_days - first_late_day)).astype(np.int64)
    shifted = outlier[:, None] & (days[None, :] >= shift_day[:, None])
    log_lambda0 += np.where(shifted, outlier_shift[:, None], 0.0)
    return np.exp(log_lambda0, out=log_lambda0), promo, outlier


def _treatment_multiplier(
    treated: np.ndarray,
    *,
    own_elasticity: np.ndarray,
    weight_matrix: sparse.csr_matrix | None,
    log_cut: float,
    carryover_days: float,
) -> np.ndarray:
    """Factor by which treatment (own, lingering, and through substitutes) scales demand.

    ``weight_matrix`` is None when the treatment does not spill over.
    """
    log_factor = treatment_dose(treated, carryover_days) * (own_elasticity * log_cut)[:, None]
    if weight_matrix is not None:
        log_factor += (weight_matrix @ treated.astype(np.float64)) * log_cut
    return np.exp(log_factor, out=log_factor)


def _negative_binomial(rng: np.random.Generator, mean: np.ndarray, dispersion: float) -> np.ndarray:
    """Poisson-gamma counts with the given means and variance ``mean + mean^2 / dispersion``.

    ``mean`` is overwritten to save a panel-sized copy.
    """
    mean *= rng.gamma(dispersion, 1.0 / dispersion, size=mean.shape)
    return rng.poisson(mean).astype(np.int64, copy=False)


def _promotion_days(u: np.ndarray, rate: float) -> np.ndarray:
    """Boolean (products x days) promotion calendar from one uniform draw per cell."""
    n, n_days = u.shape
    if rate == 0.0:
        return np.zeros((n, n_days), dtype=bool)
    starts = u < rate
    # Given a start, u / rate is uniform on [0, 1), so it also sets the length: no second
    # draw whose count would depend on the rate.
    length = np.where(starts, 1 + np.floor(PROMO_MAX_DAYS * u / rate), 0).astype(np.int8)
    by_day = np.ascontiguousarray(length.T)
    promo = np.empty((n_days, n), dtype=bool)
    remaining = np.zeros(n, dtype=np.int8)
    for t in range(n_days):
        remaining = np.maximum(remaining - 1, by_day[t])
        promo[t] = remaining > 0
    return promo.T


def treatment_dose(treated: np.ndarray, carryover_days: float) -> np.ndarray:
    """Dose of the treatment's effect per (product, day) cell: 1 when treated, decaying by
    exp(-1/K) a day after treatment stops (``K = carryover_days``; 0 means no carryover).
    The one carryover rule: ``simulate`` plants it and ``power`` injects it. The loop runs
    over days (tens), each step over every product at once."""
    if carryover_days <= 0.0:
        return treated.astype(np.float64)
    decay = math.exp(-1.0 / carryover_days)
    dose = treated.T.astype(np.float64)  # days first, so each step reads contiguous memory
    for t in range(1, dose.shape[0]):
        # A treated day holds 1 and a decayed dose is below 1, so the max is the rule.
        np.maximum(dose[t], dose[t - 1] * decay, out=dose[t])
    return dose.T


def _truth(
    *,
    ids: pl.Series,
    assigned: np.ndarray,
    lambda0: np.ndarray,
    analysed_rows: np.ndarray,
    analysed_days: np.ndarray,
    own_elasticity: np.ndarray,
    incoming_weight: np.ndarray,
    log_cut: float,
    outlier: np.ndarray,
    realised_spill: np.ndarray | None = None,
    contamination: pl.Series | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Per-product truth for assigned products and its equally weighted summary.

    ``realised_spill`` is the log demand shift each analysed cell gets from its substitutes'
    assigned arms (None without spillover).
    """
    n = len(ids)
    rows = np.flatnonzero(assigned)
    n_analysed = np.bincount(analysed_rows, minlength=n)[rows]
    cell_lambda0 = lambda0[analysed_rows, analysed_days]
    total = np.bincount(analysed_rows, weights=cell_lambda0, minlength=n)[rows]
    shifted = cell_lambda0 if realised_spill is None else cell_lambda0 * np.exp(realised_spill)
    total_realised = np.bincount(analysed_rows, weights=shifted, minlength=n)[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        baseline = np.where(n_analysed > 0, total / n_analysed, np.nan)
        baseline_realised = np.where(n_analysed > 0, total_realised / n_analysed, np.nan)
    cate = baseline * np.expm1(own_elasticity[rows] * log_cut)
    cate_realised = baseline_realised * np.expm1(own_elasticity[rows] * log_cut)
    cate_global = baseline * np.expm1((own_elasticity[rows] + incoming_weight[rows]) * log_cut)
    product_truth = pl.DataFrame(
        {
            "product_id": ids.gather(rows),
            "cate": cate,
            "cate_global": cate_global,
            "baseline": baseline,
            "outlier": outlier[rows],
            "elasticity": own_elasticity[rows],
            "contamination": None if contamination is None else contamination.gather(rows),
        },
        schema_overrides={"outlier": pl.Boolean, "contamination": pl.String},
    ).with_columns(pl.col("cate", "cate_global", "baseline").fill_nan(None))
    known = ~np.isnan(baseline)
    if not known.any():
        effect = effect_global = effect_realised = lift = mean_baseline = None
    else:
        effect = float(cate[known].mean())
        effect_realised = float(cate_realised[known].mean())
        effect_global = float(cate_global[known].mean())
        mean_baseline = float(baseline[known].mean())
        lift = effect / mean_baseline
    summary = {
        "effect": effect,
        "effect_realised": effect_realised,
        "effect_global": effect_global,
        "lift": lift,
        "baseline": mean_baseline,
        "n_products": int(len(rows)),
    }
    return product_truth.select(PRODUCT_TRUTH_COLUMNS), summary


@dataclasses.dataclass(frozen=True, eq=False)
class _Contamination:
    """Which products are spoiled, how, and the draws that spoil them (own generator)."""

    rows: np.ndarray  # contaminated product rows
    kind: np.ndarray  # kind name per contaminated row
    n_products: int
    n_days: int
    rng: np.random.Generator
    start_day: np.ndarray  # per contaminated row: the kind's start day (jump, outlier)
    factor: np.ndarray  # per contaminated row: jump multiplier, spike size or log shift
    run_start: np.ndarray  # (rows, 2): stock-out run starts (history, experiment)
    run_length: np.ndarray  # (rows, 2)

    @classmethod
    def draw(
        cls,
        seed: int,
        n: int,
        n_days: int,
        share: float,
        kinds: Sequence[str],
        analysed_rows: np.ndarray,
        analysed_days: np.ndarray,
    ) -> _Contamination:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
        n_spoiled = int(np.floor(share * n + 0.5)) if kinds else 0
        rows = rng.permutation(n)[:n_spoiled]
        kind = np.array([kinds[i % len(kinds)] for i in range(n_spoiled)], dtype=object)
        # Each product's experiment window (the last third of the panel when it has none).
        first = np.full(n, (2 * n_days) // 3, dtype=np.int64)
        last = np.full(n, n_days - 1, dtype=np.int64)
        if len(analysed_rows):
            has = np.bincount(analysed_rows, minlength=n) > 0
            lo = np.full(n, n_days, dtype=np.int64)
            hi = np.full(n, -1, dtype=np.int64)
            np.minimum.at(lo, analysed_rows, analysed_days)
            np.maximum.at(hi, analysed_rows, analysed_days)
            first, last = np.where(has, lo, first), np.where(has, hi, last)
        first, last = first[rows], last[rows]
        # Every parameter is drawn for every spoiled row in a fixed order, whatever its kind.
        u_start = rng.random(n_spoiled)
        u_factor = rng.random(n_spoiled)
        shift = OUTLIER_SHIFT_SD * rng.standard_normal(n_spoiled)
        u_runs = rng.random((n_spoiled, 2))
        run_length = rng.integers(STOCKOUT_MIN, STOCKOUT_MAX + 1, size=(n_spoiled, 2))
        window_start = first + np.floor(u_start * (last - first + 1)).astype(np.int64)
        late = (2 * n_days) // 3
        late_start = late + np.floor(u_start * (n_days - late)).astype(np.int64)
        start_day = np.where(kind == "outlier", late_start, window_start)
        factor = np.select(
            [kind == "jump", kind == "spike", kind == "outlier"],
            [JUMP_LOW + (JUMP_HIGH - JUMP_LOW) * u_factor, SPIKE_LOW + (SPIKE_HIGH - SPIKE_LOW) * u_factor, shift],
            default=0.0,
        )
        history_room = np.maximum(first - run_length[:, 0], 1)
        window_room = np.maximum(last - first + 1, 1)
        run_start = np.stack(
            [np.floor(u_runs[:, 0] * history_room), first + np.floor(u_runs[:, 1] * window_room)], axis=1
        ).astype(np.int64)
        return cls(rows, kind, n, n_days, rng, start_day, factor, run_start, run_length)

    @property
    def any_outlier(self) -> bool:
        return bool((self.kind == "outlier").any())

    def _later(self, sel: np.ndarray) -> np.ndarray:
        """(selected rows x days) mask of the days from each row's start day on."""
        return np.arange(self.n_days)[None, :] >= self.start_day[sel][:, None]

    def _outlier_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Product rows of the multiplicative kind and their (rows x days) demand factors."""
        sel = np.flatnonzero(self.kind == "outlier")
        return self.rows[sel], np.exp(np.where(self._later(sel), self.factor[sel][:, None], 0.0))

    def shift_lambda(self, lambda0: np.ndarray) -> np.ndarray:
        """``lambda0`` with the multiplicative kind's level shifts (a copy)."""
        rows, factor = self._outlier_shift()
        shifted = lambda0.copy()
        shifted[rows] *= factor
        return shifted

    def shifted_means(self, expected_units: np.ndarray) -> np.ndarray:
        """Expected units of the multiplicative kind's rows after their shift."""
        rows, factor = self._outlier_shift()
        return expected_units[rows] * factor

    def apply(
        self, units: np.ndarray, lambda0: np.ndarray, shifted_mean: np.ndarray | None, dispersion: float
    ) -> np.ndarray:
        """Spoiled copy of the clean ``units`` (products x days)."""
        units = units.copy()
        rng = self.rng
        days = self.n_days
        for name in CONTAMINATION_KINDS:
            sel = np.flatnonzero(self.kind == name)
            if not len(sel):
                continue
            rows = self.rows[sel]
            if name == "noise":
                wild = rng.gamma(NOISE_SHAPE, 1.0 / NOISE_SHAPE, size=(len(sel), days))
                units[rows] = rng.poisson(units[rows] * wild)
            elif name == "jump":
                extra = (self.factor[sel] - 1.0)[:, None] * lambda0[rows] * self._later(sel)
                units[rows] += rng.poisson(extra)
            elif name == "spike":
                bulk = rng.random((len(sel), days)) < SPIKE_RATE
                units[rows] += rng.poisson(self.factor[sel][:, None] * lambda0[rows] * bulk)
            elif name == "stockout":
                day = np.arange(days)[None, None, :]
                start = self.run_start[sel][:, :, None]
                out = ((day >= start) & (day < start + self.run_length[sel][:, :, None])).any(axis=1)
                units[rows] = np.where(out, 0, units[rows])
            else:  # outlier: fresh counts around the shifted mean
                units[rows] = _negative_binomial(rng, shifted_mean, dispersion)
        return units

    def kind_labels(self) -> pl.Series:
        labels = np.full(self.n_products, None, dtype=object)
        labels[self.rows] = self.kind
        return pl.Series(labels.tolist(), dtype=pl.String)

    def counts(self) -> dict[str, int]:
        return {name: int((self.kind == name).sum()) for name in CONTAMINATION_KINDS if (self.kind == name).any()}


def _checked_kinds(kinds: Sequence[str] | str) -> tuple[str, ...]:
    """Contamination kinds as a tuple of known names (a comma-separated text is accepted)."""
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in CONTAMINATION_KINDS]
    if unknown:
        raise UsageError(
            f"`contamination_kinds`: {unknown[0]!r} is not a kind; choose from {', '.join(CONTAMINATION_KINDS)}."
        )
    return tuple(dict.fromkeys(kinds))


# --------------------------------------------------------------------------- inputs


def _flag_name(name: str) -> str:
    """A parameter as messages name it (the command line shows its flag)."""
    return f"`{name}`"


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"{_flag_name(name)} must be an integer of at least {minimum}; got {value!r}.")


def _as_date(value: dt.date | None, name: str) -> dt.date | None:
    if value is None or type(value) is dt.date:
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    raise UsageError(f"{_flag_name(name)} must be a date; got {value!r}.")


def _checked_params(**values: float) -> dict[str, Any]:
    """Check the numeric parameters of ``simulate_sales``; return them as plain numbers."""
    _check_count("history_days", values["history_days"], 0)
    rules = {
        "price_change": (lambda v: v > -1.0, "greater than -1 (a cut of 100% leaves no price)"),
        "elasticity": (lambda v: True, ""),
        "heterogeneity": (lambda v: True, ""),
        "trend_sd": (lambda v: v >= 0.0, "at least 0"),
        "weekly": (lambda v: v >= 0.0, "at least 0"),
        "shock_sd": (lambda v: v >= 0.0, "at least 0"),
        "promo_rate": (lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
        "promo_depth": (lambda v: 0.0 <= v < 1.0, "at least 0 and below 1"),
        "outlier_share": (lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
        "contamination": (lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
        "carryover_days": (lambda v: v >= 0.0, "at least 0 (0 means no carryover)"),
        "base_units": (lambda v: v > 0.0, "greater than 0"),
        "dispersion": (lambda v: v > 0.0, "greater than 0 (larger is closer to Poisson)"),
    }
    checked: dict[str, Any] = {"history_days": int(values["history_days"])}
    for name, (ok, requirement) in rules.items():
        value = values[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number) or not ok(number):
            wanted = f"a finite number {requirement}".rstrip()
            raise UsageError(f"{_flag_name(name)} must be {wanted}; got {value!r}.")
        checked[name] = number
    return checked


def _checked_product_ids(products: pl.DataFrame) -> pl.Series:
    check_columns(products, ["product_id"], "products")
    if products.height == 0:
        raise EmptyTableError("products: the table has no rows; nothing to simulate.")
    ids = products.get_column("product_id")
    if ids.null_count():
        raise DataError(
            f"products: column 'product_id' has {ids.null_count()} missing (null) values; every product needs an id."
        )
    check_unique(products, ["product_id"], "products")
    return ids


def _product_features(products: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``base_price``, ``quality`` and brand multiplier per product, with their defaults."""
    n = products.height
    check_numeric(products, ["base_price", "quality"], "products")
    for col in ("base_price", "quality"):
        if col in products.columns:
            values = products.get_column(col)
            if values.null_count():
                raise DataError(
                    f"products: column {col!r} has {values.null_count()} missing values; "
                    f"fill them or drop the column to use the default."
                )
            finite = values.cast(pl.Float64).is_finite()
            if not finite.all():
                bad = products.filter(~finite.to_numpy())
                raise DataError(
                    f"products: column {col!r} is not finite for product {bad['product_id'][0]!r} ({bad[col][0]!r})."
                )
    if "base_price" in products.columns:
        base_price = products.get_column("base_price").cast(pl.Float64).to_numpy()
        bad = np.flatnonzero(base_price <= 0)
        if len(bad):
            raise DataError(
                f"products: column 'base_price' must be positive, but {len(bad)} product(s) "
                f"are not, e.g. product {products['product_id'][int(bad[0])]!r} has "
                f"base_price {base_price[bad[0]]!r}."
            )
    else:
        base_price = np.full(n, DEFAULT_BASE_PRICE)
    quality = (
        products.get_column("quality").cast(pl.Float64).to_numpy() if "quality" in products.columns else np.zeros(n)
    )
    if "brand" in products.columns:
        multiplier = (
            products.get_column("brand")
            .cast(pl.String)
            .replace_strict(dict(BRAND_MULTIPLIERS), default=1.0, return_dtype=pl.Float64)
            .to_numpy()
        )
    else:
        multiplier = np.ones(n)
    return base_price, quality, multiplier


def _row_positions(values: pl.Series, ids: pl.Series, table: str, column: str, hint: str) -> np.ndarray:
    """Row of each value in the products table; unknown values raise DataError."""
    if values.null_count():
        raise DataError(f"{table}: column {column!r} has {values.null_count()} missing (null) values.")
    if values.dtype != ids.dtype:
        if values.dtype.is_integer() and ids.dtype.is_integer():
            values, ids = values.cast(pl.Int64), ids.cast(pl.Int64)
        else:
            values, ids = values.cast(pl.String), ids.cast(pl.String)
    rows = values.replace_strict(ids, np.arange(len(ids)), default=None, return_dtype=pl.Int64)
    unknown = rows.is_null()
    if unknown.any():
        missing = values.filter(unknown)
        raise DataError(
            f"{table}: {missing.n_unique()} {column} value(s) are not in products, e.g. {missing[0]!r}; {hint}"
        )
    return rows.to_numpy()


def _checked_assignment(
    assignment: pl.DataFrame, ids: pl.Series
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Product rows, day numbers (since 1970-01-01), treated and blackout flags."""
    check_columns(assignment, ["product_id", "date", "treated"], "assignment")
    if assignment.height == 0:
        raise EmptyTableError("assignment: the table has no rows; leave it out to simulate history only.")
    date = parse_dates(assignment.select("date"), ["date"], "assignment").get_column("date")
    if date.null_count():
        raise DataError(f"assignment: column 'date' has {date.null_count()} missing (null) values.")
    flags = assignment_flags(assignment, "assignment")
    treated = flags.get_column("treated").to_numpy() == 1
    blackout = flags.get_column("blackout").to_numpy()
    check_unique(assignment, ["product_id", "date"], "assignment")
    rows = _row_positions(
        assignment.get_column("product_id"),
        ids,
        "assignment",
        "product_id",
        "every assigned product must be in the products table.",
    )
    return rows, date.cast(pl.Int32).to_numpy().astype(np.int64), treated, blackout


def _panel_dates(
    plan: tuple[np.ndarray, ...] | None,
    start: dt.date | None,
    end: dt.date | None,
    history_days: int,
) -> tuple[dt.date, dt.date]:
    if plan is not None:
        day_numbers = plan[1]
        first = _EPOCH + dt.timedelta(days=int(day_numbers.min()))
        last = _EPOCH + dt.timedelta(days=int(day_numbers.max()))
        start = first - dt.timedelta(days=history_days) if start is None else start
        end = last if end is None else end
    else:
        if start is None and end is None:
            raise DataError(
                "no dates to simulate: give an assignment, or an end date (the panel then "
                "covers history_days days up to it), or a start date."
            )
        if history_days < 1 and (start is None or end is None):
            raise UsageError(f"`history_days` must be at least 1 without an assignment; got {history_days}.")
        start = end - dt.timedelta(days=history_days - 1) if start is None else start
        end = start + dt.timedelta(days=history_days - 1) if end is None else end
    if end < start:
        raise DataError(f"the panel would end ({end.isoformat()}) before it starts ({start.isoformat()}).")
    return start, end


def _edge_matrix(edges: pl.DataFrame | None, ids: pl.Series) -> sparse.csr_matrix | None:
    """Sparse matrix M with M[dst, src] = weight, so (M @ x)[i] sums over i's sources."""
    if edges is None:
        return None
    check_columns(edges, ["src", "dst", "weight"], "edges")
    check_numeric(edges, ["weight"], "edges")
    weight = edges.get_column("weight").cast(pl.Float64)
    if weight.null_count() or not weight.is_finite().all():
        raise DataError("edges: column 'weight' has missing or non-finite values.")
    hint = "every edge must join two products of the products table."
    src = _row_positions(edges.get_column("src"), ids, "edges", "src", hint)
    dst = _row_positions(edges.get_column("dst"), ids, "edges", "dst", hint)
    loops = np.flatnonzero(src == dst)
    if len(loops):
        raise DataError(
            f"edges: {len(loops)} edge(s) join a product to itself, e.g. "
            f"{edges['src'][int(loops[0])]!r}; an own-price effect is not an edge."
        )
    check_unique(edges, ["src", "dst"], "edges")
    n = len(ids)
    return sparse.csr_matrix((weight.to_numpy(), (dst, src)), shape=(n, n))
