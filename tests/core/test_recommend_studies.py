"""power --recommend against an oracle (slow; run in CI by ``make test-full``).

One simulated catalog (2,000 products, 84 days of history, a 28-day window). The oracle is
the whole grid (60 designs: blackouts up to 14 days) run with 1,000 repetitions under
carryovers of 1, 3 and 7 days. A user who states the carryover K (``--carryover-days K``)
searches the grid with blackouts up to 2K, 30 repetitions, with five different seeds; each
recommendation is then read in the oracle:

- its RMSE is within 10% of the oracle's best design of that grid;
- at 3 and 7 days, it is at least 30% below plain random days (1-day blocks, no blackout);
- its carryover bias is at most 0.25 of its SE (the bias against the same repetitions
  without carryover, as the grid measures it, which 1,000 repetitions know to 0.01 SE).

The figures are printed (``pytest -s``) and are in docs/method.md.
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import polars as pl
import pytest

from pricelab_cli import recommend as rc
from pricelab_cli.design import make_design
from pricelab_cli.simulate import simulate_catalog, simulate_sales

pytestmark = pytest.mark.slow

SCENARIOS = (1.0, 3.0, 7.0)
SEEDS = range(5)


@pytest.fixture(scope="module")
def study():
    products, _ = simulate_catalog(2000, 5, 5, seed=1)
    history = simulate_sales(
        products, history_days=84, seed=2, start=dt.date(2024, 1, 1), end=dt.date(2024, 3, 24)
    ).sales
    screen = rc.detrend_history(history, products, "units", 28)
    template = make_design("random-days", salt="x", start=dt.date(2026, 3, 2), end=dt.date(2026, 3, 29))
    candidates = rc.candidate_designs(template, rc.GRID_BLOCKS, rc.default_max_blackout(SCENARIOS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = rc.grid_study(screen, products, candidates, SCENARIOS, reps=1000, seed=1000, n_jobs=0)
        searches = {
            seed: rc.grid_study(screen, products, candidates, SCENARIOS, reps=30, seed=seed, n_jobs=0) for seed in SEEDS
        }
    return candidates, rc.summarise_grid(oracle, candidates), searches


def _user_grid(candidates, days):
    """The candidates a user stating ``days`` searches (blackouts up to twice it)."""
    return [i for i, c in enumerate(candidates) if c.blackout_days <= rc.default_max_blackout([days])]


def _recommend(repetitions, candidates, keep, days) -> str:
    sub = [candidates[i] for i in keep]
    renumber = {old: new for new, old in enumerate(keep)}
    rows = repetitions.filter(pl.col("candidate").is_in(keep)).with_columns(
        pl.col("candidate").replace_strict(renumber)
    )
    grid = rc.summarise_grid(rows, sub, [days])
    return grid.filter(pl.col("recommended"))["design"][0]


@pytest.mark.parametrize("days", SCENARIOS)
def test_the_recommendation_is_near_the_oracle_and_far_ahead_of_random_days(study, days):
    candidates, oracle, searches = study
    keep = _user_grid(candidates, days)
    labels = [candidates[i].label for i in keep]
    truth = oracle.filter((pl.col("carryover_days") == days) & pl.col("design").is_in(labels))
    best = truth.sort("rmse_raw").row(0, named=True)
    plain = truth.filter(pl.col("design") == "random-days 1d").row(0, named=True)
    for seed, repetitions in searches.items():
        chosen = truth.filter(pl.col("design") == _recommend(repetitions, candidates, keep, days)).row(0, named=True)
        to_best = chosen["rmse_raw"] / best["rmse_raw"]
        to_plain = chosen["rmse_raw"] / plain["rmse_raw"]
        bias_se = abs(chosen["bias"]) / chosen["se"]
        print(
            f"\ncarryover {days:g}d, seed {seed}: {chosen['design']}: RMSE {chosen['rmse_raw']:.4f} = {to_best:.3f} x "
            f"the oracle's best ({best['design']}), {to_plain:.3f} x random days 1d; bias {bias_se:.3f} SE "
            f"(raw mean error {chosen['bias_raw'] / chosen['se']:+.3f} SE)"
        )
        assert to_best <= 1.10
        if days >= 3:
            assert to_plain <= 0.70
        assert bias_se <= 0.25
    assert np.isfinite(best["rmse_raw"])
