"""The nightly reading against known truth (``sequential_study``; slow: `make test-full`).

A/A experiments read every night: the confidence sequence must exclude 0 on some night in at
most 5% of them, which a study of this size states as "the 95% Wilson interval of the share
reaches down to 5% or below"; daily looks at the fixed interval must come out measurably
above 5% (the error the sequence exists to prevent). A planted +5% effect: the sequence
covers the truth on every night in at least 95% of experiments (same reading of the
interval), and at the planned end it is at most 1.6 times as wide as the fixed interval.
The full study (500 experiments per design) is in docs/method.md; these repeat it smaller on
other seeds (from 1,000 on). Each check runs on both readings of the nights: the nightly job's
(every night a whole `hpte --as-of` run, ``exact``) and monitor's default replay (the past
nights read with the last night's model).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sequential_study as study  # noqa: E402

pytestmark = pytest.mark.slow

FIRST = 1000
AA_REPS = 120
EFFECT_REPS = 100
REAL_REPS = 60


@pytest.mark.parametrize("kind", study.DESIGNS)
def test_a_zero_effect_read_every_night_is_rarely_declared(kind):
    result = study.summary([study.repetition(kind, rep) for rep in range(FIRST, FIRST + AA_REPS)])
    print(kind, result)
    assert result["ever_cs_interval"][0] <= 0.05, result
    assert result["ever_ci"] > result["ever_cs"] and result["ever_ci_interval"][0] > 0.05, result


@pytest.mark.parametrize("kind", study.DESIGNS)
def test_monitors_replay_of_a_zero_effect_is_rarely_declared(kind):
    """monitor's default table: the past nights read with the last night's model."""
    result = study.summary([study.repetition(kind, rep, exact=False) for rep in range(FIRST, FIRST + AA_REPS)])
    print(kind, "replay", result)
    assert result["ever_cs_interval"][0] <= 0.05, result


@pytest.mark.parametrize("exact", [True, False], ids=["nightly", "replay"])
@pytest.mark.parametrize("kind", ["random-days", "time-bound"])
def test_a_planted_effect_is_covered_every_night_and_the_sequence_is_not_too_wide(kind, exact):
    nights = [
        study.repetition(kind, rep, price_change=study.EFFECT_PRICE_CHANGE, exact=exact)
        for rep in range(FIRST, FIRST + EFFECT_REPS)
    ]
    result = study.summary(nights)
    print(kind, result)
    assert (
        result["covered_every_night"] >= 0.90 and study.wilson(sum(n.covered for n in nights), len(nights))[1] >= 0.95
    ), result
    assert result["width_ratio_at_end"] <= 1.6, result


def _real_panel(name: str):
    spec = importlib.util.spec_from_file_location("real_panels", HERE.parent / "real_panels.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["real_panels"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    pytest.importorskip(module._TAFENG.module if name == "tafeng_daily" else module._COMPLETEJOURNEY.module)
    import real_panel_study as real

    loaded = module.load_panel(name, max_products=study.REAL_PRODUCTS)
    return (*real.prepare(loaded.products, loaded.sales, loaded.period_days), loaded.period_days)


@pytest.mark.full
@pytest.mark.parametrize("name", ["tafeng_daily", "completejourney_daily"])
def test_a_real_panel_read_every_night_without_an_effect_is_rarely_declared(name):
    """Real sales as they come (zeros, gaps, bulk orders), a random-days A/A experiment over
    their last four weeks, read every night."""
    products, sales, period_days = _real_panel(name)
    result = study.summary(
        [
            study.real_repetition(products, sales, period_days, "random-days", rep)
            for rep in range(FIRST, FIRST + REAL_REPS)
        ]
    )
    print(name, result)
    assert result["ever_cs_interval"][0] <= 0.05, result


@pytest.mark.full
@pytest.mark.parametrize(
    "kind",
    [
        "time-bound",
        "triggered",
        "crossover",
    ],
)
def test_a_real_panel_between_products_experiment_read_every_night_is_rarely_declared(kind):
    """Designs that compare products that differ (or phases that differ) on Ta Feng: before
    the bootstrap took the swing screen again in every draw (hpte.reselect), the time-bound
    sequence stopped 24% of 150 A/A experiments, and this test failed; crossover still
    stopped 4 of these 30 until the de-treating factor weighed its cells by their precision
    (detreat._precision)."""
    products, sales, period_days = _real_panel("tafeng_daily")
    result = study.summary(
        [study.real_repetition(products, sales, period_days, kind, rep) for rep in range(FIRST, FIRST + 30)]
    )
    print(kind, result)
    assert result["ever_cs_interval"][0] <= 0.05, result


@pytest.mark.full
@pytest.mark.parametrize("kind", study.DESIGNS)
@pytest.mark.parametrize("name", ["tafeng_daily", "completejourney_daily"])
def test_monitors_replay_on_a_real_panel_without_an_effect_is_rarely_declared(name, kind):
    """monitor's default table (past nights read with the last night's model) on real sales,
    every design: 60 A/A experiments each."""
    products, sales, period_days = _real_panel(name)
    result = study.summary(
        [
            study.real_repetition(products, sales, period_days, kind, rep, exact=False)
            for rep in range(FIRST, FIRST + REAL_REPS)
        ]
    )
    print(name, kind, "replay", result)
    assert result["ever_cs_interval"][0] <= 0.05, result
