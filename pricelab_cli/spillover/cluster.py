"""Clusters of substitutes for cluster randomisation: Leiden communities with a hard size bound.

Method
------
- **Graph.** Each edge ``src -> dst`` contributes ``|weight|`` to the undirected link between
  its two products; links in both directions add up. Zero weights and self-loops carry no
  information about substitution and are dropped.
- **Communities.** Leiden (igraph) maximising modularity at ``resolution``, two iterations
  (igraph's default; iterating to a fixed point costs many times more on large graphs and
  changes the partition little). Leiden communities are connected, so every cluster is a set
  of products linked by substitution. Modularity has a resolution limit: on a large graph it
  merges small communities joined by a single link, which is what ``max_size`` (or a
  higher ``resolution``) is for.
- **Hard size bound.** A cluster with more than ``max_size`` products is re-split with Leiden
  on its own subgraph, maximising that subgraph's modularity at a resolution that starts at
  ``resolution`` and doubles every round until every piece fits. All oversized clusters of a
  round are split in one Leiden run over their union: modularity of each cluster's subgraph
  with its own edge total is the constant Potts model with node weights
  ``strength * sqrt(resolution / (2 m_cluster))``, and Leiden never merges disconnected
  parts, so one run splits them all independently. Should a cluster still not fit after
  ``MAX_RESPLIT_ROUNDS`` rounds, it is cut into consecutive runs of at most ``max_size``
  products (a balanced split), in the order of its finest pieces.
- **Isolated products** (in ``products`` but on no edge) are clusters of one.
- **Determinism.** Leiden draws from igraph's random generator, which is pointed at a
  ``random.Random(seed)`` for each run and restored afterwards. Cluster ids are 1, 2, ...
  in the order of each cluster's first product (products table order, then the order in
  which the edges table first names a product).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import polars as pl

from pricelab_cli.errors import DataError, EmptyTableError, PricelabWarning, UsageError
from pricelab_cli.ids import row_positions
from pricelab_cli.tables import check_columns, check_numeric, check_unique

MAX_RESPLIT_ROUNDS = 40
# Two passes, as igraph defaults to: running to a fixed point costs many times more on
# large graphs for a partition that differs little.
LEIDEN_ITERATIONS = 2
SIZE_QUANTILES = (0.0, 0.5, 0.9, 0.99, 1.0)


@dataclasses.dataclass(frozen=True, eq=False)
class ClusterResult:
    """A partition of the products.

    Attributes
    ----------
    clusters : ``product_id``, ``cluster_id`` (1, 2, ...), every product exactly once.
    sizes : number of products in each cluster, indexed by ``cluster_id - 1``.
    cut_share : share of the total ``|weight|`` of the edges whose ends fall in different
        clusters: the spillover that cluster randomisation does not contain (0 with no edges).
    n_resplit : clusters that exceeded ``max_size`` after the first Leiden pass.
    n_balanced : clusters cut by the balanced-split fallback.
    n_isolated : products on no edge (each its own cluster).
    """

    clusters: pl.DataFrame
    sizes: np.ndarray
    cut_share: float
    n_resplit: int = 0
    n_balanced: int = 0
    n_isolated: int = 0

    @property
    def n_clusters(self) -> int:
        return len(self.sizes)

    def size_quantiles(self, qs: tuple[float, ...] = SIZE_QUANTILES) -> dict[float, float]:
        """Quantiles of the cluster sizes (``{0.5: median, ...}``)."""
        return {q: float(np.quantile(self.sizes, q)) for q in qs}


@contextlib.contextmanager
def _igraph_seed(seed: int) -> Iterator[None]:
    """Point igraph's random generator at a seeded one for the block, then put it back."""
    import igraph

    igraph.set_random_number_generator(random.Random(seed))
    try:
        yield
    finally:
        igraph.set_random_number_generator(random)


