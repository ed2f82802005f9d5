"""`pricelab hpte` on what real exports look like: killed products, sparse rows, weekly panels,
relabelled ids, and a p-value that agrees with the interval."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.hpte import HeterogeneousPanelEffect
from pricelab_cli.hpte.bootstrap import percentile_p_value, summarise_draws
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2024, 6, 3)


@pytest.fixture(scope="module")
def time_bound(tmp_path_factory):
    """A 120-product time-bound experiment over 21 days with 63 days of history."""
    folder = tmp_path_factory.mktemp("exports")
    products, _ = simulate_catalog(120, 4, 5, seed=5)
    design = make_design("time-bound", salt="exports", start=START, end=START + dt.timedelta(days=20))
    assignment = assign(design, products)
    sim = simulate_sales(products, assignment=assignment, history_days=63, seed=5)
    sales = sim.sales.select("product_id", "date", pl.col("units").cast(pl.Float64))
    sales.write_parquet(folder / "sales.parquet")
    assignment.write_parquet(folder / "assignment.parquet")
    products.write_csv(folder / "products.csv")
    return folder, sales, assignment


def hpte(run_cli, sales, assignment, out, *extra):
    return run_cli(
        "hpte", "--sales", sales, "--assignment", assignment, "--bootstrap", "100", "--trees", "20", "-o", out, *extra
    )


def test_a_product_the_price_killed_stays_in_the_estimate(run_cli, time_bound, tmp_path):
    """A treated product whose units are 0 on every experiment day is not a stock-out: its
    zeros are the effect. It stays in the estimate (n_products, its CATE) and pulls it down."""
    folder, sales, assignment = time_bound
    treated = assignment.filter(pl.col("treated") == 1)["product_id"].unique().sort()
    victim = treated[0]
    killed = sales.with_columns(
        units=pl.when((pl.col("product_id") == victim) & (pl.col("date") >= START)).then(0.0).otherwise(pl.col("units"))
    )
    killed.write_parquet(tmp_path / "killed.parquet")
    base = hpte(
        run_cli,
        folder / "sales.parquet",
        folder / "assignment.parquet",
        tmp_path / "base.csv",
        "--cate-out",
        tmp_path / "base_cate.csv",
    )
    result = hpte(
        run_cli,
        tmp_path / "killed.parquet",
        folder / "assignment.parquet",
        tmp_path / "killed.csv",
        "--cate-out",
        tmp_path / "cate.csv",
        "--outliers-out",
        tmp_path / "outliers.csv",
    )
    assert base.code == 0 and result.code == 0, result.stderr
    before, after = pl.read_csv(tmp_path / "base.csv"), pl.read_csv(tmp_path / "killed.csv")
    assert after["n_products"].item() == before["n_products"].item()
    assert pl.read_csv(tmp_path / "cate.csv").filter(pl.col("product_id") == victim)["cate"].item() is not None
    # Its loss of about its whole level comes off the average over the treated products.
    level = sales.filter((pl.col("product_id") == victim) & (pl.col("date") < START))["units"].mean()
    drop = before["estimate"].item() - after["estimate"].item()
    assert 0.5 * level / len(treated) < drop < 2.0 * level / len(treated), (drop, level, len(treated))
    outliers = pl.read_csv(tmp_path / "outliers.csv")
    assert victim not in outliers.filter(pl.col("action") == "dropped")["product_id"].to_list()
    assert victim not in outliers.filter(pl.col("reason").str.starts_with("stock-out"))["product_id"].to_list()


def test_a_sparse_export_gives_the_estimate_of_its_filled_twin_with_a_note(run_cli, time_bound, tmp_path):
    folder, sales, _ = time_bound
    # Zero days left out as a warehouse export does (each product keeps its first row, where
    # its calendar starts).
    sparse = sales.filter((pl.col("units") != 0) | (pl.col("date") == pl.col("date").min()))
    assert sparse.height < sales.height
    sparse.write_parquet(tmp_path / "sparse.parquet")
    dense = hpte(run_cli, folder / "sales.parquet", folder / "assignment.parquet", tmp_path / "dense.csv")
    thin = hpte(run_cli, tmp_path / "sparse.parquet", folder / "assignment.parquet", tmp_path / "sparse.csv")
    assert dense.code == 0 and thin.code == 0, thin.stderr
    assert "have no row" not in dense.stderr
    assert f"{sales.height - sparse.height:,} of {sales.height:,} analysed product-dates" in thin.stderr
    assert "read as zero sales" in thin.stderr and "--no-fill-zeros" in thin.stderr
    assert (tmp_path / "dense.csv").read_bytes() == (tmp_path / "sparse.csv").read_bytes()
    # With --no-fill-zeros the absent days stay unknown, and the estimate is another one.
    unknown = hpte(
        run_cli, tmp_path / "sparse.parquet", folder / "assignment.parquet", tmp_path / "unknown.csv", "--no-fill-zeros"
    )
    assert unknown.code == 0 and "have no row" not in unknown.stderr
    assert (
        pl.read_csv(tmp_path / "unknown.csv")["estimate"].item()
        != pl.read_csv(tmp_path / "dense.csv")["estimate"].item()
    )


@pytest.fixture(scope="module")
def weekly(tmp_path_factory):
    """Weekly sales (Mondays) of 60 products over 30 weeks."""
    folder = tmp_path_factory.mktemp("weekly")
    rng = np.random.default_rng(7)
    weeks = [START + dt.timedelta(weeks=w) for w in range(-22, 8)]
    ids = np.arange(1, 61)
    sales = pl.DataFrame(
        {
            "product_id": np.repeat(ids, len(weeks)),
            "date": weeks * len(ids),
            "units": rng.poisson(np.repeat(rng.uniform(20, 80, len(ids)), len(weeks))).astype(np.float64),
        }
    ).with_columns(pl.col("date").cast(pl.Date))
    sales.write_parquet(folder / "sales.parquet")
    pl.DataFrame({"product_id": ids}).write_csv(folder / "products.csv")
    return folder


@pytest.mark.parametrize(
    "kind, extra, message",
    [
        (
            "time-bound",
            {"start": START + dt.timedelta(days=2), "end": START + dt.timedelta(days=51)},
            "starts on 2024-06-05, inside the sales period that begins on 2024-06-03",
        ),
        (
            "random-days",
            {"start": START, "end": START + dt.timedelta(days=55), "block_days": 1},
            "is treated on some days and control on others within the sales period that begins on",
        ),
    ],
    ids=["start mid-week", "daily blocks"],
)
def test_a_design_that_does_not_line_up_with_weekly_sales_exits_65(run_cli, weekly, tmp_path, kind, extra, message):
    products = pl.read_csv(weekly / "products.csv")
    assign(make_design(kind, salt="weekly", **extra), products).write_parquet(tmp_path / "a.parquet")
    result = hpte(run_cli, weekly / "sales.parquet", tmp_path / "a.parquet", tmp_path / "e.csv")
    assert result.code == 65, result.stderr
    assert message in result.stderr and "one row every 7 days" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "e.csv").exists()


def test_a_design_of_whole_weeks_runs_on_weekly_sales(run_cli, weekly, tmp_path):
    products = pl.read_csv(weekly / "products.csv")
    design = make_design("random-days", salt="weekly", start=START, end=START + dt.timedelta(days=55), block_days=7)
    assign(design, products).write_parquet(tmp_path / "a.parquet")
    result = hpte(run_cli, weekly / "sales.parquet", tmp_path / "a.parquet", tmp_path / "e.csv")
    assert result.code == 0, result.stderr
    assert "per product per period (7 days)" in result.stderr


def test_ids_as_numbers_or_as_text_give_the_same_bytes(run_cli, time_bound, tmp_path):
    """Integer ids sort 2 < 10, the same ids as text sort "10" < "2": the forest's subsamples
    and the bootstrap's resamples follow a hash of the id text, not the sort."""
    folder, sales, assignment = time_bound
    as_text = pl.col("product_id").cast(pl.String)
    sales.with_columns(as_text).write_parquet(tmp_path / "sales_text.parquet")
    assignment.with_columns(as_text).write_parquet(tmp_path / "assignment_text.parquet")
    numbers = hpte(run_cli, folder / "sales.parquet", folder / "assignment.parquet", tmp_path / "numbers.csv")
    text = hpte(run_cli, tmp_path / "sales_text.parquet", tmp_path / "assignment_text.parquet", tmp_path / "text.csv")
    assert numbers.code == 0 and text.code == 0, text.stderr
    assert (tmp_path / "numbers.csv").read_bytes() == (tmp_path / "text.csv").read_bytes()
    # Rows in another order change nothing either.
    sales.sample(fraction=1.0, shuffle=True, seed=1).write_parquet(tmp_path / "shuffled.parquet")
    shuffled = hpte(run_cli, tmp_path / "shuffled.parquet", folder / "assignment.parquet", tmp_path / "shuffled.csv")
    assert shuffled.code == 0
    assert (tmp_path / "numbers.csv").read_bytes() == (tmp_path / "shuffled.csv").read_bytes()


