"""Step 3 of hpte: second differences between treated and control cells sharing a forest leaf.

Forest
------
econml's ``grf.CausalForest`` (honest, no built-in inference since the bootstrap gives the
SE) is fitted on the cells: ``X`` = product features (user columns: numbers as they are,
booleans as 0/1, text and categories as ordinal codes, dates as day numbers; missing
numbers filled with the column median) plus pre-period summaries computed here (forecast
level over the experiment rows, trend, residual volatility, mean pre-period price when there
is a price column); ``T`` = the cell's arm; ``y`` = its first difference. Each tree is grown
on a subsample of ``min(max_samples, n_cells // 2)`` cells (half of which, by honesty, only
place the leaf values), with leaves of at least ``min_samples_leaf`` cells. With fewer than
``4 * min_samples_leaf`` cells no tree could split, so the forest is skipped and all cells
share one leaf (a plain difference of means).

Forest size
-----------
100 trees, each grown on at most 40,000 cells, leaves of at least 10 cells. The leaves only
stratify the comparison (the average effect barely moves with the forest's size, the CATEs
get finer with more data per tree), so the size was set by time: on 100,000 products x 2
cells (``bench/bench_hpte.py``, 2 cores) the forest fits in about 25 s and the whole command
takes about 35 s, 1.4 times the forest alone. Halving the subsample halves the fit but
leaves reading, detrending, leaf arithmetic and the bootstrap (about 10 s) as they are.

Leaf estimator
--------------
Every cell is dropped down every tree (``apply``). In leaf ``l`` with ``m_l`` products
(a cell of a product with ``k`` cells counts ``1/k``), treated cells ``T`` and control cells
``C``, the second difference is ``D_l = mean_T(y) - mean_C(y)``; leaves with one arm only
contribute nothing. A tree's estimate is ``theta_t = sum_l m_l D_l / sum_l m_l`` over its
two-armed leaves (every matched product weighted equally), and the estimate is the mean of
``theta_t`` over trees. A product's CATE is the mean over trees of its leaf's ``D_l``.

All trees are handled at once: a sparse indicator matrix (cells x (leaf, arm) pairs of all
trees) turns every per-leaf sum into one sparse product, and every per-cell sum over trees
into another.

Linearised contributions
------------------------
For the bootstrap, the leaves are held fixed and the estimate is linearised in the weights of
the cells (the influence function). For cell ``r`` in two-armed leaf ``l`` of tree ``t``::

    psi_rt = [ w_r (D_l - theta_t) + m_l (T_r (y_r - ybar_T,l) / n_T,l
                                         - C_r (y_r - ybar_C,l) / n_C,l) ] / N_t

with ``N_t = sum_l m_l`` and ``w_r`` the cell's product weight; ``psi_r`` is the mean over
trees. The contributions sum to zero, and reweighting units by ``omega`` moves the estimate
by ``sum_r (omega_r - 1) psi_r`` to first order.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import polars as pl
from scipy import sparse

from pricelab_cli.errors import DataError, PricelabWarning
from pricelab_cli.io import align_id_types, check_unique

DEFAULT_TREES = 100
DEFAULT_MAX_SAMPLES = 40_000
DEFAULT_MIN_SAMPLES_LEAF = 10


# --------------------------------------------------------------------------- features


def encode_features(features: pl.DataFrame, product_ids: pl.Series, label: str = "features") -> tuple[np.ndarray, list[str]]:
    """Numeric matrix of the user's product features, rows in ``product_ids`` order.

    Raises DataError when an analysed product has no row in ``features``.
    """
    if "product_id" not in features.columns:
        raise DataError(f"{label}: missing column 'product_id'.")
    check_unique(features.select("product_id"), ["product_id"], label)
    ids = pl.DataFrame({"product_id": product_ids})
    ids, features = align_id_types(ids, features)
    joined = ids.join(features, on="product_id", how="left", maintain_order="left")
    found = ids.join(features.select("product_id"), on="product_id", how="semi")
    if found.height < ids.height:
        absent = ids.join(features.select("product_id"), on="product_id", how="anti")
        raise DataError(
            f"{label}: {absent.height} assigned product(s) have no row, e.g. {absent['product_id'][0]!r}; "
            "give every product of the assignment its features."
        )
    columns, names, skipped = [], [], []
    for name in features.columns:
        if name == "product_id":
            continue
        values = joined.get_column(name)
        dtype = values.dtype
        if dtype == pl.Boolean:
            encoded = values.cast(pl.Float64)
        elif dtype.is_numeric():
            encoded = values.cast(pl.Float64).fill_nan(None)
        elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
            # Ordinal codes in sorted order: a tree can still isolate any run of categories,
            # and the matrix stays as narrow as the table (no one-hot blow-up).
            encoded = values.cast(pl.String).fill_null("\x00missing").rank("dense").cast(pl.Float64)
        elif dtype == pl.Date or isinstance(dtype, pl.Datetime):
            encoded = values.cast(pl.Date).cast(pl.Int32).cast(pl.Float64)
        else:
            skipped.append(name)
            continue
        if encoded.null_count():
            median = encoded.median()
            encoded = encoded.fill_null(0.0 if median is None else median)
        columns.append(encoded.to_numpy())
        names.append(name)
    if skipped:
        warnings.warn(
            f"{label}: column(s) {', '.join(map(repr, skipped))} are neither numbers, text nor dates "
            "and are not used.",
            PricelabWarning,
            stacklevel=3,
        )
    matrix = np.column_stack(columns) if columns else np.empty((len(product_ids), 0))
    return matrix, names


def pre_period_summaries(level: np.ndarray, trend: np.ndarray, volatility: np.ndarray, price: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """The automatic features: forecast level, trend, volatility and (when known) price."""
    columns = [level, trend, volatility] + ([price] if price is not None else [])
    names = ["pre_level", "pre_trend", "pre_volatility"] + (["pre_price"] if price is not None else [])
    matrix = np.column_stack(columns).astype(np.float64)
    # A product with too little history has no volatility (or price); the median keeps it
    # in an ordinary branch of every split instead of failing the fit.
    bad = ~np.isfinite(matrix)
    if bad.any():
        # A column with no known value at all (a noise-free history) becomes 0.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(np.where(bad, np.nan, matrix), axis=0)
        matrix = np.where(bad, np.nan_to_num(medians, nan=0.0)[None, :], matrix)
    return matrix, names


# --------------------------------------------------------------------------- forest


def forest_leaves(
    X: np.ndarray,
    treated: np.ndarray,
    y: np.ndarray,
    *,
    n_estimators: int = DEFAULT_TREES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    min_samples_leaf: int = DEFAULT_MIN_SAMPLES_LEAF,
    random_state: int = 0,
    n_jobs: int = -1,
) -> np.ndarray:
    """Fit the honest causal forest on the cells and return their leaf per tree (n, trees).

    Leaf ids are made unique across trees. Too few cells for any split: one shared leaf.
    """
    n = len(y)
    if n < 4 * min_samples_leaf or X.shape[1] == 0:
        return np.zeros((n, 1), dtype=np.int64)
    from econml.grf import CausalForest  # heavy import, only when a forest is fitted

    forest = CausalForest(
        n_estimators=n_estimators,
        max_samples=max(1, min(int(max_samples), n // 2)),
        min_samples_leaf=min_samples_leaf,
        honest=True,
        inference=False,
        random_state=random_state,
        # Thread start-up costs more than small trees take to grow.
        n_jobs=n_jobs if n >= 5_000 else 1,
    )
    forest.fit(X, treated.astype(np.float64), y)
    leaves = forest.apply(X)
    return leaves


@dataclasses.dataclass(frozen=True, eq=False)
class LeafSecondDifference:
    """The leaf estimator and what the bootstrap and the CATE output need from it.

    Attributes
    ----------
    estimate : mean over trees of the product-weighted mean leaf difference.
    influence : per cell, its linearised contribution (they sum to zero).
    cate : per cell, mean over trees of its leaf difference (NaN when never matched).
    matched : per cell, whether some tree puts it in a two-armed leaf.
    n_trees : trees with at least one two-armed leaf.
    """

    estimate: float
    influence: np.ndarray
    cate: np.ndarray
    matched: np.ndarray
    n_trees: int


def _arm_leaf_indicator(leaves: np.ndarray, treated: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse (cells x 2 * all leaves) indicator of each cell's (leaf, arm) in every tree.

    Column ``2 * l + arm`` holds leaf ``l``'s cells of that arm (leaf ids are offset so
    they are unique across trees). Also returns the tree of each leaf.
    """
    n, n_trees = leaves.shape
    width = leaves.max(axis=0).astype(np.int64) + 1
    offsets = np.concatenate([[0], np.cumsum(width)[:-1]])
    total = int(width.sum())
    index_type = np.int32 if 2 * total < np.iinfo(np.int32).max else np.int64
    columns = leaves.astype(index_type)  # a copy we may overwrite
    columns += offsets.astype(index_type)[None, :]
    columns *= 2
    columns += treated.astype(index_type)[:, None]
    nnz = n * n_trees
    indptr = np.arange(0, nnz + 1, n_trees, dtype=np.int64 if nnz >= 2**31 else index_type)
    indicator = sparse.csr_matrix((np.ones(nnz), columns.ravel(), indptr), shape=(n, 2 * total))
    return indicator, np.repeat(np.arange(n_trees), width)


