"""The checks on output paths made before any work: an output may not overwrite or fall inside an input, two outputs may not collide, a folder is replaced only when it is one pricelab wrote."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from pricelab_cli._lazy import lazy
from pricelab_cli.errors import (
    OutputError,
    UsageError,
)

# Loaded on first use: writing a design's JSON or checking output paths needs none of them.
from pricelab_cli.io.formats import _is_special_file, detect_format
from pricelab_cli.io.sources import _in_store, _store_options
from pricelab_cli.io.write import CLOSED_STDOUT, _check_replaceable, is_folder_output
from pricelab_cli.paths import STDIO, glob_regex, glob_root, has_glob

np = lazy("numpy")
pl = lazy("polars")
pq = lazy("pyarrow.parquet")


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
