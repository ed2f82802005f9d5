"""The plan of an hpte panel: the assignment laid out as a (product x day) grid of states,
checked once, before any sales row is read; and the constants the partitions share."""

from __future__ import annotations

import dataclasses
from typing import cast

import numpy as np
import polars as pl

from pricelab_cli.errors import (
    DataError,
    DuplicateKeyError,
    EmptyTableError,
    PricelabError,
)
from pricelab_cli.hashing import _splitmix64, fnv1a64
from pricelab_cli.ids import IdLookup
from pricelab_cli.tables import (
    assignment_flags,
    check_columns,
    check_values,
    parse_dates,
)

# How messages name the two tables unless the caller passes their file names.
DEFAULT_LABELS = {"sales": "sales", "assignment": "assignment"}


# States of a (product, date) in the assignment grid; 0 and 1 are the arms.
NOT_COVERED, BLACKOUT = -1, 2


# Analysed rows per partition: about 0.5 GB of working memory in the robust step.
PARTITION_ROWS = 4_000_000


# Sums over products are taken in blocks of this many products, added in order, and every
# partition is a whole number of blocks: the sums then have the same bits however the
# products are partitioned.
SUM_BLOCK = 1024


# Assignment rows laid into the plan's grid at a time.
PLAN_CHUNK_ROWS = 2_000_000


# Rows per batch read from the sales stream.
BATCH_ROWS = 2_000_000


@dataclasses.dataclass(frozen=True, eq=False)
class PanelPlan:
    """What the assignment alone says: the products (sorted by id, coded 0..n-1), each
    product's first date and arm, its randomisation unit, and the dense (product x
    assignment day) grid of states (arm, blackout, not covered)."""

    products: pl.DataFrame
    state_grid: np.ndarray
    first_day: int
    span: int
    start_day: np.ndarray
    first_arm: np.ndarray
    unit: np.ndarray
    unit_label: str

    @property
    def n_products(self) -> int:
        return self.products.height

    @property
    def last_day(self) -> int:
        return self.first_day + self.span - 1


def plan_panel(assignment: pl.DataFrame | pl.LazyFrame, label: str = "assignment") -> PanelPlan:
    """Check the assignment and lay it out as a :class:`PanelPlan`.

    A lazy scan is streamed: one pass of per-product aggregates, then one of batches laid
    into the grid, so a catalog's assignment (hundreds of millions of rows) is never held
    whole. When a check fails on the stream, the table is read whole and checked as a read
    table is, so the message names the row as it always does."""
    if isinstance(assignment, pl.LazyFrame):
        try:
            return _plan_streamed(assignment, label)
        except (PricelabError, pl.exceptions.PolarsError):
            whole = assignment.collect()
            check_values(whole, label)  # what ``read_table`` checks of a table read whole
            return plan_panel(whole, label)
    check_columns(assignment, ["product_id", "date", "treated"], label)
    if assignment.height == 0:
        raise EmptyTableError(f"{label}: the table has no rows.")
    assignment = parse_dates(assignment, ["date"], label)
    for col in ("product_id", "date"):
        if assignment.get_column(col).null_count():
            raise DataError(f"{label}: column {col!r} has {assignment.get_column(col).null_count()} missing values.")
    assignment = assignment_flags(assignment, label)
    has_cluster = "cluster_id" in assignment.columns
    products = _products(assignment, has_cluster, label)
    n = products.height
    # The assignment becomes a dense (product x assignment day) grid of states, so each sales
    # row finds its arm by position instead of a second join on (product, date).
    ids = products.get_column("product_id")
    lookup = IdLookup.of(ids)
    dates = assignment.get_column("date").cast(pl.Int32)
    # An Int32 column's min and max are ints (the dates are checked for nulls above).
    low, high = cast(int, dates.min()), cast(int, dates.max())
    first_day, span = int(low), int(high - low) + 1
    state_grid = np.full(n * span, NOT_COVERED, dtype=np.int8)
    # Rows a chunk at a time: a catalog's assignment has hundreds of millions of rows, and
    # each temporary of its length would cost a byte per row per byte of its type.
    for lo in range(0, assignment.height, PLAN_CHUNK_ROWS):
        _lay_rows(state_grid, assignment.slice(lo, PLAN_CHUNK_ROWS), lookup, first_day, span)
    # Every slot written once: as many filled slots as rows, else some (product, date) repeats.
    if np.count_nonzero(state_grid != NOT_COVERED) < assignment.height:
        _raise_duplicates(assignment, pl.Series(_plan_slots(assignment, lookup, first_day, span)), label)
    return _plan(
        products,
        state_grid,
        first_day,
        span,
        products.get_column("_start").cast(pl.Int32).to_numpy().astype(np.int64),
        products.get_column("_first_arm").to_numpy().astype(np.int8),
        has_cluster,
    )


def _plan(
    products: pl.DataFrame,
    state_grid: np.ndarray,
    first_day: int,
    span: int,
    start_day: np.ndarray,
    first_arm: np.ndarray,
    has_cluster: bool,
) -> PanelPlan:
    """The plan, with each product's randomisation unit (its cluster, or itself)."""
    if has_cluster:
        unit = products.get_column("cluster_id").rank("dense").cast(pl.Int64).to_numpy() - 1
    else:
        unit = np.arange(products.height, dtype=np.int64)
    return PanelPlan(
        products=products.select("product_id", "_code", "_start"),
        state_grid=state_grid,
        first_day=first_day,
        span=span,
        start_day=start_day,
        first_arm=first_arm,
        unit=unit,
        unit_label="cluster" if has_cluster else "product",
    )


