"""The demand model of the simulated sales: untreated demand, the treatment's effect on it
(with its carryover dose, shared with ``power``) and the negative binomial counts.

The formulas are in the package docstring (:mod:`pricelab_cli.simulate`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

import numpy as np
from scipy import sparse

from pricelab_cli.simulate.settings import SalesSettings

BRAND_MULTIPLIERS: Mapping[str, float] = {
    "acme": 0.8,
    "bolt": 0.9,
    "crest": 1.0,
    "delta": 1.1,
    "ember": 1.2,
}
DEFAULT_BASE_PRICE = 20.0
PROMO_MAX_DAYS = 7
LEVEL_SD = 0.5
OUTLIER_SHIFT_SD = 1.5
WEEKLY_PEAK_DAY = 5.0


def untreated_demand(
    rng: np.random.Generator,
    *,
    start: dt.date,
    n_days: int,
    own_elasticity: np.ndarray,
    weight_matrix: sparse.csr_matrix | None,
    settings: SalesSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``lambda0`` (products x days), the promotion calendar and the outlier flags.

    Every draw is made in a fixed order and scaled afterwards, so under one seed the
    untreated world does not depend on the assignment or the treatment parameters.
    """
    n = len(own_elasticity)
    level = math.log(settings.base_units) + LEVEL_SD * rng.standard_normal(n)
    slope = settings.trend_sd * rng.standard_normal(n)
    peak_day = WEEKLY_PEAK_DAY + rng.standard_normal(n)
    outlier_key = rng.random(n)
    outlier_when = rng.random(n)
    outlier_shift = OUTLIER_SHIFT_SD * rng.standard_normal(n)
    shock = settings.shock_sd * rng.standard_normal(n_days)
    promo = promotion_days(rng.random((n, n_days)), settings.promo_rate)

    days = np.arange(n_days)
    weekday = (start.weekday() + days) % 7
    log_lambda0 = settings.weekly * np.cos(2.0 * np.pi / 7.0 * (weekday[None, :] - peak_day[:, None]))
    log_lambda0 += level[:, None] + slope[:, None] * (days / 365.0)[None, :] + shock[None, :]
    promo_log_price = promo * math.log1p(-settings.promo_depth)
    log_lambda0 += own_elasticity[:, None] * promo_log_price
    if weight_matrix is not None:
        log_lambda0 += weight_matrix @ promo_log_price
    del promo_log_price

    n_outliers = int(np.floor(settings.outlier_share * n + 0.5))
    outlier = np.zeros(n, dtype=bool)
    outlier[np.argsort(outlier_key, kind="stable")[:n_outliers]] = True
    first_late_day = (2 * n_days) // 3
    shift_day = first_late_day + np.floor(outlier_when * (n_days - first_late_day)).astype(np.int64)
    shifted = outlier[:, None] & (days[None, :] >= shift_day[:, None])
    log_lambda0 += np.where(shifted, outlier_shift[:, None], 0.0)
    return np.exp(log_lambda0, out=log_lambda0), promo, outlier


def treatment_multiplier(
    treated: np.ndarray,
    *,
    own_elasticity: np.ndarray,
    weight_matrix: sparse.csr_matrix | None,
    log_cut: float | np.ndarray,
    carryover_days: float,
) -> np.ndarray:
    """Factor by which treatment (own, lingering, and through substitutes) scales demand.

    ``log_cut`` is the treatment's change of log price, one for all products or one per
    product (a policy); ``weight_matrix`` is None when the treatment does not spill over.
    """
    log_factor = treatment_dose(treated, carryover_days) * (own_elasticity * log_cut)[:, None]
    if weight_matrix is not None:
        log_factor += substitute_shift(weight_matrix, treated, log_cut)
    return np.exp(log_factor, out=log_factor)


def substitute_shift(weight_matrix: sparse.csr_matrix, treated: np.ndarray, log_cut: float | np.ndarray) -> np.ndarray:
    """The log demand shift (products x days) each product gets from its treated
    substitutes: ``sum_src weight * log price change of src`` (``log_cut`` one for all
    products, or one per product)."""
    if np.ndim(log_cut) == 0:
        return (weight_matrix @ treated.astype(np.float64)) * log_cut
    return weight_matrix @ (treated * np.asarray(log_cut)[:, None])


def negative_binomial(rng: np.random.Generator, mean: np.ndarray, dispersion: float) -> np.ndarray:
    """Poisson-gamma counts with the given means and variance ``mean + mean^2 / dispersion``.

    ``mean`` is overwritten to save a panel-sized copy.
    """
    mean *= rng.gamma(dispersion, 1.0 / dispersion, size=mean.shape)
    return rng.poisson(mean).astype(np.int64, copy=False)


def promotion_days(u: np.ndarray, rate: float) -> np.ndarray:
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
