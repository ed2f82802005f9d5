"""All reading, writing, format detection and schema checks for pricelab tables.

Every command goes through this module, so the behaviours users rely on (formats chosen by
extension, ``-`` for the standard streams, atomic writes, provenance, messages that name the
file and the column) are the same everywhere.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import errno
import glob
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pricelab_cli import scratch, stopping
from pricelab_cli._lazy import lazy
from pricelab_cli.errors import (
    ColumnTypeError,
    DataError,
    EmptyTableError,
    InputFileError,
    OutputError,
    PricelabError,
    UsageError,
    first_line,
)
from pricelab_cli.paths import STDIO, glob_regex, glob_root, has_glob, is_local  # noqa: F401 - STDIO and is_local are read here
from pricelab_cli.tables import (  # noqa: F401 - the table rules, re-exported where readers used to find them
    ASSIGNMENT_COLUMNS,
    CANONICAL_INT,
    ID_COLUMNS,
    MAX_MAGNITUDE,
    align_id_types,
    apply_renames,
    assignment_flags,
    check_columns,
    check_finite,
    check_identifiers,
    check_numeric,
    check_unique,
    check_values,
    first_row,
    normalise_ids,
    not_a_date_error,
    parse_dates,
    time_of_day_error,
    time_zone_error,
)

# Loaded on first use: writing a design's JSON or checking output paths needs none of them.
np = lazy("numpy")
pl = lazy("polars")
pq = lazy("pyarrow.parquet")

FORMATS = ("csv", "csv.gz", "tsv", "tsv.gz", "parquet")
PROVENANCE_KEY = "pricelab"


def detect_format(path: str, fmt: str | None = None) -> str:
    """Return the table format for ``path``: its extension, else ``fmt``.

    A stream (``-``), device or pipe is CSV unless ``fmt`` (``--format``) says otherwise;
    a named file's extension wins over ``fmt``.
    """
    check_format(fmt)
    if path == STDIO or _is_special_file(path):
        # Streams, devices and pipes (/dev/null, /dev/fd/63) have no extension to go by.
        return fmt or "csv"
    name = Path(path).name.lower()
    for candidate in sorted(FORMATS, key=len, reverse=True):
        if name.endswith("." + candidate):
            return candidate
    if name.endswith(".pq"):
        return "parquet"
    if fmt is not None:
        return fmt
    raise UsageError(
        f"{path}: cannot tell the format from the extension; use one of "
        ".csv, .csv.gz, .tsv, .tsv.gz, .parquet (or --format)."
    )


def check_format(fmt: str | None) -> None:
    """Reject a ``--format`` value pricelab cannot write."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of: {', '.join(FORMATS)}.")


def _is_special_file(path: str) -> bool:
    p = Path(path)
    return p.exists() and not p.is_file() and not p.is_dir()


def sniff_format(data: bytes) -> str:
    """Format of a stream from its first bytes: Parquet and gzip announce themselves."""
    if data[:4] == b"PAR1":
        return "parquet"
    if data[:2] == b"\x1f\x8b":
        return "csv.gz"
    return "csv"


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


# --------------------------------------------------------------------------- where a table lives

PARQUET_SUFFIXES = (".parquet", ".pq")
# Files and folders named like these are bookkeeping of the tools that write datasets
# (_SUCCESS, _temporary/, .part-0.parquet.crc), never data.
_HIDDEN_PREFIXES = (".", "_")
# Row numbers of what was read, so that messages quote the row of the file; never returned.
_ROW = "__pricelab_row__"


@dataclasses.dataclass(frozen=True)
class TableSource:
    """What a table flag names, found out before any data is read.

    ``kind`` is ``"whole"`` for standard input and for one CSV/TSV file (or object), read
    whole, and ``"parquet"`` for one Parquet file or a Parquet dataset (a folder,
    a pattern, an object-store prefix), scanned lazily. A dataset's ``files`` are in path
    order; its partition folders (``date=2026-03-01/``) are those below ``root``.
    """

    path: str
    kind: str
    files: tuple[str, ...] = ()
    root: str = ""
    dataset: bool = False
    in_store: bool = False  # in an object store (s3://...), not on this machine

    @property
    def label(self) -> str:
        return "standard input" if self.path == STDIO else self.path


