"""power --recommend's grid: its designs, its screen estimator against known truth, its choice."""

import datetime as dt
import warnings

import numpy as np
import polars as pl
import pytest

from pricelab_cli import recommend as rc
from pricelab_cli.design import make_design
from pricelab_cli.errors import UsageError
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2026, 3, 2)
TEMPLATE = make_design("random-days", salt="t", start=START, end=START + dt.timedelta(days=27))


def test_the_grid_holds_every_kind_block_and_blackout_that_can_run():
    grid = rc.candidate_designs(TEMPLATE, rc.GRID_BLOCKS, 3)
    labels = [c.label for c in grid]
    assert labels[0] == "time-bound" and len(labels) == len(set(labels))
    assert {c.design.kind for c in grid} == set(rc.GRID_KINDS)
    for c in grid:
        assert c.design.start == START and c.design.n_days <= 28
        if c.design.kind in ("crossover", "balanced-switchback"):
            assert c.blackout_days < c.block_days and c.blackout_days <= 3
        if c.design.kind == "crossover":
            assert c.design.phases == 28 // c.block_days >= 2
    assert "balanced-switchback 14d blackout 3d" in labels and "random-days 1d" in labels
    assert "crossover 1d blackout 1d" not in labels, "a blackout must be shorter than the block"
    assert rc.default_max_blackout([0, 1, 3]) == 6


def flat_screen(levels: np.ndarray, days: int = 28) -> rc.Screen:
    n = len(levels)
    ids = pl.Series("product_id", [f"p{i}" for i in range(n)])
    outcome = np.repeat(levels[:, None], days, axis=1).astype(float)
    end = START + dt.timedelta(days=days - 1)
    return rc.Screen(ids, end, outcome, np.zeros((n, days)), np.ones((n, days), bool), np.zeros((n, 3)))


def test_without_noise_the_screen_reads_the_effect_exactly_and_carryover_biases_switchbacks():
    """No residual noise: every design's estimate is the truth (the roll-out effect per
    product per day) when nothing carries over; with a 3-day carryover, a daily switchback's
    control days hold some of the effect and it reads low, while a time-bound design (no
    switch) is untouched."""
    rng = np.random.default_rng(0)
    screen = flat_screen(np.full(400, 20.0))
    products = pl.DataFrame({"product_id": screen.ids})
    unit = np.arange(400)
    for kind in ("time-bound", "random-days", "balanced-switchback"):
        design = make_design(kind, salt=f"s{rng.integers(1e9)}", start=START, end=START + dt.timedelta(days=27))
        from pricelab_cli.assign import plan_assignment

        treated, blackout = plan_assignment(design, products).matrices()
        clean = rc.screen_estimate(screen, treated, ~blackout, unit, 0.05, 0.0)
        assert clean["truth"] == pytest.approx(1.0)
        assert clean["estimate"] == pytest.approx(1.0, abs=1e-9)
        lingering = rc.screen_estimate(screen, treated, ~blackout, unit, 0.05, 3.0)
        if kind == "time-bound":
            assert lingering["estimate"] == pytest.approx(1.0, abs=1e-9)
        else:
            assert lingering["estimate"] < 0.7, "daily switches leave the effect on about half the control days"


@pytest.fixture(scope="module")
def catalog():
    products, _ = simulate_catalog(300, 5, 5, seed=3)
    sales = simulate_sales(products, history_days=84, seed=4, start=dt.date(2024, 1, 1), end=dt.date(2024, 3, 24)).sales
    return products, rc.detrend_history(sales, products, "units", 28)


