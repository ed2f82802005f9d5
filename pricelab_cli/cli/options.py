"""Options shared by the commands: their types, help texts and parsers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Annotated

import typer


def date_flag(value: str | None) -> dt.date | None:
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
    str | None,
    typer.Option(
        "--format",
        help="Format written to stdout (-o -): csv or parquet. Files follow their extension; stdin is recognised.",
        show_default="csv",
    ),
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


OptionalInput = Annotated[str | None, typer.Option(help="Optional input table (file, -, folder, pattern or s3://).")]


StorageOption = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        metavar="KEY=VALUE",
        help="Object-store setting for s3:// paths, repeatable (e.g. aws_region=eu-west-1); "
        "the rest comes from the AWS_* environment variables.",
    ),
]


Output = Annotated[str, typer.Option("--output", "-o", help="Output file (format from extension) or - for stdout.")]


def date_option(flag: str, help_text: str, default: str | None = None):
    return typer.Option(flag, parser=date_flag, metavar="YYYY-MM-DD", help=help_text, show_default=default or False)


def storage_pairs(pairs: list[str] | None) -> dict[str, str] | None:
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


@dataclasses.dataclass(frozen=True)
class Columns:
    """The user's names of the id columns (--unit-col, --time-col, --cluster-col) and the
    renames that give an input table pricelab's names."""

    unit: str = "product_id"
    time: str = "date"
    cluster: str = "cluster_id"

    @property
    def ids(self) -> dict[str, str]:
        """A table keyed by product: products, features, events, a CATE table."""
        return {self.unit: "product_id"}

    @property
    def panel(self) -> dict[str, str]:
        """A table keyed by product and date: sales, a history."""
        return {self.unit: "product_id", self.time: "date"}

    @property
    def assignment(self) -> dict[str, str]:
        """An assignment: product, date and cluster."""
        return {self.unit: "product_id", self.time: "date", self.cluster: "cluster_id"}

    @property
    def clusters(self) -> dict[str, str]:
        """A clusters table: product and cluster."""
        return {self.unit: "product_id", self.cluster: "cluster_id"}


EngineOption = Annotated[
    str | None,
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
    balanced_switchback = "balanced-switchback"


class OutlierRule(str, enum.Enum):
    robust = "robust"
    quantile = "quantile"


class HpteMethod(str, enum.Enum):
    hpte = "hpte"
    did = "did"


def user_names(df, *, unit_col="product_id", time_col="date", cluster_col="cluster_id"):
    mapping = {"product_id": unit_col, "date": time_col, "cluster_id": cluster_col}
    return df.rename({ours: user for ours, user in mapping.items() if ours in df.columns and ours != user})


# Reading a running experiment (hpte, ipw, report, monitor).
AsOf = Annotated[
    dt.date | None,
    date_option(
        "--as-of",
        "Analyse the experiment as it stood at the end of this date (sales and assignment rows up to it).",
    ),
]
# The design an assignment was drawn from, and that assignment (ipw, report, monitor).
DrawnFrom = Annotated[str, typer.Option("--design", help="The design JSON the assignment was drawn from.")]
AssignmentFile = Annotated[str, typer.Option(help="The assignment written by `pricelab assign`.")]
