"""Step 1 of hpte: predict each product's untreated outcome and take first differences.

Baseline model
--------------
Each product's untreated outcome is fitted on its own pre-experiment rows: a level, a linear
trend and (on daily panels) weekday terms, all products at once
(:mod:`~pricelab_cli.hpte.baseline` has the model and how it is solved).

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

Modules
-------
The baseline model is fitted in :mod:`~pricelab_cli.hpte.baseline`, the cells are formed in
:mod:`~pricelab_cli.hpte.cells` and the robust step's de-treating factor is chosen in
:mod:`~pricelab_cli.hpte.detreat`; this module removes the common shocks and runs the stages,
on one panel or mapped over the partitions of one.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import polars as pl

from pricelab_cli.engine import Engine, default_engine, resolve
from pricelab_cli.errors import PricelabWarning
from pricelab_cli.hpte import panel as panel_layout
from pricelab_cli.hpte import robust

# The pieces of this step in modules of their own, importable from here as before.
from pricelab_cli.hpte.baseline import MIN_PRE_DAILY as MIN_PRE_DAILY
from pricelab_cli.hpte.baseline import MIN_PRE_PERIODS as MIN_PRE_PERIODS
from pricelab_cli.hpte.baseline import MODEL_LEVEL as MODEL_LEVEL
from pricelab_cli.hpte.baseline import MODEL_NAMES as MODEL_NAMES
from pricelab_cli.hpte.baseline import MODEL_NONE as MODEL_NONE
from pricelab_cli.hpte.baseline import MODEL_TREND as MODEL_TREND
from pricelab_cli.hpte.baseline import BaselineFit as BaselineFit
from pricelab_cli.hpte.baseline import Rows, baseline_at, concat_fits, fit_rows
from pricelab_cli.hpte.baseline import fit_baselines as fit_baselines
from pricelab_cli.hpte.cells import Cells as Cells
from pricelab_cli.hpte.cells import Detrended as Detrended
from pricelab_cli.hpte.cells import experiment_level as experiment_level
from pricelab_cli.hpte.cells import first_difference as first_difference
from pricelab_cli.hpte.detreat import DETREAT_PASSES as DETREAT_PASSES
from pricelab_cli.hpte.detreat import DETREAT_RANGE as DETREAT_RANGE
from pricelab_cli.hpte.detreat import DETREAT_TOLERANCE as DETREAT_TOLERANCE
from pricelab_cli.hpte.detreat import DetreatInputs as DetreatInputs
from pricelab_cli.hpte.detreat import _first_pass_difference as _first_pass_difference
from pricelab_cli.hpte.detreat import detreat_inputs as detreat_inputs
from pricelab_cli.hpte.detreat import detreat_of as detreat_of
from pricelab_cli.hpte.panel import Panel, PartitionedPanel, partition_panel
from pricelab_cli.hpte.robust import RobustAudit


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
    if total is None:
        raise ValueError("no block sums to add")
    return total


def shocks_from_sums(sums: np.ndarray) -> np.ndarray:
    """Shock per date: mean residual of control experiment rows, else of history rows, else 0."""
    control_total, control_count, history_total, history_count = sums
    with np.errstate(invalid="ignore", divide="ignore"):
        control_mean, history_mean = control_total / control_count, history_total / history_count
    return np.where(control_count > 0, control_mean, np.where(history_count > 0, history_mean, 0.0))


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
    pre = Rows.of(panel, y, pre_rows)
    pre_code = pre.code
    keep_pre = (~stockout[pre_rows]).astype(np.float64)
    # A history without noise (to rounding) has no scale to judge residuals by: nothing of
    # such a product is reweighted, clipped or screened.
    with np.errstate(invalid="ignore", divide="ignore"):
        typical = np.bincount(pre_code, weights=np.abs(pre.y), minlength=n) / np.bincount(pre_code, minlength=n)
    least_scale = robust.DEGENERATE_SCALE * (np.nan_to_num(typical) + 1.0)
    fit, resid = fit_rows(pre, n, panel.daily, detrend=detrend, weight=keep_pre)
    for iteration in range(robust.HUBER_ITERATIONS + 1):
        known = np.isfinite(resid) & (keep_pre > 0)
        scale = robust.robust_scale(resid[known], pre_code[known], n)
        scale = np.where(scale > least_scale, scale, np.nan)
        if iteration == robust.HUBER_ITERATIONS:
            break
        weight = robust.huber_weights(np.nan_to_num(resid), scale[pre_code]) * keep_pre
        fit, resid = fit_rows(pre, n, panel.daily, detrend=detrend, weight=weight)
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
    residual = y[exp_rows] / scale - baseline_at(panel, fit, exp_rows)
    return np.nan_to_num(robust.grouped_median(residual, panel.code[exp_rows], panel.n_products))


def screen_products(
    fit: BaselineFit, screen_inputs: tuple[np.ndarray, np.ndarray, np.ndarray], screen: bool
) -> tuple[np.ndarray, np.ndarray]:
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
    residual[rows] = y[rows] - baseline_at(panel, part.fit, rows)
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
    baseline[rows] = baseline_at(panel, part.fit, rows)
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
        screen_products(part.fit, part.screen_inputs, screen)
        if robust and part.screen_inputs is not None
        else (None, np.zeros(n, dtype=bool))
    )
    shock = (
        shocks_from_sums(add_block_sums(None, shock_sums(panel, y, part, screened)))
        if remove_shocks
        else np.zeros(len(panel.dates))
    )
    detrended, winsorised = partition_residuals(panel, y, part, screened, shock)
    if vol_z is None:  # without the robust step
        return detrended
    audit = RobustAudit(
        volatility_z=vol_z, screened=screened, n_stockout=_stockout_days(panel, part), n_winsorised=winsorised
    )
    return dataclasses.replace(detrended, audit=audit)


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
    cells: Cells | None  # None once the estimator has taken them (``take_cells``)
    level: np.ndarray
    screened: np.ndarray
    partition_fits: list
    outcome: str
    detreat: float = 1.0
    # The robust step's de-treating factor's inputs on the last pass's cells (None without
    # the robust step, or when the factor could not be formed).
    detreat_inputs: DetreatInputs | None = None

    def take_cells(self) -> tuple[Cells, CatalogDetrend]:
        """The cells, and this detrending without them (the estimator goes on with its own
        filtered copy; the per-product arrays are all it reads here after)."""
        if self.cells is None:
            raise ValueError("the cells were taken already")
        return self.cells, dataclasses.replace(self, cells=None)

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
    fit = concat_fits([small[0] for small, _ in fitted])
    vol_z: np.ndarray | None = None
    screened = np.zeros(len(fit.model), dtype=bool)
    if robust:
        history_level, history_rms, raw_rms = (np.concatenate([small[1][i] for small, _ in fitted]) for i in range(3))
        vol_z, screened = screen_products(fit, (history_level, history_rms, raw_rms), screen)
        del history_level, history_rms, raw_rms
    del fitted
    local = [screened[h.offset : h.offset + len(h.product_ids)] for h in handles]
    shock = _catalog_shocks(engine, handles, refs, local, outcome) if remove_shocks else np.zeros(len(source.dates))
    tasks = [(h, outcome, ref, s, shock, 1.0) for h, ref, s in zip(handles, refs, local)]
    results = engine.map(_cells_task, tasks, stage=f"{outcome}: baselines and first differences")
    cells = Cells.concat([r[0] for r in results])
    detreat = 1.0
    inputs = None
    audit = None
    if vol_z is not None:  # the robust step
        cells, results, detreat, inputs = _detreat_passes(engine, tasks, cells, results, fit.volatility, outcome)
        audit = RobustAudit(
            volatility_z=vol_z,
            screened=screened,
            n_stockout=np.concatenate([r[3] for r in results]),
            n_winsorised=np.concatenate([r[2] for r in results]),
        )
    level = np.concatenate([r[1] for r in results])
    return CatalogDetrend(fit, shock, audit, cells, level, screened, refs, outcome, detreat, inputs)


def _catalog_shocks(engine: Engine, handles: list, refs: list, local: list[np.ndarray], outcome: str) -> np.ndarray:
    """The common shocks of every date, from each partition's per-block sums added in order."""
    sums = None
    # The block size is read here, where the partitions were cut, not in each worker.
    block = panel_layout.SUM_BLOCK
    tasks = [(h, outcome, ref, s, block) for h, ref, s in zip(handles, refs, local)]
    for block_sums in engine.map(_shock_task, tasks, stage=f"{outcome}: trading-day shocks"):
        sums = add_block_sums(sums, block_sums)
    if sums is None:
        raise ValueError("no partition to take the shocks of")
    return shocks_from_sums(sums)


