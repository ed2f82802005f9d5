"""Inputs where the data lives: the real commands on folders, patterns, hive partitions and
object storage give the same bytes as on the single file, and bad datasets are refused."""

from __future__ import annotations

import hashlib
import pathlib

import polars as pl
import pytest

START = "2026-03-02"
END = "2026-03-15"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A small random-days experiment made by the commands, then laid out every way."""
    from tests.conftest import _run as run

    d = tmp_path_factory.mktemp("datasets")
    steps = [
        ["simulate", "catalog", "--n-products", "80", "--n-groups", "4", "--seed", "5", "-o", d / "products.csv"],
        ["design", "random-days", "--start", START, "--end", END, "--salt", "datasets", "-o", d / "design.json"],
        ["assign", "--design", d / "design.json", "--products", d / "products.csv", "-o", d / "assignment.parquet"],
        [
            "simulate",
            "sales",
            "--products",
            d / "products.csv",
            "--assignment",
            d / "assignment.parquet",
            "--history-days",
            "35",
            "--seed",
            "5",
            "-o",
            d / "sales.parquet",
        ],
    ]
    for step in steps:
        result = run([str(a) for a in [*step, "-q"]])
        assert result.code == 0, result.stderr
    sales = pl.read_parquet(d / "sales.parquet")
    # A plain folder (nested, one file per date), and Spark-style hive partitions with the
    # date only in the folder names and bookkeeping files beside the data.
    for i, (day, part) in enumerate(sales.partition_by("date", as_dict=True, maintain_order=True).items()):
        (d / "plain" / "nested").mkdir(parents=True, exist_ok=True)
        part.write_parquet(d / "plain" / "nested" / f"part-{i:03d}.parquet")
        folder = d / "hive" / f"date={day[0]}"
        folder.mkdir(parents=True)
        part.drop("date").write_parquet(folder / "part-00000.parquet")
    (d / "hive" / "_SUCCESS").write_bytes(b"")
    return d


def sales_inputs(d: pathlib.Path) -> dict[str, str]:
    return {
        "folder": str(d / "plain"),
        "pattern": str(d / "plain" / "nested" / "*.parquet"),
        "recursive pattern": str(d / "plain" / "**" / "*.parquet"),
        "hive partitions": str(d / "hive") + "/",
    }


def hpte(run_cli, sales, assignment, out, *extra):
    return run_cli(
        "hpte",
        "--sales",
        sales,
        "--assignment",
        assignment,
        "--bootstrap",
        "30",
        "--trees",
        "10",
        "--seed",
        "3",
        "-o",
        out,
        "-q",
        *extra,
    )


def digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference(experiment, tmp_path_factory):
    from tests.conftest import _run as run

    out = tmp_path_factory.mktemp("reference") / "effects.csv"
    result = run(
        [
            "hpte",
            "--sales",
            str(experiment / "sales.parquet"),
            "--assignment",
            str(experiment / "assignment.parquet"),
            "--bootstrap",
            "30",
            "--trees",
            "10",
            "--seed",
            "3",
            "-o",
            str(out),
            "-q",
        ]
    )
    assert result.code == 0, result.stderr
    return out.read_bytes()


@pytest.mark.parametrize("kind", ["folder", "pattern", "recursive pattern", "hive partitions"])
def test_hpte_writes_the_same_bytes_from_every_kind_of_sales_input(run_cli, experiment, reference, tmp_path, kind):
    out = tmp_path / "effects.csv"
    result = hpte(run_cli, sales_inputs(experiment)[kind], experiment / "assignment.parquet", out)
    assert result.code == 0, result.stderr
    assert out.read_bytes() == reference


def test_an_assignment_folder_written_by_assign_reads_back_the_same(run_cli, experiment, reference, tmp_path):
    folder = tmp_path / "assignment"
    made = run_cli(
        "assign",
        "--design",
        experiment / "design.json",
        "--products",
        experiment / "products.csv",
        "-o",
        f"{folder}/",
        "-q",
    )
    assert made.code == 0, made.stderr
    assert any(p.name.startswith("date=") for p in folder.iterdir())
    out = tmp_path / "effects.csv"
    result = hpte(run_cli, sales_inputs(experiment)["hive partitions"], folder, out)
    assert result.code == 0, result.stderr
    assert out.read_bytes() == reference


def test_the_sales_after_the_experiment_are_never_read(run_cli, experiment, reference, tmp_path):
    """A partition after the assignment's last date is left out before its data is read:
    spoiling its values (not its schema) changes nothing."""
    hive = tmp_path / "hive"
    sales = pl.read_parquet(experiment / "sales.parquet")
    for day, part in sales.partition_by("date", as_dict=True).items():
        (hive / f"date={day[0]}").mkdir(parents=True)
        part.drop("date").write_parquet(hive / f"date={day[0]}" / "p.parquet")
    late = hive / "date=2026-04-30"
    late.mkdir()
    sales.head(5).drop("date").with_columns(
        pl.lit(None, dtype=pl.Int64).alias("product_id"), pl.lit(float("inf")).alias("price")
    ).write_parquet(late / "p.parquet")
    out = tmp_path / "effects.csv"
    result = hpte(run_cli, hive, experiment / "assignment.parquet", out)
    assert result.code == 0, result.stderr
    assert out.read_bytes() == reference


def spoil_disagreeing(src: pathlib.Path, d: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    sales = pl.read_parquet(src / "sales.parquet")
    folder = d / "bad"
    folder.mkdir()
    sales.head(100).write_parquet(folder / "a.parquet")
    sales.tail(100).with_columns(pl.col("units").cast(pl.Float64)).write_parquet(folder / "b.parquet")
    return folder, ["its files disagree on column 'units'", str(folder / "a.parquet"), str(folder / "b.parquet")]


def spoil_missing_partition(src: pathlib.Path, d: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    sales = pl.read_parquet(src / "sales.parquet")
    folder = d / "bad"
    (folder / "date=2026-03-02").mkdir(parents=True)
    sales.head(10).drop("date").write_parquet(folder / "date=2026-03-02" / "p.parquet")
    sales.tail(10).write_parquet(folder / "stray.parquet")
    return folder, ["stray.parquet is not in a date=... folder", "partition column 'date' is missing"]


def spoil_bad_date_partition(src: pathlib.Path, d: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    sales = pl.read_parquet(src / "sales.parquet")
    folder = d / "bad" / "date=2026-3-2"
    folder.mkdir(parents=True)
    sales.head(10).drop("date").write_parquet(folder / "p.parquet")
    return d / "bad", ["partition folder date=2026-3-2", "is not an ISO date (YYYY-MM-DD)", "column 'date'"]


def spoil_missing_column(src: pathlib.Path, d: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    folder = d / "bad"
    folder.mkdir()
    pl.read_parquet(src / "sales.parquet").drop("units").write_parquet(folder / "a.parquet")
    return folder, ["missing column 'units'", "columns present: 'product_id', 'date', 'price', 'revenue'"]


def spoil_empty_folder(src: pathlib.Path, d: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    (d / "bad").mkdir()
    return d / "bad", ["is a folder, not a file, and holds no Parquet files (it is empty)"]


def spoil_pattern_matching_nothing(src: pathlib.Path, d: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    (d / "bad").mkdir()
    return d / "bad" / "*.parquet", ["no file matches this pattern"]


BAD_DATASETS = {
    "files that disagree": (spoil_disagreeing, 65),
    "a missing partition folder": (spoil_missing_partition, 65),
    "a date partition that is not a date": (spoil_bad_date_partition, 65),
    "a missing column": (spoil_missing_column, 65),
    "an empty folder": (spoil_empty_folder, 66),
    "a pattern matching nothing": (spoil_pattern_matching_nothing, 66),
}


@pytest.mark.parametrize("case", list(BAD_DATASETS))
def test_a_bad_dataset_is_refused_naming_it_with_no_output(run_cli, experiment, tmp_path, case):
    spoil, code = BAD_DATASETS[case]
    given, fragments = spoil(experiment, tmp_path)
    existing = tmp_path / "effects.csv"
    existing.write_bytes(b"yesterday's result\n")
    result = hpte(run_cli, given, experiment / "assignment.parquet", existing)
    assert result.code == code, result.stderr
    assert str(given) in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert existing.read_bytes() == b"yesterday's result\n"
    assert not list(tmp_path.glob(".effects.csv*"))


def test_an_output_inside_an_input_folder_or_matched_by_an_input_pattern_is_refused(run_cli, experiment, tmp_path):
    inside = run_cli(
        "hpte",
        "--sales",
        experiment / "plain",
        "--assignment",
        experiment / "assignment.parquet",
        "-o",
        experiment / "plain" / "effects.parquet",
    )
    assert inside.code == 2 and "--sales" in inside.stderr, inside.stderr
    assert not (experiment / "plain" / "effects.parquet").exists()
    matched = run_cli(
        "hpte",
        "--sales",
        experiment / "plain" / "nested" / "*.parquet",
        "--assignment",
        experiment / "assignment.parquet",
        "-o",
        experiment / "plain" / "nested" / "effects.parquet",
    )
    assert matched.code == 2 and "--sales" in matched.stderr, matched.stderr
    beside = tmp_path / "effects.csv"  # a pattern input does not stand for files it does not match
    ok = hpte(run_cli, experiment / "plain" / "nested" / "*.parquet", experiment / "assignment.parquet", beside)
    assert ok.code == 0, ok.stderr


@pytest.mark.parametrize("command", ["assign", "hpte", "spillover-graph", "cluster", "ipw", "power", "simulate sales"])
def test_every_command_that_reads_tables_takes_storage_options(run_cli, command):
    result = run_cli(*command.split(), "--help")
    assert result.code == 0 and "--storage-option" in result.text


# --------------------------------------------------------------------------- object storage


@pytest.fixture
def bucket(s3_server, monkeypatch, experiment):
    s3_server.use(monkeypatch)
    name = s3_server.create_bucket()
    s3_server.upload(experiment / "hive", name, "exports/sales")
    s3_server.upload(experiment / "assignment.parquet", name, "exp")
    s3_server.upload(experiment / "design.json", name, "exp")
    return name


def test_hpte_writes_the_same_bytes_from_object_storage(run_cli, experiment, reference, tmp_path, bucket):
    out = tmp_path / "effects.csv"
    result = hpte(run_cli, f"s3://{bucket}/exports/sales/", f"s3://{bucket}/exp/assignment.parquet", out)
    assert result.code == 0, result.stderr
    assert out.read_bytes() == reference
    pattern = hpte(
        run_cli,
        f"s3://{bucket}/exports/sales/date=*/*.parquet",
        f"s3://{bucket}/exp/assignment.parquet",
        tmp_path / "pattern.csv",
    )
    assert pattern.code == 0, pattern.stderr
    assert (tmp_path / "pattern.csv").read_bytes() == reference


def test_a_design_in_the_store_and_storage_options_over_the_environment(
    run_cli, experiment, tmp_path, bucket, s3_server, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # wrong: the flag must win
    result = run_cli(
        "assign",
        "--design",
        f"s3://{bucket}/exp/design.json",
        "--products",
        experiment / "products.csv",
        "--storage-option",
        f"aws_endpoint_url={s3_server.endpoint}",
        "-o",
        tmp_path / "a.parquet",
        "-q",
    )
    assert result.code == 0, result.stderr
    assert pl.read_parquet(tmp_path / "a.parquet").equals(pl.read_parquet(experiment / "assignment.parquet"))
    malformed = run_cli(
        "assign",
        "--design",
        f"s3://{bucket}/exp/design.json",
        "--products",
        experiment / "products.csv",
        "--storage-option",
        "aws_region",
        "-o",
        tmp_path / "b.parquet",
    )
    assert malformed.code == 2 and "--storage-option 'aws_region': expected KEY=VALUE" in malformed.stderr
    assert not (tmp_path / "b.parquet").exists()


def test_ipw_reads_its_design_from_the_store_with_the_storage_options(
    run_cli, experiment, tmp_path, bucket, s3_server, monkeypatch
):
    """Every command that reads a design reads it as assign does (ipw once read it with the
    environment's settings only, so --storage-option did not reach it)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # wrong: the flag must win
    ids = pl.read_csv(experiment / "products.csv")["product_id"].to_list()
    edges = tmp_path / "edges.csv"
    pl.DataFrame({"src": ids[:-1], "dst": ids[1:], "weight": [1.0] * (len(ids) - 1)}).write_csv(edges)
    result = run_cli(
        "ipw",
        "--sales",
        experiment / "sales.parquet",
        "--assignment",
        experiment / "assignment.parquet",
        "--edges",
        edges,
        "--products",
        experiment / "products.csv",
        "--design",
        f"s3://{bucket}/exp/design.json",
        "--bootstrap",
        "20",
        "--storage-option",
        f"aws_endpoint_url={s3_server.endpoint}",
        "-o",
        tmp_path / "ipw.csv",
        "-q",
    )
    assert result.code == 0, result.stderr
    assert pl.read_csv(tmp_path / "ipw.csv")["effect"].to_list()[0] == "direct"


def test_an_unreachable_store_is_refused_in_seconds_naming_the_uri_and_the_variable(
    run_cli, experiment, tmp_path, bucket, monkeypatch
):
    import time

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    began = time.monotonic()
    result = hpte(run_cli, f"s3://{bucket}/exports/sales/", experiment / "assignment.parquet", tmp_path / "e.csv")
    assert time.monotonic() - began < 30
    assert result.code == 66, result.stderr
    assert f"s3://{bucket}/exports/sales/: cannot reach the object store" in result.stderr
    assert "AWS_ENDPOINT_URL" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "e.csv").exists()


def test_a_dataset_in_the_store_whose_files_disagree_is_refused(run_cli, experiment, tmp_path, bucket, s3_server):
    spoiled = tmp_path / "spoiled.parquet"
    pl.read_parquet(experiment / "sales.parquet").head(5).drop("date").with_columns(
        pl.col("units").cast(pl.Float64)
    ).write_parquet(spoiled)
    s3_server.upload(spoiled, bucket, "exports/sales/date=2026-03-16")
    result = hpte(run_cli, f"s3://{bucket}/exports/sales/", experiment / "assignment.parquet", tmp_path / "e.csv")
    assert result.code == 65, result.stderr
    assert f"s3://{bucket}/exports/sales/: its files disagree on column 'units'" in result.stderr
    assert f"s3://{bucket}/exports/sales/date=2026-03-16/spoiled.parquet" in result.stderr
    assert not (tmp_path / "e.csv").exists()
