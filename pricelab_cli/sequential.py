"""Reading a running experiment every night: the analysis as of a date, and an interval that
stays valid however often it is read (a confidence sequence).

The estimate at a night is asymptotically normal with standard error ``se``; over the nights
its information ``1 / se**2`` grows and the score ``estimate / se**2`` behaves as a Brownian
motion in that information. A normal mixture over the drift (Robbins' mixture, as in the
asymptotic confidence sequences of Waudby-Smith et al.) gives a boundary that the score
crosses with probability at most ``alpha`` over every night at once:

    |score - effect * I| <= sqrt((I + rho) * log((I + rho) / (rho * alpha**2)))

so the interval is ``estimate +/- se * m(tau)`` (``with_sequence`` stretches the bootstrap's
percentile interval by ``m(tau) / 1.96``, the same where the bootstrap is symmetric) with ``tau = I / I_end`` the share of the
planned information seen so far and ``rho = r * I_end``:

    m(tau) = sqrt((tau + r) / tau * log((tau + r) / (r * alpha**2)))

``r`` is chosen to make the interval tightest at the planned end (``tau = 1``); ``tau`` is
measured as the share of the planned analysed product-days (blackout days left out) that
have happened, so each night's interval comes from that night's data and the plan alone,
with no state kept between nights.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import warnings
from collections.abc import Sequence
from functools import lru_cache
from statistics import NormalDist
from typing import TypeVar

import numpy as np
import polars as pl

from pricelab_cli.errors import PricelabWarning, UsageError

ALPHA = 0.05
Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)
# The decisions of the monitoring table.
CONTINUE, STOP_EFFECT, STOP_FUTILE = "continue", "stop: effect", "stop: futile"
# The monitoring table's columns and types.
MONITOR_SCHEMA = {
    "date": pl.Date,
    "outcome": pl.String,
    "estimate": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "cs_low": pl.Float64,
    "cs_high": pl.Float64,
    "n_products": pl.Int64,
    "decision": pl.String,
}
MONITOR_COLUMNS = tuple(MONITOR_SCHEMA)


@lru_cache(maxsize=8)
def mixture_tuning(alpha: float = ALPHA) -> float:
    """The mixture's ``r`` (its spread relative to the planned information) that makes the
    sequence tightest at the planned end: the minimum of ``(1 + r) log((1 + r) / (r alpha^2))``
    over ``log r`` (the function is convex there)."""
    if not 0 < alpha < 1:
        raise UsageError(f"`alpha` {alpha} must lie strictly between 0 and 1.")

    from scipy.optimize import minimize_scalar

    def width(log_r: float) -> float:
        r = math.exp(log_r)
        return (1 + r) * math.log((1 + r) / (r * alpha**2))

    found = minimize_scalar(width, bounds=(math.log(1e-6), math.log(1e3)), method="bounded", options={"xatol": 1e-10})
    return math.exp(found.x)


def sequence_multiplier(fraction: float, alpha: float = ALPHA) -> float:
    """How many standard errors the confidence sequence spans either side of the estimate,
    with ``fraction`` of the planned information seen (NaN before any)."""
    if not fraction > 0 or not math.isfinite(fraction):
        return float("nan")
    r = mixture_tuning(alpha)
    return math.sqrt((fraction + r) / fraction * math.log((fraction + r) / (r * alpha**2)))


def analysed_rows(assignment: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """The assignment's analysed rows (blackout rows left out), as a lazy frame."""
    frame = assignment.lazy()
    if "blackout" in frame.collect_schema():
        frame = frame.filter(~pl.col("blackout").fill_null(False))
    return frame


def first_analysed_day(assignment: pl.DataFrame | pl.LazyFrame) -> dt.date | None:
    """The experiment's first analysed day: its earliest assignment date off blackout."""
    return analysed_rows(assignment.lazy()).select(pl.col("date").min()).collect().item()


def cut_as_of(assignment: Frame, as_of: dt.date, what: str = "--as-of") -> Frame:
    """The assignment as it stood at the end of ``as_of``: its rows up to that date. A date
    before the first analysed day has nothing to analyse, and is a usage error."""
    first = first_analysed_day(assignment)
    if first is None:
        return assignment
    if as_of < first:
        raise UsageError(
            f"{what} {as_of.isoformat()} is before the experiment's first analysed day, {first.isoformat()}; "
            "there is nothing to analyse yet."
        )
    return assignment.filter(pl.col("date") <= as_of)


