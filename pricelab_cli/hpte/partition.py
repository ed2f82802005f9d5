"""The tasks that lay the sales into partitions: each slice of the input stream sends its
analysed rows to their partitions (``_bucket_slice``), and each partition is then sorted by
product and date, checked, and zero-filled (``_sort_and_check``). They run on any engine."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np
import polars as pl
from polars.datatypes import DataTypeClass

from pricelab_cli.engine import resolve
from pricelab_cli.errors import (
    DataError,
    DuplicateKeyError,
    PricelabError,
    PricelabWarning,
)
from pricelab_cli.hpte.plan import BATCH_ROWS, NOT_COVERED, _date_text
from pricelab_cli.ids import IdLookup
from pricelab_cli.tables import (
    MAX_MAGNITUDE,
    check_values,
)


class _RowWriter(Protocol):
    """Where a slice's rows go: a store's writer (appends to partition ``k``)."""

    def append(self, k: int, arrays: Mapping[str, np.ndarray]) -> None: ...


class _RowLoader(Protocol):
    """A store's view of one partition (loads partition ``k``'s rows)."""

    def load(self, k: int) -> dict[str, np.ndarray]: ...


def _count(stream: pl.LazyFrame) -> int:
    return stream.select(pl.len()).collect().item()


@dataclasses.dataclass(frozen=True, eq=False)
class _SliceInputs:
    """What every slice of the stream needs of the plan (shared through the engine)."""

    lookup: IdLookup
    state_grid: np.ndarray
    first_day: int
    span: int
    start_day: np.ndarray
    bounds: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class _StreamSlice:
    """Rows ``offset`` .. ``offset + length - 1`` of the sales stream (all of it when
    ``length`` is None), to be sent to their partitions as writer ``writer``; ``inputs`` is
    a ``_SliceInputs`` or the engine's handle of one."""

    stream: pl.LazyFrame
    offset: int
    length: int | None
    writer: int
    id_type: pl.DataType | DataTypeClass
    inputs: object
    value_cols: tuple[str, ...]
    store: _RowWriter  # what the slice appends its rows to (the store's writer)
    label: str
    progress: Callable[[int], None] | None = None


