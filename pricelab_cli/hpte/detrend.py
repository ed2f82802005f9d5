"""Step 1 of hpte: predict each product's untreated outcome and take first differences.

Baseline model
--------------
Each product's own pre-experiment rows are fitted by ordinary least squares with

    y_it = level_i + trend_i * t + weekday_i[dow_t] + e_it

(``t`` in panel periods, 0 on the product's first assignment date, so ``level_i`` is the
level there; weekday terms only on daily panels, Monday is the reference day). All products
are fitted at once: the normal equations of every product are built from grouped sums
(``np.bincount`` over product x weekday keys) and solved as one stack of small systems
(``np.linalg.solve``); a tiny ridge on every term but the level gives a weekday never seen
in a product's history no effect instead of breaking the solve.

The model is fitted in outcome units, not logs, so that counterfactuals and effects are in
the units the estimate is reported in (and zero sales need no special case); over the few
weeks an experiment lasts a linear trend is a close enough stand-in for a multiplicative one,
and whatever curvature is missed is the same for both arms.

Products need ``MIN_PRE_DAILY`` pre-experiment days (daily panels; four weeks so each
weekday is seen four times) or ``MIN_PRE_PERIODS`` pre-experiment periods (weekly,
quarterly, ... panels) for that model. With less history they fall back to a level only
(the mean of the history they have); with none they are left out. Counts are reported.
``detrend=False`` fits a level only for everyone (the classic first difference).

Common shocks
-------------
After the baseline prediction, the shock shared by all products on a date is the mean
residual of the *control* experiment rows on that date (rows the treatment cannot have
touched, and not used in any fit). Dates with no control row (history, or a date where every
product in its window is treated) use the mean residual of the pre-experiment rows on that
date, else 0. The shock is added to the prediction: ``counterfactual = baseline + shock``
and ``residual = observed - counterfactual``. Shocks are additive (in outcome units) so
that the estimate stays a difference of means of the observed outcome.

First difference
----------------
A cell is (product, arm); its first difference is the mean residual over its experiment
rows (blackout rows are not in the panel).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import numpy as np
import polars as pl

from pricelab_cli.engine import Engine, default_engine, resolve
from pricelab_cli.errors import PricelabWarning
from pricelab_cli.hpte import panel as panel_layout
from pricelab_cli.hpte import robust
from pricelab_cli.hpte.panel import Panel, partition_panel
from pricelab_cli.hpte.robust import RobustAudit

MIN_PRE_DAILY = 28
# The de-treating factor of the robust step's second pass stays within this range.
DETREAT_RANGE = (0.5, 2.0)
# At most this many passes after the first, stopping when the factor moves less than this.
DETREAT_PASSES = 4
DETREAT_TOLERANCE = 1e-3
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
class _Rows:
    """The panel columns of a set of rows, gathered once for repeated fits."""

    code: np.ndarray
    t: np.ndarray
    weekday: np.ndarray
    y: np.ndarray

    @classmethod
    def of(cls, panel: Panel, y: np.ndarray, rows: np.ndarray) -> _Rows:
        return cls(panel.code[rows], panel.t[rows], panel.weekday[rows], y[rows])

    def take(self, keep: np.ndarray) -> _Rows:
        return _Rows(self.code[keep], self.t[keep], self.weekday[keep], self.y[keep])

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


def _normal_equations(rows: _Rows, n: int, daily: bool, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
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
        xty = np.stack([np.bincount(code, weights=wy, minlength=n), np.bincount(code, weights=wy * t, minlength=n)], 1)
        return xtx, xty
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
    pre = _Rows.of(panel, y, np.flatnonzero(panel.pre))
    fit, resid = _fit_rows(pre, panel.n_products, panel.daily, detrend=detrend, weight=pre_weight)
    n = panel.n_products
    w_pre = np.ones(len(pre.code)) if pre_weight is None else pre_weight
    w_sum = np.bincount(pre.code, weights=w_pre, minlength=n)
    n_params = np.where(fit.model == MODEL_TREND, 8 if panel.daily else 2, 1)
    ssr = np.bincount(pre.code, weights=w_pre * np.nan_to_num(resid) ** 2, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        fit.volatility[:] = np.where(w_sum > 0, np.sqrt(ssr / np.maximum(w_sum - n_params, 1)), np.nan)
    return fit


def _fit_rows(
    pre: _Rows, n: int, daily: bool, *, detrend: bool, weight: np.ndarray | None
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


def _baseline_of(fit: BaselineFit, rows: _Rows) -> np.ndarray:
    return fit.level[rows.code] + fit.trend[rows.code] * rows.t + fit.weekday[rows.code, rows.weekday]


def _baseline_at(panel: Panel, fit: BaselineFit, rows: np.ndarray) -> np.ndarray:
    code = panel.code[rows]
    return fit.level[code] + fit.trend[code] * panel.t[rows] + fit.weekday[code, panel.weekday[rows]]


def _date_sums(panel: Panel, values: np.ndarray, usable: np.ndarray, block: int | None = None) -> np.ndarray:
    """Per block of products (``hpte.panel.SUM_BLOCK``: partitions are whole blocks, and the
    blocks are added in order, so the shocks come out to the same bits however the products
    are partitioned) and per date, (control total, control count,
    history total, history count) of ``values`` over usable control experiment rows and
    usable history rows: an array (blocks, 4, dates)."""
    n_dates = len(panel.dates)
    block = block or panel_layout.SUM_BLOCK
    n_blocks = max(1, -(-panel.n_products // block))
    control = usable & ~panel.pre & (panel.treated == 0)
    history = usable & panel.pre
    out = np.empty((4, n_blocks, n_dates))
    for i, mask in enumerate((control, history)):
        key = (panel.code[mask] // block) * n_dates + panel.date_index[mask]
        out[2 * i] = np.bincount(key, weights=values[mask], minlength=n_blocks * n_dates).reshape(n_blocks, n_dates)
        out[2 * i + 1] = np.bincount(key, minlength=n_blocks * n_dates).reshape(n_blocks, n_dates)
    return out.transpose(1, 0, 2)


def add_block_sums(total: np.ndarray | None, blocks: np.ndarray) -> np.ndarray:
    """``total`` plus each block's sums, one block after another (a fixed order of additions)."""
    for block in blocks:
        total = block.copy() if total is None else total + block
    return total


