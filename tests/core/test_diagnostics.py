"""Diagnostics of a finished experiment against simulations with known truth: the placebo
test, the carryover check, covariate balance and the minimum detectable effect.

The calibration studies (many simulated experiments each) are marked slow; their figures are
printed (``pytest -s``) and quoted in docs/method.md.
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import polars as pl
import pytest

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.diagnostics import (
    carryover_check,
    covariate_balance,
    minimum_detectable_effect,
    periods_since_switch,
)
from pricelab_cli.engine import LocalEngine
from pricelab_cli.errors import DataError
from pricelab_cli.hpte import detrended_outcomes
from pricelab_cli.hpte.placebo import estimate_placebo, placebo_inputs
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2024, 6, 3)
TREES = 20


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


# --------------------------------------------------------------------------- MDE


def test_mde_is_2_8_standard_errors_at_5_percent_and_80_percent_power():
    assert minimum_detectable_effect(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert minimum_detectable_effect(0.5, power=0.5) == pytest.approx(0.5 * 1.959964, abs=1e-5)
    assert np.isnan(minimum_detectable_effect(float("nan")))


# --------------------------------------------------------------------------- placebo


def placebo_study(reps: int, *, n: int = 200, ramp: float = 0.0, kind: str = "time-bound"):
    """Placebo p-values over ``reps`` simulated experiments (28 days, 91 days of history).

    ``ramp``: the treated arm's demand climbs linearly over the 28 days before the start, to
    ``1 + ramp`` times its level on the eve of the start (and stays there): arms that drift
    apart just before the experiment, which a product's fitted trend does not absorb.
    """
    products, _ = simulate_catalog(n, 5, 5, seed=1)
    p_values = []
    for rep in range(reps):
        design = make_design(kind, salt=f"placebo-{rep}", start=START, end=START + dt.timedelta(days=27))
        assignment = assign(design, products)
        sim = simulate_sales(products, assignment=assignment, history_days=91, seed=rep)
        sales = sim.sales
        if ramp:
            treated = assignment.filter(pl.col("treated") == 1).select("product_id").unique()
            days = (pl.col("date") - pl.lit(START)).dt.total_days()
            climb = (1 + ramp * ((days + 28) / 28).clip(0, 1)).cast(pl.Float64)
            sales = sales.with_columns(
                pl.when(pl.col("product_id").is_in(treated["product_id"].implode()))
                .then(pl.col("units") * climb)
                .otherwise(pl.col("units"))
                .alias("units")
            )
        result, _ = quiet(estimate_placebo, sales, assignment, n_bootstrap=200, n_estimators=TREES, seed=rep, n_jobs=1)
        p_values.append(result.effects["p_value"][0])
    return np.array(p_values)


def test_placebo_moves_the_assignment_onto_the_last_stretch_of_history():
    products, _ = simulate_catalog(40, 2, 2, seed=4)
    design = make_design("crossover", salt="x", start=START, phase_days=7, blackout_days=2)
    assignment = assign(design, products)
    sim = simulate_sales(products, assignment=assignment, history_days=30, seed=4)
    before, shifted, window = placebo_inputs(sim.sales, assignment)
    shifted = shifted.collect()
    assert window.periods == 14 and window.real_start == START
    assert window.fake_start == START - dt.timedelta(days=14) and window.fake_end == START - dt.timedelta(days=1)
    original = assignment.sort("product_id", "date")
    moved = shifted.sort("product_id", "date")
    # Same arms and blackouts, fourteen days earlier.
    assert moved["treated"].to_list() == original["treated"].to_list()
    assert moved["blackout"].to_list() == original["blackout"].to_list()
    assert (moved["date"] + dt.timedelta(days=14)).to_list() == original["date"].to_list()
    assert before.select(pl.col("date").max()).collect().item() < START


def test_placebo_on_a_weekly_panel_moves_by_whole_weeks():
    weeks = [START - dt.timedelta(weeks=k) for k in range(20, 0, -1)] + [START, START + dt.timedelta(weeks=1)]
    sales = pl.DataFrame({"product_id": [1] * len(weeks), "date": weeks, "units": [1.0] * len(weeks)})
    assignment = pl.DataFrame({"product_id": [1, 1], "date": weeks[-2:], "treated": [1, 1]})
    _, shifted, window = placebo_inputs(sales, assignment)
    assert shifted.collect()["date"].to_list() == weeks[-4:-2]
    assert window.periods == 2


def test_placebo_refuses_a_history_shorter_than_the_experiment_plus_the_baseline():
    products, _ = simulate_catalog(20, 2, 2, seed=4)
    design = make_design("time-bound", salt="x", start=START, end=START + dt.timedelta(days=27))
    assignment = assign(design, products)
    sim = simulate_sales(products, assignment=assignment, history_days=30, seed=4)
    with pytest.raises(DataError, match=r"30 period\(s\) of history .* 36 in all"):
        placebo_inputs(sim.sales, assignment, "sales.parquet")


@pytest.mark.slow
def test_placebo_rejects_about_five_percent_of_clean_experiments_and_most_with_a_pre_trend():
    """200 clean time-bound experiments of 200 products: the placebo should reject at 5% in
    3-8% of them (binomial spread at 200: about +-1.5 points). With the treated arm drifting
    to +20% over the four weeks before the start it should reject in most."""
    clean = placebo_study(200)
    drifting = placebo_study(40, ramp=0.2)
    clean_rate, drift_rate = (clean < 0.05).mean(), (drifting < 0.05).mean()
    print(
        f"\nplacebo rejections at 5%: clean {clean_rate:.3f} of {len(clean)}, "
        f"treated arm drifting +20% before the start {drift_rate:.3f} of {len(drifting)}"
    )
    assert 0.02 <= clean_rate <= 0.09
    assert drift_rate >= 0.7


# --------------------------------------------------------------------------- carryover


def test_periods_since_switch_counts_runs_of_one_arm():
    dates = [START + dt.timedelta(days=d) for d in range(6)]
    assignment = pl.DataFrame({"product_id": [1] * 6, "date": dates, "treated": [1, 1, 0, 0, 0, 1]})
    got = periods_since_switch(assignment)
    assert got["since"].to_list() == [1, 2, 1, 2, 3, 1]
    assert got["after_switch"].to_list() == [False, False, True, True, True, True]


def carryover_study(reps: int, carryover_days: float, *, n: int = 200):
    """Control-arm carryover p-values and suggested blackouts over ``reps`` random-days
    experiments of the demo's size (200 products, 28 days, 120 days of history)."""
    products, _ = simulate_catalog(n, 5, 5, seed=1)
    p_values, blackouts = [], []
    for rep in range(reps):
        design = make_design("random-days", salt=f"carry-{rep}", start=START, end=START + dt.timedelta(days=27))
        assignment = assign(design, products)
        sim = simulate_sales(products, assignment=assignment, history_days=120, seed=rep, carryover_days=carryover_days)
        residuals = quiet(detrended_outcomes, sim.sales, assignment, "units", engine=LocalEngine(1))
        row = carryover_check(residuals, assignment).lingering()
        p_values.append(row["p_value"])
        blackouts.append(row["suggested_blackout_days"])
    return np.array(p_values), np.array(blackouts)


