"""The robust step's de-treating factor is chosen from the data; the bootstrap redraws it.

``detrend.detreat_inputs`` gives each cell's linearised contribution to the factor's two
inputs (the first-pass difference and the treated cells' observed level), and
``partition_residuals`` each row's slope in the factor. These tests check both against
direct recomputation, and that the estimate's draws carry the factor's noise.
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import polars as pl
import pytest

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.hpte import HeterogeneousPanelEffect
from pricelab_cli.hpte import detreat as detreat_module
from pricelab_cli.hpte import detrend as detrend_module
from pricelab_cli.hpte.detrend import (
    Cells,
    _first_pass_difference,
    detreat_inputs,
    detreat_of,
    fit_partition,
    partition_residuals,
)
from pricelab_cli.hpte.panel import build_panel
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2024, 6, 3)


def _cells(n_products: int, both: bool, seed: int = 0) -> Cells:
    """Cells of ``n_products`` products: each with a treated and a control cell (``both``),
    or half treated-only and half control-only."""
    rng = np.random.default_rng(seed)
    if both:
        code = np.repeat(np.arange(n_products), 2)
        treated = np.tile([0, 1], n_products).astype(np.int8)
    else:
        code = np.arange(n_products)
        treated = (np.arange(n_products) % 2).astype(np.int8)
    n = len(code)
    fd = rng.standard_t(3, n) + 0.4 * treated
    zeros = np.zeros(n)
    return Cells(
        code,
        treated,
        fd,
        rng.uniform(5, 20, n),
        np.full(n, 14),
        fd,
        np.zeros(n, dtype=bool),
        rng.uniform(5, 25, n),
        zeros,
        zeros,
        zeros,
    )


@pytest.mark.parametrize("both", [True, False])
def test_first_pass_influence_moves_the_difference_exactly_as_a_resample_does(both):
    """Taking product ``j`` ``w_j`` times moves the (paired or between-arm) difference by
    ``sum_j (w_j - 1) psi_j`` exactly when the arms' sizes are kept, as the bootstrap keeps them."""
    cells = _cells(40, both)
    everyone = np.ones(len(cells.code), dtype=bool)
    treated, control = everyone & (cells.treated == 1), everyone & (cells.treated == 0)
    difference, influence, _ = _first_pass_difference(cells, treated, control)
    rng = np.random.default_rng(1)
    products = np.unique(cells.code)
    for _ in range(5):
        # A resample that keeps each stratum's size (switchback products form one stratum;
        # otherwise the treated-only and control-only products are resampled apart).
        weight = np.zeros(len(products))
        strata = [products] if both else [products[products % 2 == 1], products[products % 2 == 0]]
        for members in strata:
            np.add.at(weight, rng.choice(members, len(members)), 1.0)
        per_cell = weight[cells.code]
        if both:
            paired = cells.first_difference[cells.treated == 1] - cells.first_difference[cells.treated == 0]
            direct = float(np.sum(weight * paired) / weight.sum())
        else:
            t, c = cells.treated == 1, cells.treated == 0
            direct = float(
                np.sum(per_cell[t] * cells.first_difference[t]) / per_cell[t].sum()
                - np.sum(per_cell[c] * cells.first_difference[c]) / per_cell[c].sum()
            )
        linear = difference + float(np.sum((per_cell - 1.0) * influence))
        assert linear == pytest.approx(direct, abs=1e-12)


