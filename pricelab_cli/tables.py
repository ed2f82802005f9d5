"""The table contracts: what a table must hold, checked on data already in memory.

Every rule that says what a column must be (present, numeric, finite, unique, a date, an
identifier, an assignment flag) lives here, with the messages that name the table and the
column. Nothing here reads or writes a file: the readers in :mod:`pricelab_cli.io` apply
these checks as they read, and the core applies them to frames a caller hands it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pricelab_cli._lazy import lazy
from pricelab_cli.errors import ColumnTypeError, DataError, DuplicateKeyError, MissingColumnError

if TYPE_CHECKING:
    import numpy as np
    import polars as pl
else:  # loaded on first use (a design's JSON needs neither)
    np = lazy("numpy")
    pl = lazy("polars")

# The assignment table's columns as the contract names them (all required on input).
ASSIGNMENT_COLUMNS = ("product_id", "date", "treated", "blackout", "period")
# Identifier columns are read as text first so that "00123" keeps its zeros; they become
# integers only when every value is a canonical integer, so "42" and 42 round-trip unchanged.
ID_COLUMNS = ("product_id", "src", "dst", "cluster_id")
CANONICAL_INT = r"^(0|-?[1-9][0-9]{0,17})$"


def normalise_ids(df: pl.DataFrame) -> pl.DataFrame:
    """Cast text identifier columns to integers when every value is a canonical integer."""
    casts = []
    for col in ID_COLUMNS:
        if col in df.columns and df.schema[col] == pl.String:
            values = df.get_column(col).drop_nulls()
            if len(values) and values.str.contains(CANONICAL_INT).all():
                casts.append(pl.col(col).cast(pl.Int64))
    return df.with_columns(casts) if casts else df


# Beyond this magnitude sums of squares overflow float64 (about 1.8e308).
MAX_MAGNITUDE = 1e100


def first_row(mask: pl.Series) -> int:
    """Position of the first True of a boolean column (for messages that quote a row)."""
    return int(mask.arg_true()[0])


def _file_row(position: int, rows: pl.Series | int | None) -> int:
    """The input's row number (1-based) of a row of what was read: ``rows`` holds each row's
    position in the input, or is the position of the first row (a batch of a scan)."""
    if rows is None or isinstance(rows, int):
        return position + (rows or 0) + 1
    return int(rows[position]) + 1


def check_values(batch: pl.DataFrame, label: str, first_row: int = 0) -> None:
    """``read_table``'s value checks (identifiers present, numbers finite and summable) on
    one batch of a ``scan_table`` scan whose first row is row ``first_row`` of the input."""
    check_identifiers(batch, label, first_row)
    check_finite(batch, label, first_row)


def check_identifiers(df: pl.DataFrame, label: str, rows: pl.Series | int | None = None) -> None:
    """A missing identifier (``product_id``, ``src``, ``dst``, ``cluster_id``) is refused,
    naming the file, the column and the row (``rows``: each row's position in the input,
    when only some rows were read)."""
    for col in ID_COLUMNS:
        if col in df.columns and df.get_column(col).null_count():
            row = first_row(df.get_column(col).is_null())
            raise DataError(
                f"{label}: column {col!r} is empty on row {_file_row(row, rows)} (and {df.get_column(col).null_count() - 1} "
                "more); every row needs its identifier."
            )


def check_finite(df: pl.DataFrame, label: str, rows: pl.Series | int | None = None) -> None:
    """Infinite numbers, and numbers too large to be summed, are refused naming the file,
    column and row (NaN is left to each command: a missing feature is allowed, a missing
    outcome is not)."""
    for col, dtype in df.schema.items():
        if not dtype.is_float():
            continue
        values = df.get_column(col)
        # NaN compares above every number in polars: it is not "too large", it is missing.
        wild = (values.is_infinite() | ((values.abs() > MAX_MAGNITUDE) & ~values.is_nan())).fill_null(False)
        if wild.any():
            row = first_row(wild)
            raise DataError(
                f"{label}: column {col!r} has {values[row]!r} on row {_file_row(row, rows)}; numbers must be finite "
                f"and below {MAX_MAGNITUDE:.0e} in size."
            )


def apply_renames(df: pl.DataFrame, rename: Mapping[str, str], label: str) -> pl.DataFrame:
    """Rename user columns (``--unit-col sku``) to pricelab's names."""
    mapping = {user: ours for user, ours in rename.items() if user != ours}
    for user, ours in mapping.items():
        if user not in df.columns:
            continue  # reported by check_columns under the user's name
        if ours in df.columns:
            raise DataError(
                f"{label}: cannot use column {user!r} as {ours!r} because the table "
                f"already has a column named {ours!r}; rename one of them."
            )
    present = {u: o for u, o in mapping.items() if u in df.columns}
    return df.rename(present) if present else df


