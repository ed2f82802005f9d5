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