def _in_store(path: str) -> bool:
    if "://" not in path:
        return False
    from pricelab_cli import storage

    return storage.is_remote(path)


def _store_options(storage_options: Mapping[str, str] | None) -> dict[str, str]:
    """Options for the object store: the ones given, else those of the environment."""
    if storage_options is not None:
        return dict(storage_options)
    from pricelab_cli import storage

    return storage.storage_options()


def _relative_parts(path: str, root: str) -> list[str]:
    rest = path[len(root) :] if root and path.startswith(root) else path
    return [part for part in rest.split("/") if part]


def _folder_files(folder: str) -> list[str]:
    """Every visible file below ``folder``, in path order."""
    found = []
    for here, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(_HIDDEN_PREFIXES)]
        found += [os.path.join(here, name) for name in names if not name.startswith(_HIDDEN_PREFIXES)]
    return sorted(found)


def resolve_source(
    path: str, *, fmt: str | None = None, storage_options: Mapping[str, str] | None = None
) -> TableSource:
    """Say what ``path`` names (a stream, one file, a Parquet dataset) without reading data.

    A folder is read as a Parquet dataset (its ``.parquet`` files, recursively); a path with
    ``*``, ``?`` or ``[`` that names no file is a pattern (``**`` crosses folders); an
    object-store URI names one object, or a dataset when it ends in ``/``, has no table
    extension, or holds a pattern. A missing file, a folder or prefix without Parquet
    files, a pattern that matches none and an object store that cannot be reached are input
    errors (66) naming the path.
    """
    if path == STDIO:
        return TableSource(path, "whole")
    if _in_store(path):
        return _remote_source(path, fmt, storage_options)
    local = Path(path)
    if local.is_dir():
        return _dataset(path, path.rstrip("/") or "/", _folder_files(path), "folder")
    if not local.exists() and has_glob(path):
        matched = sorted(m for m in glob.glob(path, recursive=True) if os.path.isfile(m))
        return _dataset(path, glob_root(path), matched, "pattern")
    if not local.exists():
        raise InputFileError(f"{path}: no such file.")
    if not _is_special_file(path) and detect_format(path, fmt) == "parquet":
        return TableSource(path, "parquet", files=(path,))
    return TableSource(path, "whole")


def _remote_source(path: str, fmt: str | None, storage_options: Mapping[str, str] | None) -> TableSource:
    from pricelab_cli import storage

    options = _store_options(storage_options)
    # Reaches the store (66 within seconds when it cannot) and lists what the URI names: the
    # object itself, the objects under it as a prefix, or those its pattern matches.
    found = storage.check_access(path, options)
    if has_glob(path.split("://", 1)[1]):
        return _dataset(path, glob_root(path), found, "pattern", in_store=True)
    if path.endswith("/") or found != [path]:
        return _dataset(path, path.rstrip("/"), found, "prefix", in_store=True)
    if detect_format(path, fmt) == "parquet":
        return TableSource(path, "parquet", files=(path,), in_store=True)
    return TableSource(path, "whole", in_store=True)


def _dataset(path: str, root: str, candidates: Sequence[str], what: str, *, in_store: bool = False) -> TableSource:
    """The Parquet files among ``candidates`` as a dataset, or a 66 saying there are none."""
    visible = [f for f in candidates if not any(p.startswith(_HIDDEN_PREFIXES) for p in _relative_parts(f, root))]
    files = tuple(f for f in visible if f.lower().endswith(PARQUET_SUFFIXES))
    if files:
        return TableSource(path, "parquet", files=files, root=root, dataset=True, in_store=in_store)
    example = f"{len(visible)} other file(s), e.g. {_relative_parts(visible[0], root)[-1]}" if visible else ""
    if what == "folder":
        raise InputFileError(
            f"{path}: is a folder, not a file, and holds no Parquet files ({example or 'it is empty'}); "
            "give one file, or a folder of .parquet files (partition folders such as date=2026-03-01/ are fine)."
        )
    if what == "prefix":
        raise InputFileError(
            f"{path}: no Parquet object under this prefix ({example or 'nothing at all'}); "
            "check the bucket and the prefix, or name one object."
        )
    if visible:
        raise InputFileError(
            f"{path}: the pattern matches {example}, but no Parquet file; a pattern is read as a "
            "Parquet dataset, so make it match .parquet files."
        )
    raise InputFileError(
        f"{path}: no file matches this pattern; check the folder and the pattern (and quote it, "
        "so that the shell passes it on unexpanded)."
    )