def shocks_from_sums(sums: np.ndarray) -> np.ndarray:
    """Shock per date: mean residual of control experiment rows, else of history rows, else 0."""
    control_total, control_count, history_total, history_count = sums
    with np.errstate(invalid="ignore", divide="ignore"):
        control_mean, history_mean = control_total / control_count, history_total / history_count
    return np.where(control_count > 0, control_mean, np.where(history_count > 0, history_mean, 0.0))


@dataclasses.dataclass(frozen=True, eq=False)
class Detrended:
    """Residuals and counterfactuals per panel row (NaN for products left out)."""

    residual: np.ndarray
    counterfactual: np.ndarray
    usable: np.ndarray
    shock: np.ndarray
    fit: BaselineFit
    audit: RobustAudit | None = None
    # The residual of every row as if untreated (treated rows divided by the de-treating
    # factor before clipping); None when it equals ``residual``.
    untreated: np.ndarray | None = None
    # Per row, how fast the residual moves with the de-treating factor (``y / g^2`` on a
    # clipped treated row, 0 elsewhere); None without the robust step.
    detreat_slope: np.ndarray | None = None

    @property
    def screened(self) -> np.ndarray:
        """Per product, whether the robust step's volatility screen left it out."""
        if self.audit is None:
            return np.zeros(len(self.fit.model), dtype=bool)
        return self.audit.screened


# --------------------------------------------------------------------------- stages
#
# The detrending is three stages over partitions of products (see hpte.panel), with a
# reduction over all products between them:
#   fit_partition      per partition: baselines, robust scale, stock-outs, screen inputs
#   screen_products    all products: the volatility screen (robust z-scores across products)
#   shock_sums         per partition: per-date sums of clipped residuals of usable rows
#   shocks_from_sums   all dates: the common shocks
#   partition_residuals per partition: residuals, counterfactuals, winsorised days
# ``detrend_panel`` runs them on one panel; ``detrend_partitions`` on a partitioned one.


