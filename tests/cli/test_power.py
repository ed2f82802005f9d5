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