def test_carryover_check_finds_planted_carryover_and_suggests_a_blackout():
    """A catalog of 600 products: a 3-day carryover is found in every one of three
    experiments (the power at the demo's 200 products is the slow study's business)."""
    p, blackout = carryover_study(3, 3.0, n=600)
    assert (p < 0.01).all() and (blackout >= 1).all()


@pytest.mark.slow
def test_carryover_check_flags_most_carryover_experiments_and_almost_no_clean_ones():
    """Demo-sized random-days experiments: with a 3-day carryover (the effect decays as
    exp(-days / 3) after treatment stops) most are flagged; without, about 5%."""
    carried, blackout = carryover_study(100, 3.0)
    clean, clean_blackout = carryover_study(200, 0.0)
    print(
        f"\ncarryover flagged at 5%: with a 3-day carryover {(carried < 0.05).mean():.3f} of {len(carried)} "
        f"(suggested blackout {np.bincount(blackout).tolist()} days 0, 1, ...), without "
        f"{(clean < 0.05).mean():.3f} of {len(clean)}"
    )
    assert (carried < 0.05).mean() >= 0.8
    assert (clean < 0.05).mean() <= 0.09
    assert (clean_blackout == 0).mean() >= 0.9


def test_carryover_check_counts_crossover_blackout_days_after_the_switch():
    products, _ = simulate_catalog(200, 5, 5, seed=1)
    design = make_design("crossover", salt="co", start=START, phase_days=14, blackout_days=2)
    assignment = assign(design, products)
    sim = simulate_sales(products, assignment=assignment, history_days=120, seed=5, carryover_days=3.0)
    residuals = quiet(detrended_outcomes, sim.sales, assignment, "units", engine=LocalEngine(1))
    check = carryover_check(residuals, assignment)
    row = check.lingering()
    # The two blackout days after the switch are counted: the first analysed day is the third.
    assert row["blackout_days"] == 2 and row["suggested_blackout_days"] >= 2
    assert check.profile.filter(pl.col("arm") == "control")["since"][0] == 3
    assert check.table["n_products"].min() >= 50


# --------------------------------------------------------------------------- balance


def test_balance_finds_an_imbalanced_feature_and_passes_a_random_split():
    products, _ = simulate_catalog(400, 5, 5, seed=2)
    design = make_design("time-bound", salt="bal", start=START, end=START + dt.timedelta(days=13))
    assignment = assign(design, products)
    sim = simulate_sales(products, assignment=assignment, history_days=60, seed=2)
    table = covariate_balance(assignment, products, sim.sales)
    assert "pre-period units per day" in table["variable"].to_list()
    assert table["balanced"].all(), table
    # Treat the products of highest quality: the split is now far from random.
    top = products.sort("quality", descending=True).head(200)["product_id"]
    skewed = assignment.with_columns(pl.col("product_id").is_in(top.implode()).cast(pl.Int8).alias("treated"))
    bad = covariate_balance(skewed, products, sim.sales)
    quality = bad.filter(pl.col("variable") == "quality").row(0, named=True)
    assert quality["smd"] > 1.0 and not quality["balanced"]


def test_placebo_warns_only_below_five_percent():
    from pricelab_cli.hpte.placebo import PlaceboWindow, placebo_warnings

    window = PlaceboWindow(START - dt.timedelta(days=28), START - dt.timedelta(days=1), START, 28)
    effects = pl.DataFrame({"outcome": ["units", "revenue"], "estimate": [1.5, 0.1], "p_value": [0.01, 0.4]})
    messages = placebo_warnings(effects, window)
    assert len(messages) == 1 and "units" in messages[0] and "p = 0.01" in messages[0]
