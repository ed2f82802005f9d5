"""hpte core: baselines, common shocks, first differences, outlier filter, leaf estimator,
bootstrap, the DID baseline against a textbook number, and input checks.

Exact checks use noise-free panels built here (the estimator must recover the planted
numbers to rounding); statistical checks use ``simulate_sales`` with fixed seeds and a
tolerance stated in standard errors. The simulation studies (coverage, SE ratios) are in
``test_hpte_studies.py``.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import warnings

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricelab_cli import io
from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.errors import (
    ColumnTypeError,
    DataError,
    DuplicateKeyError,
    MissingColumnError,
    PricelabWarning,
    UsageError,
)
from pricelab_cli.hpte import EFFECT_COLUMNS, HeterogeneousPanelEffect, detrended_outcomes, estimate_hpte
from pricelab_cli.hpte.bootstrap import bootstrap_se
from pricelab_cli.hpte.detrend import detrend_panel, first_difference, fit_baselines
from pricelab_cli.hpte.forest import encode_features, leaf_second_difference
from pricelab_cli.hpte.outliers import outlier_filter, product_swings, tail_share
from pricelab_cli.hpte.panel import build_panel
from pricelab_cli.simulate import simulate_catalog, simulate_sales

DATA = pathlib.Path(__file__).parent.parent / "data"
START = dt.date(2024, 6, 3)  # a Monday


# --------------------------------------------------------------------------- panels


def exact_panel(
    n_products: int = 6,
    history: int = 56,
    days: int = 14,
    *,
    effect: float = 0.0,
    shocks: np.ndarray | None = None,
    step_days: int = 1,
    treated: list[int] | None = None,
    seed: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Noise-free panel: level + trend + weekday pattern (+ shock on experiment dates) + effect.

    Returns sales, a time-bound assignment (``treated`` products, default the first half)
    and the planted coefficients.
    """
    rng = np.random.default_rng(seed)
    level = rng.uniform(20, 60, n_products)
    trend = rng.uniform(-0.3, 0.3, n_products)  # per period
    weekday = np.zeros((n_products, 7))
    if step_days == 1:
        weekday[:, 1:] = rng.uniform(-4, 4, (n_products, 6))
    treated = list(range(n_products // 2)) if treated is None else treated
    periods = np.arange(-history, days)
    dates = [START + dt.timedelta(days=int(step_days * p)) for p in periods]
    pid = np.repeat(np.arange(1, n_products + 1), len(periods))
    t = np.tile(periods, n_products).astype(float)
    dow = np.array([d.weekday() for d in dates])
    y = level[pid - 1] + trend[pid - 1] * t + weekday[pid - 1, np.tile(dow, n_products)]
    exp = t >= 0
    arm = np.isin(pid - 1, treated)
    if shocks is not None:
        y = y + np.where(exp, np.tile(np.concatenate([np.zeros(history), shocks]), n_products), 0.0)
    y = y + effect * (exp & arm)
    sales = pl.DataFrame(
        {"product_id": pid, "date": np.tile(np.array(dates, dtype="datetime64[D]"), n_products), "units": y}
    )
    sales = sales.with_columns(pl.col("date").cast(pl.Date))
    exp_dates = pl.Series("date", dates[history:]).cast(pl.Date)
    assignment = (
        pl.DataFrame(
            {
                "product_id": np.arange(1, n_products + 1),
                "treated": np.isin(np.arange(n_products), treated).astype(np.int8),
            }
        )
        .join(pl.DataFrame({"date": exp_dates}), how="cross")
        .with_columns(blackout=pl.lit(False), period=pl.lit(0, dtype=pl.Int32))
        .select("product_id", "date", "treated", "blackout", "period")
    )
    return sales, assignment, {"level": level, "trend": trend, "weekday": weekday}


def simulated(kind: str = "time-bound", n: int = 200, seed: int = 0, **sales_kw):
    """A simulated catalog, an assignment of ``kind`` and its sales (no spillover edges)."""
    products, _ = simulate_catalog(n, 5, 5, seed=seed)
    if kind == "time-bound" or kind == "random-days":
        design = make_design(kind, salt=f"s{seed}", start=START, end=START + dt.timedelta(days=27))
    elif kind == "crossover":
        design = make_design(kind, salt=f"s{seed}", start=START, phase_days=14, blackout_days=7)
    else:
        design = make_design(kind, salt=f"s{seed}", duration_days=28)
    events = None
    if kind == "triggered":
        offsets = np.random.default_rng(seed).integers(0, 28, n)
        events = pl.DataFrame(
            {"product_id": products["product_id"], "event_date": [START + dt.timedelta(days=int(o)) for o in offsets]}
        )
    assignment = assign(design, products, events=events)
    sim = simulate_sales(
        products, assignment=assignment, history_days=sales_kw.pop("history_days", 91), seed=seed, **sales_kw
    )
    return products, assignment, sim


# --------------------------------------------------------------------------- step 1


def test_baselines_recover_level_trend_and_weekday_of_every_product_at_once():
    sales, assignment, truth = exact_panel(n_products=6)
    panel = build_panel(sales, assignment, ["units"])
    fit = fit_baselines(panel, panel.outcomes["units"])
    assert panel.daily and panel.spacing_days == 1
    # Codes follow the ids' hash order; product ids are 1..n.
    order = panel.product_ids.to_numpy() - 1
    np.testing.assert_allclose(fit.level, truth["level"][order], atol=1e-6)
    np.testing.assert_allclose(fit.trend, truth["trend"][order], atol=1e-8)
    np.testing.assert_allclose(fit.weekday, truth["weekday"][order], atol=1e-6)
    assert fit.model_counts(True) == {"level+trend+weekday": 6, "level only": 0, "left out": 0}


def test_noise_free_panel_gives_the_planted_effect_exactly_despite_common_shocks():
    shocks = np.random.default_rng(3).normal(0, 5, 14)
    sales, assignment, _ = exact_panel(n_products=8, effect=2.5, shocks=shocks)
    out = detrended_outcomes(sales, assignment, "units")
    treated = out.filter(pl.col("treated") == 1)["residual"].to_numpy()
    control = out.filter(pl.col("treated") == 0)["residual"].to_numpy()
    np.testing.assert_allclose(treated, 2.5, atol=1e-6)
    np.testing.assert_allclose(control, 0.0, atol=1e-6)
    # The counterfactual carries the shock: observed = counterfactual + residual.
    joined = out.join(sales, on=["product_id", "date"])
    np.testing.assert_allclose(joined["units"] - joined["counterfactual"], joined["residual"], atol=1e-9)
    result = estimate_hpte(sales, assignment, n_bootstrap=0, outlier_filter=False)
    assert result.effects["estimate"][0] == pytest.approx(2.5, abs=1e-6)


def test_detrended_outcomes_has_one_row_per_analysed_product_date():
    products, assignment, sim = simulated("crossover", n=30, seed=1)
    out = detrended_outcomes(sim.sales, assignment, "units", robust=False)
    assert out.columns == ["product_id", "date", "treated", "residual", "counterfactual"]
    assert out.schema["date"] == pl.Date and out.schema["treated"] == pl.Int8
    analysed = assignment.filter(~pl.col("blackout"))
    assert out.height == analysed.height
    assert out.join(analysed, on=["product_id", "date"], how="anti").height == 0
    assert out.sort("product_id", "date").equals(out)
    # The robust residuals leave out whole products the volatility screen drops (here one
    # whose history scores z = 5.9) and stock-out days, and nothing else.
    with pytest.warns(PricelabWarning, match="too wild for their sales level"):
        robust = detrended_outcomes(sim.sales, assignment, "units")
    missing = analysed.join(robust, on=["product_id", "date"], how="anti")
    assert missing["product_id"].n_unique() == 1 and missing.height == 14


def test_weekly_panel_fits_level_and_trend_without_weekday_terms():
    sales, assignment, truth = exact_panel(n_products=4, history=20, days=6, step_days=7)
    panel = build_panel(sales, assignment, ["units"])
    assert not panel.daily and panel.spacing_days == 7
    fit = fit_baselines(panel, panel.outcomes["units"])
    np.testing.assert_allclose(fit.trend, truth["trend"][panel.product_ids.to_numpy() - 1], atol=1e-8)
    assert np.all(fit.weekday == 0)


def test_short_history_falls_back_to_level_and_no_history_is_left_out_with_a_warning():
    sales, assignment, _ = exact_panel(n_products=6, history=40)
    first = START - dt.timedelta(days=10)
    sales = sales.filter(~((pl.col("product_id") == 2) & (pl.col("date") < first)))
    sales = sales.filter(~((pl.col("product_id") == 5) & (pl.col("date") < START)))
    with pytest.warns(
        PricelabWarning, match=r"1 product\(s\) have no sales before their experiment starts and are left out, e.g. 5"
    ):
        est = HeterogeneousPanelEffect(n_bootstrap=0).fit(sales, assignment, "units")
    assert est.baseline_models_ == {"level+trend+weekday": 4, "level only": 1, "left out": 1}
    assert est.cate_.filter(pl.col("product_id") == 5)["cate"][0] is None


def test_switchback_products_get_a_treated_and_a_control_cell():
    _, assignment, sim = simulated("random-days", n=20, seed=2)
    panel = build_panel(sim.sales, assignment, ["units"])
    cells = first_difference(panel, detrend_panel(panel, "units"))
    per_product = np.bincount(cells.code)
    assert set(per_product) == {2}
    assert cells.n_rows.sum() == assignment.height


# --------------------------------------------------------------------------- step 2


def test_outlier_filter_drops_about_c_products_split_over_both_tails_of_each_stratum():
    rng = np.random.default_rng(0)
    values = rng.normal(size=200)
    stratum = np.repeat([0, 1], 100)
    keep = outlier_filter(values, stratum, c=8)  # q = 0.04: 2 per tail per stratum of 100
    assert (~keep).sum() == 8
    for s in (0, 1):
        inside = values[stratum == s]
        dropped = inside[~keep[stratum == s]]
        assert sorted(dropped) == sorted(np.concatenate([np.sort(inside)[:2], np.sort(inside)[-2:]]))


def test_outlier_filter_leaves_tiny_strata_alone_and_caps_the_tail_share():
    values = np.arange(27.0)
    stratum = np.array([1] + [0] * 26)  # one treated state
    keep = outlier_filter(values, stratum, c=4)
    assert keep[0], "a one-product arm must never be trimmed away"
    assert tail_share(10, 4) == 0.1 and tail_share(1000, 4) == 0.004 and tail_share(50, 0) == 0.0
    assert outlier_filter(values, np.zeros(27, int), c=0).all()


def test_outlier_filter_drops_level_jumps_in_both_tails_of_both_arms():
    sales, assignment, _ = exact_panel(n_products=40, history=56, days=14, seed=4)
    rng = np.random.default_rng(4)
    jumps = {5: 4.0, 12: -4.0, 25: 4.0, 33: -4.0}  # products 1-20 are treated
    jump = pl.col("product_id").replace_strict(jumps, default=0.0, return_dtype=pl.Float64)
    sales = sales.with_columns(
        units=pl.col("units")
        + rng.normal(0, 1.0, sales.height)
        + pl.when(pl.col("date") >= START).then(jump).otherwise(0.0)
    )
    # c = 4 with two arms of 20: one product from each tail of each arm.
    est = HeterogeneousPanelEffect(n_bootstrap=0, outlier_c=4).fit(sales, assignment, "units")
    assert est.n_outliers_ == 4
    assert set(est.cate_.filter(pl.col("cate").is_null())["product_id"].to_list()) == set(jumps)


def test_swings_are_scale_free_so_big_sellers_are_not_outliers():
    """A product selling ten times more (with ten times the noise) has ten times the first
    difference in units but the same swing: ranking raw differences would pick it."""
    sales, assignment, _ = exact_panel(n_products=10, history=56, days=14, seed=5)
    noisy = sales.with_columns(units=pl.col("units") + np.random.default_rng(5).normal(0, 1.0, sales.height))
    scaled = noisy.with_columns(
        units=pl.when(pl.col("product_id") == 3).then(pl.col("units") * 10).otherwise(pl.col("units"))
    )
    swings = []
    for frame in (noisy, scaled):
        panel = build_panel(frame, assignment, ["units"])
        # Without the (shared, additive) shock correction the property is exact.
        detrended = detrend_panel(panel, "units", remove_shocks=False)
        swing, stratum = product_swings(first_difference(panel, detrended), detrended.fit.volatility, panel.n_products)
        swings.append(swing)
    np.testing.assert_allclose(swings[0], swings[1], rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------- step 3


def naive_leaf_estimate(leaves, treated, y, weight, unit_weight=None):
    """Loop over trees and leaves: the definition, for checking the vectorised version."""
    unit_weight = np.ones(len(y)) if unit_weight is None else unit_weight
    thetas = []
    for t in range(leaves.shape[1]):
        num = den = 0.0
        for leaf in np.unique(leaves[:, t]):
            inside = leaves[:, t] == leaf
            wt = unit_weight * inside * (treated == 1)
            wc = unit_weight * inside * (treated == 0)
            if wt.sum() == 0 or wc.sum() == 0:
                continue
            d = (wt * y).sum() / wt.sum() - (wc * y).sum() / wc.sum()
            m = (unit_weight * inside * weight).sum()
            num, den = num + m * d, den + m
        if den > 0:
            thetas.append(num / den)
    return float(np.mean(thetas))


def random_leaves(n=60, trees=7, seed=0):
    rng = np.random.default_rng(seed)
    leaves = rng.integers(0, 5, size=(n, trees)) * 3 + 1  # sparse node ids, as real trees have
    treated = (rng.random(n) < 0.5).astype(np.int8)
    y = rng.normal(size=n) + 2.0 * treated
    # Leaves with one arm only contribute nothing: cells 0-3 sit alone in leaf 99 of every
    # tree, and in tree 0 cells 4-7 share a treated-only leaf too.
    leaves[:4, :] = 99
    treated[:4] = 1
    leaves[4:8, 0] = 98
    treated[4:8] = 1
    return leaves, treated, y


def test_leaf_second_difference_matches_the_loop_definition():
    leaves, treated, y = random_leaves()
    weight = np.full(len(y), 0.5)
    result = leaf_second_difference(leaves, treated, y, weight)
    assert result.estimate == pytest.approx(naive_leaf_estimate(leaves, treated, y, weight), rel=1e-12)
    assert abs(result.influence.sum()) < 1e-12
    assert not result.matched[:4].any() and np.isnan(result.cate[:4]).all()
    assert np.all(result.influence[:4] == 0.0)
    assert result.matched[4:].all()


def test_influence_is_the_derivative_of_the_estimate_in_each_cells_weight():
    leaves, treated, y = random_leaves(seed=1)
    weight = np.ones(len(y))
    result = leaf_second_difference(leaves, treated, y, weight)
    eps = 1e-6
    for cell in (2, 5, 17, 40):
        bumped = np.ones(len(y))
        bumped[cell] += eps
        slope = (naive_leaf_estimate(leaves, treated, y, weight, bumped) - result.estimate) / eps
        assert slope == pytest.approx(result.influence[cell], rel=1e-4, abs=1e-8)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(-50, 50), scale=st.floats(0.1, 10))
def test_leaf_estimate_ignores_cell_order_and_level_and_scales_with_the_outcome(seed, shift, scale):
    leaves, treated, y = random_leaves(n=30, trees=3, seed=seed)
    weight = np.ones(len(y))
    base = leaf_second_difference(leaves, treated, y, weight).estimate
    order = np.random.default_rng(seed).permutation(len(y))
    assert leaf_second_difference(leaves[order], treated[order], y[order], weight).estimate == pytest.approx(
        base, abs=1e-9
    )
    assert leaf_second_difference(leaves, treated, y + shift, weight).estimate == pytest.approx(base, abs=1e-7)
    assert leaf_second_difference(leaves, treated, y * scale, weight).estimate == pytest.approx(
        base * scale, rel=1e-9, abs=1e-9
    )


def test_features_encode_text_booleans_dates_and_fill_missing_numbers():
    ids = pl.Series("product_id", [3, 1, 2])
    features = pl.DataFrame(
        {
            "product_id": [1, 2, 3],
            "brand": ["b", "a", None],
            "size": [1.0, None, 3.0],
            "new": [True, False, True],
            "launched": [dt.date(2020, 1, 1), dt.date(2021, 1, 1), dt.date(2022, 1, 1)],
        }
    )
    matrix, names = encode_features(features, ids)
    assert names == ["brand", "size", "new", "launched"]
    assert matrix[:, 0].tolist() == [1.0, 3.0, 2.0]  # "\x00missing" < "a" < "b"; rows in ids order
    assert matrix[:, 1].tolist() == [3.0, 1.0, 2.0]  # the missing size takes the median
    with pytest.raises(DataError, match=r"features: 1 assigned product\(s\) have no row, e.g. 4"):
        encode_features(features, pl.Series("product_id", [1, 4]))


# --------------------------------------------------------------------------- step 4


def test_bootstrap_keeps_a_one_unit_arm_fixed():
    influence = np.array([3.0, 0.0, 0.0, 0.0, 0.0])
    stratum = np.array([1, 0, 0, 0, 0])
    result = bootstrap_se(1.0, influence, stratum, 200, seed=0)
    assert result.se == 0.0 and result.ci_low == result.ci_high == 1.0


def test_bootstrap_is_reproducible_and_matches_the_linear_variance():
    rng = np.random.default_rng(0)
    influence = rng.normal(size=400) / 400
    influence -= influence.mean()
    stratum = np.zeros(400, int)
    a = bootstrap_se(0.5, influence, stratum, 2000, seed=7)
    b = bootstrap_se(0.5, influence, stratum, 2000, seed=7)
    assert np.array_equal(a.draws, b.draws)
    analytic = np.sqrt((influence**2).sum())
    assert a.se == pytest.approx(analytic, rel=0.05)
    assert a.ci_low < 0.5 < a.ci_high and a.p_value < 0.01
    assert np.isnan(bootstrap_se(0.5, influence, stratum, 0, seed=7).se), "no draws, no SE"


def test_progress_is_reported_per_batch_and_adds_up():
    seen = []
    bootstrap_se(0.0, np.ones(10), np.zeros(10, int), 37, seed=0, progress=seen.append)
    assert sum(seen) == 37


# --------------------------------------------------------------------------- did


def organ_donation():
    sales = io.read_table(
        str(DATA / "organ_donation_sales.csv"), required=["product_id", "date", "units"], dates=["date"]
    )
    assignment = io.read_table(
        str(DATA / "organ_donation_assignment.csv"), required=["product_id", "date", "treated"], dates=["date"]
    )
    return sales, assignment


def test_did_reproduces_the_organ_donation_textbook_estimate():
    """Kessler-Roth organ donation (27 states, quarterly, California treated from Q3 2011):
    the two-way fixed-effects estimate is -0.0225; the 2x2 mean difference is -0.02246."""
    sales, assignment = organ_donation()
    with pytest.warns(PricelabWarning, match=r"only 1 treated product\(s\) to resample.*SE is unreliable"):
        result = estimate_hpte(sales, assignment, method="did", n_bootstrap=500, seed=0)
    row = result.effects.row(0, named=True)
    assert row["estimate"] == pytest.approx(-0.02246, abs=1e-4)
    assert row["n_products"] == 27 and row["n_outliers"] == 0
    assert row["se"] > 0 and row["ci_low"] < row["estimate"] < row["ci_high"]
    assert result.spacing_days > 80  # quarterly


def test_did_equals_two_way_fixed_effects_on_a_balanced_panel():
    rng = np.random.default_rng(5)
    n, periods, start = 12, 8, 5
    unit = np.repeat(np.arange(n), periods)
    time = np.tile(np.arange(periods), n)
    treated_unit = np.arange(n) < 4
    d = (treated_unit[unit] & (time >= start)).astype(float)
    y = rng.normal(size=n)[unit] + rng.normal(size=periods)[time] + 1.7 * d + rng.normal(0, 0.5, n * periods)
    X = np.column_stack([np.eye(n)[unit], np.eye(periods)[time][:, 1:], d])
    twfe = np.linalg.lstsq(X, y, rcond=None)[0][-1]
    dates = [dt.date(2020, 1, 6) + dt.timedelta(weeks=int(t)) for t in time]
    sales = pl.DataFrame({"product_id": unit, "date": dates, "units": y})
    exp = sales.filter(pl.col("date") >= dt.date(2020, 1, 6) + dt.timedelta(weeks=start))
    assignment = exp.select(
        "product_id", "date", treated=pl.col("product_id").is_in(np.flatnonzero(treated_unit).tolist()).cast(pl.Int8)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PricelabWarning)
        result = estimate_hpte(sales, assignment, method="did", n_bootstrap=0)
    assert result.effects["estimate"][0] == pytest.approx(twfe, abs=1e-10)


def test_hpte_still_estimates_with_one_treated_state():
    sales, assignment = organ_donation()
    with pytest.warns(PricelabWarning, match="SE is unreliable"):
        result = estimate_hpte(sales, assignment, n_bootstrap=200, seed=0)
    row = result.effects.row(0, named=True)
    assert np.isfinite(row["estimate"]) and row["n_products"] + row["n_outliers"] == 27
    assert result.estimators["units"].baseline_models_["level only"] == 27  # three quarters of history


# --------------------------------------------------------------------------- whole estimator


def test_estimate_is_near_the_truth_on_a_simulated_time_bound_experiment():
    products, assignment, sim = simulated("time-bound", n=300, seed=11)
    result = estimate_hpte(sim.sales, assignment, features=products.drop("community"), n_bootstrap=300, seed=1)
    row = result.effects.row(0, named=True)
    truth = sim.truth["effect"]
    assert abs(row["estimate"] - truth) < 4 * row["se"], (row, truth)
    assert row["lift"] == pytest.approx(truth / sim.truth["baseline"], abs=4 * row["se"] / sim.truth["baseline"])
    assert result.effects.columns == list(EFFECT_COLUMNS)


def test_lift_divides_by_the_treated_cells_counterfactual():
    sales, assignment, truth = exact_panel(n_products=6, effect=3.0)
    est = HeterogeneousPanelEffect(n_bootstrap=0, outlier_filter=False).fit(sales, assignment, "units")
    expected = detrended_outcomes(sales, assignment, "units").filter(pl.col("treated") == 1)
    per_product = expected.group_by("product_id").agg(pl.col("counterfactual").mean())
    assert est.lift_ == pytest.approx(3.0 / per_product["counterfactual"].mean(), rel=1e-9)


def test_several_outcomes_give_one_row_each_and_a_long_cate_table():
    products, assignment, sim = simulated("random-days", n=60, seed=3)
    result = estimate_hpte(sim.sales, assignment, outcomes=["units", "revenue"], n_bootstrap=50)
    assert result.effects["outcome"].to_list() == ["units", "revenue"]
    assert result.cate.columns == ["product_id", "outcome", "cate"]
    assert result.cate.height == 2 * 60
    single = estimate_hpte(sim.sales, assignment, outcomes=["units"], n_bootstrap=50)
    assert single.cate.columns == ["product_id", "cate"]
    assert single.effects.row(0) == result.effects.row(0), "outcomes are estimated independently"


def test_same_seed_same_numbers_and_the_seed_moves_only_the_bootstrap():
    _, assignment, sim = simulated("time-bound", n=80, seed=4)
    a = estimate_hpte(sim.sales, assignment, n_bootstrap=100, seed=3).effects
    b = estimate_hpte(sim.sales, assignment, n_bootstrap=100, seed=3).effects
    c = estimate_hpte(sim.sales, assignment, n_bootstrap=100, seed=4).effects
    assert a.equals(b)
    assert a["se"][0] != c["se"][0]


def test_cate_follows_the_planted_heterogeneity():
    products, assignment, sim = simulated("random-days", n=400, seed=6, heterogeneity=1.5, dispersion=50.0)
    result = estimate_hpte(sim.sales, assignment, features=products.drop("community"), n_bootstrap=0, seed=0)
    truth = sim.product_truth.select("product_id", true_cate="cate")
    joined = result.cate.join(truth, on="product_id").drop_nulls("cate")
    corr = np.corrcoef(joined["cate"], joined["true_cate"])[0, 1]
    assert corr > 0.5, corr


def test_cluster_assignment_resamples_clusters():
    """Clusters that share a shock: resampling products would understate the SE."""
    products, _ = simulate_catalog(240, 4, 6, seed=8)
    clusters = products.select("product_id", cluster_id=pl.col("community"))
    design = make_design("time-bound", salt="c", start=START, end=START + dt.timedelta(days=27))
    assignment = assign(design, products, clusters=clusters)
    sim = simulate_sales(products, assignment=assignment, history_days=91, seed=8)
    n_clusters = clusters["cluster_id"].n_unique()
    shock = pl.DataFrame(
        {"cluster_id": clusters["cluster_id"].unique(), "_s": np.random.default_rng(8).normal(0, 0.4, n_clusters)}
    )
    sales = (
        sim.sales.join(clusters, on="product_id")
        .join(shock, on="cluster_id")
        .with_columns(units=pl.col("units") * pl.when(pl.col("date") >= START).then(pl.col("_s").exp()).otherwise(1.0))
        .drop("cluster_id", "_s")
    )
    by_cluster = estimate_hpte(sales, assignment, n_bootstrap=400, seed=0)
    by_product = estimate_hpte(sales, assignment.drop("cluster_id"), n_bootstrap=400, seed=0)
    assert by_cluster.unit_label == "cluster" and by_product.unit_label == "product"
    assert by_cluster.effects["se"][0] > 1.5 * by_product.effects["se"][0]
    assert by_cluster.effects["estimate"][0] == by_product.effects["estimate"][0]


def test_effect_path_shows_no_gap_before_and_the_effect_during():
    sales, assignment, _ = exact_panel(n_products=10, effect=4.0)
    result = estimate_hpte(sales, assignment, n_bootstrap=0, outlier_filter=False)
    path = result.paths
    assert path["phase"].unique().sort().to_list() == ["experiment", "pre"]
    np.testing.assert_allclose(path.filter(pl.col("phase") == "pre")["difference"], 0.0, atol=1e-6)
    np.testing.assert_allclose(path.filter(pl.col("phase") == "experiment")["difference"], 4.0, atol=1e-6)
    assert path["period"].min() == -28  # twice the 14-day experiment


# --------------------------------------------------------------------------- bad input


def small_inputs():
    sales, assignment, _ = exact_panel(n_products=6, history=30, days=7)
    return sales, assignment


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (
            lambda s, a: (s.filter(pl.col("product_id") != 3), a),
            DataError,
            r"assignment: 1 assigned product\(s\) have no sales rows, e.g. 3; give every assigned product its rows in sales",
        ),
        (
            lambda s, a: (s.filter(pl.col("date") >= START), a),
            DataError,
            "sales: no product has sales before its experiment starts",
        ),
        (
            lambda s, a: (s, a.with_columns(treated=pl.lit(0, dtype=pl.Int8))),
            DataError,
            "the treated arm has no analysed experiment rows",
        ),
        (
            lambda s, a: (
                s.with_columns(units=pl.when(pl.col("date") == START).then(None).otherwise(pl.col("units"))),
                a,
            ),
            DataError,
            r"sales: column 'units' has 6 missing or non-finite value\(s\) on analysed dates, e.g. product \d on 2024-06-03",
        ),
        (
            lambda s, a: (
                s.with_columns(units=pl.when(pl.col("date") == START).then(float("nan")).otherwise(pl.col("units"))),
                a,
            ),
            DataError,
            "missing or non-finite",
        ),
        (
            lambda s, a: (pl.concat([s, s.head(1)]), a),
            DuplicateKeyError,
            r"sales: 2 rows repeat a \(product_id, date\) key, e.g. product_id=1",
        ),
        (
            lambda s, a: (s, pl.concat([a, a.tail(1)])),
            DuplicateKeyError,
            r"assignment: 2 rows repeat a \(product_id, date\) key",
        ),
        (lambda s, a: (s, a.with_columns(treated=pl.lit(2))), DataError, "column 'treated' must hold 0 or 1, found 2"),
        (lambda s, a: (s.drop("units"), a), MissingColumnError, "sales: missing column 'units'"),
        (
            lambda s, a: (s.with_columns(units=pl.col("units").cast(pl.String)), a),
            ColumnTypeError,
            "column 'units' must hold numbers",
        ),
    ],
    ids=[
        "product missing from sales",
        "no pre-period",
        "arm without products",
        "null outcome",
        "nan outcome",
        "duplicate sales",
        "duplicate assignment",
        "treated not 0/1",
        "missing outcome column",
        "text outcome",
    ],
)
def test_bad_input_raises_a_named_error(mutate, error, message):
    sales, assignment = mutate(*small_inputs())
    with pytest.raises(error, match=message):
        estimate_hpte(sales, assignment, n_bootstrap=0)


