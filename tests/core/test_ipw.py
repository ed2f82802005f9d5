"""Tests for IPW spillover estimates: exposure probabilities, Hajek weights, known truth.

Truth in the simulation studies comes from ``simulate``'s model (see its module docstring):
with ``L = log(1 + price_change)``, a product ``i`` whose in-substitutes ``j`` are treated
independently with probability ``q`` has, on a day in condition (own arm ``a``, exposed
``e``), expected units ``lambda0_it * exp(e_i L a) * E[exp(L S) | e]`` with
``S = sum_j w_ji Z_j``. Exposed means ``S > 0``, so ``E[exp(L S) | S > 0] =
(prod_j (1 - q + q exp(L w_ji)) - (1 - q)^K) / (1 - (1 - q)^K)`` and the per-product truths
are ``baseline_i`` times

- direct: ``exp(e_i L) - 1`` (the simulator's ``cate``),
- spillover: ``E[exp(L S) | S > 0] - 1``,
- total: ``exp(e_i L) E[exp(L S) | S > 0] - 1``,

averaged over the products in each contrast (every product has the same number of days).
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.errors import DataError, DuplicateKeyError, PricelabWarning, UsageError
from pricelab_cli.simulate import simulate_catalog, simulate_sales
from pricelab_cli.spillover.cluster import leiden_clusters
from pricelab_cli.spillover.ipw import (
    DIRECT,
    EFFECT_COLUMNS,
    NEITHER,
    PROBABILITY_COLUMNS,
    SPILLOVER,
    TOTAL,
    exposure_probs,
    hajek_estimates,
    ipw_effects,
)

D = dt.date
START = D(2026, 3, 2)


def probs_of(cells: pl.DataFrame, product) -> np.ndarray:
    """The (days, 4) probabilities of one product."""
    return cells.filter(pl.col("product_id") == product).select(PROBABILITY_COLUMNS).to_numpy()


# --------------------------------------------------------------------------- exposure probabilities


def test_exact_probabilities_by_hand():
    products = pl.DataFrame({"product_id": ["A", "B", "C", "D"]})
    edges = pl.DataFrame({"src": ["B", "C"], "dst": ["A", "A"], "weight": [0.5, 0.5]})
    design = make_design("time-bound", salt="hand", start=START, end=D(2026, 3, 3), treat_share=0.3)
    cells = exposure_probs(assign(design, products), edges, design, products).cells
    # A: two independent in-substitutes.
    assert np.allclose(probs_of(cells, "A"), [[0.7**3, 0.7 * (1 - 0.49), 0.3 * 0.49, 0.3 - 0.3 * 0.49]] * 2)
    # D: no in-substitute, never exposed.
    assert np.allclose(probs_of(cells, "D"), [[0.7, 0.0, 0.3, 0.0]] * 2)
    # Clusters {A, B}, {C}, {D}: B shares A's arm, so treated A is always exposed.
    clusters = pl.DataFrame({"product_id": ["A", "B", "C", "D"], "cluster_id": [1, 1, 2, 3]})
    cells = exposure_probs(
        assign(design, products, clusters=clusters), edges, design, products, clusters=clusters
    ).cells
    assert np.allclose(probs_of(cells, "A"), [[0.49, 0.21, 0.0, 0.3]] * 2)


def test_substitutes_outside_the_experiment_never_expose():
    """Triggered windows: B is in the experiment on A's first day only."""
    products = pl.DataFrame({"product_id": ["A", "B"]})
    edges = pl.DataFrame({"src": ["B"], "dst": ["A"], "weight": [0.9]})
    events = pl.DataFrame({"product_id": ["A", "B"], "event_date": [START, START - dt.timedelta(days=1)]})
    design = make_design("triggered", salt="win", duration_days=2, treat_share=0.5)
    assignment = assign(design, products, events=events)
    cells = exposure_probs(assignment, edges, design, products).cells
    assert np.allclose(probs_of(cells, "A"), [[0.25, 0.25, 0.25, 0.25], [0.5, 0.0, 0.5, 0.0]])


