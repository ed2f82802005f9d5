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
  the window) belong to neither and are dropped.
- A *cell* is (product, arm): one per product for time-bound and triggered designs, two
  (treated days and control days) for random-days and crossover designs.
- The randomisation unit is the product, or its cluster when the assignment has
  ``cluster_id``.
- Time runs in periods of the panel's spacing (the most common gap between consecutive
  distinct sales dates): 1 day for daily panels, 7 for weekly, about 91 for quarterly.
  Weekday terms are used only when the spacing is one day.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from pricelab_cli.errors import (
    ColumnTypeError,
    DataError,
    DuplicateKeyError,
    EmptyTableError,
    PricelabWarning,
)
from pricelab_cli.io import align_id_types, assignment_flags, check_columns, check_numeric

# How messages name the two tables unless the caller passes their file names.
DEFAULT_LABELS = {"sales": "sales", "assignment": "assignment"}
# States of a (product, date) in the assignment grid; 0 and 1 are the arms.
NOT_COVERED, BLACKOUT = -1, 2


@dataclasses.dataclass(frozen=True, eq=False)
class Panel:
    """The analysed rows of a sales panel, as flat arrays (one entry per kept sales row).

    Attributes
    ----------
    product_ids : id of each product code (``product_ids[code]``), sorted.
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


def _as_date(df: pl.DataFrame, col: str, table: str) -> pl.DataFrame:
    dtype = df.schema[col]
    if dtype == pl.Date:
        return df
    if isinstance(dtype, pl.Datetime):
        return df.with_columns(pl.col(col).dt.date())
    raise ColumnTypeError(f"{table}: column {col!r} must hold dates but has type {dtype}.")


def panel_spacing(day_numbers: np.ndarray) -> int:
    """The most common gap in days between consecutive distinct dates (1 if only one date)."""
    first = int(day_numbers.min())
    distinct = first + np.flatnonzero(np.bincount(day_numbers - first))
    if len(distinct) < 2:
        return 1
    gaps, counts = np.unique(np.diff(distinct), return_counts=True)
    return int(gaps[np.argmax(counts)])


def build_panel(
    sales: pl.DataFrame,
    assignment: pl.DataFrame,
    outcomes: Sequence[str],
    *,
    price_col: str | None = "price",
    labels: Mapping[str, str] | None = None,
) -> Panel:
    """Check the inputs and lay the sales panel against the assignment.

    ``labels`` names the tables in messages (``{"sales": path, "assignment": path}``; by
    default "sales" and "assignment").

    Raises DataError subclasses (exit 65) for inputs that cannot be analysed: a missing
    column, duplicate (product_id, date) rows, missing or non-finite outcomes on analysed
    rows, assigned products absent from the sales table, no pre-experiment history at all,
    or an arm with no experiment rows. Negative outcomes are kept with a warning.
    """
    labels = {**DEFAULT_LABELS, **(labels or {})}
    sales_label, assignment_label = labels["sales"], labels["assignment"]
    outcomes = list(dict.fromkeys(outcomes))
    if not outcomes:
        raise DataError("no outcome column given; name one with --outcome.")
    check_columns(sales, ["product_id", "date", *outcomes], sales_label)
    check_columns(assignment, ["product_id", "date", "treated"], assignment_label)
    check_numeric(sales, outcomes, sales_label)
    for table, df in ((sales_label, sales), (assignment_label, assignment)):
        if df.height == 0:
            raise EmptyTableError(f"{table}: the table has no rows.")
    sales = _as_date(sales, "date", sales_label)
    assignment = _as_date(assignment, "date", assignment_label)
    has_price = price_col is not None and price_col in sales.columns and price_col not in outcomes
    if has_price:
        check_numeric(sales, [price_col], sales_label)
    for table, df in ((sales_label, sales), (assignment_label, assignment)):
        for col in ("product_id", "date"):
            if df.get_column(col).null_count():
                raise DataError(f"{table}: column {col!r} has {df.get_column(col).null_count()} missing values.")
    assignment = assignment_flags(assignment, assignment_label)
    has_cluster = "cluster_id" in assignment.columns
    sales, assignment = align_id_types(sales, assignment)

    products = _products(assignment, has_cluster, assignment_label)
    n = products.height
    ids = products.select("product_id", "_code")
    sales_ids = sales.select(pl.col("product_id").unique())
    absent = ids.join(sales_ids, on="product_id", how="anti")
    if absent.height:
        raise DataError(
            f"{assignment_label}: {absent.height} assigned product(s) have no sales rows, e.g. "
            f"{absent['product_id'][0]!r}; give every assigned product its rows in {sales_label} "
            "(zero-sales days included) or remove it from the assignment."
        )
    n_ignored = sales_ids.height - (n - absent.height)

    # The assignment becomes a dense (product x assignment day) grid of states, so each sales
    # row finds its arm by position instead of a second join on (product, date).
    plan = assignment.join(ids, on="product_id", how="inner", maintain_order="left")
    plan_code = plan.get_column("_code").to_numpy().astype(np.int64)
    plan_day = plan.get_column("date").cast(pl.Int32).to_numpy().astype(np.int64)
    first_day, span = int(plan_day.min()), int(plan_day.max() - plan_day.min()) + 1
    slot = plan_code * span + (plan_day - first_day)
    if pl.Series(slot).n_unique() < len(slot):
        _raise_duplicates(plan, pl.Series(slot), assignment_label)
    state_grid = np.full(n * span, NOT_COVERED, dtype=np.int8)
    state_grid[slot] = np.where(plan.get_column("blackout").to_numpy(), BLACKOUT, plan.get_column("treated").to_numpy())

    value_cols = [*outcomes, *([price_col] if has_price else [])]
    day = pl.col("date").cast(pl.Int32)
    offset = day - first_day
    covered = (offset >= 0) & (offset < span)
    position = pl.col("_code").cast(pl.Int64) * span + offset.clip(0, span - 1)
    state = pl.when(covered).then(pl.lit(pl.Series(state_grid)).gather(position)).otherwise(NOT_COVERED)
    rows = (
        sales.lazy()
        .select("product_id", "date", *value_cols)
        .join(products.lazy().select("product_id", "_code", "_start"), on="product_id", how="inner", maintain_order="left")
        .with_columns(_day=day, _state=state, _pre_day=pl.col("date") < pl.col("_start"))
        .collect()
    )
    days = rows.get_column("_day")
    sales_key = rows.get_column("_code").cast(pl.Int64) * (int(days.max() - days.min()) + 1) + (days - days.min())
    if sales_key.n_unique() < len(sales_key):
        _raise_duplicates(rows, sales_key, sales_label)
    rows = rows.filter(
        ((pl.col("_state") == NOT_COVERED) & pl.col("_pre_day")) | pl.col("_state").is_in([0, 1])
    )
    code = rows.get_column("_code").to_numpy().astype(np.int64)
    day = rows.get_column("_day").to_numpy().astype(np.int64)
    treated = rows.get_column("_state").to_numpy()
    pre = treated == NOT_COVERED
    values = {col: rows.get_column(col).cast(pl.Float64).to_numpy() for col in value_cols}
    _check_outcome_values(rows, values, outcomes, sales_label)
    start_day = products.get_column("_start").cast(pl.Int32).to_numpy().astype(np.int64)

    if not pre.any():
        raise DataError(
            f"{sales_label}: no product has sales before its experiment starts, so there is no "
            "pre-experiment history to compare with; include earlier dates in the sales table."
        )
    for arm, name in ((1, "treated"), (0, "control")):
        if not (treated[~pre] == arm).any():
            raise DataError(
                f"{assignment_label}: the {name} arm has no analysed experiment rows with sales "
                "(no product-date is assigned to it outside blackout); both arms need products."
            )

    spacing = panel_spacing(day)
    # Dates as offsets from the first analysed date: a dense index without sorting rows.
    dates = np.arange(day.min(), day.max() + 1)
    price = None
    if has_price:
        price_values = values[price_col]
        usable = pre & np.isfinite(price_values)
        count = np.bincount(code[usable], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            price = np.bincount(code[usable], weights=price_values[usable], minlength=n) / count
    if has_cluster:
        unit = products.get_column("cluster_id").rank("dense").cast(pl.Int64).to_numpy() - 1
    else:
        unit = np.arange(n, dtype=np.int64)
    return Panel(
        product_ids=products.get_column("product_id"),
        code=code,
        date_index=day - dates[0],
        dates=dates,
        t=(day - start_day[code]) / spacing,
        weekday=((day + 3) % 7).astype(np.int8),  # 1970-01-01 was a Thursday
        pre=pre,
        treated=treated,
        outcomes={name: values[name] for name in outcomes},
        price=price,
        first_arm=products.get_column("_first_arm").to_numpy().astype(np.int8),
        unit=unit,
        unit_label="cluster" if has_cluster else "product",
        daily=spacing == 1,
        spacing_days=spacing,
        n_ignored_sales_products=n_ignored,
    )


def _products(assignment: pl.DataFrame, has_cluster: bool, label: str) -> pl.DataFrame:
    """One row per assigned product, sorted by id: code, first date, first arm, cluster."""
    products = (
        assignment.sort("date", maintain_order=True)
        .group_by("product_id", maintain_order=True)
        .agg(
            pl.col("date").first().alias("_start"),
            pl.col("treated").first().alias("_first_arm"),
            *([pl.col("cluster_id").n_unique().alias("_n_clusters"), pl.col("cluster_id").first()] if has_cluster else []),
        )
        .sort("product_id")
        .with_row_index("_code")
    )
    if has_cluster:
        split = products.filter(pl.col("_n_clusters") > 1)
        if split.height:
            raise DataError(
                f"{label}: product {split['product_id'][0]!r} has more than one cluster_id; "
                "a product belongs to exactly one cluster."
            )
    return products


def _raise_duplicates(df: pl.DataFrame, key: pl.Series, table: str) -> None:
    """Raise DuplicateKeyError quoting a repeated (product_id, date); only runs on failure."""
    repeated = df.filter(key.is_duplicated().to_numpy())
    first = repeated.row(0, named=True)
    raise DuplicateKeyError(
        f"{table}: {repeated.height} rows repeat a (product_id, date) key, e.g. "
        f"product_id={first['product_id']}, date={first['date']}; each must appear once."
    )


def _check_outcome_values(rows: pl.DataFrame, values: dict[str, np.ndarray], outcomes: Sequence[str], label: str) -> None:
    """Missing or non-finite outcomes on analysed rows are errors; negative ones a warning."""
    for name in outcomes:
        y = values[name]
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            first = rows.row(int(bad[0]), named=True)
            raise DataError(
                f"{label}: column {name!r} has {len(bad)} missing or non-finite value(s) on analysed "
                f"dates, e.g. product {first['product_id']!r} on {first['date']}; fill them (0 for a "
                "day without sales) or remove those rows."
            )
        negative = np.flatnonzero(y < 0)
        if len(negative):
            first = rows.row(int(negative[0]), named=True)
            warnings.warn(
                f"{label}: column {name!r} has {len(negative)} negative value(s), e.g. product "
                f"{first['product_id']!r} on {first['date']} ({first[name]}); they are used as they are "
                "(check whether returns were netted into sales).",
                PricelabWarning,
                stacklevel=3,
            )
