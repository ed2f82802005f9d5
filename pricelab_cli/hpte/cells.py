"""Step 1 of hpte, the first difference: per-row residuals reduced to per-cell means.

A cell is (product, arm); its first difference is the mean residual over its experiment
rows (blackout rows are not in the panel).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pricelab_cli.hpte import robust
from pricelab_cli.hpte.baseline import BaselineFit
from pricelab_cli.hpte.panel import Panel
from pricelab_cli.hpte.robust import RobustAudit


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
