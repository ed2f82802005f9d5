"""pricelab report: the readout as one HTML page (and Markdown)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypedDict, cast

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    AsOf,
    AssignmentFile,
    ClusterCol,
    Columns,
    DrawnFrom,
    Format,
    Quiet,
    Silent,
    StorageOption,
    TimeCol,
    UnitCol,
    UnusedSeed,
    Verbose,
)
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import Run, start_run
from pricelab_cli.design import Design
from pricelab_cli.errors import UsageError

if TYPE_CHECKING:
    import polars as pl

    from pricelab_cli import io
    from pricelab_cli.report import Report
else:
    # Loaded when a command first needs them: help, --version and `design` never do.
    io = lazy("pricelab_cli.io")


@app.command(
    epilog="Example: pricelab report --design design.json --assignment assignment.parquet --sales sales/ "
    "--effects effects.csv --cate cate.parquet --products products.csv --placebo placebo.csv -o report.html --markdown"
)
def report(
    design_path: DrawnFrom,
    assignment: AssignmentFile,
    sales: Annotated[str, typer.Option(help="The sales the effects were estimated from (history and experiment).")],
    effects: Annotated[str, typer.Option(help="The effects output of `pricelab hpte`.")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="The HTML page to write (self-contained).")
    ] = "report.html",
    markdown: Annotated[
        bool,
        typer.Option("--markdown", help="Also write the readout as Markdown (<output>.md, PNGs in <output>_files/)."),
    ] = False,
    cate: Annotated[str | None, typer.Option(help="The --cate-out output of hpte.")] = None,
    products: Annotated[
        str | None, typer.Option(help="Products table with features: balance and effect by feature.")
    ] = None,
    placebo: Annotated[str | None, typer.Option(help="The --placebo-out output of hpte.")] = None,
    spillover: Annotated[str | None, typer.Option(help="The output of `pricelab ipw`.")] = None,
    clusters: Annotated[str | None, typer.Option(help="The output of `pricelab cluster`.")] = None,
    power: Annotated[str | None, typer.Option(help="The output of `pricelab power`.")] = None,
    elasticity: Annotated[
        str | None, typer.Option(help="The output of `pricelab elasticity`: price response and profit, in words.")
    ] = None,
    optimum: Annotated[str | None, typer.Option(help="The --optimum-out output of `pricelab elasticity`.")] = None,
    description: Annotated[
        str | None,
        typer.Option(
            help='What the experiment changed (e.g. "10% price cut").', show_default="the design's --description"
        ),
    ] = None,
    as_of: AsOf = None,
    monitor: Annotated[
        str | None, typer.Option(help="The output of `pricelab monitor`: the nights, both intervals, the decision.")
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

    pages = _markdown_paths(output) if markdown else None
    md_path = pages[0] if pages else None
    # Nothing in the report is random; --seed is recorded, as for every command.
    run = start_run(
        (quiet, silent), seed, fmt, output, md_path, documents=(output, md_path), storage_option=storage_option
    )
    if not output.endswith((".html", ".htm")):
        raise UsageError(f"-o {output}: the report is an HTML page; give a name ending in .html.")
    paths = {
        "design": design_path,
        "assignment": assignment,
        "sales": sales,
        "effects": effects,
        "cate": cate,
        "products": products,
        "placebo": placebo,
        "spillover": spillover,
        "clusters": clusters,
        "power": power,
        "monitor": monitor,
        "elasticity": elasticity,
        "optimum": optimum,
    }
    inputs = _read_inputs(run, paths, Columns(unit_col, time_col, cluster_col), as_of)
    provenance = [io.provenance_row(role, path) for role, path in paths.items() if path]
    records = {role: io.read_record(paths[role]) for role in ("effects", "cate")}
    with run.reporter.progress("report: tables and plots", 1) as advance:
        result = readout.build_report(
            design=inputs.design,
            assignment=inputs.assignment,
            sales=inputs.sales,
            effects=inputs.effects,
            provenance=provenance,
            records=records,
            command=run.meta()["command"],
            description=description,
            **inputs.optional,
        )
        advance(1)
    _write_pages(result, output, pages)
    run.reporter.say(f"report: {output}" + (f" and {md_path}" if markdown else ""))


class _OptionalTables(TypedDict):
    """The optional inputs, by ``build_report``'s parameter names (None: not given)."""

    cate: pl.DataFrame | None
    products: pl.DataFrame | None
    placebo: pl.DataFrame | None
    spillover: pl.DataFrame | None
    clusters: pl.DataFrame | None
    power: pl.DataFrame | None
    monitor: pl.DataFrame | None
    elasticity: pl.DataFrame | None
    optimum: pl.DataFrame | None


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """What the readout is built from, under pricelab's column names."""

    design: Design
    assignment: pl.DataFrame
    effects: pl.DataFrame
    sales: pl.LazyFrame
    optional: _OptionalTables


