"""The Monte Carlo machinery of `power`, checked with a transparent difference-of-means
estimator so that injection, truth and summaries are tested apart from hpte."""

import datetime as dt

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy import sparse, stats

from pricelab_cli.design import make_design
from pricelab_cli.errors import DataError, UsageError
from pricelab_cli.power import (
    Arm,
    Estimate,
    Threats,
    exposure_share,
    incoming_weights,
    power_study,
    treatment_dose,
    window_design,
)
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2026, 1, 1)


def difference_of_means(sales, assignment, outcome, with_intervals, seed):
    """Within-product treated minus control when products see both arms, else between."""
    cells = assignment.filter(~pl.col("blackout")).join(sales, on=["product_id", "date"])
    per = cells.group_by("product_id", "treated").agg(pl.col(outcome).mean())
    wide = per.pivot(on="treated", index="product_id", values=outcome)
    if {"0", "1"} <= set(wide.columns) and wide.drop_nulls().height > wide.height / 2:
        diff = wide.drop_nulls().select(pl.col("1") - pl.col("0")).to_series()
        est, se = diff.mean(), diff.std() / np.sqrt(len(diff))
    else:
        arm = (
            per.group_by("treated")
            .agg(pl.col(outcome).mean(), pl.col(outcome).var().alias("v"), pl.len())
            .sort("treated")
        )
        est = arm[outcome][1] - arm[outcome][0]
        se = float(np.sqrt((arm["v"] / arm["len"]).sum()))
    if not with_intervals:
        return Estimate(est)
    return Estimate(est, se, est - 1.96 * se, est + 1.96 * se, 2 * stats.norm.sf(abs(est / se)))


@pytest.fixture(scope="module")
def catalog():
    products, edges = simulate_catalog(400, 8, community_size=4, seed=11)
    history = simulate_sales(
        products, edges=edges, end=dt.date(2026, 3, 1), history_days=90, price_change=0.0, seed=12
    ).sales
    return products, edges, history


def arms():
    return [
        Arm("time-bound", make_design("time-bound", salt="x", start=START, end=START + dt.timedelta(days=27))),
        Arm("random-days", make_design("random-days", salt="x", start=START, end=START + dt.timedelta(days=27))),
        Arm("crossover", make_design("crossover", salt="x", start=START, phase_days=14, blackout_days=4)),
    ]


def test_treatment_dose_decays_after_treatment_stops():
    treated = np.array([[0, 1, 1, 0, 0, 0]], dtype=bool)
    assert treatment_dose(treated, 0).tolist() == [[0, 1, 1, 0, 0, 0]]
    dose = treatment_dose(treated, 2.0)[0]
    np.testing.assert_allclose(dose, [0, 1, 1, np.exp(-0.5), np.exp(-1.0), np.exp(-1.5)])


def test_exposure_is_the_treated_share_of_incoming_weight():
    ids = pl.Series("product_id", [1, 2, 3])
    edges = pl.DataFrame({"src": [1, 3, 2], "dst": [2, 2, 3], "weight": [0.3, 0.1, 0.5]})
    incoming = incoming_weights(edges, ids)
    treated = np.array([[1], [0], [0]], dtype=bool)  # only product 1 treated
    np.testing.assert_allclose(exposure_share(treated, incoming).ravel(), [0.0, 0.75, 0.0])
    assert isinstance(incoming, sparse.spmatrix | sparse.sparray)


def test_window_design_ends_on_the_last_history_day():
    design = make_design("crossover", salt="a", start=START, phase_days=7, blackout_days=2)
    moved = window_design(design, dt.date(2026, 3, 1), salt="b")
    assert (moved.start, moved.end, moved.salt) == (dt.date(2026, 2, 16), dt.date(2026, 3, 1), "b")


def test_without_threats_every_design_is_unbiased_and_random_days_most_precise(catalog):
    products, edges, history = catalog
    summary, reps = power_study(history, products, arms(), estimator=difference_of_means, effect=0.05, reps=80, seed=3)
    assert reps.height == 3 * 80
    by = {row["design"]: row for row in summary.iter_rows(named=True)}
    for row in by.values():
        # Monte Carlo tolerance: |bias| within 3.5 Monte Carlo standard errors of zero.
        assert abs(row["bias"]) < 3.5 * row["bias_mc_se"], row
        assert 0.85 <= row["coverage"] <= 1.0
        assert row["mde"] == pytest.approx(2.8016 * row["se"], rel=1e-3)
    assert by["random-days"]["se"] < 0.5 * by["time-bound"]["se"]
    assert by["random-days"]["se"] < by["crossover"]["se"] < by["time-bound"]["se"]


def test_carryover_biases_random_days_and_blackout_removes_it(catalog):
    products, edges, history = catalog
    summary, _ = power_study(
        history,
        products,
        arms()[1:],
        estimator=difference_of_means,
        effect=0.05,
        reps=40,
        threats=Threats(carryover_days=3),
        seed=4,
    )
    by = {row["design"]: row for row in summary.iter_rows(named=True)}
    assert by["random-days"]["bias"] < -5 * by["random-days"]["bias_mc_se"], "lingering effect lifts control days"
    assert abs(by["crossover"]["bias"]) < 3.5 * by["crossover"]["bias_mc_se"]


def test_cluster_assignment_reduces_spillover_bias(catalog):
    products, edges, history = catalog
    clusters = products.select("product_id", pl.col("community").alias("cluster_id"))
    design = make_design("random-days", salt="x", start=START, end=START + dt.timedelta(days=27))
    summary, _ = power_study(
        history,
        products,
        [Arm("products", design), Arm("clusters", design, clusters)],
        estimator=difference_of_means,
        effect=0.05,
        reps=40,
        threats=Threats(spillover=0.5),
        edges=edges,
        seed=5,
    )
    by = {row["design"]: row for row in summary.iter_rows(named=True)}
    assert by["products"]["bias"] > 5 * by["products"]["bias_mc_se"]
    assert abs(by["clusters"]["bias"]) < 0.5 * by["products"]["bias"]


def test_same_seed_same_study_across_worker_counts(catalog):
    products, _, history = catalog
    one = power_study(history, products, arms()[:2], estimator=difference_of_means, reps=6, seed=9, n_jobs=1)[1]
    two = power_study(history, products, arms()[:2], estimator=difference_of_means, reps=6, seed=9, n_jobs=2)[1]
    # The test estimator sums floats with polars' threads, so the last bit may differ.
    assert_frame_equal(one, two, check_exact=False, rel_tol=1e-12)


def test_bad_requests_are_named(catalog):
    products, edges, history = catalog
    with pytest.raises(UsageError, match="`reps` 1 must be at least 2"):
        power_study(history, products, arms(), estimator=difference_of_means, reps=1)
    with pytest.raises(UsageError, match="`spillover` needs `edges`"):
        power_study(history, products, arms(), estimator=difference_of_means, threats=Threats(spillover=0.3))
    short = history.filter(pl.col("date") > dt.date(2026, 2, 1))
    with pytest.raises(DataError, match="cannot hold a 28-day experiment window and 14 days of pre-period"):
        power_study(short, products, arms(), estimator=difference_of_means)
    extra = pl.concat([products.select("product_id"), pl.DataFrame({"product_id": [10**6]})])
    with pytest.raises(DataError, match="1 product\\(s\\) of the products table have no history, e.g. 1000000"):
        power_study(history, extra, arms(), estimator=difference_of_means)
