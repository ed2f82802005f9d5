import datetime as dt
import json

import polars as pl
import pytest

from pricelab_cli.design import make_design
from pricelab_cli.simulate import simulate_catalog, simulate_sales


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("power")
    products, edges = simulate_catalog(120, 4, seed=21)
    products.write_csv(d / "products.csv")
    edges.write_parquet(d / "edges.parquet")
    simulate_sales(
        products, edges=edges, end=dt.date(2026, 3, 1), history_days=70, price_change=0.0, seed=22
    ).sales.write_parquet(d / "history.parquet")
    start, end = dt.date(2026, 1, 1), dt.date(2026, 1, 21)
    for kind in ("time-bound", "random-days"):
        spec = make_design(kind, salt="s1", start=start, end=end)
        (d / f"{kind}.json").write_text(json.dumps(spec.to_dict()))
    return d


def test_power_compares_designs_and_draws_the_plot(run_cli, files):
    d = files
    result = run_cli(
        "power",
        "--history",
        d / "history.parquet",
        "--products",
        d / "products.csv",
        "--design",
        d / "time-bound.json",
        "--design",
        d / "random-days.json",
        "--reps",
        "4",
        "--jobs",
        "1",
        "--bootstrap",
        "50",
        "--seed",
        "2",
        "-o",
        d / "power.csv",
        "--plot",
        d / "power.png",
        "--repetitions-out",
        d / "reps.parquet",
    )
    assert result.code == 0, result.stderr
    summary = pl.read_csv(d / "power.csv")
    assert summary["design"].to_list() == ["time-bound", "random-days"]
    assert summary.columns[:7] == ["design", "bias", "se", "rmse", "power", "coverage", "mde"]
    assert pl.read_parquet(d / "reps.parquet").height == 8
    assert (d / "power.png").read_bytes()[:4] == b"\x89PNG"
    assert "designs on this history" in result.stderr


def test_power_with_clusters_adds_cluster_level_twins(run_cli, files):
    d = files
    pl.read_csv(d / "products.csv").select("product_id", pl.col("community").alias("cluster_id")).write_csv(
        d / "clusters.csv"
    )
    result = run_cli(
        "power",
        "--history",
        d / "history.parquet",
        "--products",
        d / "products.csv",
        "--design",
        d / "random-days.json",
        "--clusters",
        d / "clusters.csv",
        "--edges",
        d / "edges.parquet",
        "--spillover",
        "0.5",
        "--reps",
        "3",
        "--interval-reps",
        "0",
        "--jobs",
        "1",
        "-o",
        "-",
        "-q",
    )
    assert result.code == 0, result.stderr
    rows = pl.read_csv(result.stdout)
    assert rows["design"].to_list() == ["random-days", "random-days [clusters]"]
    assert rows["coverage"].null_count() == 2, "no intervals were computed"


def test_power_errors_name_the_problem(run_cli, files):
    d = files
    base = [
        "power",
        "--history",
        d / "history.parquet",
        "--products",
        d / "products.csv",
        "--design",
        d / "random-days.json",
    ]
    spill = run_cli(*base, "--spillover", "0.3", "-o", d / "x.csv")
    assert spill.code == 2 and "--spillover needs --edges" in spill.stderr
    missing = run_cli(*base, "--outcome", "clicks", "-o", d / "x.csv")
    assert missing.code == 65 and "missing column 'clicks'" in missing.stderr
    assert not (d / "x.csv").exists()


def history_args(d) -> list:
    return ["power", "--history", d / "history.parquet", "--products", d / "products.csv"]


def test_recommend_writes_the_grid_and_a_design_that_assign_replays(run_cli, files, tmp_path):
    """``--recommend``: one grid row per design and carryover scenario, one design flagged,
    the recommendation explained on stderr, and ``--recommend-out`` a design that ``assign``
    takes as it is (the window and share of the first --design)."""
    d = files
    args = [*history_args(d), "--design", d / "random-days.json", "--recommend", "--carryover-days", "0,2"]
    args += ["--reps", "5"]
    result = run_cli(
        *args,
        "--blocks",
        "1,7",
        "--seed",
        "3",
        "-o",
        tmp_path / "grid.csv",
        "--recommend-out",
        tmp_path / "chosen.json",
        "--repetitions-out",
        tmp_path / "reps.parquet",
    )
    assert result.code == 0, result.stderr
    grid = pl.read_csv(tmp_path / "grid.csv")
    assert grid.columns[:5] == ["design", "kind", "block_days", "blackout_days", "carryover_days"]
    designs = grid["design"].unique(maintain_order=True).to_list()
    assert designs[:3] == ["time-bound", "random-days 1d", "random-days 7d"]
    assert "balanced-switchback 7d blackout 4d" in designs and grid.height == 2 * len(designs)
    assert sorted(set(grid["carryover_days"].to_list())) == [0.0, 2.0]
    chosen = grid.filter(pl.col("recommended"))
    assert chosen["design"].n_unique() == 1 and chosen.height == 2
    assert "Recommended design: " + chosen["design"][0] in " ".join(result.stderr.split())
    spec = json.loads((tmp_path / "chosen.json").read_text())
    assert spec["kind"] == chosen["kind"][0] and spec["start"] == "2026-01-01" and spec["salt_from"] == "seed"
    assert pl.read_parquet(tmp_path / "reps.parquet").height == len(designs) * 5 * 2
    assigned = run_cli("assign", "--design", tmp_path / "chosen.json", "--products", d / "products.csv", "-o", "-")
    assert assigned.code == 0, assigned.stderr
    again = run_cli(*args, "--blocks", "1,7", "--seed", "3", "-o", tmp_path / "again.csv", "-q")
    assert again.code == 0 and (tmp_path / "again.csv").read_bytes() == (tmp_path / "grid.csv").read_bytes()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--recommend-out", "x.json"], "--recommend-out needs --recommend"),
        (["--carryover-days", "0,3"], "needs --recommend"),
        (["--recommend", "--carryover-days", "0,x"], "'x' is not a number of days"),
        (["--recommend", "--blocks", "7,0"], "'0' is not a whole number of days"),
        (["--recommend", "--spillover", "0.5"], "--recommend does not plant --spillover"),
    ],
)
def test_recommend_flags_that_cannot_run_are_usage_errors(run_cli, files, tmp_path, extra, message):
    d = files
    result = run_cli(
        *history_args(d),
        "--design",
        d / "random-days.json",
        *extra,
        "-o",
        tmp_path / "grid.csv",
    )
    assert result.code == 2 and message in " ".join(result.stderr.split())
    assert not (tmp_path / "grid.csv").exists()
