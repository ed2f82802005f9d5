"""Writing outputs: every output of a run is committed together at its end (a transaction), atomically, to files, folders of Parquet parts, standard output or an object store."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import io
import itertools
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pricelab_cli import scratch, stopping
from pricelab_cli._lazy import lazy
from pricelab_cli.errors import (
    OutputError,
    UsageError,
)

# Loaded on first use: writing a design's JSON or checking output paths needs none of them.
from pricelab_cli.io.formats import PROVENANCE_KEY, detect_format
from pricelab_cli.io.sources import _in_store, _store_options
from pricelab_cli.paths import STDIO
from pricelab_cli.tables import (
    ID_COLUMNS,
)

np = lazy("numpy")
pl = lazy("polars")
pq = lazy("pyarrow.parquet")


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
