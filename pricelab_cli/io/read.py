"""Reading tables: whole (CSV, TSV, one Parquet file, a stream) or as lazy scans of Parquet datasets, with the table contracts of :mod:`pricelab_cli.tables` applied as rows are read."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
import re
import sys
import urllib.parse
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from pricelab_cli._lazy import lazy
from pricelab_cli.errors import (
    ColumnTypeError,
    DataError,
    EmptyTableError,
    InputFileError,
    PricelabError,
    first_line,
)

# Loaded on first use: writing a design's JSON or checking output paths needs none of them.
from pricelab_cli.io.formats import detect_format, sniff_format
from pricelab_cli.io.sources import _ROW, TableSource, _in_store, _relative_parts, _store_options, resolve_source
from pricelab_cli.paths import STDIO
from pricelab_cli.tables import (
    CANONICAL_INT,
    ID_COLUMNS,
    apply_renames,
    check_columns,
    check_finite,
    check_identifiers,
    check_unique,
    normalise_ids,
    not_a_date_error,
    parse_dates,
    time_of_day_error,
    time_zone_error,
)

np = lazy("numpy")
pl = lazy("polars")
pq = lazy("pyarrow.parquet")


def _source_bytes(path: str, storage_options: Mapping[str, str] | None = None) -> bytes:
    if path == STDIO:
        return sys.stdin.buffer.read()
    if _in_store(path):
        from pricelab_cli import storage

        options = _store_options(storage_options)
        storage.check_access(path, options)
        return storage.get_object(path, options)
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{path}: no such file.")
    if p.is_dir():
        raise InputFileError(f"{path}: is a folder, not a file.")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be read ({exc.strerror}).") from exc


def _read_raw(path: str, fmt: str | None, storage_options: Mapping[str, str] | None = None) -> pl.DataFrame:
    data = _source_bytes(path, storage_options)  # a missing file is reported before a puzzling extension
    label = "standard input" if path == STDIO else path
    fmt = sniff_format(data) if path == STDIO else detect_format(path, fmt)
    if not data.strip():
        raise EmptyTableError(f"{label}: the file is empty; expected a table with a header row.")
    if fmt != "parquet" and data[:4] == b"PAR1":
        raise InputFileError(
            f"{label}: this is a Parquet file, but its name says {fmt.upper()}; rename it to .parquet."
        )
    if fmt == "parquet":
        try:
            return pl.read_parquet(io.BytesIO(data))
        except Exception as exc:  # polars raises several unrelated types for corrupt files
            raise InputFileError(f"{label}: not a readable Parquet file ({first_line(exc)}).") from exc
    if fmt.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except EOFError:
            raise InputFileError(
                f"{label}: the gzip file ends before its end marker (truncated, e.g. by an interrupted copy); "
                "copy or export it again."
            ) from None
        except (OSError, zlib.error) as exc:
            raise InputFileError(f"{label}: not a readable gzip file ({exc}).") from exc
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:200]:
        raise DataError(
            f"{label}: the file is UTF-16 encoded (or holds NUL bytes); re-save it as UTF-8 (in Excel: "
            "CSV UTF-8) and run again."
        )
    separator = "\t" if fmt.startswith("tsv") else ","
    header_line = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")
    names = next(csv.reader([header_line], delimiter=separator), [])
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(
            f"{label}: the header names column {repeated[0]!r} more than once; each column needs its own name."
        )
    if len(names) == 1 and (";" in header_line or ("\t" in header_line and separator == ",")):
        used = "semicolons" if ";" in header_line else "tabs"
        expected = "commas" if separator == "," else "tabs"
        raise DataError(
            f"{label}: the header is one column {header_line[:60]!r}: the file seems to be separated by "
            f"{used}, not {expected}; save it with {expected} (or name a tab-separated file .tsv)."
        )
    try:
        header = pl.read_csv(io.BytesIO(data), separator=separator, n_rows=0)
        overrides = {c: pl.String for c in header.columns if c in ID_COLUMNS}
        return pl.read_csv(
            io.BytesIO(data),
            separator=separator,
            schema_overrides=overrides,
            infer_schema_length=10_000,
        )
    except pl.exceptions.NoDataError as exc:
        raise EmptyTableError(f"{label}: the file has no header row.") from exc
    except (pl.exceptions.ComputeError, pl.exceptions.ShapeError) as exc:
        where = _ragged_line(data, separator, len(names))
        raise DataError(f"{label}: not a well-formed {fmt.upper()} table ({where or first_line(exc)}).") from exc


# What a reader's error says when the bytes of a file are damaged, or when an object store
# failed part-way through a read.
def _ragged_line(data: bytes, separator: str, n_columns: int) -> str | None:
    """Where a CSV first has a row with another number of fields than its header (the parser
    of the error path only)."""
    text = data.decode("utf-8", errors="replace").splitlines()
    for number, row in enumerate(csv.reader(text, delimiter=separator), start=1):
        if row and len(row) != n_columns:
            return f"line {number} has {len(row)} fields and the header has {n_columns}"
    return None


def _file_schema(file: str, source: TableSource, options: Mapping[str, str] | None) -> pl.Schema:
    """One Parquet file's columns and types, from its footer only."""
    try:
        if source.in_store:
            return pl.scan_parquet(
                file, hive_partitioning=False, glob=False, storage_options=dict(options or {})
            ).collect_schema()
        if os.path.getsize(file) == 0:
            raise EmptyTableError(f"{file}: the file is empty; expected a table with a header row.")
        with open(file, "rb"):
            pass  # a file that cannot be opened is reported as such, not as a bad Parquet file
        return pl.Schema(pl.read_parquet_schema(file))
    except PricelabError:
        raise
    except pl.exceptions.DuplicateError as exc:
        found = re.search(r"'([^']*)'", str(exc))
        name = found.group(1) if found else "?"
        raise DataError(
            f"{file}: the file names column {name!r} more than once; each column needs its own name."
        ) from exc
    except Exception as exc:  # polars raises several unrelated types for corrupt files
        if source.in_store:
            from pricelab_cli import storage

            raise storage.cloud_error(file, exc, options) from exc
        if isinstance(exc, OSError):
            raise InputFileError(f"{file}: cannot be read ({exc.strerror or first_line(exc)}).") from exc
        raise InputFileError(f"{file}: not a readable Parquet file ({first_line(exc)}).") from exc


