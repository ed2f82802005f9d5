"""Placebo test of hpte: the same estimator on the history alone, with a fake start.

The assignment is moved back in time by the experiment's own length, on the calendar of
the sales dates (so weekly or monthly panels move by whole periods): the fake experiment
is the last stretch of history as long as the real one, every product keeps its arms, its
blackouts and its place in the staggered order, and only sales dated before the real start
are read. Nothing was changed in that stretch, so an estimate far from zero says the arms
were already drifting apart (a pre-trend), or that the estimator sees effects where there
are none; either way the real estimate needs a second look.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl

from pricelab_cli.errors import DataError
from pricelab_cli.hpte.detrend import MIN_PRE_PERIODS

# A placebo p-value below this draws a warning.
PLACEBO_ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class PlaceboWindow:
    """Where the fake experiment sits: its first and last date, the real start, and its
    length in periods of the sales calendar."""

    fake_start: dt.date
    fake_end: dt.date
    real_start: dt.date
    periods: int


def placebo_inputs(
    sales: pl.DataFrame | pl.LazyFrame,
    assignment: pl.DataFrame | pl.LazyFrame,
    label: str = "sales",
) -> tuple[pl.LazyFrame, pl.LazyFrame, PlaceboWindow]:
    """The history before the real start, the assignment moved onto its last stretch, and
    the window. Raises DataError when the history is too short for a fake experiment plus
    the ``MIN_PRE_PERIODS`` the baselines are fitted on."""
    sales, assignment = sales.lazy(), assignment.lazy()
    assigned = assignment.select(pl.col("date").unique()).collect().get_column("date").drop_nulls().sort()
    if assigned.len() == 0:
        raise DataError("assignment: no dated rows; a placebo needs the experiment's dates.")
    real_start = assigned[0]
    history = sales.select(pl.col("date").unique()).filter(pl.col("date") < real_start).collect().get_column("date")
    calendar = pl.concat([history.drop_nulls(), assigned]).unique().sort()
    first = calendar.search_sorted(real_start)
    length = calendar.len() - first
    if first - length < MIN_PRE_PERIODS:
        raise DataError(
            f"{label}: {first} period(s) of history before the experiment starts on {real_start}; a placebo "
            f"needs the experiment's length ({length} periods) plus {MIN_PRE_PERIODS} more to fit baselines on, "
            f"{length + MIN_PRE_PERIODS} in all."
        )
    moved = pl.DataFrame(
        {"date": calendar.slice(first, length), "placebo_date": calendar.slice(first - length, length)}
    )
    shifted = (
        # The assignment's own row order (a join without it is free to reorder rows).
        assignment.join(moved.lazy(), on="date", how="left", maintain_order="left")
        .with_columns(pl.col("placebo_date").alias("date"))
        .drop("placebo_date")
    )
    before = sales.filter(pl.col("date") < real_start)
    window = PlaceboWindow(moved["placebo_date"][0], moved["placebo_date"][-1], real_start, length)
    return before, shifted, window


def estimate_placebo(
    sales: pl.DataFrame | pl.LazyFrame,
    assignment: pl.DataFrame | pl.LazyFrame,
    **options,
):
    """``estimate_hpte`` on the fake experiment (see the module docstring).

    Takes ``estimate_hpte``'s keyword options (effect paths are not computed) and returns
    ``(HpteResult, PlaceboWindow)``; the result's ``effects`` has the effects output's
    columns. A DataError of the fake experiment names it.
    """
    from pricelab_cli.hpte.estimate import estimate_hpte

    labels = dict(options.get("labels") or {})
    before, shifted, window = placebo_inputs(sales, assignment, labels.get("sales", "sales"))
    options = {**options, "effect_paths": False}
    try:
        result = estimate_hpte(before, shifted, **options)
    except DataError as exc:
        raise DataError(f"placebo (fake experiment {window.fake_start} to {window.fake_end}): {exc}") from exc
    return result, window


def placebo_warnings(effects: pl.DataFrame, window: PlaceboWindow) -> list[str]:
    """One sentence per outcome whose placebo p-value is below ``PLACEBO_ALPHA``."""
    out = []
    for row in effects.iter_rows(named=True):
        p = row["p_value"]
        if p is not None and p < PLACEBO_ALPHA:
            out.append(
                f"placebo: {row['outcome']} differs between the arms by {row['estimate']:.4g} per product per day "
                f"(p = {p:.3g}) over {window.fake_start} to {window.fake_end}, before anything was changed; the arms "
                "may have been drifting apart already (a pre-trend), so read the real estimate with care."
            )
    return out
