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
    np.testing.assert_allclose(
        cut.paths["difference"].to_numpy(), whole.paths["difference"].to_numpy(), rtol=1e-9, atol=1e-12
    )
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


def test_a_large_forest_grows_on_a_seeded_sample_of_cells_and_leaves_every_cell(spoiled, monkeypatch):
    from econml.grf import CausalForest

    products, assignment, sales = spoiled
    full = run(sales, assignment, products)
    fitted_on = []
    original = CausalForest.fit

    def spy(self, X, T, y, **kw):
        fitted_on.append(len(y))
        return original(self, X, T, y, **kw)

    monkeypatch.setattr(CausalForest, "fit", spy)
    monkeypatch.setattr("pricelab_cli.hpte.forest.FOREST_CELLS", 300)
    pooled = run(sales, assignment, products)
    again = run(sales, assignment, products)
    assert fitted_on == [300, 300]
    assert pooled.effects.equals(again.effects)
    # Every matched product still gets a CATE: all cells were dropped down the trees.
    assert pooled.cate["cate"].null_count() == full.cate["cate"].null_count()
    a, b = full.effects.row(0, named=True), pooled.effects.row(0, named=True)
    assert abs(a["estimate"] - b["estimate"]) < 0.5 * a["se"]


@pytest.mark.parametrize(
    "ids, queries",
    [
        ([3, 5, 9, 10], [9, 3, 4, 11, -2, 10]),  # a table (dense range)
        ([-(10**15), 7, 10**15], [7, 8, 10**15, -(10**15)]),  # a binary search (sparse)
        (["a1", "b2", "c3"], ["c3", "zz", "a1"]),  # a join (text)
    ],
    ids=["table", "search", "join"],
)
def test_id_lookup_codes_known_ids_and_flags_the_rest(ids, queries):
    from pricelab_cli.hpte.panel import IdLookup

    lookup = IdLookup.of(pl.Series(ids))
    code, known = lookup.codes(pl.Series(queries))
    expected = [ids.index(q) for q in queries if q in ids]
    assert code.tolist() == expected
    assert known.tolist() == [q in ids for q in queries]


def test_tree_groups_and_bootstrap_chunks_give_the_same_bits_in_worker_processes():
    from pricelab_cli.engine import LocalEngine
    from pricelab_cli.hpte.bootstrap import bootstrap_se
    from pricelab_cli.hpte.forest import leaf_second_difference

    rng = np.random.default_rng(4)
    n, trees = 3000, 9
    leaves = rng.integers(0, 40, size=(n, trees)) * 2 + 1
    treated = rng.integers(0, 2, n).astype(np.int8)
    y = rng.normal(size=n) + treated
    weight = np.full(n, 0.5)
    here = leaf_second_difference(leaves, treated, y, weight)
    pooled = leaf_second_difference(leaves, treated, y, weight, LocalEngine(2))
    assert here.estimate == pooled.estimate
    assert np.array_equal(here.influence, pooled.influence) and np.array_equal(here.cate, pooled.cate, equal_nan=True)
    stratum = rng.integers(1, 4, n)
    a = bootstrap_se(here.estimate, here.influence, stratum, 101, seed=8)
    b = bootstrap_se(here.estimate, here.influence, stratum, 101, seed=8, engine=LocalEngine(2))
    assert np.array_equal(a.draws, b.draws) and len(a.draws) == 101


def test_detrended_outcomes_for_ipw_are_the_same_from_partitions(spoiled, monkeypatch):
    from pricelab_cli.hpte import detrended_outcomes

    products, assignment, sales = spoiled
    whole = detrended_outcomes(sales, assignment, "units")
    monkeypatch.setattr("pricelab_cli.hpte.panel.PARTITION_ROWS", sales.height // 6)
    cut = detrended_outcomes(sales.sample(fraction=1.0, shuffle=True, seed=2).lazy(), assignment, "units")
    assert cut.equals(whole)


@pytest.mark.parametrize("kind", ["crossover", "triggered", "random-days"])
@pytest.mark.parametrize("clustered", [False, True])
def test_a_streamed_assignment_gives_the_plan_of_the_table_read_whole(kind, clustered, monkeypatch):
    from pricelab_cli.hpte import plan as layout

    _, assignment, _ = simulated(kind, n=120, seed=8)
    if clustered:
        assignment = assignment.with_columns((pl.col("product_id").cast(pl.Int64) // 3).alias("cluster_id"))
    # Small batches, so the grid and the first arms are filled over many of them.
    monkeypatch.setattr(layout, "PLAN_CHUNK_ROWS", 257)
    shuffled = assignment.sample(fraction=1.0, shuffle=True, seed=1)
    streamed = layout._plan_streamed(shuffled.lazy(), "assignment")
    whole = layout.plan_panel(assignment, "assignment")
    assert streamed.products.equals(whole.products)
    for name in ("state_grid", "start_day", "first_arm", "unit"):
        assert np.array_equal(getattr(streamed, name), getattr(whole, name)), name
    assert (streamed.first_day, streamed.span, streamed.unit_label) == (whole.first_day, whole.span, whole.unit_label)
    if kind == "crossover":
        assert (whole.state_grid == layout.BLACKOUT).any()


def test_a_failed_check_on_a_streamed_assignment_names_what_the_table_read_whole_names():
    from pricelab_cli.errors import PricelabError
    from pricelab_cli.hpte.panel import plan_panel

    _, assignment, _ = simulated("random-days", n=60, seed=9)
    repeated = pl.concat([assignment, assignment.head(1)])
    split = assignment.with_columns(pl.col("product_id").alias("cluster_id")).with_columns(
        pl.when(pl.col("date") == pl.col("date").max())
        .then(pl.lit(-1))
        .otherwise(pl.col("cluster_id"))
        .alias("cluster_id")
    )
    for bad in (repeated, split):
        with pytest.raises(PricelabError) as whole:
            plan_panel(bad, "a.parquet")
        with pytest.raises(PricelabError) as streamed:
            plan_panel(bad.lazy(), "a.parquet")
        assert type(streamed.value) is type(whole.value) and str(streamed.value) == str(whole.value)


class _Recorder:
    """An engine's progress counter that keeps what it was told."""

    def __init__(self) -> None:
        self.stages: list[list] = []  # [name, total, done]

    def add(self, total: int, stage: str = "tasks") -> None:
        self.stages.append([stage, total, 0])

    def done(self, n: int = 1) -> None:
        self.stages[-1][2] += n


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_every_stage_is_named_and_announces_its_whole_size_before_it_runs(spoiled, n_jobs):
    """Progress is a sequence of named stages, each finishing exactly at the size it
    announced when it began (no bar whose total grows, none left at 0 while others work)."""
    from pricelab_cli.engine import LocalEngine

    products, assignment, sales = spoiled
    counter = _Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PricelabWarning)
        run(sales, assignment, products, rows_per_partition=2_000, engine=LocalEngine(n_jobs, counter))
    names = [name for name, _, _ in counter.stages]
    assert all(done == total > 0 for _, total, done in counter.stages), counter.stages
    expected = [
        "sales rows read",
        "partitions sorted and checked",
        "units: baseline models",
        "units: trading-day shocks",
        "units: baselines and first differences",
        "units: causal forest (20 trees)",
        "units: bootstrap (200 draws)",
    ]
    assert [n for n in names if n in expected] == expected, names
    # The rows announced are the sales table's rows up to the experiment's last day.
    last = assignment["date"].max()
    read = next(total for name, total, _ in counter.stages if name == "sales rows read")
    assert read == sales.filter(pl.col("date") <= last).height
