"""Step 1 of hpte, the baseline model: each product's untreated outcome from its own history.

Each product's own pre-experiment rows are fitted by ordinary least squares with

    y_it = level_i + trend_i * t + weekday_i[dow_t] + e_it

(``t`` in panel periods, 0 on the product's first assignment date, so ``level_i`` is the
level there; weekday terms only on daily panels, Monday is the reference day). All products
are fitted at once: the normal equations of every product are built from grouped sums
(``np.bincount`` over product x weekday keys) and solved as one stack of small systems
(``np.linalg.solve``); a tiny ridge on every term but the level gives a weekday never seen
in a product's history no effect instead of breaking the solve.

Products need ``MIN_PRE_DAILY`` pre-experiment days (daily panels) or ``MIN_PRE_PERIODS``
pre-experiment periods (other panels) for that model; with less history they fall back to a
level only, with none they are left out (see :mod:`~pricelab_cli.hpte.detrend`).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from pricelab_cli.hpte.panel import Panel

MIN_PRE_DAILY = 28
MIN_PRE_PERIODS = 8
MODEL_NONE, MODEL_LEVEL, MODEL_TREND = 0, 1, 2
MODEL_NAMES = {MODEL_NONE: "left out", MODEL_LEVEL: "level only", MODEL_TREND: "level+trend"}


@dataclasses.dataclass(frozen=True, eq=False)
class BaselineFit:
    """Per-product baseline coefficients fitted on pre-experiment rows.

    ``weekday`` is (n_products, 7) with Monday's column 0 (None in the catalog-wide copy of
    a partitioned panel: only the tasks that compute residuals read it, from their
    partition's fits); ``model`` is one of MODEL_*.
    ``volatility`` is the residual standard deviation of the history (NaN without one).
    """

    level: np.ndarray
    trend: np.ndarray
    weekday: np.ndarray | None
    model: np.ndarray
    n_pre: np.ndarray
    volatility: np.ndarray

    def weekday_effects(self) -> np.ndarray:
        """``weekday``, which only the catalog-wide copy of a partitioned panel's fits lacks."""
        if self.weekday is None:
            raise ValueError("the catalog-wide baseline fit has no weekday effects")
        return self.weekday

    def model_counts(self, daily: bool) -> dict[str, int]:
        """How many products got each baseline model (for the run's summary)."""
        full = "level+trend+weekday" if daily else "level+trend"
        counts = np.bincount(self.model, minlength=3)
        return {
            full: int(counts[MODEL_TREND]),
            "level only": int(counts[MODEL_LEVEL]),
            "left out": int(counts[MODEL_NONE]),
        }


@dataclasses.dataclass(frozen=True, eq=False)
class Rows:
    """The panel columns of a set of rows, gathered once for repeated fits."""

    code: np.ndarray
    t: np.ndarray
    weekday: np.ndarray
    y: np.ndarray

    @classmethod
    def of(cls, panel: Panel, y: np.ndarray, rows: np.ndarray) -> Rows:
        return cls(panel.code[rows], panel.t[rows], panel.weekday[rows], y[rows])

    def take(self, keep: np.ndarray) -> Rows:
        return Rows(self.code[keep], self.t[keep], self.weekday[keep], self.y[keep])

    # The robust step refits the same rows several times; what does not depend on the
    # weights is computed once.
    @functools.cached_property
    def day_key(self) -> np.ndarray:
        """Product x weekday key of each row (``code * 7 + weekday``)."""
        return self.code * 7 + self.weekday

    def counts(self, n: int) -> np.ndarray:
        """Rows per product (cached for one ``n``)."""
        cached = self.__dict__.get("_counts")
        if cached is None or len(cached) != n:
            cached = self.__dict__["_counts"] = np.bincount(self.code, minlength=n)
        return cached