def leaf_second_difference(leaves: np.ndarray, treated: np.ndarray, y: np.ndarray, weight: np.ndarray) -> LeafSecondDifference:
    """Average treated-minus-control difference within two-armed leaves, over all trees.

    Parameters
    ----------
    leaves : (n_cells, n_trees) leaf of each cell in each tree.
    treated : 0/1 arm of each cell.
    y : first difference of each cell.
    weight : the cell's share of its product (1 / number of cells of the product), so that
        every product counts once in a leaf's size.
    """
    indicator, tree_of_leaf = _arm_leaf_indicator(leaves, treated)
    n_trees = leaves.shape[1]
    sums = np.asarray(indicator.T @ np.column_stack([np.ones(len(y)), y, weight]))
    count, total, size = (sums[:, k].reshape(-1, 2) for k in range(3))
    n_c, n_t = count[:, 0], count[:, 1]
    m = size.sum(axis=1)
    valid = (n_t > 0) & (n_c > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_t = np.where(valid, total[:, 1] / n_t, 0.0)
        mean_c = np.where(valid, total[:, 0] / n_c, 0.0)
    diff = mean_t - mean_c
    m_valid = np.where(valid, m, 0.0)
    tree_size = np.bincount(tree_of_leaf, weights=m_valid, minlength=n_trees)
    tree_sum = np.bincount(tree_of_leaf, weights=m_valid * diff, minlength=n_trees)
    used = tree_size > 0
    if not used.any():
        raise DataError(
            "no leaf of the forest holds both treated and control cells, so no second difference "
            "can be formed; check that both arms have products."
        )
    theta_tree = np.where(used, tree_sum / np.where(used, tree_size, 1.0), 0.0)
    estimate = float(theta_tree[used].mean())

    # Per (leaf, arm) coefficients of the influence function, so that a cell's contribution
    # is w * A + y * B - C summed over its leaves; that sum over trees is one sparse product.
    inv_size = np.where(used, 1.0 / np.where(used, tree_size, 1.0), 0.0)[tree_of_leaf]
    with np.errstate(invalid="ignore", divide="ignore"):
        slope_t = np.where(valid, m * inv_size / n_t, 0.0)
        slope_c = np.where(valid, m * inv_size / n_c, 0.0)
    a = np.where(valid, (diff - theta_tree[tree_of_leaf]) * inv_size, 0.0)
    coef = np.empty((2 * len(valid), 5))
    coef[0::2, 0] = coef[1::2, 0] = a
    coef[1::2, 1], coef[1::2, 2] = slope_t, slope_t * mean_t
    coef[0::2, 1], coef[0::2, 2] = -slope_c, -slope_c * mean_c
    coef[0::2, 3] = coef[1::2, 3] = np.where(valid, diff, 0.0)
    coef[0::2, 4] = coef[1::2, 4] = valid
    per_cell = np.asarray(indicator @ coef)
    n_used = int(used.sum())
    influence = (weight * per_cell[:, 0] + y * per_cell[:, 1] - per_cell[:, 2]) / n_used
    matched = per_cell[:, 4] > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        cate = np.where(matched, per_cell[:, 3] / per_cell[:, 4], np.nan)
    return LeafSecondDifference(estimate, influence, cate, matched, n_used)