def _bucket_slice(task: _StreamSlice) -> dict | BaseException:
    """Read one slice of the stream batch by batch, keep its analysed rows (history before
    each product's start, experiment rows of either arm) and append them to their
    partitions. Returns which products have rows (packed bits), the ids not in the
    assignment and the dates seen; a bad value is returned (not raised), so the first
    slice's error wins whatever order the slices end in."""
    plan: _SliceInputs = resolve(task.inputs)
    n = len(plan.start_day)
    n_parts = len(plan.bounds) - 1
    has_rows = np.zeros(n, dtype=bool)
    ignored: list[pl.Series] = []
    days: list[np.ndarray] = []
    stream = task.stream if task.length is None else task.stream.slice(task.offset, task.length)
    row_offset = task.offset
    try:
        for batch in stream.collect_batches(chunk_size=BATCH_ROWS):
            if batch.height == 0:
                continue
            _check_batch(batch, task.label, row_offset)
            row_offset += batch.height
            if batch.schema["product_id"] != task.id_type:
                batch = batch.with_columns(pl.col("product_id").cast(task.id_type))
            code, known = plan.lookup.codes(batch.get_column("product_id"))
            keep_known = None
            if not known.all():
                ignored.append(batch.get_column("product_id").filter(pl.Series(~known)).unique())
                keep_known = np.flatnonzero(known)
            day = batch.get_column("date").cast(pl.Int32).to_numpy().astype(np.int64)
            values = {c: batch.get_column(c).cast(pl.Float64).to_numpy() for c in task.value_cols}
            if keep_known is not None:
                day = day[keep_known]
                values = {c: v[keep_known] for c, v in values.items()}
            has_rows[code] = True
            offset = day - plan.first_day
            covered = (offset >= 0) & (offset < plan.span)
            state = np.full(len(code), NOT_COVERED, dtype=np.int8)
            state[covered] = plan.state_grid[code[covered] * plan.span + offset[covered]]
            keep = ((state == NOT_COVERED) & (day < plan.start_day[code])) | (state == 0) | (state == 1)
            keep_idx = np.flatnonzero(keep)
            code, day, state = code[keep_idx], day[keep_idx], state[keep_idx]
            values = {c: v[keep_idx] for c, v in values.items()}
            if len(day):
                low = int(day.min())
                days.append(low + np.flatnonzero(np.bincount(day - low)))
            part = np.searchsorted(plan.bounds, code, side="right") - 1
            # A stable sort by partition (a radix sort on small integers) keeps each
            # partition's rows in arrival order.
            small = part.astype(np.int16) if n_parts < 2**15 else part
            order = np.argsort(small, kind="stable") if n_parts > 1 else np.arange(len(part))
            cuts = np.searchsorted(part[order], np.arange(n_parts + 1))
            for k in np.flatnonzero(np.diff(cuts)):
                idx = order[cuts[k] : cuts[k + 1]]
                task.store.append(
                    int(k),
                    {"code": code[idx], "day": day[idx], "state": state[idx], **{c: v[idx] for c, v in values.items()}},
                )
            if task.progress is not None:
                task.progress(batch.height)
    except PricelabError as exc:
        return exc
    return {
        "has_rows": np.packbits(has_rows),
        "ignored": pl.concat(ignored) if ignored else None,
        "days": np.concatenate(days) if days else np.empty(0, dtype=np.int64),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class _FinalTask:
    store: _RowLoader  # the store's view of partition k
    k: int
    lo: int
    hi: int
    first_day: int
    n_dates: int
    outcomes: tuple[str, ...]
    price_col: str | None
    product_ids: pl.Series
    label: str
    # With the zero fill: the plan's inputs (or their handle) and the panel's calendar.
    plan: object = None
    calendar: np.ndarray | None = None


def _sort_and_check(task: _FinalTask) -> tuple[dict, dict[str, np.ndarray]]:
    """Sort a partition's rows by product and date, refuse repeated keys and unusable
    outcomes; return its counts, negative outcomes and mean history prices, and the sorted
    rows (which the engine keeps as the partition)."""
    rows = task.store.load(task.k)
    key = rows["code"].astype(np.int64) * task.n_dates + (rows["day"] - task.first_day)
    if len(key) > 1 and not np.all(key[1:] > key[:-1]):
        # Date-partitioned inputs arrive date by date: a stable (radix) sort by product
        # then leaves each product's dates in order, and a full sort is rarely needed.
        order = np.argsort(rows["code"], kind="stable")
        if not np.all(key[order][1:] >= key[order][:-1]):
            order = np.argsort(key, kind="stable")
        rows = {c: v[order] for c, v in rows.items()}
        key = key[order]
        repeated = np.flatnonzero(key[1:] == key[:-1])
        if len(repeated):
            _raise_duplicate_rows(rows, repeated, task.product_ids, task.lo, task.label)
    n_given = len(key)
    if task.calendar is not None and n_given:
        rows = _with_zero_rows(rows, key, task, task.calendar)
    pre = rows["state"] == NOT_COVERED
    negative = []
    for name in task.outcomes:
        y = rows[name]
        bad = np.flatnonzero(~np.isfinite(y))
        if len(bad):
            row = int(bad[0])
            raise DataError(
                f"{task.label}: column {name!r} has {len(bad)} missing or non-finite value(s) on analysed "
                f"dates, e.g. product {task.product_ids[int(rows['code'][row]) - task.lo]!r} on "
                f"{_date_text(rows['day'][row])}; fill them (0 for a day without sales) or remove those rows."
            )
        huge = np.flatnonzero(np.abs(y) > MAX_MAGNITUDE)
        if len(huge):
            row = int(huge[0])
            raise DataError(
                f"{task.label}: column {name!r} has {y[row]!r} for product "
                f"{task.product_ids[int(rows['code'][row]) - task.lo]!r} on {_date_text(rows['day'][row])}; "
                f"numbers must be finite and below {MAX_MAGNITUDE:.0e} in size."
            )
        below = np.flatnonzero(y < 0)
        if len(below):
            negative.append(
                (len(below), name, int(rows["code"][below[0]]), int(rows["day"][below[0]]), float(y[below[0]]))
            )
    price = None
    if task.price_col is not None:
        values = rows[task.price_col]
        usable = pre & np.isfinite(values)
        code = rows["code"][usable].astype(np.int64) - task.lo
        count = np.bincount(code, minlength=task.hi - task.lo)
        with np.errstate(invalid="ignore", divide="ignore"):
            price = np.bincount(code, weights=values[usable], minlength=task.hi - task.lo) / count
    return {
        "n_pre": int(pre.sum()),
        "n_arm": np.bincount(rows["state"][~pre].astype(np.int64), minlength=2)[:2],
        "negative": negative,
        "price": price,
        "n_filled": len(rows["code"]) - n_given,
        "n_rows": len(rows["code"]),
    }, rows


def _with_zero_rows(
    rows: dict[str, np.ndarray], key: np.ndarray, task: _FinalTask, calendar: np.ndarray
) -> dict[str, np.ndarray]:
    """The partition's sorted rows with a 0 row on every date of ``calendar`` (the task's)
    a product lacks, from its first row to the later of its last row and its last analysed
    experiment date (blackout dates and dates after the experiment stay absent); sorted
    again."""
    plan: _SliceInputs = resolve(task.plan)
    code = rows["code"].astype(np.int64)
    day = rows["day"].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    ends = np.r_[starts[1:], len(code)] - 1
    products = code[starts]
    # Each product's last analysed experiment day, from its row of the plan's grid.
    grid = plan.state_grid.reshape(-1, plan.span)[products]
    analysed = (grid == 0) | (grid == 1)
    has_exp = analysed.any(axis=1)
    last_exp = plan.first_day + plan.span - 1 - np.argmax(analysed[:, ::-1], axis=1)
    last = np.where(has_exp, np.maximum(day[ends], last_exp), day[ends])
    lo = np.searchsorted(calendar, day[starts])
    hi = np.searchsorted(calendar, last, side="right")
    count = np.maximum(hi - lo, 0)
    if not count.sum():
        return rows
    owner = np.repeat(np.arange(len(products)), count)
    position = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + np.repeat(lo, count)
    new_code = products[owner]
    new_day = calendar[position]
    new_key = new_code * task.n_dates + (new_day - task.first_day)
    missing = ~np.isin(new_key, key, assume_unique=True)
    new_code, new_day, new_key = new_code[missing], new_day[missing], new_key[missing]
    offset = new_day - plan.first_day
    covered = (offset >= 0) & (offset < plan.span)
    state = np.full(len(new_code), NOT_COVERED, dtype=np.int8)
    state[covered] = plan.state_grid[new_code[covered] * plan.span + offset[covered]]
    keep = ((state == NOT_COVERED) & (new_day < plan.start_day[new_code])) | (state == 0) | (state == 1)
    if not keep.any():
        return rows
    added = {
        "code": new_code[keep].astype(rows["code"].dtype),
        "day": new_day[keep].astype(rows["day"].dtype),
        "state": state[keep],
    }
    for name in rows:
        if name not in added:
            fill = 0.0 if name in task.outcomes else np.nan
            added[name] = np.full(int(keep.sum()), fill, dtype=rows[name].dtype)
    order = np.argsort(np.concatenate([key, new_key[keep]]), kind="stable")
    return {name: np.concatenate([rows[name], added[name]])[order] for name in rows}


def _check_batch(batch: pl.DataFrame, label: str, row_offset: int) -> None:
    """Missing identifiers or dates, infinite numbers and numbers too large to be summed are
    refused, naming the row of the input (NaN outcomes are refused on analysed rows only)."""
    for col in ("product_id", "date"):
        nulls = batch.get_column(col).null_count()
        if nulls:
            raise DataError(f"{label}: column {col!r} has {nulls} missing values.")
    check_values(batch, label, row_offset)


def _raise_duplicate_rows(
    rows: Mapping[str, np.ndarray], repeated: np.ndarray, product_ids: pl.Series, lo: int, table: str
) -> None:
    first = int(repeated[0])
    raise DuplicateKeyError(
        f"{table}: {len(repeated) + 1} rows repeat a (product_id, date) key, e.g. "
        f"product_id={product_ids[int(rows['code'][first]) - lo]}, date={_date_text(rows['day'][first])}; "
        "each must appear once."
    )


def _warn_negative(negative: list, product_ids: pl.Series, label: str) -> None:
    """One warning per outcome with negative values (kept as they are)."""
    by_outcome: dict[str, list] = {}
    for count, name, code, day, value in negative:
        by_outcome.setdefault(name, []).append((count, code, day, value))
    for name, found in by_outcome.items():
        total = sum(f[0] for f in found)
        _, code, day, value = found[0]
        warnings.warn(
            f"{label}: column {name!r} has {total} negative value(s), e.g. product "
            f"{product_ids[code]!r} on {_date_text(day)} ({value}); they are used as they are "
            "(check whether returns were netted into sales).",
            PricelabWarning,
            stacklevel=4,
        )
