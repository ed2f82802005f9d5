"""The robust step's de-treating factor: how much the treated rows are scaled down before
their residuals are clipped (``1 + lift``, from the calm cells' first differences)."""

from __future__ import annotations

import dataclasses

import numpy as np

from pricelab_cli.hpte import robust
from pricelab_cli.hpte.cells import Cells

# The de-treating factor of the robust step's second pass stays within this range.
DETREAT_RANGE = (0.5, 2.0)
# At most this many passes after the first, stopping when the factor moves less than this.
DETREAT_PASSES = 4
DETREAT_TOLERANCE = 1e-3


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
    observed mean less that difference (in a switchback, the paired products' treated cells),
    on the cells the estimate would keep: not those
    whose swing is more than ``SWING_Z`` robust z-scores from its arm's (one wild product
    would otherwise set the clipping of every treated row). Both means weigh each cell by its
    precision (``_precision``): the ratio is then the least-squares common lift when a
    product's noise grows faster than its level, as it does where bulk buyers come and go;
    weighing the cells alike let a few such products set the factor, and on Ta Feng's
    time-bound A/A experiments read after 7 days it ranged from 0.53 to the clip at 2.0. It is
    not shrunk towards 0: shrinking by ``max(0, 1 - 1/t^2)`` (``t`` its ratio to its SE) read
    +10% on Ta Feng's time-bound experiments at 0.88 of the truth (0.97 unshrunk), because a
    clipped treated row keeps only ``1 - 1/g`` of itself as effect. Its noise is the
    estimate's instead: the bootstrap redraws the factor from these inputs
    (``HeterogeneousPanelEffect._bootstrap``). None (factor 1) with fewer than two calm cells
    in an arm.
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
    difference, difference_influence, level_weight = _first_pass_difference(
        cells, treated, control, _precision(cells, volatility)
    )
    carried = level_weight > 0
    w = level_weight[carried] / level_weight.sum()
    observed = cells.observed[carried]
    level = float(w @ observed)
    level_influence[carried] = w * (observed - level)
    return DetreatInputs(difference, level), difference_influence, level_influence


def _precision(cells: Cells, volatility: np.ndarray) -> np.ndarray:
    """Each cell's weight in the factor: its untreated level (the mean counterfactual) over
    the variance of its mean residual, ``n_rows * level / volatility^2``. With first
    differences ``lift * level + noise`` these are the weights of the least-squares lift
    (``sum(w * difference) / sum(w * level)``). 0 where the level is not positive or the
    history has no scale (``volatility`` NaN)."""
    vol = volatility[cells.code]
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = cells.n_rows * cells.counterfactual / vol**2
    return np.where(np.isfinite(weight) & (weight > 0), weight, 0.0)


def _first_pass_difference(
    cells: Cells, treated: np.ndarray, control: np.ndarray, weight: np.ndarray | None = None
) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted treated minus control mean first difference, each cell's linearised
    contribution to it, and each cell's weight in the treated level (0 on cells that carry
    none): within products (each product's treated minus control cell, carried by the
    treated cell, weighted by the pair's precision) when most products have both arms
    (switchback designs), else between the arms' cells. ``weight`` is each cell's
    (``_precision``); None or no positive weight in an arm weighs the cells alike."""
    n_cells = len(cells.code)
    weight = np.ones(n_cells) if weight is None else np.asarray(weight, dtype=np.float64)
    n = int(cells.code.max()) + 1 if n_cells else 0
    influence = np.zeros(n_cells)
    level_weight = np.zeros(n_cells)
    fd_t, fd_c, w_t, w_c = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n), np.zeros(n)
    fd_t[cells.code[treated]] = cells.first_difference[treated]
    fd_c[cells.code[control]] = cells.first_difference[control]
    w_t[cells.code[treated]] = weight[treated]
    w_c[cells.code[control]] = weight[control]
    both = np.isfinite(fd_t) & np.isfinite(fd_c)
    single = np.isfinite(fd_t) ^ np.isfinite(fd_c)
    if both.sum() >= 2 and both.sum() >= single.sum():
        # A pair's mean difference has the variance of both cells' means: its weight is
        # the harmonic sum of theirs.
        with np.errstate(invalid="ignore", divide="ignore"):
            pair = np.where(both, 1.0 / (1.0 / w_t + 1.0 / w_c), 0.0)
        pair = _alike_without_weight(np.nan_to_num(pair, nan=0.0, posinf=0.0), both)
        paired = np.where(both, fd_t - fd_c, 0.0)
        mean = float(pair @ paired / pair.sum())
        carrier = treated & both[cells.code]
        code = cells.code[carrier]
        influence[carrier] = pair[code] * (paired[code] - mean) / pair.sum()
        level_weight[carrier] = pair[code]
        return mean, influence, level_weight
    wt, wc = _alike_without_weight(weight[treated]), _alike_without_weight(weight[control])
    a, b = cells.first_difference[treated], cells.first_difference[control]
    ma, mb = float(wt @ a / wt.sum()), float(wc @ b / wc.sum())
    influence[treated] = wt * (a - ma) / wt.sum()
    influence[control] = -wc * (b - mb) / wc.sum()
    level_weight[treated] = wt
    return ma - mb, influence, level_weight


def _alike_without_weight(weight: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
    """``weight``, or 1 on every member (every entry by default) where no member has a
    positive weight."""
    members = np.ones(len(weight), dtype=bool) if members is None else members
    if (weight[members] > 0).any():
        return weight
    return members.astype(np.float64)
