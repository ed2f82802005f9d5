"""pricelab report: the readout as one HTML page (and Markdown)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import (
    ClusterCol,
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
from pricelab_cli.cli.run import start_run
from pricelab_cli.design import design_from_dict
from pricelab_cli.errors import UsageError

# Loaded when a command first needs them: help, --version and `design` never do.
io = lazy("pricelab_cli.io")


@app.command(
    epilog="Example: pricelab report --design design.json --assignment assignment.parquet --sales sales/ "
    "--effects effects.csv --cate cate.parquet --products products.csv --placebo placebo.csv -o report.html --markdown"
)
def report(
    design_path: Annotated[str, typer.Option("--design", help="The design JSON the assignment was drawn from.")],
    assignment: Annotated[str, typer.Option(help="The assignment written by `pricelab assign`.")],
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
    description: Annotated[
        str | None,
        typer.Option(
            help='What the experiment changed (e.g. "10% price cut").', show_default="the design's --description"
        ),
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
    run = start_run(
        (quiet, silent), seed, fmt, output, md_path, documents=(output, md_path), storage_option=storage_option
    )
    if not output.endswith((".html", ".htm")):
        raise UsageError(f"-o {output}: the report is an HTML page; give a name ending in .html.")
    spec = design_from_dict(io.read_json(design_path, storage_options=run.storage_options), source=design_path)
    ids = {unit_col: "product_id"}
    assignment_table = run.read(
        assignment,
        required=list(io.ASSIGNMENT_COLUMNS),
        rename={**ids, time_col: "date", cluster_col: "cluster_id"},
        dates=["date"],
        unique=["product_id", "date"],
    )
    effect_table = run.read(effects, required=["outcome", "estimate", "se", "ci_low", "ci_high", "p_value", "lift"])
    outcomes = effect_table["outcome"].to_list()
    sales_table = io.scan_table(
        sales,
        required=["product_id", "date", *outcomes],
        rename={**ids, time_col: "date"},
        dates=["date"],
        storage_options=run.storage_options,
    )
    optional = {
        "cate": run.read(cate, required=["product_id", "cate"], rename=ids) if cate else None,
        "products": run.read(products, required=["product_id"], rename=ids, unique=["product_id"])
        if products
        else None,
        "placebo": run.read(placebo, required=["outcome", "estimate", "p_value"]) if placebo else None,
        "spillover": run.read(spillover, required=["effect", "estimate", "ci_low", "ci_high", "p_value", "n"])
        if spillover
        else None,
        "clusters": run.read(clusters, required=["product_id", "cluster_id"], rename={**ids, cluster_col: "cluster_id"})
        if clusters
        else None,
        "power": run.read(power, required=["design", "bias", "se", "power", "coverage"]) if power else None,
    }
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
    }
    provenance = [io.provenance_row(role, path) for role, path in paths.items() if path]
    records = {role: io.read_record(paths[role]) for role in ("effects", "cate")}
    with run.reporter.progress("report: tables and plots", 1) as advance:
        result = readout.build_report(
            design=spec,
            assignment=assignment_table,
            sales=sales_table,
            effects=effect_table,
            provenance=provenance,
            records=records,
            command=run.meta()["command"],
            description=description,
            **optional,
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