def test_the_screens_intervals_are_calibrated_without_carryover(catalog):
    """200 repetitions of three designs on a simulated history, no carryover: the analytic
    (linearised-bootstrap) SE matches the spread of the estimates within 15%, the bias is
    within three Monte Carlo errors of 0, and the 95% intervals cover in 0.90-0.99."""
    products, screen = catalog
    picked = [
        c
        for c in rc.candidate_designs(TEMPLATE, rc.GRID_BLOCKS, 2)
        if c.label in ("time-bound", "random-days 1d", "balanced-switchback 7d blackout 2d")
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reps = rc.grid_study(screen, products, picked, [0.0], reps=200, seed=11)
    for index, candidate in enumerate(picked):
        rows = reps.filter(pl.col("candidate") == index)
        error = (rows["estimate"] - rows["truth"]).to_numpy()
        spread, mean_se = error.std(ddof=1), rows["se"].mean()
        covered = ((rows["ci_low"] <= rows["truth"]) & (rows["truth"] <= rows["ci_high"])).mean()
        print(
            f"\n{candidate.label}: spread {spread:.3f}, mean SE {mean_se:.3f}, bias {error.mean():+.3f}, cov {covered}"
        )
        assert 0.85 <= mean_se / spread <= 1.15, candidate.label
        assert abs(error.mean()) <= 3 * spread / np.sqrt(len(error)), candidate.label
        assert 0.90 <= covered <= 0.99, candidate.label


def synthetic_repetitions(spec: dict[int, tuple[float, float]], reps: int = 400) -> pl.DataFrame:
    """Repetitions of candidates with a given (carryover bias, spread) at carryover 3, and the
    same draws without the bias at carryover 0."""
    rng = np.random.default_rng(5)
    rows = []
    for candidate, (bias, spread) in spec.items():
        noise = rng.normal(0, spread, reps)
        noise = (noise - noise.mean()) / noise.std(ddof=1) * spread
        for days, shift in ((0.0, 0.0), (3.0, bias)):
            est = 1.0 + noise + shift
            rows.append(
                pl.DataFrame(
                    {
                        "candidate": candidate,
                        "carryover_days": days,
                        "rep": np.arange(reps),
                        "estimate": est,
                        "se": spread,
                        "ci_low": est - 1.96 * spread,
                        "ci_high": est + 1.96 * spread,
                        "p_value": 0.01,
                        "truth": 1.0,
                        "baseline": 20.0,
                    }
                )
            )
    return pl.concat(rows)


def test_the_choice_is_the_smallest_worst_rmse_among_designs_with_honest_intervals():
    candidates = rc.candidate_designs(TEMPLATE, (7,), 1)[:3]
    # 0: biased (0.56 SE) but the smallest RMSE; 1: honest, a little worse; 2: honest, worst.
    grid = rc.summarise_grid(
        synthetic_repetitions({0: (-0.05, 0.09), 1: (-0.02, 0.105), 2: (0.0, 0.2)}), candidates, [0.0, 3.0]
    )
    at3 = grid.filter(pl.col("carryover_days") == 3.0).sort("rmse")
    assert at3["design"][0] == candidates[0].label
    assert grid.filter(pl.col("recommended"))["design"].unique().to_list() == [candidates[1].label]
    # The control-variate bias is the planted one exactly, and 0 without carryover.
    assert at3.filter(pl.col("design") == candidates[0].label)["bias"][0] == pytest.approx(-0.05)
    assert (grid.filter(pl.col("carryover_days") == 0.0)["bias"] == 0).all()
    # With no honest design the plain minimax choice stands.
    biased = rc.summarise_grid(synthetic_repetitions({0: (-0.06, 0.1), 1: (-0.09, 0.1)}), candidates[:2])
    assert biased.filter(pl.col("recommended"))["design"].unique().to_list() == [candidates[0].label]
    text = rc.explain(grid)
    assert candidates[1].label in text and "0 or 3 days" in text


def test_lists_of_days_are_read_or_refused_by_name():
    assert rc.parse_carryover("3, 0,1,1") == [0.0, 1.0, 3.0]
    assert rc.parse_blocks("14,1,7") == [1, 7, 14]
    with pytest.raises(UsageError, match="'x' is not a number"):
        rc.parse_carryover("0,x")
    with pytest.raises(UsageError, match="'-1' must be 0 or more"):
        rc.parse_carryover("-1")
    with pytest.raises(UsageError, match="'0' is not a whole number of days"):
        rc.parse_blocks("0,7")