@pytest.mark.parametrize(
    "kind, use_clusters",
    [("random-days", False), ("crossover", True), ("triggered", False), ("time-bound", True)],
)
def test_exact_probabilities_agree_with_replays_of_the_design(kind, use_clusters):
    products, edges = simulate_catalog(60, 3, 5, seed=1)
    clusters = leiden_clusters(edges, products, max_size=3, seed=0).clusters if use_clusters else None
    events = None
    if kind == "random-days":
        design = make_design(kind, salt="r", start=START, end=D(2026, 3, 8), block_days=2, treat_share=0.4)
    elif kind == "crossover":
        design = make_design(kind, salt="r", start=START, phase_days=3, blackout_days=1, treat_share=0.3)
    elif kind == "triggered":
        design = make_design(kind, salt="r", duration_days=4, treat_share=0.5)
        offsets = np.random.default_rng(2).integers(0, 6, 60)
        events = pl.DataFrame(
            {"product_id": products["product_id"], "event_date": [START + dt.timedelta(days=int(o)) for o in offsets]}
        )
    else:
        design = make_design(kind, salt="r", start=START, end=D(2026, 3, 4), treat_share=0.6)
    assignment = assign(design, products, clusters=clusters, events=events)
    exact = exposure_probs(assignment, edges, design, products, clusters=clusters)
    replays = 2000
    replay = exposure_probs(
        assignment, edges, design, products, clusters=clusters, method="replay", replays=replays, seed=9
    )
    assert exact.method == "exact" and replay.method == "replay"
    assert exact.cells.select("product_id", "date", "condition").equals(
        replay.cells.select("product_id", "date", "condition")
    )
    p = exact.cells.select(PROBABILITY_COLUMNS).to_numpy()
    p_hat = replay.cells.select(PROBABILITY_COLUMNS).to_numpy()
    assert np.allclose(p.sum(1), 1.0)
    # Monte Carlo error of a share over 2001 draws (the realised one included), 5 sd.
    tolerance = 5 * np.sqrt(p * (1 - p) / (replays + 1)) + 1.0 / (replays + 1)
    assert (np.abs(p - p_hat) <= tolerance).all(), np.abs(p - p_hat).max()
    assert exact.design_mismatch == 0.0


def test_threshold_compares_the_treated_share_of_incoming_weight():
    products = pl.DataFrame({"product_id": [1, 2, 3]})
    edges = pl.DataFrame({"src": [2, 3], "dst": [1, 1], "weight": [0.2, 0.8]})
    design = make_design("random-days", salt="thr", start=START, end=D(2026, 3, 29))
    assignment = assign(design, products)
    result = exposure_probs(assignment, edges, design, products, exposure_threshold=0.5, replays=400)
    assert result.method == "replay" and result.n_replays == 400
    arms = assignment.pivot(on="product_id", index="date", values="treated")
    exposed = result.cells.filter(pl.col("product_id") == 1).join(arms, on="date")
    # Exposed exactly when product 3 (80% of the weight) is treated.
    assert (exposed["exposed"] == (exposed["3"] == 1)).all()
    p = probs_of(result.cells, 1)
    assert np.allclose(p.mean(0), [0.25, 0.25, 0.25, 0.25], atol=0.04)


def test_an_assignment_not_drawn_from_the_design_is_flagged():
    products, edges = simulate_catalog(50, 2, 5, seed=3)
    design = make_design("random-days", salt="true-salt", start=START, end=D(2026, 3, 8))
    other = make_design("random-days", salt="other-salt", start=START, end=D(2026, 3, 8))
    assert exposure_probs(assign(design, products), edges, design, products).design_mismatch == 0.0
    mismatch = exposure_probs(assign(other, products), edges, design, products).design_mismatch
    assert 0.4 < mismatch < 0.6


# --------------------------------------------------------------------------- Hajek


def test_hajek_estimates_by_hand():
    outcome = np.array([10.0, 12.0, 4.0, 6.0, 1.0, 3.0, 100.0])
    condition = np.array([DIRECT, DIRECT, NEITHER, NEITHER, SPILLOVER, SPILLOVER, TOTAL])
    probs = np.tile([0.25, 0.25, 0.25, 0.25], (7, 1))
    probs[0] = [0.5, 0.0, 0.25, 0.25]  # weight 4 in the direct condition
    probs[6] = [0.0, 0.5, 0.0, 0.5]  # cannot be "neither": left out of every contrast
    effects, eligible = hajek_estimates(outcome, condition, probs, np.arange(7), bootstrap=200)
    got = {row["effect"]: row for row in effects.iter_rows(named=True)}
    assert effects.columns == list(EFFECT_COLUMNS)
    # Direct: weights 4 (cell 0) and 4 (cell 1) -> mean 11; neither: mean 5.
    assert got["direct"]["estimate"] == pytest.approx(11.0 - 5.0)
    assert got["spillover"]["estimate"] == pytest.approx(2.0 - 5.0)
    assert got["direct"]["n"] == 4 and got["total"]["estimate"] is None
    assert not eligible[6].any()
    assert got["direct"]["ci_low"] == pytest.approx(
        got["direct"]["estimate"] - 1.959964 * got["direct"]["se"], rel=1e-6
    )


