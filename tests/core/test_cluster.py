"""Tests for Leiden clustering of the substitutes graph: recovery, the size bound, determinism."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import normalized_mutual_info_score

from pricelab_cli.errors import DataError, EmptyTableError, MissingColumnError, PricelabWarning, UsageError
from pricelab_cli.plots import cluster_size_plot
from pricelab_cli.simulate import simulate_catalog, simulate_sales
from pricelab_cli.spillover.cluster import _balanced_split, leiden_clusters
from pricelab_cli.spillover.graph import spillover_graph


def nmi(products: pl.DataFrame, clusters: pl.DataFrame) -> float:
    joined = products.join(clusters, on="product_id")
    assert joined.height == products.height
    return normalized_mutual_info_score(joined["community"], joined["cluster_id"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_communities_are_recovered_from_the_true_graph(seed):
    products, edges = simulate_catalog(200, 10, 5, seed=seed)
    plain = leiden_clusters(edges, products, seed=0)
    bounded = leiden_clusters(edges, products, max_size=5, seed=0)
    # Measured: NMI 0.93 (modularity merges a few pairs of communities joined by a cross
    # edge: its resolution limit) and 1.00 with the bound at the community size.
    assert nmi(products, plain.clusters) >= 0.85
    assert nmi(products, bounded.clusters) >= 0.95
    assert bounded.sizes.max() <= 5


def test_planted_communities_are_recovered_from_the_estimated_graph():
    """The chain: a year of history -> spillover_graph -> leiden_clusters."""
    products, edges = simulate_catalog(200, 10, 5, seed=3)
    sales = simulate_sales(
        products,
        edges=edges,
        end=dt.date(2025, 12, 31),
        history_days=365,
        seed=4,
        dispersion=50.0,
        base_units=50.0,
        promo_rate=0.1,
        promo_depth=0.3,
    ).sales
    graph = spillover_graph(sales, products)
    result = leiden_clusters(graph.edges, products, max_size=10, seed=0)
    assert nmi(products, result.clusters) >= 0.85
    assert result.sizes.max() <= 10


def test_every_product_appears_once_and_isolated_products_are_alone():
    products = pl.DataFrame({"product_id": ["a", "b", "c", "d", "lonely", "also-lonely"]})
    edges = pl.DataFrame({"src": ["a", "b", "c"], "dst": ["b", "a", "d"], "weight": [0.5, 0.6, 0.7]})
    result = leiden_clusters(edges, products)
    out = result.clusters
    assert out["product_id"].to_list() == products["product_id"].to_list(), "products table order"
    assert out["cluster_id"].to_list() == [1, 1, 2, 2, 3, 4], "ids follow the first product of each cluster"
    assert result.n_isolated == 2 and result.cut_share == 0.0


def test_cut_share_is_the_weight_of_edges_between_clusters():
    # Two triangles joined by one light edge; Leiden keeps the triangles.
    tri = [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3)]
    src, dst = zip(*tri, (2, 3))
    edges = pl.DataFrame({"src": src, "dst": dst, "weight": [1.0] * 6 + [0.5]})
    result = leiden_clusters(edges)
    assert result.n_clusters == 2
    assert result.cut_share == pytest.approx(0.5 / 6.5)


def test_negative_weights_count_by_size_and_directions_add_up():
    edges = pl.DataFrame({"src": [1, 2, 3, 4], "dst": [2, 1, 4, 3], "weight": [-0.9, 0.9, 0.8, 0.8]})
    result = leiden_clusters(edges)
    assert result.clusters.group_by("cluster_id").len()["len"].to_list() == [2, 2]


def test_same_seed_same_clusters_and_reruns_are_identical():
    products, edges = simulate_catalog(300, 5, 12, seed=5)
    a = leiden_clusters(edges, products, max_size=7, seed=3)
    b = leiden_clusters(edges, products, max_size=7, seed=3)
    assert a.clusters.equals(b.clusters)


def test_max_size_resplits_and_reports_it():
    products, edges = simulate_catalog(400, 2, 40, seed=6)
    result = leiden_clusters(edges, products, max_size=12, seed=0)
    assert result.sizes.max() <= 12
    assert result.n_resplit > 0
    assert result.clusters["product_id"].n_unique() == 400


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 60),
    density=st.floats(0.02, 0.6),
    max_size=st.integers(1, 12),
    resolution=st.sampled_from([0.5, 1.0, 2.0]),
    seed=st.integers(0, 10_000),
)
def test_max_size_is_never_exceeded(n, density, max_size, resolution, seed):
    rng = np.random.default_rng(seed)
    m = max(1, int(density * n * (n - 1)))
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    keep = src != dst
    edges = pl.DataFrame({"src": src[keep], "dst": dst[keep], "weight": rng.uniform(0.1, 1.0, keep.sum())}).unique(
        ["src", "dst"]
    )
    products = pl.DataFrame({"product_id": np.arange(n)})
    result = leiden_clusters(edges, products, max_size=max_size, resolution=resolution, seed=seed)
    assert result.sizes.max() <= max_size
    assert sorted(result.clusters["product_id"].to_list()) == list(range(n))
    assert result.sizes.sum() == n


def test_balanced_split_cuts_runs_of_at_most_max_size():
    membership = np.array([0] * 7 + [1] * 2 + [2] * 5)
    out = _balanced_split(membership, 3)
    sizes = np.bincount(out)
    assert sizes.max() <= 3 and sorted(sizes.tolist()) == [1, 2, 2, 3, 3, 3]
    # Pieces never mix two original clusters.
    assert all(len(set(membership[out == c])) == 1 for c in np.unique(out))


def test_edge_products_missing_from_products_are_clustered_with_a_warning():
    products = pl.DataFrame({"product_id": [1, 2]})
    edges = pl.DataFrame({"src": [1, 3], "dst": [2, 4], "weight": [0.5, 0.5]})
    with pytest.warns(PricelabWarning, match="2 product\\(s\\) are not in the products table"):
        result = leiden_clusters(edges, products)
    assert result.clusters["product_id"].to_list() == [1, 2, 3, 4]


def test_plot_writes_a_png(tmp_path):
    products, edges = simulate_catalog(100, 4, 5, seed=7)
    result = leiden_clusters(edges, products, max_size=6)
    path = tmp_path / "sizes.png"
    cluster_size_plot(result, str(path), max_size=6)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_named():
    edges = pl.DataFrame({"src": [1, 2], "dst": [2, 1], "weight": [0.5, float("nan")]})
    with pytest.raises(DataError, match=r"'weight' must hold finite numbers; edge 2 -> 1 has nan"):
        leiden_clusters(edges)
    with pytest.raises(MissingColumnError, match="'weight'"):
        leiden_clusters(edges.drop("weight"))
    with pytest.raises(DataError, match="'src' has 1 missing"):
        leiden_clusters(pl.DataFrame({"src": [None, 1], "dst": [1, 2], "weight": [1.0, 1.0]}))
    with pytest.raises(UsageError, match="`max_size` 0"):
        leiden_clusters(edges.head(1), max_size=0)
    with pytest.raises(UsageError, match="`resolution` -1"):
        leiden_clusters(edges.head(1), resolution=-1)
    with pytest.raises(EmptyTableError):
        leiden_clusters(edges.clear())