@dataclasses.dataclass(frozen=True, eq=False)
class PartitionFit:
    """The first stage on one partition (arrays per product of the partition).

    ``bound`` and ``centre``: a residual is clipped to ``centre +- bound`` (``bound`` is
    infinite and ``centre`` 0 without the robust step; history rows are centred on 0);
    ``stockout``: positions of the rows left out as stock-out days; ``screen_inputs``: what
    the volatility screen reads (robust step only): level, winsorised RMS and raw RMS of
    the history residuals.
    """

    fit: BaselineFit
    bound: np.ndarray
    centre: np.ndarray
    stockout: np.ndarray
    screen_inputs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def robust(self) -> bool:
        return self.screen_inputs is not None

    def usable(self, panel: Panel, screened: np.ndarray) -> np.ndarray:
        """Rows in the analysis: the product has a baseline and is not screened, and the row
        is not a stock-out day."""
        usable = (self.fit.model[panel.code] != MODEL_NONE) & ~screened[panel.code]
        usable[self.stockout] = False
        return usable

    def clip_bounds(self, panel: Panel, centre: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        centre = self.centre if centre is None else centre
        row_centre = np.where(panel.pre, 0.0, centre[panel.code])
        return row_centre - self.bound[panel.code], row_centre + self.bound[panel.code]


def fit_partition(panel: Panel, y: np.ndarray, *, detrend: bool = True, robust_step: bool = False) -> PartitionFit:
    """Stage one: every product's baseline (least squares, or the robust step's Huber fit
    with its scale, stock-out days and screen inputs)."""
    n = panel.n_products
    if not robust_step:
        fit = fit_baselines(panel, y, detrend=detrend)
        return PartitionFit(fit, np.full(n, np.inf), np.zeros(n), np.empty(0, dtype=np.int64))
    stockout = robust.stockout_rows(panel.code, panel.date_index, y, panel.pre, n, arm=panel.treated)
    pre_rows = np.flatnonzero(panel.pre)
    pre = _Rows.of(panel, y, pre_rows)
    pre_code = pre.code
    keep_pre = (~stockout[pre_rows]).astype(np.float64)
    # A history without noise (to rounding) has no scale to judge residuals by: nothing of
    # such a product is reweighted, clipped or screened.
    with np.errstate(invalid="ignore", divide="ignore"):
        typical = np.bincount(pre_code, weights=np.abs(pre.y), minlength=n) / np.bincount(pre_code, minlength=n)
    least_scale = robust.DEGENERATE_SCALE * (np.nan_to_num(typical) + 1.0)
    fit, resid = _fit_rows(pre, n, panel.daily, detrend=detrend, weight=keep_pre)
    for iteration in range(robust.HUBER_ITERATIONS + 1):
        known = np.isfinite(resid) & (keep_pre > 0)
        scale = robust.robust_scale(resid[known], pre_code[known], n)
        scale = np.where(scale > least_scale, scale, np.nan)
        if iteration == robust.HUBER_ITERATIONS:
            break
        weight = robust.huber_weights(np.nan_to_num(resid), scale[pre_code]) * keep_pre
        fit, resid = _fit_rows(pre, n, panel.daily, detrend=detrend, weight=weight)
    fit.volatility[:] = scale
    bound = robust.WINSOR_K * np.where(np.isfinite(scale), scale, np.inf)

    # The screen reads the history alone: level and noise left after winsorising.
    clipped_pre = np.clip(np.nan_to_num(resid), -bound[pre_code], bound[pre_code]) * keep_pre
    with np.errstate(invalid="ignore", divide="ignore"):
        n_kept = np.bincount(pre_code, weights=keep_pre, minlength=n)
        history_level = np.bincount(pre_code, weights=np.nan_to_num(pre.y - resid) * keep_pre, minlength=n) / n_kept
        history_rms = np.sqrt(np.bincount(pre_code, weights=clipped_pre**2, minlength=n) / n_kept)
        raw_rms = np.sqrt(np.bincount(pre_code, weights=np.nan_to_num(resid) ** 2 * keep_pre, minlength=n) / n_kept)
    stockout_at = np.flatnonzero(stockout)
    centre = experiment_centre(panel, y, fit, stockout_at, 1.0)
    return PartitionFit(fit, bound, centre, stockout_at, (history_level, history_rms, raw_rms))


def experiment_centre(
    panel: Panel, y: np.ndarray, fit: BaselineFit, stockout: np.ndarray, detreat: float
) -> np.ndarray:
    """Per product, the median residual of its experiment rows (all arms together, treated
    rows divided by ``detreat`` first): the centre of the experiment's clipping band.

    Experiment residuals are clipped around it, history residuals around 0: a product whose
    level moved in the experiment keeps the difference between its days, and only what is
    far from its own level is cut.
    """
    usable = ~panel.pre & (fit.model[panel.code] != MODEL_NONE)
    usable[stockout] = False
    exp_rows = np.flatnonzero(usable)
    scale = np.where(panel.treated[exp_rows] == 1, detreat, 1.0)
    residual = y[exp_rows] / scale - _baseline_at(panel, fit, exp_rows)
    return np.nan_to_num(robust.grouped_median(residual, panel.code[exp_rows], panel.n_products))


def screen_products(fit: BaselineFit, screen_inputs, screen: bool) -> tuple[np.ndarray, np.ndarray]:
    """The volatility screen over all products: (robust z, screened).

    Two ways a history is too wild: noise extreme for the product's level, or tails extreme
    for its own robust scale (mostly quiet days and rare huge ones, which winsorising at that
    scale would cut more on treated days, where sales sit higher)."""
    history_level, history_rms, raw_rms = screen_inputs
    n = len(fit.model)
    scale = fit.volatility
    has_model = fit.model != MODEL_NONE
    level_z = robust.volatility_z(np.where(has_model, history_level, np.nan), history_rms)
    tail_z = robust.robust_z(np.log(raw_rms / scale), np.zeros(n, dtype=np.int64))
    tail_z = np.where(has_model & np.isfinite(scale), tail_z, np.nan)
    vol_z = np.fmax(level_z, tail_z)
    screened = (vol_z > robust.VOLATILITY_Z) if screen else np.zeros(n, dtype=bool)
    return vol_z, screened


def shock_sums(
    panel: Panel, y: np.ndarray, part: PartitionFit, screened: np.ndarray, block: int | None = None
) -> np.ndarray:
    """Stage two: per block and date sums (see ``_date_sums``) of the clipped residuals of
    usable rows."""
    usable = part.usable(panel, screened)
    rows = np.flatnonzero(usable)
    residual = np.full(len(y), np.nan)
    residual[rows] = y[rows] - _baseline_at(panel, part.fit, rows)
    low, high = part.clip_bounds(panel)
    return _date_sums(panel, np.clip(residual, low, high), usable, block)


def partition_residuals(
    panel: Panel, y: np.ndarray, part: PartitionFit, screened: np.ndarray, shock: np.ndarray, detreat: float = 1.0
) -> tuple[Detrended, np.ndarray]:
    """Stage three: residuals and counterfactuals of every row (NaN for rows left out), and
    per product the number of analysed rows whose residual was clipped.

    With ``detreat`` g != 1 (the robust step's later passes), a treated experiment row is
    split into what it would have been untreated, ``y / g``, and the effect, ``(1 - 1/g) y``:
    only the first is clipped, as a control row is, and the residual is ``clip(y / g -
    counterfactual) + (1 - 1/g) y``. A row the clip does not touch keeps ``y -
    counterfactual`` exactly; a clipped treated row keeps its whole effect, so a
    multiplicative effect of ``g`` loses nothing to the clipping; ``untreated`` keeps ``clip(y / g -
    counterfactual)``, what the swing screen ranks.
    """
    usable = part.usable(panel, screened)
    rows = np.flatnonzero(usable)
    baseline = np.full(len(y), np.nan)
    baseline[rows] = _baseline_at(panel, part.fit, rows)
    counterfactual = baseline + shock[panel.date_index]
    if detreat == 1.0:
        raw = y - counterfactual
        low, high = part.clip_bounds(panel)
        residual = np.clip(raw, low, high)
        untreated = None
        clipped = residual
    else:
        scale = np.where(~panel.pre & (panel.treated == 1), detreat, 1.0)
        raw = y / scale - counterfactual
        low, high = part.clip_bounds(panel, experiment_centre(panel, y, part.fit, part.stockout, detreat))
        clipped = np.clip(raw, low, high)
        residual = np.where(scale != 1.0, clipped + (1.0 - 1.0 / scale) * y, clipped)
        untreated = clipped
    cut = usable & (clipped != raw)
    winsorised = np.bincount(panel.code[cut], minlength=panel.n_products)
    slope = None
    if part.robust:
        # d/dg of clip(y / g - cf) + (1 - 1/g) y: 0 where the clip leaves y / g alone (the
        # residual is y - cf whatever g), y / g^2 where it cuts (the clipped part is fixed).
        slope = np.where(cut & ~panel.pre & (panel.treated == 1), y / detreat**2, 0.0)
    detrended = Detrended(residual, counterfactual, usable, shock, part.fit, untreated=untreated, detreat_slope=slope)
    return detrended, winsorised


def _stockout_days(panel: Panel, part: PartitionFit) -> np.ndarray:
    code = panel.code[part.stockout]
    return np.bincount(code[part.fit.model[code] != MODEL_NONE], minlength=panel.n_products)


def detrend_panel(
    panel: Panel,
    outcome: str,
    *,
    detrend: bool = True,
    remove_shocks: bool = True,
    robust: bool = False,
    screen: bool = True,
) -> Detrended:
    """Baseline prediction, common-shock removal and residuals for one outcome.

    ``robust`` runs the robust step of :mod:`~pricelab_cli.hpte.robust` (Huber baseline,
    robust scale, stock-out runs left out, winsorised residuals, robust shocks and, with
    ``screen``, the history volatility screen); otherwise the plain least-squares version.
    """
    y = panel.outcomes[outcome]
    part = fit_partition(panel, y, detrend=detrend, robust_step=robust)
    n = panel.n_products
    vol_z, screened = (
        screen_products(part.fit, part.screen_inputs, screen) if robust else (None, np.zeros(n, dtype=bool))
    )
    shock = (
        shocks_from_sums(add_block_sums(None, shock_sums(panel, y, part, screened)))
        if remove_shocks
        else np.zeros(len(panel.dates))
    )
    detrended, winsorised = partition_residuals(panel, y, part, screened, shock)
    if not robust:
        return detrended
    audit = RobustAudit(
        volatility_z=vol_z, screened=screened, n_stockout=_stockout_days(panel, part), n_winsorised=winsorised
    )
    return dataclasses.replace(detrended, audit=audit)


@dataclasses.dataclass(frozen=True, eq=False)
class Cells:
    """One entry per (product, arm) cell with experiment rows."""

    code: np.ndarray
    treated: np.ndarray
    first_difference: np.ndarray
    counterfactual: np.ndarray
    n_rows: np.ndarray
    # The mean residual as if untreated (what the swing screen ranks), and whether the
    # outcome was 0 on every row of the cell of a product that sold on its last history day
    # (robust.killed_cell_rows).
    untreated_difference: np.ndarray
    empty: np.ndarray
    # The mean observed outcome over the cell's analysed rows.
    observed: np.ndarray
    # The mean over the cell's rows of the residual's slope in the de-treating factor, and
    # the cell's linearised contribution to the factor's two inputs (``DetreatInputs``).
    detreat_slope: np.ndarray
    detreat_difference: np.ndarray
    detreat_level: np.ndarray

    def take(self, keep: np.ndarray) -> Cells:
        return Cells(*(getattr(self, f.name)[keep] for f in dataclasses.fields(self)))

    def shifted(self, offset: int) -> Cells:
        """The same cells with product codes moved by ``offset`` (partition to catalog)."""
        return dataclasses.replace(self, code=self.code + offset)

    @classmethod
    def concat(cls, parts: list[Cells]) -> Cells:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))


