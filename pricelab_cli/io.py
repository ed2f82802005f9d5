"""All reading, writing, format detection and schema checks for pricelab tables.

Every command goes through this module, so the behaviours users rely on (formats chosen by
extension, ``-`` for the standard streams, atomic writes, provenance, messages that name the
file and the column) are the same everywhere.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pricelab_cli.errors import (
    ColumnTypeError,
    DataError,
    DuplicateKeyError,
    EmptyTableError,
    InputFileError,
    MissingColumnError,
    UsageError,
)

STDIO = "-"
# The assignment table's columns as the contract names them (all required on input).
ASSIGNMENT_COLUMNS = ("product_id", "date", "treated", "blackout", "period")
FORMATS = ("csv", "csv.gz", "tsv", "tsv.gz", "parquet")
PROVENANCE_KEY = "pricelab"
# Identifier columns are read as text first so that "00123" keeps its zeros; they become
# integers only when every value is a canonical integer, so "42" and 42 round-trip unchanged.
ID_COLUMNS = ("product_id", "src", "dst", "cluster_id")
_CANONICAL_INT = r"^(0|-?[1-9][0-9]{0,17})$"


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


def _source_bytes(path: str) -> bytes:
    if path == STDIO:
        return sys.stdin.buffer.read()
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{path}: no such file.")
    if p.is_dir():
        raise InputFileError(f"{path}: is a folder, not a file.")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be read ({exc.strerror}).") from exc


def _read_raw(path: str, fmt: str | None) -> pl.DataFrame:
    data = _source_bytes(path)  # a missing file is reported before a puzzling extension
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
            raise InputFileError(f"{label}: not a readable Parquet file ({_first_line(exc)}).") from exc
    if fmt.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except OSError as exc:
            raise InputFileError(f"{label}: not a readable gzip file ({exc}).") from exc
    separator = "\t" if fmt.startswith("tsv") else ","
    first_line = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")
    names = next(csv.reader([first_line], delimiter=separator), [])
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(
            f"{label}: the header names column {repeated[0]!r} more than once; each column needs its own name."
        )
    if len(names) == 1 and (";" in first_line or ("\t" in first_line and separator == ",")):
        used = "semicolons" if ";" in first_line else "tabs"
        expected = "commas" if separator == "," else "tabs"
        raise DataError(
            f"{label}: the header is one column {first_line[:60]!r}: the file seems to be separated by "
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
        raise DataError(f"{label}: not a well-formed {fmt.upper()} table ({_first_line(exc)}).") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def normalise_ids(df: pl.DataFrame) -> pl.DataFrame:
    """Cast text identifier columns to integers when every value is a canonical integer."""
    casts = []
    for col in ID_COLUMNS:
        if col in df.columns and df.schema[col] == pl.String:
            values = df.get_column(col).drop_nulls()
            if len(values) and values.str.contains(_CANONICAL_INT).all():
                casts.append(pl.col(col).cast(pl.Int64))
    return df.with_columns(casts) if casts else df


def read_table(
    path: str,
    *,
    required: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
    dates: Sequence[str] = (),
    unique: Sequence[str] = (),
    fmt: str | None = None,
    allow_empty: bool = False,
) -> pl.DataFrame:
    """Read a table, rename user columns to pricelab's names and check its schema.

    Parameters
    ----------
    path : file path or ``-`` for standard input.
    required : columns (pricelab names) that must be present.
    rename : user column name -> pricelab name, from flags such as ``--unit-col``.
    dates : columns to parse as ISO ``YYYY-MM-DD`` dates.
    unique : columns whose combination must not repeat (``product_id``, ``date``).
    """
    label = "standard input" if path == STDIO else path
    df = _read_raw(path, fmt)
    rename = {user: ours for user, ours in (rename or {}).items() if user != ours}
    user_name = {ours: user for user, ours in rename.items()}
    # Checked under the user's names first: `--unit-col sku` must find `sku`, not fall back
    # to a `product_id` column that happens to be there.
    check_columns(df, [user_name.get(c, c) for c in required], label)
    df = apply_renames(df, rename, label)
    if df.height == 0 and not allow_empty:
        raise EmptyTableError(f"{label}: the table has a header but no rows.")
    check_identifiers(df, label)
    check_finite(df, label)
    df = normalise_ids(df)
    df = parse_dates(df, dates, label)
    if unique:
        check_unique(df, unique, label)
    return df


# Beyond this magnitude sums of squares overflow float64 (about 1.8e308).
MAX_MAGNITUDE = 1e100


def first_row(mask: pl.Series) -> int:
    """Position of the first True of a boolean column (for messages that quote a row)."""
    return int(mask.arg_true()[0])


def check_identifiers(df: pl.DataFrame, label: str) -> None:
    """A missing identifier (``product_id``, ``src``, ``dst``, ``cluster_id``) is refused,
    naming the file, the column and the row."""
    for col in ID_COLUMNS:
        if col in df.columns and df.get_column(col).null_count():
            row = first_row(df.get_column(col).is_null())
            raise DataError(
                f"{label}: column {col!r} is empty on row {row + 1} (and {df.get_column(col).null_count() - 1} "
                "more); every row needs its identifier."
            )


def check_finite(df: pl.DataFrame, label: str) -> None:
    """Infinite numbers, and numbers too large to be summed, are refused naming the file,
    column and row (NaN is left to each command: a missing feature is allowed, a missing
    outcome is not)."""
    for col, dtype in df.schema.items():
        if not dtype.is_float():
            continue
        values = df.get_column(col)
        wild = (values.is_infinite() | (values.abs() > MAX_MAGNITUDE)).fill_null(False)
        if wild.any():
            row = first_row(wild)
            raise DataError(
                f"{label}: column {col!r} has {values[row]!r} on row {row + 1}; numbers must be finite "
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
            if getattr(dtype, "time_zone", None):
                raise ColumnTypeError(
                    f"{label}: column {col!r} holds timestamps in time zone {dtype.time_zone!r}, not dates; "
                    "convert them to local dates (YYYY-MM-DD) first."
                )
            off_midnight = (values.dt.truncate("1d") != values).fill_null(False)
            if off_midnight.any():
                row = first_row(off_midnight)
                raise ColumnTypeError(
                    f"{label}: column {col!r} holds timestamps with a time of day, e.g. "
                    f"{values[row]} (row {row + 1}), not dates; "
                    "give one date (YYYY-MM-DD) per row."
                )
            df = df.with_columns(pl.col(col).dt.date())
            continue
        text = df.get_column(col).cast(pl.String)
        parsed = text.str.strptime(pl.Date, "%Y-%m-%d", strict=False)
        bad = parsed.is_null() | text.is_null()
        if bad.any():
            row = first_row(bad)
            value = text[row]
            hint = " (a time of day or zone cannot be cut off safely; give one date per row)" if value and (
                "T" in value or ":" in value) else ""
            raise ColumnTypeError(
                f"{label}: column {col!r} has a value that is not an ISO date "
                f"(YYYY-MM-DD): {value!r} (row {row + 1}){hint}."
            )
        df = df.with_columns(parsed.alias(col))
    return df


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
            f"{label}: {dup.height} rows repeat a ({', '.join(keys)}) key, e.g. {shown}; "
            "each must appear once."
        )


def check_numeric(df: pl.DataFrame, cols: Sequence[str], label: str) -> None:
    """Raise ColumnTypeError when a column that must hold numbers does not."""
    for col in cols:
        if col in df.columns and not df.schema[col].is_numeric():
            raise ColumnTypeError(
                f"{label}: column {col!r} must hold numbers but has type {df.schema[col]}."
            )


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


def row_positions(values: pl.Series, ids: pl.Series) -> np.ndarray:
    """Position of each value in ``ids`` (-1 when absent), by a join rather than a Python dict."""
    lookup = pl.DataFrame({"_id": ids, "_pos": np.arange(len(ids), dtype=np.int64)})
    frame = pl.DataFrame({"_id": values})
    frame, lookup = align_id_types(frame, lookup, col="_id")
    return frame.join(lookup, on="_id", how="left", maintain_order="left")["_pos"].fill_null(-1).to_numpy()


def align_id_types(*frames: pl.DataFrame, col: str = "product_id") -> list[pl.DataFrame]:
    """Give ``col`` one type across frames (text if any frame holds text) so joins match."""
    types = {f.schema[col] for f in frames if col in f.columns}
    if len(types) <= 1:
        return list(frames)
    return [f.with_columns(pl.col(col).cast(pl.String)) if col in f.columns else f for f in frames]


# --------------------------------------------------------------------------- writing


def provenance(version: str, argv: Sequence[str], seed: int | None, outputs: Sequence[str] = ()) -> dict:
    """The record every output carries: version, command line and seed.

    Output paths in the command line are recorded as ``{output}`` so that the same run
    writes the same bytes wherever it writes them.
    """
    shown = ["{output}" if a in outputs and a != STDIO else a for a in argv]
    return {"version": version, "command": " ".join(shown), "seed": seed}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclasses.dataclass
class _Transaction:
    """Outputs of one run waiting to be committed together: (temporary, target) file pairs,
    device or pipe targets written in place at commit, and what goes to standard output."""

    renames: list[tuple[Path, Path]] = dataclasses.field(default_factory=list)
    in_place: list[tuple[Path, Path]] = dataclasses.field(default_factory=list)
    stdout: list[bytes] = dataclasses.field(default_factory=list)

    def discard(self) -> None:
        for tmp, _ in (*self.renames, *self.in_place):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def commit(self) -> None:
        try:
            for tmp, target in self.renames:
                os.replace(tmp, target)
            for tmp, target in self.in_place:
                with open(target, "wb") as sink:
                    sink.write(tmp.read_bytes())
        finally:
            self.discard()
        for chunk in self.stdout:
            sys.stdout.buffer.write(chunk)
        if self.stdout:
            sys.stdout.buffer.flush()


_PENDING: list[_Transaction] = []


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
    try:
        yield
    except BaseException:
        transaction.discard()
        raise
    finally:
        _PENDING.remove(transaction)
    transaction.commit()


def write_stdout(payload: bytes) -> None:
    """Write to standard output now, or at the commit of the open transaction."""
    if _PENDING:
        _PENDING[-1].stdout.append(payload)
        return
    sys.stdout.buffer.write(payload)
    sys.stdout.buffer.flush()


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
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=None if special else folder)
    except OSError as exc:
        raise UsageError(f"{target}: cannot write in {str(folder)!r} ({exc.strerror}).") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
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
) -> None:
    """Refuse, before any work, output paths that would lose data or cannot be written.

    ``outputs`` and ``inputs`` map flag names to paths (``-`` for the standard streams);
    ``documents`` are the outputs that are not tables (JSON, PNG), whose extension is not
    checked. Every output must differ from every other output and from every input (paths
    compared after resolving links), at most one output and one input may use the standard
    stream, and each output's folder must exist and be writable. Violations are usage
    errors (exit 2) naming the flags.
    """
    streamed_out = [flag for flag, path in outputs.items() if path == STDIO]
    if len(streamed_out) > 1:
        raise UsageError(
            f"{' and '.join(streamed_out)} {'both' if len(streamed_out) == 2 else 'all'} write to standard output (-); "
            "give all but one of them a file."
        )
    streamed_in = [flag for flag, path in inputs.items() if path == STDIO]
    if len(streamed_in) > 1:
        raise UsageError(
            f"{' and '.join(streamed_in)} {'both' if len(streamed_in) == 2 else 'all'} read standard input (-); "
            "only one input can come from a stream."
        )
    seen: dict[str, str] = {}
    for flag, path in inputs.items():
        if path != STDIO:
            seen.setdefault(_resolved(path), flag)
    taken: dict[str, str] = {}
    for flag, path in outputs.items():
        if path == STDIO:
            continue
        key = _resolved(path)
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
        target = Path(path)
        if target.is_dir():
            raise UsageError(f"{flag} {path}: is a folder; give a file name for the output.")
        folder = target.parent if str(target.parent) else Path(".")
        if not folder.is_dir():
            raise UsageError(f"{flag} {path}: the folder {str(folder)!r} does not exist.")
        try:
            # A real probe: permission bits say nothing to root, nor about a read-only mount.
            with tempfile.TemporaryFile(dir=folder, prefix=".pricelab-probe-"):
                pass
        except OSError as exc:
            raise UsageError(f"{flag} {path}: cannot write in the folder {str(folder)!r} ({exc.strerror}).") from exc
        if path not in documents:
            detect_format(path, fmt)


def _resolved(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _table_bytes(df: pl.DataFrame, fmt: str, meta: dict | None) -> bytes:
    buf = io.BytesIO()
    if fmt == "parquet":
        table = df.to_arrow()
        if meta is not None:
            existing = table.schema.metadata or {}
            table = table.replace_schema_metadata(
                {**existing, PROVENANCE_KEY.encode(): json.dumps(meta, sort_keys=True).encode()}
            )
        pq.write_table(table, buf, compression="zstd")
        return buf.getvalue()
    separator = "\t" if fmt.startswith("tsv") else ","
    df.write_csv(buf, separator=separator, date_format="%Y-%m-%d")
    raw = buf.getvalue()
    if fmt.endswith(".gz"):
        # mtime=0 keeps identical runs byte-identical.
        return gzip.compress(raw, mtime=0)
    return raw


def write_table(df: pl.DataFrame, path: str, *, fmt: str | None = None, meta: dict | None = None) -> None:
    """Write ``df`` atomically; ``-`` writes to standard output.

    Parquet outputs carry ``meta`` as key-value metadata; text outputs get a
    ``<output>.meta.json`` sidecar (none for a stream).
    """
    fmt = detect_format(path, fmt)
    payload = _table_bytes(df, fmt, meta)
    if path == STDIO:
        write_stdout(payload)
        return
    sidecar = None if fmt == "parquet" or meta is None else Path(f"{path}.meta.json")
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(path))
        tmp.write_bytes(payload)
        if sidecar is not None:
            tmp_meta = stack.enter_context(atomic_path(sidecar))
            tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def write_json(obj: Mapping[str, Any], path: str) -> None:
    """Write a JSON document atomically (``-`` for standard output)."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    if path == STDIO:
        write_stdout(text.encode())
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str) -> dict:
    """Read a JSON document; a missing file exits 66, a malformed one 65."""
    data = _source_bytes(path)
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