def test_clip_bounds_the_weights():
    outcome = np.array([10.0, 0.0, 2.0, 2.0])
    condition = np.array([DIRECT, DIRECT, NEITHER, NEITHER])
    probs = np.array([[0.5, 0.0, 0.01, 0.49], [0.5, 0.0, 0.5, 0.0], [0.5, 0.0, 0.5, 0.0], [0.5, 0.0, 0.5, 0.0]])
    raw, _ = hajek_estimates(outcome, condition, probs, np.arange(4), bootstrap=50)
    clipped, _ = hajek_estimates(outcome, condition, probs, np.arange(4), bootstrap=50, clip=0.1)
    assert raw["estimate"][0] == pytest.approx(10 * 100 / 102 - 2)
    assert clipped["estimate"][0] == pytest.approx(10 * 10 / 12 - 2)


def test_products_that_cannot_be_in_a_contrast_are_reported():
    products, edges = simulate_catalog(80, 4, 5, seed=4)
    lonely = pl.DataFrame({"product_id": [1000]}, schema={"product_id": products.schema["product_id"]})
    products = pl.concat([products.select("product_id"), lonely])
    design = make_design("random-days", salt="lo", start=START, end=D(2026, 3, 15))
    assignment = assign(design, products)
    sales = simulate_sales(products, assignment=assignment, edges=edges, history_days=35, seed=5).sales
    result = ipw_effects(sales, assignment, edges, design, products, bootstrap=50)
    left = result.left_out
    assert left.filter(pl.col("product_id") == 1000)["effect"].to_list() == ["spillover", "total"]
    assert "never exposed while untreated" in left["reason"][0]
    clusters = leiden_clusters(edges, products, max_size=5, seed=0).clusters
    clustered = assign(design, products, clusters=clusters)
    result = ipw_effects(sales, clustered, edges, design, products, clusters=clusters, bootstrap=50)
    direct_out = result.left_out.filter(pl.col("effect") == "direct")
    assert direct_out.height > 40, "products sharing a cluster with a substitute cannot be 'direct'"
    assert "shares its randomisation unit" in direct_out["reason"][0]


def test_bad_input_is_named():
    products, edges = simulate_catalog(20, 2, 5, seed=6)
    design = make_design("time-bound", salt="b", start=START, end=D(2026, 3, 3))
    assignment = assign(design, products)
    with pytest.raises(UsageError, match="`exposure_threshold` 1.0"):
        exposure_probs(assignment, edges, design, products, exposure_threshold=1.0)
    with pytest.raises(DataError, match="assignment: 1 product\\(s\\) are not in the products table, e.g. 1"):
        exposure_probs(assignment, edges, design, products.filter(pl.col("product_id") != 1))
    with pytest.raises(DuplicateKeyError, match="edges"):
        exposure_probs(assignment, pl.concat([edges, edges.head(1)]), design, products)
    with pytest.raises(UsageError, match="`clip` 2"):
        hajek_estimates(np.zeros(2), np.zeros(2, dtype=int), np.full((2, 4), 0.25), np.arange(2), clip=2)
    with pytest.warns(PricelabWarning, match="negative weight"):
        exposure_probs(assignment, edges.with_columns(weight=-pl.col("weight")), design, products)


# --------------------------------------------------------------------------- simulation studies

PRICE_CHANGE = -0.10
LOG_CUT = math.log1p(PRICE_CHANGE)


def true_effects(product_truth: pl.DataFrame, edges: pl.DataFrame, q: float) -> dict[str, float]:
    """Direct, spillover and total truth of a product-level design (module docstring)."""
    incoming = edges.group_by("dst").agg(
        pl.len().alias("k"), (1 - q + q * (LOG_CUT * pl.col("weight")).exp()).product().alias("mgf")
    )
    t = product_truth.join(incoming, left_on="product_id", right_on="dst", how="left")
    none = (1 - q) ** t["k"]
    exposed = (t["mgf"] - none) / (1 - none)
    own = (t["elasticity"] * LOG_CUT).exp()
    return {
        "direct": float(t["cate"].mean()),
        "spillover": float((t["baseline"] * (exposed - 1)).mean()),
        "total": float((t["baseline"] * (own * exposed - 1)).mean()),
    }