# --------------------------------------------------------------------------- scanning Parquet


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


# --------------------------------------------------------------------------- writing


def provenance(version: str, argv: Sequence[str], seed: int | None, outputs: Sequence[str] = ()) -> dict:
    """The record every output carries: version, command line and seed.

    Output paths in the command line are recorded as ``{output}`` so that the same run
    writes the same bytes wherever it writes them; credentials given as ``--storage-option``
    are recorded as ``KEY=***``, never in the clear.
    """
    shown = ["{output}" if a in outputs and a != STDIO else a for a in argv]
    for i, arg in enumerate(shown):
        if arg.startswith("--storage-option="):
            shown[i] = "--storage-option=" + _hide_credential(arg.split("=", 1)[1])
        elif arg == "--storage-option" and i + 1 < len(shown):
            shown[i + 1] = _hide_credential(shown[i + 1])
    return {"version": version, "command": " ".join(shown), "seed": seed}


_CREDENTIAL_KEY = re.compile(r"secret|token|password|access_key|credential", re.IGNORECASE)


def _hide_credential(pair: str) -> str:
    key, sep, _ = pair.partition("=")
    return f"{key}=***" if sep and _CREDENTIAL_KEY.search(key) else pair


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclasses.dataclass
class _Transaction:
    """Outputs of one run waiting to be committed together: (temporary, target) file pairs,
    (temporary, target) folder pairs, device or pipe targets written in place at commit,
    finished objects for object storage, and what goes to standard output."""

    renames: list[tuple[Path, Path]] = dataclasses.field(default_factory=list)
    folders: list[tuple[Path, Path]] = dataclasses.field(default_factory=list)
    in_place: list[tuple[Path, Path]] = dataclasses.field(default_factory=list)
    uploads: list[tuple[str, bytes, Mapping[str, str] | None]] = dataclasses.field(default_factory=list)
    stdout: list[bytes] = dataclasses.field(default_factory=list)

    def discard(self) -> None:
        for tmp, _ in (*self.renames, *self.in_place):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        for tmp, _ in self.folders:
            shutil.rmtree(tmp, ignore_errors=True)
        self.uploads.clear()

    def commit(self) -> None:
        try:
            # Uploads first: the network is what most likely fails, and then no local
            # output has been replaced yet.
            for uri, data, options in self.uploads:
                _put_object(uri, data, options)
            for _, target in self.folders:
                _check_replaceable(target, str(target))  # the run may have taken long; look again
            scratch.commit(self.renames, self.folders)
            for tmp, target in self.in_place:
                try:
                    with open(target, "wb") as sink:
                        sink.write(tmp.read_bytes())
                except OSError as exc:
                    raise output_failed(str(target), exc) from None
        finally:
            self.discard()
        if self.stdout:
            _to_stdout(self.stdout)


_PENDING: list[_Transaction] = []


@dataclasses.dataclass
class _LastCommit:
    done: bool = False


# Whether the last transaction committed (a signal held during the commit is raised after it).
LAST_COMMIT = _LastCommit()


@contextlib.contextmanager
def output_transaction() -> Iterator[None]:
    """Commit every output written inside the block together, or none of them.

    Each output is written to a temporary file beside its target (standard output is held
    in memory); only when the block ends without an exception are they all renamed into
    place and the stream written. A run that fails half-way, or is interrupted, leaves every
    existing file as it was and no temporary file behind.
    """
    transaction = _Transaction()
    _PENDING.append(transaction)
    LAST_COMMIT.done = False
    try:
        yield
    except BaseException:
        transaction.discard()
        raise
    finally:
        _PENDING.remove(transaction)
    # Ctrl-C, SIGTERM and SIGHUP wait while the outputs move into place.
    with stopping.deferred():
        transaction.commit()
        LAST_COMMIT.done = True


def write_stdout(payload: bytes) -> None:
    """Write to standard output now, or at the commit of the open transaction."""
    if _PENDING:
        _PENDING[-1].stdout.append(payload)
        return
    _to_stdout([payload])


