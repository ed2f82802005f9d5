"""Table formats: chosen by extension, or recognised from a stream's first bytes."""

from __future__ import annotations

from pathlib import Path

from pricelab_cli._lazy import lazy
from pricelab_cli.errors import (
    UsageError,
)
from pricelab_cli.paths import STDIO

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
