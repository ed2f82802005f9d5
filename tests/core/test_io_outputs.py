"""Outputs written as partitioned Parquet folders, in pieces, atomically, never over a
user's folder; the output-path checks that come with them."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os

import polars as pl
import pyarrow.parquet as pq
import pytest

from pricelab_cli import io
from pricelab_cli.errors import InputFileError, UsageError

META = {"version": "test", "command": "pricelab test -o {output}", "seed": 7}
D1, D2, D3 = dt.date(2026, 3, 2), dt.date(2026, 3, 3), dt.date(2026, 3, 4)


def panel() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "product_id": ["b", "a", "c", "b", "a", "c", "b"],
            "date": [D1, D1, D1, D2, D2, D2, D3],
            "treated": pl.Series([1, 0, 1, 0, 0, 1, 1], dtype=pl.Int8),
        }
    )


def files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def provenance_of(path) -> dict:
    return json.loads(pq.read_schema(path).metadata[io.PROVENANCE_KEY.encode()])


def test_a_path_ending_in_a_slash_is_a_dataset_partitioned_by_date(tmp_path):
    io.write_table(panel(), f"{tmp_path}/out/", meta=META)
    out = tmp_path / "out"
    assert files(out) == [f"date={d}/part-0.parquet" for d in ("2026-03-02", "2026-03-03", "2026-03-04")]
    for path in out.rglob("*.parquet"):
        assert provenance_of(path) == META
        assert pq.read_schema(path).names == ["product_id", "treated"], "the date lives in the folder name"
    back = pl.read_parquet(out, hive_partitioning=True).select(panel().columns)
    assert back.schema == panel().schema
    assert back.equals(panel().sort("date", maintain_order=True)), "rows keep their order inside each date"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder is left behind"


def test_a_table_without_the_date_column_is_one_part_file(tmp_path):
    io.write_table(panel().drop("date"), f"{tmp_path}/out/", meta=META)
    assert files(tmp_path / "out") == ["part-0.parquet"]
    assert pl.read_parquet(tmp_path / "out" / "part-0.parquet").equals(panel().drop("date"))


def test_an_existing_folder_is_a_folder_output_and_partitions_follow_the_named_column(tmp_path):
    (tmp_path / "out").mkdir()
    io.write_table(panel().rename({"date": "day"}), str(tmp_path / "out"), meta=META, partition_by="day")
    assert files(tmp_path / "out")[0] == "day=2026-03-02/part-0.parquet"


def test_consecutive_rows_of_a_partition_share_a_file_and_a_partition_met_again_gets_another(tmp_path):
    whole = panel()
    late = pl.DataFrame({"product_id": ["z"], "date": [D1], "treated": pl.Series([1], dtype=pl.Int8)})
    pieces = [whole.slice(0, 4), whole.slice(4, 3), late]  # the second date spans two pieces
    io.write_table(iter(pieces), f"{tmp_path}/out/", meta=META)
    assert files(tmp_path / "out") == [
        "date=2026-03-02/part-0.parquet",
        "date=2026-03-02/part-1.parquet",
        "date=2026-03-03/part-0.parquet",
        "date=2026-03-04/part-0.parquet",
    ]
    assert pl.read_parquet(tmp_path / "out" / "date=2026-03-03" / "part-0.parquet")["product_id"].to_list() == [
        "b",
        "a",
        "c",
    ]
    back = pl.read_parquet(tmp_path / "out", hive_partitioning=True).select(whole.columns)
    assert back.sort("product_id", "date").equals(pl.concat(pieces).sort("product_id", "date"))


def test_an_empty_table_leaves_a_readable_dataset(tmp_path):
    io.write_table(panel().clear(), f"{tmp_path}/out/", meta=META)
    assert files(tmp_path / "out") == ["part-0.parquet"]
    assert pl.read_parquet(tmp_path / "out" / "part-0.parquet").schema == panel().schema


@pytest.mark.parametrize("ext", ["parquet", "csv", "tsv", "csv.gz"])
def test_a_table_written_in_pieces_equals_the_table_written_whole(tmp_path, ext):
    whole, split = tmp_path / f"whole.{ext}", tmp_path / f"split.{ext}"
    io.write_table(panel(), str(whole), meta=META)
    io.write_table((panel().slice(i, 2) for i in range(0, 7, 2)), str(split), meta=META)
    if ext == "parquet":
        assert pl.read_parquet(split).equals(pl.read_parquet(whole))
        assert provenance_of(split) == META
    else:
        read = gzip.decompress if ext.endswith(".gz") else (lambda b: b)
        assert read(split.read_bytes()) == read(whole.read_bytes())
        assert json.loads((tmp_path / f"split.{ext}.meta.json").read_text()) == META


def test_pieces_to_a_stream_are_one_table(capsysbinary):
    io.write_table(iter([panel().slice(0, 3), panel().slice(3, 4)]), "-")
    out = capsysbinary.readouterr().out.decode()
    assert out.splitlines()[0] == "product_id,date,treated" and len(out.splitlines()) == 8


def test_nothing_lands_before_the_commit_and_a_failed_run_leaves_the_old_dataset(tmp_path):
    target = f"{tmp_path}/out/"
    io.write_table(panel(), target, meta=META)
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*.parquet")}
    with pytest.raises(RuntimeError), io.output_transaction():
        io.write_table(panel().filter(pl.col("date") == D1), target, meta={**META, "seed": 8})
        assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*.parquet")} == before
        raise RuntimeError("the run fails after writing")
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*.parquet")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "the temporary folder is gone"
    with io.output_transaction():
        io.write_table(panel().filter(pl.col("date") == D1), target, meta={**META, "seed": 8})
    assert files(tmp_path / "out") == ["date=2026-03-02/part-0.parquet"], "stale partitions do not survive"
    assert provenance_of(tmp_path / "out" / "date=2026-03-02" / "part-0.parquet")["seed"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_new_dataset_gets_ordinary_folder_permissions(tmp_path):
    io.write_table(panel(), f"{tmp_path}/out/", meta=META)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda d: (d / "notes.txt").write_text("mine"), "it holds notes.txt, which pricelab does not write"),
        (
            lambda d: pl.DataFrame({"x": [1]}).write_parquet(d / "part-0.parquet"),
            "part-0.parquet carries no pricelab provenance",
        ),
        (lambda d: (d / "raw").mkdir(), "it holds the folder raw"),
        (
            lambda d: (d / "date=2026-03-02").mkdir() or (d / "date=2026-03-02" / "x.csv").write_text("1"),
            "it holds date=2026-03-02/x.csv",
        ),
    ],
)
def test_a_folder_pricelab_did_not_write_is_never_replaced(tmp_path, spoil, reason):
    folder = tmp_path / "mine"
    folder.mkdir()
    spoil(folder)
    before = files(folder)
    with pytest.raises(UsageError, match="not a pricelab dataset") as caught:
        io.check_outputs({"-o": f"{folder}/"}, {})
    assert f"-o {folder}/: the folder exists" in str(caught.value) and reason in str(caught.value)
    with pytest.raises(UsageError, match=reason):
        io.write_table(panel(), str(folder), meta=META)
    assert files(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_an_empty_folder_and_a_pricelab_dataset_may_be_replaced(tmp_path):
    (tmp_path / "empty").mkdir()
    io.write_table(panel(), str(tmp_path / "ours") + "/", meta=META)
    io.check_outputs({"-o": str(tmp_path / "empty"), "--cate-out": f"{tmp_path}/ours/"}, {})


def test_folder_outputs_are_checked_like_files(tmp_path):
    sales = tmp_path / "data" / "sales.parquet"
    sales.parent.mkdir()
    panel().write_parquet(sales)
    data = f"{tmp_path}/data/"
    with pytest.raises(UsageError, match=r"-o .*data/ is a folder that holds the input of --sales"):
        io.check_outputs({"-o": data}, {"--sales": str(sales)})
    with pytest.raises(UsageError, match="holds the input of --sales"):
        io.check_outputs({"-o": f"{tmp_path}/"}, {"--sales": f"{tmp_path}/data/*.parquet"})
    with pytest.raises(UsageError, match="is also the input of --sales"):
        io.check_outputs({"-o": data}, {"--sales": str(tmp_path / "data")})
    with pytest.raises(UsageError, match="lies inside the input of --sales"):
        io.check_outputs({"-o": str(tmp_path / "data" / "e.csv")}, {"--sales": data})
    with pytest.raises(UsageError, match="lies inside the input of --sales"):
        io.check_outputs({"-o": str(tmp_path / "data" / "e.parquet")}, {"--sales": f"{tmp_path}/data/*.parquet"})
    # A glob's * does not reach into sub-folders, so this output is not part of that input.
    io.check_outputs({"-o": str(tmp_path / "data" / "e.parquet")}, {"--sales": f"{tmp_path}/*.parquet"})
    with pytest.raises(UsageError, match="--cate-out .* lies inside the output folder of -o"):
        io.check_outputs({"-o": f"{tmp_path}/out/", "--cate-out": f"{tmp_path}/out/cate.csv"}, {})
    with pytest.raises(UsageError, match="-o and --cate-out name the same file"):
        io.check_outputs({"-o": f"{tmp_path}/out/", "--cate-out": f"{tmp_path}/out"}, {})
    with pytest.raises(UsageError, match="the folder .*missing.* does not exist"):
        io.check_outputs({"-o": f"{tmp_path}/missing/out/"}, {})
    with pytest.raises(UsageError, match="is a folder; give a file name"):
        io.check_outputs({"-o": f"{tmp_path}/out/"}, {}, documents=[f"{tmp_path}/out/"])
    with pytest.raises(UsageError, match="is a file, not a folder"):
        io.check_outputs({"-o": f"{sales}/"}, {})
    io.check_outputs({"-o": f"{tmp_path}/out/"}, {"--sales": str(sales)})  # a new folder beside the input is fine
    assert not (tmp_path / "out").exists(), "checks create nothing"


# --------------------------------------------------------------------------- object storage


def test_an_object_store_output_appears_whole_at_the_commit_and_never_on_failure(s3_server, s3_bucket, monkeypatch):
    s3_server.use(monkeypatch)
    table = f"s3://{s3_bucket}/out/a.csv"
    with pytest.raises(RuntimeError), io.output_transaction():
        io.write_table(iter([panel().slice(0, 3), panel().slice(3, 4)]), table, meta=META)
        io.write_json({"x": 1}, f"s3://{s3_bucket}/doc.json")
        raise RuntimeError("the run fails after writing")
    assert s3_server.list_keys(s3_bucket) == [], "a failed run leaves nothing in the store"
    with io.output_transaction():
        io.write_table(iter([panel().slice(0, 3), panel().slice(3, 4)]), table, meta=META)
        io.write_table(panel(), f"s3://{s3_bucket}/out/a.parquet", meta=META)
        assert s3_server.list_keys(s3_bucket) == [], "nothing lands before the commit"
    # (pyarrow may leave an empty "out/" folder marker when the staging object goes.)
    objects = [k for k in s3_server.list_keys(s3_bucket) if not k.endswith("/")]
    assert objects == ["out/a.csv", "out/a.csv.meta.json", "out/a.parquet"]
    assert s3_server.read(s3_bucket, "out/a.csv") == io._table_bytes(panel(), "csv", META)
    assert json.loads(s3_server.read(s3_bucket, "out/a.csv.meta.json")) == META
    assert s3_server.read(s3_bucket, "out/a.parquet") == io._table_bytes(panel(), "parquet", META)


def test_object_store_outputs_are_checked_before_any_work(s3_server, s3_bucket, monkeypatch):
    s3_server.use(monkeypatch)
    with pytest.raises(UsageError, match="name one object"):
        io.check_outputs({"-o": f"s3://{s3_bucket}/out/"}, {})
    with pytest.raises(UsageError, match="cannot tell the format"):
        io.check_outputs({"-o": f"s3://{s3_bucket}/out"}, {})
    with pytest.raises(UsageError, match="is also the input of --sales"):
        io.check_outputs({"-o": f"s3://{s3_bucket}/s.parquet"}, {"--sales": f"s3://{s3_bucket}/s.parquet"})
    with pytest.raises(UsageError, match="lies inside the input of --sales"):
        io.check_outputs({"-o": f"s3://{s3_bucket}/sales/e.csv"}, {"--sales": f"s3://{s3_bucket}/sales/"})
    with pytest.raises(InputFileError, match="s3://no-such-bucket/e.csv: the bucket 'no-such-bucket' does not exist"):
        io.check_outputs({"-o": "s3://no-such-bucket/e.csv"}, {})
    io.check_outputs(
        {"-o": f"s3://{s3_bucket}/e.csv", "--truth-out": f"s3://{s3_bucket}/t.json"},
        {},
        documents=[f"s3://{s3_bucket}/t.json"],
    )
    assert s3_server.list_keys(s3_bucket) == []


def test_provenance_never_records_a_credential():
    argv = [
        "pricelab",
        "assign",
        "--storage-option",
        "aws_region=eu-west-1",
        "--storage-option=aws_session_token=t0k",
        "--storage-option",
        "AWS_SECRET_ACCESS_KEY=s3cr3t",
        "-o",
        "s3://b/a.csv",
    ]
    command = io.provenance("1", argv, 0, ["s3://b/a.csv"])["command"]
    assert command == (
        "pricelab assign --storage-option aws_region=eu-west-1 --storage-option=aws_session_token=*** "
        "--storage-option AWS_SECRET_ACCESS_KEY=*** -o {output}"
    )