def _to_stdout(chunks: list[bytes]) -> None:
    stream = getattr(sys.stdout, "buffer", None)
    if stream is None:
        raise OutputError(CLOSED_STDOUT)
    try:
        for chunk in chunks:
            stream.write(chunk)
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"standard output: could not be written ({_why(exc)}).") from None


CLOSED_STDOUT = "standard output is closed (-o - needs it); give a file with -o, or leave stdout open."
# Errors of a file system that cannot take what is written (full, over quota, read-only).
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def full_disk(exc: BaseException) -> bool:
    """Whether an error says the file system could not take the bytes written."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return True
    text = str(exc)
    return any(
        mark in text
        for mark in (
            "No space left",
            "os error 28",
            "Disk quota",
            "os error 122",
            "File too large",
            "Read-only file system",
        )
    )


@contextlib.contextmanager
def _full_disk_named(target: Path) -> Iterator[None]:
    """A write that fails for want of space becomes an error naming its output."""
    try:
        yield
    except Exception as exc:
        if full_disk(exc):
            raise output_failed(str(target), exc) from None
        raise


def output_failed(target: str, exc: BaseException) -> OutputError:
    """The error for an output the file system would not take, naming it and its folder."""
    why = str(exc).strip() or type(exc).__name__
    if os.path.exists(target) and not (os.path.isfile(target) or os.path.isdir(target)):
        return OutputError(f"{target}: the device or pipe refused the output ({why}); give a file with -o.")
    folder = os.path.dirname(os.path.abspath(target))
    return OutputError(
        f"{target}: could not be written ({why}); the file system holding {folder!r} is full or refuses writes. "
        "Nothing was written and existing outputs are unchanged: free some space there or give another place with -o."
    )


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` on success only.

    Inside ``output_transaction`` the replacement waits for the transaction's commit, so
    all of a run's outputs land together. A target that exists and is not a regular file
    (``/dev/null``, a named pipe) is never renamed over (that would replace the device or
    pipe with a file): it is written in place, at commit inside a transaction.
    """
    target = Path(target)
    special = target.exists() and not target.is_file() and not target.is_dir()
    if special and not _PENDING:
        yield target
        return
    folder = target.parent if str(target.parent) else Path(".")
    if not special:
        if not folder.is_dir():
            raise UsageError(f"{target}: the folder {str(folder)!r} does not exist.")
        if target.is_dir():
            raise UsageError(f"{target}: is a folder; give a file name for the output.")
    try:
        tmp_path = scratch.temp_file(target, None if special else folder)
    except OSError as exc:
        raise UsageError(f"{target}: cannot write in {str(folder)!r} ({exc.strerror}).") from exc
    try:
        with _full_disk_named(target):
            yield tmp_path
        # mkstemp creates 0600 files; outputs get the permissions any new file would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        if _PENDING:
            (_PENDING[-1].in_place if special else _PENDING[-1].renames).append((tmp_path, target))
            return
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    finally:
        if not _PENDING:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()


