"""monitor's one-pass replay of past nights (``hpte.replay``): tonight replayed is tonight's
run, each night's cells are its own rows' means, and the many-statistic bootstrap path is the
same resampling as the one that gathers rows."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import polars as pl
import pytest

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.hpte import bootstrap
from pricelab_cli.hpte.detrend import detrend_partitions
from pricelab_cli.hpte.estimate import HeterogeneousPanelEffect, estimate_hpte
from pricelab_cli.hpte.panel import partition_panel
from pricelab_cli.hpte.replay import night_cells
from pricelab_cli.sequential import information_fraction, information_fractions
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2024, 6, 3)
EPOCH = dt.date(1970, 1, 1)


def _experiment(kind: str, n: int = 400, seed: int = 5):
    products, _ = simulate_catalog(n, 4, 5, seed=seed)
    extra = {"phase_days": 7, "blackout_days": 2} if kind == "crossover" else {"end": START + dt.timedelta(days=13)}
    design = make_design(kind, salt=f"replay-{kind}", start=START, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assignment = assign(design, products)
        sim = simulate_sales(products, assignment=assignment, history_days=56, seed=seed, price_change=-0.05)
    return sim.sales, assignment


def _days(assignment: pl.DataFrame) -> np.ndarray:
    dates = assignment.filter(~pl.col("blackout").fill_null(False)) if "blackout" in assignment.columns else assignment
    return np.array([(d - EPOCH).days for d in dates["date"].unique().sort()], dtype=np.int64)


@pytest.mark.parametrize("kind", ["random-days", "time-bound", "crossover"])
def test_tonight_replayed_is_tonights_estimate(kind):
    """The replay at tonight's date gives tonight's point estimate to the last bit and the
    same products; its SE (other resamples) within 15%. Every earlier night is a real
    estimate of its own."""
    sales, assignment = _experiment(kind)
    days = _days(assignment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with partition_panel(sales, assignment, ["units"]) as panel:
            est = HeterogeneousPanelEffect(n_bootstrap=300, n_estimators=30, n_jobs=1)
            est.fit_panel(panel, "units", nights=days)
    tonight = est.nights_[-1]
    assert tonight["estimate"] == est.estimate_
    assert tonight["n_products"] == est.n_products_ and tonight["n_outliers"] == est.n_outliers_
    assert tonight["se"] == pytest.approx(est.se_, rel=0.15)
    assert tonight["lift"] == pytest.approx(est.lift_, rel=1e-12)
    earlier = [row for row in est.nights_[:-1] if row is not None]
    assert len(earlier) >= len(days) - 2
    assert all(np.isfinite(row["se"]) and row["se"] > 0 for row in earlier)
    # Information grows: the SE at the first night with an estimate is above tonight's.
    assert earlier[0]["se"] > 1.3 * est.se_
    # A past night read with tonight's model is near that night's own run: the estimate
    # within half an SE, the SE within 25% (a bootstrap whose units fell into small strata
    # came out 15-25% narrow).
    for k in (4, 8):
        night = EPOCH + dt.timedelta(days=int(days[k]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            then = estimate_hpte(sales, assignment, as_of=night, n_bootstrap=300, n_estimators=30, n_jobs=1)
        row = then.effects.row(0, named=True)
        assert abs(est.nights_[k]["estimate"] - row["estimate"]) < 0.5 * row["se"], (k, est.nights_[k], row)
        assert est.nights_[k]["se"] == pytest.approx(row["se"], rel=0.25), (k, est.nights_[k], row)


def test_each_nights_cells_are_the_means_of_its_own_rows():
    """Night cells from tonight's residuals: tonight's are the estimator's own cells, and an
    earlier night's are the cells of the rows up to it (rows only accumulate)."""
    sales, assignment = _experiment("random-days", n=120)
    days = _days(assignment)
    with partition_panel(sales, assignment, ["units"]) as panel:
        detrended = detrend_partitions(panel, "units", robust=True)
        tonight, detrended = detrended.take_cells()
        nights = night_cells(panel, detrended, tonight, days)
        last = nights[-1]
        for field in ("code", "treated", "first_difference", "n_rows", "observed", "detreat_slope"):
            np.testing.assert_array_equal(getattr(last, field), getattr(tonight, field), err_msg=field)
        rows = [int(night.n_rows.sum()) for night in nights]
        assert rows == sorted(rows) and rows[0] < rows[-1]
        # Night 3's cells: the mean residual of each cell's rows up to day 3, by hand.
        three = nights[2]
        part = panel.handles()[0].load()
        by_hand = detrended.for_partition(panel.handles()[0]).residuals(part)
        usable = by_hand.usable & ~part.pre & (part.dates[part.date_index] <= days[2])
        key = part.code[usable] * 2 + part.treated[usable]
        sums = np.bincount(key, weights=by_hand.residual[usable], minlength=2 * part.n_products)
        counts = np.bincount(key, minlength=2 * part.n_products)
        local = three.code < part.n_products
        at = three.code[local] * 2 + three.treated[local]
        np.testing.assert_allclose(three.first_difference[local], sums[at] / counts[at], rtol=1e-12)


@pytest.mark.parametrize("width", [2, bootstrap.WIDE_COLUMNS + 1])
def test_the_counting_path_resamples_as_the_gathering_path(monkeypatch, width):
    """Several statistics switch the draws from gathering each unit's rows to counting each
    unit's picks; with the same picks (one batch each) the shifts agree to rounding."""
    rng = np.random.default_rng(3)
    n, draws = 500, 40
    psi = rng.normal(size=(n, 1))
    stratum = rng.integers(0, 2, n)
    monkeypatch.setattr(bootstrap, "BATCH_ENTRIES", 10**9)
    many = np.concatenate([psi, rng.normal(size=(n, width - 1))], axis=1)
    gathered = bootstrap._chunk_shifts(bootstrap._DrawChunk((psi, stratum), draws, 11, 0))
    counted = bootstrap._chunk_shifts(bootstrap._DrawChunk((many, stratum), draws, 11, 0))
    np.testing.assert_allclose(counted[:, 0], gathered[:, 0], atol=1e-9)


def test_information_fractions_at_once_match_one_at_a_time():
    _, assignment = _experiment("crossover", n=60)
    nights = sorted(assignment["date"].unique().to_list())
    at_once = information_fractions(assignment, nights)
    assert at_once == [information_fraction(assignment, night)[0] for night in nights]
    assert at_once[-1] == 1.0 and all(a <= b for a, b in zip(at_once, at_once[1:]))


def test_the_replay_does_not_depend_on_the_partitions(monkeypatch):
    """Past nights from a panel cut into partitions of a few products are the same numbers
    as from one partition (each night's cells are gathered partition by partition)."""
    monkeypatch.setattr("pricelab_cli.hpte.panel.SUM_BLOCK", 16)
    sales, assignment = _experiment("random-days", n=150)
    with partition_panel(sales, assignment, ["units"], rows_per_partition=2_000) as panel:
        assert panel.n_partitions >= 5
    nights = sorted(assignment["date"].unique().to_list())[:-1]
    common = dict(n_bootstrap=100, n_estimators=10, n_jobs=1, effect_paths=False, nights=nights, sequential=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = estimate_hpte(sales, assignment, **common).nights
        cut = estimate_hpte(sales, assignment, rows_per_partition=2_000, **common).nights
    assert whole is not None and cut is not None and whole.height == len(nights)
    assert cut.equals(whole)
