import json
import os
import subprocess
import sys

import polars as pl
import pyarrow.parquet as pq
import pytest

from pricelab_cli.io import read_provenance


@pytest.fixture
def inputs(tmp_path, run_cli):
    products = tmp_path / "products.csv"
    pl.DataFrame({"product_id": ["007", "42", "x-1", "8"]}).write_csv(products)
    design = tmp_path / "design.json"
    assert (
        run_cli(
            "design", "random-days", "--start", "2026-03-02", "--end", "2026-03-08", "--salt", "s", "-o", design
        ).code
        == 0
    )
    return {"products": products, "design": design, "dir": tmp_path}


def test_assign_writes_parquet_with_provenance_and_balance_report(run_cli, inputs):
    out = inputs["dir"] / "a.parquet"
    result = run_cli("assign", "--design", inputs["design"], "--products", inputs["products"], "-o", out, "--seed", "3")
    assert result.code == 0, result.stderr
    table = pl.read_parquet(out)
    assert table.columns == ["product_id", "date", "treated", "blackout", "period"]
    assert table["product_id"].unique(maintain_order=True).to_list() == ["007", "42", "x-1", "8"], (
        "ids round-trip unchanged"
    )
    meta = read_provenance(str(out))
    assert meta["seed"] == 3 and meta["version"] and meta["command"].startswith("pricelab assign --design")
    assert "SRM chi-square" in result.stderr and "treated share per day" in result.stderr


def test_csv_output_gets_a_sidecar_and_reruns_are_byte_identical(run_cli, inputs):
    a, b = inputs["dir"] / "a.csv", inputs["dir"] / "b.csv"
    for out in (a, b):
        assert (
            run_cli("assign", "--design", inputs["design"], "--products", inputs["products"], "-o", out, "-q").code == 0
        )
    assert a.read_bytes() == b.read_bytes()
    assert json.loads((inputs["dir"] / "a.csv.meta.json").read_text())["command"].endswith("-o {output} -q")
    pa_, pb = inputs["dir"] / "a.parquet", inputs["dir"] / "b.parquet"
    for out in (pa_, pb):
        assert (
            run_cli("assign", "--design", inputs["design"], "--products", inputs["products"], "-o", out, "-q").code == 0
        )
    assert pa_.read_bytes() == pb.read_bytes()


def test_renamed_columns_are_read_and_written_under_the_users_names(run_cli, inputs):
    products = inputs["dir"] / "skus.tsv"
    products.write_text("sku\tname\nA\tchair\nB\ttable\n")
    result = run_cli(
        "assign",
        "--design",
        inputs["design"],
        "--products",
        products,
        "--unit-col",
        "sku",
        "--time-col",
        "day",
        "-o",
        "-",
        "-q",
    )
    assert result.code == 0, result.stderr
    assert result.text.splitlines()[0] == "sku,day,treated,blackout,period"


def test_stdin_to_stdout_csv_and_parquet_streams(run_cli, inputs):
    csv_in = inputs["products"].read_bytes()
    as_csv = run_cli("assign", "--design", inputs["design"], "--products", "-", "-o", "-", "-q", stdin=csv_in)
    assert as_csv.code == 0 and as_csv.stderr == ""
    assert as_csv.text.splitlines()[1] == "007,2026-03-02," + as_csv.text.splitlines()[1].split(",", 2)[2]
    as_parquet = run_cli(
        "assign", "--design", inputs["design"], "--products", "-", "-o", "-", "--format", "parquet", "-q", stdin=csv_in
    )
    assert as_parquet.stdout[:4] == b"PAR1"


def test_cluster_and_triggered_assignment_from_files(run_cli, inputs):
    d = inputs["dir"]
    (d / "clusters.csv").write_text("product_id,cluster_id\n007,a\n42,a\nx-1,b\n8,b\n")
    result = run_cli(
        "assign",
        "--design",
        inputs["design"],
        "--products",
        inputs["products"],
        "--clusters",
        d / "clusters.csv",
        "-o",
        d / "c.parquet",
        "-q",
    )
    assert result.code == 0, result.stderr
    table = pl.read_parquet(d / "c.parquet")
    assert table.group_by("cluster_id", "date").agg(pl.col("treated").n_unique())["treated"].max() == 1
    assert run_cli("design", "triggered", "--duration-days", "3", "--salt", "t", "-o", d / "t.json").code == 0
    (d / "events.csv").write_text("product_id,event_date\n42,2026-05-01\n8,2026-05-03\n")
    result = run_cli(
        "assign", "--design", d / "t.json", "--products", inputs["products"], "--events", d / "events.csv", "-o", "-"
    )
    assert result.code == 0
    assert "2 product(s) have no event" in result.stderr
    assert [line.split(",")[:2] for line in result.text.splitlines()[1:]][:1] == [["42", "2026-05-01"]]


