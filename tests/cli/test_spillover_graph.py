import datetime as dt

import polars as pl
import pytest

from pricelab_cli.io import read_provenance
from pricelab_cli.simulate import simulate_catalog, simulate_sales


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("graph")
    products, edges = simulate_catalog(60, 3, 5, seed=31)
    products.write_csv(d / "products.csv")
    edges.write_csv(d / "true_edges.csv")
    simulate_sales(
        products,
        edges=edges,
        end=dt.date(2025, 12, 31),
        history_days=365,
        seed=32,
        dispersion=50.0,
        base_units=50.0,
        promo_rate=0.1,
        promo_depth=0.3,
    ).sales.write_parquet(d / "history.parquet")
    return d


def test_spillover_graph_writes_edges_with_provenance_and_a_summary(run_cli, files):
    d = files
    out = d / "edges.parquet"
    result = run_cli(
        "spillover-graph",
        "--sales",
        d / "history.parquet",
        "--products",
        d / "products.csv",
        "--group-col",
        "category",
        "-o",
        out,
        "--all-pairs",
        d / "pairs.csv",
    )
    assert result.code == 0, result.stderr
    edges = pl.read_parquet(out)
    assert edges.columns == ["src", "dst", "weight", "t_stat", "p_value"]
    truth = pl.read_csv(d / "true_edges.csv")
    hits = edges.join(truth, on=["src", "dst"], how="semi").height
    assert hits >= 0.9 * truth.height and hits >= 0.9 * edges.height
    assert read_provenance(str(out))["command"].startswith("pricelab spillover-graph --sales")
    pairs = pl.read_csv(d / "pairs.csv")
    assert pairs.height == 3 * 20 * 19 and "q_value" in pairs.columns
    assert "1,140 candidate pairs in 3 blocks: 1,140 tested, 0 untestable" in result.stderr
    assert "edges kept at FDR 0.05" in result.stderr


def test_reruns_are_byte_identical_and_pairs_files_work(run_cli, files):
    d = files
    (d / "pairs.csv").write_text(
        "src,dst\n"
        + "\n".join(f"{s},{t}" for s, t in pl.read_csv(d / "true_edges.csv").head(12).select("src", "dst").iter_rows())
        + "\n"
    )
    outs = [d / "a.csv", d / "b.csv"]
    for out in outs:
        result = run_cli(
            "spillover-graph", "--sales", d / "history.parquet", "--pairs", d / "pairs.csv", "-o", out, "-q"
        )
        assert result.code == 0 and result.stderr == ""
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert pl.read_csv(outs[0]).height >= 11


def test_renamed_columns(run_cli, files, tmp_path):
    d = files
    sales = pl.read_parquet(d / "history.parquet").rename(
        {"product_id": "sku", "date": "day", "units": "qty", "price": "p"}
    )
    sales.write_parquet(tmp_path / "h.parquet")
    pl.read_csv(d / "products.csv").rename({"product_id": "sku", "category": "cat"}).write_csv(tmp_path / "p.csv")
    result = run_cli(
        "spillover-graph",
        "--sales",
        tmp_path / "h.parquet",
        "--products",
        tmp_path / "p.csv",
        "--unit-col",
        "sku",
        "--time-col",
        "day",
        "--outcome",
        "qty",
        "--price-col",
        "p",
        "--group-col",
        "cat",
        "-o",
        "-",
        "-q",
    )
    assert result.code == 0, result.stderr
    assert result.text.splitlines()[0] == "src,dst,weight,t_stat,p_value"


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("no candidates", 2, "give --products (with --group-col) or --pairs"),
        ("missing file", 66, "nope.parquet: no such file"),
        ("missing group", 65, "missing column 'brand_family'"),
        ("bad fdr", 2, "--fdr 1.5 must lie strictly between 0 and 1"),
        ("negative price", 65, "column 'price' has 365 value(s) that are not positive"),
    ],
)
def test_bad_input_exits_with_its_code_and_no_output(run_cli, files, tmp_path, case, code, message):
    d = files
    sales = d / "history.parquet"
    args = ["--products", d / "products.csv"]
    if case == "no candidates":
        args = []
    elif case == "missing file":
        sales = tmp_path / "nope.parquet"
    elif case == "missing group":
        args += ["--group-col", "brand_family"]
    elif case == "bad fdr":
        args += ["--fdr", "1.5"]
    else:
        bad = pl.read_parquet(sales).with_columns(
            price=pl.when(pl.col("product_id") == 7).then(-1.0).otherwise(pl.col("price"))
        )
        sales = tmp_path / "bad.parquet"
        bad.write_parquet(sales)
    out = tmp_path / "edges.parquet"
    result = run_cli("spillover-graph", "--sales", sales, *args, "-o", out)
    assert result.code == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_since_uses_only_rows_on_or_after_the_date(run_cli, files, tmp_path):
    d = files
    since = dt.date(2025, 7, 1)
    recent = tmp_path / "recent.parquet"
    pl.read_parquet(d / "history.parquet").filter(pl.col("date") >= since).write_parquet(recent)
    common = ["--products", d / "products.csv", "-q"]
    runs = {
        "since": ["--sales", d / "history.parquet", "--since", since.isoformat()],
        "prefiltered": ["--sales", recent],
        "full": ["--sales", d / "history.parquet"],
    }
    for name, args in runs.items():
        result = run_cli(
            "spillover-graph",
            *args,
            *common,
            "-o",
            tmp_path / f"{name}.csv",
            "--all-pairs",
            tmp_path / f"{name}_pairs.csv",
        )
        assert result.code == 0, result.stderr
    assert (tmp_path / "since.csv").read_bytes() == (tmp_path / "prefiltered.csv").read_bytes()
    assert (tmp_path / "since_pairs.csv").read_bytes() == (tmp_path / "prefiltered_pairs.csv").read_bytes()
    # 184 days from July 1 to December 31; the full year would give 365.
    assert pl.read_csv(tmp_path / "since_pairs.csv")["n_days"].unique().to_list() == [184]
    assert pl.read_csv(tmp_path / "full_pairs.csv")["n_days"].unique().to_list() == [365]


@pytest.mark.parametrize(
    "value, code, message",
    [
        ("2025-13-01", 2, "'2025-13-01' is not a date in YYYY-MM-DD form"),
        ("last-year", 2, "'last-year' is not a date in YYYY-MM-DD form"),
        ("2026-01-01", 65, "history.parquet: no row is dated on or after --since 2026-01-01"),
    ],
)
def test_a_bad_since_is_refused_naming_the_value(run_cli, files, tmp_path, value, code, message):
    d = files
    out = tmp_path / "edges.csv"
    result = run_cli(
        "spillover-graph",
        "--sales",
        d / "history.parquet",
        "--products",
        d / "products.csv",
        "--since",
        value,
        "-o",
        out,
    )
    assert result.code == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