def as_it_stood(assignment: Frame, sales: pl.DataFrame | pl.LazyFrame, as_of: dt.date) -> Frame:
    """The assignment as of a date (``cut_as_of``), without the products the sales do not
    list yet (no row up to that date: a product that first sells later in the experiment). A
    full read refuses such a product; a night's read leaves it out until it has a row, and
    says so."""
    cut = cut_as_of(assignment, as_of)
    listed = sales.lazy().filter(pl.col("date") <= as_of).select("product_id").unique()
    missing = (
        cut.lazy().select("product_id").unique().join(listed, on="product_id", how="anti").sort("product_id").collect()
    )["product_id"]
    if not len(missing):
        return cut
    warnings.warn(
        f"{len(missing):,} assigned product(s) have no sales row up to --as-of {as_of.isoformat()} and are left "
        f"out of this reading until they have one, e.g. {missing[0]!r}.",
        PricelabWarning,
        stacklevel=3,
    )
    return cut.join(
        missing.to_frame().lazy() if isinstance(cut, pl.LazyFrame) else missing.to_frame(), on="product_id", how="anti"
    )


def information_fraction(
    assignment: pl.DataFrame | pl.LazyFrame, seen_until: dt.date, horizon: dt.date | None = None
) -> tuple[float, dt.date | None]:
    """The share of the planned analysed product-days that have happened by ``seen_until``,
    and the planned end (``horizon``, by default the assignment's last date)."""
    end = _planned_end(assignment, horizon)
    return _fractions(assignment, [seen_until], end)[0], end


def _planned_end(assignment: pl.DataFrame | pl.LazyFrame, horizon: dt.date | None) -> dt.date | None:
    """``horizon``, or the assignment's last analysed date; refused before the first."""
    analysed = analysed_rows(assignment.lazy())
    end = horizon if horizon is not None else analysed.select(pl.col("date").max()).collect().item()
    first = first_analysed_day(assignment)
    if first is not None and end is not None and end < first:
        raise UsageError(
            f"--sequential-horizon {end.isoformat()} is before the experiment's first analysed day, "
            f"{first.isoformat()}."
        )
    return end


def information_fractions(
    assignment: pl.DataFrame | pl.LazyFrame, seen_until: Sequence[dt.date], horizon: dt.date | None = None
) -> list[float]:
    """``information_fraction`` at each of several dates, from one count of the analysed
    product-days per date."""
    return _fractions(assignment, seen_until, _planned_end(assignment, horizon))


def _fractions(
    assignment: pl.DataFrame | pl.LazyFrame, seen_until: Sequence[dt.date], end: dt.date | None
) -> list[float]:
    per_date = analysed_rows(assignment.lazy()).group_by("date").len().sort("date").collect()
    dates, counts = per_date["date"].to_list(), per_date["len"].to_numpy().astype(np.int64)
    cumulative = np.concatenate([[0], np.cumsum(counts)])
    planned = int(cumulative[bisect.bisect_right(dates, end)]) if end is not None else 0
    return [
        (int(cumulative[bisect.bisect_right(dates, night)]) / planned if planned else float("nan"))
        for night in seen_until
    ]


def with_sequence(effects: pl.DataFrame, fraction: float, alpha: float = ALPHA) -> pl.DataFrame:
    """The effects table with its confidence sequence appended after the other columns:
    ``cs_low``, ``cs_high`` and ``lift_cs_low``, ``lift_cs_high``. Each is the fixed 95%
    interval's half-width on that side (the bootstrap's percentile interval) stretched by the
    boundary's multiplier over the normal quantile, around the estimate: where the bootstrap
    is symmetric this is the estimate plus or minus the multiplier times its SE."""
    stretch = sequence_multiplier(fraction, alpha) / NormalDist().inv_cdf(1 - alpha / 2)
    return effects.with_columns(
        (pl.col("estimate") - stretch * (pl.col("estimate") - pl.col("ci_low"))).alias("cs_low"),
        (pl.col("estimate") + stretch * (pl.col("ci_high") - pl.col("estimate"))).alias("cs_high"),
        (pl.col("lift") - stretch * (pl.col("lift") - pl.col("lift_low"))).alias("lift_cs_low"),
        (pl.col("lift") + stretch * (pl.col("lift_high") - pl.col("lift"))).alias("lift_cs_high"),
    ).with_columns(pl.col("cs_low", "cs_high", "lift_cs_low", "lift_cs_high").fill_nan(None))


def decision(
    cs_low: float | None,
    cs_high: float | None,
    lift_cs_low: float | None = None,
    lift_cs_high: float | None = None,
    min_effect: float | None = None,
) -> str:
    """A night's decision: stop for an effect when the sequence excludes 0; stop for futility
    when the lift's sequence lies inside plus or minus ``min_effect`` (a relative effect too
    small to matter); else continue."""

    def known(*values: float | None) -> bool:
        return all(v is not None and math.isfinite(v) for v in values)

    if known(cs_low, cs_high) and (cs_low > 0 or cs_high < 0):  # type: ignore[operator]
        return STOP_EFFECT
    inside = min_effect is not None and known(lift_cs_low, lift_cs_high)
    if inside and -min_effect <= lift_cs_low and lift_cs_high <= min_effect:  # type: ignore[operator]
        return STOP_FUTILE
    return CONTINUE
