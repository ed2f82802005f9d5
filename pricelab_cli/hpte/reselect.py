"""The swing screen, taken again in every bootstrap draw.

Which products the robust rule's swing screen drops (``outliers.swing_screen``) depends on
the experiment's own data in two ways the product resample alone does not carry:

- a treated product's swing is ranked as if untreated, divided by the de-treating factor
  ``g``, and ``g`` comes from the same data (``detreat``): a draw with a higher ``g`` lowers
  every treated swing;
- the cut-off is a robust z-score, so it moves with the median and spread of the product's
  arm stratum.

A product whose swing sits near the cut-off is in the estimate on some assignments and out
on others. On a real panel such products are big sellers with large first differences, and
the first effect compounds: an assignment whose treated products happen to sell more raises
``g``, which keeps more of the treated big sellers, which raises the estimate. Holding the
screen's decisions fixed in the draws missed that variance: on the Ta Feng panel, 40
time-bound A/A experiments read after 7 days spread 2.0 times the mean bootstrap SE (1.0
with the screen off); see docs/method.md.

So each draw takes the screen again: the draw's ``g`` (already redrawn by the bootstrap),
each stratum's median and spread moved by their linearised influence (resampled with the
estimate: a median's influence is ``sign(x - median) / (2 f n)``, ``f`` the swings' density at
the median, estimated by the share within a bandwidth; the spread's the same for the
absolute deviations), and each treated swing moved by its slope in ``g``. A product the draw
drops leaves the estimate by its linearised contribution; a product the draw keeps that the
estimate dropped enters with its arm's mean coefficient times its distance from its arm's
coefficient-weighted mean (its leaf in the forest is not known: it was not in the fit).
Products decided by other rules (an arm with no sales at all, no measurable noise) and
infinite swings are not redrawn. Every step is an array operation over (draws x the
products whose decision any draw could change); the loop runs over batches of draws.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pricelab_cli.hpte import robust
from pricelab_cli.hpte.cells import Cells
from pricelab_cli.hpte.outliers import product_mean, swing_scale

# Draws handled at once when the decisions are taken again (draws x candidate products).
DRAW_BATCH = 64


@dataclasses.dataclass(frozen=True, eq=False)
class ScreenState:
    """What the swing screen decided, per product, and what its decisions move with.

    swing : the ranked swing (``outliers.product_swings``).
    stratum : arm stratum (0 control only, 1 treated only, 2 both, -1 no cell).
    keep : the final decision (after the rules that override the screen).
    judged : products whose decision is the screen's alone (redrawn in the draws).
    slope : d swing / d g (non-zero for products with treated rows).
    cutoff : the robust z-score beyond which a product is dropped.
    """

    swing: np.ndarray
    stratum: np.ndarray
    keep: np.ndarray
    judged: np.ndarray
    slope: np.ndarray
    cutoff: float


@dataclasses.dataclass(frozen=True)
class StratumScale:
    """A stratum's centre and spread of swings, and the centre's slope in ``g``."""

    label: int
    centre: float
    spread: float
    centre_slope: float


def swing_slope(cells: Cells, volatility: np.ndarray, factor: float, n_products: int) -> np.ndarray:
    """Per product, the derivative of its swing in the de-treating factor ``g``.

    A treated row's untreated residual is ``y / g - counterfactual`` where the clip leaves it,
    and the clipping bound where it does not, so its slope is ``-y / g^2`` on unclipped rows:
    per cell, minus the observed mean over ``g^2`` plus the clipped rows' share of it (the
    cell's ``detreat_slope``). Control rows do not move."""
    per_cell = np.where(cells.treated == 1, -(cells.observed / factor**2 - cells.detreat_slope), 0.0)
    mean_slope, rows = product_mean(cells, per_cell, n_products)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = mean_slope / swing_scale(volatility, rows)
    return np.nan_to_num(slope, nan=0.0, posinf=0.0, neginf=0.0)


def screen_state(
    swing: np.ndarray,
    stratum: np.ndarray,
    keep: np.ndarray,
    overridden: np.ndarray,
    slope: np.ndarray,
    cutoff: float,
) -> ScreenState:
    """The screen's decisions; ``overridden`` marks products another rule decided."""
    judged = (stratum >= 0) & np.isfinite(swing) & ~overridden
    return ScreenState(swing, stratum, keep, judged, slope, cutoff)


def stratum_influence(state: ScreenState, unit: np.ndarray, n_units: int) -> tuple[list[StratumScale], np.ndarray]:
    """Each judged stratum's centre and spread, and per resampling unit their linearised
    influence (units x 2 columns per stratum: centre, spread)."""
    scales: list[StratumScale] = []
    columns: list[np.ndarray] = []
    finite = (state.stratum >= 0) & np.isfinite(state.swing)
    for label in np.unique(state.stratum[finite]):
        members = np.flatnonzero(finite & (state.stratum == label))
        x = state.swing[members]
        n = len(x)
        centre = float(np.median(x))
        deviation = np.abs(x - centre)
        mad = float(np.median(deviation))
        spread = robust.MAD_TO_SD * mad
        if n < robust.MIN_STRATUM or not spread > 0:
            continue  # the screen keeps everyone in such a stratum: nothing to redraw
        bandwidth = spread * n ** (-0.2)
        density_centre = max(float(np.mean(deviation < bandwidth)) / (2 * bandwidth), 1e-12)
        density_mad = max(float(np.mean(np.abs(deviation - mad) < bandwidth)) / (2 * bandwidth), 1e-12)
        near = deviation < bandwidth
        centre_slope = float(state.slope[members][near].mean()) if near.any() else 0.0
        centre_influence = np.sign(x - centre) / (2 * density_centre * n)
        spread_influence = robust.MAD_TO_SD * np.sign(deviation - mad) / (2 * density_mad * n)
        for influence in (centre_influence, spread_influence):
            columns.append(np.bincount(unit[members], weights=influence, minlength=n_units))
        scales.append(StratumScale(int(label), centre, spread, centre_slope))
    matrix = np.stack(columns, axis=1) if columns else np.zeros((n_units, 0))
    return scales, matrix


