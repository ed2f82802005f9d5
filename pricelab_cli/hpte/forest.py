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

With more than ``FOREST_CELLS`` (400,000) cells the forest is fitted on a seeded random
sample of that many cells (each tree still draws its 40,000 from it) and every cell is then
dropped down the trees. econml's fit keeps several arrays of every training cell: on two
million cells (a million products, two cells each) it took 23 s and 1.8 GB, on the 400,000
sample 16 s and 0.4 GB, while the trees themselves are the same size either way.

Leaf estimator
--------------
Every cell is dropped down every tree (``apply``). In leaf ``l`` with ``m_l`` products
(a cell of a product with ``k`` cells counts ``1/k``), treated cells ``T`` and control cells
``C``, the second difference is ``D_l = mean_T(y) - mean_C(y)``; leaves with one arm only
contribute nothing. A tree's estimate is ``theta_t = sum_l m_l D_l / sum_l m_l`` over its
two-armed leaves (every matched product weighted equally), and the estimate is the mean of
``theta_t`` over trees. A product's CATE is the mean over trees of its leaf's ``D_l``.

Trees are handled one at a time, a few applied at once: a tree's per-(leaf, arm) sums are
bincounts, and every cell adds its leaf's coefficients, so memory stays at a few arrays of
cells (two million cells and 100 trees would be 1.6 GB as one leaf matrix).

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
from collections.abc import Callable, Iterator

import numpy as np
import polars as pl

from pricelab_cli.engine import Engine, default_engine, release_freed_memory
from pricelab_cli.errors import DataError, PricelabWarning
from pricelab_cli.tables import align_id_types, check_unique

DEFAULT_TREES = 100
DEFAULT_MAX_SAMPLES = 40_000
DEFAULT_MIN_SAMPLES_LEAF = 10
# Cells the forest is fitted on, at most (see "Forest size").
FOREST_CELLS = 400_000


# --------------------------------------------------------------------------- features


def encode_features(
    features: pl.DataFrame, product_ids: pl.Series, label: str = "features"
) -> tuple[np.ndarray, list[str]]:
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
            f"{label}: column(s) {', '.join(map(repr, skipped))} are neither numbers, text nor dates and are not used.",
            PricelabWarning,
            stacklevel=3,
        )
    matrix = np.column_stack(columns) if columns else np.empty((len(product_ids), 0))
    return matrix, names