def check_outputs(
    outputs: Mapping[str, str],
    inputs: Mapping[str, str],
    *,
    documents: Sequence[str] = (),
    fmt: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> None:
    """Refuse, before any work, output paths that would lose data or cannot be written.

    ``outputs`` and ``inputs`` map flag names to paths (``-`` for the standard streams);
    ``documents`` are the outputs that are not tables (JSON, PNG), whose extension is not
    checked. Every output must differ from every other output and from every input (paths
    compared after resolving links), at most one output and one input may use the standard
    stream, and each output's folder must exist and be writable. An output folder (a path
    ending in ``/`` or naming a folder) must hold no input and no other output, may replace
    only a folder pricelab wrote, and no output may be written inside an input folder. An
    object-store output names one object. Violations are usage errors (exit 2) naming the
    flags. ``storage_options`` are those of ``write_table`` (not needed by the checks yet).
    """
    streamed_out = [flag for flag, path in outputs.items() if path == STDIO]
    if len(streamed_out) > 1:
        raise UsageError(
            f"{' and '.join(streamed_out)} {'both' if len(streamed_out) == 2 else 'all'} write to standard output (-); "
            "give all but one of them a file."
        )
    if streamed_out and getattr(sys.stdout, "buffer", None) is None:
        raise OutputError(f"{streamed_out[0]} -: {CLOSED_STDOUT}")
    streamed_in = [flag for flag, path in inputs.items() if path == STDIO]
    if len(streamed_in) > 1:
        raise UsageError(
            f"{' and '.join(streamed_in)} {'both' if len(streamed_in) == 2 else 'all'} read standard input (-); "
            "only one input can come from a stream."
        )
    seen: dict[str, str] = {}
    for flag, path in inputs.items():
        if path != STDIO:
            seen.setdefault(_path_key(path), flag)
    taken: dict[str, str] = {}
    for flag, path in outputs.items():
        if path == STDIO:
            continue
        key = _path_key(path)
        special = _is_special_file(path)
        if key in seen and not special:
            raise UsageError(
                f"{flag} {path} is also the input of {seen[key]}; writing it would destroy the input. "
                "Write the output to another file."
            )
        if key in taken and not special:
            raise UsageError(f"{taken[key]} and {flag} name the same file {path}; give each output its own file.")
        taken[key] = flag
        if special:
            continue
        _check_nesting(flag, path, outputs, inputs)
        if _in_store(path):
            _check_object_output(flag, path, documents, fmt, storage_options)
            continue
        target = Path(path)
        as_folder = is_folder_output(path)
        if as_folder:
            if path in documents:
                raise UsageError(f"{flag} {path}: is a folder; give a file name for the output.")
            _check_replaceable(target, f"{flag} {path}")
        folder = target.parent if str(target.parent) else Path(".")
        if not folder.is_dir():
            raise UsageError(f"{flag} {path}: the folder {str(folder)!r} does not exist.")
        try:
            # A real probe: permission bits say nothing to root, nor about a read-only mount.
            with tempfile.TemporaryFile(dir=folder, prefix=".pricelab-probe-"):
                pass
        except OSError as exc:
            raise UsageError(f"{flag} {path}: cannot write in the folder {str(folder)!r} ({exc.strerror}).") from exc
        if path not in documents and not as_folder:
            detect_format(path, fmt)


def _resolved(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _table_bytes(df: pl.DataFrame, fmt: str, meta: dict | None) -> bytes:
    buf = io.BytesIO()
    _write_pieces([df], buf, fmt, meta)
    return buf.getvalue()


def write_table(
    table: pl.DataFrame | Iterable[pl.DataFrame],
    path: str,
    *,
    fmt: str | None = None,
    meta: dict | None = None,
    partition_by: str = "date",
    storage_options: Mapping[str, str] | None = None,
) -> None:
    """Write a table atomically; ``-`` writes to standard output.

    ``table`` is a frame, or its pieces in order (frames of one schema) so that a table too
    large to hold is written piece by piece. Parquet outputs carry ``meta`` as key-value
    metadata; text outputs get a ``<output>.meta.json`` sidecar (none for a stream). A path
    ending in ``/``, or naming a folder, is written as a Parquet dataset partitioned by the
    ``partition_by`` column when the table has it as dates (``date=2026-03-02/part-0.parquet``),
    else as one ``part-0.parquet``. An object-store URI (``s3://bucket/key.parquet``) is
    uploaded as one finished object, with its sidecar, when the run commits;
    ``storage_options`` reach the store.
    """
    if path != STDIO and is_folder_output(path):
        with atomic_folder(path) as tmp:
            write_dataset(table, tmp, meta=meta, partition_by=partition_by)
        return
    fmt = detect_format(path, fmt)
    sidecar = None if fmt == "parquet" or meta is None else f"{path}.meta.json"
    sidecar_text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    pieces = [table] if isinstance(table, pl.DataFrame) else table
    if path == STDIO or _in_store(path):
        buf = io.BytesIO()
        _write_pieces(pieces, buf, fmt, meta)
        if path == STDIO:
            write_stdout(buf.getvalue())
            return
        upload_at_commit(path, buf.getvalue(), storage_options)
        if sidecar is not None:
            upload_at_commit(sidecar, sidecar_text.encode(), storage_options)
        return
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(path))
        with open(tmp, "wb") as sink:
            _write_pieces(pieces, sink, fmt, meta)
        if sidecar is not None:
            tmp_meta = stack.enter_context(atomic_path(sidecar))
            tmp_meta.write_text(sidecar_text)


def write_json(obj: Mapping[str, Any], path: str, *, storage_options: Mapping[str, str] | None = None) -> None:
    """Write a JSON document atomically (``-`` for standard output, an object-store URI
    uploaded when the run commits)."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    if path == STDIO:
        write_stdout(text.encode())
        return
    if _in_store(path):
        upload_at_commit(path, text.encode(), storage_options)
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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


def read_provenance(path: str) -> dict | None:
    """Return the provenance record of a pricelab output, or None if it has none."""
    if detect_format(path) == "parquet":
        meta = pq.read_schema(path).metadata or {}
        raw = meta.get(PROVENANCE_KEY.encode())
        return json.loads(raw) if raw else None
    sidecar = Path(f"{path}.meta.json")
    return json.loads(sidecar.read_text()) if sidecar.exists() else None


# --------------------------------------------------------------------------- folder and object-store outputs

# How a dataset's files and partition folders are named (hive style; null partition values
# get the name every hive reader takes for null).
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_PART_FILE = re.compile(r"part-[0-9]+\.parquet")
_PARTITION_DIR = re.compile(r"[^=/]+=[^/]+")


def is_folder_output(path: str) -> bool:
    """True when ``path`` names a folder output: it ends in ``/`` or is an existing folder."""
    if path == STDIO or _in_store(path):
        return False
    return path.endswith(("/", os.sep)) or Path(path).is_dir()


def write_dataset(
    table: pl.DataFrame | Iterable[pl.DataFrame],
    folder: str | os.PathLike,
    *,
    meta: dict | None = None,
    partition_by: str = "date",
) -> None:
    """Write a table (a frame, or its pieces in order) into ``folder`` as a Parquet dataset.

    When the table has ``partition_by`` as a date column, rows are split hive-style into
    ``<partition_by>=YYYY-MM-DD/`` folders and the column lives in the folder names only (as
    readers of such datasets expect); else the files sit in ``folder`` itself. Consecutive
    rows of one partition go to one ``part-N.parquet``, in order, so a table streamed date by
    date gives one file per date; a partition that comes back later gets another part.
    Every file carries ``meta``.
    """
    folder = Path(folder)
    pieces = [table] if isinstance(table, pl.DataFrame) else table
    schemas: list[pl.Schema] = []

    def parts() -> Iterator[tuple[Path, pl.DataFrame]]:
        for piece in pieces:
            schemas.append(piece.schema)
            if piece.height == 0:
                continue
            if piece.schema.get(partition_by) != pl.Date:
                yield folder, piece
                continue
            values = piece.get_column(partition_by)
            if values.null_count() == 0 and values.min() == values.max():
                groups = [(values[0], piece)]  # a piece of one date: nothing to split
            else:
                split = piece.partition_by(partition_by, as_dict=True, maintain_order=True)
                groups = [(key[0], part) for key, part in split.items()]
            for value, part in groups:
                name = f"{partition_by}={value.isoformat() if value is not None else HIVE_NULL}"
                yield folder / name, part.drop(partition_by)

    counts: dict[Path, int] = {}
    for where, run in itertools.groupby(parts(), key=lambda pair: pair[0]):
        _write_part((frame for _, frame in run), where, counts, meta)
    if not counts:
        # An empty table still leaves a readable dataset: one file that holds the schema.
        _write_part([pl.DataFrame(schema=schema) for schema in schemas[:1]], folder, counts, meta)


def _write_part(pieces: Iterable[pl.DataFrame], folder: Path, counts: dict[Path, int], meta: dict | None) -> None:
    number = counts.get(folder, 0)
    counts[folder] = number + 1
    folder.mkdir(exist_ok=True)
    with open(folder / f"part-{number}.parquet", "wb") as sink:
        _write_pieces(pieces, sink, "parquet", meta)


def _write_pieces(pieces: Iterable[pl.DataFrame], sink: Any, fmt: str, meta: dict | None) -> None:
    """Write frames of one schema one after another into ``sink`` as one table in ``fmt``."""
    written = False
    if fmt == "parquet":
        writer = None
        try:
            for piece in pieces:
                arrow = piece.to_arrow()
                if writer is None:
                    schema = arrow.schema
                    if meta is not None:
                        provenance = {PROVENANCE_KEY.encode(): json.dumps(meta, sort_keys=True).encode()}
                        schema = schema.with_metadata({**(schema.metadata or {}), **provenance})
                    # Identifiers are mostly distinct: a dictionary would be built only to be
                    # dropped again, which costs more than the rest of the write.
                    dictionary = [name for name in schema.names if name not in ID_COLUMNS]
                    writer = pq.ParquetWriter(sink, schema, compression="zstd", use_dictionary=dictionary)
                elif not arrow.schema.equals(writer.schema, check_metadata=False):
                    arrow = arrow.cast(writer.schema)
                writer.write_table(arrow)
                written = True
        finally:
            if writer is not None:
                writer.close()
    else:
        separator = "\t" if fmt.startswith("tsv") else ","
        with contextlib.ExitStack() as stack:
            out = sink
            if fmt.endswith(".gz"):
                # mtime=0 and no file name keep identical runs byte-identical.
                out = stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0))
            for piece in pieces:
                piece.write_csv(out, separator=separator, date_format="%Y-%m-%d", include_header=not written)
                written = True
    if not written:
        raise ValueError("a table to write needs at least one piece (an empty frame gives its header).")


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``target``; it replaces ``target`` on success only.

    As with ``atomic_path``, inside ``output_transaction`` the move waits for the commit. An
    existing ``target`` is replaced only when it is a dataset pricelab wrote (checked here
    and again at the move), never a folder of the user's.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{target}: the folder {str(parent)!r} does not exist.")
    _check_replaceable(target, str(target))
    try:
        tmp = scratch.temp_folder(target, parent)
    except OSError as exc:
        raise UsageError(f"{target}: cannot write in {str(parent)!r} ({exc.strerror}).") from exc
    try:
        with _full_disk_named(target):
            yield tmp
        # mkdtemp creates 0700 folders; outputs get the permissions any new folder would.
        os.chmod(tmp, 0o777 & ~_umask())
        if _PENDING:
            _PENDING[-1].folders.append((tmp, target))
            return
        _replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_folder(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing a dataset pricelab wrote."""
    _check_replaceable(target, str(target))  # the run may have taken long; look again
    scratch.commit([], [(tmp, target)])


def _check_replaceable(target: Path, label: str) -> None:
    """Refuse to replace anything at ``target`` but an empty folder or a pricelab dataset."""
    if not (target.exists() or target.is_symlink()):
        return
    if not target.is_dir():
        raise UsageError(f"{label}: is a file, not a folder; give a folder name (or drop the trailing /).")
    problem = _dataset_problem(target)
    if problem:
        raise UsageError(
            f"{label}: the folder exists and is not a pricelab dataset ({problem}); pricelab replaces only "
            "folders it wrote. Name a new folder, or empty this one yourself."
        )


def _dataset_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a dataset pricelab wrote (None when it is one, or is empty):
    only ``part-N.parquet`` files carrying pricelab provenance, at the top or one level down
    in ``column=value`` partition folders."""
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            if not _PARTITION_DIR.fullmatch(entry.name):
                return f"it holds the folder {entry.name}"
            for part in sorted(entry.iterdir()):
                problem = _part_problem(part, f"{entry.name}/{part.name}")
                if problem:
                    return problem
            continue
        problem = _part_problem(entry, entry.name)
        if problem:
            return problem
    return None


def _part_problem(path: Path, shown: str) -> str | None:
    if path.is_symlink() or not path.is_file() or not _PART_FILE.fullmatch(path.name):
        return f"it holds {shown}, which pricelab does not write"
    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception:  # pyarrow raises several types for files that are not Parquet
        return f"{shown} is not a readable Parquet file"
    if PROVENANCE_KEY.encode() not in metadata:
        return f"{shown} carries no pricelab provenance"
    return None


def _check_nesting(flag: str, path: str, outputs: Mapping[str, str], inputs: Mapping[str, str]) -> None:
    """Refuse an output folder that holds an input or another output, and an output that
    lies inside an input folder (or matches an input glob)."""
    key = _path_key(path)
    holds = is_folder_output(path)
    for other_flag, other in inputs.items():
        if other == STDIO:
            continue
        other_key = _path_key(other)
        if holds and _inside(_glob_root(other_key), key):
            raise UsageError(
                f"{flag} {path} is a folder that holds the input of {other_flag} ({other}); replacing it would "
                "destroy the input. Write the output to another folder."
            )
        if _input_covers(other, other_key, key):
            raise UsageError(
                f"{flag} {path} lies inside the input of {other_flag} ({other}); writing there would change that "
                "input. Write the output elsewhere."
            )
    for other_flag, other in outputs.items():
        if other_flag != flag and other != STDIO and is_folder_output(other) and _inside(key, _path_key(other)):
            raise UsageError(
                f"{flag} {path} lies inside the output folder of {other_flag} ({other}); give each output its own place."
            )


def _check_object_output(
    flag: str, path: str, documents: Sequence[str], fmt: str | None, storage_options: Mapping[str, str] | None
) -> None:
    """An object-store output names one object of a known format, in a bucket that answers."""
    from pricelab_cli import storage

    if path.endswith("/"):
        raise UsageError(
            f"{flag} {path}: name one object (s3://bucket/key.parquet); Parquet folders are written to local "
            "folders only."
        )
    if path in documents and not path.lower().endswith(".json"):
        raise UsageError(
            f"{flag} {path}: only tables and JSON documents can be written to object storage; "
            "write this one to a local file."
        )
    if path not in documents:
        detect_format(path, fmt)
    # The store answers, the credentials are set and the bucket exists (66 otherwise).
    storage.check_output(path, _store_options(storage_options))


def _glob_root(key: str) -> str:
    """The folder a glob searches (the path itself when it is no glob)."""
    return (glob_root(key) or "/") if has_glob(key) else key


def _input_covers(path: str, key: str, output_key: str) -> bool:
    """True when an output at ``output_key`` would become part of the input ``path``."""
    if has_glob(path):
        return glob_regex(key).fullmatch(output_key) is not None
    if _in_store(path) or Path(path).is_dir():
        return _inside(output_key, key)
    return False


def _inside(child: str, parent: str) -> bool:
    return child.startswith(parent.rstrip("/") + "/")


def _path_key(path: str) -> str:
    """What two paths are compared by: the URI for object storage, else the resolved path."""
    return path.rstrip("/") if _in_store(path) else _resolved(path)


def _put_object(uri: str, data: bytes, options: Mapping[str, str] | None) -> None:
    from pricelab_cli import storage

    storage.put_object(uri, data, _store_options(options))


def upload_at_commit(uri: str, data: bytes, storage_options: Mapping[str, str] | None = None) -> None:
    """Put ``data`` as the object ``uri`` when the open transaction commits (at once outside
    one): a run that fails leaves nothing in the store."""
    if _PENDING:
        _PENDING[-1].uploads.append((uri, data, storage_options))
        return
    _put_object(uri, data, storage_options)


# --------------------------------------------------------------------------- provenance of inputs


def file_digest(path: str) -> str | None:
    """SHA-256 of a file, or of every file of a folder (in sorted order); None for a stream
    or an object-store URI."""
    p = Path(path)
    if path == STDIO or not p.exists():
        return None
    digest = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            digest.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_record(path: str | None) -> dict:
    """The provenance record of a pricelab output (empty when there is none)."""
    if not path or not Path(path).is_file():
        return {}
    try:
        return read_provenance(path) or {}
    except Exception:  # a file without readable metadata has no record
        return {}


def provenance_row(role: str, path: str) -> dict:
    """One row of a report's table of inputs: the file's role, path, digest and the run that
    made it (``–`` where unknown)."""
    record = read_record(path)
    if not record and Path(path).is_dir():
        # A dataset folder: every file carries the same record.
        parts = sorted(Path(path).rglob("*.parquet"))
        record = read_record(str(parts[0])) if parts else {}
    if not record and path.endswith(".json") and Path(path).is_file():
        record = read_json(path).get("provenance") or {}
    return {
        "role": role,
        "path": path,
        "sha256": file_digest(path) or "–",
        "command": record.get("command", "–"),
        "version": record.get("version", "–"),
        "seed": "–" if record.get("seed") is None else record["seed"],
    }