def _read_inputs(run: Run, paths: dict[str, str | None], columns: Columns, as_of: dt.date | None) -> _Inputs:
    """Read the inputs in the order of the flags' help (an error names the first bad one);
    ``paths`` maps each input's role to its flag's value. With ``as_of``, the assignment
    and the sales as they stood at the end of that date, and the monitoring table up to it."""
    import polars as pl

    from pricelab_cli.elasticity import ELASTICITY_COLUMNS, OPTIMUM_COLUMNS
    from pricelab_cli.sequential import MONITOR_COLUMNS, as_it_stood

    # The first four flags are required, so their values are strings.
    design_path, assignment, effects, sales = (
        cast(str, paths[r]) for r in ("design", "assignment", "effects", "sales")
    )
    spec = run.read_design(design_path)
    assignment_table = run.read_assignment(assignment, columns)
    effect_table = run.read(effects, required=["outcome", "estimate", "se", "ci_low", "ci_high", "p_value", "lift"])
    sales_table = run.scan_sales(sales, effect_table["outcome"].to_list(), columns)
    if as_of is not None:
        assignment_table = as_it_stood(assignment_table, sales_table, as_of)
    optional = _OptionalTables(
        cate=run.read_if(paths["cate"], required=["product_id", "cate"], rename=columns.ids),
        products=run.read_if(paths["products"], required=["product_id"], rename=columns.ids, unique=["product_id"]),
        placebo=run.read_if(paths["placebo"], required=["outcome", "estimate", "p_value"]),
        spillover=run.read_if(paths["spillover"], required=["effect", "estimate", "ci_low", "ci_high", "p_value", "n"]),
        clusters=run.read_clusters(paths["clusters"], columns, unique=False),
        power=run.read_if(paths["power"], required=["design", "bias", "se", "power", "coverage"]),
        monitor=run.read_if(paths["monitor"], required=list(MONITOR_COLUMNS), dates=["date"]),
        elasticity=run.read_if(paths["elasticity"], required=list(ELASTICITY_COLUMNS)),
        optimum=run.read_if(paths["optimum"], required=list(OPTIMUM_COLUMNS)),
    )
    if as_of is not None:
        sales_table = sales_table.filter(pl.col("date") <= as_of)
        if optional["monitor"] is not None:
            optional["monitor"] = optional["monitor"].filter(pl.col("date") <= as_of)
    return _Inputs(spec, assignment_table, effect_table, sales_table, optional)


def _markdown_paths(output: str) -> tuple[str, str]:
    """The Markdown readout beside the HTML page, and the folder of its pictures."""
    stem = output.rsplit(".", 1)[0]
    return f"{stem}.md", f"{stem}_files"


def _write_pages(result: Report, output: str, markdown: tuple[str, str] | None) -> None:
    """The HTML page; with ``markdown`` (its path and its pictures' folder) the Markdown readout too."""
    from pricelab_cli import report as readout

    with io.atomic_path(output) as tmp:
        Path(tmp).write_text(readout.render_html(result), encoding="utf-8")
    if markdown is None:
        return
    md_path, image_folder = markdown
    os.makedirs(image_folder, exist_ok=True)
    for picture in result.pictures.values():
        with io.atomic_path(os.path.join(image_folder, picture.name)) as tmp:
            Path(tmp).write_bytes(picture.data)
    with io.atomic_path(md_path) as tmp:
        Path(tmp).write_text(readout.render_markdown(result, os.path.basename(image_folder)), encoding="utf-8")