def test_broken_pipe_exits_zero_quietly(inputs, tmp_path):
    big = tmp_path / "big.csv"
    pl.DataFrame({"product_id": range(200_000)}).write_csv(big)
    cmd = (
        f"{sys.executable} -m pricelab_cli assign --design {inputs['design']} --products {big} -o - -q | head -n 2; "
        'echo "status=${PIPESTATUS[0]}"'
    )
    done = subprocess.run(
        ["bash", "-c", cmd], capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert done.stdout.splitlines()[0] == "product_id,date,treated,blackout,period"
    assert done.stdout.splitlines()[-1] == "status=0"
    assert done.stderr == ""


BALANCED = ["balanced-switchback", "--start", "2026-03-02", "--end", "2026-03-15", "--block-days", "3"]


def read_folder(folder) -> pl.DataFrame:
    return pl.read_parquet(folder, hive_partitioning=True)


@pytest.mark.parametrize(
    "design_args",
    [
        ["random-days", "--start", "2026-03-02", "--end", "2026-03-15", "--block-days", "3"],
        ["crossover", "--start", "2026-03-02", "--phase-days", "4", "--blackout-days", "1"],
        [*BALANCED, "--blackout-days", "1"],
    ],
)
def test_a_folder_output_holds_the_same_rows_as_a_file_one_date_per_partition(run_cli, tmp_path, design_args):
    products = tmp_path / "products.csv"
    pl.DataFrame({"product_id": [f"sku-{i}" for i in range(500, 0, -1)]}).write_csv(products)
    assert run_cli("design", *design_args, "--salt", "f", "-o", tmp_path / "d.json").code == 0
    args = ["assign", "--design", tmp_path / "d.json", "--products", products, "--seed", "2"]
    as_file = run_cli(*args, "-o", tmp_path / "a.parquet")
    as_folder = run_cli(*args, "-o", f"{tmp_path}/a/")
    assert as_file.code == as_folder.code == 0, as_folder.stderr
    assert as_file.stderr == as_folder.stderr, "the same balance report"
    single = pl.read_parquet(tmp_path / "a.parquet")
    folder = read_folder(tmp_path / "a").select(single.columns)
    dates = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert dates == [f"date={d}" for d in single["date"].unique().sort().cast(pl.String)]
    assert all([f.name for f in (tmp_path / "a" / d).iterdir()] == ["part-0.parquet"] for d in dates)
    # Partitions come back date by date; inside each, rows keep the products file's order.
    assert folder.equals(single.sort("date", maintain_order=True))
    for part in (tmp_path / "a").rglob("*.parquet"):
        meta = json.loads(pq.read_schema(part).metadata[b"pricelab"])
        assert meta == read_provenance(str(tmp_path / "a.parquet"))


def test_cluster_and_triggered_assignments_to_folders_equal_their_files(run_cli, inputs):
    d = inputs["dir"]
    (d / "clusters.csv").write_text("product_id,cluster_id\n007,a\n42,a\nx-1,b\n8,b\n")
    (d / "events.csv").write_text("product_id,event_date\n42,2026-05-01\n8,2026-05-03\nx-1,2026-04-29\n")
    assert run_cli("design", "triggered", "--duration-days", "3", "--salt", "t", "-o", d / "t.json").code == 0
    for name, extra in {
        "clustered": ["--design", inputs["design"], "--clusters", d / "clusters.csv"],
        "triggered": ["--design", d / "t.json", "--events", d / "events.csv"],
    }.items():
        args = ["assign", "--products", inputs["products"], *extra, "-q"]
        assert run_cli(*args, "-o", d / f"{name}.parquet").code == 0
        assert run_cli(*args, "-o", f"{d}/{name}/").code == 0
        single = pl.read_parquet(d / f"{name}.parquet")
        folder = read_folder(d / name).select(single.columns)
        assert folder.equals(single.sort("date", maintain_order=True)), name


def test_a_renamed_date_column_names_the_partitions(run_cli, inputs):
    out = inputs["dir"] / "renamed"
    result = run_cli(
        "assign",
        "--design",
        inputs["design"],
        "--products",
        inputs["products"],
        "--time-col",
        "day",
        "-o",
        f"{out}/",
        "-q",
    )
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir())[0] == "day=2026-03-02"


