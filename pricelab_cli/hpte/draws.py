"""Step 4 of hpte before and after its draws: what the bootstrap resamples for one estimate
(every unit's influence on each statistic, its arm stratum) and how a draw of them becomes
the estimate's and the lift's draws. ``HeterogeneousPanelEffect`` draws one plan;
``pricelab monitor``'s replay (:mod:`pricelab_cli.hpte.replay`) draws every night's plan
from one set of resamples.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pricelab_cli.hpte.bootstrap import summarise_draws
from pricelab_cli.hpte.cells import Cells
from pricelab_cli.hpte.detreat import detreat_of
from pricelab_cli.hpte.panel import Panel, PartitionedPanel
from pricelab_cli.hpte.reselect import (
    Contributions,
    ScreenState,
    contributions,
    reselection_shifts,
    stratum_influence,
)


@dataclasses.dataclass(frozen=True, eq=False)
class DrawSummary:
    """The estimate's bootstrap (SE, percentile interval, p-value, draws) and the lift with
    its interval."""

    se: float
    ci_low: float
    ci_high: float
    p_value: float
    draws: np.ndarray
    lift: float
    lift_low: float
    lift_high: float

    def columns(self) -> dict[str, float]:
        """The effects table's columns these fill (``se`` to ``lift_high``)."""
        names = ("se", "ci_low", "ci_high", "p_value", "lift", "lift_low", "lift_high")
        return {name: getattr(self, name) for name in names}


@dataclasses.dataclass(frozen=True, eq=False)
class DrawPlan:
    """One estimate's bootstrap before its draws: the statistics' values and every unit's
    influence on them (units x statistics, the estimate first and the treated cells' observed
    mean second), each unit's arm stratum (1 treated, 2 control, 3 both, 0 neither), and
    what turns a draw of them into the estimate's (``finish``).

    With the de-treating factor's inputs (``detreat``: the inputs and the estimate's slope in
    the factor), a draw redraws the factor and moves the estimate by its slope; with the
    swing screen's state, a draw takes the screen again (:mod:`pricelab_cli.hpte.reselect`).
    """

    estimates: np.ndarray
    influence: np.ndarray
    stratum: np.ndarray
    n_statistics: int
    estimate: float
    observed: float
    detreat: tuple | None
    screen: ScreenState | None
    scales: list
    moves: Contributions | None

    @property
    def present(self) -> np.ndarray:
        """The units with a matched cell: the ones resampled."""
        return self.stratum > 0

    @property
    def arm_units(self) -> dict[str, int]:
        return {"treated": int(((self.stratum & 1) > 0).sum()), "control": int(((self.stratum & 2) > 0).sum())}

    def finish(self, draws: np.ndarray) -> DrawSummary:
        """The estimate's and the lift's bootstrap from the draws of ``estimates``."""
        draws = np.array(draws, dtype=np.float64)
        factor_shift = np.zeros(len(draws))
        if self.detreat is not None and len(draws):
            inputs, slope = self.detreat
            factor_shift = detreat_of(draws[:, 2], draws[:, 3]) - inputs.factor()
            draws[:, 0] += slope * factor_shift
        if self.moves is not None and self.screen is not None and len(draws):
            shift, level_shift = reselection_shifts(
                self.screen, self.scales, draws[:, self.n_statistics :], factor_shift, self.moves
            )
            draws[:, 0] += shift
            draws[:, 1] += level_shift
        boot = summarise_draws(draws[:, 0])
        level = self.observed - self.estimate
        lift = self.estimate / level if level > 0 else float("nan")
        lift_low = lift_high = float("nan")
        if len(draws) and level > 0:
            levels = draws[:, 1] - draws[:, 0]
            if (levels > 0).all():
                lift_low, lift_high = (float(v) for v in np.quantile(draws[:, 0] / levels, [0.025, 0.975]))
        return DrawSummary(boot.se, boot.ci_low, boot.ci_high, boot.p_value, boot.draws, lift, lift_low, lift_high)


def draw_plan(
    panel: Panel | PartitionedPanel,
    cells: Cells,
    leaf,
    detreat=None,
    screen: tuple[ScreenState, Cells] | None = None,
) -> DrawPlan:
    """What the bootstrap resamples (every unit's influence on each statistic, its arm
    stratum) and how a draw of them becomes the estimate's and the lift's draws."""
    unit_of_cell = panel.unit[cells.code]
    n_units = int(panel.unit.max()) + 1
    observed, observed_influence = treated_observed(cells, leaf)
    columns = [leaf.influence, observed_influence]
    estimates = [leaf.estimate, observed]
    if detreat is not None:
        columns += [cells.detreat_difference, cells.detreat_level]
        estimates += [detreat[0].difference, detreat[0].level]
    influence = np.stack([np.bincount(unit_of_cell, weights=w, minlength=n_units) for w in columns], axis=1)
    n_statistics = influence.shape[1]
    scales: list = []
    if screen is not None:
        scales, scale_influence = stratum_influence(screen[0], panel.unit, n_units)
        influence = np.concatenate([influence, scale_influence], axis=1)
        estimates += [0.0] * scale_influence.shape[1]
    has_t = np.bincount(unit_of_cell, weights=cells.treated * leaf.matched, minlength=n_units) > 0
    has_c = np.bincount(unit_of_cell, weights=(1 - cells.treated) * leaf.matched, minlength=n_units) > 0
    moves = None
    if screen is not None and scales:
        moves = contributions(
            cells,
            leaf.influence,
            observed_influence,
            leaf.coefficient,
            leaf.matched,
            observed,
            screen[1],
            panel.n_products,
        )
    return DrawPlan(
        np.array(estimates),
        influence,
        has_t.astype(np.int8) + 2 * has_c.astype(np.int8),
        n_statistics,
        leaf.estimate,
        observed,
        detreat,
        screen[0] if screen is not None else None,
        scales,
        moves,
    )


def treated_observed(cells: Cells, leaf) -> tuple[float, np.ndarray]:
    """The treated cells' mean observed outcome in the estimate, and each cell's linearised
    contribution to it. Less the estimate, it is the lift's denominator: what the treated
    cells would have sold untreated, with their bulk orders and zeros as they came (hpte's
    own prediction sits below the mean of a right-skewed product, and after a multiplicative
    effect the observed mean less the effect is the untreated mean exactly)."""
    treated = (cells.treated == 1) & leaf.matched
    influence = np.zeros(len(cells.code))
    n_treated = int(treated.sum())
    if not n_treated:
        return float("nan"), influence
    value = cells.observed[treated]
    level = float(value.mean())
    influence[treated] = (value - level) / n_treated
    return level, influence
