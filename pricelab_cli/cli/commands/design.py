"""pricelab design: write an experiment design."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from pricelab_cli._lazy import lazy
from pricelab_cli.cli.options import DesignKind, Format, Output, Quiet, Silent, Verbose, date_option
from pricelab_cli.cli.registry import app
from pricelab_cli.cli.run import start_run
from pricelab_cli.design import make_design, salt_from_seed
from pricelab_cli.errors import UsageError

# Loaded when a command first needs them: help, --version and `design` never do.
io = lazy("pricelab_cli.io")


@app.command(
    epilog="Example: pricelab design crossover --start 2026-03-02 --phase-days 14 --blackout-days 7 -o design.json"
)
def design(
    kind: Annotated[
        DesignKind, typer.Argument(help="time-bound, triggered, random-days, crossover or balanced-switchback.")
    ],
    output: Output = "-",
    start: Annotated[dt.date | None, date_option("--start", "First experiment date.")] = None,
    end: Annotated[
        dt.date | None, date_option("--end", "Last experiment date (all but triggered and crossover).")
    ] = None,
    block_days: Annotated[
        int | None,
        typer.Option(help="random-days, balanced-switchback: days per re-randomised block.", show_default="1"),
    ] = None,
    duration_days: Annotated[int | None, typer.Option(help="triggered: window length from each event.")] = None,
    phase_days: Annotated[int | None, typer.Option(help="crossover: days per phase.")] = None,
    blackout_days: Annotated[
        int | None,
        typer.Option(
            help="crossover: blackout days opening each phase; balanced-switchback: opening each block after the first.",
            show_default="0",
        ),
    ] = None,
    phases: Annotated[int | None, typer.Option(help="crossover: number of phases.", show_default="2")] = None,
    treat_share: Annotated[
        float, typer.Option(help="Share of randomisation units treated (balanced-switchback: in every block, exactly).")
    ] = 0.5,
    salt: Annotated[
        str | None,
        typer.Option(help="Hash salt.", show_default="hash of --seed, kind, --name and dates, else random"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name shown in reports (and part of a seeded salt).")] = None,
    description: Annotated[
        str | None, typer.Option(help='What the experiment changes, for the report (e.g. "10% price cut").')
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw the product x day grid to this PNG.")] = None,
    quiet: Quiet = False,
    silent: Silent = False,
    verbose: Verbose = False,
    fmt: Format = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Derive the salt from this seed with the kind, --name and dates.")
    ] = None,
) -> None:
    """Write an experiment design (JSON spec) for the assign step."""
    run = start_run(
        (quiet, silent), seed, fmt, output, str(plot) if plot else None, documents=(output, str(plot) if plot else None)
    )
    kind_name = kind.value
    _reject_flags_for_kind(
        kind_name,
        {
            "--end": (end, ("time-bound", "random-days", "balanced-switchback")),
            "--block-days": (block_days, ("random-days", "balanced-switchback")),
            "--duration-days": (duration_days, ("triggered",)),
            "--phase-days": (phase_days, ("crossover",)),
            "--blackout-days": (blackout_days, ("crossover", "balanced-switchback")),
            "--phases": (phases, ("crossover",)),
            "--start": (start, ("time-bound", "random-days", "crossover", "balanced-switchback")),
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

        with io.atomic_path(str(plot)) as tmp:
            plots.design_grid(spec, tmp)
    io.write_json({**spec.to_dict(), "provenance": run.meta()}, output)
    span = f"{spec.start} to {spec.end}" if spec.start else f"{spec.duration_days} days from each event"
    run.reporter.say(f"{spec.label}: {span}, treat share {spec.treat_share}, salt {spec.salt}")


def _reject_flags_for_kind(kind: str, flags: dict[str, tuple[object, tuple[str, ...]]]) -> None:
    for flag, (value, kinds) in flags.items():
        if value is not None and kind not in kinds:
            raise UsageError(f"{flag} does not apply to a {kind} design (it is for: {', '.join(kinds)}).")