def _normal_equations(rows: Rows, n: int, daily: bool, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stacked X'WX (n, k, k) and X'Wy (n, k) of the level+trend(+weekday) model from grouped
    sums (``w``: a weight per row; None is unweighted)."""
    code, t, yy = rows.code, rows.t, rows.y
    ones = np.ones(len(code)) if w is None else w
    wt, wy = ones * t, ones * yy
    if not daily:
        count = np.bincount(code, weights=ones, minlength=n)
        st = np.bincount(code, weights=wt, minlength=n)
        xtx = np.empty((n, 2, 2))
        xtx[:, 0, 0] = count
        xtx[:, 0, 1] = xtx[:, 1, 0] = st
        xtx[:, 1, 1] = np.bincount(code, weights=wt * t, minlength=n)
        return xtx, np.stack(
            [np.bincount(code, weights=wy, minlength=n), np.bincount(code, weights=wy * t, minlength=n)], 1
        )
    key = rows.day_key
    count = np.bincount(key, weights=ones, minlength=7 * n).reshape(n, 7)
    st = np.bincount(key, weights=wt, minlength=7 * n).reshape(n, 7)
    sy = np.bincount(key, weights=wy, minlength=7 * n).reshape(n, 7)
    xtx = np.zeros((n, 8, 8))
    xtx[:, 0, 0] = count.sum(1)
    xtx[:, 0, 1] = xtx[:, 1, 0] = st.sum(1)
    xtx[:, 1, 1] = np.bincount(code, weights=wt * t, minlength=n)
    days = np.arange(1, 7)
    xtx[:, 0, 1 + days] = xtx[:, 1 + days, 0] = count[:, 1:]
    xtx[:, 1, 1 + days] = xtx[:, 1 + days, 1] = st[:, 1:]
    xtx[:, 1 + days, 1 + days] = count[:, 1:]
    xty = np.empty((n, 8))
    xty[:, 0] = sy.sum(1)
    xty[:, 1] = np.bincount(code, weights=wy * t, minlength=n)
    xty[:, 2:] = sy[:, 1:]
    return xtx, xty


def fit_baselines(
    panel: Panel, y: np.ndarray, *, detrend: bool = True, pre_weight: np.ndarray | None = None
) -> BaselineFit:
    """Fit every product's baseline on its pre-experiment rows, all products at once.

    ``pre_weight`` weights the pre-experiment rows (in panel order; None: all 1), for the
    robust step's reweighted fits; ``volatility`` is then the weighted residual SD.
    """
    pre = Rows.of(panel, y, np.flatnonzero(panel.pre))
    fit, resid = fit_rows(pre, panel.n_products, panel.daily, detrend=detrend, weight=pre_weight)
    n = panel.n_products
    w_pre = np.ones(len(pre.code)) if pre_weight is None else pre_weight
    w_sum = np.bincount(pre.code, weights=w_pre, minlength=n)
    n_params = np.where(fit.model == MODEL_TREND, 8 if panel.daily else 2, 1)
    ssr = np.bincount(pre.code, weights=w_pre * np.nan_to_num(resid) ** 2, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        fit.volatility[:] = np.where(w_sum > 0, np.sqrt(ssr / np.maximum(w_sum - n_params, 1)), np.nan)
    return fit


def fit_rows(
    pre: Rows, n: int, daily: bool, *, detrend: bool, weight: np.ndarray | None
) -> tuple[BaselineFit, np.ndarray]:
    """The baseline fit on the pre-experiment rows ``pre`` and their residuals (NaN for
    products left out); ``volatility`` is left NaN for the caller."""
    n_pre = pre.counts(n)
    min_full = MIN_PRE_DAILY if daily else MIN_PRE_PERIODS
    model = np.where(n_pre == 0, MODEL_NONE, MODEL_LEVEL)
    if detrend:
        model = np.where(n_pre >= min_full, MODEL_TREND, model)

    w_pre = np.ones(len(pre.code)) if weight is None else weight
    w_sum = np.bincount(pre.code, weights=w_pre, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.bincount(pre.code, weights=w_pre * pre.y, minlength=n) / w_sum
    model = np.where((model != MODEL_NONE) & ~(w_sum > 0), MODEL_NONE, model).astype(np.int8)
    trend = np.zeros(n)
    weekday = np.zeros((n, 7))
    full = np.flatnonzero(model == MODEL_TREND)
    if len(full):
        in_full = model[pre.code] == MODEL_TREND
        rows = pre if in_full.all() else pre.take(in_full)
        xtx, xty = _normal_equations(rows, n, daily, None if weight is None else w_pre[in_full])
        xtx, xty = xtx[full], xty[full]
        # A tiny ridge on every term but the level keeps each system solvable when a weekday
        # never occurs in a product's history (that weekday's effect is then 0).
        k = xtx.shape[1]
        ridge = 1e-9 * xtx[:, 0, 0][:, None] * (np.arange(k) > 0)[None, :]
        xtx[:, np.arange(k), np.arange(k)] += ridge
        beta = np.linalg.solve(xtx, xty[:, :, None])[:, :, 0]
        level[full] = beta[:, 0]
        trend[full] = beta[:, 1]
        if daily:
            weekday[full, 1:] = beta[:, 2:]
    level[model == MODEL_NONE] = np.nan
    fit = BaselineFit(level, trend, weekday, model, n_pre, np.full(n, np.nan))
    return fit, pre.y - _baseline_of(fit, pre)


def _baseline_of(fit: BaselineFit, rows: Rows) -> np.ndarray:
    return fit.level[rows.code] + fit.trend[rows.code] * rows.t + fit.weekday_effects()[rows.code, rows.weekday]


def baseline_at(panel: Panel, fit: BaselineFit, rows: np.ndarray) -> np.ndarray:
    code = panel.code[rows]
    return fit.level[code] + fit.trend[code] * panel.t[rows] + fit.weekday_effects()[code, panel.weekday[rows]]


def concat_fits(fits: list[BaselineFit]) -> BaselineFit:
    """The fits of consecutive partitions as one (weekday effects only when every part has them)."""
    weekdays = [f.weekday for f in fits if f.weekday is not None]
    return BaselineFit(
        level=np.concatenate([f.level for f in fits]),
        trend=np.concatenate([f.trend for f in fits]),
        weekday=np.concatenate(weekdays) if len(weekdays) == len(fits) else None,
        model=np.concatenate([f.model for f in fits]),
        n_pre=np.concatenate([f.n_pre for f in fits]),
        volatility=np.concatenate([f.volatility for f in fits]),
    )