def pre_period_summaries(
    level: np.ndarray, trend: np.ndarray, volatility: np.ndarray, price: np.ndarray | None
) -> tuple[np.ndarray, list[str]]:
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
    X: np.ndarray | None,
    treated: np.ndarray,
    y: np.ndarray,
    *,
    n_estimators: int = DEFAULT_TREES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    min_samples_leaf: int = DEFAULT_MIN_SAMPLES_LEAF,
    random_state: int = 0,
    n_jobs: int = -1,
    distinct_rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> TreeLeaves | np.ndarray:
    """Fit the honest causal forest on the cells and give their leaf in every tree.

    Returns the leaves as a ``TreeLeaves`` (handed out tree by tree), or for too few cells
    for any split an (n, 1) array: one shared leaf. ``distinct_rows`` = (``U``, ``index``)
    with ``X == U[index]`` lets the trees be applied to the distinct rows only (the cells of
    one product share its features, so a switchback design has half as many); ``X`` may
    then be None, and only the rows a fit uses are gathered.
    """
    n = len(y)
    # With distinct rows, the cells' features are gathered for the cells a fit uses and no
    # more (the whole (cells, features) matrix is not made).
    table, cell_rows = (X, None) if distinct_rows is None else distinct_rows
    if n < 4 * min_samples_leaf:
        return np.zeros((n, 1), dtype=np.int64)
    if table is None:
        raise ValueError("the forest needs the cells' features: `X` or `distinct_rows`.")
    if table.shape[1] == 0:
        return np.zeros((n, 1), dtype=np.int64)
    cell_x = _cell_features(table, cell_rows)
    from econml.grf import CausalForest  # heavy import, only when a forest is fitted

    forest = CausalForest(
        n_estimators=n_estimators,
        max_samples=max(1, min(int(max_samples), min(n, FOREST_CELLS) // 2)),
        min_samples_leaf=min_samples_leaf,
        honest=True,
        inference=False,
        random_state=random_state,
        # Thread start-up costs more than small trees take to grow.
        n_jobs=(n_jobs if n_jobs > 0 else -1) if n >= 5_000 else 1,
    )
    if n > FOREST_CELLS:
        # The trees grow on a seeded sample of cells; every cell is then dropped down them.
        pool = np.sort(np.random.default_rng(random_state).choice(n, FOREST_CELLS, replace=False))
        forest.fit(cell_x(pool), treated[pool].astype(np.float64), y[pool])
    else:
        forest.fit(cell_x(slice(None)), treated.astype(np.float64), y)
    trees, threads = list(forest.estimators_), forest.n_jobs
    del forest
    release_freed_memory()
    return TreeLeaves(trees, table, cell_rows, threads)


def _cell_features(table: np.ndarray, cell_rows: np.ndarray | None) -> Callable[[np.ndarray | slice], np.ndarray]:
    """The features of the cells picked (``table``'s rows, or its rows ``cell_rows`` gives)."""
    if cell_rows is None:
        return lambda pick: table[pick]
    return lambda pick: table[cell_rows[pick]]


@dataclasses.dataclass(frozen=True, eq=False)
class TreeLeaves:
    """The leaves of a fitted forest's cells, handed out a few trees at a time.

    Every cell's leaf in every tree would be a (cells x trees) matrix, 1.6 GB for two million
    cells and 100 trees; the leaf estimator needs one tree at a time, so the trees are applied
    in batches of ``TREE_BATCH`` (in threads, as the forest's own ``apply`` does).
    """

    trees: list
    X: np.ndarray
    index: np.ndarray | None  # the cells' rows of X (None: one row a cell)
    n_jobs: int = 1

    @property
    def n_trees(self) -> int:
        return len(self.trees)

    def split_counts(self, n_features: int) -> np.ndarray:
        """How many splits of all the trees use each feature (column of ``X``)."""
        counts = np.zeros(n_features, dtype=np.int64)
        for tree in self.trees:
            used = tree.tree_.feature
            counts += np.bincount(used[used >= 0], minlength=n_features)[:n_features]
        return counts

    def matrix(self) -> np.ndarray:
        """All leaves at once, (cells, trees): for small problems and checks."""
        return np.column_stack([leaf for batch in self.batches() for leaf in batch])

    def batches(self):
        from joblib import Parallel, delayed

        runner = Parallel(n_jobs=self.n_jobs, backend="threading")
        # Fewer trees at once on many cells: each tree's leaves are a cells-long array.
        cells = len(self.X) + (0 if self.index is None else len(self.index))
        size = max(1, min(TREE_BATCH, LEAF_ENTRIES // max(cells, 1)))
        for start in range(0, len(self.trees), size):
            batch = self.trees[start : start + size]
            leaves = runner(delayed(_leaf_ids)(tree, self.X) for tree in batch)
            yield leaves if self.index is None else [leaf[self.index] for leaf in leaves]


def _leaf_ids(tree, X: np.ndarray) -> np.ndarray:
    """A tree's leaf (node id) of every row, as 32-bit integers: half the memory of the
    tree's own 64-bit answer, and node ids of a tree are far below 2**31."""
    return tree.apply(X, check_input=False).astype(np.int32)


# Trees applied at once by ``TreeLeaves``, fewer when their leaves would pass LEAF_ENTRIES.
TREE_BATCH = 8
LEAF_ENTRIES = 40_000_000


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
    coefficient : per cell, the estimate's derivative in the cell's first difference (for
        fixed leaves the estimate is linear in them: ``estimate == coefficient @ y``).
    """

    estimate: float
    influence: np.ndarray
    cate: np.ndarray
    matched: np.ndarray
    n_trees: int
    coefficient: np.ndarray


# Trees are shared out in this many fixed groups, summed in order: the result has the same
# bits whichever engine runs the groups.
TREE_GROUPS = 4


@dataclasses.dataclass(frozen=True, eq=False)
class _TreeGroup:
    """Some of the trees (their leaf columns, or the fitted trees with the rows to apply them
    to) and the cells' arm, first difference and product weight."""

    leaves: object  # (n, k) array or TreeLeaves
    arm: np.ndarray
    y: np.ndarray
    weight: np.ndarray


def _tree_groups(leaves, arm, y, weight) -> list[_TreeGroup]:
    n_trees = leaves.shape[1] if isinstance(leaves, np.ndarray) else leaves.n_trees
    cuts = np.linspace(0, n_trees, min(TREE_GROUPS, n_trees) + 1).astype(int)
    groups = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if isinstance(leaves, np.ndarray):
            part = leaves[:, lo:hi]
        else:
            part = dataclasses.replace(leaves, trees=leaves.trees[lo:hi])
        groups.append(_TreeGroup(part, arm, y, weight))
    return groups


def _tree_columns(leaves) -> Iterator[np.ndarray]:
    """Each tree's leaf of every cell: columns of an (n, trees) array, or a ``TreeLeaves``."""
    if isinstance(leaves, np.ndarray):
        for t in range(leaves.shape[1]):
            yield leaves[:, t]
        return
    for batch in leaves.batches():
        yield from batch


def _group_sums(group: _TreeGroup) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One group of trees: each used tree's estimate, and per cell the sums over the group's
    trees of its influence (see the module docstring; still to be divided by the number of
    trees used), of its coefficient in the tree's estimate, and of its leaf difference in
    two-armed leaves, and how many trees matched it. Four cells-long arrays (8 + 8 + 8 + 4
    bytes a cell) are all that comes back."""
    arm, y, weight = group.arm, group.y, group.weight
    influence = np.zeros(len(y))
    coefficient = np.zeros(len(y))
    cate_sum = np.zeros(len(y))
    matches = np.zeros(len(y), dtype=np.int32)
    thetas = []
    for column in _tree_columns(group.leaves):
        # Leaf ids are node ids of the tree (a few thousand at most), used as they are.
        width = int(column.max()) + 1
        key = column.astype(np.int64) * 2 + arm
        count = np.bincount(key, minlength=2 * width).reshape(width, 2)
        total = np.bincount(key, weights=y, minlength=2 * width).reshape(width, 2)
        size = np.bincount(key, weights=weight, minlength=2 * width).reshape(width, 2)
        n_c, n_t = count[:, 0], count[:, 1]
        m = size.sum(axis=1)
        valid = (n_t > 0) & (n_c > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_t = np.where(valid, total[:, 1] / n_t, 0.0)
            mean_c = np.where(valid, total[:, 0] / n_c, 0.0)
        diff = mean_t - mean_c
        m_valid = np.where(valid, m, 0.0)
        tree_size = m_valid.sum()
        if not tree_size > 0:
            continue
        theta = float((m_valid * diff).sum() / tree_size)
        thetas.append(theta)
        with np.errstate(invalid="ignore", divide="ignore"):
            slope_t = np.where(valid, m / tree_size / n_t, 0.0)
            slope_c = np.where(valid, m / tree_size / n_c, 0.0)
        # Per leaf: the weight's coefficient; per (leaf, arm), column 2 * leaf + arm with
        # control first: the first difference's coefficient and the constant.
        of_weight = np.where(valid, (diff - theta) / tree_size, 0.0)
        of_y = np.column_stack([-slope_c, slope_t]).reshape(-1)
        constant = np.column_stack([-slope_c * mean_c, slope_t * mean_t]).reshape(-1)
        cell_of_y = of_y[key]
        influence += weight * of_weight[column] + y * cell_of_y - constant[key]
        coefficient += cell_of_y
        cate_sum += np.where(valid, diff, 0.0)[column]
        matches += valid[column]
    return thetas, influence, coefficient, cate_sum, matches


def leaf_second_difference(
    leaves, treated: np.ndarray, y: np.ndarray, weight: np.ndarray, engine: Engine | None = None
) -> LeafSecondDifference:
    """Average treated-minus-control difference within two-armed leaves, over all trees.

    Parameters
    ----------
    leaves : (n_cells, n_trees) leaf of each cell in each tree, or a ``TreeLeaves``.
    treated : 0/1 arm of each cell.
    y : first difference of each cell.
    weight : the cell's share of its product (1 / number of cells of the product), so that
        every product counts once in a leaf's size.
    engine : runs the groups of trees (in this process by default).

    One tree at a time: its per-(leaf, arm) sums are bincounts, and each cell gathers its
    leaf's coefficients of the influence function, so memory stays at a few arrays of cells
    however many trees there are. The trees are cut into ``TREE_GROUPS`` fixed groups that
    an engine may run side by side.
    """
    groups = _tree_groups(leaves, treated.astype(np.int64), y, weight)
    engine = default_engine(engine)
    thetas: list[float] = []
    totals: list[np.ndarray] | None = None
    # As many groups at a time as the engine runs side by side, summed in group order as
    # they come back: only that many groups' arrays are held at once.
    step = max(1, min(engine.workers, len(groups)))
    for start in range(0, len(groups), step):
        for group_thetas, *sums in engine.map(_group_sums, groups[start : start + step]):
            thetas += group_thetas
            if totals is None:
                totals = sums
            else:
                for total, part in zip(totals, sums):
                    total += part
    if not thetas or totals is None:
        raise DataError(
            "no leaf of the forest holds both treated and control cells, so no second difference "
            "can be formed; check that both arms have products."
        )
    influence, coefficient, cate_sum, matches = totals
    n_used = len(thetas)
    estimate = float(np.mean(thetas))
    influence /= n_used
    coefficient /= n_used
    matched = matches > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        cate = np.where(matched, cate_sum / matches, np.nan)
    return LeafSecondDifference(estimate, influence, cate, matched, n_used, coefficient)