class _StreamCheckFailed(DataError):
    """A check failed on the streamed assignment; the whole-table path words the message."""


def _plan_streamed(assignment: pl.LazyFrame, label: str) -> PanelPlan:
    schema = assignment.collect_schema()
    check_columns(pl.DataFrame(schema=schema), ["product_id", "date", "treated"], label)
    if schema["date"] != pl.Date:
        raise _StreamCheckFailed("dates need typing")
    has_cluster = "cluster_id" in schema
    # Aggregates that stream (min and max, not a value picked at the first date).
    products = (
        assignment.group_by("product_id")
        .agg(
            pl.col("date").min().alias("_start"),
            pl.col("date").max().alias("_end"),
            *([pl.col("cluster_id").min(), pl.col("cluster_id").max().alias("_last_cluster")] if has_cluster else []),
        )
        .collect(engine="streaming")
    )
    products = in_hash_order(products).with_row_index("_code")
    n = products.height
    if n == 0 or products.get_column("product_id").null_count() or products.get_column("_start").null_count():
        raise _StreamCheckFailed("empty, or missing ids or dates")
    if has_cluster and (products.get_column("cluster_id") != products.get_column("_last_cluster")).any():
        raise _StreamCheckFailed("a product in two clusters, or a missing cluster_id")
    lookup = IdLookup.of(products.get_column("product_id"))
    start_day = products.get_column("_start").cast(pl.Int32).to_numpy().astype(np.int64)
    first_day = int(start_day.min())
    span = int(cast(int, products.get_column("_end").cast(pl.Int32).max())) - first_day + 1
    state_grid = np.full(n * span, NOT_COVERED, dtype=np.int8)
    first_arm = np.zeros(n, dtype=np.int8)
    n_rows = 0
    for batch in assignment.collect_batches(chunk_size=PLAN_CHUNK_ROWS):
        check_values(batch, label, n_rows)
        if batch.get_column("date").null_count():
            raise _StreamCheckFailed("missing dates")
        batch = assignment_flags(batch, label)
        slot, treated = _lay_rows(state_grid, batch, lookup, first_day, span)
        # A product's first arm is its arm on its first date (blackout or not).
        code, offset = np.divmod(slot, span)
        at_start = np.flatnonzero(offset + first_day == start_day[code])
        first_arm[code[at_start]] = treated[at_start]
        n_rows += batch.height
    if np.count_nonzero(state_grid != NOT_COVERED) < n_rows:
        raise _StreamCheckFailed("repeated keys")
    return _plan(products, state_grid, first_day, span, start_day, first_arm, has_cluster)


def _lay_rows(
    state_grid: np.ndarray, rows: pl.DataFrame, lookup: IdLookup, first_day: int, span: int
) -> tuple[np.ndarray, np.ndarray]:
    """Write the rows' states (arm, or blackout) into the grid; return their slots and arms."""
    slot = _plan_slots(rows, lookup, first_day, span)
    treated = rows.get_column("treated").to_numpy()
    state_grid[slot] = np.where(rows.get_column("blackout").to_numpy(), BLACKOUT, treated)
    return slot, treated


def _plan_slots(rows: pl.DataFrame, lookup: IdLookup, first_day: int, span: int) -> np.ndarray:
    """Position of each assignment row in the (product x assignment day) grid."""
    code, _ = lookup.codes(rows.get_column("product_id"))
    # In place (on a fresh int64 array): temporaries of the rows' length cost more than the
    # arithmetic.
    slot = code.astype(np.int64, copy=False)
    slot *= span
    slot += rows.get_column("date").cast(pl.Int32).to_numpy()
    slot -= first_day
    return slot


def in_hash_order(products: pl.DataFrame) -> pl.DataFrame:
    """The rows ordered by a hash of the ``product_id`` text (ties by the id itself).

    Product codes follow this order, and with them every draw that depends on the order of
    products (the forest's subsamples, the bootstrap's resamples, the partitions and their
    sums): the results do not depend on how the ids sort, so integer ids and the same ids
    as text give the same bytes.
    """
    if products.height == 0:
        return products
    key = _splitmix64(fnv1a64(products.get_column("product_id").cast(pl.String)))
    order = np.lexsort((products.get_column("product_id").rank("ordinal").to_numpy(), key))
    return products[order]


def _products(assignment: pl.DataFrame, has_cluster: bool, label: str) -> pl.DataFrame:
    """One row per assigned product, in hash order (``in_hash_order``): code, first date,
    first arm, cluster."""
    first = pl.col("date").arg_min()
    products = in_hash_order(
        assignment.group_by("product_id").agg(
            pl.col("date").min().alias("_start"),
            pl.col("treated").get(first).alias("_first_arm"),
            *(
                [pl.col("cluster_id").n_unique().alias("_n_clusters"), pl.col("cluster_id").get(first)]
                if has_cluster
                else []
            ),
        )
    ).with_row_index("_code")
    if has_cluster:
        split = products.filter(pl.col("_n_clusters") > 1)
        if split.height:
            raise DataError(
                f"{label}: product {split['product_id'][0]!r} has more than one cluster_id; "
                "a product belongs to exactly one cluster."
            )
    return products


def _date_text(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def _raise_duplicates(df: pl.DataFrame, key: pl.Series, table: str) -> None:
    """Raise DuplicateKeyError quoting a repeated (product_id, date); only runs on failure."""
    repeated = df.filter(key.is_duplicated().to_numpy())
    first = repeated.row(0, named=True)
    raise DuplicateKeyError(
        f"{table}: {repeated.height} rows repeat a (product_id, date) key, e.g. "
        f"product_id={first['product_id']}, date={first['date']}; each must appear once."
    )
