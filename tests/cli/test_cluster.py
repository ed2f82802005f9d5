import polars as pl
import pytest

from pricelab_cli.simulate import simulate_catalog


@pytest.fixture
def files(tmp_path):
    products, edges = simulate_catalog(120, 4, 6, seed=41)
    products.write_csv(tmp_path / "products.csv")
    edges.select("src", "dst", "weight").write_parquet(tmp_path / "edges.parquet")
    return tmp_path


def test_cluster_writes_one_row_per_product_and_summarises(run_cli, files):
    d = files
    result = run_cli(
        "cluster",
        "--edges",
        d / "edges.parquet",
        "--products",
        d / "products.csv",
        "--max-size",
        "5",
        "--seed",
        "0",
        "-o",
        d / "clusters.parquet",
        "--plot",
        d / "sizes.png",
    )
    assert result.code == 0, result.stderr
    clusters = pl.read_parquet(d / "clusters.parquet")
    assert clusters.columns == ["product_id", "cluster_id"]
    assert clusters["product_id"].to_list() == pl.read_csv(d / "products.csv")["product_id"].to_list()
    assert clusters.group_by("cluster_id").len()["len"].max() <= 5
    assert "clusters of 120 products" in result.stderr
    assert "re-split" in result.stderr and "edge weight cut:" in result.stderr
    assert (d / "sizes.png").read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_bytes_and_user_column_names(run_cli, files):
    d = files
    pl.read_csv(d / "products.csv").rename({"product_id": "sku"}).write_csv(d / "skus.csv")
    outs = [d / "a.csv", d / "b.csv"]
    for out in outs:
        result = run_cli(
            "cluster",
            "--edges",
            d / "edges.parquet",
            "--products",
            d / "skus.csv",
            "--unit-col",
            "sku",
            "--cluster-col",
            "group",
            "--seed",
            "3",
            "-o",
            out,
            "-q",
        )
        assert result.code == 0 and result.stderr == ""
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert outs[0].read_text().splitlines()[0] == "sku,group"


def test_products_alone_still_get_clusters(run_cli, tmp_path):
    (tmp_path / "edges.csv").write_text("src,dst,weight\n")
    (tmp_path / "products.csv").write_text("product_id\n1\n2\n")
    result = run_cli("cluster", "--edges", tmp_path / "edges.csv", "--products", tmp_path / "products.csv", "-o", "-")
    assert result.code == 0, result.stderr
    assert result.text.splitlines() == ["product_id,cluster_id", "1,1", "2,2"]


@pytest.mark.parametrize(
    "edges_text, extra, code, message",
    [
        ("src,dst,weight\n1,2,0.5\n", ["--max-size", "0"], 2, "--max-size"),
        ("src,dst,weight\n1,2,0.5\n", ["--resolution", "0"], 2, "--resolution 0.0 must be a positive number"),
        ("src,dst\n1,2\n", [], 65, "missing column 'weight'"),
        ("src,dst,weight\n1,2,heavy\n", [], 65, "column 'weight' must hold numbers"),
        (None, [], 66, "edges.csv: no such file"),
    ],
)
def test_bad_input_exits_with_its_code_and_no_output(run_cli, tmp_path, edges_text, extra, code, message):
    if edges_text is not None:
        (tmp_path / "edges.csv").write_text(edges_text)
    out = tmp_path / "clusters.csv"
    result = run_cli("cluster", "--edges", tmp_path / "edges.csv", *extra, "-o", out)
    assert result.code == code, result.stderr
    assert message in result.stderr
    assert not out.exists()