@pytest.mark.parametrize("both", [True, False])
def test_weighted_influence_is_the_derivative_of_the_weighted_difference(both):
    """With precision weights the difference is a ratio in the resample counts: its influence
    is the derivative, so a small reweighting moves it by the influence to first order."""
    cells = _cells(60, both, seed=3)
    weight = np.random.default_rng(4).uniform(0.1, 5.0, len(cells.code))
    everyone = np.ones(len(cells.code), dtype=bool)
    treated, control = everyone & (cells.treated == 1), everyone & (cells.treated == 0)
    difference, influence, level_weight = _first_pass_difference(cells, treated, control, weight)

    def direct(counts: np.ndarray) -> float:
        w = counts[cells.code] * weight
        if both:
            t, c = cells.treated == 1, cells.treated == 0
            pair = 1.0 / (1.0 / weight[t] + 1.0 / weight[c]) * counts[cells.code[t]]
            paired = cells.first_difference[t] - cells.first_difference[c]
            return float(pair @ paired / pair.sum())
        t, c = cells.treated == 1, cells.treated == 0
        return float(w[t] @ cells.first_difference[t] / w[t].sum() - w[c] @ cells.first_difference[c] / w[c].sum())

    assert direct(np.ones(60)) == pytest.approx(difference, abs=1e-12)
    step = np.random.default_rng(5).standard_normal(60)
    for eps in (1e-3, 1e-4):
        moved = direct(1.0 + eps * step) - difference
        linear = float(np.sum(eps * step[cells.code] * influence))
        assert abs(moved - linear) <= 50 * eps**2
    # The level is carried by the treated cells (the paired ones' weights in a switchback).
    assert np.all(level_weight[cells.treated == 0] == 0) and np.all(level_weight[cells.treated == 1] > 0)


def test_noisy_products_weigh_less_in_the_factor(monkeypatch):
    """A common lift with heteroskedastic noise: the precision-weighted factor (weights
    ``n * level / volatility^2``) is closer to the truth than the plain one on the same calm
    cells (RMSE under half over 60 catalogs), and reads the lift without bias (mean error
    within 3 Monte Carlo SEs)."""
    errors = {"weighted": [], "plain": []}
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n = 400
        code = np.arange(n)
        treated = (np.arange(n) % 2).astype(np.int8)
        level = rng.uniform(2, 20, n)
        volatility = np.where(rng.random(n) < 0.2, 20.0, 1.0) * np.sqrt(level)
        rows = np.full(n, 7)
        fd = 0.10 * level * treated + rng.standard_normal(n) * volatility / np.sqrt(rows)
        zeros = np.zeros(n)
        cells = Cells(code, treated, fd, level, rows, fd - 0.10 * level * treated, np.zeros(n, dtype=bool),
                      level * (1 + 0.10 * treated) + fd - 0.10 * level * treated, zeros, zeros, zeros)  # fmt: skip
        weighted, _, _ = detreat_inputs(cells, volatility)
        with monkeypatch.context() as patch:  # the same calm cells, weighed alike
            patch.setattr(detreat_module, "_precision", lambda cells, volatility: np.ones(len(cells.code)))
            plain, _, _ = detreat_inputs(cells, volatility)
        errors["weighted"].append(weighted.factor() - 1.10)
        errors["plain"].append(plain.factor() - 1.10)
    weighted, plain = np.array(errors["weighted"]), np.array(errors["plain"])
    assert np.sqrt(np.mean(weighted**2)) < 0.5 * np.sqrt(np.mean(plain**2))
    assert abs(weighted.mean()) < 3 * weighted.std(ddof=1) / np.sqrt(len(weighted))


def test_the_factor_of_the_inputs_is_the_factor_and_draws_are_mapped_alike():
    cells = _cells(300, True, seed=2)
    volatility = np.ones(300)
    inputs, difference_influence, level_influence = detreat_inputs(cells, volatility)
    assert inputs is not None
    assert inputs.factor() == pytest.approx(1.0 + inputs.difference / (inputs.level - inputs.difference), abs=1e-15)
    assert difference_influence.sum() == pytest.approx(0.0, abs=1e-12)
    assert level_influence.sum() == pytest.approx(0.0, abs=1e-12)
    # Vectorised over draws: each element as the scalar rule would give it.
    differences = np.array([inputs.difference, 0.0, -1.0, 50.0, 1e6])
    levels = np.array([inputs.level, inputs.level, inputs.level, 10.0, 1e6 + 1.0])
    factors = detreat_of(differences, levels)
    assert factors[0] == inputs.factor()
    assert factors[1] == 1.0  # no difference: no factor
    assert factors[2] == pytest.approx(1.0 - 1.0 / (inputs.level + 1.0))
    assert factors[3] == 1.0  # level less the difference below 0: undefined
    assert factors[4] == detrend_module.DETREAT_RANGE[1]  # held within its range


