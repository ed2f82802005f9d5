"""Running one command: its output checks, its engine, its reporter, and how messages name the files the user gave."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pricelab_cli
from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import Columns, storage_pairs
from pricelab_cli.console import Reporter
from pricelab_cli.errors import PricelabError, PricelabWarning, concerns

if TYPE_CHECKING:
    import polars as pl

    from pricelab_cli import io
    from pricelab_cli.design import Design
    from pricelab_cli.engine import TaskCounter
else:
    # Loaded when a command first needs them: help, --version and `design` never do.
    pl = lazy("polars")
    io = lazy("pricelab_cli.io")


@dataclasses.dataclass
class Run:
    """What one invocation needs besides its own flags: reporting, seed, stream format."""

    reporter: Reporter
    seed: int | None
    fmt: str | None
    outputs: tuple[str, ...]
    # --storage-option KEY=VALUE pairs for object-store outputs (and inputs).
    storage_options: dict[str, str] | None = None

    def read(self, path: str, **kwargs) -> pl.DataFrame:
        # Input streams are recognised by their first bytes; --format is for output streams.
        return io.read_table(path, storage_options=self.storage_options, **kwargs)

    def read_design(self, path: str) -> Design:
        """A design written by ``pricelab design`` (a file, ``-`` or an object-store URI read
        with the run's storage options), checked."""
        from pricelab_cli.design import design_from_dict

        return design_from_dict(io.read_json(path, storage_options=self.storage_options), source=path)

    def read_if(self, path: str | None, **kwargs) -> pl.DataFrame | None:
        """``read`` for an optional input: None when its flag is not given."""
        return self.read(path, **kwargs) if path else None

    def scan(self, path: str, **kwargs) -> pl.LazyFrame:
        """A lazy scan of an input (``io.scan_table``, its schema checked first): the core
        reads only the columns and rows it uses."""
        return io.scan_table(path, storage_options=self.storage_options, **kwargs)

    def read_assignment(self, path: str, columns: Columns) -> pl.DataFrame:
        """An assignment written by ``pricelab assign``, under pricelab's column names; a
        repeated (product, date) is an error."""
        return self.read(
            path,
            required=list(io.ASSIGNMENT_COLUMNS),
            rename=columns.assignment,
            dates=["date"],
            unique=["product_id", "date"],
        )

    def scan_sales(self, path: str, outcomes: Sequence[str], columns: Columns) -> pl.LazyFrame:
        """Sales (product, date and the outcome columns) scanned, not read: the core streams
        them in batches, keeping only the columns and dates it uses."""
        return self.scan(path, required=["product_id", "date", *outcomes], rename=columns.panel, dates=["date"])

    def read_clusters(self, path: str | None, columns: Columns, *, unique: bool = True) -> pl.DataFrame | None:
        """An optional clusters table (product, cluster; each product once when ``unique``)."""
        return self.read_if(
            path,
            required=["product_id", "cluster_id"],
            rename=columns.clusters,
            unique=["product_id"] if unique else (),
        )

    def meta(self) -> dict:
        return io.provenance(pricelab_cli.__version__, ["pricelab", *sys.argv[1:]], self.seed, self.outputs)

    def write(
        self,
        table: pl.DataFrame | Iterable[pl.DataFrame],
        path: str,
        *,
        partition_by: str = "date",
        extra: dict | None = None,
    ) -> None:
        """Write a table (or its pieces, in order); a folder output is partitioned by ``partition_by``.
        ``extra`` adds facts about the table to its provenance record."""
        io.write_table(
            table,
            path,
            fmt=self.fmt,
            meta={**self.meta(), **(extra or {})},
            partition_by=partition_by,
            storage_options=self.storage_options,
        )


# Flags that name input files (tables or JSON), for the output-path checks.
INPUT_FLAGS = (
    "--sales",
    "--assignment",
    "--products",
    "--features",
    "--edges",
    "--history",
    "--clusters",
    "--events",
    "--pairs",
    "--design",
    "--effects",
    "--cate",
    "--placebo",
    "--spillover",
    "--power",
    "--monitor",
    "--elasticity",
    "--optimum",
)


def start_run(
    levels: tuple[bool, bool],
    seed: int | None,
    fmt: str | None,
    *outputs: str | None,
    documents: tuple[str | None, ...] = (),
    storage_option: list[str] | None = None,
) -> Run:
    """Start a run: check ``--format`` and every output path before any work is done.

    ``levels`` is (--quiet, --silent); ``documents`` are outputs that are not tables (JSON,
    PNG); ``storage_option`` the command's ``--storage-option`` pairs. Messages name the flags
    as the user typed them on the command line.
    """
    io.check_format(fmt)  # fail before any work, not at the final write
    named_outputs, named_inputs = named_paths([o for o in outputs if o], ACTIVE.argv)
    quiet, silent = levels
    reporter = Reporter(quiet=quiet, silent=silent)
    ACTIVE.reporter = reporter
    # What a run that is gone left in these folders is cleaned up first (and a folder it
    # moved aside is put back) so that the checks below see the outputs as they should be.
    from pricelab_cli.scratch import sweep

    local = [p for p in (*named_outputs.values(), *named_inputs.values(), *documents) if p and io.is_local(p)]
    for restored in sweep([Path(p).parent for p in local]):
        reporter.warn(restored)
    # --storage-option values reach the checks too: an s3:// output is probed before any work.
    storage = storage_pairs(storage_option)
    io.check_outputs(
        named_outputs, named_inputs, documents=[d for d in documents if d], fmt=fmt, storage_options=storage
    )
    return Run(reporter, seed, fmt, tuple(o for o in outputs if o), storage)


@contextlib.contextmanager
def engine_for(run: Run, name: str | None, jobs: int = 0) -> Iterator:
    """The engine a command's partition tasks run on (``--engine``, else ``PRICELAB_ENGINE``),
    with its progress shown stage by stage (each named, with its size before it starts); on a
    cluster, says where the work ran when it is done."""
    from pricelab_cli.engine import make_engine

    with run.reporter.stages() as counter:
        # The reporter's stage bar has the counter's add() and done(); the console does not
        # import the engines, so it is not a TaskCounter subclass.
        engine = make_engine(name, jobs, cast("TaskCounter", counter))
        try:
            yield engine
            summary = engine.summary()
        finally:
            engine.close()
    if summary:
        run.reporter.say(f"engine: {summary}")


def flag_values(argv: list[str]) -> list[tuple[str, str]]:
    """(flag, value) pairs of a command line: ``--flag value`` and ``--flag=value``."""
    pairs: list[tuple[str, str]] = []
    for i, arg in enumerate(argv):
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            pairs.append((flag, value))
        elif arg.startswith("-") and arg != io.STDIO and i + 1 < len(argv):
            pairs.append((arg, argv[i + 1]))
    return pairs


def named_paths(outputs: list[str], argv: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(flag -> output path, flag -> input path), read off the command line."""
    pairs = flag_values(argv)
    named_in: dict[str, str] = {}
    for flag, value in pairs:
        if flag in INPUT_FLAGS:
            repeats = sum(1 for k in named_in if k == flag or k.startswith(f"{flag} #"))
            named_in[flag if not repeats else f"{flag} #{repeats + 1}"] = value
    named_out: dict[str, str] = {}
    remaining = list(outputs)
    for flag, value in pairs:
        if flag not in INPUT_FLAGS and value in remaining:
            named_out[flag if flag not in named_out else f"{flag} #2"] = value
            remaining.remove(value)
    for i, value in enumerate(remaining):
        named_out[f"output {i + 1}"] = value
    return named_out, named_in


@dataclasses.dataclass
class Active:
    reporter: Reporter | None = None
    argv: list[str] = dataclasses.field(default_factory=list)


ACTIVE = Active()


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    reporter = ACTIVE.reporter or Reporter()
    if issubclass(category, PricelabWarning):
        reporter.warn(name_the_file(str(message), ACTIVE.argv))


# Core messages name a parameter as `name` (as a notebook user passes it); the command line
# shows the flag that sets it: --name-with-dashes, except for these.
PARAMETER_FLAGS = {
    "n_bootstrap": "--bootstrap",
    "outcomes": "--outcome",
    "arms": "--design",
    "storage_options": "--storage-option",
    "fill_zeros=False": "--no-fill-zeros",
}


def flag_for(parameter: str) -> str:
    """The flag that sets a core parameter: --name-with-dashes, except for PARAMETER_FLAGS."""
    return PARAMETER_FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def as_flags(message: str, parameters: tuple[str, ...] | None = None) -> str:
    """A core message in the command line's words: each `parameter` it names becomes its flag."""
    for parameter in dict.fromkeys(concerns(message)[0] if parameters is None else parameters):
        message = message.replace(f"`{parameter}`", flag_for(parameter))
    return message


def name_the_file(problem: str | PricelabError, argv: list[str]) -> str:
    """A core error or warning as the command line shows it: the parameters it concerns become
    flags (``as_flags``), and the table it concerns, named by its role (``edges: ...``),
    becomes the path the user gave to its flag (``--edges my_edges.csv``)."""
    message = str(problem)
    if isinstance(problem, PricelabError):
        parameters, table = problem.parameters, problem.table
    else:
        parameters, table = concerns(message)
    message = as_flags(message, parameters)
    if table is None or not message.startswith(f"{table}: "):
        return message
    for given, value in flag_values(argv):
        if given == f"--{table}":
            shown = "standard input" if value == io.STDIO else value
            return f"{shown}: {message[len(table) + 2 :]}"
    return message
