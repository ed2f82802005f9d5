import json

import polars as pl
import pytest

from pricelab_cli.simulate import simulate_catalog, simulate_sales


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ipw")
    products, edges = simulate_catalog(100, 4, 5, seed=51)
    products.write_csv(d / "products.csv")
    edges.select("src", "dst", "weight").write_parquet(d / "edges.parquet")
    return d


@pytest.fixture
def experiment(files, run_cli):
    d = files
    if not (d / "sales.parquet").exists():
        assert (
            run_cli(
                "design",
                "random-days",
                "--start",
                "2026-03-02",
                "--end",
                "2026-03-22",
                "--salt",
                "ipw",
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
        products = pl.read_csv(d / "products.csv")
        assignment = pl.read_parquet(d / "assignment.parquet")
        edges = pl.read_parquet(d / "edges.parquet")
        simulate_sales(products, assignment=assignment, edges=edges, history_days=42, seed=52).sales.write_parquet(
            d / "sales.parquet"
        )
    return d


def ipw_args(d, *extra):
    return [
        "ipw",
        "--sales",
        d / "sales.parquet",
        "--assignment",
        d / "assignment.parquet",
        "--edges",
        d / "edges.parquet",
        "--design",
        d / "design.json",
        "--products",
        d / "products.csv",
        "--outcome",
        "units",
        *extra,
    ]


def test_ipw_writes_the_three_effects_and_reports_exposure(run_cli, experiment):
    d = experiment
    result = run_cli(*ipw_args(d, "-o", d / "spillover.csv", "--bootstrap", "100"))
    assert result.code == 0, result.stderr
    effects = pl.read_csv(d / "spillover.csv")
    assert effects.columns == ["effect", "estimate", "se", "ci_low", "ci_high", "p_value", "n"]
    assert effects["effect"].to_list() == ["direct", "spillover", "total"]
    assert (effects["ci_low"] < effects["ci_high"]).all()
    assert "exposure probabilities exact" in result.stderr
    assert "100 randomisation units" in result.stderr
    assert json.loads((d / "spillover.csv.meta.json").read_text())["seed"] == 0


def test_threshold_replays_the_design_and_reruns_match(run_cli, experiment):
    d = experiment
    outs = [d / "r1.csv", d / "r2.csv"]
    for out in outs:
        result = run_cli(*ipw_args(d, "--exposure-threshold", "0.3", "--replays", "50", "--bootstrap", "50", "-o", out))
        assert result.code == 0, result.stderr
    assert "from 50 replays of the design" in result.stderr
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_clustered_assignment_reports_products_left_out(run_cli, experiment):
    d = experiment
    assert (
        run_cli(
            "cluster",
            "--edges",
            d / "edges.parquet",
            "--products",
            d / "products.csv",
            "--max-size",
            "5",
            "-o",
            d / "clusters.csv",
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
            "--clusters",
            d / "clusters.csv",
            "-o",
            d / "clustered.parquet",
            "-q",
        ).code
        == 0
    )
    args = ipw_args(d, "--clusters", d / "clusters.csv", "--bootstrap", "50", "-o", "-")
    args[args.index("--assignment") + 1] = d / "clustered.parquet"
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    assert "direct:" in result.stderr and "product(s) left out" in result.stderr
    assert "shares its randomisation unit" in result.stderr


@pytest.mark.parametrize(
    "change, code, message",
    [
        (("--design", "nope.json"), 66, "nope.json: no such file"),
        (("--exposure-threshold", "1.5"), 2, "--exposure-threshold 1.5 must lie in [0, 1)"),
        (("--outcome", "clicks"), 65, "missing column 'clicks'"),
        (("--clip", "0"), 2, "--clip 0.0 must lie strictly between 0 and 1"),
        (("--products", "few.csv"), 65, "product(s) are not in the products table"),
    ],
)
def test_bad_input_exits_with_its_code_and_no_output(run_cli, experiment, change, code, message):
    d = experiment
    (d / "few.csv").write_text("product_id\n1\n2\n")
    flag, value = change
    args = ipw_args(d, "-o", d / "bad.csv")
    if flag in ("--design", "--products"):
        args[args.index(flag) + 1] = d / value
    else:
        args += [flag, value]
    result = run_cli(*args)
    assert result.code == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (d / "bad.csv").exists()
