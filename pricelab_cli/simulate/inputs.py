"""The tables and dates given to ``simulate_sales``, checked and turned into arrays: the
products' features, the panel dates, the substitutes' weight matrix and the treatment plan
(``SalesPanel``)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import polars as pl
from scipy import sparse

from pricelab_cli.errors import DataError, EmptyTableError, UsageError
from pricelab_cli.simulate.model import BRAND_MULTIPLIERS, DEFAULT_BASE_PRICE
from pricelab_cli.simulate.settings import flag_name
from pricelab_cli.tables import assignment_flags, check_columns, check_numeric, check_unique, parse_dates

EPOCH = dt.date(1970, 1, 1)


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    """The assignment's rows: product row, day number (since 1970-01-01), treated and
    blackout flags."""

    rows: np.ndarray
    day_numbers: np.ndarray
    treated: np.ndarray
    blackout: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class SalesPanel:
    """The products, dates, substitutes and treatment of a panel to simulate, as arrays."""

    ids: pl.Series
    base_price: np.ndarray
    quality: np.ndarray
    brand_multiplier: np.ndarray
    # The products table's own ``elasticity`` and ``price_change`` columns (a planted
    # elasticity per product, a price policy), or None where the table has none.
    elasticity: np.ndarray | None
    price_change: np.ndarray | None
    category: pl.Series | None  # the products' ``category`` (the truth's groups), if any
    start: dt.date
    end: dt.date
    weight_matrix: sparse.csr_matrix | None  # M[dst, src] = weight (see ``_edge_matrix``)
    treated: np.ndarray  # (products x days) treated flags
    assigned: np.ndarray  # per product: in the assignment
    # Analysed cells (non-blackout experiment dates in the panel) as coordinates: they are
    # a small part of the panel, so the truth is summed over them alone.
    analysed_rows: np.ndarray
    analysed_days: np.ndarray

    @classmethod
    def from_tables(
        cls,
        products: pl.DataFrame,
        assignment: pl.DataFrame | None,
        edges: pl.DataFrame | None,
        *,
        start: dt.date | None,
        end: dt.date | None,
        history_days: int,
    ) -> SalesPanel:
        """Check the tables (products, assignment, dates, then edges) and lay them out."""
        ids = _checked_product_ids(products)
        base_price, quality, brand_multiplier = _product_features(products)
        elasticity, price_change = _planted_columns(products)
        plan = None if assignment is None else _checked_assignment(assignment, ids)
        start, end = _panel_dates(plan, start, end, history_days)
        weight_matrix = _edge_matrix(edges, ids)
        n, n_days = len(ids), (end - start).days + 1
        treated = np.zeros((n, n_days), dtype=bool)
        assigned = np.zeros(n, dtype=bool)
        analysed_rows = analysed_days = np.zeros(0, dtype=np.int64)
        if plan is not None:
            assigned[plan.rows] = True
            day = plan.day_numbers - (start - EPOCH).days
            inside = (day >= 0) & (day < n_days)
            treated[plan.rows[inside], day[inside]] = plan.treated[inside]
            keep = inside & ~plan.blackout
            analysed_rows, analysed_days = plan.rows[keep], day[keep]
        return cls(
            ids,
            base_price,
            quality,
            brand_multiplier,
            elasticity,
            price_change,
            products.get_column("category").cast(pl.String) if "category" in products.columns else None,
            start,
            end,
            weight_matrix,
            treated,
            assigned,
            analysed_rows,
            analysed_days,
        )

    def log_cut(self, settings_log_cut: float) -> float | np.ndarray:
        """The treatment's change of log price: per product from the products' own
        ``price_change`` (a policy), else the one ``log(1 + price_change)`` of the settings."""
        return settings_log_cut if self.price_change is None else np.log1p(self.price_change)

    @property
    def n_products(self) -> int:
        return len(self.ids)

    @property
    def n_days(self) -> int:
        return (self.end - self.start).days + 1


def as_date(value: dt.date | None, name: str) -> dt.date | None:
    """``value`` as a date (a datetime gives its date); None stays None."""
    if value is None or type(value) is dt.date:
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    raise UsageError(f"{flag_name(name)} must be a date; got {value!r}.")


def _checked_product_ids(products: pl.DataFrame) -> pl.Series:
    check_columns(products, ["product_id"], "products")
    if products.height == 0:
        raise EmptyTableError("products: the table has no rows; nothing to simulate.")
    ids = products.get_column("product_id")
    if ids.null_count():
        raise DataError(
            f"products: column 'product_id' has {ids.null_count()} missing (null) values; every product needs an id."
        )
    check_unique(products, ["product_id"], "products")
    return ids


def _product_features(products: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``base_price``, ``quality`` and brand multiplier per product, with their defaults."""
    n = products.height
    check_numeric(products, ["base_price", "quality"], "products")
    for col in ("base_price", "quality"):
        if col in products.columns:
            _check_complete(products, col)
    base_price = _base_prices(products) if "base_price" in products.columns else np.full(n, DEFAULT_BASE_PRICE)
    quality = (
        products.get_column("quality").cast(pl.Float64).to_numpy() if "quality" in products.columns else np.zeros(n)
    )
    if "brand" in products.columns:
        multiplier = (
            products.get_column("brand")
            .cast(pl.String)
            .replace_strict(dict(BRAND_MULTIPLIERS), default=1.0, return_dtype=pl.Float64)
            .to_numpy()
        )
    else:
        multiplier = np.ones(n)
    return base_price, quality, multiplier


