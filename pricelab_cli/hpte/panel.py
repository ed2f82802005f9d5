"""Lay a sales panel against an assignment: which rows are history, which are experiment cells.

Every later step (baseline fits, first differences, the forest, the bootstrap) works on the
flat numpy arrays built here, so the checks on the inputs live here too, in one place.

Rules
-----
- A product is in the analysis when it appears in the assignment. Sales of other products
  are ignored (reported as a count).
- Its *pre-experiment* rows are the sales dates the assignment does not cover and that come
  before the product's first assignment date (blackout dates included in "covered").
- Its *experiment* rows are the sales dates covered by non-blackout assignment rows. Sales
  dates after its first assignment date that the assignment does not cover (gaps, days after
  the window) belong to neither and are dropped; dates after the assignment's last date are
  never read.
- A *cell* is (product, arm): one per product for time-bound and triggered designs, two
  (treated days and control days) for random-days and crossover designs.
- The randomisation unit is the product, or its cluster when the assignment has
  ``cluster_id``.
- Time runs in periods of the panel's spacing (the most common gap between consecutive
  distinct sales dates): 1 day for daily panels, 7 for weekly, about 91 for quarterly.
  Weekday terms are used only when the spacing is one day.

Partitions
----------
Every step but the last few is a function of one product's rows, or a sum over rows. So the
panel is laid out in *partitions*: contiguous ranges of product codes (products sorted by id),
each holding its products' analysed rows sorted by product and date. The sales are read once,
as a stream of batches; each batch's analysed rows are sent to their partition, which the
engine keeps (:meth:`~pricelab_cli.engine.Engine.partition_store`: on this machine, in memory
when there is one partition and in a scratch folder under ``TMPDIR`` when there are several).
A partition is then loaded as a :class:`Panel` of its own, and the steps of
:mod:`~pricelab_cli.hpte.detrend` map over partitions and reduce their per-product summaries
and per-date sums; the full panel is never held in memory at once.

The number of partitions depends only on the number of sales rows (``PARTITION_ROWS`` rows a
partition), never on the input's file layout or row order, so a single file, a folder, a
glob, hive partitions and an object-store URI holding the same rows give the same bytes.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl
from polars.datatypes import DataTypeClass

from pricelab_cli.engine import Engine, PartitionStore, default_engine
from pricelab_cli.errors import (
    ColumnTypeError,
    DataError,
    EmptyTableError,
    PricelabWarning,
    damaged_input,
)
from pricelab_cli.hpte.partition import (
    _bucket_slice,
    _count,
    _FinalTask,
    _SliceInputs,
    _sort_and_check,
    _StreamSlice,
    _warn_negative,
)
from pricelab_cli.hpte.plan import (
    DEFAULT_LABELS,
    NOT_COVERED,
    PARTITION_ROWS,
    SUM_BLOCK,
    PanelPlan,
    _date_text,
    plan_panel,
)
from pricelab_cli.ids import IdLookup
from pricelab_cli.tables import (
    check_columns,
    check_numeric,
)


@dataclasses.dataclass(frozen=True, eq=False)
class Panel:
    """The analysed rows of a sales panel (or of one partition of it), as flat arrays.

    Attributes
    ----------
    product_ids : id of each product code (``product_ids[code]``), in hash order (see
        ``in_hash_order``).
    code : product code of each row.
    date_index : index of the row's date in ``dates``.
    dates : every day number (days since 1970-01-01) from the first to the last analysed
        date, so ``dates[date_index]`` is the row's date.
    t : time of the row in panel periods, 0 on the product's first assignment date.
    weekday : Monday = 0 ... Sunday = 6.
    pre : True for pre-experiment rows, False for experiment rows.
    treated : arm of experiment rows (0/1); -1 on pre-experiment rows.
    outcomes : outcome name -> float64 values per row.
    price : mean pre-experiment price per product (None without a price column).
    first_arm : arm of each product on its first assignment date (for plots of history).
    unit : randomisation unit index of each product (its cluster, else itself).
    unit_label : ``product`` or ``cluster``.
    daily : whether the panel is daily (weekday terms are fitted).
    spacing_days : the panel's spacing in days.
    n_ignored_sales_products : sales products absent from the assignment.
    """

    product_ids: pl.Series
    code: np.ndarray
    date_index: np.ndarray
    dates: np.ndarray
    t: np.ndarray
    weekday: np.ndarray
    pre: np.ndarray
    treated: np.ndarray
    outcomes: dict[str, np.ndarray]
    price: np.ndarray | None
    first_arm: np.ndarray
    unit: np.ndarray
    unit_label: str
    daily: bool
    spacing_days: int
    n_ignored_sales_products: int

    @property
    def n_products(self) -> int:
        return len(self.product_ids)

    def handles(self) -> list[_InMemory]:
        """A panel in memory is its own single partition."""
        return [_InMemory(self)]


@dataclasses.dataclass(frozen=True, eq=False)
class _InMemory:
    """The handle of a panel already in memory (see ``PartitionHandle``)."""

    panel: Panel
    offset: int = 0
    k: int = 0

    @property
    def product_ids(self) -> pl.Series:
        return self.panel.product_ids

    def load(self) -> Panel:
        return self.panel


def panel_spacing(day_numbers: np.ndarray) -> int:
    """The most common gap in days between consecutive distinct dates (1 if only one date)."""
    first = int(day_numbers.min())
    distinct = first + np.flatnonzero(np.bincount(day_numbers - first))
    if len(distinct) < 2:
        return 1
    gaps, counts = np.unique(np.diff(distinct), return_counts=True)
    return int(gaps[np.argmax(counts)])


@dataclasses.dataclass(frozen=True, eq=False)
class PartitionHandle:
    """One partition of a :class:`PartitionedPanel`: where its rows are and the slices of
    the per-product facts it needs; ``load`` lays it out as a :class:`Panel`."""

    store: PartitionStore
    k: int
    offset: int
    product_ids: pl.Series
    dates: np.ndarray
    start_day: np.ndarray
    price: np.ndarray | None
    first_arm: np.ndarray
    unit: np.ndarray
    unit_label: str
    spacing_days: int
    n_ignored_sales_products: int
    outcome_names: tuple[str, ...]

    @property
    def n_products(self) -> int:
        return len(self.product_ids)

    def load(self) -> Panel:
        rows = self.store.load(self.k)
        code = rows["code"].astype(np.int64) - self.offset
        day = rows["day"].astype(np.int64)
        state = rows["state"]
        return Panel(
            product_ids=self.product_ids,
            code=code,
            date_index=day - self.dates[0],
            dates=self.dates,
            t=(day - self.start_day[code]) / self.spacing_days,
            weekday=((day + 3) % 7).astype(np.int8),  # 1970-01-01 was a Thursday
            pre=state == NOT_COVERED,
            treated=state,
            outcomes={name: rows[name] for name in self.outcome_names},
            price=self.price,
            first_arm=self.first_arm,
            unit=self.unit,
            unit_label=self.unit_label,
            daily=self.spacing_days == 1,
            spacing_days=self.spacing_days,
            n_ignored_sales_products=self.n_ignored_sales_products,
        )


@dataclasses.dataclass(eq=False)
class PartitionedPanel:
    """A sales panel laid out in partitions of products (see the module docstring).

    Global facts (``product_ids``, ``unit``, ``price``, ``dates``, ...) are those of
    :class:`Panel`; ``partition(k)`` loads partition ``k`` as a :class:`Panel` whose product
    codes start at 0 (its handle's ``offset`` is the global code of its first product). Use it as a
    context manager (or call ``close``) so that its scratch folder is removed.
    """

    product_ids: pl.Series
    dates: np.ndarray
    price: np.ndarray | None
    first_arm: np.ndarray
    unit: np.ndarray
    unit_label: str
    spacing_days: int
    n_ignored_sales_products: int
    outcome_names: tuple[str, ...]
    bounds: np.ndarray  # partition k holds codes bounds[k] .. bounds[k+1]-1
    start_day: np.ndarray
    _store: PartitionStore
    # Rows of 0 the zero fill added, and rows in the panel after it.
    n_filled_rows: int = 0
    n_rows: int = 0

    @property
    def n_products(self) -> int:
        return len(self.product_ids)

    @property
    def n_partitions(self) -> int:
        return len(self.bounds) - 1

    @property
    def daily(self) -> bool:
        return self.spacing_days == 1

    def handle(self, k: int) -> PartitionHandle:
        """What a worker needs to load partition ``k`` (small, and picklable when the
        partitions are on disk)."""
        lo, hi = int(self.bounds[k]), int(self.bounds[k + 1])
        return PartitionHandle(
            store=self._store.view(k),
            k=k,
            offset=lo,
            product_ids=self.product_ids.slice(lo, hi - lo),
            dates=self.dates,
            start_day=self.start_day[lo:hi],
            price=None if self.price is None else self.price[lo:hi],
            first_arm=self.first_arm[lo:hi],
            unit=self.unit[lo:hi],
            unit_label=self.unit_label,
            spacing_days=self.spacing_days,
            n_ignored_sales_products=self.n_ignored_sales_products,
            outcome_names=self.outcome_names,
        )

    def handles(self) -> list[PartitionHandle]:
        return [self.handle(k) for k in range(self.n_partitions)]

    def partition(self, k: int) -> Panel:
        return self.handle(k).load()

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> PartitionedPanel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _sales_schema(
    schema: Mapping[str, pl.DataType], outcomes: Sequence[str], price_col: str | None, label: str
) -> str | None:
    """Check the sales columns from the schema alone (before any row is read); return the
    price column used (None without one)."""
    empty = pl.DataFrame(schema=schema)
    check_columns(empty, ["product_id", "date", *outcomes], label)
    check_numeric(empty, outcomes, label)
    dtype = schema["date"]
    if dtype != pl.Date and not isinstance(dtype, pl.Datetime):
        raise ColumnTypeError(f"{label}: column 'date' must hold dates but has type {dtype}.")
    if price_col is None or price_col not in schema or price_col in outcomes:
        return None
    check_numeric(empty, [price_col], label)
    return price_col


@dataclasses.dataclass(frozen=True, eq=False)
class _SalesRead:
    """The checked settings of one ``partition_panel`` call, which every step of laying the
    sales into partitions reads.

    ``price_col`` is the price column used (None without one); ``value_cols`` the outcome
    columns and the price column; ``total_rows`` the sales rows (before any filter).
    """

    lazy: pl.LazyFrame
    schema: Mapping[str, pl.DataType]
    outcomes: list[str]
    value_cols: list[str]
    price_col: str | None
    sales_label: str
    assignment_label: str
    progress: Callable[[int], None] | None
    engine: Engine
    fill_zeros: bool
    total_rows: int


def partition_panel(
    sales: pl.DataFrame | pl.LazyFrame,
    assignment: pl.DataFrame | pl.LazyFrame,
    outcomes: Sequence[str],
    *,
    price_col: str | None = "price",
    labels: Mapping[str, str] | None = None,
    rows_per_partition: int | None = None,
    progress: Callable[[int], None] | None = None,
    engine: Engine | None = None,
    fill_zeros: bool = True,
) -> PartitionedPanel:
    """Check the inputs and lay the sales panel against the assignment, in partitions.

    ``fill_zeros`` (the default) reads a product-date without a row as a day without sales:
    each product gets a row of 0 on every date of the panel's calendar (the dates on which
    any product has an analysed row) from its first row to the later of its last row and its
    last analysed experiment date; the number of rows filled is ``n_filled_rows``. Without
    it, absent rows stay absent (absence means unknown).

    ``sales`` may be a lazy scan (of a file, a folder, a glob or an object store): only its
    ``product_id``, ``date``, outcome and price columns are read, only dates up to the
    assignment's last date, as a stream of batches. ``labels`` names the tables in messages
    (``{"sales": path, "assignment": path}``). ``progress`` is called with the number of
    rows read, batch by batch. ``engine`` runs the per-partition checks (in this process by
    default). ``rows_per_partition`` defaults to ``PARTITION_ROWS``.

    Raises DataError subclasses (exit 65) for inputs that cannot be analysed: a missing
    column, duplicate (product_id, date) rows, missing or non-finite outcomes on analysed
    rows, assigned products absent from the sales table, no pre-experiment history at all,
    or an arm with no experiment rows. Negative outcomes are kept with a warning.
    """
    labels = {**DEFAULT_LABELS, **(labels or {})}
    sales_label, assignment_label = labels["sales"], labels["assignment"]
    outcomes = list(dict.fromkeys(outcomes))
    if not outcomes:
        raise DataError("no outcome column given; name one in `outcomes`.")
    lazy = sales.lazy()
    schema = lazy.collect_schema()
    used_price = _sales_schema(schema, outcomes, price_col, sales_label)
    plan = plan_panel(assignment, assignment_label)
    value_cols = [*outcomes, *([used_price] if used_price is not None else [])]

    total_rows = sales.height if isinstance(sales, pl.DataFrame) else lazy.select(pl.len()).collect().item()
    if total_rows == 0:
        raise EmptyTableError(f"{sales_label}: the table has no rows.")
    bounds = _partition_bounds(plan.n_products, total_rows, rows_per_partition)
    engine = default_engine(engine)
    read = _SalesRead(
        lazy=lazy,
        schema=schema,
        outcomes=outcomes,
        value_cols=value_cols,
        price_col=used_price,
        sales_label=sales_label,
        assignment_label=assignment_label,
        progress=progress,
        engine=engine,
        fill_zeros=fill_zeros,
        total_rows=total_rows,
    )
    columns: dict[str, np.dtype] = {"code": np.dtype(np.int32), "day": np.dtype(np.int32), "state": np.dtype(np.int8)}
    columns.update({name: np.dtype(np.float64) for name in value_cols})
    # The engine keeps the partitions (a scratch folder, a cluster's object store).
    store = engine.partition_store(len(bounds) - 1, columns, ["code", "day", "state", *outcomes], total_rows)
    try:
        try:
            return _fill_partitions(read, plan, bounds, store)
        except (pl.exceptions.PolarsError, OSError) as exc:
            damaged = damaged_input(sales_label, exc)
            if damaged is None:
                raise
            raise damaged from None
    except BaseException:
        store.close()
        raise


def _partition_bounds(n: int, total_rows: int, rows_per_partition: int | None) -> np.ndarray:
    """The first product code of each partition, and ``n`` last: about ``rows_per_partition``
    sales rows a partition, whole blocks of products (``SUM_BLOCK``) a partition."""
    n_parts = min(n, max(1, math.ceil(total_rows / (rows_per_partition or PARTITION_ROWS))))
    per_part = math.ceil(math.ceil(n / n_parts) / SUM_BLOCK) * SUM_BLOCK
    bounds = np.minimum(np.arange(0, n + per_part, per_part), n)
    return np.unique(bounds)


def _fill_partitions(read: _SalesRead, plan: PanelPlan, bounds: np.ndarray, store: PartitionStore) -> PartitionedPanel:
    """Read the sales into the partitions of ``store``, sort and check each, and check what
    they hold together."""
    products, id_type = _assigned_ids(read, plan)
    done, inputs = _read_slices(read, plan, bounds, store, products, id_type)
    n_ignored, distinct_days = _check_sales_rows(read, plan, products, done)
    spacing = panel_spacing(distinct_days)
    if spacing > 1:
        check_alignment(plan, distinct_days, spacing, read.sales_label, read.assignment_label)
    else:
        _warn_uncovered_dates(plan, distinct_days, read.sales_label, read.assignment_label)
    dates = np.arange(distinct_days[0], distinct_days[-1] + 1)

    # Each partition's rows sorted by product and date and checked, once, in a fixed order
    # whatever order the input had (in parallel when there are several partitions).
    product_ids = plan.products.get_column("product_id")
    finals = _sort_partitions(read, bounds, store, inputs, product_ids, dates, distinct_days)
    price = np.concatenate([f["price"] for f in finals]) if read.price_col is not None else None
    n_filled = sum(f["n_filled"] for f in finals)
    n_rows = sum(f["n_rows"] for f in finals)
    if n_filled:
        warnings.warn(
            f"{read.sales_label}: {n_filled:,} of {n_rows:,} analysed product-dates ({n_filled / n_rows:.1%}) have "
            "no row and are read as zero sales (each product from its first row to its last row or its last "
            "experiment date, on the dates the panel has); pass `fill_zeros=False` if a missing row means unknown.",
            PricelabWarning,
            stacklevel=3,
        )
    _warn_negative([item for f in finals for item in f["negative"]], product_ids, read.sales_label)
    _check_arms(read, finals)
    return PartitionedPanel(
        product_ids=product_ids,
        dates=dates,
        price=price,
        first_arm=plan.first_arm,
        unit=plan.unit,
        unit_label=plan.unit_label,
        spacing_days=spacing,
        n_ignored_sales_products=n_ignored,
        outcome_names=tuple(read.outcomes),
        bounds=bounds,
        start_day=plan.start_day,
        _store=store,
        n_filled_rows=n_filled,
        n_rows=n_rows,
    )


def _assigned_ids(read: _SalesRead, plan: PanelPlan) -> tuple[pl.DataFrame, pl.DataType | DataTypeClass]:
    """The plan's products and the type their ids are compared in: the assignment's, or
    text when the two tables disagree on their type."""
    products = plan.products
    id_type: pl.DataType | DataTypeClass = products.schema["product_id"]
    if read.schema["product_id"] != id_type:
        id_type = pl.String
        products = products.with_columns(pl.col("product_id").cast(pl.String))
    return products, id_type


def _date_expr(read: _SalesRead) -> pl.Expr:
    return pl.col("date") if read.schema["date"] == pl.Date else pl.col("date").dt.date()


def _read_slices(
    read: _SalesRead,
    plan: PanelPlan,
    bounds: np.ndarray,
    store: PartitionStore,
    products: pl.DataFrame,
    id_type: pl.DataType | DataTypeClass,
) -> tuple[list[dict], object]:
    """Send the analysed rows of the sales stream to their partitions, slice by slice:
    each slice's result, and the plan's inputs as shared with the engine."""
    # Integer identifiers find their code by binary search in the sorted ids; others by a join.
    lookup = IdLookup.of(products.get_column("product_id"))
    last_date = pl.lit(plan.last_day).cast(pl.Int32).cast(pl.Date)
    stream = read.lazy.select("product_id", _date_expr(read).alias("date"), *read.value_cols).filter(
        pl.col("date").is_null() | (pl.col("date") <= last_date)
    )
    # The stream is cut into slices of rows read side by side (each writing files of its
    # own); the partitions are sorted afterwards, so the cut changes nothing in the result.
    total, n_slices = store.slices(lambda: _count(stream))
    cuts = np.linspace(0, total or 0, n_slices + 1).astype(np.int64)
    # What every slice needs of the plan travels to the engine once.
    inputs = read.engine.share(_SliceInputs(lookup, plan.state_grid, plan.first_day, plan.span, plan.start_day, bounds))
    slices = [
        _StreamSlice(
            stream,
            int(cuts[w]),
            None if total is None else int(cuts[w + 1] - cuts[w]),
            w,
            id_type,
            inputs,
            tuple(read.value_cols),
            store.writer(w),
            read.sales_label,
            None if total is not None else read.progress,
        )
        for w in range(n_slices)
    ]
    progress, total_rows = read.progress, read.total_rows
    advance = None if progress is None or total is None else (lambda piece: progress(piece.length))
    # The stage's size is known before a row is read: the slices' rows, or the table's.
    done = read.engine.write_partitions(
        _bucket_slice,
        slices,
        store,
        progress=advance,
        stage="sales rows read",
        weights=lambda piece: piece.length or total_rows or 1,
    )
    for result in done:
        if isinstance(result, BaseException):
            raise result
    return done, inputs


def _check_sales_rows(
    read: _SalesRead, plan: PanelPlan, products: pl.DataFrame, done: list[dict]
) -> tuple[int, np.ndarray]:
    """Refuse assigned products without sales rows and sales without history; return the
    number of sales products not in the assignment and the distinct days seen."""
    # Which products have a sales row: each slice's bits, or-ed (a bit a product).
    has_rows = np.unpackbits(np.bitwise_or.reduce([r["has_rows"] for r in done]), count=len(products))
    ignored = [r["ignored"] for r in done if r["ignored"] is not None]
    days_seen = set(np.concatenate([r["days"] for r in done]).tolist())

    absent = np.flatnonzero(has_rows == 0)
    if len(absent) == len(products):
        # Rows after the experiment are not read: say so when that is where all of them are.
        first = read.lazy.select(_date_expr(read).min().cast(pl.Int32)).collect().item()
        if first is not None and first > plan.last_day:
            raise DataError(
                f"{read.sales_label}: its sales start on {_date_text(first)}, after the experiment's last date "
                f"{_date_text(plan.last_day)} in "
                f"{read.assignment_label}; give sales that cover the experiment and the weeks before it (or the "
                "assignment of this period)."
            )
    if len(absent):
        raise DataError(
            f"{read.assignment_label}: {len(absent)} assigned product(s) have no sales rows, e.g. "
            f"{products['product_id'][int(absent[0])]!r}; give every assigned product its rows in "
            f"{read.sales_label} (zero-sales days included) or remove it from the assignment."
        )
    n_ignored = pl.concat(ignored).n_unique() if ignored else 0
    if not days_seen:
        raise DataError(
            f"{read.sales_label}: no product has sales before its experiment starts, so there is no "
            "pre-experiment history to compare with; include earlier dates in the sales table."
        )
    return n_ignored, np.array(sorted(days_seen), dtype=np.int64)


def _sort_partitions(
    read: _SalesRead,
    bounds: np.ndarray,
    store: PartitionStore,
    inputs: object,
    product_ids: pl.Series,
    dates: np.ndarray,
    distinct_days: np.ndarray,
) -> list[dict]:
    """Sort and check every partition (zero-filled on the days of ``distinct_days`` with
    ``fill_zeros``): each partition's counts, negative outcomes and history prices."""
    tasks = [
        _FinalTask(
            store.view(k),
            k,
            int(bounds[k]),
            int(bounds[k + 1]),
            int(dates[0]),
            len(dates),
            tuple(read.outcomes),
            read.price_col,
            product_ids.slice(int(bounds[k]), int(bounds[k + 1] - bounds[k])),
            read.sales_label,
            inputs if read.fill_zeros else None,
            distinct_days if read.fill_zeros else None,
        )
        for k in range(len(bounds) - 1)
    ]
    return read.engine.rewrite_partitions(_sort_and_check, tasks, store, stage="partitions sorted and checked")