def test_p_below_005_exactly_when_the_interval_excludes_0():
    """On skewed, shifted and tied bootstrap draws alike."""
    rng = np.random.default_rng(0)
    agree = 0
    for i in range(3000):
        b = int(rng.choice([20, 21, 99, 200, 500]))
        draws = rng.gamma(rng.uniform(0.3, 5), 1.0, b) * rng.choice([-1, 1]) + rng.normal(0, 2)
        if i % 7 == 0:
            draws = np.round(draws)  # ties, and draws at exactly 0
        result = summarise_draws(draws)
        excludes = result.ci_low > 0 or result.ci_high < 0
        assert (result.p_value < 0.05) == excludes, (b, result)
        assert 1 / (b + 1) <= result.p_value <= 1
        agree += excludes
    assert 300 < agree < 2700  # both cases were exercised
    assert percentile_p_value(np.linspace(1, 2, 100)) == pytest.approx(1 / 101)
    assert percentile_p_value(np.linspace(-1, 1, 101)) == pytest.approx(1.0)


def test_the_estimator_reports_p_and_interval_that_agree_on_many_experiments():
    products, _ = simulate_catalog(80, 4, 5, seed=9)
    disagreements = 0
    for rep in range(12):
        design = make_design("random-days", salt=f"p-{rep}", start=START, end=START + dt.timedelta(days=13))
        assignment = assign(design, products)
        sim = simulate_sales(products, assignment=assignment, history_days=42, seed=rep, price_change=-0.02)
        est = HeterogeneousPanelEffect(
            n_bootstrap=200, n_estimators=10, random_state=rep, effect_path=False, n_jobs=1
        ).fit(sim.sales, assignment)
        excludes = est.ci_low_ > 0 or est.ci_high_ < 0
        disagreements += (est.p_value_ < 0.05) != excludes
        assert est.lift_low_ <= est.lift_ <= est.lift_high_
    assert disagreements == 0


def test_sales_that_end_before_the_assignment_does_are_named_in_a_warning(run_cli, time_bound, tmp_path):
    """Sales exported before the experiment is over: the missing dates are named, and the
    estimate is that of the dates with rows."""
    folder, sales, _ = time_bound
    cut = START + dt.timedelta(days=14)
    short = tmp_path / "short.parquet"
    sales.filter(pl.col("date") < cut).write_parquet(short)
    result = hpte(run_cli, short, folder / "assignment.parquet", tmp_path / "e.csv")
    assert result.code == 0, result.stderr
    text = " ".join(result.stderr.split())
    assert "7 of the 21 dates in" in text and "2024-06-17 to 2024-06-23" in text
    assert "the sales end on 2024-06-16" in text
    whole = hpte(run_cli, folder / "sales.parquet", folder / "assignment.parquet", tmp_path / "w.csv")
    assert "have no sales rows at all" not in whole.stderr