@dataclasses.dataclass(frozen=True, eq=False)
class Contributions:
    """Per product, how the estimate and the treated level move when a draw's screen drops
    it (``leave_*``, for products in the estimate) or keeps it (``enter_*`` and
    ``enter_slope``, the entry's slope in ``g``, for products the estimate left out)."""

    leave_estimate: np.ndarray
    leave_level: np.ndarray
    enter_estimate: np.ndarray
    enter_slope: np.ndarray
    enter_level: np.ndarray


def contributions(
    kept_cells: Cells,
    influence: np.ndarray,
    level_influence: np.ndarray,
    coefficient: np.ndarray,
    matched: np.ndarray,
    level: float,
    all_cells: Cells,
    n_products: int,
) -> Contributions:
    """``Contributions`` from the leaf estimator on the kept cells and every cell before the
    screen."""
    leave_estimate = np.bincount(kept_cells.code, weights=influence, minlength=n_products)
    leave_level = np.bincount(kept_cells.code, weights=level_influence, minlength=n_products)
    treated = kept_cells.treated == 1
    arms = []
    for arm in (treated & matched, ~treated & matched):
        weight = coefficient[arm]
        total = weight.sum()
        mean = float(weight @ kept_cells.first_difference[arm] / total) if len(weight) and total else 0.0
        arms.append((float(weight.mean()) if len(weight) else 0.0, mean))
    (coef_t, mean_t), (coef_c, mean_c) = arms
    on = all_cells.treated == 1
    enter = np.where(on, coef_t * (all_cells.first_difference - mean_t), coef_c * (all_cells.first_difference - mean_c))
    slope = np.where(on, coef_t, coef_c) * all_cells.detreat_slope
    n_treated = max(int((treated & matched).sum()), 1)
    enter_level = np.where(on, (all_cells.observed - level) / n_treated, 0.0)
    return Contributions(
        leave_estimate,
        leave_level,
        np.bincount(all_cells.code, weights=enter, minlength=n_products),
        np.bincount(all_cells.code, weights=slope, minlength=n_products),
        np.bincount(all_cells.code, weights=enter_level, minlength=n_products),
    )


def reselection_shifts(
    state: ScreenState,
    scales: list[StratumScale],
    scale_draws: np.ndarray,
    factor_shift: np.ndarray,
    moves: Contributions,
) -> tuple[np.ndarray, np.ndarray]:
    """Per draw, the estimate's and the treated level's change when the screen is taken
    again. ``scale_draws`` (draws x 2 per stratum) are the draws' shifts of each stratum's
    centre and spread; ``factor_shift`` the draws' ``g`` minus the estimate's."""
    n_draws = len(factor_shift)
    estimate_shift = np.zeros(n_draws)
    level_shift = np.zeros(n_draws)
    for k, scale in enumerate(scales):
        centre = scale.centre + scale_draws[:, 2 * k] + scale.centre_slope * factor_shift
        spread = np.maximum(scale.spread + scale_draws[:, 2 * k + 1], 1e-12)
        members = np.flatnonzero(state.judged & (state.stratum == scale.label))
        members = _could_change(state, members, centre, spread, factor_shift)
        if not len(members):
            continue
        swing, slope, kept = state.swing[members], state.slope[members], state.keep[members]
        leave_e, leave_l = moves.leave_estimate[members], moves.leave_level[members]
        enter_e, enter_s, enter_l = (
            moves.enter_estimate[members],
            moves.enter_slope[members],
            moves.enter_level[members],
        )
        for lo in range(0, n_draws, DRAW_BATCH):
            rows = slice(lo, min(n_draws, lo + DRAW_BATCH))
            shift = factor_shift[rows, None]
            z = (swing + slope * shift - centre[rows, None]) / spread[rows, None]
            keep = np.abs(z) <= state.cutoff
            leaves = kept & ~keep
            enters = ~kept & keep
            estimate_shift[rows] += (enters * (enter_e + enter_s * shift)).sum(axis=1) - (leaves * leave_e).sum(axis=1)
            level_shift[rows] += (enters * enter_l).sum(axis=1) - (leaves * leave_l).sum(axis=1)
    return estimate_shift, level_shift


def _could_change(
    state: ScreenState, members: np.ndarray, centre: np.ndarray, spread: np.ndarray, factor_shift: np.ndarray
) -> np.ndarray:
    """The members whose decision some draw could change: their z-score's range over the
    draws (its extremes lie at the corners of the ranges of swing, centre and spread)
    reaches across the cut-off."""
    swing = state.swing[members][:, None] + state.slope[members][:, None] * np.array(
        [factor_shift.min(), factor_shift.max()]
    )
    corners = [
        (swing[:, [i]] - c) / s
        for i in (0, 1)
        for c in (centre.min(), centre.max())
        for s in (spread.min(), spread.max())
    ]
    z = np.concatenate(corners, axis=1)
    low, high = z.min(axis=1), z.max(axis=1)
    reach = np.maximum(np.abs(low), np.abs(high))
    nearest = np.where((low <= 0) & (high >= 0), 0.0, np.minimum(np.abs(low), np.abs(high)))
    kept = state.keep[members]
    return members[np.where(kept, reach > state.cutoff, nearest <= state.cutoff)]
