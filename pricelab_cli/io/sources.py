"""Where a table lives: a file, standard input, a folder or glob of Parquet files, or an object-store prefix, found out before any data is read."""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pricelab_cli._lazy import lazy
from pricelab_cli.errors import (
    InputFileError,
)

# Loaded on first use: writing a design's JSON or checking output paths needs none of them.
from pricelab_cli.io.formats import _is_special_file, detect_format
from pricelab_cli.paths import STDIO, glob_root, has_glob

np = lazy("numpy")
pl = lazy("polars")
pq = lazy("pyarrow.parquet")


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