def _check_arms(read: _SalesRead, finals: list[dict]) -> None:
    """Refuse a panel without history rows, or with an arm without experiment rows."""
    n_pre = sum(f["n_pre"] for f in finals)
    n_arm = np.sum([f["n_arm"] for f in finals], axis=0)
    if n_pre == 0:
        raise DataError(
            f"{read.sales_label}: no product has sales before its experiment starts, so there is no "
            "pre-experiment history to compare with; include earlier dates in the sales table."
        )
    for arm, name in ((1, "treated"), (0, "control")):
        if n_arm[arm] == 0:
            raise DataError(
                f"{read.assignment_label}: the {name} arm has no analysed experiment rows with sales "
                "(no product-date is assigned to it outside blackout); both arms need products."
            )


def _warn_uncovered_dates(plan: PanelPlan, days: np.ndarray, sales_label: str, assignment_label: str) -> None:
    """Warn, naming them, about the assignment's analysed dates on which no product has a sales
    row: sales that end before the experiment does (or start after it began), or a closure. A
    date that is blackout for every product is not analysed, and its rows are never read."""
    grid = plan.state_grid.reshape(-1, plan.span)
    assigned = plan.first_day + np.flatnonzero(((grid == 0) | (grid == 1)).any(axis=0))
    missing = assigned[~np.isin(assigned, days)]
    if not len(missing):
        return
    # Runs of consecutive dates, each "first to last" (or the one date).
    breaks = np.flatnonzero(np.diff(missing) != 1)
    firsts, lasts = missing[np.r_[0, breaks + 1]], missing[np.r_[breaks, len(missing) - 1]]
    runs = [_date_text(a) if a == b else f"{_date_text(a)} to {_date_text(b)}" for a, b in zip(firsts, lasts)]
    shown = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more stretch(es)" if len(runs) > 3 else "")
    if missing[-1] == assigned[-1] and len(runs) == 1:
        why = f"the sales end on {_date_text(days[days < missing[0]].max())}" if (days < missing[0]).any() else ""
    elif missing[0] == assigned[0] and len(runs) == 1:
        why = "the sales start late"
    else:
        why = "no product has a row on those dates (a closure, or rows missing from the export)"
    warnings.warn(
        f"{sales_label}: {len(missing)} of the {len(assigned)} dates in {assignment_label} have no sales rows at all "
        f"({shown}){'; ' + why if why else ''}. The estimate uses only the dates with rows; if sales are still "
        "to come, rerun when they are in.",
        PricelabWarning,
        stacklevel=4,
    )


