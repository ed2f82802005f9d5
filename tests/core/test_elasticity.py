"""Own- and cross-price elasticities, profit and the profit-maximising price change, against
the truth planted by the simulator (``truth.json``'s ``elasticity_by_group`` and
``cross_elasticity_by_group``).

Tolerances are in the estimate's own standard errors (four: a correct estimator fails one
group of ten about once in 1,500 runs), with fixed seeds. The studies over many experiments
(coverage, median error, real panels) are in ``test_elasticity_study.py`` (``make
test-full``).
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import polars as pl
import pytest

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.elasticity import ELASTICITY_COLUMNS, OPTIMUM_COLUMNS, estimate_elasticity
from pricelab_cli.errors import DataError, DuplicateKeyError, PricelabWarning
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2024, 6, 3)


def experiment(kind: str, *, n=1000, groups=10, spillover=True, seed=1, promo_rate=0.05, price_change=(-0.2, -0.05)):
    products, edges = simulate_catalog(
        n, groups, 5, seed=seed, elasticity_range=(-3.0, -0.5), price_change_range=price_change
    )
    products = products.with_columns(cost=(pl.col("base_price") * 0.55).round(2))
    design = make_design(kind, salt=f"el{seed}", start=START, end=START + dt.timedelta(days=27))
    assignment = assign(design, products)
    sim = simulate_sales(
        products,
        assignment=assignment,
        edges=edges,
        history_days=200,
        spillover=spillover,
        promo_rate=promo_rate,
        seed=seed + 10,
    )
    return products, edges, assignment, sim


def standardised(table: pl.DataFrame, truth: dict[str, float], kind: str) -> np.ndarray:
    rows = table.filter(pl.col("kind") == kind).join(
        pl.DataFrame({"group": list(truth), "truth": list(truth.values())}), on="group"
    )
    assert rows.height == len(truth)
    return ((rows["estimate"] - rows["truth"]) / rows["se"]).to_numpy()


@pytest.fixture(scope="module")
def switchback():
    products, edges, assignment, sim = experiment("random-days")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PricelabWarning)
        result = estimate_elasticity(sim.sales, assignment, products, edges=edges, cost_col="cost", n_bootstrap=200)
    return products, edges, assignment, sim, result


def test_own_and_cross_elasticities_are_recovered_in_a_switchback(switchback):
    _, _, _, sim, result = switchback
    assert tuple(result.table.columns) == ELASTICITY_COLUMNS
    assert set(result.designs.values()) == {"within"}
    own = standardised(result.table, sim.truth["elasticity_by_group"], "own")
    cross = standardised(result.table, sim.truth["cross_elasticity_by_group"], "cross")
    assert np.abs(own).max() < 4 and np.abs(cross).max() < 4
    # Not biased one way: the mean standardised error of ten groups is within 4 / sqrt(10).
    assert abs(own.mean()) < 4 / np.sqrt(len(own)) and abs(cross.mean()) < 4 / np.sqrt(len(cross))
    rows = result.table.filter(pl.col("kind") == "own")
    assert (rows["ci_low"] < rows["estimate"]).all() and (rows["estimate"] < rows["ci_high"]).all()
    assert (rows["n_products"] == 100).all()


def test_a_time_bound_experiment_compares_the_arms():
    """Own elasticities between arms; no cross-elasticity (a product's exposure never changes
    over its days), and a warning that says so and points to ipw."""
    products, edges, assignment, sim = experiment("time-bound", spillover=False, seed=2)
    with pytest.warns(PricelabWarning, match=r"in 10 group\(s\) no product's substitutes changed arm.*pricelab ipw"):
        result = estimate_elasticity(sim.sales, assignment, products, edges=edges, n_bootstrap=200, seed=3)
    assert set(result.designs.values()) == {"between"}
    own = standardised(result.table, sim.truth["elasticity_by_group"], "own")
    assert np.abs(own).max() < 4 and abs(own.mean()) < 4 / np.sqrt(len(own))
    cross = result.table.filter(pl.col("kind") == "cross")
    assert cross.height == 10 and cross["estimate"].null_count() == 10
    assert "cross" not in result.weak


def test_a_group_whose_prices_did_not_move_gets_no_number_and_a_warning():
    products, _, assignment, _ = experiment("random-days", n=400, groups=4, spillover=False, seed=4)
    # The policy leaves cat_02's prices alone (and its demand: the elasticity has nothing to act on).
    products = products.with_columns(
        price_change=pl.when(pl.col("category") == "cat_02").then(0.0).otherwise(pl.col("price_change"))
    )
    sim = simulate_sales(products, assignment=assignment, history_days=120, promo_rate=0.05, seed=5)
    with pytest.warns(PricelabWarning, match=r"barely moved the price in 1 group.*'cat_02'"):
        result = estimate_elasticity(sim.sales, assignment, products, n_bootstrap=200)
    row = result.table.filter((pl.col("group") == "cat_02") & (pl.col("kind") == "own")).row(0, named=True)
    assert row["estimate"] is None and row["se"] is None and row["ci_low"] is None
    assert "cat_02" in result.weak["own"]
    others = result.table.filter((pl.col("group") != "cat_02") & (pl.col("kind") == "own"))
    assert others["estimate"].null_count() == 0


def test_profit_per_product_per_day_against_the_planted_truth(switchback):
    """The truth: per product, its baseline times the change in its margin times units,
    ``(p (1 + c) - cost) exp(e log(1 + c)) - (p - cost)`` on treated days, over its
    treated-day share (the simulator's promotions and spillover are left out of the truth:
    they fall on both arms alike and the estimate compares the arms)."""
    products, _, assignment, sim, result = switchback
    treated_share = assignment.group_by("product_id").agg(pl.col("treated").mean().alias("share"))
    truth = (
        sim.product_truth.select("product_id", "baseline", "elasticity")
        .join(products.select("product_id", "category", "base_price", "price_change", "cost"), on="product_id")
        .join(treated_share, on="product_id")
        .with_columns(
            change=pl.col("baseline")
            * (
                (pl.col("base_price") * (1 + pl.col("price_change")) - pl.col("cost"))
                * ((pl.col("elasticity") * (1 + pl.col("price_change")).log()).exp())
                - (pl.col("base_price") - pl.col("cost"))
            )
        )
    )
    by_group = dict(truth.group_by("category").agg(pl.col("change").mean()).iter_rows())
    profit = result.table.filter(pl.col("kind") == "profit")
    groups = profit.filter(pl.col("group").is_not_null())
    z = (groups["estimate"] - groups["group"].replace_strict(by_group)) / groups["se"]
    assert z.abs().max() < 4
    catalog = profit.filter(pl.col("group").is_null()).row(0, named=True)
    assert catalog["n_products"] == products.height
    assert abs(catalog["estimate"] - truth["change"].mean()) < 4 * catalog["se"]


def test_the_optimum_is_the_constant_elasticity_rule_with_its_tested_range(switchback):
    products, _, _, sim, result = switchback
    optimum = result.optimum
    assert tuple(optimum.columns) == OPTIMUM_COLUMNS
    own = dict(result.table.filter(pl.col("kind") == "own").select("group", "estimate").iter_rows())
    for row in optimum.iter_rows(named=True):
        e = own[row["group"]]
        assert row["elasticity"] == e
        if e < -1:
            assert row["price_change"] == pytest.approx(row["cost_share"] * e / (1 + e) - 1, rel=1e-12)
        # The planted policy cut prices by 5-20% (promotions add noise to each product's change).
        assert -0.3 < row["tested_low"] < -0.1 and row["tested_high"] == 0.0
        if row["price_change"] is None:  # inelastic: no optimum, no flag
            assert e >= -1 and row["inside_tested"] is None
            continue
        inside = row["tested_low"] <= row["price_change"] <= row["tested_high"]
        assert row["inside_tested"] == inside
    # The simulator's costs are 55% of the base price: the cost share is 0.55 up to rounding.
    assert optimum["cost_share"].is_between(0.549, 0.551).all()


def test_the_result_is_the_same_whatever_the_row_order_and_seed_replays(switchback):
    products, edges, assignment, sim, result = switchback
    shuffled = sim.sales.sample(fraction=1.0, shuffle=True, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PricelabWarning)
        again = estimate_elasticity(shuffled, assignment, products, edges=edges, cost_col="cost", n_bootstrap=200)
    assert again.table.equals(result.table) and again.optimum.equals(result.optimum)


def test_clusters_are_resampled_whole():
    products, _, assignment, sim = experiment("random-days", n=400, groups=4, spillover=False, seed=6)
    clustered = assignment.with_columns(cluster_id=(pl.col("product_id") % 40).cast(pl.Int64))
    by_product = estimate_elasticity(sim.sales, assignment, products, n_bootstrap=200)
    by_cluster = estimate_elasticity(sim.sales, clustered, products, n_bootstrap=200)
    # The same data, other resampling units (and halves of units): close, not equal.
    gap = (by_cluster.table["estimate"] - by_product.table["estimate"]).abs()
    assert (gap < by_product.table["se"]).all()
    assert by_cluster.table["n_products"].to_list() == by_product.table["n_products"].to_list()
    assert not by_cluster.table["se"].equals(by_product.table["se"])


def test_bad_input_names_the_column():
    products, _, assignment, sim = experiment("random-days", n=100, groups=2, spillover=False, seed=7)
    with pytest.raises(DataError, match=r"no price column 'cost'.*--price-col"):
        estimate_elasticity(sim.sales, assignment, products, price_col="cost")
    with pytest.raises(DataError, match=r"no column 'segment'.*--group-col"):
        estimate_elasticity(sim.sales, assignment, products, group_col="segment")
    # The substitutes are ipw's: an edge given twice is refused, as ipw refuses it.
    edges = pl.DataFrame({"src": [1, 1], "dst": [2, 2], "weight": [0.5, 0.5]})
    with pytest.raises(DuplicateKeyError, match=r"edges: 2 rows repeat a \(src, dst\) key"):
        estimate_elasticity(sim.sales, assignment, products, edges=edges)
    negative = products.with_columns(cost=pl.when(pl.col("product_id") == 3).then(-1.0).otherwise(pl.col("cost")))
    with pytest.raises(DataError, match=r"column 'cost' must be a unit cost of 0 or more.*product 3"):
        estimate_elasticity(sim.sales, assignment, negative, cost_col="cost")


def test_elasticity_by_a_feature_finds_the_price_sensitive_products():
    """Planted elasticities from -1 (lowest quality) to -2.5 (highest): the quartiles of
    quality come out in that order, each a quarter of the products; a categorical column
    by its values."""
    products, _, assignment, _ = experiment("random-days", spillover=False, seed=8)
    products = products.with_columns(elasticity=-1.0 - 1.5 * (pl.col("quality").rank() / pl.len()))
    sim = simulate_sales(products, assignment=assignment, history_days=200, seed=9)
    result = estimate_elasticity(sim.sales, assignment, products, n_bootstrap=200, by=["quality", "brand"])
    quality = result.by.filter(pl.col("feature") == "quality")
    assert quality["bin"].str.slice(0, 2).to_list() == ["q1", "q2", "q3", "q4"]
    assert (quality["n_products"] == 250).all()
    estimates = quality["estimate"].to_numpy()
    assert (np.diff(estimates) < 0).all() and estimates[0] - estimates[-1] > 4 * quality["se"].max()
    brands = result.by.filter(pl.col("feature") == "brand")
    assert sorted(brands["bin"].to_list()) == ["acme", "bolt", "crest", "delta", "ember"]
    assert brands["n_products"].sum() == products.height
    with pytest.raises(DataError, match="no column 'size_class' for --by"):
        estimate_elasticity(sim.sales, assignment, products, by=["size_class"])


def test_the_within_moment_ignores_any_error_in_a_products_counterfactual_level():
    """``z`` is centred on its weighted mean over the whole unit, so the weights times the
    centred ``z`` sum to 0 in every unit: a constant added to a unit's counterfactual (any
    level error) leaves the moment's sums unchanged, to rounding, however the unit's two
    halves are weighted."""
    from pricelab_cli.elasticity import _Moment

    rng = np.random.default_rng(3)
    n_units, days = 40, 28
    unit = np.repeat(np.arange(n_units), days)
    z = rng.integers(0, 2, n_units * days).astype(np.float64)
    half = np.tile(np.arange(days) % 2, n_units)
    weight = np.where(half == 0, rng.uniform(0.1, 1, n_units)[unit], rng.uniform(0.1, 1, n_units)[unit])
    y = rng.poisson(20, n_units * days).astype(np.float64)
    c = rng.uniform(15, 25, n_units * days)
    common = dict(y=y, x=-0.1 * z, z=z, unit=unit, n_units=n_units, weight=weight, within=True)
    nodes = np.linspace(-3, 0, 5)
    base = _Moment(c=c, **common).node_statistics(nodes)
    shifted = _Moment(c=c + rng.normal(0, 5, n_units)[unit], **common).node_statistics(nodes)
    np.testing.assert_allclose(shifted, base, rtol=0, atol=1e-9 * np.abs(base).max())
    assert np.abs(base).max() > 1  # the sums themselves are not 0


def test_a_units_price_change_slope_is_shrunk_towards_the_groups_by_its_noise():
    """Empirical Bayes on each unit's slope of x on z: units whose slopes are exact keep
    them; a noisy unit's slope moves towards the units' mean, the more the noisier."""
    from pricelab_cli.elasticity import _slope

    rng = np.random.default_rng(4)
    n_units, days = 60, 14
    unit = np.repeat(np.arange(n_units), days)
    z = np.tile(np.arange(days) % 2, n_units).astype(np.float64)
    true = rng.uniform(-0.2, -0.05, n_units)
    rows = np.ones(n_units * days, dtype=bool)
    exact = _slope(z, true[unit] * z, unit, n_units, rows)
    np.testing.assert_allclose(exact, true, atol=1e-9)  # no noise: nothing to shrink
    noise_sd = np.where(np.arange(n_units) < 30, 0.01, 0.2)  # the second half far noisier
    x = true[unit] * z + rng.normal(0, 1, n_units * days) * noise_sd[unit]
    raw = np.array([np.polyfit(z[unit == u], x[unit == u], 1)[0] for u in range(n_units)])
    shrunk = _slope(z, x, unit, n_units, rows)
    centre = raw.mean()
    pulled = 1 - (shrunk - centre) / (raw - centre)  # the share of the way to the centre
    # Expected: a noisy slope's sampling variance (0.2^2 / 3.5 = 0.011) against the true
    # slopes' spread (0.15^2 / 12 = 0.0019) pulls it about 0.86 of the way, a precise one
    # (0.01) about 0.02; the spread is itself estimated, so the bounds are loose.
    assert np.median(pulled[:30]) < 0.1 and np.median(pulled[30:]) > 0.5
    # and the shrunk slopes are nearer the truth than the raw ones
    assert np.sqrt(np.mean((shrunk - true) ** 2)) < 0.7 * np.sqrt(np.mean((raw - true) ** 2))
