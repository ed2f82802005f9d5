"""The swing screen taken again in the bootstrap draws (``hpte.reselect``): the strata's
resampled centres and spreads, and what a product that a draw's screen drops or keeps moves."""

from __future__ import annotations

import numpy as np
import pytest

from pricelab_cli.hpte import robust
from pricelab_cli.hpte.reselect import (
    Contributions,
    StratumScale,
    reselection_shifts,
    screen_state,
    stratum_influence,
)


def _state(swing, stratum, keep=None, slope=None):
    swing = np.asarray(swing, dtype=float)
    keep = np.abs(swing) <= robust.SWING_Z if keep is None else np.asarray(keep)
    slope = np.zeros(len(swing)) if slope is None else np.asarray(slope, dtype=float)
    return screen_state(swing, np.asarray(stratum), keep, np.zeros(len(swing), dtype=bool), slope, robust.SWING_Z)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_centre_and_spread_vary_as_a_median_and_a_mad_do(seed):
    """Known truth: for n normal values the median's SE is sqrt(pi / 2) / sqrt(n) and the
    robust spread's (1.4826 MAD) is 1.4826 / (2 sqrt(n) * 2 phi(0.6745)) = 1.166 / sqrt(n);
    the linearised influence gives both within 12% (n = 2,000; the density is estimated)."""
    n = 2000
    x = np.random.default_rng(seed).normal(size=n)
    scales, influence = stratum_influence(_state(x, np.zeros(n, dtype=int)), np.arange(n), n)
    assert len(scales) == 1 and influence.shape == (n, 2)
    se_centre, se_spread = np.sqrt((influence**2).sum(axis=0) * n / (n - 1))
    assert se_centre == pytest.approx(np.sqrt(np.pi / 2) / np.sqrt(n), rel=0.12)
    assert se_spread == pytest.approx(1.166 / np.sqrt(n), rel=0.12)
    assert scales[0].centre == pytest.approx(np.median(x))


def test_a_stratum_too_small_to_judge_is_not_redrawn():
    x = np.array([0.0, 1.0, 50.0])
    scales, influence = stratum_influence(_state(x, np.zeros(3, dtype=int)), np.arange(3), 3)
    assert scales == [] and influence.shape == (3, 0)


def _moves(n, leave=0.0, enter=0.0, enter_slope=0.0):
    return Contributions(
        leave_estimate=np.full(n, leave),
        leave_level=np.zeros(n),
        enter_estimate=np.full(n, enter),
        enter_slope=np.full(n, enter_slope),
        enter_level=np.zeros(n),
    )


def test_a_product_near_the_cutoff_leaves_and_enters_with_the_de_treating_factor():
    """One treated product just inside the cut-off whose swing falls as ``g`` rises: the
    draws with a higher ``g`` keep it, those with a lower one drop it and the estimate loses
    its contribution; products far from the cut-off never move."""
    swing = np.array([4.9, 0.5, -1.0])
    state = _state(swing, [1, 1, 1], slope=[-10.0, 0.0, 0.0])
    scale = [StratumScale(1, 0.0, 1.0, 0.0)]
    factor_shift = np.array([-0.05, -0.005, 0.0, 0.05])
    shift, level = reselection_shifts(state, scale, np.zeros((4, 2)), factor_shift, _moves(3, leave=0.7))
    # swing - 10 * shift: 5.4 (dropped), 4.95, 4.9, 4.4 (kept)
    np.testing.assert_allclose(shift, [-0.7, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(level, 0.0)


def test_a_dropped_product_enters_when_a_draw_widens_the_spread():
    swing = np.array([5.5, 0.0])
    state = _state(swing, [0, 0])
    assert not state.keep[0]
    scale = [StratumScale(0, 0.0, 1.0, 0.0)]
    spread_draws = np.array([[0.0, 0.2], [0.0, 0.0], [0.0, -0.1]])  # spreads 1.2, 1.0, 0.9
    shift, _ = reselection_shifts(state, scale, spread_draws, np.full(3, 0.01), _moves(2, enter=2.0, enter_slope=5.0))
    np.testing.assert_allclose(shift, [2.0 + 5.0 * 0.01, 0.0, 0.0])


def test_products_another_rule_decided_are_not_redrawn():
    swing = np.array([5.1, 0.0])
    state = screen_state(swing, np.array([0, 0]), np.array([True, True]), np.array([True, False]), np.zeros(2), 5.0)
    shift, _ = reselection_shifts(
        state, [StratumScale(0, 0.0, 1.0, 0.0)], np.zeros((2, 2)), np.zeros(2), _moves(2, leave=1.0)
    )
    np.testing.assert_allclose(shift, 0.0)