@pytest.mark.slow
def test_confidence_intervals_cover_the_true_direct_and_spillover_effects():
    """120 simulated random-days experiments on one 200-product catalog.

    Each experiment draws a fresh salt (design randomness) and fresh sales (outcome noise,
    seed 1000 + r). Measured here: coverage direct 0.967, spillover 0.983, total 0.983; mean
    SE / SD of the estimates 0.99, 1.13, 1.06. A 400-experiment run gave coverage 0.96, 0.965,
    0.98 (the unit bootstrap is slightly conservative). With 120 experiments the Monte Carlo
    SD of a 95% coverage is 2 points.
    """
    products, edges = simulate_catalog(200, 10, 5, seed=0)
    rows = []
    for r in range(120):
        design = make_design("random-days", salt=f"coverage-{r}", start=START, end=D(2026, 3, 29))
        assignment = assign(design, products)
        sim = simulate_sales(
            products, assignment=assignment, edges=edges, history_days=56, seed=1000 + r, price_change=PRICE_CHANGE
        )
        result = ipw_effects(sim.sales, assignment, edges, design, products, bootstrap=200, seed=r)
        truth = true_effects(sim.product_truth, edges, design.treat_share)
        rows += [{**row, "truth": truth[row["effect"]]} for row in result.effects.iter_rows(named=True)]
    study = (
        pl.DataFrame(rows)
        .with_columns(cover=(pl.col("ci_low") <= pl.col("truth")) & (pl.col("truth") <= pl.col("ci_high")))
        .group_by("effect")
        .agg(
            pl.col("cover").mean(),
            (pl.col("se").mean() / pl.col("estimate").std()).alias("se_ratio"),
            ((pl.col("estimate") - pl.col("truth")).mean() / pl.col("estimate").std() * np.sqrt(120)).alias("bias_z"),
        )
    )
    by_effect = {row["effect"]: row for row in study.iter_rows(named=True)}
    print(study)
    for effect in ("direct", "spillover"):
        row = by_effect[effect]
        assert 0.90 <= row["cover"] <= 1.0, row
        assert 0.8 <= row["se_ratio"] <= 1.3, row
        assert abs(row["bias_z"]) < 3.5, row


@pytest.mark.slow
def test_cluster_assignment_cuts_the_spillover_bias_of_hpte():
    """History -> spillover_graph -> leiden_clusters -> assign by product or by cluster -> hpte.

    The target is the effect of rolling the price change out to every product
    (``effect_global``: own and substitutes' prices all cut). With products randomised one by
    one, treated and control products see the same share of treated substitutes, so hpte
    measures the direct effect and misses the spillover; randomising clusters of substitutes
    together moves treated products' substitutes into their arm. Measured over these 20
    time-bound experiments: bias 6.54 units a day by product, 0.25 by cluster, a 96%
    reduction (the method source reports 37% on its data; here the planted communities are
    clean and the clusters cut only 4% of the substitutes' weight).
    """
    from pricelab_cli.hpte import estimate_hpte
    from pricelab_cli.spillover.graph import spillover_graph

    products, edges = simulate_catalog(200, 10, 5, seed=0)
    history = simulate_sales(
        products,
        edges=edges,
        end=D(2026, 2, 28),
        history_days=365,
        seed=1,
        dispersion=50.0,
        base_units=50.0,
        promo_rate=0.1,
        promo_depth=0.3,
    ).sales
    clusters = leiden_clusters(spillover_graph(history, products).edges, products, max_size=10, seed=0)
    bias = {"product": [], "cluster": []}
    for r in range(20):
        design = make_design("time-bound", salt=f"bias-{r}", start=START, end=D(2026, 3, 29))
        for level, table in (("product", None), ("cluster", clusters.clusters)):
            assignment = assign(design, products, clusters=table)
            sim = simulate_sales(products, assignment=assignment, edges=edges, history_days=56, seed=2000 + r)
            estimate = estimate_hpte(sim.sales, assignment, n_bootstrap=20, seed=r).effects["estimate"][0]
            bias[level].append(estimate - sim.truth["effect_global"])
    by_product, by_cluster = np.mean(bias["product"]), np.mean(bias["cluster"])
    reduction = 1 - abs(by_cluster) / abs(by_product)
    print(f"bias by product {by_product:.3f}, by cluster {by_cluster:.3f}, reduction {reduction:.1%}")
    assert by_product > 3 * np.std(bias["product"], ddof=1) / np.sqrt(20), "product-level bias is real"
    assert reduction >= 0.5