def _detreat_passes(
    engine: Engine, tasks: list[tuple], cells: Cells, results: list, volatility: np.ndarray, outcome: str
) -> tuple[Cells, list, float, DetreatInputs | None]:
    """The robust step's further passes over the partitions: the cells, the last pass's task
    results, the de-treating factor and its inputs.

    Treated rows are clipped on the untreated scale of the previous pass's lift (``1 +
    lift`` held within ``DETREAT_RANGE``), until it settles (each pass gives back most of
    what the clip took from the last). The last cells' inputs stay for the bootstrap, which
    redraws the factor from them.
    """
    detreat = 1.0
    for passes in range(DETREAT_PASSES + 1):
        inputs, difference_influence, level_influence = detreat_inputs(cells, volatility)
        new = 1.0 if inputs is None else inputs.factor()
        if passes == DETREAT_PASSES or abs(new - detreat) < DETREAT_TOLERANCE:
            break
        detreat = new
        results = engine.map(
            _cells_task, [(*task[:5], detreat) for task in tasks], stage=f"{outcome}: de-treated pass {passes + 1}"
        )
        cells = Cells.concat([r[0] for r in results])
    cells = dataclasses.replace(cells, detreat_difference=difference_influence, detreat_level=level_influence)
    return cells, results, detreat, inputs


def warn_left_out(panel: Panel | PartitionedPanel, fit: BaselineFit, outcome: str) -> None:
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
