"""The `pricelab` command line: parse, read, call one core function, write, report.

No statistics live here. Errors raised by the core are mapped to exit codes once, in
``main``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import enum
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich import box
from rich.table import Table

import pricelab_cli
from pricelab_cli import stopping
from pricelab_cli._lazy import lazy
from pricelab_cli.console import Reporter, error
from pricelab_cli.design import Design, design_from_dict, make_design, salt_from_seed
from pricelab_cli.errors import PricelabError, PricelabWarning, UsageError

if TYPE_CHECKING:  # annotations only: the module loads polars
    import pricelab_cli.assign as assign_module

# Loaded when a command first needs them: help, --version and `design` never do.
pl = lazy("polars")
io = lazy("pricelab_cli.io")

app = typer.Typer(
    name="pricelab",
    help="Design, assign and analyse price experiments on a product catalog.\n\n"
    "Example: pricelab design random-days --start 2026-03-02 --end 2026-03-29 -o design.json",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: text in brackets stays as written (rich markup would eat "[...]"), flags
    # show as flags and choices as choices.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# ------------------------------------------------------------------ shared option types


def _date_flag(value: str | None) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date in YYYY-MM-DD form.") from None


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only warnings and errors on stderr.")]
Silent = Annotated[bool, typer.Option("--silent", help="Print nothing on stderr but errors.")]
Verbose = Annotated[bool, typer.Option("--verbose", help="Show a Python traceback when a run fails.")]
Format = Annotated[
    Optional[str],
    typer.Option("--format", help="Format written to stdout (-o -): csv or parquet. Files follow their extension; stdin is recognised.", show_default="csv"),
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; same inputs and seed give identical output bytes.")]
# Commands with nothing random accept --seed (every command does, so a Makefile can pass it to
# all) and record it, but do not offer it in their help.
UnusedSeed = Annotated[int, typer.Option("--seed", hidden=True, help="Recorded only: nothing here is random.")]
InputPath = Annotated[
    str,
    typer.Option(
        help="Input table: a file (.csv, .csv.gz, .tsv, .parquet), - for stdin, a folder or 'pattern/*.parquet' "
        "of Parquet files (date=.../ partitions included), or s3://bucket/prefix/."
    ),
]
OptionalInput = Annotated[Optional[str], typer.Option(help="Optional input table (file, -, folder, pattern or s3://).")]
StorageOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--storage-option",
        metavar="KEY=VALUE",
        help="Object-store setting for s3:// paths, repeatable (e.g. aws_region=eu-west-1); "
        "the rest comes from the AWS_* environment variables.",
    ),
]
Output = Annotated[str, typer.Option("--output", "-o", help="Output file (format from extension) or - for stdout.")]


def _date_option(flag: str, help_text: str, default: str | None = None):
    return typer.Option(flag, parser=_date_flag, metavar="YYYY-MM-DD", help=help_text, show_default=default or False)


def _storage(pairs: list[str] | None) -> dict[str, str] | None:
    """--storage-option pairs merged over the AWS_* environment (None when none given: the
    environment's settings are then taken where an s3:// path is read)."""
    if not pairs:
        return None
    from pricelab_cli import storage

    return storage.storage_options(pairs)


UnitCol = Annotated[str, typer.Option("--unit-col", help="Column holding the product id.")]
TimeCol = Annotated[str, typer.Option("--time-col", help="Column holding the date.")]
ClusterCol = Annotated[str, typer.Option("--cluster-col", help="Column holding the cluster id.")]
EventCol = Annotated[str, typer.Option("--event-col", help="Column holding the event date.")]


EngineOption = Annotated[
    Optional[str],
    typer.Option(
        "--engine",
        help="Where the partition tasks run: local (this machine) or ray (the Ray cluster at RAY_ADDRESS).",
        metavar="local|ray",
        show_default="$PRICELAB_ENGINE, else local",
    ),
]


class DesignKind(str, enum.Enum):
    time_bound = "time-bound"
    triggered = "triggered"
    random_days = "random-days"
    crossover = "crossover"


# ------------------------------------------------------------------ running one command


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

    def meta(self) -> dict:
        return io.provenance(pricelab_cli.__version__, ["pricelab", *sys.argv[1:]], self.seed, self.outputs)

    def write(
        self, table: pl.DataFrame | Iterable[pl.DataFrame], path: str, *, partition_by: str = "date",
        extra: dict | None = None,
    ) -> None:
        """Write a table (or its pieces, in order); a folder output is partitioned by ``partition_by``.
        ``extra`` adds facts about the table to its provenance record."""
        io.write_table(
            table, path, fmt=self.fmt, meta={**self.meta(), **(extra or {})}, partition_by=partition_by,
            storage_options=self.storage_options,
        )


# Flags that name input files (tables or JSON), for the output-path checks.
_INPUT_FLAGS = ("--sales", "--assignment", "--products", "--features", "--edges", "--history", "--clusters",
                "--events", "--pairs", "--design")


def _run(
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
    named_outputs, named_inputs = _named_paths([o for o in outputs if o], _ACTIVE.argv)
    quiet, silent = levels
    reporter = Reporter(quiet=quiet, silent=silent)
    _ACTIVE.reporter = reporter
    # What a run that is gone left in these folders is cleaned up first (and a folder it
    # moved aside is put back) so that the checks below see the outputs as they should be.
    from pricelab_cli.scratch import sweep

    local = [p for p in (*named_outputs.values(), *named_inputs.values(), *documents) if p and io.is_local(p)]
    for restored in sweep([Path(p).parent for p in local]):
        reporter.warn(restored)
    # --storage-option values reach the checks too: an s3:// output is probed before any work.
    storage = _storage(storage_option)
    io.check_outputs(
        named_outputs, named_inputs, documents=[d for d in documents if d], fmt=fmt, storage_options=storage
    )
    return Run(reporter, seed, fmt, tuple(o for o in outputs if o), storage)


@contextlib.contextmanager
def _engine(run: Run, name: str | None, jobs: int = 0) -> Iterator:
    """The engine a command's partition tasks run on (``--engine``, else ``PRICELAB_ENGINE``),
    with its progress shown stage by stage (each named, with its size before it starts); on a
    cluster, says where the work ran when it is done."""
    from pricelab_cli.engine import make_engine

    with run.reporter.stages() as counter:
        engine = make_engine(name, jobs, counter)
        try:
            yield engine
            summary = engine.summary()
        finally:
            engine.close()
    if summary:
        run.reporter.say(f"engine: {summary}")


def _flag_values(argv: list[str]) -> list[tuple[str, str]]:
    """(flag, value) pairs of a command line: ``--flag value`` and ``--flag=value``."""
    pairs: list[tuple[str, str]] = []
    for i, arg in enumerate(argv):
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            pairs.append((flag, value))
        elif arg.startswith("-") and arg != io.STDIO and i + 1 < len(argv):
            pairs.append((arg, argv[i + 1]))
    return pairs


def _named_paths(outputs: list[str], argv: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(flag -> output path, flag -> input path), read off the command line."""
    pairs = _flag_values(argv)
    named_in: dict[str, str] = {}
    for flag, value in pairs:
        if flag in _INPUT_FLAGS:
            repeats = sum(1 for k in named_in if k == flag or k.startswith(f"{flag} #"))
            named_in[flag if not repeats else f"{flag} #{repeats + 1}"] = value
    named_out: dict[str, str] = {}
    remaining = list(outputs)
    for flag, value in pairs:
        if flag not in _INPUT_FLAGS and value in remaining:
            named_out[flag if flag not in named_out else f"{flag} #2"] = value
            remaining.remove(value)
    for i, value in enumerate(remaining):
        named_out[f"output {i + 1}"] = value
    return named_out, named_in


@dataclasses.dataclass
class _Active:
    reporter: Reporter | None = None
    argv: list[str] = dataclasses.field(default_factory=list)


_ACTIVE = _Active()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    reporter = _ACTIVE.reporter or Reporter()
    if issubclass(category, PricelabWarning):
        reporter.warn(_name_the_file(str(message), _ACTIVE.argv))


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"pricelab {pricelab_cli.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Design, assign and analyse price experiments on a product catalog."""


# ------------------------------------------------------------------ commands


@app.command(
    epilog="Example: pricelab design crossover --start 2026-03-02 --phase-days 14 --blackout-days 7 -o design.json"
)
def design(
    kind: Annotated[DesignKind, typer.Argument(help="time-bound, triggered, random-days or crossover.")],
    output: Output = "-",
    start: Annotated[Optional[dt.date], _date_option("--start", "First experiment date.")] = None,
    end: Annotated[Optional[dt.date], _date_option("--end", "Last experiment date (time-bound, random-days).")] = None,
    block_days: Annotated[Optional[int], typer.Option(help="random-days: days per re-randomised block.", show_default="1")] = None,
    duration_days: Annotated[Optional[int], typer.Option(help="triggered: window length from each event.")] = None,
    phase_days: Annotated[Optional[int], typer.Option(help="crossover: days per phase.")] = None,
    blackout_days: Annotated[Optional[int], typer.Option(help="crossover: blackout days opening each phase.", show_default="0")] = None,
    phases: Annotated[Optional[int], typer.Option(help="crossover: number of phases.", show_default="2")] = None,
    treat_share: Annotated[float, typer.Option(help="Share of randomisation units treated.")] = 0.5,
    salt: Annotated[
        Optional[str],
        typer.Option(help="Hash salt.", show_default="hash of --seed, kind, --name and dates, else random"),
    ] = None,
    name: Annotated[Optional[str], typer.Option(help="Name shown in reports (and part of a seeded salt).")] = None,
    description: Annotated[
        Optional[str], typer.Option(help='What the experiment changes, for the report (e.g. "10% price cut").')
    ] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Draw the product x day grid to this PNG.")] = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Annotated[
        Optional[int], typer.Option("--seed", help="Derive the salt from this seed with the kind, --name and dates.")
    ] = None,
) -> None:
    """Write an experiment design (JSON spec) for the assign step."""
    run = _run((quiet, silent), seed, fmt, output, str(plot) if plot else None, documents=(output, str(plot) if plot else None))
    kind_name = kind.value
    _reject_flags_for_kind(
        kind_name,
        {
            "--end": (end, ("time-bound", "random-days")),
            "--block-days": (block_days, ("random-days",)),
            "--duration-days": (duration_days, ("triggered",)),
            "--phase-days": (phase_days, ("crossover",)),
            "--blackout-days": (blackout_days, ("crossover",)),
            "--phases": (phases, ("crossover",)),
            "--start": (start, ("time-bound", "random-days", "crossover")),
        },
    )
    spec = make_design(
        kind_name,
        salt=salt if salt is not None else "pending",
        salt_from="given" if salt is not None else "seed" if seed is not None else "random",
        description=description,
        treat_share=treat_share,
        name=name,
        start=start,
        end=end,
        block_days=1 if block_days is None else block_days,
        duration_days=duration_days,
        phase_days=phase_days,
        blackout_days=0 if blackout_days is None else blackout_days,
        phases=2 if phases is None else phases,
    )
    if salt is None:
        # The experiment's identity is known only now (a crossover's end follows from its phases).
        spec = dataclasses.replace(spec, salt=salt_from_seed(seed, spec))
    if plot is not None:
        from pricelab_cli import plots

        plots.design_grid(spec, str(plot))
    io.write_json({**spec.to_dict(), "provenance": run.meta()}, output)
    span = f"{spec.start} to {spec.end}" if spec.start else f"{spec.duration_days} days from each event"
    run.reporter.say(f"{spec.label}: {span}, treat share {spec.treat_share}, salt {spec.salt}")


def _reject_flags_for_kind(kind: str, flags: dict[str, tuple[object, tuple[str, ...]]]) -> None:
    for flag, (value, kinds) in flags.items():
        if value is not None and kind not in kinds:
            raise UsageError(f"{flag} does not apply to a {kind} design (it is for: {', '.join(kinds)}).")


@app.command(
    epilog="Example: pricelab assign --design design.json --products products.csv -o assignment.parquet"
)
def assign(
    design_path: Annotated[str, typer.Option("--design", help="Design JSON written by `pricelab design`.")],
    products: InputPath,
    output: Output = "-",
    clusters: Annotated[Optional[str], typer.Option(help="product_id, cluster_id: assign whole clusters.")] = None,
    events: Annotated[Optional[str], typer.Option(help="product_id, event_date: windows of a triggered design.")] = None,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    cluster_col: ClusterCol = "cluster_id",
    event_col: EventCol = "event_date",
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: UnusedSeed = 0,
) -> None:
    """Expand a design to one row per product and experiment date (hash-based, stable)."""
    run = _run((quiet, silent), seed, fmt, output, storage_option=storage_option)
    spec = design_from_dict(io.read_json(design_path, storage_options=run.storage_options), source=design_path)
    ids = {unit_col: "product_id"}
    # Assignment hashes product ids only: the catalog's other columns are never read.
    product_table = run.read(products, required=["product_id"], rename=ids, unique=["product_id"], columns=["product_id"])
    cluster_table = (
        run.read(
            clusters,
            required=["product_id", "cluster_id"],
            rename={**ids, cluster_col: "cluster_id"},
        )
        if clusters
        else None
    )
    event_table = (
        run.read(events, required=["product_id", "event_date"], rename={**ids, event_col: "event_date"}, dates=["event_date"])
        if events
        else None
    )
    if spec.kind != "triggered" and event_table is not None:
        run.reporter.warn(f"--events is used by triggered designs only; {spec.kind} ignores it.")
    if spec.kind == "triggered" and spec.salt_from == "seed":
        run.reporter.warn(
            f"{design_path}: the salt was derived from --seed, the kind, the name and the window length; the "
            "events (which set this experiment's dates) are not part of it, so another triggered experiment with "
            "the same seed and name treats the same products. Give each experiment its own --name or --salt."
        )
    from pricelab_cli.assign import BalanceTally, plan_assignment

    plan = plan_assignment(spec, product_table, clusters=cluster_table, events=event_table)
    # The rows are made and written in pieces, never all held at once: a date at a time for
    # a folder partitioned by date, else whole products at a time (the file's row order).
    pieces = plan.by_date() if io.is_folder_output(output) else plan.by_products()
    tally = BalanceTally()
    renamed = (_user_names(p, unit_col=unit_col, time_col=time_col, cluster_col=cluster_col) for p in tally.count(pieces))
    run.write(renamed, output, partition_by=time_col)
    _report_balance(run.reporter, plan.balance(tally), spec)


def _user_names(df, *, unit_col="product_id", time_col="date", cluster_col="cluster_id"):
    mapping = {"product_id": unit_col, "date": time_col, "cluster_id": cluster_col}
    return df.rename({ours: user for ours, user in mapping.items() if ours in df.columns and ours != user})


def _report_balance(reporter: Reporter, report: "assign_module.BalanceReport", spec: Design) -> None:
    reporter.say(
        f"{spec.label}: {report.n_units} randomisation units, treated share {report.treated_share:.3f} "
        f"(design {spec.treat_share}); SRM chi-square {report.srm_chi2:.2f}, p = {report.srm_p_value:.3g}"
    )
    daily = report.daily
    table = Table(title="treated share per day (blackout days excluded)", title_justify="left")
    for col in ("date", "products", "treated share"):
        table.add_column(col, justify="right")
    shown = daily if daily.height <= 31 else daily.head(14).vstack(daily.tail(14))
    for row in shown.iter_rows():
        table.add_row(str(row[0]), f"{row[1]:,}", f"{row[2]:.3f}")
    if daily.height > 31:
        table.caption = (
            f"{daily.height} days; showing first and last 14. Range "
            f"{daily['treated_share'].min():.3f} to {daily['treated_share'].max():.3f}."
        )
    reporter.table(table)
    if report.srm_suspect:
        reporter.warn(
            f"sample ratio mismatch: {report.n_treated_draws} of {report.n_draws} randomisation draws "
            f"treated, implausible for a treat share of {spec.treat_share} (p = {report.srm_p_value:.2g}). "
            "Check the products and clusters files for duplicates or filtering."
        )


# ------------------------------------------------------------------ analysis commands


class OutlierRule(str, enum.Enum):
    robust = "robust"
    quantile = "quantile"


class HpteMethod(str, enum.Enum):
    hpte = "hpte"
    did = "did"


@app.command(
    epilog="Example: pricelab hpte --sales sales.parquet --assignment assignment.parquet "
    "--outcome units --outcome revenue --features products.csv -o effects.csv --cate-out cate.parquet"
)
def hpte(
    sales: InputPath,
    assignment: InputPath,
    output: Output = "-",
    outcome: Annotated[
        Optional[list[str]], typer.Option("--outcome", metavar="COLUMN", help="Outcome column; repeat for several.", show_default="units")
    ] = None,
    features: Annotated[
        Optional[str], typer.Option(help="Product features for the causal forest (product_id + columns).")
    ] = None,
    method: Annotated[
        HpteMethod, typer.Option(help="hpte, or did: classic mean-after minus mean-before difference in differences.")
    ] = HpteMethod.hpte,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap draws for the SE (0: none).")] = 500,
    outlier_rule: Annotated[
        OutlierRule,
        typer.Option(
            help="robust: robust residuals and screens that adapt to the share of wild products; "
            "quantile: the method source's rule (drop a tail share C / n_products)."
        ),
    ] = OutlierRule.robust,
    outlier_c: Annotated[
        Optional[float],
        typer.Option(min=0.0, help="With --outlier-rule quantile: drop about C products (tail share C / n).", show_default="4"),
    ] = None,
    no_outlier_filter: Annotated[
        bool, typer.Option("--no-outlier-filter", help="Keep every product (residuals are still winsorised).")
    ] = False,
    outliers_out: Annotated[
        Optional[str],
        typer.Option("--outliers-out", help="Write every dropped, winsorised or stock-out product with the reason here."),
    ] = None,
    no_detrend: Annotated[
        bool, typer.Option("--no-detrend", help="Fit each product's level only (no trend or weekday terms).")
    ] = False,
    no_fill_zeros: Annotated[
        bool,
        typer.Option(
            "--no-fill-zeros",
            help="Leave a product-date without a sales row absent (unknown) instead of reading it as zero sales.",
        ),
    ] = False,
    trees: Annotated[int, typer.Option(min=1, help="Trees in the causal forest.")] = 100,
    jobs: Annotated[
        int, typer.Option(help="Worker processes for the per-partition steps and threads for the forest (0: all cores).", show_default="all cores")
    ] = 0,
    engine: EngineOption = None,
    partition_rows: Annotated[
        Optional[int],
        typer.Option(
            "--partition-rows", min=1000,
            help="Sales rows per partition of products, one task's share of the work; the result does not "
            "depend on it.",
            show_default="4,000,000",
        ),
    ] = None,
    cate_out: Annotated[
        Optional[str], typer.Option("--cate-out", help="Write product_id, cate (per-product effect) here.")
    ] = None,
    plot: Annotated[
        Optional[Path], typer.Option(help="Draw the treated-minus-control path of detrended outcomes to this PNG.")
    ] = None,
    placebo_out: Annotated[
        Optional[str],
        typer.Option(
            "--placebo-out",
            help="Also run the estimator on a fake experiment inside the history (the last stretch as long as the "
            "experiment, same arms) and write its effects here; warns when its p-value is below 0.05.",
        ),
    ] = None,
    carryover_out: Annotated[
        Optional[str],
        typer.Option(
            "--carryover-out",
            help="Switchback designs: write the carryover check here (first analysed day after a switch against "
            "the later days of the same arm, per outcome and arm, with the blackout that would remove it).",
        ),
    ] = None,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    cluster_col: ClusterCol = "cluster_id",
    price_col: Annotated[str, typer.Option("--price-col", help="Price column of the sales (a forest feature).")] = "price",
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Estimate the average price effect per product per day (heterogeneous panel treatment effect)."""
    from pricelab_cli.hpte import estimate_hpte

    run = _run(
        (quiet, silent), seed, fmt, output, cate_out, str(plot) if plot else None, outliers_out, placebo_out, carryover_out,
        documents=(str(plot) if plot else None,), storage_option=storage_option,
    )
    if outlier_c is not None and outlier_rule is OutlierRule.robust:
        raise UsageError("--outlier-c sets the quantile rule's tail share; give it with --outlier-rule quantile.")
    outcomes = list(dict.fromkeys(outcome or ["units"]))
    for name in outcomes:
        if name in ("product_id", "date", unit_col, time_col):
            raise UsageError(f"--outcome {name!r} names the product or date column; give a measure such as units.")
    if cate_out and method is HpteMethod.did:
        raise UsageError("--cate-out needs the causal forest; it does not apply to --method did.")
    ids = {unit_col: "product_id"}
    # Repeated (product_id, date) rows are checked by the core on integer keys, several
    # times faster than a generic check on a catalog's panel; its message names the file.
    # Scanned, not read: the core reads it while planning the partitions and lets it go, so
    # a catalog's assignment (hundreds of millions of rows) is not held through the run.
    assignment_table = io.scan_table(
        assignment,
        required=list(io.ASSIGNMENT_COLUMNS),
        rename={**ids, time_col: "date", cluster_col: "cluster_id"},
        dates=["date"],
        storage_options=run.storage_options,
    )
    present = assignment_table.collect_schema()
    assignment_table = assignment_table.select(
        [c for c in ("product_id", "date", "treated", "blackout", "cluster_id") if c in present]
    )
    # The sales are scanned, not read: the core streams them in batches, keeping only the
    # columns it uses and no date after the experiment's last (a Parquet dataset's later
    # partitions are not even opened), and lays them out in partitions of products.
    sales_table = io.scan_table(
        sales,
        required=["product_id", "date", *outcomes],
        rename={**ids, time_col: "date"},
        dates=["date"],
        storage_options=run.storage_options,
    )
    feature_table = run.read(features, required=["product_id"], rename=ids, unique=["product_id"]) if features else None
    if feature_table is not None and method is HpteMethod.did:
        run.reporter.warn("--features is used by the causal forest only; --method did ignores it.")
    options = dict(
        outcomes=outcomes,
        features=feature_table,
        method=method.value,
        n_bootstrap=bootstrap,
        seed=seed,
        outlier_rule=outlier_rule.value,
        outlier_filter=not no_outlier_filter,
        detrend=not no_detrend,
        fill_zeros=not no_fill_zeros,
        n_estimators=trees,
        price_col=price_col,
        labels={"sales": _label(sales), "assignment": _label(assignment), "features": _label(features)},
        n_jobs=jobs,
        rows_per_partition=partition_rows,
        **({} if outlier_c is None else {"outlier_c": outlier_c}),
    )
    # The engine's stages are the progress: rows read, partitions, detrending, forest, draws.
    with _engine(run, engine, jobs) as chosen:
        result = estimate_hpte(sales_table, assignment_table, effect_paths=plot is not None, engine=chosen, **options)
        if placebo_out:
            from pricelab_cli.hpte.placebo import estimate_placebo

            placebo, window = estimate_placebo(sales_table, assignment_table, engine=chosen, **options)
        if carryover_out:
            carryover = _carryover_table(sales_table, assignment_table, outcomes, chosen)
    run.write(result.effects, output, extra={"n_bootstrap": bootstrap})
    if cate_out:
        # The forest's split shares travel with the CATEs (the report's "effect by feature").
        splits = {name: est.forest_splits_ for name, est in result.estimators.items()}
        run.write(_user_names(result.cate, unit_col=unit_col), cate_out, extra={"forest_splits": splits})
    if outliers_out:
        run.write(_user_names(result.outliers, unit_col=unit_col), outliers_out)
    if plot is not None:
        from pricelab_cli.hpte.plot import effect_path_plot

        effect_path_plot(result.paths, result.effects, str(plot), spacing_days=result.spacing_days)
    if placebo_out:
        from pricelab_cli.hpte.placebo import placebo_warnings

        run.write(placebo.effects, placebo_out)
    if carryover_out:
        run.write(carryover, carryover_out)
    _report_hpte(run.reporter, result, method.value)
    if placebo_out:
        run.reporter.say(
            f"placebo: fake experiment {window.fake_start} to {window.fake_end} ({window.periods} periods before "
            f"the start on {window.real_start}), written to {placebo_out}"
        )
        for message in placebo_warnings(placebo.effects, window):
            run.reporter.warn(message)


def _carryover_table(sales, assignment, outcomes: list[str], engine) -> pl.DataFrame:
    """``outcome`` plus the carryover check's columns, for each outcome (``hpte --carryover-out``)."""
    from pricelab_cli.diagnostics import carryover_check, detrended_views

    grid = assignment.collect() if isinstance(assignment, pl.LazyFrame) else assignment
    with warnings.catch_warnings():
        # The estimate has already said what it had to about these rows.
        warnings.simplefilter("ignore")
        _, residuals = detrended_views(sales, grid, outcomes, paths=False, engine=engine)
    tables = []
    for name in outcomes:
        check = carryover_check(residuals[name], grid)
        tables.append(check.table.select(pl.lit(name).alias("outcome"), pl.all()))
        if check.table["n_products"].max() == 0:
            _ACTIVE.reporter.warn(f"carryover: no product of the assignment switches arm, so {name} has no carryover to check.")
    return pl.concat(tables)


def _label(path: str | None) -> str:
    return "standard input" if path == io.STDIO else str(path)


def _report_hpte(reporter: Reporter, result, method: str) -> None:
    unit = result.unit_label
    for name, est in result.estimators.items():
        models = ", ".join(f"{n:,} {model}" for model, n in est.baseline_models_.items() if n)
        reporter.say(
            f"{name}: {est.n_products_:,} products in the estimate, {est.n_outliers_:,} outliers dropped; "
            f"baselines {models}; {est.arm_units_['treated']:,} treated and {est.arm_units_['control']:,} "
            f"control {unit}s resampled"
        )
        audit = est.outliers_
        if audit.height:
            counts = audit.group_by("action", "reason", maintain_order=True).agg(
                pl.len().alias("products"), pl.col("days").sum().alias("days")
            )
            parts = [
                f"{r['products']:,} product(s) {r['action']} ({r['reason']}"
                + (f"; {r['days']:,} product-days" if r["days"] else "")
                + ")"
                for r in counts.iter_rows(named=True)
            ]
            reporter.say(f"{name}: " + "; ".join(parts))
    if result.n_ignored_sales_products:
        reporter.say(f"{result.n_ignored_sales_products:,} product(s) of the sales table are not in the assignment (ignored).")
    per = "day" if result.spacing_days == 1 else f"period ({result.spacing_days} days)"
    table = Table(title=f"{method}: effect per product per {per}", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("outcome", "estimate", "se", "95% interval", "p", "lift (95% interval)", "MDE"):
        table.add_column(col, justify="left" if col == "outcome" else "right", no_wrap=True)

    def num(v) -> str:
        return "-" if v is None or v != v else f"{v:.4g}"

    from pricelab_cli.diagnostics import minimum_detectable_effect

    for row in result.effects.iter_rows(named=True):
        table.add_row(
            row["outcome"],
            num(row["estimate"]),
            num(row["se"]),
            f"{num(row['ci_low'])} to {num(row['ci_high'])}",
            num(row["p_value"]),
            _lift_text(row),
            num(minimum_detectable_effect(row["se"]) if row["se"] is not None else None),
        )
    table.caption = "MDE: the smallest effect this experiment detects 80% of the time (5% two-sided test), 2.8 SEs."
    table.caption_justify = "left"
    reporter.table(table)


def _lift_text(row: dict) -> str:
    """``+4.21% (+1.02% to +7.40%)``: the lift and its interval, as percentages."""
    if row["lift"] is None:
        return "-"
    text = f"{100 * row['lift']:+.2f}%"
    if row.get("lift_low") is not None and row.get("lift_high") is not None:
        text += f" ({100 * row['lift_low']:+.2f}% to {100 * row['lift_high']:+.2f}%)"
    return text


# ------------------------------------------------------------------ spillover: graph, cluster, ipw


@app.command(
    "spillover-graph",
    epilog="Example: pricelab spillover-graph --sales history.parquet --products products.csv "
    "--group-col category --fdr 0.05 -o edges.parquet",
)
def spillover_graph_command(
    sales: Annotated[str, typer.Option(help="Daily history: product_id, date, outcome and price (a year is typical).")],
    output: Output = "-",
    products: Annotated[
        Optional[str], typer.Option(help="product_id and --group-col: pairs inside a group are candidates.")
    ] = None,
    pairs: Annotated[Optional[str], typer.Option(help="src, dst: the candidate pairs, instead of groups.")] = None,
    group_col: Annotated[str, typer.Option("--group-col", help="Products sharing a value are candidate pairs.")] = "category",
    outcome: Annotated[str, typer.Option(help="Demand column (log(1 + demand) is regressed).")] = "units",
    price_col: Annotated[str, typer.Option("--price-col", help="Price column (must be positive).")] = "price",
    fdr: Annotated[float, typer.Option(help="Benjamini-Hochberg false-discovery rate over all tested pairs.")] = 0.05,
    keep_complements: Annotated[
        bool, typer.Option("--keep-complements", help="Keep significant negative cross-elasticities too.")
    ] = False,
    hac_lags: Annotated[int, typer.Option(min=0, help="Days of residual autocorrelation the SEs allow for.")] = 14,
    since: Annotated[
        Optional[dt.date], _date_option("--since", "Use only history on or after this date (e.g. the last year).")
    ] = None,
    all_pairs: Annotated[
        Optional[str], typer.Option("--all-pairs", help="Also write every candidate pair: estimate, SE, q-value, status.")
    ] = None,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    engine: EngineOption = None,
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: UnusedSeed = 0,
) -> None:
    """Find substitutes: does the price of src move the demand of dst? (cross-price elasticities, FDR cut)."""
    from pricelab_cli.errors import EmptyTableError
    from pricelab_cli.spillover.graph import spillover_graph

    run = _run((quiet, silent), seed, fmt, output, all_pairs, storage_option=storage_option)
    if products is None and pairs is None:
        raise UsageError("give --products (with --group-col) or --pairs to say which pairs to test.")
    ids = {unit_col: "product_id"}
    # Only the columns the regressions use, and with --since no earlier row (a
    # date-partitioned folder's earlier partitions are not even opened).
    sales_table = run.read(
        sales,
        required=["product_id", "date", outcome, price_col],
        rename={**ids, time_col: "date"},
        dates=["date"],
        unique=["product_id", "date"],
        columns=["product_id", "date", outcome, price_col],
        where=None if since is None else pl.col("date") >= since,
    )
    if since is not None and sales_table.height == 0:
        raise EmptyTableError(f"{sales}: no row is dated on or after --since {since}; give an earlier date.")
    product_table = (
        run.read(
            products, required=["product_id"] if pairs else ["product_id", group_col], rename=ids, unique=["product_id"],
            columns=["product_id", group_col],
        )
        if products
        else None
    )
    pair_table = run.read(pairs, required=["src", "dst"]) if pairs else None
    with _engine(run, engine, 1) as chosen:
        graph = spillover_graph(
            sales_table,
            product_table,
            group_col=group_col,
            pairs=pair_table,
            outcome=outcome,
            price_col=price_col,
            fdr=fdr,
            keep_complements=keep_complements,
            hac_lags=hac_lags,
            engine=chosen,
        )
    run.write(graph.edges, output)
    if all_pairs:
        run.write(graph.pairs, all_pairs)
    _report_spillover_graph(run.reporter, graph, keep_complements)


def _report_spillover_graph(reporter: Reporter, graph, keep_complements: bool) -> None:
    pairs = graph.pairs
    untestable = graph.untestable
    n_substitutes = int((graph.edges["weight"] > 0).sum())
    kept = f"{graph.edges.height:,} edges kept at FDR {graph.fdr:g} ({n_substitutes:,} substitutes"
    kept += f", {graph.edges.height - n_substitutes:,} complements)" if keep_complements else ")"
    reporter.say(
        f"{pairs.height:,} candidate pairs in {graph.n_blocks:,} blocks: {graph.n_tested:,} tested, "
        f"{pairs.height - graph.n_tested:,} untestable; {kept}"
    )
    if untestable.height:
        table = Table(title="untestable pairs (not in the FDR)", title_justify="left")
        for col in ("reason", "pairs", "e.g."):
            table.add_column(col, justify="right" if col == "pairs" else "left")
        for row in untestable.iter_rows(named=True):
            table.add_row(row["status"], f"{row['n_pairs']:,}", row["example"])
        reporter.table(table)


@app.command(
    epilog="Example: pricelab cluster --edges edges.parquet --products products.csv --max-size 50 --seed 0 -o clusters.parquet"
)
def cluster(
    edges: Annotated[str, typer.Option(help="Substitutes graph: src, dst, weight (as spillover-graph writes it).")],
    output: Output = "-",
    products: Annotated[
        Optional[str], typer.Option(help="product_id of every product; those on no edge get a cluster of their own.")
    ] = None,
    max_size: Annotated[Optional[int], typer.Option("--max-size", min=1, help="Hard bound on products per cluster.")] = None,
    resolution: Annotated[
        float, typer.Option(help="Modularity resolution: above 1 gives more, smaller clusters.")
    ] = 1.0,
    plot: Annotated[Optional[Path], typer.Option(help="Draw the distribution of cluster sizes to this PNG.")] = None,
    unit_col: UnitCol = "product_id",
    cluster_col: ClusterCol = "cluster_id",
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Partition the substitutes graph into clusters (Leiden) that assign --clusters randomises together."""
    from pricelab_cli.spillover.cluster import cluster_size_plot, leiden_clusters

    run = _run(
        (quiet, silent), seed, fmt, output, str(plot) if plot else None, documents=(str(plot) if plot else None,),
        storage_option=storage_option,
    )
    edge_table = run.read(edges, required=["src", "dst", "weight"], allow_empty=products is not None)
    product_table = (
        run.read(products, required=["product_id"], rename={unit_col: "product_id"}, unique=["product_id"], columns=["product_id"])
        if products
        else None
    )
    with run.reporter.progress("leiden: clusters, then oversized ones split", 2) as advance:
        result = leiden_clusters(
            edge_table, product_table, max_size=max_size, resolution=resolution, seed=seed, progress=advance
        )
    run.write(_user_names(result.clusters, unit_col=unit_col, cluster_col=cluster_col), output)
    if plot is not None:
        cluster_size_plot(result, str(plot), max_size=max_size)
    _report_clusters(run.reporter, result, max_size)


def _report_clusters(reporter: Reporter, result, max_size: int | None) -> None:
    q = result.size_quantiles()
    reporter.say(
        f"{result.n_clusters:,} clusters of {int(result.sizes.sum()):,} products "
        f"({result.n_isolated:,} on no edge, each alone); size min {q[0.0]:.0f}, median {q[0.5]:g}, "
        f"90% {q[0.9]:g}, 99% {q[0.99]:g}, max {q[1.0]:.0f}"
    )
    if max_size is not None:
        note = f"{result.n_resplit:,} cluster(s) above --max-size {max_size} were re-split"
        if result.n_balanced:
            note += f" ({result.n_balanced:,} by a balanced cut)"
        reporter.say(note)
    reporter.say(
        f"edge weight cut: {result.cut_share:.1%} (spillover between clusters, which cluster randomisation does not contain)"
    )


@app.command(
    epilog="Example: pricelab ipw --sales sales.parquet --assignment assignment.parquet --edges edges.parquet "
    "--design design.json --products products.csv --outcome units -o spillover.csv"
)
def ipw(
    sales: Annotated[str, typer.Option(help="Sales with each product's history before the experiment.")],
    assignment: Annotated[str, typer.Option(help="The assignment written by `pricelab assign` from --design.")],
    edges: Annotated[str, typer.Option(help="Substitutes graph src, dst, weight: dst is exposed through src.")],
    design_path: Annotated[str, typer.Option("--design", help="The design JSON the assignment was drawn from.")],
    products: Annotated[str, typer.Option(help="The products table the assignment was made from.")],
    output: Output = "-",
    clusters: Annotated[
        Optional[str], typer.Option(help="product_id, cluster_id used by assign (else the assignment's cluster_id).")
    ] = None,
    outcome: Annotated[str, typer.Option(help="Outcome column of the sales.")] = "units",
    exposure_threshold: Annotated[
        float, typer.Option(help="Exposed when the treated share of incoming substitute weight exceeds this.")
    ] = 0.0,
    replays: Annotated[int, typer.Option(min=1, help="Replays of the design when probabilities are not exact.")] = 200,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap draws over randomisation units for the SE (20 or more).")] = 500,
    clip: Annotated[
        Optional[float], typer.Option(help="Raise exposure probabilities below this to it (weights at most 1/clip).")
    ] = None,
    outlier_rule: Annotated[
        OutlierRule, typer.Option(help="Residuals as hpte makes them: robust or quantile (least squares).")
    ] = OutlierRule.robust,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    cluster_col: ClusterCol = "cluster_id",
    engine: EngineOption = None,
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Direct and spillover effects by inverse-probability weighting, with exposure probabilities from the design."""
    from pricelab_cli.spillover.ipw import ipw_effects

    run = _run((quiet, silent), seed, fmt, output, storage_option=storage_option)
    spec = design_from_dict(io.read_json(design_path), source=design_path)
    ids = {unit_col: "product_id"}
    assignment_table = run.read(
        assignment,
        required=list(io.ASSIGNMENT_COLUMNS),
        rename={**ids, time_col: "date", cluster_col: "cluster_id"},
        dates=["date"],
        unique=["product_id", "date"],
    )
    # The outcome and nothing after the experiment's last date (never analysed).
    # Scanned, as for hpte: the detrending streams the sales into partitions of products,
    # reading only these columns and no date after the assignment's last.
    sales_table = io.scan_table(
        sales, required=["product_id", "date", outcome], rename={**ids, time_col: "date"}, dates=["date"],
        storage_options=run.storage_options,
    )
    edge_table = run.read(edges, required=["src", "dst", "weight"], allow_empty=True)
    product_table = run.read(products, required=["product_id"], rename=ids, unique=["product_id"], columns=["product_id"])
    cluster_table = (
        run.read(clusters, required=["product_id", "cluster_id"], rename={**ids, cluster_col: "cluster_id"}, unique=["product_id"])
        if clusters
        else None
    )
    with _engine(run, engine, 0) as chosen, \
            run.reporter.progress("exposure replays", replays if exposure_threshold > 0 else 0) as advance:
        result = ipw_effects(
            sales_table,
            assignment_table,
            edge_table,
            spec,
            product_table,
            clusters=cluster_table,
            outcome=outcome,
            exposure_threshold=exposure_threshold,
            replays=replays,
            bootstrap=bootstrap,
            clip=clip,
            outlier_rule=outlier_rule.value,
            seed=seed,
            progress=advance,
            engine=chosen,
        )
    run.write(result.effects, output)
    _report_ipw(run.reporter, result, outcome)


def _report_ipw(reporter: Reporter, result, outcome: str) -> None:
    exposure = result.exposure
    how = "exact" if exposure.method == "exact" else f"from {exposure.n_replays:,} replays of the design"
    counts = dict(exposure.cells.group_by("condition").len().iter_rows())
    names = ("neither", "spillover only", "treated only", "treated and exposed")
    shown = ", ".join(f"{counts.get(c, 0):,} {name}" for c, name in enumerate(names))
    reporter.say(f"exposure probabilities {how}; product-days: {shown}; {result.n_units:,} randomisation units")
    if result.left_out.height:
        summary = result.left_out.group_by("effect", "reason", maintain_order=True).agg(
            pl.len().alias("n"), pl.col("product_id").first().cast(pl.String).alias("example")
        )
        for row in summary.iter_rows(named=True):
            reporter.say(
                f"{row['effect']}: {row['n']:,} product(s) left out, e.g. {row['example']}: {row['reason']}"
            )
    table = Table(title=f"{outcome}: effect per product per day (Hajek IPW, 95% interval)", title_justify="left")
    for col in ("effect", "estimate", "se", "95% CI", "p", "product-days"):
        table.add_column(col, justify="left" if col == "effect" else "right")

    def num(v) -> str:
        return "-" if v is None else f"{v:.4g}"

    for row in result.effects.iter_rows(named=True):
        table.add_row(
            row["effect"], num(row["estimate"]), num(row["se"]), f"{num(row['ci_low'])} to {num(row['ci_high'])}",
            num(row["p_value"]), f"{row['n']:,}",
        )
    reporter.table(table)


# ------------------------------------------------------------------ power


@app.command(
    epilog="Example: pricelab power --history history.parquet --products products.csv --design tb.json "
    "--design rd.json --design co.json --effect 0.05 --reps 200 --outcome units -o power.csv"
)
def power(
    history: InputPath,
    products: InputPath,
    design_paths: Annotated[list[str], typer.Option("--design", metavar="PATH", help="A design JSON; repeat to compare designs.")],
    output: Output = "-",
    outcome: Annotated[str, typer.Option(help="Outcome column of the history.")] = "units",
    effect: Annotated[float, typer.Option(help="Relative effect injected on treated cells (0.05 = +5%).")] = 0.05,
    reps: Annotated[int, typer.Option(help="Monte Carlo repetitions per design.")] = 200,
    carryover_days: Annotated[float, typer.Option(help="Threat: the effect lingers, decaying over this many days.")] = 0.0,
    edges: Annotated[Optional[str], typer.Option(help="Substitute edges src,dst,weight (for --spillover).")] = None,
    spillover: Annotated[float, typer.Option(help="Threat: share of the effect leaking onto substitutes, opposite sign.")] = 0.0,
    clusters: Annotated[Optional[str], typer.Option(help="product_id,cluster_id: also run every design by cluster.")] = None,
    events: Annotated[Optional[str], typer.Option(help="product_id,event_date inside the history, for triggered designs.")] = None,
    interval_reps: Annotated[Optional[int], typer.Option(help="Repetitions that also bootstrap intervals.", show_default="all")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap draws in those repetitions.")] = 200,
    trees: Annotated[int, typer.Option(min=1, help="Causal-forest trees per estimate in the study.")] = 10,
    outlier_rule: Annotated[
        OutlierRule, typer.Option(help="hpte's outlier rule inside the study (robust or quantile, as in hpte).")
    ] = OutlierRule.robust,
    jobs: Annotated[int, typer.Option(help="Worker processes (0: all cores).", show_default="all cores")] = 0,
    engine: EngineOption = None,
    repetitions_out: Annotated[Optional[str], typer.Option(help="Also write every repetition's estimate here.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Draw SE and bias per design to this PNG.")] = None,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    cluster_col: ClusterCol = "cluster_id",
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Compare designs on your own history by Monte Carlo: bias, SE, RMSE, power, coverage, MDE."""
    from pricelab_cli.power import HpteEstimator, Threats, design_arms, power_study

    run = _run(
        (quiet, silent), seed, fmt, output, repetitions_out, str(plot) if plot else None,
        documents=(str(plot) if plot else None,), storage_option=storage_option,
    )
    ids = {unit_col: "product_id"}
    history_table = run.read(
        history, required=["product_id", "date", outcome], rename={**ids, time_col: "date"},
        dates=["date"], unique=["product_id", "date"],
    )
    product_table = run.read(products, required=["product_id"], rename=ids, unique=["product_id"])
    designs = [design_from_dict(io.read_json(p, storage_options=run.storage_options), source=p) for p in design_paths]
    cluster_table = (
        run.read(clusters, required=["product_id", "cluster_id"], rename={**ids, cluster_col: "cluster_id"}, unique=["product_id"])
        if clusters else None
    )
    edge_table = run.read(edges, required=["src", "dst", "weight"]) if edges else None
    event_table = (
        run.read(events, required=["product_id", "event_date"], rename=ids, dates=["event_date"]) if events else None
    )
    arms = design_arms(designs, cluster_table)
    with _engine(run, engine, jobs) as chosen:
        summary, repetitions = power_study(
            history_table,
            product_table,
            arms,
            estimator=HpteEstimator(
                features=product_table, n_bootstrap=bootstrap, n_estimators=trees, outlier_rule=outlier_rule.value
            ),
            outcome=outcome,
            effect=effect,
            reps=reps,
            threats=Threats(carryover_days=carryover_days, spillover=spillover),
            edges=edge_table,
            events=event_table,
            interval_reps=interval_reps,
            seed=seed,
            n_jobs=jobs,
            engine=chosen,
        )
    run.write(summary, output)
    if repetitions_out:
        run.write(repetitions, repetitions_out)
    if plot is not None:
        from pricelab_cli import plots

        plots.power_bars(summary, str(plot))
    table = Table(title=f"designs on this history: +{effect:.1%} injected, {reps} repetitions", title_justify="left")
    for col in ("design", "bias", "se", "rmse", "power", "coverage", "mde"):
        table.add_column(col, justify="right" if col != "design" else "left")
    for row in summary.iter_rows(named=True):
        cells = [row["design"]] + [
            "-" if row[c] is None else f"{row[c]:.4g}" for c in ("bias", "se", "rmse", "power", "coverage", "mde")
        ]
        table.add_row(*cells)
    run.reporter.table(table)



# ------------------------------------------------------------------ simulate

@app.command(
    epilog="Example: pricelab report --design design.json --assignment assignment.parquet --sales sales/ "
    "--effects effects.csv --cate cate.parquet --products products.csv --placebo placebo.csv -o report.html --markdown"
)
def report(
    design_path: Annotated[str, typer.Option("--design", help="The design JSON the assignment was drawn from.")],
    assignment: Annotated[str, typer.Option(help="The assignment written by `pricelab assign`.")],
    sales: Annotated[str, typer.Option(help="The sales the effects were estimated from (history and experiment).")],
    effects: Annotated[str, typer.Option(help="The effects output of `pricelab hpte`.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The HTML page to write (self-contained).")] = "report.html",
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Also write the readout as Markdown (<output>.md, PNGs in <output>_files/).")
    ] = False,
    cate: Annotated[Optional[str], typer.Option(help="The --cate-out output of hpte.")] = None,
    products: Annotated[
        Optional[str], typer.Option(help="Products table with features: balance and effect by feature.")
    ] = None,
    placebo: Annotated[Optional[str], typer.Option(help="The --placebo-out output of hpte.")] = None,
    spillover: Annotated[Optional[str], typer.Option(help="The output of `pricelab ipw`.")] = None,
    clusters: Annotated[Optional[str], typer.Option(help="The output of `pricelab cluster`.")] = None,
    power: Annotated[Optional[str], typer.Option(help="The output of `pricelab power`.")] = None,
    description: Annotated[
        Optional[str],
        typer.Option(help='What the experiment changed (e.g. "10% price cut").', show_default="the design's --description"),
    ] = None,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    cluster_col: ClusterCol = "cluster_id",
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: UnusedSeed = 0,
) -> None:
    """Write the experiment's readout: one self-contained HTML page (headline, design, effect path, heterogeneity, spillover, checks, provenance)."""
    from pricelab_cli import report as readout

    stem = output.rsplit(".", 1)[0]
    md_path, image_folder = (f"{stem}.md", f"{stem}_files") if markdown else (None, None)
    # Nothing in the report is random; --seed is recorded, as for every command.
    run = _run((quiet, silent), seed, fmt, output, md_path, documents=(output, md_path), storage_option=storage_option)
    if not output.endswith((".html", ".htm")):
        raise UsageError(f"-o {output}: the report is an HTML page; give a name ending in .html.")
    spec = design_from_dict(io.read_json(design_path, storage_options=run.storage_options), source=design_path)
    ids = {unit_col: "product_id"}
    assignment_table = run.read(
        assignment, required=list(io.ASSIGNMENT_COLUMNS), rename={**ids, time_col: "date", cluster_col: "cluster_id"},
        dates=["date"], unique=["product_id", "date"],
    )
    effect_table = run.read(effects, required=["outcome", "estimate", "se", "ci_low", "ci_high", "p_value", "lift"])
    outcomes = effect_table["outcome"].to_list()
    sales_table = io.scan_table(
        sales, required=["product_id", "date", *outcomes], rename={**ids, time_col: "date"}, dates=["date"],
        storage_options=run.storage_options,
    )
    optional = {
        "cate": run.read(cate, required=["product_id", "cate"], rename=ids) if cate else None,
        "products": run.read(products, required=["product_id"], rename=ids, unique=["product_id"]) if products else None,
        "placebo": run.read(placebo, required=["outcome", "estimate", "p_value"]) if placebo else None,
        "spillover": run.read(spillover, required=["effect", "estimate", "ci_low", "ci_high", "p_value", "n"])
        if spillover else None,
        "clusters": run.read(clusters, required=["product_id", "cluster_id"], rename={**ids, cluster_col: "cluster_id"})
        if clusters else None,
        "power": run.read(power, required=["design", "bias", "se", "power", "coverage"]) if power else None,
    }
    paths = {"design": design_path, "assignment": assignment, "sales": sales, "effects": effects, "cate": cate,
             "products": products, "placebo": placebo, "spillover": spillover, "clusters": clusters, "power": power}
    with run.reporter.progress("report: tables and plots", 1) as advance:
        result = readout.build_report(
            design=spec, assignment=assignment_table, sales=sales_table, effects=effect_table, paths=paths,
            command=run.meta()["command"], description=description, **optional,
        )
        advance(1)
    with io.atomic_path(output) as tmp:
        Path(tmp).write_text(readout.render_html(result), encoding="utf-8")
    if markdown:
        os.makedirs(image_folder, exist_ok=True)
        for picture in result.pictures.values():
            with io.atomic_path(os.path.join(image_folder, picture.name)) as tmp:
                Path(tmp).write_bytes(picture.data)
        with io.atomic_path(md_path) as tmp:
            Path(tmp).write_text(readout.render_markdown(result, os.path.basename(image_folder)), encoding="utf-8")
    run.reporter.say(f"report: {output}" + (f" and {md_path}" if markdown else ""))


simulate_app = typer.Typer(
    help="Synthetic catalogs and sales panels with known effects (to test designs and estimators).\n\n"
    "Example: pricelab simulate catalog --n-products 200 -o products.csv --edges-out true_edges.csv",
    no_args_is_help=True,
)
app.add_typer(simulate_app, name="simulate")


@simulate_app.command(
    "catalog",
    epilog="Example: pricelab simulate catalog --n-products 500 --n-groups 20 --seed 1 -o products.csv --edges-out true_edges.csv",
)
def simulate_catalog_command(
    output: Output = "-",
    n_products: Annotated[int, typer.Option(help="Number of products.")] = 200,
    n_groups: Annotated[int, typer.Option(help="Number of categories.")] = 10,
    community_size: Annotated[int, typer.Option(help="Products per planted substitute community.")] = 5,
    id_prefix: Annotated[Optional[str], typer.Option(help="Text ids PREFIX000001... instead of integers.")] = None,
    edges_out: Annotated[Optional[str], typer.Option(help="Write the planted substitute edges (the truth) here.")] = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Write a synthetic product catalog (features, categories, planted communities)."""
    from pricelab_cli.simulate import simulate_catalog

    run = _run((quiet, silent), seed, fmt, output, edges_out)
    products, edges = simulate_catalog(
        n_products=n_products, n_groups=n_groups, community_size=community_size, seed=seed, id_prefix=id_prefix
    )
    run.write(products, output)
    if edges_out:
        run.write(edges, edges_out)
    run.reporter.say(f"{products.height} products in {n_groups} categories; {edges.height} planted substitute edges")


@simulate_app.command(
    "sales",
    epilog="Example: pricelab simulate sales --products products.csv --assignment assignment.parquet "
    "--edges true_edges.csv --seed 1 -o sales.parquet --truth-out truth.json",
)
def simulate_sales_command(
    products: InputPath,
    output: Output = "-",
    assignment: Annotated[Optional[str], typer.Option(help="Assignment that drives treatment (else history only).")] = None,
    edges: Annotated[Optional[str], typer.Option(help="Substitute edges src,dst,weight (cross-price elasticities).")] = None,
    start: Annotated[Optional[dt.date], _date_option("--start", "First panel date.", "assignment start - history days")] = None,
    end: Annotated[Optional[dt.date], _date_option("--end", "Last panel date.", "assignment end")] = None,
    history_days: Annotated[int, typer.Option(help="Days of history before the experiment.")] = 365,
    price_change: Annotated[float, typer.Option(help="Relative price change of treated cells (-0.1 = 10% cut).")] = -0.10,
    elasticity: Annotated[float, typer.Option(help="Average own-price elasticity.")] = -2.0,
    heterogeneity: Annotated[float, typer.Option(help="How strongly elasticity varies with quality.")] = 0.5,
    trend_sd: Annotated[float, typer.Option(help="Spread of product trends (log units per year).")] = 0.3,
    weekly: Annotated[float, typer.Option(help="Amplitude of the weekly pattern (log units).")] = 0.2,
    shock_sd: Annotated[float, typer.Option(help="Spread of store-wide daily shocks (log units).")] = 0.05,
    promo_rate: Annotated[float, typer.Option(help="Daily chance a product starts a promotion.")] = 0.05,
    promo_depth: Annotated[float, typer.Option(help="Promotion price cut.")] = 0.2,
    outlier_share: Annotated[float, typer.Option(help="Share of products with a sudden unexplained level shift.")] = 0.0,
    carryover_days: Annotated[float, typer.Option(help="Decay time of the effect after treatment stops (0 = none).")] = 0.0,
    spillover: Annotated[bool, typer.Option("--spillover/--no-spillover", help="Treated prices move substitutes' demand.")] = True,
    base_units: Annotated[float, typer.Option(help="Typical daily units of a product.")] = 20.0,
    dispersion: Annotated[float, typer.Option(help="Negative-binomial shape (larger = closer to Poisson).")] = 5.0,
    truth_out: Annotated[Optional[str], typer.Option(help="Write the true effects (JSON) here.")] = None,
    product_truth_out: Annotated[Optional[str], typer.Option(help="Write per-product true effects here.")] = None,
    contamination: Annotated[
        float, typer.Option(help="Share of products whose sales are spoiled (see --contamination-kinds).")
    ] = 0.0,
    contamination_kinds: Annotated[
        str,
        typer.Option(help="Comma-separated kinds dealt out in turn: noise, jump, spike, stockout, outlier."),
    ] = "noise,jump,spike,stockout",
    clean_out: Annotated[
        Optional[str], typer.Option(help="Write the same panel without the contamination here (same draws otherwise).")
    ] = None,
    unit_col: UnitCol = "product_id",
    time_col: TimeCol = "date",
    storage_option: StorageOption = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Seed = 0,
) -> None:
    """Write a daily sales and price panel with known trend, shocks, promotions and effects."""
    from pricelab_cli.simulate import simulate_sales

    run = _run(
        (quiet, silent), seed, fmt, output, truth_out, product_truth_out, clean_out, documents=(truth_out,),
        storage_option=storage_option,
    )
    ids = {unit_col: "product_id"}
    product_table = run.read(products, required=["product_id"], rename=ids, unique=["product_id"])
    assignment_table = (
        run.read(
            assignment,
            required=list(io.ASSIGNMENT_COLUMNS),
            rename={**ids, time_col: "date"},
            dates=["date"],
            unique=["product_id", "date"],
        )
        if assignment
        else None
    )
    edge_table = run.read(edges, required=["src", "dst", "weight"]) if edges else None
    result = simulate_sales(
        product_table,
        assignment=assignment_table,
        edges=edge_table,
        start=start,
        end=end,
        history_days=history_days,
        price_change=price_change,
        elasticity=elasticity,
        heterogeneity=heterogeneity,
        trend_sd=trend_sd,
        weekly=weekly,
        shock_sd=shock_sd,
        promo_rate=promo_rate,
        promo_depth=promo_depth,
        outlier_share=outlier_share,
        carryover_days=carryover_days,
        spillover=spillover,
        base_units=base_units,
        dispersion=dispersion,
        contamination=contamination,
        contamination_kinds=contamination_kinds,
        seed=seed,
    )
    run.write(_user_names(result.sales, unit_col=unit_col, time_col=time_col), output)
    if clean_out:
        run.write(_user_names(result.clean_sales, unit_col=unit_col, time_col=time_col), clean_out)
    if truth_out:
        io.write_json({**result.truth, "provenance": run.meta()}, truth_out)
    if product_truth_out:
        run.write(_user_names(result.product_truth, unit_col=unit_col), product_truth_out)
    truth = result.truth
    effect = "no experiment" if truth["effect"] is None else f"true effect {truth['effect']:.4g} units per product per day"
    run.reporter.say(f"{result.sales.height:,} product-days, {truth['start']} to {truth['end']}; {effect}")



# ------------------------------------------------------------------ entry point


_TABLE_LABEL = re.compile(r"^(sales|history|edges|clusters|assignment|products|features|events|pairs): ")


def _name_the_file(message: str, argv: list[str]) -> str:
    """Messages of the core name a table by its role (``edges: ...``); the user gave a file,
    so the role becomes the path given to its flag (``--edges my_edges.csv``)."""
    match = _TABLE_LABEL.match(message)
    if not match:
        return message
    flag = f"--{match.group(1)}"
    for given, value in _flag_values(argv):
        if given == flag:
            shown = "standard input" if value == io.STDIO else value
            return f"{shown}: {message[match.end():]}"
    return message


def _show_click_error(exc: Exception) -> None:
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        # `pricelab` alone: the commands to choose from, and what went wrong in words.
        sys.stderr.write(ctx.get_help() + "\n\n")
        error("no command given; pick one of the commands above.")
        return
    usage = f"{ctx.get_usage()}\nTry '{ctx.command_path} --help' for help.\n" if ctx is not None else ""
    sys.stderr.write(usage)
    error(message)


def _stopped(what: str, code: int) -> int:
    """A run ended by a signal: its workers end too, and one line says what became of it."""
    stopping.end_workers()
    if io.LAST_COMMIT.done:
        error(f"stopped by {what} after its outputs were committed.")
    else:
        error(f"stopped by {what}; nothing was written (existing outputs are unchanged).")
    return code


def _command_for(args: list[str]):
    """The click command for this command line. A run names its command first, so only that
    command's options are built (building all eleven costs about 0.1 s a run); help, typos
    and the bare program get the whole group, with its command list and suggestions."""
    first = args[0] if args else ""
    if first.startswith("-"):
        return typer.main.get_command(app)
    commands = [c for c in app.registered_commands if (c.name or c.callback.__name__.replace("_", "-")) == first]
    groups = [g for g in app.registered_groups if g.name == first]
    if not commands and not groups:
        return typer.main.get_command(app)
    one = copy.copy(app)
    one.registered_commands, one.registered_groups = commands, groups
    return typer.main.get_command(one)


def main(argv: list[str] | None = None) -> None:
    """Run pricelab and exit with the code of the command-line contract."""
    args = sys.argv[1:] if argv is None else list(argv)
    _ACTIVE.argv = [str(a) for a in args]
    verbose = "--verbose" in args
    code = 0
    with warnings.catch_warnings():
        warnings.simplefilter("always", PricelabWarning)
        if not verbose:
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.showwarning = _show_warning
        try:
            command = _command_for(args)
            # Every output of the run is committed together at its end, or none is; SIGTERM
            # and SIGHUP unwind the run as Ctrl-C does.
            with stopping.stoppable(), io.output_transaction():
                result = command.main(args=args, prog_name="pricelab", standalone_mode=False)
            code = result if isinstance(result, int) else 0
        except PricelabError as exc:
            if verbose:
                import traceback

                traceback.print_exc()
            error(_name_the_file(str(exc), _ACTIVE.argv))
            code = exc.exit_code
        except typer.TyperException as exc:  # the parser's usage errors (exit 2)
            _show_click_error(exc)
            code = getattr(exc, "exit_code", 2)
        except typer.Abort as exc:
            # The parser turns an EOFError it meets into a silent Abort.
            cause = exc.__cause__
            error(f"the run was aborted ({type(cause).__name__}: {cause})" if cause else "the run was aborted")
            code = 1
        except BrokenPipeError:
            # A reader such as `head` closed the pipe: that is a normal end for a filter.
            # Point stdout at /dev/null so the interpreter's final flush does not fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = 0
        except KeyboardInterrupt:  # one that arrived before the handlers were in place
            code = _stopped("SIGINT", 130)
        except stopping.Stopped as exc:
            code = _stopped(exc.name, exc.exit_code)
        except Exception as exc:  # anything unforeseen: one line, traceback only on request
            stop = stopping.behind(exc)
            if stop is not None:  # a signal met inside a library's C code, which wrapped it
                code = _stopped(stop.name, stop.exit_code)
            else:
                if verbose:
                    import traceback

                    traceback.print_exc()
                error(f"{type(exc).__name__}: {exc} (run again with --verbose for the traceback)")
                code = 1
        finally:
            _ACTIVE.reporter = None
    sys.exit(code)
