"""`pricelab elasticity` as a user runs it: files in, the SPEC's columns out, its errors."""

import json

import polars as pl
import pytest

from pricelab_cli.simulate import simulate_catalog, simulate_sales

COLUMNS = ["group", "kind", "estimate", "se", "ci_low", "ci_high", "n_products"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, run_cli_module):
    """A random-days experiment on a catalog with planted elasticities and a price policy."""
    d = tmp_path_factory.mktemp("elasticity")
    products, edges = simulate_catalog(
        300, 3, 5, seed=61, elasticity_range=(-3.0, -1.2), price_change_range=(-0.2, -0.05)
    )
    products.with_columns(cost=(pl.col("base_price") * 0.6).round(2)).write_csv(d / "products.csv")
    edges.select("src", "dst", "weight").write_parquet(d / "edges.parquet")
    for args in (
        (
            "design",
            "random-days",
            "--start",
            "2026-03-02",
            "--end",
            "2026-03-29",
            "--salt",
            "el",
            "-o",
            d / "design.json",
        ),
        ("assign", "--design", d / "design.json", "--products", d / "products.csv", "-o", d / "assignment.parquet"),
    ):
        assert run_cli_module(*args, "-q").code == 0
    sim = simulate_sales(
        pl.read_csv(d / "products.csv"),
        assignment=pl.read_parquet(d / "assignment.parquet"),
        edges=edges,
        history_days=120,
        seed=62,
    )
    sim.sales.write_parquet(d / "sales.parquet")
    (d / "truth.json").write_text(json.dumps(sim.truth))
    return d


def base(d):
    return [
        "elasticity",
        "--sales",
        d / "sales.parquet",
        "--assignment",
        d / "assignment.parquet",
        "--products",
        d / "products.csv",
    ]


def everything(d):
    """Every row kind: substitutes, costs, 100 draws, seed 3."""
    return [*base(d), "--edges", d / "edges.parquet", "--cost-col", "cost", "--bootstrap", "100", "--seed", "3"]


def test_elasticity_writes_own_cross_and_profit_rows_and_the_optimum(run_cli, chain, tmp_path):
    out, optimum = tmp_path / "elasticity.csv", tmp_path / "optimum.csv"
    named = ["--group-col", "category", "--price-col", "price", "--outcome", "units"]
    by = ["--by", "brand", "--by-out", tmp_path / "by.csv"]
    done = run_cli(*everything(chain), *named, "-o", out, "--optimum-out", optimum, *by)
    assert done.code == 0, done.stderr
    table = pl.read_csv(out)
    assert table.columns == COLUMNS
    assert table.filter(pl.col("group").is_not_null()).group_by("kind").len().sort("kind").rows() == [
        ("cross", 3),
        ("own", 3),
        ("profit", 3),
    ]
    assert table.filter(pl.col("group").is_null())["kind"].to_list() == ["profit"]  # the whole catalog
    truth = json.loads((chain / "truth.json").read_text())["elasticity_by_group"]
    for row in table.filter(pl.col("kind") == "own").iter_rows(named=True):
        assert abs(row["estimate"] - truth[row["group"]]) < 4 * row["se"]
    assert pl.read_csv(optimum).columns[:4] == ["group", "price_change", "ci_low", "ci_high"]
    by = pl.read_csv(tmp_path / "by.csv")
    assert by.columns == ["feature", "bin", *COLUMNS[2:]] and by["feature"].unique().to_list() == ["brand"]
    assert json.loads((tmp_path / "elasticity.csv.meta.json").read_text())["seed"] == 3
    assert "elasticities (95% interval)" in done.stderr
    again = run_cli(*everything(chain), "-o", "-", "-q")
    assert again.code == 0 and again.stdout == out.read_bytes()


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--price-col", "cost"], 65, "sales.parquet: missing column 'cost'"),
        (["--group-col", "segment"], 65, "missing column"),
        (["--optimum-out", "{tmp}/o.csv"], 2, "--optimum-out needs --cost-col"),
        (["--bootstrap", "5"], 2, "--bootstrap 5"),
        (["--by", "quality"], 2, "--by and --by-out go together"),
        (["--by", "shelf", "--by-out", "{tmp}/o.csv"], 65, "missing column 'shelf'"),
    ],
)
def test_bad_input_exits_with_its_code_and_no_output(run_cli, chain, tmp_path, extra, code, message):
    out = tmp_path / "e.csv"
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    done = run_cli(*base(chain), *extra, "-o", out)
    assert done.code == code, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not out.exists() and not (tmp_path / "o.csv").exists()


def test_the_report_says_the_price_response_and_profit_in_words(run_cli, chain, tmp_path):
    out, optimum = tmp_path / "elasticity.csv", tmp_path / "optimum.csv"
    assert run_cli(*everything(chain), "-o", out, "--optimum-out", optimum, "-q").code == 0
    effects = tmp_path / "effects.csv"
    hpte = ["hpte", "--sales", chain / "sales.parquet", "--assignment", chain / "assignment.parquet"]
    assert run_cli(*hpte, "--bootstrap", "50", "-o", effects, "-q").code == 0
    page = tmp_path / "report.html"
    done = run_cli(
        "report",
        "--design",
        chain / "design.json",
        "--assignment",
        chain / "assignment.parquet",
        "--sales",
        chain / "sales.parquet",
        "--effects",
        effects,
        "--elasticity",
        out,
        "--optimum",
        optimum,
        "-o",
        page,
        "--markdown",
        "-q",
    )
    assert done.code == 0, done.stderr
    html = page.read_text()
    assert 'id="elasticity"' in html
    table = pl.read_csv(out)
    for row in table.filter(pl.col("kind") == "own").iter_rows(named=True):
        assert f"A 1% price cut sells {-row['estimate']:.1f}% more units" in html
    assert "comes out of its substitutes" in html or "Its substitutes lose more than it gains" in html
    assert "per product per day" in html and "At constant elasticity, profit peaks at a price change of" in html
    assert "Across the catalog the policy changed profit by" in (tmp_path / "report.md").read_text()
