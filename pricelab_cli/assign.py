"""Expand a design over products into one row per product and experiment date.

Every arm is a pure function of (salt, randomisation unit, period): a 64-bit FNV-1a hash of
``salt \\x1f level \\x1f unit`` (level ``p`` for products, ``c`` for clusters), mixed with the
period number by the SplitMix64 finaliser, read as a uniform draw in [0, 1). A unit is treated
in a period when its draw is below the treat share. Because no draw depends on any other
unit, adding or removing products never moves another product's arm, and re-running with the
same salt gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings

import numpy as np
import polars as pl
import pyarrow as pa
from scipy import stats

from pricelab_cli.design import Design
from pricelab_cli.errors import DataError, DuplicateKeyError, PricelabWarning

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
SRM_ALPHA = 0.001
ASSIGNMENT_COLUMNS = ("product_id", "date", "treated", "blackout", "period")


def fnv1a64(labels: pl.Series) -> np.ndarray:
    """64-bit FNV-1a hash of each UTF-8 string, vectorised over strings.

    The loop runs over character positions (a few dozen), never over strings.
    """
    arr = pa.array(labels.cast(pl.String).to_arrow(), type=pa.large_string())
    if arr.null_count:
        raise DataError("cannot hash a missing (null) identifier.")
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data_buf = arr.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, np.uint8)
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    longest = int(lengths.max()) if n else 0
    for pos in range(longest):
        active = np.flatnonzero(lengths > pos)
        byte = data[starts[active] + pos].astype(np.uint64)
        h[active] = (h[active] ^ byte) * _FNV_PRIME
    return h


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z.copy()
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def unit_keys(units: pl.Series, salt: str, level: str = "p") -> np.ndarray:
    """The per-unit 64-bit key: FNV-1a of ``salt \\x1f level \\x1f unit``."""
    return fnv1a64(f"{salt}\x1f{level}\x1f" + units.cast(pl.String))


def uniform_draws(keys: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) draw for each (unit key, period) pair; arrays broadcast."""
    periods = np.asarray(periods, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(keys ^ ((periods + np.uint64(1)) * _GOLDEN))
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


@dataclasses.dataclass(frozen=True)
class _Units:
    """Products with the unit that randomises them (itself, or its cluster)."""

    products: pl.DataFrame  # product_id [, cluster_id], in input order
    keys: np.ndarray  # per product, the key of its randomisation unit


def _units(design: Design, products: pl.DataFrame, clusters: pl.DataFrame | None) -> _Units:
    products = products.select("product_id")
    if clusters is None:
        return _Units(products, unit_keys(products["product_id"], design.salt, "p"))
    clusters = clusters.select("product_id", "cluster_id")
    if clusters["product_id"].dtype != products["product_id"].dtype:
        products = products.with_columns(pl.col("product_id").cast(pl.String))
        clusters = clusters.with_columns(pl.col("product_id").cast(pl.String))
    dup = clusters.filter(pl.col("product_id").is_duplicated())
    if dup.height:
        raise DuplicateKeyError(
            f"clusters: product {dup['product_id'][0]!r} appears in more than one row; "
            "every product must belong to exactly one cluster."
        )
    joined = products.join(clusters, on="product_id", how="left", maintain_order="left")
    missing = joined.filter(pl.col("cluster_id").is_null())
    if missing.height:
        raise DataError(
            f"clusters: {missing.height} product(s) have no cluster, e.g. "
            f"{missing['product_id'][0]!r}; every product must appear exactly once "
            "(run `pricelab cluster --products ...` to give isolated products their own cluster)."
        )
    return _Units(joined, unit_keys(joined["cluster_id"], design.salt, "c"))


def _event_starts(products: pl.DataFrame, events: pl.DataFrame | None) -> pl.DataFrame:
    if events is None:
        raise DataError("a triggered design needs --events (product_id, event_date).")
    events = events.select("product_id", "event_date")
    if events["product_id"].dtype != products["product_id"].dtype:
        events = events.with_columns(pl.col("product_id").cast(products["product_id"].dtype, strict=False))
    first = events.group_by("product_id").agg(pl.col("event_date").min(), pl.len().alias("n_events"))
    unknown = first.join(products, on="product_id", how="anti")
    if unknown.height:
        warnings.warn(
            f"events: {unknown.height} product(s) are not in the products table and are ignored, "
            f"e.g. {unknown['product_id'][0]!r}.",
            PricelabWarning,
            stacklevel=3,
        )
    repeated = int((first["n_events"] > 1).sum())
    if repeated:
        warnings.warn(
            f"events: {repeated} product(s) have more than one event; each window starts at "
            "the product's earliest event.",
            PricelabWarning,
            stacklevel=3,
        )
    return first.select("product_id", "event_date")


def assign(
    design: Design,
    products: pl.DataFrame,
    *,
    clusters: pl.DataFrame | None = None,
    events: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per product and experiment date: ``treated``, ``blackout``, ``period``.

    Parameters
    ----------
    design : the validated design.
    products : must have ``product_id``; other columns are ignored.
    clusters : ``product_id``, ``cluster_id``; when given, all products of a cluster share
        every arm and the output carries ``cluster_id``.
    events : ``product_id``, ``event_date`` for triggered designs; products without an event
        are left out (with a warning).

    Returns
    -------
    polars.DataFrame sorted by product (input order) then date.
    """
    units = _units(design, products, clusters)
    base = units.products
    keys = units.keys
    if design.kind == "triggered":
        starts = _event_starts(base, events)
        keep = base.with_row_index("_row").join(starts, on="product_id", how="inner", maintain_order="left")
        skipped = base.height - keep.height
        if skipped:
            warnings.warn(
                f"{skipped} product(s) have no event and are not in the experiment.",
                PricelabWarning,
                stacklevel=2,
            )
        if keep.height == 0:
            raise DataError("events: no product of the products table has an event; nothing to assign.")
        keys = keys[keep["_row"].to_numpy()]
        day_offsets = np.arange(design.duration_days, dtype=np.int64)
        n_days = len(day_offsets)
        first_dates = keep["event_date"].cast(pl.Int32).to_numpy().astype(np.int64)
        dates = (np.repeat(first_dates, n_days) + np.tile(day_offsets, len(first_dates))).astype(np.int32)
        base = keep.drop("_row", "event_date")
    else:
        n_days = design.n_days
        day_offsets = np.arange(n_days, dtype=np.int64)
        first = (design.start - dt.date(1970, 1, 1)).days
        dates = np.tile((first + day_offsets).astype(np.int32), base.height)
    periods_per_day, blackout_per_day = _calendar(design, day_offsets)
    n = base.height
    draw_periods = periods_per_day
    if design.kind == "crossover":
        # One draw per unit decides its group; the groups swap arms every phase.
        draw_periods = np.zeros_like(periods_per_day)
    u = uniform_draws(np.repeat(keys, n_days), np.tile(draw_periods, n))
    treated = u < design.treat_share
    if design.kind == "crossover":
        treated ^= np.tile(periods_per_day % 2 == 1, n)
    analysed = ~np.tile(blackout_per_day, n)
    if analysed.any() and (treated[analysed].all() or not treated[analysed].any()):
        arm = "treated" if treated[analysed].all() else "control"
        warnings.warn(
            f"every analysed product-day of this assignment is {arm} (treat share {design.treat_share:g}, "
            f"{n:,} products): nothing can be compared; raise or lower --treat-share, or add products.",
            PricelabWarning,
            stacklevel=2,
        )
    rows = np.repeat(np.arange(n), n_days)
    out = base[rows].with_columns(
        pl.Series("date", dates).cast(pl.Date),
        pl.Series("treated", treated.astype(np.int8)),
        pl.Series("blackout", np.tile(blackout_per_day, n)),
        pl.Series("period", np.tile(periods_per_day.astype(np.int32), n)),
    )
    order = [*ASSIGNMENT_COLUMNS, *(["cluster_id"] if clusters is not None else [])]
    return out.select(order)


def _calendar(design: Design, day_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Period number and blackout flag for each day of the experiment (or window)."""
    if design.kind == "random-days":
        periods = day_offsets // design.block_days
    elif design.kind == "crossover":
        periods = day_offsets // design.phase_days
    else:
        periods = np.zeros_like(day_offsets)
    if design.kind == "crossover":
        blackout = (day_offsets % design.phase_days) < design.blackout_days
    else:
        blackout = np.zeros(len(day_offsets), dtype=bool)
    return periods, blackout


@dataclasses.dataclass(frozen=True)
class BalanceReport:
    """How the realised split compares with the design.

    ``daily`` has ``date``, ``n_products``, ``treated_share`` (blackout cells excluded).
    The sample-ratio-mismatch test compares the number of treated randomisation draws
    (unit x period; the first phase only for crossover, whose later phases mirror it) with
    the treat share by a one-degree-of-freedom chi-square test.
    """

    treated_share: float
    daily: pl.DataFrame
    n_units: int
    n_draws: int
    n_treated_draws: int
    expected_share: float
    srm_chi2: float
    srm_p_value: float

    @property
    def srm_suspect(self) -> bool:
        """True when the split is implausible under the design (p below SRM_ALPHA)."""
        return self.srm_p_value < SRM_ALPHA


def balance_report(assignment: pl.DataFrame, design: Design) -> BalanceReport:
    """Summarise the treated share overall, per day, and test for sample-ratio mismatch."""
    unit = "cluster_id" if "cluster_id" in assignment.columns else "product_id"
    analysed = assignment.filter(~pl.col("blackout"))
    daily = (
        analysed.group_by("date")
        .agg(pl.len().alias("n_products"), pl.col("treated").mean().alias("treated_share"))
        .sort("date")
    )
    # Rows are product-major and date-sorted, so a draw starts wherever the product or the
    # period changes; this avoids a hash-unique over every cell of a large catalog.
    starts_draw = (
        (pl.col("period") != pl.col("period").shift(1)) | (pl.col("product_id") != pl.col("product_id").shift(1))
    ).fill_null(True)
    draws = assignment.sort("product_id", "date").filter(starts_draw) if not _is_sorted(assignment) else assignment.filter(starts_draw)
    if design.kind == "crossover":
        draws = draws.filter(pl.col("period") == 0)
    if unit == "cluster_id":
        draws = draws.unique(subset=[unit, "period"])
    n = draws.height
    t = int(draws["treated"].sum())
    s = design.treat_share
    expected = np.array([n * s, n * (1 - s)])
    chi2 = float((((np.array([t, n - t]) - expected) ** 2) / expected).sum()) if n else 0.0
    return BalanceReport(
        treated_share=float(analysed["treated"].mean()) if analysed.height else float("nan"),
        daily=daily,
        n_units=assignment[unit].n_unique(),
        n_draws=n,
        n_treated_draws=t,
        expected_share=s,
        srm_chi2=chi2,
        srm_p_value=float(stats.chi2.sf(chi2, df=1)) if n else 1.0,
    )


def _is_sorted(assignment: pl.DataFrame) -> bool:
    """True when rows run product by product with dates increasing inside each product."""
    same = pl.col("product_id") == pl.col("product_id").shift(1)
    back = same & (pl.col("date") <= pl.col("date").shift(1))
    return not assignment.select(back.fill_null(False).any()).item()