def check_columns(df: pl.DataFrame, required: Sequence[str], label: str) -> None:
    """Raise MissingColumnError naming the file, the missing column and what is there."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        shown = ", ".join(repr(c) for c in missing)
        have = ", ".join(repr(c) for c in df.columns) or "none"
        raise MissingColumnError(
            f"{label}: missing column {shown} (columns present: {have}). "
            "Rename it in the file or point to it with the matching --*-col flag."
        )


def parse_dates(df: pl.DataFrame, cols: Sequence[str], label: str) -> pl.DataFrame:
    """Parse ISO date columns; a value that does not parse is quoted in the error."""
    for col in cols:
        if col not in df.columns:
            continue
        dtype = df.schema[col]
        if dtype == pl.Date:
            continue
        if dtype == pl.Datetime or isinstance(dtype, pl.Datetime):
            # A timestamp is a date only at midnight and without a time zone; cutting a time
            # of day (or shifting a zone) could move every row to another day.
            values = df.get_column(col)
            zone = getattr(dtype, "time_zone", None)
            if zone:
                raise time_zone_error(label, col, zone)
            off_midnight = (values.dt.truncate("1d") != values).fill_null(False)
            if off_midnight.any():
                row = first_row(off_midnight)
                raise time_of_day_error(label, col, values[row], row)
            df = df.with_columns(pl.col(col).dt.date())
            continue
        text = df.get_column(col).cast(pl.String)
        parsed = text.str.strptime(pl.Date, "%Y-%m-%d", strict=False)
        bad = parsed.is_null() | text.is_null()
        if bad.any():
            row = first_row(bad)
            raise not_a_date_error(label, col, text[row], row)
        df = df.with_columns(parsed.alias(col))
    return df


def not_a_date_error(label: str, col: str, value: str | None, row: int) -> ColumnTypeError:
    hint = (
        " (a time of day or zone cannot be cut off safely; give one date per row)"
        if value and ("T" in value or ":" in value)
        else ""
    )
    return ColumnTypeError(
        f"{label}: column {col!r} has a value that is not an ISO date (YYYY-MM-DD): {value!r} (row {row + 1}){hint}."
    )


def time_of_day_error(label: str, col: str, value: Any, row: int) -> ColumnTypeError:
    return ColumnTypeError(
        f"{label}: column {col!r} holds timestamps with a time of day, e.g. "
        f"{value} (row {row + 1}), not dates; "
        "give one date (YYYY-MM-DD) per row."
    )


def time_zone_error(label: str, col: str, zone: str) -> ColumnTypeError:
    return ColumnTypeError(
        f"{label}: column {col!r} holds timestamps in time zone {zone!r}, not dates; "
        "convert them to local dates (YYYY-MM-DD) first."
    )


def check_unique(df: pl.DataFrame, keys: Sequence[str], label: str) -> None:
    """Raise DuplicateKeyError quoting the first repeated key."""
    # Fast path: count distinct 64-bit hashes of the keys. A collision can only lower the
    # count (sending us to the exact check below), so "all distinct" is never wrong.
    if df.select(pl.struct(keys).hash(seed=0).n_unique()).item() == df.height:
        return
    dup = df.select(keys).filter(pl.struct(keys).is_duplicated())
    if dup.height:
        first = dup.row(0, named=True)
        shown = ", ".join(f"{k}={v}" for k, v in first.items())
        raise DuplicateKeyError(
            f"{label}: {dup.height} rows repeat a ({', '.join(keys)}) key, e.g. {shown}; each must appear once."
        )


def check_numeric(df: pl.DataFrame, cols: Sequence[str], label: str) -> None:
    """Raise ColumnTypeError when a column that must hold numbers does not."""
    for col in cols:
        if col in df.columns and not df.schema[col].is_numeric():
            raise ColumnTypeError(f"{label}: column {col!r} must hold numbers but has type {df.schema[col]}.")


def assignment_flags(assignment: pl.DataFrame, label: str) -> pl.DataFrame:
    """``treated`` as Int8 0/1 and ``blackout`` as Boolean (all False when absent).

    Accepts 0/1 or booleans for ``treated`` and true/false text or 0/1 for ``blackout`` (as
    a CSV round trip leaves them); anything else is rejected naming ``label``.
    """
    treated = assignment.get_column("treated")
    if treated.null_count():
        raise DataError(f"{label}: column 'treated' has {treated.null_count()} missing values.")
    if treated.dtype == pl.Boolean:
        treated = treated.cast(pl.Int8)
    elif not treated.dtype.is_numeric():
        raise ColumnTypeError(f"{label}: column 'treated' must hold 0/1 but has type {treated.dtype}.")
    # 0.0 / 1.0 (as every pandas export writes them) are 0 and 1; anything else is refused.
    bad = ~((treated == 0) | (treated == 1)).fill_null(False)
    if bad.any():
        row = first_row(bad)
        raise DataError(f"{label}: column 'treated' must hold 0 or 1, found {treated[row]!r} (row {row + 1}).")
    columns = [treated.cast(pl.Int8).alias("treated")]
    if "blackout" in assignment.columns:
        blackout = assignment.get_column("blackout")
        if blackout.dtype == pl.String:
            lowered = blackout.str.to_lowercase()
            if not lowered.is_in(["true", "false"]).all():
                raise DataError(f"{label}: column 'blackout' must hold true/false.")
            blackout = lowered == "true"
        elif blackout.dtype != pl.Boolean:
            if not blackout.dtype.is_numeric() or not blackout.is_in([0, 1]).all():
                raise DataError(f"{label}: column 'blackout' must hold true/false (or 0/1).")
            blackout = blackout == 1
        columns.append(blackout.fill_null(False).alias("blackout"))
    else:
        columns.append(pl.Series("blackout", [False] * assignment.height, dtype=pl.Boolean))
    return assignment.with_columns(columns)


def align_id_types(*frames: pl.DataFrame, col: str = "product_id") -> list[pl.DataFrame]:
    """Give ``col`` one type across frames (text if any frame holds text) so joins match."""
    types = {f.schema[col] for f in frames if col in f.columns}
    if len(types) <= 1:
        return list(frames)
    return [f.with_columns(pl.col(col).cast(pl.String)) if col in f.columns else f for f in frames]
