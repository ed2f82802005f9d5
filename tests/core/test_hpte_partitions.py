"""hpte over partitions of products: the same estimate however the panel is cut or ordered.

The sales are read as a stream and laid out in partitions of products (``hpte.panel``); each
step maps over the partitions and reduces per-product summaries. These tests hold the
partitioned run to the single-partition one, and to itself under any row order or input
kind: equal to the bit (sums over products are taken in fixed blocks, in a fixed order).
"""

from __future__ import annotations

import io as stdio
import pathlib
import warnings

import numpy as np
import polars as pl
import pytest

from pricelab_cli.errors import PricelabWarning
from pricelab_cli.hpte import estimate_hpte
from pricelab_cli.hpte.panel import partition_panel

from tests.core.test_hpte import simulated


def run(sales, assignment, products=None, **kw):
    kw.setdefault("n_jobs", 1)
    return estimate_hpte(
        sales, assignment, outcomes=["units"], features=products, n_bootstrap=200, seed=3, n_estimators=20, **kw
    )


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    # Blocks of 16 products, so that a 400-product catalog spans many partitions.
    monkeypatch.setattr("pricelab_cli.hpte.panel.SUM_BLOCK", 16)


@pytest.fixture(scope="module", params=["random-days", "time-bound"])
def spoiled(request):
    # Contaminated sales exercise every robust step: screens, stock-outs, winsorising.
    products, assignment, sim = simulated(request.param, n=400, seed=5, contamination=0.03)
    return products.drop("community"), assignment, sim.sales


def test_partitions_give_the_single_partition_estimate_to_the_bit(spoiled):
    products, assignment, sales = spoiled
    whole = run(sales, assignment, products)
    rows = sales.height // 7
    cut = run(sales, assignment, products, rows_per_partition=rows)
    # Worker processes (each loads its partitions from the scratch folder) change nothing.
    pooled = run(sales, assignment, products, rows_per_partition=rows, n_jobs=2)
    assert pooled.effects.equals(cut.effects) and pooled.cate.equals(cut.cate)
    with partition_panel(sales, assignment, ["units"], rows_per_partition=rows) as panel:
        assert panel.n_partitions >= 7
    assert cut.effects.equals(whole.effects)
    assert whole.effects["n_outliers"].item() > 0  # the robust step dropped products: the screens ran
    assert cut.cate.equals(whole.cate)
    assert cut.outliers.equals(whole.outliers)
    # The effect path (plot data) adds per-period sums partition by partition.
    np.testing.assert_allclose(cut.paths["difference"].to_numpy(), whole.paths["difference"].to_numpy(), rtol=1e-9, atol=1e-12)
    assert cut.paths["n_treated"].equals(whole.paths["n_treated"])


def csv_bytes(df: pl.DataFrame) -> bytes:
    buf = stdio.BytesIO()
    df.write_csv(buf)
    return buf.getvalue()


def test_row_order_and_input_kind_do_not_change_a_byte(spoiled, tmp_path: pathlib.Path):
    products, assignment, sales = spoiled
    rows = sales.height // 3
    reference = run(sales, assignment, rows_per_partition=rows)
    shuffled = sales.sample(fraction=1.0, shuffle=True, seed=11)
    by_date = sales.sort("date", "product_id")
    sales.write_parquet(tmp_path / "sales.parquet")
    for other in (shuffled, by_date, pl.scan_parquet(tmp_path / "sales.parquet")):
        result = run(other, assignment, rows_per_partition=rows)
        assert csv_bytes(result.effects) == csv_bytes(reference.effects)
        assert csv_bytes(result.cate) == csv_bytes(reference.cate)


def test_rows_after_the_experiment_are_not_read_and_scratch_is_removed(spoiled, tmp_path, monkeypatch):
    products, assignment, sales = spoiled
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    end = assignment["date"].max()
    later = sales.filter(pl.col("date") == end).with_columns(
        pl.col("date") + pl.duration(days=400), pl.lit(-5, dtype=sales.schema["units"]).alias("units")
    )
    # Negative outcomes after the end would draw a warning if they were read.
    with warnings.catch_warnings():
        warnings.simplefilter("error", PricelabWarning)
        result = run(pl.concat([sales, later]), assignment, rows_per_partition=sales.height // 4)
    reference = run(sales, assignment, rows_per_partition=sales.height // 4)
    assert result.effects["estimate"].item() == pytest.approx(reference.effects["estimate"].item(), rel=1e-9)
    assert not list(tmp_path.glob("pricelab-panel-*"))
