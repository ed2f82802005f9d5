"""Expand a design over products into one row per product and experiment date.

Every arm is a pure function of (salt, randomisation unit, period): a 64-bit FNV-1a hash of
``salt \\x1f level \\x1f unit`` (level ``p`` for products, ``c`` for clusters), mixed with the
period number by the SplitMix64 finaliser, read as a uniform draw in [0, 1). A unit is treated
in a period when its draw is below the treat share. Because no draw depends on any other
unit, adding or removing products never moves another product's arm, and re-running with the
same salt gives the same bytes.

The one exception is the balanced switchback, whose blocks each treat an exact number of
units: its schedule is dealt over the whole set of units from the same hash draws
(:mod:`pricelab_cli.balanced`), so it depends on which units there are (never on their order),
and re-running with the same salt and products still gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings
from collections.abc import Iterable, Iterator
from typing import cast

import numpy as np
import polars as pl
from scipy import stats

from pricelab_cli.balanced import balanced_schedule
from pricelab_cli.design import Calendar, Design
from pricelab_cli.errors import DataError, DuplicateKeyError, PricelabWarning

# The hash draws, importable from here as before.
from pricelab_cli.hashing import fnv1a64 as fnv1a64
from pricelab_cli.hashing import uniform_draws as uniform_draws
from pricelab_cli.hashing import unit_keys as unit_keys
from pricelab_cli.ids import row_positions

SRM_ALPHA = 0.001
ASSIGNMENT_COLUMNS = ("product_id", "date", "treated", "blackout", "period")
# Rows per piece when an assignment is produced in pieces: tens of MB of columns, small enough
# for the allocator to reuse memory between pieces (far faster than fresh pages each time).
CHUNK_ROWS = 1 << 20


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
        raise DataError("a triggered design needs `events` (product_id, event_date).")
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


@dataclasses.dataclass(frozen=True)
class AssignmentPlan:
    """Everything the rows of an assignment are computed from, without the rows.

    Each row is a pure function of (salt, randomisation unit, period), so the rows can be
    made all at once (``frame``) or in pieces of bounded size: ``by_products`` (product-major,
    the order of ``frame``) or ``by_date`` (one date at a time, products in input order).
    A catalog of millions of products is written without ever holding all its rows.
    """

    design: Design
    units: pl.DataFrame  # product_id [, cluster_id]: the products in the experiment, input order
    keys: np.ndarray  # per product, the 64-bit key of its randomisation unit
    first_days: np.ndarray  # per product, its first experiment date in days since 1970-01-01
    calendar: Calendar  # per day of the window: period, draw period, flipped arms, blackout
    # Balanced switchback only: (units x blocks) treated flags and each product's unit row.
    schedule: np.ndarray | None = None
    unit_row: np.ndarray | None = None

    @property
    def periods(self) -> np.ndarray:
        """Per day of the window, its period number."""
        return self.calendar.period

    @property
    def blackout(self) -> np.ndarray:
        """Per day of the window, whether it is a blackout day."""
        return self.calendar.blackout

    @property
    def n_products(self) -> int:
        return self.units.height

    @property
    def n_days(self) -> int:
        return len(self.periods)

    @property
    def n_rows(self) -> int:
        return self.n_products * self.n_days

    @property
    def unit_col(self) -> str:
        """The randomisation unit: ``cluster_id`` when assigned by cluster, else ``product_id``."""
        return "cluster_id" if "cluster_id" in self.units.columns else "product_id"

    def rows(self, products: np.ndarray | slice, offsets: np.ndarray | int) -> pl.DataFrame:
        """The rows of (product position, day of its window) pairs: ``products`` is an array of
        positions or a slice of them, ``offsets`` one day for all or one per product."""
        first_days = self.first_days[products]
        units = self.units[products]
        offsets = np.broadcast_to(np.asarray(offsets, dtype=np.int64), first_days.shape)
        periods = self.periods[offsets]
        treated = self._treated(products, offsets)
        out = units.with_columns(
            pl.Series("date", (first_days + offsets).astype(np.int32)).cast(pl.Date),
            pl.Series("treated", treated.astype(np.int8)),
            pl.Series("blackout", self.blackout[offsets]),
            pl.Series("period", periods.astype(np.int32)),
        )
        return out.select(*ASSIGNMENT_COLUMNS, *(["cluster_id"] if self.unit_col == "cluster_id" else []))

    def _treated(self, products: np.ndarray | slice, offsets: np.ndarray) -> np.ndarray:
        """The arm of (product position, day of the window) pairs; the two broadcast."""
        draw_period = self.calendar.draw_period[offsets]
        if self.schedule is not None and self.unit_row is not None:
            treated = self.schedule[self.unit_row[products], draw_period]
        else:
            treated = uniform_draws(self.keys[products], draw_period) < self.design.treat_share
        return treated ^ self.calendar.flipped[offsets]

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(treated, blackout) as (products x days of the window) boolean arrays, without the
        rows (not for a triggered design, whose windows differ by product)."""
        treated = self._treated(np.arange(self.n_products)[:, None], np.arange(self.n_days)[None, :])
        return treated, np.broadcast_to(self.blackout[None, :], treated.shape)

    def unit_index(self) -> np.ndarray:
        """Per product, the index of its randomisation unit (units in order of first
        appearance)."""
        return self.unit_row if self.unit_row is not None else unit_rows(self.units.get_column(self.unit_col))[0]

    def frame(self) -> pl.DataFrame:
        """Every row at once: products in input order, then dates."""
        # Built from pieces: a few large temporaries cost more than many small ones.
        return pl.concat(self.by_products())

    def by_products(self, max_rows: int = CHUNK_ROWS) -> Iterator[pl.DataFrame]:
        """The rows of ``frame`` in consecutive pieces of whole products (at least one piece)."""
        n, days = self.n_products, self.n_days
        step = max(1, max_rows // max(days, 1))
        for start in range(0, max(n, 1), step):
            stop = min(n, start + step)
            yield self.rows(np.repeat(np.arange(start, stop), days), np.tile(np.arange(days), stop - start))

    def by_date(self, max_rows: int = CHUNK_ROWS) -> Iterator[pl.DataFrame]:
        """The rows date by date, dates increasing, products in input order inside a date; a
        date of more than ``max_rows`` products comes in consecutive pieces (at least one
        piece, empty when there is no row)."""
        n, days = self.n_products, self.n_days
        if n == 0 or days == 0:
            yield self.rows(np.arange(0), np.arange(0))
            return
        if self.design.kind != "triggered":
            for offset in range(days):
                for start in range(0, n, max_rows):
                    yield self.rows(slice(start, start + max_rows), offset)
            return
        # Triggered windows start on each product's own date: a date holds the products whose
        # window covers it, found by binary search over the products sorted by first day.
        order = np.argsort(self.first_days, kind="stable")
        sorted_first = self.first_days[order]
        for day in range(int(sorted_first[0]), int(sorted_first[-1]) + days):
            lo = np.searchsorted(sorted_first, day - days + 1, side="left")
            hi = np.searchsorted(sorted_first, day, side="right")
            products = np.sort(order[lo:hi])
            for start in range(0, len(products), max_rows):
                some = products[start : start + max_rows]
                yield self.rows(some, day - self.first_days[some])

    def balance(self, tally: BalanceTally) -> BalanceReport:
        """The balance report from per-date sums (``tally``) and the unit draws of the plan.

        Equals ``balance_report`` of the whole frame, without the frame: every unit is drawn
        once per period of its window, so the sample-ratio test is a sum over units and
        periods.
        """
        design = self.design
        first_of_unit = self.units.get_column(self.unit_col).is_first_distinct().to_numpy()
        keys = self.keys[first_of_unit]
        draw_periods = np.unique(self.calendar.draw_period).tolist()
        if self.schedule is not None:
            treated_draws = int(self.schedule.sum())
        else:
            treated_draws = sum(
                int((uniform_draws(keys[lo : lo + CHUNK_ROWS], period) < design.treat_share).sum())
                for lo in range(0, len(keys), CHUNK_ROWS)
                for period in draw_periods
            )
        daily = tally.daily()
        n_cells = int(daily["n_products"].sum())
        n_treated = int(daily["_treated"].sum())
        _warn_if_one_armed(n_treated, n_cells, design, self.n_products)
        return _report(
            daily.drop("_treated"),
            treated_share=n_treated / n_cells if n_cells else float("nan"),
            n_units=len(keys),
            n_draws=len(keys) * len(draw_periods),
            n_treated_draws=treated_draws,
            design=design,
        )


def plan_assignment(
    design: Design,
    products: pl.DataFrame,
    *,
    clusters: pl.DataFrame | None = None,
    events: pl.DataFrame | None = None,
) -> AssignmentPlan:
    """Check the inputs of an assignment and gather what its rows are computed from.

    Parameters are those of ``assign``; the rows come from the plan's ``frame``,
    ``by_products`` or ``by_date``.
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
                stacklevel=3,
            )
        if keep.height == 0:
            raise DataError("events: no product of the products table has an event; nothing to assign.")
        keys = keys[keep["_row"].to_numpy()]
        first_days = keep["event_date"].cast(pl.Int32).to_numpy().astype(np.int64)
        base = keep.drop("_row", "event_date")
    else:
        start = cast(dt.date, design.start)  # every validated design but a triggered one has a start
        first_days = np.full(base.height, (start - dt.date(1970, 1, 1)).days, dtype=np.int64)
    # Days of the experiment, or of each product's window for a triggered design.
    days = np.arange(design.n_days, dtype=np.int64)
    plan = AssignmentPlan(design, base, keys, first_days, design.calendar(days))
    if design.kind != "balanced-switchback":
        return plan
    unit_row, first = unit_rows(base.get_column(plan.unit_col))
    schedule = balanced_schedule(keys[first], design.salt, design.n_blocks, design.treat_share)
    return dataclasses.replace(plan, schedule=schedule, unit_row=unit_row)


def unit_rows(units: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(each product's unit index, the first product of each unit), units numbered in order
    of first appearance."""
    return row_positions(units, units.unique(maintain_order=True)), np.flatnonzero(units.is_first_distinct().to_numpy())


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
    polars.DataFrame sorted by product (input order) then date. For catalogs too large to
    hold, ``plan_assignment`` gives the same rows in pieces.
    """
    plan = plan_assignment(design, products, clusters=clusters, events=events)
    out = plan.frame()
    analysed = out.filter(~pl.col("blackout"))
    _warn_if_one_armed(int(analysed["treated"].sum()), analysed.height, design, plan.n_products)
    return out


def _warn_if_one_armed(n_treated: int, n_analysed: int, design: Design, n_products: int) -> None:
    if n_analysed and n_treated in (0, n_analysed):
        arm = "treated" if n_treated else "control"
        warnings.warn(
            f"every analysed product-day of this assignment is {arm} (treat share {design.treat_share:g}, "
            f"{n_products:,} products): nothing can be compared; raise or lower `treat_share`, or add products.",
            PricelabWarning,
            stacklevel=3,
        )


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


class BalanceTally:
    """Per-date counts of analysed (non-blackout) cells and of treated ones, summed piece by
    piece as an assignment streams past (``count``), for ``AssignmentPlan.balance``."""

    def __init__(self) -> None:
        self._counts: list[pl.DataFrame] = []

    def add(self, piece: pl.DataFrame) -> None:
        """Add the per-date counts of one piece of an assignment."""
        self._counts.append(_daily_counts(piece))

    def count(self, pieces: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        """Pass ``pieces`` through unchanged, adding up their per-date counts."""
        for piece in pieces:
            self.add(piece)
            yield piece

    def daily(self) -> pl.DataFrame:
        """``date``, ``n_products``, ``treated_share`` and the treated count ``_treated``."""
        counts = (
            pl.concat(self._counts)
            if self._counts
            else _daily_counts(pl.DataFrame(schema={"date": pl.Date, "treated": pl.Int8, "blackout": pl.Boolean}))
        )
        return (
            counts.group_by("date")
            .agg(pl.col("n_products").sum(), pl.col("_treated").sum())
            .sort("date")
            .with_columns((pl.col("_treated") / pl.col("n_products")).alias("treated_share"))
            .select("date", "n_products", "treated_share", "_treated")
        )


def _daily_counts(assignment: pl.DataFrame) -> pl.DataFrame:
    return (
        assignment.lazy()
        .filter(~pl.col("blackout"))
        .group_by("date")
        .agg(pl.len().cast(pl.Int64).alias("n_products"), pl.col("treated").cast(pl.Int64).sum().alias("_treated"))
        .collect()
    )


def _report(
    daily: pl.DataFrame, *, treated_share: float, n_units: int, n_draws: int, n_treated_draws: int, design: Design
) -> BalanceReport:
    s = design.treat_share
    expected = np.array([n_draws * s, n_draws * (1 - s)])
    observed = np.array([n_treated_draws, n_draws - n_treated_draws])
    chi2 = float((((observed - expected) ** 2) / expected).sum()) if n_draws else 0.0
    return BalanceReport(
        treated_share=treated_share,
        daily=daily,
        n_units=n_units,
        n_draws=n_draws,
        n_treated_draws=n_treated_draws,
        expected_share=s,
        srm_chi2=chi2,
        srm_p_value=float(stats.chi2.sf(chi2, df=1)) if n_draws else 1.0,
    )


def balance_report(assignment: pl.DataFrame, design: Design) -> BalanceReport:
    """Summarise the treated share overall, per day, and test for sample-ratio mismatch.

    Works on any assignment table (one read back from a file, rows lost upstream); an
    assignment streamed from a plan gets the same report from ``AssignmentPlan.balance``.
    """
    unit = "cluster_id" if "cluster_id" in assignment.columns else "product_id"
    analysed = assignment.filter(~pl.col("blackout"))
    tally = BalanceTally()
    tally.add(assignment)
    daily = tally.daily().drop("_treated")
    # Rows are product-major and date-sorted, so a draw starts wherever the product or the
    # period changes; this avoids a hash-unique over every cell of a large catalog.
    starts_draw = (
        (pl.col("period") != pl.col("period").shift(1)) | (pl.col("product_id") != pl.col("product_id").shift(1))
    ).fill_null(True)
    draws = (
        assignment.sort("product_id", "date").filter(starts_draw)
        if not _is_sorted(assignment)
        else assignment.filter(starts_draw)
    )
    if design.kind == "crossover":
        draws = draws.filter(pl.col("period") == 0)
    if unit == "cluster_id":
        draws = draws.unique(subset=[unit, "period"])
    return _report(
        daily,
        treated_share=float(cast(float, analysed["treated"].mean())) if analysed.height else float("nan"),
        n_units=assignment[unit].n_unique(),
        n_draws=draws.height,
        n_treated_draws=int(draws["treated"].sum()),
        design=design,
    )


def _is_sorted(assignment: pl.DataFrame) -> bool:
    """True when rows run product by product with dates increasing inside each product."""
    same = pl.col("product_id") == pl.col("product_id").shift(1)
    back = same & (pl.col("date") <= pl.col("date").shift(1))
    return not assignment.select(back.fill_null(False).any()).item()