def first_difference(panel: Panel, detrended: Detrended, y: np.ndarray | None = None) -> Cells:
    """Mean residual (and mean counterfactual) over each cell's experiment rows; ``y`` (the
    outcome) marks the cells a price may have killed (``robust.killed_cell_rows``)."""
    rows = np.flatnonzero(~panel.pre & detrended.usable)
    key = panel.code[rows] * 2 + panel.treated[rows]
    # Keys are dense (2 per product), so counting replaces sorting.
    present = np.bincount(key, minlength=2 * panel.n_products) > 0
    cell_key = np.flatnonzero(present)
    cell_of_row = (np.cumsum(present) - 1)[key]
    n_rows = np.bincount(cell_of_row, minlength=len(cell_key))
    fd = np.bincount(cell_of_row, weights=detrended.residual[rows], minlength=len(cell_key)) / n_rows
    cf = np.bincount(cell_of_row, weights=detrended.counterfactual[rows], minlength=len(cell_key)) / n_rows
    if detrended.untreated is None:
        untreated = fd
    else:
        untreated = np.bincount(cell_of_row, weights=detrended.untreated[rows], minlength=len(cell_key)) / n_rows
    if y is None:
        empty = np.zeros(len(cell_key), dtype=bool)
    else:
        empty = np.bincount(cell_of_row, weights=(y[rows] != 0), minlength=len(cell_key)) == 0
        sold = robust.sold_on_last_history_day(panel.code, panel.date_index, y, panel.pre, panel.n_products)
        empty &= sold[cell_key // 2]
    if y is None:
        observed = cf + fd
    else:
        observed = np.bincount(cell_of_row, weights=y[rows], minlength=len(cell_key)) / n_rows
    if detrended.detreat_slope is None:
        slope = np.zeros(len(cell_key))
    else:
        slope = np.bincount(cell_of_row, weights=detrended.detreat_slope[rows], minlength=len(cell_key)) / n_rows
    zeros = np.zeros(len(cell_key))
    return Cells(
        cell_key // 2, (cell_key % 2).astype(np.int8), fd, cf, n_rows, untreated, empty, observed, slope, zeros, zeros
    )


def experiment_level(panel: Panel, detrended: Detrended) -> np.ndarray:
    """Per product, the mean baseline forecast over its analysed experiment rows (NaN
    without any): the forest's ``pre_level`` feature."""
    exp_rows = np.flatnonzero(~panel.pre & detrended.usable)
    forecast = detrended.counterfactual[exp_rows] - detrended.shock[panel.date_index[exp_rows]]
    count = np.bincount(panel.code[exp_rows], minlength=panel.n_products)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(panel.code[exp_rows], weights=forecast, minlength=panel.n_products) / count


@dataclasses.dataclass(frozen=True, eq=False)
class CatalogDetrend:
    """The detrending of every partition of a (partitioned) panel, reduced to what the
    later steps read: per product (global codes) and per cell, never per row.

    ``fit``, ``shock`` and ``audit`` as in :class:`Detrended`; ``cells`` the first
    differences; ``level`` the forest's level feature; ``detreat`` the de-treating factor of
    the robust step's last pass. ``partition_fits`` (each
    partition's fits as the engine keeps them: the fits, or a handle of them), ``outcome``
    and ``screened`` let a later task recompute any partition's residuals
    (``for_partition``).
    """

    fit: BaselineFit
    shock: np.ndarray
    audit: RobustAudit | None
    cells: Cells
    level: np.ndarray
    screened: np.ndarray
    partition_fits: list
    outcome: str
    detreat: float = 1.0
    # The robust step's de-treating factor's inputs on the last pass's cells (None without
    # the robust step, or when the factor could not be formed).
    detreat_inputs: DetreatInputs | None = None

    def for_partition(self, handle) -> PartitionResiduals:
        """What a task needs to recompute the residuals of the partition ``handle`` loads
        (small: per product of the partition and per date)."""
        local = self.screened[handle.offset : handle.offset + len(handle.product_ids)]
        return PartitionResiduals(self.partition_fits[handle.k], local, self.shock, self.outcome, self.detreat)


@dataclasses.dataclass(frozen=True, eq=False)
class PartitionResiduals:
    """One partition's baseline fits, screen and the common shocks: its residuals again."""

    fit: object  # PartitionFit, or the engine's handle of it
    screened: np.ndarray
    shock: np.ndarray
    outcome: str
    detreat: float = 1.0

    def residuals(self, panel: Panel) -> Detrended:
        y = panel.outcomes[self.outcome]
        return partition_residuals(panel, y, resolve(self.fit), self.screened, self.shock, self.detreat)[0]


def _concat_fits(fits: list[BaselineFit]) -> BaselineFit:
    def joined(name: str) -> np.ndarray | None:
        values = [getattr(f, name) for f in fits]
        return None if any(v is None for v in values) else np.concatenate(values)

    return BaselineFit(*(joined(field.name) for field in dataclasses.fields(BaselineFit)))


# The map tasks of ``detrend_partitions``: plain functions of one partition (a handle that
# loads it) and small per-partition inputs, so any engine can run them anywhere.


def _fit_task(task) -> tuple[tuple[BaselineFit, tuple | None], PartitionFit]:
    """The partition's fits, kept by the engine (the later tasks take its handle), and what
    the driver reads of them: the fits without the weekday effects, and the screen's
    inputs."""
    handle, outcome, detrend, robust_step = task
    panel = handle.load()
    part = fit_partition(panel, panel.outcomes[outcome], detrend=detrend, robust_step=robust_step)
    return (dataclasses.replace(part.fit, weekday=None), part.screen_inputs), part


def _shock_task(task) -> np.ndarray:
    handle, outcome, part, screened, block = task
    panel = handle.load()
    return shock_sums(panel, panel.outcomes[outcome], resolve(part), screened, block)


def _cells_task(task) -> tuple[Cells, np.ndarray, np.ndarray, np.ndarray]:
    handle, outcome, part, screened, shock, detreat = task
    part = resolve(part)
    panel = handle.load()
    y = panel.outcomes[outcome]
    detrended, clipped = partition_residuals(panel, y, part, screened, shock, detreat)
    cells = first_difference(panel, detrended, y)
    return cells.shifted(handle.offset), experiment_level(panel, detrended), clipped, _stockout_days(panel, part)


@dataclasses.dataclass(frozen=True)
class DetreatInputs:
    """What the de-treating factor is made of: the treated minus control mean first
    difference of the calm cells (``difference``) and the treated calm cells' observed mean
    (``level``)."""

    difference: float
    level: float

    def factor(self) -> float:
        return float(detreat_of(np.array([self.difference]), np.array([self.level]))[0])


def detreat_of(difference: np.ndarray, level: np.ndarray) -> np.ndarray:
    """``1 + lift`` for arrays of differences and observed levels (the point estimate's and
    the bootstrap draws' alike): the lift ``difference / (level - difference)`` held within
    ``DETREAT_RANGE``; 1 where it is undefined."""
    difference = np.asarray(difference, dtype=np.float64)
    untreated = np.asarray(level, dtype=np.float64) - difference
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        factor = np.clip(1.0 + difference / untreated, *DETREAT_RANGE)
    ok = np.isfinite(difference) & np.isfinite(untreated) & (untreated > 0)
    return np.where(ok & np.isfinite(factor), factor, 1.0)


def detreat_inputs(cells: Cells, volatility: np.ndarray) -> tuple[DetreatInputs | None, np.ndarray, np.ndarray]:
    """The de-treating factor's inputs, and each cell's linearised contribution to its
    difference and to its level (so the bootstrap can redraw the factor with the estimate).

    The lift is the treated minus control mean first difference over the treated cells'
    observed mean less that difference, on the cells the estimate would keep: not those
    whose swing is more than ``SWING_Z`` robust z-scores from its arm's (one wild product
    would otherwise set the clipping of every treated row). It is not shrunk towards 0:
    shrinking by ``max(0, 1 - 1/t^2)`` (``t`` its ratio to its SE) read +10% on Ta Feng's
    time-bound experiments at 0.88 of the truth (0.97 unshrunk), because a clipped treated
    row keeps only ``1 - 1/g`` of itself as effect. Its noise is the estimate's instead: the
    bootstrap redraws the factor from these inputs (``HeterogeneousPanelEffect._bootstrap``).
    None (factor 1) with fewer than two calm cells in an arm.
    """
    n_cells = len(cells.code)
    difference_influence = np.zeros(n_cells)
    level_influence = np.zeros(n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        swing = cells.untreated_difference / (volatility[cells.code] / np.sqrt(np.maximum(cells.n_rows, 1)))
    swing = np.nan_to_num(swing, nan=0.0, posinf=np.inf, neginf=-np.inf)
    calm = np.abs(robust.robust_z(swing, cells.treated.astype(np.int64))) <= robust.SWING_Z
    treated = (cells.treated == 1) & calm
    control = (cells.treated == 0) & calm
    if treated.sum() < 2 or control.sum() < 2:
        return None, difference_influence, level_influence
    difference, difference_influence = _first_pass_difference(cells, treated, control)
    observed = cells.observed[treated]
    level = float(observed.mean())
    level_influence[treated] = (observed - level) / len(observed)
    return DetreatInputs(difference, level), difference_influence, level_influence


def _first_pass_difference(cells: Cells, treated: np.ndarray, control: np.ndarray) -> tuple[float, np.ndarray]:
    """Treated minus control mean first difference and each cell's linearised contribution
    to it: within products (the mean of each product's treated minus control cell, carried
    by the treated cell) when most products have both arms (switchback designs), else
    between the arms' cells."""
    n = int(cells.code.max()) + 1 if len(cells.code) else 0
    influence = np.zeros(len(cells.code))
    fd_t = np.full(n, np.nan)
    fd_c = np.full(n, np.nan)
    fd_t[cells.code[treated]] = cells.first_difference[treated]
    fd_c[cells.code[control]] = cells.first_difference[control]
    both = np.isfinite(fd_t) & np.isfinite(fd_c)
    single = np.isfinite(fd_t) ^ np.isfinite(fd_c)
    if both.sum() >= 2 and both.sum() >= single.sum():
        paired = fd_t[both] - fd_c[both]
        mean = float(paired.mean())
        carrier = treated & both[cells.code]
        influence[carrier] = (fd_t[cells.code[carrier]] - fd_c[cells.code[carrier]] - mean) / len(paired)
        return mean, influence
    a, b = cells.first_difference[treated], cells.first_difference[control]
    influence[treated] = (a - a.mean()) / len(a)
    influence[control] = -(b - b.mean()) / len(b)
    return float(a.mean() - b.mean()), influence


def detrend_partitions(
    source,
    outcome: str,
    *,
    detrend: bool = True,
    remove_shocks: bool = True,
    robust: bool = False,
    screen: bool = True,
    engine: Engine | None = None,
) -> CatalogDetrend:
    """The three stages of ``detrend_panel`` mapped over the partitions of ``source`` (a
    :class:`~pricelab_cli.hpte.panel.Panel` or a partitioned panel) by ``engine`` (in this
    process by default), with the screen and the shocks reduced over all products in
    between. Each partition is loaded once per stage; only per-product, per-cell and
    per-date arrays come back."""
    engine = default_engine(engine)
    handles = source.handles()
    # Each partition's fits stay with the engine; the later tasks get their handles, so the
    # driver never sends them out again, and it takes back only what it reduces over the
    # catalog (per product: the model, level, trend and volatility; the screen's inputs).
    fitted = engine.map_kept(
        _fit_task, [(h, outcome, detrend, robust) for h in handles], 1, stage=f"{outcome}: baseline models"
    )
    refs = [kept[0] for _, kept in fitted]
    fit = _concat_fits([small[0] for small, _ in fitted])
    n = len(fit.model)
    if robust:
        inputs = tuple(np.concatenate([small[1][i] for small, _ in fitted]) for i in range(3))
        vol_z, screened = screen_products(fit, inputs, screen)
        del inputs
    else:
        vol_z, screened = None, np.zeros(n, dtype=bool)
    del fitted
    local = [screened[h.offset : h.offset + len(h.product_ids)] for h in handles]
    if remove_shocks:
        sums = None
        # The block size is read here, where the partitions were cut, not in each worker.
        block = panel_layout.SUM_BLOCK
        tasks = [(h, outcome, ref, s, block) for h, ref, s in zip(handles, refs, local)]
        for block_sums in engine.map(_shock_task, tasks, stage=f"{outcome}: trading-day shocks"):
            sums = add_block_sums(sums, block_sums)
        shock = shocks_from_sums(sums)
    else:
        shock = np.zeros(len(source.dates))
    tasks = [(h, outcome, ref, s, shock, 1.0) for h, ref, s in zip(handles, refs, local)]
    results = engine.map(_cells_task, tasks, stage=f"{outcome}: baselines and first differences")
    cells = Cells.concat([r[0] for r in results])
    detreat = 1.0
    inputs = None
    audit = None
    if robust:
        # Further passes: treated rows clipped on the untreated scale of the previous pass's
        # lift (``1 + lift`` held within ``DETREAT_RANGE``), until it settles (each pass gives
        # back most of what the clip took from the last). The last cells' inputs stay for the
        # bootstrap, which redraws the factor from them.
        for passes in range(DETREAT_PASSES + 1):
            inputs, difference_influence, level_influence = detreat_inputs(cells, fit.volatility)
            new = 1.0 if inputs is None else inputs.factor()
            if passes == DETREAT_PASSES or abs(new - detreat) < DETREAT_TOLERANCE:
                break
            detreat = new
            results = engine.map(
                _cells_task, [(*task[:5], detreat) for task in tasks], stage=f"{outcome}: de-treated pass {passes + 1}"
            )
            cells = Cells.concat([r[0] for r in results])
        cells = dataclasses.replace(cells, detreat_difference=difference_influence, detreat_level=level_influence)
        audit = RobustAudit(
            volatility_z=vol_z,
            screened=screened,
            n_stockout=np.concatenate([r[3] for r in results]),
            n_winsorised=np.concatenate([r[2] for r in results]),
        )
    level = np.concatenate([r[1] for r in results])
    return CatalogDetrend(fit, shock, audit, cells, level, screened, refs, outcome, detreat, inputs)


def warn_left_out(panel: Panel, fit: BaselineFit, outcome: str) -> None:
    """Warn about products with no pre-experiment history (left out of the analysis)."""
    left_out = np.flatnonzero(fit.model == MODEL_NONE)
    if len(left_out):
        warnings.warn(
            f"{outcome}: {len(left_out)} product(s) have no sales before their experiment starts "
            f"and are left out, e.g. {panel.product_ids[int(left_out[0])]!r}.",
            PricelabWarning,
            stacklevel=3,
        )


def detrended_outcomes(
    sales: pl.DataFrame | pl.LazyFrame, assignment: pl.DataFrame, outcome: str, *, robust: bool = True, engine=None
) -> pl.DataFrame:
    """Detrended experiment rows of ``outcome``: one row per analysed (product_id, date).

    Returns ``product_id``, ``date``, ``treated`` (Int8), ``residual`` (observed minus
    predicted counterfactual, common shocks removed) and ``counterfactual`` (predicted
    untreated outcome) for every non-blackout experiment date with sales, of every product
    with pre-experiment history (products without any are left out with a warning).
    Sorted by product (id order) then date. ``robust`` (the default, as in hpte) gives the
    robust step's residuals: stock-out days and products screened for wild history are not
    in the result, and residuals are winsorised; False gives plain least-squares residuals.
    ``sales`` may be a lazy scan: it is streamed into partitions of products as for hpte, and
    only the experiment rows come back. ``engine`` runs the partition tasks (every core of
    this machine by default).
    """
    engine = default_engine(engine, 0)
    with partition_panel(sales, assignment, [outcome], price_col=None, engine=engine) as panel:
        detrended = detrend_partitions(panel, outcome, robust=robust, engine=engine)
        warn_left_out(panel, detrended.fit, outcome)
        if detrended.audit is not None and detrended.audit.screened.any():
            screened = np.flatnonzero(detrended.audit.screened)
            warnings.warn(
                f"{outcome}: {len(screened)} product(s) have a history too wild for their sales level and are "
                f"left out (robust step), e.g. {panel.product_ids[int(screened[0])]!r}.",
                PricelabWarning,
                stacklevel=2,
            )
        return experiment_rows(panel, detrended, engine)


def experiment_rows(panel, detrended: CatalogDetrend, engine=None) -> pl.DataFrame:
    """The analysed experiment rows of a detrended (partitioned) panel: the table of
    ``detrended_outcomes``. Partition by partition: only experiment rows come back (rows are
    sorted by product and date within a partition, and partitions follow each other in
    product order; the result is sorted by id and date)."""
    tasks = [(h, detrended.for_partition(h)) for h in panel.handles()]
    # Partitions follow the products' hash order; the table is sorted by id and date.
    return pl.concat(default_engine(engine).map(_experiment_rows_task, tasks, stage="experiment rows")).sort(
        "product_id", "date"
    )


def _experiment_rows_task(task) -> pl.DataFrame:
    handle, inputs = task
    part = handle.load()
    rows_k = inputs.residuals(part)
    rows = np.flatnonzero(~part.pre & rows_k.usable)
    return pl.DataFrame(
        {
            "product_id": part.product_ids.gather(part.code[rows]),
            "date": pl.Series(part.dates[part.date_index[rows]].astype(np.int32)).cast(pl.Date),
            "treated": pl.Series(part.treated[rows], dtype=pl.Int8),
            "residual": rows_k.residual[rows],
            "counterfactual": rows_k.counterfactual[rows],
        }
    )
