import json
import os
import subprocess
import sys

import polars as pl
import pytest

from pricelab_cli.io import read_provenance


@pytest.fixture
def inputs(tmp_path, run_cli):
    products = tmp_path / "products.csv"
    pl.DataFrame({"product_id": ["007", "42", "x-1", "8"]}).write_csv(products)
    design = tmp_path / "design.json"
    assert run_cli("design", "random-days", "--start", "2026-03-02", "--end", "2026-03-08", "--salt", "s", "-o", design).code == 0
    return {"products": products, "design": design, "dir": tmp_path}


def test_assign_writes_parquet_with_provenance_and_balance_report(run_cli, inputs):
    out = inputs["dir"] / "a.parquet"
    result = run_cli("assign", "--design", inputs["design"], "--products", inputs["products"], "-o", out, "--seed", "3")
    assert result.code == 0, result.stderr
    table = pl.read_parquet(out)
    assert table.columns == ["product_id", "date", "treated", "blackout", "period"]
    assert table["product_id"].unique(maintain_order=True).to_list() == ["007", "42", "x-1", "8"], "ids round-trip unchanged"
    meta = read_provenance(str(out))
    assert meta["seed"] == 3 and meta["version"] and meta["command"].startswith("pricelab assign --design")
    assert "SRM chi-square" in result.stderr and "treated share per day" in result.stderr


def test_csv_output_gets_a_sidecar_and_reruns_are_byte_identical(run_cli, inputs):
    a, b = inputs["dir"] / "a.csv", inputs["dir"] / "b.csv"
    for out in (a, b):
        assert run_cli("assign", "--design", inputs["design"], "--products", inputs["products"], "-o", out, "-q").code == 0
    assert a.read_bytes() == b.read_bytes()
    assert json.loads((inputs["dir"] / "a.csv.meta.json").read_text())["command"].endswith("-o {output} -q")
    pa_, pb = inputs["dir"] / "a.parquet", inputs["dir"] / "b.parquet"
    for out in (pa_, pb):
        assert run_cli("assign", "--design", inputs["design"], "--products", inputs["products"], "-o", out, "-q").code == 0
    assert pa_.read_bytes() == pb.read_bytes()


def test_renamed_columns_are_read_and_written_under_the_users_names(run_cli, inputs):
    products = inputs["dir"] / "skus.tsv"
    products.write_text("sku\tname\nA\tchair\nB\ttable\n")
    result = run_cli("assign", "--design", inputs["design"], "--products", products, "--unit-col", "sku", "--time-col", "day", "-o", "-", "-q")
    assert result.code == 0, result.stderr
    assert result.text.splitlines()[0] == "sku,day,treated,blackout,period"


def test_stdin_to_stdout_csv_and_parquet_streams(run_cli, inputs):
    csv_in = inputs["products"].read_bytes()
    as_csv = run_cli("assign", "--design", inputs["design"], "--products", "-", "-o", "-", "-q", stdin=csv_in)
    assert as_csv.code == 0 and as_csv.stderr == ""
    assert as_csv.text.splitlines()[1] == "007,2026-03-02," + as_csv.text.splitlines()[1].split(",", 2)[2]
    as_parquet = run_cli("assign", "--design", inputs["design"], "--products", "-", "-o", "-", "--format", "parquet", "-q", stdin=csv_in)
    assert as_parquet.stdout[:4] == b"PAR1"


def test_cluster_and_triggered_assignment_from_files(run_cli, inputs):
    d = inputs["dir"]
    (d / "clusters.csv").write_text("product_id,cluster_id\n007,a\n42,a\nx-1,b\n8,b\n")
    result = run_cli("assign", "--design", inputs["design"], "--products", inputs["products"], "--clusters", d / "clusters.csv", "-o", d / "c.parquet", "-q")
    assert result.code == 0, result.stderr
    table = pl.read_parquet(d / "c.parquet")
    assert table.group_by("cluster_id", "date").agg(pl.col("treated").n_unique())["treated"].max() == 1
    assert run_cli("design", "triggered", "--duration-days", "3", "--salt", "t", "-o", d / "t.json").code == 0
    (d / "events.csv").write_text("product_id,event_date\n42,2026-05-01\n8,2026-05-03\n")
    result = run_cli("assign", "--design", d / "t.json", "--products", inputs["products"], "--events", d / "events.csv", "-o", "-")
    assert result.code == 0
    assert "2 product(s) have no event" in result.stderr
    assert [line.split(",")[:2] for line in result.text.splitlines()[1:]][:1] == [["42", "2026-05-01"]]


def test_broken_pipe_exits_zero_quietly(inputs, tmp_path):
    big = tmp_path / "big.csv"
    pl.DataFrame({"product_id": range(200_000)}).write_csv(big)
    cmd = (
        f"{sys.executable} -m pricelab_cli assign --design {inputs['design']} --products {big} -o - -q | head -n 2; "
        "echo \"status=${PIPESTATUS[0]}\""
    )
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.stdout.splitlines()[0] == "product_id,date,treated,blackout,period"
    assert done.stdout.splitlines()[-1] == "status=0"
    assert done.stderr == ""