def _product_index(edges: pl.DataFrame, products: pl.DataFrame | None) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """Product universe (output order) and the positions of each edge's ends in it."""
    ends = pl.concat([edges["src"], edges["dst"]])
    if products is not None:
        check_columns(products, ["product_id"], "products")
        check_unique(products, ["product_id"], "products")
        ids = products["product_id"]
        if ids.null_count():
            raise DataError("products: column 'product_id' has missing (null) values.")
        if ids.dtype != ends.dtype:
            ids, ends = ids.cast(pl.String), ends.cast(pl.String)
        extra = ends.unique(maintain_order=True).filter(~ends.unique(maintain_order=True).is_in(ids.implode()))
        if len(extra):
            warnings.warn(
                f"edges: {len(extra)} product(s) are not in the products table and are clustered "
                f"too, e.g. {extra[0]!r}.",
                PricelabWarning,
                stacklevel=3,
            )
            ids = pl.concat([ids, extra])
    else:
        ids = ends.unique(maintain_order=True)
    pos = row_positions(ends, ids)
    m = edges.height
    return ids.alias("product_id"), pos[:m], pos[m:]


def _undirected(
    src: np.ndarray, dst: np.ndarray, weight: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetrise: one link per unordered pair with the summed ``|weight|`` of both directions."""
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    key = lo.astype(np.int64) * n + hi
    uniq, inverse = np.unique(key, return_inverse=True)
    w = np.bincount(inverse, weights=np.abs(weight), minlength=len(uniq))
    return uniq // n, uniq % n, w


def _leiden(n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray, *, seed: int, **kwargs) -> np.ndarray:
    """Leiden membership of ``n`` nodes on the undirected links ``(u, v, w)``."""
    import igraph

    graph = igraph.Graph(n=n, edges=np.column_stack([u, v]).astype(np.int64), directed=False)
    with _igraph_seed(seed):
        result = graph.community_leiden(weights=w, n_iterations=LEIDEN_ITERATIONS, **kwargs)
    return np.asarray(result.membership, dtype=np.int64)


def _resplit(
    membership: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    *,
    max_size: int,
    resolution: float,
    seed: int,
) -> tuple[np.ndarray, int, int]:
    """Re-split clusters above ``max_size`` until all fit; see the module docstring."""
    n = len(membership)
    n_resplit = int((np.bincount(membership) > max_size).sum())
    for round_ in range(MAX_RESPLIT_ROUNDS):
        sizes = np.bincount(membership)
        over = sizes > max_size
        if not over.any():
            return membership, n_resplit, 0
        inside = (membership[u] == membership[v]) & over[membership[u]]
        nodes = np.flatnonzero(over[membership])
        local = np.full(n, -1, dtype=np.int64)
        local[nodes] = np.arange(len(nodes))
        su, sv, sw = local[u[inside]], local[v[inside]], w[inside]
        strength = np.bincount(su, weights=sw, minlength=len(nodes)) + np.bincount(sv, weights=sw, minlength=len(nodes))
        parent = membership[nodes]
        # 2 m of each oversized cluster's own subgraph, read off at each of its nodes.
        two_m = np.bincount(parent, weights=strength, minlength=len(sizes))[parent]
        gamma = resolution * 2.0**round_
        node_weights = strength * np.sqrt(gamma / np.maximum(two_m, 1e-300))
        pieces = _leiden(
            len(nodes),
            su,
            sv,
            sw,
            seed=seed + 1 + round_,
            objective_function="CPM",
            resolution=1.0,
            node_weights=node_weights,
        )
        # Pieces never span two parents (Leiden keeps communities connected); keying on the
        # parent as well makes that explicit.
        membership = membership.copy()
        membership[nodes] = membership.max() + 1 + _pair_labels(parent, pieces)
        membership = np.unique(membership, return_inverse=True)[1].ravel()
    return _balanced_split(membership, max_size), n_resplit, int((np.bincount(membership) > max_size).sum())


def _balanced_split(membership: np.ndarray, max_size: int) -> np.ndarray:
    """Cut every cluster above ``max_size`` into runs of at most ``max_size`` products."""
    order = np.argsort(membership, kind="stable")
    sorted_m = membership[order]
    first = np.searchsorted(sorted_m, sorted_m, side="left")
    rank = np.arange(len(order)) - first
    chunk = np.empty(len(order), dtype=np.int64)
    chunk[order] = rank // max_size
    return _pair_labels(membership, chunk)


def _pair_labels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense labels 0, 1, ... of the distinct (a, b) pairs of non-negative integers."""
    key = a.astype(np.int64) * (int(b.max(initial=0)) + 1) + b
    return np.unique(key, return_inverse=True)[1].ravel()


def _first_appearance_labels(membership: np.ndarray) -> np.ndarray:
    """Relabel clusters 1, 2, ... in the order of their first product."""
    _, first_index, inverse = np.unique(membership, return_index=True, return_inverse=True)
    rank = np.empty(len(first_index), dtype=np.int64)
    rank[np.argsort(first_index, kind="stable")] = np.arange(1, len(first_index) + 1)
    return rank[inverse.ravel()]


def leiden_clusters(
    edges: pl.DataFrame,
    products: pl.DataFrame | None = None,
    *,
    max_size: int | None = None,
    resolution: float = 1.0,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ClusterResult:
    """Partition the substitutes graph into clusters (see the module docstring).

    Parameters
    ----------
    edges : ``src``, ``dst``, ``weight``; the sign of the weight is ignored.
    products : ``product_id``; products on no edge become clusters of one. Without it, the
        products are those the edges name.
    max_size : hard upper bound on the number of products in a cluster.
    resolution : modularity resolution; above 1 gives more, smaller clusters.
    seed : seed of Leiden's random choices; same inputs and seed give the same clusters.
    progress : called with 1 after the first Leiden pass and after the size bound is met.
    """
    if max_size is not None and max_size < 1:
        raise UsageError(f"`max_size` {max_size} must be at least 1.")
    if not np.isfinite(resolution) or resolution <= 0:
        raise UsageError(f"`resolution` {resolution} must be a positive number.")
    check_columns(edges, ["src", "dst", "weight"], "edges")
    if edges.height == 0:
        # A header-only file carries no types; give it the ones an edge list has.
        id_type = (
            products.schema["product_id"] if products is not None and "product_id" in products.columns else pl.Int64
        )
        edges = edges.with_columns(pl.col("src", "dst").cast(id_type), pl.col("weight").cast(pl.Float64))
    check_numeric(edges, ["weight"], "edges")
    for col in ("src", "dst"):
        if edges[col].null_count():
            raise DataError(f"edges: column {col!r} has {edges[col].null_count()} missing (null) values.")
    weight = edges["weight"].cast(pl.Float64)
    if weight.null_count() or not weight.is_finite().all():
        bad = edges.filter(weight.is_null() | ~weight.is_finite().fill_null(False))
        raise DataError(
            f"edges: column 'weight' must hold finite numbers; edge {bad['src'][0]!r} -> "
            f"{bad['dst'][0]!r} has {bad['weight'][0]!r}."
        )
    if edges.height == 0 and (products is None or products.height == 0):
        raise EmptyTableError("edges: no edges and no products table; nothing to cluster.")
    ids, src, dst = _product_index(edges, products)
    n = len(ids)
    w_directed = np.abs(weight.to_numpy())
    loops = src == dst
    if loops.any():
        warnings.warn(
            f"edges: {int(loops.sum())} edge(s) join a product to itself and are ignored, "
            f"e.g. {edges['src'][int(np.flatnonzero(loops)[0])]!r}.",
            PricelabWarning,
            stacklevel=2,
        )
    useful = ~loops & (w_directed > 0)
    u, v, w = _undirected(src[useful], dst[useful], w_directed[useful], n)
    membership = _leiden(n, u, v, w, seed=seed, objective_function="modularity", resolution=resolution)
    if progress is not None:
        progress(1)
    n_resplit = n_balanced = 0
    if max_size is not None:
        membership, n_resplit, n_balanced = _resplit(
            membership, u, v, w, max_size=max_size, resolution=resolution, seed=seed
        )
    if progress is not None:
        progress(1)
    labels = _first_appearance_labels(membership)
    sizes = np.bincount(labels)[1:]
    total = w_directed[~loops].sum()
    cut = w_directed[~loops & (labels[src] != labels[dst])].sum()
    degree = np.bincount(u, minlength=n) + np.bincount(v, minlength=n)
    return ClusterResult(
        clusters=pl.DataFrame({"product_id": ids, "cluster_id": labels}),
        sizes=sizes,
        cut_share=float(cut / total) if total > 0 else 0.0,
        n_resplit=n_resplit,
        n_balanced=n_balanced,
        n_isolated=int((degree == 0).sum()),
    )
