"""Tests for the simulator: tables, determinism, the planted graph and the known truth.

Statistical checks compare simulated units with the truth the simulator reports, with
tolerances of four standard errors computed from the same data, so a wrong truth (a missing
term, a wrong baseline) fails while seed noise does not.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricelab_cli.errors import DataError, DuplicateKeyError, MissingColumnError, UsageError
from pricelab_cli.simulate import (
    BRAND_MULTIPLIERS,
    PRODUCT_TRUTH_COLUMNS,
    SimulatedSales,
    simulate_catalog,
    simulate_sales,
)

EXPERIMENT_START = dt.date(2024, 6, 3)


def time_bound(
    ids: pl.Series,
    n_days: int = 28,
    *,
    share: float = 0.5,
    seed: int = 0,
    treated_days: int | None = None,
    blackout_days: int = 0,
) -> pl.DataFrame:
    """A time-bound assignment built directly: a random half of products treated.

    ``treated_days`` ends the treatment early (the rest of the window stays in the
    assignment, untreated) so carryover can be observed.
    """
    arm = np.random.default_rng(seed).random(len(ids)) < share
    dates = pl.date_range(EXPERIMENT_START, EXPERIMENT_START + dt.timedelta(days=n_days - 1), eager=True)
    day = pl.col("date") - pl.lit(EXPERIMENT_START)
    on = pl.lit(True) if treated_days is None else day < pl.duration(days=treated_days)
    return (
        pl.DataFrame({"product_id": ids, "arm": arm})
        .join(pl.DataFrame({"date": dates}), how="cross")
        .with_columns(
            treated=(pl.col("arm") & on).cast(pl.Int8),
            blackout=day < pl.duration(days=blackout_days),
            period=pl.lit(0, dtype=pl.Int32),
        )
        .select("product_id", "date", "treated", "blackout", "period")
    )


def random_days(ids: pl.Series, n_days: int = 28, *, seed: int = 0) -> pl.DataFrame:
    """Every product re-randomised every day (switchback)."""
    dates = pl.date_range(EXPERIMENT_START, EXPERIMENT_START + dt.timedelta(days=n_days - 1), eager=True)
    grid = pl.DataFrame({"product_id": ids}).join(pl.DataFrame({"date": dates}), how="cross")
    treated = np.random.default_rng(seed).random(grid.height) < 0.5
    return grid.with_columns(
        treated=pl.Series(treated.astype(np.int8)),
        blackout=pl.lit(False),
        period=pl.int_range(pl.len(), dtype=pl.Int32).over("product_id"),
    )


def per_product_means(sales: pl.DataFrame, assignment: pl.DataFrame) -> pl.DataFrame:
    """Mean units of each product over its non-blackout experiment dates, with its arm."""
    return (
        sales.join(assignment.filter(~pl.col("blackout")), on=["product_id", "date"])
        .group_by("product_id")
        .agg(pl.col("units").mean().alias("units"), pl.col("treated").max().alias("treated"))
    )


def within_product_differences(sales: pl.DataFrame, assignment: pl.DataFrame) -> np.ndarray:
    """Per product, mean units on treated days minus mean units on control days."""
    per_product = (
        sales.join(assignment, on=["product_id", "date"])
        .group_by("product_id")
        .agg(
            pl.col("units").filter(pl.col("treated") == 1).mean().alias("on"),
            pl.col("units").filter(pl.col("treated") == 0).mean().alias("off"),
        )
        .drop_nulls()
    )
    return (per_product["on"] - per_product["off"]).to_numpy()


def within_four_se(values: np.ndarray, target: float) -> tuple[bool, float]:
    se = values.std(ddof=1) / math.sqrt(len(values))
    return abs(values.mean() - target) < 4 * se, se


# --------------------------------------------------------------------------- catalog


def test_catalog_columns_types_and_balance():
    products, edges = simulate_catalog(n_products=103, n_groups=10, community_size=5, seed=3)
    assert products.columns == ["product_id", "category", "community", "size", "quality", "base_price", "brand"]
    assert products.schema["product_id"] == pl.Int64
    assert products["product_id"].to_list() == list(range(1, 104))
    assert products.schema["category"] == pl.String
    assert products.schema["community"] == pl.Int64
    sizes = products.group_by("category").len()["len"]
    assert sizes.len() == 10 and sizes.max() - sizes.min() <= 1
    assert set(products["category"]) == {f"cat_{k:02d}" for k in range(10)}
    assert (products["base_price"] > 0).all()
    assert 10 < products["base_price"].median() < 40
    assert set(products["brand"]) <= set(BRAND_MULTIPLIERS)
    assert edges.columns == ["src", "dst", "weight", "community"]
    assert edges.schema["weight"] == pl.Float64
    assert edges.schema["community"] == pl.Int64


def test_catalog_string_ids():
    products, edges = simulate_catalog(n_products=12, n_groups=2, seed=0, id_prefix="sku-")
    assert products["product_id"].to_list()[:2] == ["sku-000001", "sku-000002"]
    assert set(edges["src"]) | set(edges["dst"]) <= set(products["product_id"])


def test_catalog_is_deterministic_per_seed():
    first = simulate_catalog(seed=11)
    again = simulate_catalog(seed=11)
    other = simulate_catalog(seed=12)
    assert first[0].equals(again[0]) and first[1].equals(again[1])
    assert not first[0].equals(other[0])
    assert not first[1].equals(other[1])


def _check_planted_graph(products: pl.DataFrame, edges: pl.DataFrame, community_size: int) -> None:
    info = products.select("product_id", "category", "community")
    joined = edges.join(info.rename(lambda c: f"src_{c}"), left_on="src", right_on="src_product_id").join(
        info.rename(lambda c: f"dst_{c}"), left_on="dst", right_on="dst_product_id"
    )
    assert joined.height == edges.height
    assert (joined["src_category"] == joined["dst_category"]).all()
    assert (edges["src"] != edges["dst"]).all()
    assert not edges.select(pl.struct("src", "dst").is_duplicated().any()).item()
    assert edges["weight"].is_between(0.4, 0.9).all()

    within = joined.filter(pl.col("community") >= 0)
    assert (within["community"] == within["src_community"]).all()
    assert (within["community"] == within["dst_community"]).all()
    comm_sizes = products.group_by("category", "community").len()
    assert comm_sizes["community"].n_unique() == comm_sizes.height  # one category per community
    assert (comm_sizes["len"] <= community_size).all()
    # Every ordered pair inside a community is an edge, and nothing else is a within edge.
    assert within.height == int((comm_sizes["len"] * (comm_sizes["len"] - 1)).sum())
    # At most one community per category is smaller than community_size.
    short = comm_sizes.filter(pl.col("len") < community_size).group_by("category").len()
    assert short.height == 0 or short["len"].max() == 1

    cross = joined.filter(pl.col("community") == -1)
    assert (cross["src_community"] != cross["dst_community"]).all()
    assert cross["src"].is_unique().all()


def test_planted_edges_are_within_categories_and_communities():
    products, edges = simulate_catalog(n_products=1000, n_groups=10, community_size=5, seed=5)
    _check_planted_graph(products, edges, 5)
    n_cross = edges.filter(pl.col("community") == -1).height
    # One cross edge per product with probability 1/5: mean 200, sd about 12.6.
    assert 150 < n_cross < 250


@settings(max_examples=30, deadline=None)
@given(
    n_products=st.integers(1, 120),
    n_groups=st.integers(1, 12),
    community_size=st.integers(1, 8),
    seed=st.integers(0, 2**32),
)
def test_planted_graph_invariants_hold_for_any_sizes(n_products, n_groups, community_size, seed):
    n_groups = min(n_groups, n_products)
    products, edges = simulate_catalog(n_products, n_groups, community_size, seed=seed)
    assert products.height == n_products
    _check_planted_graph(products, edges, community_size)


# --------------------------------------------------------------------------- sales panel


def test_sales_panel_shape_columns_and_prices():
    products, edges = simulate_catalog(n_products=40, n_groups=4, seed=1)
    assignment = time_bound(products["product_id"], 14)
    result = simulate_sales(products, assignment=assignment, edges=edges, history_days=30, seed=2)
    assert isinstance(result, SimulatedSales)
    sales = result.sales
    assert sales.columns == ["product_id", "date", "units", "price", "revenue"]
    assert sales.schema == {
        "product_id": pl.Int64,
        "date": pl.Date,
        "units": pl.Int64,
        "price": pl.Float64,
        "revenue": pl.Float64,
    }
    assert sales.height == 40 * (30 + 14)
    assert sales["date"].min() == EXPERIMENT_START - dt.timedelta(days=30)
    assert sales["date"].max() == EXPERIMENT_START + dt.timedelta(days=13)
    assert not sales.select(pl.struct("product_id", "date").is_duplicated().any()).item()
    assert (sales["units"] >= 0).all()
    assert np.allclose(sales["revenue"], sales["units"] * sales["price"])
    # price / base price is a promotion factor (0.8 or 1) times a treatment factor (0.9 or 1),
    # and the treatment factor appears exactly on treated cells.
    cells = sales.join(products.select("product_id", "base_price"), on="product_id").join(
        assignment, on=["product_id", "date"], how="left"
    )
    ratio = (cells["price"] / cells["base_price"]).to_numpy()
    treated = cells["treated"].fill_null(0).to_numpy() == 1
    assert np.all(np.isclose(ratio[treated], 0.9) | np.isclose(ratio[treated], 0.72))
    assert np.all(np.isclose(ratio[~treated], 1.0) | np.isclose(ratio[~treated], 0.8))
    assert 0.01 < np.isclose(ratio[~treated], 0.8).mean() < 0.4  # promotions happen, not always


def test_product_truth_columns_and_definitions():
    products, edges = simulate_catalog(n_products=60, n_groups=3, seed=4)
    assignment = time_bound(products["product_id"], 10)
    result = simulate_sales(products, assignment=assignment, edges=edges, history_days=20, seed=4)
    truth = result.product_truth
    assert truth.columns == list(PRODUCT_TRUTH_COLUMNS)
    assert truth["product_id"].to_list() == products["product_id"].to_list()
    expected_e = (
        -2.0
        * (1 + 0.5 * np.tanh(products["quality"].to_numpy()))
        * products["brand"].replace_strict(dict(BRAND_MULTIPLIERS)).to_numpy()
    )
    assert np.allclose(truth["elasticity"], expected_e)
    log_cut = math.log(0.9)
    assert np.allclose(truth["cate"] / truth["baseline"], np.expm1(expected_e * log_cut))
    incoming = (
        products.select("product_id")
        .join(
            edges.group_by("dst").agg(pl.col("weight").sum()),
            left_on="product_id",
            right_on="dst",
            how="left",
        )["weight"]
        .fill_null(0.0)
        .to_numpy()
    )
    assert np.allclose(truth["cate_global"] / truth["baseline"], np.expm1((expected_e + incoming) * log_cut))
    summary = result.truth
    assert summary["effect"] == pytest.approx(truth["cate"].mean())
    assert summary["effect_global"] == pytest.approx(truth["cate_global"].mean())
    assert summary["lift"] == pytest.approx(summary["effect"] / truth["baseline"].mean())
    assert summary["n_products"] == 60
    json.dumps(summary, allow_nan=False)

    no_spill = simulate_sales(products, assignment=assignment, edges=edges, history_days=20, seed=4, spillover=False)
    assert no_spill.product_truth["cate_global"].equals(no_spill.product_truth["cate"])
    assert no_spill.truth["effect"] == pytest.approx(summary["effect"])


def test_sales_are_deterministic_per_seed():
    products, edges = simulate_catalog(n_products=30, n_groups=3, seed=0)
    assignment = time_bound(products["product_id"], 7)
    kwargs = dict(assignment=assignment, edges=edges, history_days=20, outlier_share=0.1, carryover_days=2.0)
    first = simulate_sales(products, seed=7, **kwargs)
    again = simulate_sales(products, seed=7, **kwargs)
    other = simulate_sales(products, seed=8, **kwargs)
    assert first.sales.equals(again.sales)
    assert first.product_truth.equals(again.product_truth)
    assert first.truth == again.truth
    assert not first.sales.equals(other.sales)
    assert first.truth["effect"] != other.truth["effect"]


def test_string_ids_round_trip():
    products, edges = simulate_catalog(n_products=20, n_groups=2, seed=0, id_prefix="SKU")
    assignment = time_bound(products["product_id"], 5)
    result = simulate_sales(products, assignment=assignment, edges=edges, history_days=5)
    assert result.sales.schema["product_id"] == pl.String
    simulated_ids = result.sales["product_id"].unique(maintain_order=True)
    assert simulated_ids.to_list() == products["product_id"].to_list()
    assert result.product_truth["product_id"].to_list() == products["product_id"].to_list()


def test_integer_ids_match_across_integer_types():
    products = pl.DataFrame({"product_id": pl.Series([5, 7, 9], dtype=pl.Int32)})
    assignment = time_bound(pl.Series([7, 9], dtype=pl.Int64), 3)
    result = simulate_sales(products, assignment=assignment, history_days=2)
    assert result.sales.schema["product_id"] == pl.Int32
    assert result.product_truth["product_id"].to_list() == [7, 9]


def test_minimal_product_list_uses_default_features():
    products = pl.DataFrame({"product_id": ["a", "b", "c"]})
    result = simulate_sales(products, end=dt.date(2024, 1, 31), history_days=31, promo_rate=0.0)
    assert result.sales.height == 3 * 31
    assert result.sales["date"].min() == dt.date(2024, 1, 1)
    assert (result.sales["price"] == 20.0).all()


def test_without_assignment_truth_is_empty_and_effects_null():
    products, _ = simulate_catalog(n_products=10, n_groups=2)
    result = simulate_sales(products, start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 10))
    assert result.sales.height == 100
    assert result.product_truth.height == 0
    assert result.product_truth.columns == list(PRODUCT_TRUTH_COLUMNS)
    assert result.truth["effect"] is None and result.truth["effect_global"] is None
    assert result.truth["lift"] is None
    json.dumps(result.truth, allow_nan=False)


def test_zero_price_change_has_zero_effect():
    products, edges = simulate_catalog(n_products=50, n_groups=5, seed=2)
    assignment = time_bound(products["product_id"], 10)
    result = simulate_sales(products, assignment=assignment, edges=edges, history_days=10, price_change=0.0)
    assert result.truth["effect"] == 0.0
    assert result.truth["effect_global"] == 0.0
    assert result.truth["lift"] == 0.0
    assert (result.product_truth["cate"] == 0.0).all()
    dates = result.sales["date"]
    baseline_run = simulate_sales(products, edges=edges, start=dates.min(), end=dates.max())
    # With no price change the assignment changes nothing at all, not even the draws.
    assert result.sales.equals(baseline_run.sales)


def test_blackout_days_are_left_out_of_the_truth():
    products, _ = simulate_catalog(n_products=20, n_groups=2, seed=9)
    assignment = time_bound(products["product_id"], 10, blackout_days=4)
    panel = dict(start=EXPERIMENT_START - dt.timedelta(days=5), end=EXPERIMENT_START + dt.timedelta(days=9))
    with_blackout = simulate_sales(products, assignment=assignment, **panel)
    # Same panel and seed, so lambda0 is the same; dropping the blackout rows must not
    # change the truth, while dropping analysed rows must.
    without_rows = simulate_sales(products, assignment=assignment.filter(~pl.col("blackout")), **panel)
    assert with_blackout.product_truth.equals(without_rows.product_truth)
    fewer_days = assignment.filter(pl.col("date") < EXPERIMENT_START + dt.timedelta(days=8))
    shorter = simulate_sales(products, assignment=fewer_days, **panel)
    assert not np.allclose(shorter.product_truth["baseline"], with_blackout.product_truth["baseline"])

    only_blackout = assignment.filter(~((pl.col("product_id") == 2) & ~pl.col("blackout")))
    truth = simulate_sales(products, assignment=only_blackout, **panel)
    cate = truth.product_truth["cate"]
    assert cate.null_count() == 1 and cate[1] is None
    assert truth.truth["effect"] == pytest.approx(cate.drop_nulls().mean())


# --------------------------------------------------------------------------- the truth holds


def test_time_bound_difference_in_means_matches_truth():
    products, _ = simulate_catalog(n_products=2000, n_groups=20, seed=21)
    assignment = time_bound(products["product_id"], 28, seed=21)
    result = simulate_sales(products, assignment=assignment, history_days=7, seed=21)
    means = per_product_means(result.sales, assignment).join(result.product_truth, on="product_id")
    treated = means.filter(pl.col("treated") == 1)
    control = means.filter(pl.col("treated") == 0)
    diff = treated["units"].mean() - control["units"].mean()
    se = math.sqrt(treated["units"].var() / treated.height + control["units"].var() / control.height)
    effect = result.truth["effect"]
    assert effect > 8 * se  # the check below could tell a wrong truth from a right one
    assert abs(diff - effect) < 4 * se

    # Sharper: each product's mean units against its own expected value, which removes the
    # spread of levels between products and leaves only the count noise.
    ok, _ = within_four_se((control["units"] - control["baseline"]).to_numpy(), 0.0)
    assert ok
    ok, _ = within_four_se((treated["units"] - treated["baseline"] - treated["cate"]).to_numpy(), 0.0)
    assert ok


def test_switchback_within_product_difference_matches_truth():
    products, _ = simulate_catalog(n_products=1500, n_groups=15, seed=31)
    assignment = random_days(products["product_id"], 28, seed=31)
    result = simulate_sales(products, assignment=assignment, history_days=7, seed=31)
    diffs = within_product_differences(result.sales, assignment)
    ok, se = within_four_se(diffs, result.truth["effect"])
    assert result.truth["effect"] > 8 * se
    assert ok


def test_switchback_under_spillover_measures_the_effect_at_realised_exposure():
    products, edges = simulate_catalog(n_products=1500, n_groups=15, seed=32)
    assignment = random_days(products["product_id"], 28, seed=32)
    result = simulate_sales(products, assignment=assignment, edges=edges, history_days=7, seed=32)
    truth = result.truth
    # Substitutes' price cuts take demand away, so the realised direct effect is smaller.
    assert truth["effect_realised"] < 0.95 * truth["effect"]
    diffs = within_product_differences(result.sales, assignment)
    ok, se = within_four_se(diffs, truth["effect_realised"])
    assert ok, (diffs.mean(), truth["effect_realised"], se)
    assert abs(diffs.mean() - truth["effect"]) > 4 * se, "the no-spillover effect is not what is measured"
    without = simulate_sales(products, assignment=assignment, edges=edges, history_days=7, spillover=False, seed=32)
    assert without.truth["effect_realised"] == pytest.approx(without.truth["effect"])


def test_spillover_lowers_demand_of_untreated_substitutes():
    products, edges = simulate_catalog(n_products=1000, n_groups=10, seed=41)
    assignment = time_bound(products["product_id"], 21, seed=41)
    common = dict(assignment=assignment, edges=edges, history_days=7, seed=41)
    with_spill = simulate_sales(products, spillover=True, **common)
    without = simulate_sales(products, spillover=False, **common)
    control = assignment.filter(pl.col("treated") == 0).select("product_id", "date")
    on = with_spill.sales.join(control, on=["product_id", "date"])["units"].mean()
    off = without.sales.join(control, on=["product_id", "date"])["units"].mean()
    # A control product has on average about 1.3 of incoming weight from treated
    # substitutes, so a 10% cut of theirs lowers its demand by about 13%.
    assert on / off < 0.95
    assert with_spill.truth["effect_global"] < with_spill.truth["effect"]
    assert without.truth["effect_global"] == without.truth["effect"]


def test_carryover_keeps_demand_up_after_treatment_stops():
    products, _ = simulate_catalog(n_products=1000, n_groups=10, seed=51)
    assignment = time_bound(products["product_id"], 28, seed=51, treated_days=14)
    common = dict(assignment=assignment, history_days=7, seed=51)
    lingering = simulate_sales(products, carryover_days=7.0, **common)
    none = simulate_sales(products, carryover_days=0.0, **common)
    # The truth is the effect of treatment on a treated day, so carryover leaves it alone.
    assert lingering.truth["effect"] == none.truth["effect"]

    arm = assignment.group_by("product_id").agg(pl.col("treated").max().alias("arm"))
    post_start = EXPERIMENT_START + dt.timedelta(days=14)

    def post_mean(result, arm_value, first, last):
        window = pl.col("date").is_between(post_start + dt.timedelta(days=first), post_start + dt.timedelta(days=last))
        return result.sales.filter(window).join(arm.filter(pl.col("arm") == arm_value), on="product_id")["units"].mean()

    # With a 7-day time constant the dose averages about 0.4 over the 14 days after the
    # stop, about +9% demand for elasticity -2 and a 10% cut; noise is about 1.5%.
    assert post_mean(lingering, 1, 0, 13) / post_mean(none, 1, 0, 13) > 1.04
    assert post_mean(lingering, 0, 0, 13) / post_mean(none, 0, 0, 13) == pytest.approx(1.0, abs=0.03)
    early = post_mean(lingering, 1, 0, 2) / post_mean(none, 1, 0, 2)
    late = post_mean(lingering, 1, 11, 13) / post_mean(none, 1, 11, 13)
    assert early > late + 0.05  # the lingering effect decays (about +17% vs +4%)


def test_outliers_are_flagged_and_shift_late():
    products, _ = simulate_catalog(n_products=1000, n_groups=4, seed=61)
    assignment = time_bound(products["product_id"], 30, seed=61)
    result = simulate_sales(products, assignment=assignment, history_days=90, outlier_share=0.1, seed=61)
    flags = result.product_truth.select("product_id", "outlier")
    assert flags["outlier"].sum() == 100
    assert result.truth["n_outliers"] == 100
    first_day = result.sales["date"].min()
    level = result.sales.group_by("product_id").agg(
        early=pl.col("units").filter(pl.col("date") < first_day + dt.timedelta(days=60)).mean(),
        late=pl.col("units").filter(pl.col("date") >= first_day + dt.timedelta(days=110)).mean(),
    )
    jump = level.join(flags, on="product_id").with_columns(
        size=((pl.col("late") + 1) / (pl.col("early") + 1)).log().abs()
    )
    # Shifts are N(0, 1.5) in logs: median |shift| about 1.0, about 0.8 once shifts that
    # start inside the last 10 days are diluted, with a spread near 0.1 over 100 outliers.
    # Ordinary products move only through trend, treatment and count noise (median ~0.17).
    assert jump.filter(pl.col("outlier"))["size"].median() > 0.5
    assert jump.filter(~pl.col("outlier"))["size"].median() < 0.3
    none = simulate_sales(products, assignment=assignment, history_days=90, seed=61)
    assert not none.product_truth["outlier"].any()


# --------------------------------------------------------------------------- validation


def _catalog():
    return pl.DataFrame({"product_id": [1, 2, 3], "base_price": [10.0, 12.0, 9.5]})


@pytest.mark.parametrize(
    ("call", "error", "fragments"),
    [
        (
            lambda: simulate_sales(pl.DataFrame({"sku": [1]}), end=dt.date(2024, 1, 1)),
            MissingColumnError,
            ["products", "'product_id'"],
        ),
        (
            lambda: simulate_sales(pl.DataFrame({"product_id": [1, 1]}), end=dt.date(2024, 1, 1)),
            DuplicateKeyError,
            ["products", "product_id=1"],
        ),
        (
            lambda: simulate_sales(
                _catalog().with_columns(base_price=pl.Series([10.0, -1.5, 0.0])), end=dt.date(2024, 1, 1)
            ),
            DataError,
            ["base_price", "2 product(s)", "-1.5"],
        ),
        (
            lambda: simulate_sales(_catalog(), assignment=time_bound(pl.Series([1, 2, 999]), 3)),
            DataError,
            ["assignment", "1 product_id", "999"],
        ),
        (
            lambda: simulate_sales(_catalog(), assignment=time_bound(pl.Series([1]), 3).drop("treated")),
            MissingColumnError,
            ["assignment", "'treated'"],
        ),
        (
            lambda: simulate_sales(
                _catalog(), assignment=time_bound(pl.Series([1]), 3).with_columns(treated=pl.lit(2))
            ),
            DataError,
            ["'treated'", "2"],
        ),
        (
            lambda: simulate_sales(
                _catalog(),
                end=dt.date(2024, 1, 1),
                edges=pl.DataFrame({"src": [1], "dst": [42], "weight": [0.5]}),
            ),
            DataError,
            ["edges", "dst", "42"],
        ),
        (
            lambda: simulate_sales(_catalog(), end=dt.date(2024, 1, 1), edges=pl.DataFrame({"src": [1], "dst": [2]})),
            MissingColumnError,
            ["edges", "'weight'"],
        ),
        (
            lambda: simulate_sales(_catalog(), end=dt.date(2024, 1, 1), price_change=-1.0),
            UsageError,
            ["`price_change`", "-1.0"],
        ),
        (
            lambda: simulate_sales(_catalog(), end=dt.date(2024, 1, 1), dispersion=0),
            UsageError,
            ["`dispersion`", "0"],
        ),
        (lambda: simulate_sales(_catalog()), DataError, ["no dates", "end"]),
        (
            lambda: simulate_sales(_catalog(), start=dt.date(2024, 2, 1), end=dt.date(2024, 1, 1)),
            DataError,
            ["2024-01-01", "2024-02-01"],
        ),
        (lambda: simulate_catalog(n_products=3, n_groups=5), UsageError, ["`n_groups`", "5", "3 products"]),
        (lambda: simulate_catalog(community_size=0), UsageError, ["`community_size`", "0"]),
    ],
)
def test_bad_inputs_raise_named_errors(call, error, fragments):
    with pytest.raises(error) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value)


# --- Planted elasticities and a price policy (products' own `elasticity`, `price_change`) ---


def test_catalog_ranges_add_planted_columns_and_change_nothing_else():
    plain, plain_edges = simulate_catalog(300, 6, 5, seed=4)
    planted, edges = simulate_catalog(
        300, 6, 5, seed=4, elasticity_range=(-3.0, -0.3), price_change_range=(-0.2, -0.05)
    )
    assert planted.drop("elasticity", "price_change").equals(plain) and edges.equals(plain_edges)
    per_category = planted.group_by("category").agg(
        pl.col("elasticity").n_unique().alias("n"), pl.col("elasticity").first()
    )
    assert (per_category["n"] == 1).all() and per_category["elasticity"].is_between(-3.0, -0.3).all()
    assert per_category["elasticity"].n_unique() == 6
    assert planted["price_change"].is_between(-0.2, -0.05).all() and planted["price_change"].n_unique() > 250
    with pytest.raises(UsageError, match="`price_change_range`"):
        simulate_catalog(10, 2, seed=0, price_change_range=(-1.2, -0.1))
    with pytest.raises(UsageError, match="`elasticity_range`"):
        simulate_catalog(10, 2, seed=0, elasticity_range=(-0.3, -3.0))


def test_a_price_policy_and_planted_elasticities_drive_prices_units_and_truth():
    """Each product's own price change sets its treated price and its effect; each product's
    own elasticity is the one planted; a category's truth is its planted elasticity."""
    products, edges = simulate_catalog(
        600, 3, 5, seed=2, elasticity_range=(-3.0, -0.3), price_change_range=(-0.25, -0.05)
    )
    assignment = time_bound(products["product_id"], 28, seed=5)
    sim = simulate_sales(
        products, assignment=assignment, edges=edges, history_days=60, promo_rate=0.0, spillover=False, seed=8
    )
    rows = sim.sales.join(assignment, on=["product_id", "date"]).join(products, on="product_id")
    expected = pl.when(pl.col("treated") == 1).then(1 + pl.col("price_change")).otherwise(1.0) * pl.col("base_price")
    assert (rows["price"] - rows.select(expected).to_series()).abs().max() < 1e-9
    truth = sim.product_truth.join(products, on="product_id")
    assert (truth["elasticity"] - truth["elasticity_right"]).abs().max() == 0
    # cate = baseline * (exp(e log(1 + c)) - 1), product by product.
    want = truth["baseline"] * ((truth["elasticity_right"] * (1 + truth["price_change"]).log()).exp() - 1)
    assert (truth["cate"] - want).abs().max() < 1e-9
    planted = dict(products.group_by("category").agg(pl.col("elasticity").first()).iter_rows())
    assert sim.truth["elasticity_by_group"].keys() == planted.keys()
    for group, value in sim.truth["elasticity_by_group"].items():
        assert value == pytest.approx(planted[group], abs=1e-9)