def _file_schemas(source: TableSource, options: Mapping[str, str] | None) -> list[pl.Schema]:
    if source.in_store and len(source.files) > 1:
        from concurrent.futures import ThreadPoolExecutor

        # Each footer is a round trip to the store; a few at a time, in file order.
        with ThreadPoolExecutor(max_workers=min(16, len(source.files))) as pool:
            return list(pool.map(lambda f: _file_schema(f, source, options), source.files))
    return [_file_schema(f, source, options) for f in source.files]


def _described(schema: pl.Schema, col: str) -> str:
    return f"type {schema[col]}" if col in schema else "absent"


def _check_same_columns(source: TableSource, schemas: Sequence[pl.Schema]) -> None:
    """Every file of a dataset must have the same columns with the same types (any order)."""
    first, reference = source.files[0], schemas[0]
    for file, schema in zip(source.files[1:], schemas[1:]):
        for col in [*reference, *(c for c in schema if c not in reference)]:
            if reference.get(col) != schema.get(col):
                raise DataError(
                    f"{source.label}: its files disagree on column {col!r}: {_described(reference, col)} in "
                    f"{first} but {_described(schema, col)} in {file}; every file of a dataset needs the same "
                    "columns with the same types."
                )


_INTEGER = re.compile(r"-?[0-9]{1,18}")


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_iso_date(text: str) -> bool:
    if not _ISO_DATE.fullmatch(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _partition_schema(
    source: TableSource, file_schema: pl.Schema, rename: Mapping[str, str], dates: Sequence[str]
) -> tuple[dict[str, pl.DataType], list[str]]:
    """Types of the partition columns (``date=2026-03-01/``) and the names to drop.

    A partition column is typed as the file column would be: a date column (after
    renaming) is a Date, a column the files also hold keeps their type, an identifier is an
    integer when every value is a canonical integer (as ``normalise_ids`` does), and any
    other is an integer, a number or text, whichever fits every value. Polars reads
    ``key=value`` folders anywhere in a file's path; those above the dataset's root are
    not partitions and are dropped.
    """
    keyed: list[tuple[str, list[tuple[str, str]]]] = []
    for file in source.files:
        folders = _relative_parts(file, source.root)[:-1]
        pairs = [part.split("=", 1) for part in folders if "=" in part]
        keyed.append((file, [(key, urllib.parse.unquote(value)) for key, value in pairs]))
    first_file, first_pairs = keyed[0]
    keys = [key for key, _ in first_pairs]
    if not keys and all(not pairs for _, pairs in keyed):
        return {}, []
    for file, pairs in keyed:
        names = [key for key, _ in pairs]
        if names != keys:
            missing = next((k for k in keys if k not in names), None)
            extra = next((k for k in names if k not in keys), None)
            if missing is not None:
                where, other, key = file, first_file, missing
            elif extra is not None:
                where, other, key = first_file, file, extra
            else:
                raise DataError(
                    f"{source.label}: {file} has its partition folders in another order than {first_file} "
                    f"({'/'.join(names)} against {'/'.join(keys)}); give every file the same folder layout."
                )
            raise DataError(
                f"{source.label}: {where} is not in a {key}=... folder, unlike {other}: partition column "
                f"{key!r} is missing there; every file of a partitioned dataset needs the same partition folders."
            )
    if len(set(keys)) < len(keys):
        repeated = next(k for k in keys if keys.count(k) > 1)
        raise DataError(f"{source.label}: partition column {repeated!r} appears twice in the folders of {first_file}.")
    hive: dict[str, pl.DataType] = {}
    for position, key in enumerate(keys):
        values = {pairs[position][1]: file for file, pairs in keyed}
        present = [v for v in values if v != _HIVE_NULL]
        ours = rename.get(key, key)
        if ours in dates:
            bad = next((v for v in values if not _is_iso_date(v)), None)
            if bad is not None:
                raise ColumnTypeError(
                    f"{source.label}: partition folder {key}={bad} ({values[bad]}) is not an ISO date "
                    f"(YYYY-MM-DD), but column {key!r} holds dates; name the folders like {key}=2026-03-01."
                )
            hive[key] = pl.Date
        elif key in file_schema:
            hive[key] = file_schema[key]
        elif ours in ID_COLUMNS:
            canonical = bool(present) and all(re.fullmatch(CANONICAL_INT, v) for v in present)
            hive[key] = pl.Int64 if canonical else pl.String
        elif present and all(_INTEGER.fullmatch(v) for v in present):
            hive[key] = pl.Int64
        elif present and all(_is_float(v) for v in present):
            hive[key] = pl.Float64
        else:
            hive[key] = pl.String
    above = [part.split("=", 1)[0] for part in source.root.split("/") if "=" in part]
    for key in above:
        if key in hive or key in file_schema:
            raise DataError(
                f"{source.label}: a folder above the dataset is named like partition column {key!r} "
                f"({key}=...); rename that folder or point to a folder below it."
            )
        hive[key] = pl.String
    return hive, above


def _scan_parquet(
    source: TableSource, rename: Mapping[str, str], dates: Sequence[str], options: Mapping[str, str] | None
) -> pl.LazyFrame:
    """A lazy scan of one Parquet file or a dataset whose files have been checked to agree."""
    schemas = _file_schemas(source, options)
    if source.dataset:
        # The folder layout first: a stray file outside the partition folders also lacks
        # their columns, and the layout is what the user has to fix.
        hive, above = _partition_schema(source, schemas[0], rename, dates)
        _check_same_columns(source, schemas)
    else:
        hive, above = {}, []
    try:
        # Local files by absolute path: the plan may be read by processes (engine tasks)
        # that do not share this one's working directory.
        files = list(source.files) if source.in_store else [os.path.abspath(f) for f in source.files]
        scan = pl.scan_parquet(
            files,
            hive_partitioning=bool(hive),
            hive_schema=hive or None,
            glob=False,  # the files are listed already; a '[' in a name is not a pattern
            storage_options=dict(options) if source.in_store and options is not None else None,
        )
        if above:
            scan = scan.drop(above)
        scan.collect_schema()
    except Exception as exc:  # the footers were read above; what is left is the dataset as a whole
        raise InputFileError(f"{source.label}: cannot be scanned ({first_line(exc)}).") from exc
    return scan


def _named(scan: pl.LazyFrame, required: Sequence[str], rename: Mapping[str, str] | None, label: str) -> pl.LazyFrame:
    """Check the required columns under the user's names and rename them, on the schema only."""
    rename = {user: ours for user, ours in (rename or {}).items() if user != ours}
    user_name = {ours: user for user, ours in rename.items()}
    header = pl.DataFrame(schema=scan.collect_schema())
    check_columns(header, [user_name.get(c, c) for c in required], label)
    apply_renames(header, rename, label)  # refuses a rename onto a column that exists
    present = {user: ours for user, ours in rename.items() if user in header.columns}
    return scan.rename(present) if present else scan


def _typed(scan: pl.LazyFrame, dates: Sequence[str], label: str) -> pl.LazyFrame:
    """Dates as Date and canonical integer ids as Int64, lazily, as ``read_table`` types them.

    Only what the schema cannot settle is read: one streaming pass over the text id
    columns (are they all integers?) and over date columns stored as text or timestamps
    (does every value parse? is every timestamp at midnight?). The first bad value is
    quoted with its row, in the same words as ``parse_dates``.
    """
    schema = scan.collect_schema()
    checks: dict[str, pl.Expr] = {}
    casts: list[pl.Expr] = []
    for col in dict.fromkeys(dates):
        dtype = schema.get(col)
        if dtype is None or dtype == pl.Date:
            continue
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone:
                raise time_zone_error(label, col, dtype.time_zone)
            checks[col] = (pl.col(col).dt.truncate("1d") != pl.col(col)).fill_null(False)
            casts.append(pl.col(col).dt.date())
        else:
            text = pl.col(col).cast(pl.String)
            parsed = text.str.strptime(pl.Date, "%Y-%m-%d", strict=False)
            checks[col] = parsed.is_null() | text.is_null()
            casts.append(parsed.alias(col))
    ids = [c for c in ID_COLUMNS if schema.get(c) == pl.String]
    if not checks and not ids:
        return scan
    aggregates = [pl.col(_ROW).filter(bad).min().alias(f"bad {col}") for col, bad in checks.items()]
    aggregates += [
        (pl.col(c).str.contains(CANONICAL_INT).all() & (pl.col(c).count() > 0)).alias(f"int {c}") for c in ids
    ]
    found = _collect(scan.with_row_index(_ROW).select(aggregates), label).row(0, named=True)
    for col in checks:
        row = found[f"bad {col}"]
        if row is None:
            continue
        value = _collect(scan.select(col).slice(row, 1), label).item()
        if isinstance(schema[col], pl.Datetime):
            raise time_of_day_error(label, col, value, row)
        raise not_a_date_error(label, col, None if value is None else str(value), row)
    casts += [pl.col(c).cast(pl.Int64) for c in ids if found[f"int {c}"]]
    return scan.with_columns(casts) if casts else scan


def _collect(frame: pl.LazyFrame, label: str) -> pl.DataFrame:
    """Run a scan in the streaming engine; a file that breaks half-way is an input error."""
    try:
        return frame.collect(engine="streaming")
    except (pl.exceptions.ComputeError, OSError) as exc:
        if _in_store(label):
            from pricelab_cli import storage

            raise storage.cloud_error(label, exc) from exc
        raise InputFileError(f"{label}: could not be read to the end ({first_line(exc)}).") from exc


def scan_table(
    path: str,
    *,
    required: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
    dates: Sequence[str] = (),
    storage_options: Mapping[str, str] | None = None,
) -> pl.LazyFrame:
    """A lazy scan of a table under pricelab's column names, its schema checked first.

    Parameters
    ----------
    path : a file, ``-`` for standard input, a folder of Parquet files (recursive), a
        pattern (``'sales/*.parquet'``, ``'sales/**/*.parquet'``), hive-style partitions
        (``sales/date=2026-03-01/part-0.parquet``: the partition column comes from the
        path, typed as the file column would be), or an object-store URI (``s3://...``:
        one object, a prefix, or a pattern).
    required : columns (pricelab names) that must be present.
    rename : user column name -> pricelab name, from flags such as ``--unit-col``.
    dates : columns typed as ``pl.Date``.
    storage_options : for object-store URIs (see ``storage.storage_options``); the
        environment's when None.

    Before any data is read: a missing column (65, naming the input and listing what is
    there), a repeated name (65), a dataset whose files disagree (65, naming two files and
    the column), a missing partition folder or a date partition that is not a date (65),
    no file to read (66) and an unreachable store (66). Text identifiers that are all
    canonical integers become Int64 whatever the input kind, so a folder, a pattern,
    partitions, a URI and the equivalent single file give the same table. A CSV/TSV file
    or a stream is read whole with ``read_table``'s checks and returned as a LazyFrame.
    """
    source = resolve_source(path, storage_options=storage_options)
    if source.kind == "whole":
        df = _read_whole(source, None, required, rename, storage_options, columns=None)
        return _checked_values(df, dates, source.label).lazy()
    return _scan_checked(source, required, rename, dates, storage_options)


def _scan_checked(
    source: TableSource,
    required: Sequence[str],
    rename: Mapping[str, str] | None,
    dates: Sequence[str],
    storage_options: Mapping[str, str] | None,
) -> pl.LazyFrame:
    options = _store_options(storage_options) if source.in_store else None
    mapping = {user: ours for user, ours in (rename or {}).items() if user != ours}
    scan = _scan_parquet(source, mapping, dates, options)
    scan = _named(scan, required, mapping, source.label)
    return _typed(scan, dates, source.label)


def _read_whole(
    source: TableSource,
    fmt: str | None,
    required: Sequence[str],
    rename: Mapping[str, str] | None,
    storage_options: Mapping[str, str] | None,
    *,
    columns: Sequence[str] | None,
) -> pl.DataFrame:
    """Read a stream or a CSV/TSV file whole; check the columns, rename, keep ``columns``."""
    df = _read_raw(source.path, fmt, storage_options)
    rename = {user: ours for user, ours in (rename or {}).items() if user != ours}
    user_name = {ours: user for user, ours in rename.items()}
    # Checked under the user's names first: `--unit-col sku` must find `sku`, not fall back
    # to a `product_id` column that happens to be there.
    check_columns(df, [user_name.get(c, c) for c in required], source.label)
    df = apply_renames(df, rename, source.label)
    if columns is not None:
        keep = set(columns)
        df = df.select([c for c in df.columns if c in keep])
    return df


def _checked_values(df: pl.DataFrame, dates: Sequence[str], label: str) -> pl.DataFrame:
    check_identifiers(df, label)
    check_finite(df, label)
    df = normalise_ids(df)
    return parse_dates(df, dates, label)


def read_table(
    path: str,
    *,
    required: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
    dates: Sequence[str] = (),
    unique: Sequence[str] = (),
    fmt: str | None = None,
    allow_empty: bool = False,
    columns: Sequence[str] | None = None,
    where: pl.Expr | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Read a table, rename user columns to pricelab's names and check it.

    Parameters
    ----------
    path : any input ``scan_table`` accepts (a file, ``-``, a folder, a pattern, hive
        partitions, an object-store URI).
    required : columns (pricelab names) that must be present.
    rename : user column name -> pricelab name, from flags such as ``--unit-col``.
    dates : columns to parse as ISO ``YYYY-MM-DD`` dates.
    unique : columns whose combination must not repeat (``product_id``, ``date``).
    columns : pricelab names to keep (None: all); names the table lacks are skipped, so
        optional columns can be listed. Only these are read from Parquet.
    where : a polars predicate on pricelab names (``pl.col("date") <= end``); for Parquet
        it is pushed into the scan, so partitions and row groups it rules out are not read.
    storage_options : for object-store URIs; the environment's when None.

    The checks (identifiers present, numbers finite, dates valid, keys unique, the table not
    empty) run on what was read and quote rows of the input. A stream or CSV/TSV file is
    read whole and checked whole before ``where`` keeps its rows.
    """
    source = resolve_source(path, fmt=fmt, storage_options=storage_options)
    label = source.label
    if source.kind == "whole":
        df = _read_whole(source, fmt, required, rename, storage_options, columns=columns)
        if df.height == 0 and not allow_empty:
            raise EmptyTableError(f"{label}: the table has a header but no rows.")
        df = _checked_values(df, dates, label)
        if unique:
            check_unique(df, unique, label)
        return df.filter(where) if where is not None else df
    scan = _scan_checked(source, required, rename, dates, storage_options)
    keep = scan.collect_schema().names()
    if columns is not None:
        wanted = set(columns)
        keep = [c for c in keep if c in wanted]
    frame = scan if where is None else scan.with_row_index(_ROW).filter(where)
    df = _collect(frame.select(([_ROW] if where is not None else []) + keep), label)
    rows = None
    if where is not None:
        rows, df = df.get_column(_ROW), df.drop(_ROW)
    # A predicate that keeps no row is the caller's to judge; a table without rows is not.
    if df.height == 0 and not allow_empty and (where is None or _collect(scan.select(pl.len()), label).item() == 0):
        raise EmptyTableError(f"{label}: the table has a header but no rows.")
    check_identifiers(df, label, rows)
    check_finite(df, label, rows)
    if unique:
        check_unique(df, unique, label)
    return df


def read_json(path: str, *, storage_options: Mapping[str, str] | None = None) -> dict:
    """Read a JSON document (a file, ``-`` or an object-store URI); a missing file exits 66,
    a malformed one 65."""
    data = _source_bytes(path, storage_options)
    label = "standard input" if path == STDIO else path
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{label}: not valid JSON ({exc}).") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{label}: expected a JSON object at the top level.")
    return obj
