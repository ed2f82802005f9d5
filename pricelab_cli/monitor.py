"""The monitoring table: every night of a running experiment replayed as a nightly job would
have read it (``hpte --as-of NIGHT --sequential``), with that night's decision."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import polars as pl

from pricelab_cli.engine import default_engine
from pricelab_cli.errors import UsageError
from pricelab_cli.hpte import estimate_hpte
from pricelab_cli.sequential import MONITOR_COLUMNS, MONITOR_SCHEMA, analysed_rows, cut_as_of, decision


def monitor_nights(
    sales: pl.DataFrame | pl.LazyFrame,
    assignment: pl.DataFrame | pl.LazyFrame,
    *,
    outcomes: Sequence[str] = ("units",),
    as_of: dt.date | None = None,
    min_effect: float | None = None,
    horizon: dt.date | None = None,
    engine=None,
    **options: Any,
) -> pl.DataFrame:
    """One row per night and outcome (``MONITOR_COLUMNS``), from the first analysed day to
    ``as_of`` (by default the last date with sales).

    Each night is the estimate of ``estimate_hpte(..., as_of=night, sequential=True)``: the
    same numbers a nightly ``hpte --as-of`` run printed that night. ``min_effect`` (a relative
    effect, e.g. 0.01 for 1%) sets the futility band: a night whose lift's sequence lies
    within plus or minus it says ``stop: futile``. ``options`` are ``estimate_hpte``'s; each
    night is a stage of ``engine``'s progress.
    """
    if min_effect is not None and not min_effect > 0:
        raise UsageError(f"`min_effect` {min_effect} must be above 0 (a relative effect, e.g. 0.01 for 1%).")
    # The sales stay a scan: each night reads only its own dates (as a nightly run would).
    plan = assignment.collect() if isinstance(assignment, pl.LazyFrame) else assignment
    last_sales = sales.lazy().select(pl.col("date").max()).collect().item()
    if as_of is not None:
        cut_as_of(plan, as_of)  # a date before the first analysed day is a usage error
    # Up to the last date with sales, and no further than --as-of.
    end = last_sales if as_of is None or last_sales is None else min(as_of, last_sales)
    analysed = analysed_rows(plan).filter(pl.col("date") <= end) if end is not None else analysed_rows(plan).clear()
    nights = analysed.select(pl.col("date").unique().sort()).collect()["date"]
    if nights.is_empty():
        raise UsageError(
            f"no analysed night has sales yet (sales end {last_sales}); the first night is the first analysed day."
        )
    engine = default_engine(engine, options.get("n_jobs", -1))
    rows = []
    for i, night in enumerate(nights):
        engine.counter.add(1, f"night {night} ({i + 1} of {len(nights)})")
        # One estimate a night, as the nightly job computes it: the loop is over nights.
        result = estimate_hpte(
            sales,
            plan,
            outcomes=outcomes,
            as_of=night,
            sequential=True,
            sequential_horizon=horizon,
            effect_paths=False,
            engine=engine,
            **options,
        )
        for row in result.effects.iter_rows(named=True):
            stop = decision(row["cs_low"], row["cs_high"], row["lift_cs_low"], row["lift_cs_high"], min_effect)
            rows.append({"date": night, **{c: row[c] for c in MONITOR_COLUMNS if c in row}, "decision": stop})
        engine.counter.done(1)
    return pl.DataFrame(rows, schema=MONITOR_SCHEMA, orient="row").select(MONITOR_COLUMNS)