def _planted_columns(products: pl.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The products' own ``elasticity`` and ``price_change`` (None where absent): complete,
    finite, and a price change above -1 (a cut of 100% leaves no price)."""
    check_numeric(products, ["elasticity", "price_change"], "products")
    planted: list[np.ndarray | None] = []
    for col in ("elasticity", "price_change"):
        if col not in products.columns:
            planted.append(None)
            continue
        _check_complete(products, col)
        planted.append(products.get_column(col).cast(pl.Float64).to_numpy())
    change = planted[1]
    if change is not None and (change <= -1.0).any():
        bad = int(np.flatnonzero(change <= -1.0)[0])
        raise DataError(
            f"products: column 'price_change' must be greater than -1 (a cut of 100% leaves no price), but product "
            f"{products['product_id'][bad]!r} has {change[bad]!r}."
        )
    return planted[0], planted[1]


def _check_complete(products: pl.DataFrame, col: str) -> None:
    """A numeric feature column has no missing and no infinite or NaN values."""
    values = products.get_column(col)
    if values.null_count():
        raise DataError(
            f"products: column {col!r} has {values.null_count()} missing values; "
            f"fill them or drop the column to use the default."
        )
    finite = values.cast(pl.Float64).is_finite()
    if not finite.all():
        bad = products.filter(~finite.to_numpy())
        raise DataError(
            f"products: column {col!r} is not finite for product {bad['product_id'][0]!r} ({bad[col][0]!r})."
        )


def _base_prices(products: pl.DataFrame) -> np.ndarray:
    """The ``base_price`` column as floats; every price must be positive."""
    base_price = products.get_column("base_price").cast(pl.Float64).to_numpy()
    bad = np.flatnonzero(base_price <= 0)
    if len(bad):
        raise DataError(
            f"products: column 'base_price' must be positive, but {len(bad)} product(s) "
            f"are not, e.g. product {products['product_id'][int(bad[0])]!r} has "
            f"base_price {base_price[bad[0]]!r}."
        )
    return base_price


def _row_positions(values: pl.Series, ids: pl.Series, table: str, column: str, hint: str) -> np.ndarray:
    """Row of each value in the products table; unknown values raise DataError."""
    if values.null_count():
        raise DataError(f"{table}: column {column!r} has {values.null_count()} missing (null) values.")
    if values.dtype != ids.dtype:
        if values.dtype.is_integer() and ids.dtype.is_integer():
            values, ids = values.cast(pl.Int64), ids.cast(pl.Int64)
        else:
            values, ids = values.cast(pl.String), ids.cast(pl.String)
    rows = values.replace_strict(ids, np.arange(len(ids)), default=None, return_dtype=pl.Int64)
    unknown = rows.is_null()
    if unknown.any():
        missing = values.filter(unknown)
        raise DataError(
            f"{table}: {missing.n_unique()} {column} value(s) are not in products, e.g. {missing[0]!r}; {hint}"
        )
    return rows.to_numpy()


def _checked_assignment(assignment: pl.DataFrame, ids: pl.Series) -> _Plan:
    check_columns(assignment, ["product_id", "date", "treated"], "assignment")
    if assignment.height == 0:
        raise EmptyTableError("assignment: the table has no rows; leave it out to simulate history only.")
    date = parse_dates(assignment.select("date"), ["date"], "assignment").get_column("date")
    if date.null_count():
        raise DataError(f"assignment: column 'date' has {date.null_count()} missing (null) values.")
    flags = assignment_flags(assignment, "assignment")
    treated = flags.get_column("treated").to_numpy() == 1
    blackout = flags.get_column("blackout").to_numpy()
    check_unique(assignment, ["product_id", "date"], "assignment")
    rows = _row_positions(
        assignment.get_column("product_id"),
        ids,
        "assignment",
        "product_id",
        "every assigned product must be in the products table.",
    )
    return _Plan(rows, date.cast(pl.Int32).to_numpy().astype(np.int64), treated, blackout)


def _panel_dates(
    plan: _Plan | None,
    start: dt.date | None,
    end: dt.date | None,
    history_days: int,
) -> tuple[dt.date, dt.date]:
    """First and last panel date: given, else around the assignment's dates, else
    ``history_days`` days from the one date given."""
    if plan is not None:
        first = EPOCH + dt.timedelta(days=int(plan.day_numbers.min()))
        last = EPOCH + dt.timedelta(days=int(plan.day_numbers.max()))
        start = first - dt.timedelta(days=history_days) if start is None else start
        end = last if end is None else end
    elif start is None:
        if end is None:
            raise DataError(
                "no dates to simulate: give an assignment, or an end date (the panel then "
                "covers history_days days up to it), or a start date."
            )
        _check_history_length(history_days)
        start = end - dt.timedelta(days=history_days - 1)
    elif end is None:
        _check_history_length(history_days)
        end = start + dt.timedelta(days=history_days - 1)
    if end < start:
        raise DataError(f"the panel would end ({end.isoformat()}) before it starts ({start.isoformat()}).")
    return start, end


def _check_history_length(history_days: int) -> None:
    if history_days < 1:
        raise UsageError(f"`history_days` must be at least 1 without an assignment; got {history_days}.")


def _edge_matrix(edges: pl.DataFrame | None, ids: pl.Series) -> sparse.csr_matrix | None:
    """Sparse matrix M with M[dst, src] = weight, so (M @ x)[i] sums over i's sources."""
    if edges is None:
        return None
    check_columns(edges, ["src", "dst", "weight"], "edges")
    check_numeric(edges, ["weight"], "edges")
    weight = edges.get_column("weight").cast(pl.Float64)
    if weight.null_count() or not weight.is_finite().all():
        raise DataError("edges: column 'weight' has missing or non-finite values.")
    hint = "every edge must join two products of the products table."
    src = _row_positions(edges.get_column("src"), ids, "edges", "src", hint)
    dst = _row_positions(edges.get_column("dst"), ids, "edges", "dst", hint)
    loops = np.flatnonzero(src == dst)
    if len(loops):
        raise DataError(
            f"edges: {len(loops)} edge(s) join a product to itself, e.g. "
            f"{edges['src'][int(loops[0])]!r}; an own-price effect is not an edge."
        )
    check_unique(edges, ["src", "dst"], "edges")
    n = len(ids)
    return sparse.csr_matrix((weight.to_numpy(), (dst, src)), shape=(n, n))