def _spiky_switchback(seed: int = 0):
    products, _ = simulate_catalog(120, 4, 5, seed=seed)
    design = make_design("random-days", salt=f"d{seed}", start=START, end=START + dt.timedelta(days=27))
    assignment = assign(design, products)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = simulate_sales(products, assignment=assignment, history_days=70, seed=seed, price_change=0.0)
    sales = sim.sales
    # Bulk orders: on a few experiment days, forty times a product's level, so the clip cuts them.
    rng = np.random.default_rng(seed)
    bulk = (pl.col("date") >= START) & pl.Series(rng.random(sales.height) < 0.02)
    sales = sales.with_columns(units=pl.when(bulk).then(pl.col("units") * 40 + 200).otherwise(pl.col("units")))
    sales = sales.join(assignment.select("product_id", "date", "treated"), on=["product_id", "date"], how="left")
    sales = sales.with_columns(
        units=pl.when(pl.col("treated") == 1).then(pl.col("units") * 1.2).otherwise(pl.col("units"))
    ).drop("treated")
    return products, assignment, sales


def test_row_slope_is_the_residuals_derivative_in_the_factor(monkeypatch):
    """With the clipping band's centre held where it is, a row's residual moves with the
    factor at exactly its slope: ``y / g^2`` on a clipped treated row, 0 on every other."""
    _, assignment, sales = _spiky_switchback()
    panel = build_panel(sales, assignment, ["units"], price_col=None)
    y = panel.outcomes["units"]
    part = fit_partition(panel, y, robust_step=True)
    centre = detrend_module.experiment_centre(panel, y, part.fit, part.stockout, 1.2)
    monkeypatch.setattr(detrend_module, "experiment_centre", lambda *args: centre)
    screened = np.zeros(panel.n_products, dtype=bool)
    shock = np.zeros(len(panel.dates))
    g, step = 1.2, 1e-6
    at, cut = partition_residuals(panel, y, part, screened, shock, g)
    moved, _ = partition_residuals(panel, y, part, screened, shock, g + step)
    rows = np.flatnonzero(at.usable)
    numeric = (moved.residual[rows] - at.residual[rows]) / step
    assert np.count_nonzero(at.detreat_slope[rows]) >= 20 and cut.sum() >= 20
    assert np.allclose(numeric, at.detreat_slope[rows], rtol=1e-4, atol=1e-6)


def test_the_estimates_draws_carry_the_factors_noise():
    """On a switchback with bulk orders and a 20% lift, the robust default's bootstrap moves
    each draw by the estimate's slope in the factor times the factor's redrawn change: its SE
    is larger than with the factor held fixed, by the share the factor's noise adds."""
    products, assignment, sales = _spiky_switchback(seed=3)
    kwargs = dict(n_bootstrap=400, random_state=0, n_estimators=5, n_jobs=1, effect_path=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        drawn = HeterogeneousPanelEffect(**kwargs).fit(sales, assignment)
        fixed = HeterogeneousPanelEffect(**kwargs)
        fixed._detreat_sensitivity = lambda *args: None
        fixed.fit(sales, assignment)
    assert drawn.estimate_ == fixed.estimate_
    assert drawn.se_ > 1.1 * fixed.se_
    # The added spread is the factor's: the draws differ by a multiple of the factor's change.
    shift = drawn.bootstrap_draws_ - fixed.bootstrap_draws_
    assert np.std(shift) > 0 and np.corrcoef(shift, fixed.bootstrap_draws_)[0, 1] > 0


def test_the_leaf_estimate_is_its_coefficients_times_the_first_differences():
    """For fixed leaves the leaf second difference is linear in the cells' first
    differences: ``coefficient @ y`` gives it for any ``y`` (how the estimate's slope in the
    factor is read off without another pass over the trees)."""
    from pricelab_cli.hpte.forest import leaf_second_difference

    rng = np.random.default_rng(4)
    n, trees = 300, 6
    leaves = rng.integers(0, 7, (n, trees))
    treated = rng.integers(0, 2, n)
    weight = np.full(n, 0.5)
    y, other = rng.normal(size=n), rng.exponential(size=n)
    fitted = leaf_second_difference(leaves, treated, y, weight)
    assert fitted.coefficient @ y == pytest.approx(fitted.estimate, abs=1e-12)
    assert fitted.coefficient @ other == pytest.approx(
        leaf_second_difference(leaves, treated, other, weight).estimate, abs=1e-12
    )
