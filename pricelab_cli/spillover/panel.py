"""What the cross-price regressions read: the demeaned panel and the candidate pairs.

- The panel: the sales rows as dates x products matrices of log demand and log price, two-way
  demeaned (product and date effects removed) over the observed cells. Dates are the
  distinct dates of the sales table; products are the candidates first, then every other
  product of the table (they still inform the date effects).
- The candidates: the ordered pairs to test, in blocks (the ``group_col`` groups of the
  products table, or the connected components of a ``pairs`` table); no pair crosses a
  block.

Both check their input tables and raise :mod:`pricelab_cli.errors` exceptions that name the
table and column at fault.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import polars as pl
from scipy import sparse
from scipy.sparse import csgraph

from pricelab_cli.errors import DataError, EmptyTableError, PricelabWarning
from pricelab_cli.ids import IdLookup, row_positions
from pricelab_cli.tables import align_id_types, check_columns, check_numeric, check_unique

# --------------------------------------------------------------------------- panel


@dataclasses.dataclass(frozen=True, eq=False)
class _Panel:
    """Dates x products matrices of two-way demeaned log demand and log price."""

    log_demand: np.ndarray  # (T, n), 0 where not observed
    log_price: np.ndarray  # (T, n), 0 where not observed
    observed: np.ndarray  # (T, n) bool
    n_obs: np.ndarray  # (n,) observed dates per product
    price_varies: np.ndarray  # (n,) bool
    n_missing_values: int


def two_way_demean(values: np.ndarray, observed: np.ndarray, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """Remove column (product) and row (date) means over the observed cells.

    Alternating projections: exact after one pass when every cell is observed, otherwise
    iterated until no mean moves by more than ``tol``. Unobserved cells are 0 on return.
    """
    return _demean_in_place(np.where(observed, values, 0.0), observed, observed.sum(axis=0), tol, max_iter)


def _demean_in_place(
    v: np.ndarray, observed: np.ndarray, per_col: np.ndarray, tol: float = 1e-10, max_iter: int = 200
) -> np.ndarray:
    """``two_way_demean`` of ``v`` (already 0 where not observed), overwriting it: a panel
    of a large catalog has room for its matrices, not for copies of them."""
    per_col = np.maximum(per_col, 1)
    per_row = np.maximum(observed.sum(axis=1), 1)
    for _ in range(max_iter):
        col_mean = v.sum(axis=0) / per_col
        v -= col_mean[None, :]
        v *= observed
        row_mean = v.sum(axis=1) / per_row
        v -= row_mean[:, None]
        v *= observed
        if max(np.abs(col_mean).max(initial=0.0), np.abs(row_mean).max(initial=0.0)) < tol:
            break
    return v


# Rows converted to matrix cells at a time: bounds the float copies of the sales columns.
_ROWS_PER_STEP = 1 << 22
# Products whose price spread is measured at a time (bounds a (T x this) temporary).
_COLUMNS_PER_STEP = 4096


def _positions(values: pl.Series, keys: pl.Series) -> np.ndarray:
    """Position of each value in ``keys`` (every value is one of them), as int32."""
    return IdLookup.of(keys).positions(values, np.int32)


def _panel(sales: pl.DataFrame, ids: pl.Series, outcome: str, price_col: str, label: str) -> _Panel:
    """Build the demeaned matrices from the sales rows.

    The rows are turned into cells a slice at a time and the matrices are demeaned in place,
    so the memory needed beyond the sales table is about that of the matrices themselves.
    """
    check_columns(sales, ["product_id", "date", outcome, price_col], label)
    check_numeric(sales, [outcome, price_col], label)
    rows = sales.select("product_id", "date", pl.col(outcome).alias("_y"), pl.col(price_col).alias("_p"))
    rows, candidates = align_id_types(rows, pl.DataFrame({"product_id": ids}))
    # Products of the sales table that are not candidates still inform the date effects,
    # so a pair's estimate does not depend on which other pairs were asked for.
    others = rows.select(pl.col("product_id").unique(maintain_order=True)).join(candidates, on="product_id", how="anti")
    universe = pl.concat([candidates["product_id"], others["product_id"]])
    if rows["product_id"].null_count():
        rows = rows.filter(pl.col("product_id").is_not_null())  # no product, no cell
    if rows.schema["date"] != pl.Date:
        raise DataError(f"{label}: column 'date' must hold dates (YYYY-MM-DD) but has type {rows.schema['date']}.")
    if any(rows[col].null_count() for col in ("date", "_y", "_p")):
        check_unique(rows, ["product_id", "date"], label)
        usable = rows.filter(pl.col("_y").is_not_null() & pl.col("_p").is_not_null() & pl.col("date").is_not_null())
    else:
        usable = rows  # checked for repeated cells below, where that is cheap
    n_missing_values = rows.height - usable.height
    if usable.height == 0:
        raise EmptyTableError(f"{label}: no row has both {outcome!r} and {price_col!r} for the candidate products.")
    dates = usable["date"].unique().sort()
    t_idx = _positions(usable["date"].to_physical(), dates.to_physical())
    p_idx = _positions(usable["product_id"], universe)
    shape = (len(dates), len(universe))
    observed = np.zeros(shape, dtype=bool)
    demand = np.zeros(shape)
    price = np.zeros(shape)
    all_valid = True
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, usable.height, _ROWS_PER_STEP):
            rows_now = slice(start, start + _ROWS_PER_STEP)
            # Flat cell numbers: scattering through one index is several times faster than two.
            cells = t_idx[rows_now].astype(np.int64) * len(universe) + p_idx[rows_now]
            y = usable["_y"].slice(start, _ROWS_PER_STEP).cast(pl.Float64).to_numpy()
            p = usable["_p"].slice(start, _ROWS_PER_STEP).cast(pl.Float64).to_numpy()
            all_valid &= bool(np.isfinite(y).all() & (y >= 0).all() & np.isfinite(p).all() & (p > 0).all())
            observed.reshape(-1)[cells] = True
            demand.reshape(-1)[cells] = np.log1p(y)
            price.reshape(-1)[cells] = np.log(p)
    del t_idx, p_idx
    n_obs = observed.sum(axis=0)
    if int(n_obs.sum()) != usable.height:  # two rows landed on one cell
        check_unique(rows, ["product_id", "date"], label)
    if not all_valid:
        _check_values(usable, outcome, price_col, label)
    # A price that never changes carries no information about anyone's demand; found on
    # the raw log price, before the date means mix other products in.
    price_varies = np.zeros(len(universe), dtype=bool)
    for first in range(0, len(universe), _COLUMNS_PER_STEP):
        cols = slice(first, first + _COLUMNS_PER_STEP)
        sub, seen, count = price[:, cols], observed[:, cols], n_obs[cols]
        mean = sub.sum(axis=0) / np.maximum(count, 1)
        spread = np.sqrt((((sub - mean) * seen) ** 2).sum(axis=0) / np.maximum(count, 1))
        price_varies[cols] = (spread > 1e-9) & (count > 1)
    return _Panel(
        log_demand=_demean_in_place(demand, observed, n_obs),
        log_price=_demean_in_place(price, observed, n_obs),
        observed=observed,
        n_obs=n_obs,
        price_varies=price_varies,
        n_missing_values=n_missing_values,
    )


def _check_values(usable: pl.DataFrame, outcome: str, price_col: str, label: str) -> None:
    def first_bad(condition: pl.Expr, column: str, what: str) -> None:
        bad = usable.filter(condition)
        if bad.height:
            row = bad.row(0, named=True)
            raise DataError(
                f"{label}: column {column!r} has {bad.height} value(s) that {what}, e.g. "
                f"{row['_y' if column == outcome else '_p']!r} for product {row['product_id']!r} on {row['date']}."
            )

    first_bad(~pl.col("_y").cast(pl.Float64).is_finite(), outcome, "are not finite numbers")
    first_bad(pl.col("_y") < 0, outcome, "are negative (demand must be 0 or more)")
    first_bad(~pl.col("_p").cast(pl.Float64).is_finite(), price_col, "are not finite numbers")
    first_bad(pl.col("_p") <= 0, price_col, "are not positive (log price needs prices above 0)")


# --------------------------------------------------------------------------- candidates


@dataclasses.dataclass(frozen=True, eq=False)
class _Candidates:
    """Candidate pairs in block order (block, dst, src); no pair crosses a block."""

    ids: pl.Series  # the product universe, in output order
    src: np.ndarray  # positions in ids
    dst: np.ndarray
    bounds: np.ndarray  # block b holds pairs bounds[b]:bounds[b + 1]
    order: np.ndarray  # pairs in output order (by src, then dst): positions in block order


def _group_candidates(products: pl.DataFrame, group_col: str) -> _Candidates:
    check_columns(products, ["product_id", group_col], "products")
    check_unique(products, ["product_id"], "products")
    ungrouped = products.filter(pl.col(group_col).is_null())
    if ungrouped.height:
        warnings.warn(
            f"products: {ungrouped.height} product(s) have no {group_col!r} value and are not "
            f"tested, e.g. {ungrouped['product_id'][0]!r}.",
            PricelabWarning,
            stacklevel=3,
        )
    members = (
        products.select(pl.col(group_col).alias("_group"))
        .with_row_index("_pos")
        .filter(pl.col("_group").is_not_null())
        .with_columns(pl.col("_group").rank("dense").cast(pl.Int64).alias("_block"))
    )
    # Every ordered pair of a group, written down directly (a self-join of the groups would
    # hold all pairs several times over): members sorted by block, then position.
    by_block = np.argsort(members["_block"].to_numpy(), kind="stable")
    pos = members["_pos"].to_numpy().astype(np.int64)[by_block]
    block = members["_block"].to_numpy()[by_block]
    first = np.flatnonzero(np.diff(block, prepend=np.int64(-1)) != 0)
    sizes = np.diff(np.append(first, len(block)))
    start = np.repeat(first, sizes)  # where each member's block starts
    local = np.arange(len(pos)) - start  # rank of the member in its block
    n_src = np.repeat(sizes, sizes) - 1  # pairs with the member as dst
    pair_start = np.cumsum(n_src) - n_src
    dst_member = np.repeat(np.arange(len(pos)), n_src)
    src_local = np.arange(len(dst_member)) - pair_start[dst_member]
    dst_local = local[dst_member]
    src_local += src_local >= dst_local  # skip the dst itself
    src_member = start[dst_member] + src_local
    # In output order each member's pairs as src form one run (runs in product order);
    # inside it the dsts follow their block order, with the src itself left out.
    by_pos = np.argsort(pos)
    run_start = np.empty(len(pos), dtype=np.int64)
    run_start[by_pos] = np.cumsum(n_src[by_pos]) - n_src[by_pos]
    out_index = run_start[src_member] + dst_local - (dst_local > src_local)
    order = np.empty(len(out_index), dtype=np.int64)
    order[out_index] = np.arange(len(out_index))
    return _Candidates(
        products["product_id"],
        src=pos[src_member].astype(np.int32),
        dst=pos[dst_member].astype(np.int32),
        bounds=np.append(pair_start[first[sizes > 1]], len(dst_member)),
        order=order,
    )


def _pair_candidates(pairs: pl.DataFrame, products: pl.DataFrame | None) -> _Candidates:
    check_columns(pairs, ["src", "dst"], "pairs")
    for col in ("src", "dst"):
        if pairs[col].null_count():
            raise DataError(f"pairs: column {col!r} has {pairs[col].null_count()} missing (null) values.")
    pairs = pairs.select("src", "dst").filter(pl.col("src") != pl.col("dst")).unique(maintain_order=True)
    if pairs.height == 0:
        raise EmptyTableError("pairs: no pair of two different products to test.")
    if products is not None:
        check_columns(products, ["product_id"], "products")
        check_unique(products, ["product_id"], "products")
        ids = products["product_id"]
    else:
        ids = pl.concat([pairs["src"], pairs["dst"]]).unique(maintain_order=True)
    pos: dict[str, np.ndarray] = {}
    for side in ("src", "dst"):
        pos[side] = row_positions(pairs[side], ids)
        if (pos[side] < 0).any():
            unknown = pairs[side].filter(pl.Series(pos[side] < 0))
            raise DataError(
                f"pairs: {unknown.n_unique()} {side} product(s) are not in the products table, e.g. "
                f"{unknown[0]!r}; add them to `products` or drop those pairs."
            )
    n = len(ids)
    graph = sparse.coo_matrix((np.ones(len(pos["src"])), (pos["src"], pos["dst"])), shape=(n, n))
    _, component = csgraph.connected_components(graph, directed=True, connection="weak")
    block = component[pos["dst"]]
    by_block = np.lexsort((pos["src"], pos["dst"], block))
    src, dst, block = pos["src"][by_block], pos["dst"][by_block], block[by_block]
    starts = np.flatnonzero(np.diff(block, prepend=block[0] - 1) != 0)
    return _Candidates(
        ids.alias("product_id"), src, dst, bounds=np.append(starts, len(block)), order=np.lexsort((dst, src))
    )