def test_negative_outcomes_are_kept_with_a_warning():
    sales, assignment = small_inputs()
    sales = sales.with_columns(
        units=pl.when((pl.col("product_id") == 2) & (pl.col("date") == START)).then(-5.0).otherwise(pl.col("units"))
    )
    with pytest.warns(
        PricelabWarning, match=r"sales: column 'units' has 1 negative value\(s\), e.g. product 2 on 2024-06-03"
    ):
        estimate_hpte(sales, assignment, n_bootstrap=0)


def test_bad_parameters_are_usage_errors():
    sales, assignment = small_inputs()
    with pytest.raises(UsageError, match="`method` 'ols' is not one of: hpte, did"):
        estimate_hpte(sales, assignment, method="ols")
    with pytest.raises(UsageError, match="`outlier_c` -1") as caught:
        HeterogeneousPanelEffect(outlier_c=-1).fit(sales, assignment)
    # In the core's words, and carried as data (the command line makes it --outlier-c).
    assert caught.value.parameter == "outlier_c" and "--outlier-c" not in str(caught.value)


def test_text_ids_and_sales_of_unassigned_products_are_handled():
    sales, assignment = small_inputs()
    sales = sales.with_columns(pl.col("product_id").cast(pl.String).str.zfill(4))
    assignment = assignment.with_columns(pl.col("product_id").cast(pl.String).str.zfill(4))
    extra = sales.filter(pl.col("product_id") == "0001").with_columns(product_id=pl.lit("9999"))
    result = estimate_hpte(pl.concat([sales, extra]), assignment, n_bootstrap=0)
    assert result.n_ignored_sales_products == 1
    assert result.cate["product_id"].to_list() == ["0001", "0002", "0003", "0004", "0005", "0006"]
