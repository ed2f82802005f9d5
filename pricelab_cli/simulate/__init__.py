"""Synthetic catalogs, substitute graphs and daily sales panels whose effects are known.

The estimators (``hpte``, ``spillover-graph``, ``cluster``, ``ipw``, ``power``) are tested
against data made here, so the data-generating process below is the contract: change it and
the truth changes with it.

Modules: ``catalog`` (``simulate_catalog``), ``sales`` (``simulate_sales``, its steps in
order), ``settings`` (its checked settings), ``inputs`` (its tables and dates as arrays),
``model`` (the demand model and the carryover dose ``power`` shares), ``contamination`` and
``truth``.

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
  features the causal forest can split on. A products table with its own ``elasticity``
  column plants that instead (``simulate_catalog(elasticity_range=...)`` draws one per
  category), and its own ``price_change`` column replaces ``c`` product by product (a price
  policy; the spillover term then carries each substitute's own ``log(1 + c_j)``).
- With a ``category`` column the truth also gives ``elasticity_by_group``: per category, the
  one elasticity ``e`` with ``sum mu exp(e d) = sum mu exp(e_i d_i)`` over its treated
  analysed cells (``mu`` the untreated demand, ``d`` the log price change): the planted value
  when the category's products share one.
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

from pricelab_cli.simulate.catalog import CROSS_EDGE_RATE, EDGE_WEIGHT_HIGH, EDGE_WEIGHT_LOW, simulate_catalog
from pricelab_cli.simulate.contamination import (
    JUMP_HIGH,
    JUMP_LOW,
    NOISE_SHAPE,
    SPIKE_HIGH,
    SPIKE_LOW,
    SPIKE_RATE,
    STOCKOUT_MAX,
    STOCKOUT_MIN,
)
from pricelab_cli.simulate.model import (
    BRAND_MULTIPLIERS,
    DEFAULT_BASE_PRICE,
    LEVEL_SD,
    OUTLIER_SHIFT_SD,
    PROMO_MAX_DAYS,
    WEEKLY_PEAK_DAY,
    treatment_dose,
)
from pricelab_cli.simulate.sales import SALES_COLUMNS, SimulatedSales, simulate_sales
from pricelab_cli.simulate.settings import ADDITIVE_CONTAMINATION, CONTAMINATION_KINDS
from pricelab_cli.simulate.truth import PRODUCT_TRUTH_COLUMNS

__all__ = [
    "ADDITIVE_CONTAMINATION",
    "BRAND_MULTIPLIERS",
    "CONTAMINATION_KINDS",
    "CROSS_EDGE_RATE",
    "DEFAULT_BASE_PRICE",
    "EDGE_WEIGHT_HIGH",
    "EDGE_WEIGHT_LOW",
    "JUMP_HIGH",
    "JUMP_LOW",
    "LEVEL_SD",
    "NOISE_SHAPE",
    "OUTLIER_SHIFT_SD",
    "PRODUCT_TRUTH_COLUMNS",
    "PROMO_MAX_DAYS",
    "SALES_COLUMNS",
    "SPIKE_HIGH",
    "SPIKE_LOW",
    "SPIKE_RATE",
    "STOCKOUT_MAX",
    "STOCKOUT_MIN",
    "WEEKLY_PEAK_DAY",
    "SimulatedSales",
    "simulate_catalog",
    "simulate_sales",
    "treatment_dose",
]