def test_a_folder_of_the_users_is_refused_before_any_work(run_cli, inputs):
    mine = inputs["dir"] / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    result = run_cli("assign", "--design", inputs["design"], "--products", inputs["products"], "-o", mine)
    assert result.code == 2
    assert f"-o {mine}: the folder exists and is not a pricelab dataset (it holds notes.txt" in result.stderr
    assert "SRM" not in result.stderr, "refused before the assignment is computed"
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_outputs_to_object_storage_equal_local_ones_and_a_failed_run_leaves_nothing(
    run_cli, inputs, s3_server, s3_bucket, monkeypatch
):
    s3_server.use(monkeypatch)
    d = inputs["dir"]
    args = ["assign", "--design", inputs["design"], "--products", inputs["products"], "--seed", "3", "-q"]
    assert run_cli(*args, "-o", d / "a.parquet").code == 0
    assert run_cli(*args, "-o", d / "a.csv").code == 0
    assert run_cli(*args, "-o", f"s3://{s3_bucket}/runs/a.parquet").code == 0
    # Credentials given as --storage-option only reach the checks and the upload too.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    keys = ["--storage-option", "aws_access_key_id=testing", "--storage-option", "aws_secret_access_key=testing"]
    result = run_cli(*args, "-o", f"s3://{s3_bucket}/runs/a.csv", *keys)
    assert result.code == 0, result.stderr
    objects = [k for k in s3_server.list_keys(s3_bucket) if not k.endswith("/")]
    assert objects == ["runs/a.csv", "runs/a.csv.meta.json", "runs/a.parquet"]
    assert s3_server.read(s3_bucket, "runs/a.csv") == (d / "a.csv").read_bytes()
    assert s3_server.read(s3_bucket, "runs/a.parquet") == (d / "a.parquet").read_bytes(), "{output} in the provenance"
    meta = json.loads(s3_server.read(s3_bucket, "runs/a.csv.meta.json"))
    assert meta["command"].startswith("pricelab assign --design") and "-o {output}" in meta["command"]
    assert "--storage-option aws_secret_access_key=***" in meta["command"], "no credential in the clear"
    assert "testing" not in meta["command"]

    (d / "bad.csv").write_text("sku\n1\n")
    failed = run_cli(
        "assign", "--design", inputs["design"], "--products", d / "bad.csv", "-o", f"s3://{s3_bucket}/runs/b.csv", *keys
    )
    assert failed.code == 65 and "missing column 'product_id'" in failed.stderr
    missing = run_cli(*args, "-o", "s3://no-such-bucket/a.csv", *keys)
    assert (
        missing.code == 66 and "s3://no-such-bucket/a.csv: the bucket 'no-such-bucket' does not exist" in missing.stderr
    )
    as_folder = run_cli(*args, "-o", f"s3://{s3_bucket}/runs/folder/", *keys)
    assert as_folder.code == 2 and "name one object" in as_folder.stderr
    assert [k for k in s3_server.list_keys(s3_bucket) if not k.endswith("/")] == objects, "failed runs upload nothing"


def test_a_balanced_switchback_is_replayed_from_its_design_file_byte_for_byte(run_cli, tmp_path):
    """The design file and the products table are all it takes: two runs of ``assign`` (one
    with the products shuffled) write the same rows, every block treats exactly
    round(0.3 x 37) = 11 products, and each product is treated in 1 or 2 of its 5 blocks."""
    ids = [f"sku-{i}" for i in range(37)]
    pl.DataFrame({"product_id": ids}).write_csv(tmp_path / "products.csv")
    pl.DataFrame({"product_id": ids[::-1]}).write_csv(tmp_path / "shuffled.csv")
    design = tmp_path / "d.json"
    made = run_cli(
        "design",
        *BALANCED,
        "--blackout-days",
        "1",
        "--treat-share",
        "0.3",
        "--seed",
        "4",
        "-o",
        design,
    )
    assert made.code == 0, made.stderr
    assert json.loads(design.read_text())["kind"] == "balanced-switchback"
    outs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for out in outs:
        assert run_cli("assign", "--design", design, "--products", tmp_path / "products.csv", "-o", out, "-q").code == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    shuffled = tmp_path / "c.parquet"
    assert (
        run_cli("assign", "--design", design, "--products", tmp_path / "shuffled.csv", "-o", shuffled, "-q").code == 0
    )
    table = pl.read_csv(outs[0], try_parse_dates=True)
    assert pl.read_parquet(shuffled).sort("product_id", "date").equals(table.sort("product_id", "date"))
    draws = table.group_by("product_id", "period").agg(pl.col("treated").max())
    assert draws.group_by("period").agg(pl.col("treated").sum())["treated"].to_list() == [11] * 5
    assert set(draws.group_by("product_id").agg(pl.col("treated").sum())["treated"].to_list()) <= {1, 2}
    # Blackout: the first day of every block after the first.
    assert sorted(set(table.filter(pl.col("blackout"))["date"].cast(pl.String).to_list())) == [
        "2026-03-05",
        "2026-03-08",
        "2026-03-11",
        "2026-03-14",
    ]