def check_alignment(
    plan: PanelPlan, calendar: np.ndarray, spacing: int, sales_label: str, assignment_label: str
) -> None:
    """Refuse an assignment that does not line up with a panel of ``spacing`` days.

    Each assignment date belongs to the sales period that starts on the latest calendar
    date at or before it. The design must start every product's experiment on a period's
    first date (otherwise a period holding experiment days is read as history) and give
    every analysed day of one period the same arm (otherwise the period takes one day's arm).
    """
    grid = plan.state_grid.reshape(-1, plan.span)
    days = plan.first_day + np.arange(plan.span)
    period = np.searchsorted(calendar, days, side="right") - 1
    starts = plan.start_day
    off_grid = np.flatnonzero(~np.isin(starts, calendar) & (starts <= calendar[-1] + spacing - 1))
    if len(off_grid):
        i = int(off_grid[0])
        at = max(int(np.searchsorted(calendar, starts[i], side="right")) - 1, 0)
        raise DataError(
            f"{assignment_label}: the experiment of product {plan.products['product_id'][i]!r} starts on "
            f"{_date_text(starts[i])}, inside the sales period that begins on {_date_text(calendar[at])} "
            f"({sales_label} has one row every {spacing} days); start the design on a period's first date "
            f"and make its blocks whole periods (`block_days` {spacing})."
        )
    analysed = (grid == 0) | (grid == 1)
    valid = period >= 0
    if not valid.any():
        return
    cut = np.flatnonzero(np.r_[True, period[valid][1:] != period[valid][:-1]])
    arms = np.where(analysed[:, valid], grid[:, valid], -1).astype(np.int8)
    high = np.maximum.reduceat(arms, cut, axis=1)
    low = np.minimum.reduceat(np.where(arms < 0, 2, arms).astype(np.int8), cut, axis=1)
    mixed = np.argwhere((high >= 0) & (low <= 1) & (high != low))
    if len(mixed):
        i, j = (int(v) for v in mixed[0])
        first = calendar[period[valid][cut[j]]]
        raise DataError(
            f"{assignment_label}: product {plan.products['product_id'][i]!r} is treated on some days and "
            f"control on others within the sales period that begins on {_date_text(first)} ({sales_label} has "
            f"one row every {spacing} days); use blocks of whole periods (`block_days` {spacing}) so that "
            "each period has one arm."
        )


def build_panel(
    sales: pl.DataFrame,
    assignment: pl.DataFrame | pl.LazyFrame,
    outcomes: Sequence[str],
    *,
    price_col: str | None = "price",
    labels: Mapping[str, str] | None = None,
) -> Panel:
    """The whole panel in memory, as one :class:`Panel` (see :func:`partition_panel`)."""
    with partition_panel(
        sales, assignment, outcomes, price_col=price_col, labels=labels, rows_per_partition=max(sales.height, 1)
    ) as parts:
        return parts.partition(0)
