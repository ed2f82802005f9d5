"""Exceptions raised by pricelab's core; the CLI maps each to an exit code once.

Exit codes follow the command-line contract: 2 usage, 65 bad input data, 66 input file
missing or unreadable, 1 anything else; and, as sysexits.h has them, 73 for an output that
cannot be written (a full disk, a closed stream) and 75 for a folder another run is
committing into (try again).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The roles an input table plays; a message about a table starts with its role ("edges: ...").
TABLE_ROLES = ("sales", "history", "edges", "clusters", "assignment", "products", "features", "events", "pairs")
_TABLE_LABEL = re.compile(rf"^({'|'.join(TABLE_ROLES)}): ")
# A parameter, as a notebook user passes it, is named in backticks: `outlier_c`.
_PARAMETER = re.compile(r"`([a-z][a-z0-9_]*(?:=False)?)`")


def concerns(message: str) -> tuple[tuple[str, ...], str | None]:
    """The parameters a message names (in backticks, in order) and the table role it starts
    with (``None`` when it names none)."""
    label = _TABLE_LABEL.match(message)
    return tuple(_PARAMETER.findall(message)), (label.group(1) if label else None)


class PricelabError(Exception):
    """Base class for every error pricelab reports to its user.

    It carries what it concerns, so that a caller can act on it without reading the text:
    ``parameters`` (the core's names, e.g. ``("outlier_c",)``; ``parameter`` is the first)
    and ``table`` (a role such as ``"sales"``). Both are taken from the message when not
    given: the core names a parameter in backticks and starts a message about a table with
    its role. The command line turns them into its flags and the paths it was given.
    """

    exit_code = 1

    def __init__(self, message: str = "", *, parameters: Iterable[str] | None = None, table: str | None = None):
        super().__init__(message)
        found_parameters, found_table = concerns(message)
        self.parameters: tuple[str, ...] = tuple(parameters) if parameters is not None else found_parameters
        self.table: str | None = table if table is not None else found_table

    @property
    def parameter(self) -> str | None:
        return self.parameters[0] if self.parameters else None


class UsageError(PricelabError):
    """A flag or option value that cannot be used (unknown format, bad column name)."""

    exit_code = 2


class DataError(PricelabError):
    """Input data that cannot be analysed as it is (exit 65)."""

    exit_code = 65


class MissingColumnError(DataError):
    """A required column is absent from an input table."""


class DuplicateKeyError(DataError):
    """Rows that should be unique (product and date, product id) are repeated."""


class EmptyTableError(DataError):
    """An input table, or the part of it the analysis needs, has no rows."""


class ColumnTypeError(DataError):
    """A column holds values of the wrong type (a date that does not parse, text in a number)."""


class DesignError(DataError):
    """An experiment design that cannot be run (end before start, blackout longer than a phase)."""


class InputFileError(PricelabError):
    """An input file that is missing or cannot be read (exit 66)."""

    exit_code = 66


class OutputError(PricelabError):
    """An output or the scratch folder cannot be written (exit 73, EX_CANTCREAT)."""

    exit_code = 73


class PricelabWarning(UserWarning):
    """Something the user should know that does not stop the run (SRM, unreliable SE)."""


class EngineError(PricelabError):
    """The cluster engine could not be reached or lost work it could not redo (exit 1)."""

    exit_code = 1


# What a failed streaming read means, told by the reader's message: a damaged file, or an
# object store that stopped answering.
_DAMAGE = (
    "out of specification",
    "zstd",
    "snappy",
    "lz4",
    "decompress",
    "corrupt",
    "thrift",
    "unexpected end",
    "unexpected eof",
    "invalid page",
    "checksum",
)
_STORE_FAILURE = (
    "object_store",
    "object-store",
    "generic s3 error",
    "error sending request",
    "connection",
    "timed out",
    "timeout",
    "broken pipe",
    "reset by peer",
)


def damaged_input(label: str, exc: BaseException) -> InputFileError | None:
    """The error for an input that failed part-way through a streaming read (a corrupt page,
    a store that went away), naming it; None for any other error."""
    text = str(exc).lower()
    first = first_line(exc)
    if any(mark in text for mark in _DAMAGE):
        return InputFileError(
            f"{label}: part of the file is damaged and cannot be read ({first}); export or copy it again."
        )
    if any(mark in text for mark in _STORE_FAILURE):
        return InputFileError(
            f"{label}: the read failed part-way ({first}); the object store stopped answering or timed out. Check "
            "the store and run again; `storage_options` timeout=120s gives a slow store longer."
        )
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