def test_the_group_truth_solves_its_equation_when_elasticities_differ_inside_a_group():
    """With elasticities that vary inside a category, its truth is the one elasticity that
    moves the category's treated demand as the products' own do."""
    products, _ = simulate_catalog(200, 2, 5, seed=3, price_change_range=(-0.3, -0.02))
    products = products.with_columns(elasticity=-0.5 - 2.0 * (pl.col("quality").rank() / pl.len()))
    assignment = time_bound(products["product_id"], 14, seed=1)
    sim = simulate_sales(products, assignment=assignment, history_days=30, promo_rate=0.0, seed=1)
    from pricelab_cli.simulate.inputs import SalesPanel
    from pricelab_cli.simulate.sales import _Draws
    from pricelab_cli.simulate.settings import SalesSettings

    arguments = dict(
        history_days=30,
        price_change=-0.1,
        elasticity=-2.0,
        heterogeneity=0.5,
        trend_sd=0.3,
        weekly=0.2,
        shock_sd=0.05,
        promo_rate=0.0,
        promo_depth=0.2,
        outlier_share=0.0,
        contamination=0.0,
        carryover_days=0.0,
        base_units=20.0,
        dispersion=5.0,
        spillover=True,
        contamination_kinds=(),
        seed=1,
    )
    settings_ = SalesSettings.checked(arguments)
    panel = SalesPanel.from_tables(products, assignment, None, start=None, end=None, history_days=30)
    draws = _Draws.of(panel, settings_)
    rows, days = panel.analysed_rows, panel.analysed_days
    on = panel.treated[rows, days]
    rows, days = rows[on], days[on]
    mu = draws.lambda0[rows, days]
    d = np.log1p(panel.price_change[rows])
    own = panel.elasticity[rows]
    category = products["category"].to_numpy()[rows]
    for group, value in sim.truth["elasticity_by_group"].items():
        here = category == group
        assert own[here].min() < value < own[here].max()
        assert (mu[here] * np.exp(value * d[here])).sum() == pytest.approx(
            (mu[here] * np.exp(own[here] * d[here])).sum(), rel=1e-10
        )


def test_a_price_change_of_minus_one_or_less_in_products_is_a_data_error():
    products = pl.DataFrame({"product_id": [1, 2], "price_change": [-0.1, -1.0]})
    with pytest.raises(DataError, match="price_change.*greater than -1.*product 2"):
        simulate_sales(products, end=dt.date(2024, 1, 10), history_days=5)
