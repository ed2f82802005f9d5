"""The confidence sequence's boundary, the as-of cut and the nightly decision, against known
truth: a Brownian motion in information time (what the nightly estimate is, asymptotically)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from pricelab_cli.errors import UsageError
from pricelab_cli.sequential import (
    CONTINUE,
    STOP_EFFECT,
    STOP_FUTILE,
    cut_as_of,
    decision,
    information_fraction,
    mixture_tuning,
    sequence_multiplier,
)

START = dt.date(2024, 6, 3)
Z = 1.959963984540054


def _nightly_paths(n_paths: int, nights: int, seed: int, growth=None):
    """Estimates night by night of a zero effect whose information grows as ``growth`` (a
    share of the end's per night), with SE 1 at the end: cumulative sums of independent
    increments, as a mean over more and more days is."""
    rng = np.random.default_rng(seed)
    fraction = np.arange(1, nights + 1) / nights if growth is None else np.asarray(growth)
    info = fraction  # information at the end is 1 (SE 1)
    steps = np.diff(np.concatenate([[0.0], info]))
    score = np.cumsum(rng.standard_normal((n_paths, nights)) * np.sqrt(steps), axis=1)
    estimate = score / info
    se = 1 / np.sqrt(info)
    return estimate, se, fraction


def test_the_sequence_is_at_most_1_6_times_the_fixed_interval_at_the_planned_end():
    ratio = sequence_multiplier(1.0) / Z
    assert 1.4 < ratio <= 1.6, ratio
    # r minimises the width at the end: a little more or less is wider.
    r = mixture_tuning()
    width = lambda r: (1 + r) * math.log((1 + r) / (r * 0.05**2))  # noqa: E731
    assert width(r) < width(r * 1.05) and width(r) < width(r / 1.05)


def test_the_sequence_is_wider_early_and_never_narrower_than_the_fixed_interval():
    early, end, late = (sequence_multiplier(t) for t in (1 / 28, 1.0, 2.0))
    assert early > end and late > Z and end > Z
    assert math.isnan(sequence_multiplier(0.0))


@pytest.mark.parametrize("nights", [7, 28, 84])
def test_a_zero_effect_read_every_night_is_excluded_at_most_5_percent_of_the_time(nights):
    """20,000 experiments, a look every night: the sequence ever excludes 0 in at most 5%
    (binomial 99.9% margin 0.5 points); daily looks at the fixed interval do far worse."""
    estimate, se, fraction = _nightly_paths(20_000, nights, seed=nights)
    multiplier = np.array([sequence_multiplier(t) for t in fraction])
    ever_cs = (np.abs(estimate) > multiplier * se).any(axis=1).mean()
    ever_ci = (np.abs(estimate) > Z * se).any(axis=1).mean()
    assert ever_cs <= 0.05 + 0.005, ever_cs
    assert ever_ci > 0.12, ever_ci  # naive peeking: 2.5 to 5 times the nominal rate


def test_the_sequence_holds_when_information_grows_unevenly():
    """Information that comes faster early (products entering, a sales peak) than the share of
    product-days says: the boundary is still crossed at most 5% of the time."""
    nights = 28
    growth = np.sqrt(np.arange(1, nights + 1) / nights)  # information saturates
    estimate, se, _ = _nightly_paths(20_000, nights, seed=5, growth=growth)
    calendar = np.arange(1, nights + 1) / nights
    multiplier = np.array([sequence_multiplier(t) for t in calendar])
    assert (np.abs(estimate) > multiplier * se).any(axis=1).mean() <= 0.055


def _assignment(blackout_days: int = 0) -> pl.DataFrame:
    dates = [START + dt.timedelta(days=d) for d in range(10)]
    return pl.DataFrame(
        {
            "product_id": [p for p in range(4) for _ in dates],
            "date": dates * 4,
            "treated": [(p + d) % 2 == 0 for p in range(4) for d in range(10)],
            "blackout": [d < blackout_days for _ in range(4) for d in range(10)],
        }
    )


def test_as_of_keeps_the_rows_up_to_the_date_and_refuses_a_date_before_the_first_analysed_day():
    plan = _assignment(blackout_days=2)
    cut = cut_as_of(plan, START + dt.timedelta(days=4))
    assert cut["date"].max() == START + dt.timedelta(days=4) and cut.height == 20
    with pytest.raises(
        UsageError, match=r"--as-of 2024-06-04 is before the experiment's first analysed day, 2024-06-05"
    ):
        cut_as_of(plan, START + dt.timedelta(days=1))


def test_information_is_the_share_of_planned_analysed_product_days_seen():
    plan = _assignment(blackout_days=2)  # 8 analysed days of 4 products
    fraction, end = information_fraction(plan, START + dt.timedelta(days=3))
    assert (fraction, end) == (2 / 8, START + dt.timedelta(days=9))
    fraction, _ = information_fraction(plan, START + dt.timedelta(days=3), horizon=START + dt.timedelta(days=5))
    assert fraction == 2 / 4
    with pytest.raises(UsageError, match="--sequential-horizon"):
        information_fraction(plan, START, horizon=START)


@pytest.mark.parametrize(
    ("interval", "lift", "min_effect", "said"),
    [
        ((0.1, 0.5), (0.01, 0.05), None, STOP_EFFECT),
        ((-0.5, -0.1), (-0.05, -0.01), 0.02, STOP_EFFECT),
        ((-0.1, 0.1), (-0.01, 0.015), 0.02, STOP_FUTILE),
        ((-0.1, 0.1), (-0.01, 0.03), 0.02, CONTINUE),
        ((-0.1, 0.1), (-0.01, 0.015), None, CONTINUE),
        ((float("nan"), float("nan")), (None, None), 0.02, CONTINUE),
    ],
)
def test_each_night_says_continue_or_why_it_stops(interval, lift, min_effect, said):
    assert decision(*interval, *lift, min_effect) == said
