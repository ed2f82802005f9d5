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
    exact_nights: bool = False,
    engine=None,
    **options: Any,
) -> pl.DataFrame:
    """One row per night and outcome (``MONITOR_COLUMNS``), from the first analysed day to
    ``as_of`` (by default the last date with sales).

    The last night is ``estimate_hpte(..., as_of=night, sequential=True)``: what a nightly
    ``hpte --as-of`` run prints that night. The past nights are replayed with that run's
    model (:mod:`pricelab_cli.hpte.replay`), all in one more pass; ``exact_nights`` instead
    runs the whole estimate again for each past night, as that night's run printed it (a
    run a night). ``min_effect`` (a relative effect, e.g. 0.01 for 1%) sets the futility
    band: a night whose lift's sequence lies within plus or minus it says ``stop: futile``.
    ``options`` are ``estimate_hpte``'s.
    """
    if min_effect is not None and not min_effect > 0:
        raise UsageError(f"`min_effect` {min_effect} must be above 0 (a relative effect, e.g. 0.01 for 1%).")
    # The sales stay a scan: each estimate reads only the dates it analyses.
    plan = assignment.collect() if isinstance(assignment, pl.LazyFrame) else assignment
    last_sales = sales.lazy().select(pl.col("date").max()).collect().item()
    if as_of is not None:
        cut_as_of(plan, as_of)  # a date before the first analysed day is a usage error
    # Up to the last date with sales, and no further than --as-of.
    end = last_sales if as_of is None or last_sales is None else min(as_of, last_sales)
    analysed = analysed_rows(plan).filter(pl.col("date") <= end) if end is not None else analysed_rows(plan).clear()
    nights = analysed.select(pl.col("date").unique().sort()).collect()["date"].to_list()
    if not nights:
        raise UsageError(
            f"no analysed night has sales yet (sales end {last_sales}); the first night is the first analysed day."
        )
    engine = default_engine(engine, options.get("n_jobs", -1))
    common = dict(outcomes=outcomes, sequential=True, sequential_horizon=horizon, effect_paths=False, engine=engine)
    if exact_nights:
        tables = []
        for i, night in enumerate(nights):
            engine.counter.add(1, f"night {night} ({i + 1} of {len(nights)})")
            # One whole estimate a night, as the nightly job computed it: the loop is over nights.
            tables.append(estimate_hpte(sales, plan, as_of=night, **common, **options).effects.with_columns(date=night))
            engine.counter.done(1)
        table = pl.concat(tables)
    else:
        result = estimate_hpte(sales, plan, as_of=nights[-1], nights=nights[:-1], **common, **options)
        tonight = result.effects.with_columns(date=pl.lit(nights[-1], dtype=pl.Date))
        past = result.nights if result.nights is not None else tonight.clear()
        table = pl.concat([past, tonight.select(past.columns)]) if len(past) else tonight
    decisions = [
        decision(row["cs_low"], row["cs_high"], row["lift_cs_low"], row["lift_cs_high"], min_effect)
        for row in table.iter_rows(named=True)
    ]
    return (
        table.with_columns(decision=pl.Series(decisions, dtype=pl.String))
        .select(MONITOR_COLUMNS)
        .cast(MONITOR_SCHEMA)  # type: ignore[arg-type]
        .sort("date", maintain_order=True)
    )
