import json

import polars as pl


def test_catalog_then_sales_from_an_assignment(run_cli, tmp_path):
    d = tmp_path
    assert (
        run_cli(
            "simulate",
            "catalog",
            "--n-products",
            "60",
            "--n-groups",
            "3",
            "--seed",
            "1",
            "-o",
            d / "products.csv",
            "--edges-out",
            d / "edges.parquet",
            "-q",
        ).code
        == 0
    )
    products = pl.read_csv(d / "products.csv")
    assert {"product_id", "category", "quality", "brand", "base_price", "community"} <= set(products.columns)
    assert pl.read_parquet(d / "edges.parquet").columns[:3] == ["src", "dst", "weight"]
    assert (
        run_cli(
            "design",
            "time-bound",
            "--start",
            "2026-03-02",
            "--end",
            "2026-03-15",
            "--seed",
            "2",
            "-o",
            d / "design.json",
            "-q",
        ).code
        == 0
    )
    assert (
        run_cli(
            "assign",
            "--design",
            d / "design.json",
            "--products",
            d / "products.csv",
            "-o",
            d / "assignment.parquet",
            "-q",
        ).code
        == 0
    )
    result = run_cli(
        "simulate",
        "sales",
        "--products",
        d / "products.csv",
        "--assignment",
        d / "assignment.parquet",
        "--edges",
        d / "edges.parquet",
        "--history-days",
        "28",
        "--seed",
        "3",
        "-o",
        d / "sales.csv.gz",
        "--truth-out",
        d / "truth.json",
        "--product-truth-out",
        d / "pt.csv",
    )
    assert result.code == 0, result.stderr
    sales = pl.read_csv(d / "sales.csv.gz")
    assert sales.height == 60 * (28 + 14)
    assert sales.columns == ["product_id", "date", "units", "price", "revenue"]
    truth = json.loads((d / "truth.json").read_text())
    assert truth["n_products"] == 60 and truth["effect"] > 0 and truth["provenance"]["seed"] == 3
    assert "true effect" in result.stderr
    assert pl.read_csv(d / "pt.csv").height == 60


def test_history_only_needs_a_date_and_bad_values_are_usage_errors(run_cli, tmp_path):
    (tmp_path / "p.csv").write_text("product_id\n1\n2\n")
    no_dates = run_cli("simulate", "sales", "--products", tmp_path / "p.csv", "-o", tmp_path / "s.csv")
    assert no_dates.code == 65 and "no dates to simulate" in no_dates.stderr
    bad = run_cli(
        "simulate",
        "sales",
        "--products",
        tmp_path / "p.csv",
        "--end",
        "2026-01-31",
        "--promo-rate",
        "1.5",
        "-o",
        tmp_path / "s.csv",
    )
    assert bad.code == 2 and "--promo-rate must be a finite number between 0 and 1; got 1.5" in bad.stderr
    assert not (tmp_path / "s.csv").exists()
    ok = run_cli(
        "simulate",
        "sales",
        "--products",
        tmp_path / "p.csv",
        "--end",
        "2026-01-31",
        "--history-days",
        "10",
        "-o",
        "-",
        "-q",
    )
    assert ok.code == 0 and len(ok.text.splitlines()) == 1 + 2 * 10


def test_contamination_writes_a_spoiled_panel_and_its_clean_twin(run_cli, tmp_path):
    d = tmp_path
    assert (
        run_cli(
            "simulate",
            "catalog",
            "--n-products",
            "100",
            "--n-groups",
            "4",
            "--seed",
            "1",
            "-o",
            d / "products.csv",
            "-q",
        ).code
        == 0
    )
    result = run_cli(
        "simulate",
        "sales",
        "--products",
        d / "products.csv",
        "--end",
        "2026-03-31",
        "--history-days",
        "60",
        "--contamination",
        "0.08",
        "--contamination-kinds",
        "noise,stockout",
        "--seed",
        "4",
        "-o",
        d / "sales.parquet",
        "--clean-out",
        d / "clean.parquet",
        "--truth-out",
        d / "truth.json",
        "-q",
    )
    assert result.code == 0, result.stderr
    sales, clean = pl.read_parquet(d / "sales.parquet"), pl.read_parquet(d / "clean.parquet")
    assert sales.select("product_id", "date").equals(clean.select("product_id", "date"))
    differs = sales.join(clean, on=["product_id", "date"], suffix="_clean").filter(
        pl.col("units") != pl.col("units_clean")
    )
    assert differs["product_id"].n_unique() == 8  # exactly the contaminated products
    truth = json.loads((d / "truth.json").read_text())
    assert truth["contaminated_by_kind"] == {"noise": 4, "stockout": 4}
    # The same seed without contamination gives the clean twin, byte for byte.
    assert (
        run_cli(
            "simulate",
            "sales",
            "--products",
            d / "products.csv",
            "--end",
            "2026-03-31",
            "--history-days",
            "60",
            "--seed",
            "4",
            "-o",
            d / "plain.parquet",
            "-q",
        ).code
        == 0
    )
    assert pl.read_parquet(d / "plain.parquet").equals(clean)


def test_an_unknown_contamination_kind_is_a_usage_error(run_cli, tmp_path):
    (tmp_path / "p.csv").write_text("product_id\n1\n2\n")
    bad = run_cli(
        "simulate",
        "sales",
        "--products",
        tmp_path / "p.csv",
        "--end",
        "2026-01-31",
        "--contamination",
        "0.5",
        "--contamination-kinds",
        "noise,flood",
        "-o",
        tmp_path / "s.csv",
    )
    assert bad.code == 2 and "'flood' is not a kind" in bad.stderr
    assert not (tmp_path / "s.csv").exists()


def test_catalog_plants_elasticities_and_a_policy_from_the_command_line(run_cli, tmp_path):
    out = tmp_path / "p.csv"
    done = run_cli(
        "simulate",
        "catalog",
        "--n-products",
        "50",
        "--n-groups",
        "5",
        "--elasticity-range",
        "-3,-0.3",
        "--price-change-range",
        "-0.2,-0.05",
        "--seed",
        "2",
        "-o",
        out,
    )
    assert done.code == 0, done.stderr
    products = pl.read_csv(out)
    assert products["elasticity"].is_between(-3, -0.3).all() and products["price_change"].is_between(-0.2, -0.05).all()
    bad = run_cli("simulate", "catalog", "--elasticity-range", "-3", "-o", tmp_path / "q.csv")
    assert bad.code == 2 and "--elasticity-range must be two numbers LOW,HIGH" in bad.stderr
    assert not (tmp_path / "q.csv").exists()
    wrong = run_cli("simulate", "catalog", "--price-change-range", "-1.5,-0.1", "-o", tmp_path / "q.csv")
    assert wrong.code == 2 and "--price-change-range must be two finite numbers" in wrong.stderr
