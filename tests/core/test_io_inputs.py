"""Where a table lives: one file, a folder, a pattern, hive partitions, an object store.

Every kind of input must give the same frame as the equivalent single Parquet file, read
only what it is asked for, and refuse bad datasets before reading data, naming the input,
the file and the column.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import re

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pricelab_cli import io, paths, storage
from pricelab_cli.errors import ColumnTypeError, DataError, EmptyTableError, InputFileError, MissingColumnError
from pricelab_cli.simulate import simulate_catalog, simulate_sales

END = dt.date(2026, 3, 10)
SALES = {"required": ["product_id", "date", "units"], "dates": ["date"], "unique": ["product_id", "date"]}


@pytest.fixture(scope="module")
def sales() -> pl.DataFrame:
    products, _ = simulate_catalog(30, 3, 5, seed=1)
    frame = simulate_sales(products, history_days=20, end=END, seed=1).sales
    return frame.sort("date", maintain_order=True)


def write_layouts(frame: pl.DataFrame, d: pathlib.Path) -> dict[str, str]:
    """The same table in every local layout; returns kind -> path to give pricelab."""
    frame.write_parquet(d / "one.parquet")
    days = frame["date"].unique().sort()
    nested = d / "plain" / "nested"
    nested.mkdir(parents=True)
    for i, day in enumerate(days):
        frame.filter(pl.col("date") == day).write_parquet(nested / f"part-{i:03d}.parquet")
    (d / "plain" / "notes.txt").write_text("not data\n")
    frame.write_parquet(d / "hive", partition_by="date")  # the key is also inside each file
    for day in days:  # Spark's layout: the key only in the folder name, bookkeeping files beside
        folder = d / "spark" / f"date={day}"
        folder.mkdir(parents=True)
        frame.filter(pl.col("date") == day).drop("date").write_parquet(folder / "part-00000.snappy.parquet")
        (folder / ".part-00000.snappy.parquet.crc").write_bytes(b"crc")
    (d / "spark" / "_SUCCESS").write_bytes(b"")
    return {
        "folder": str(d / "plain"),
        "folder with a slash": str(d / "plain") + "/",
        "pattern": str(nested / "*.parquet"),
        "recursive pattern": str(d / "plain" / "**" / "*.parquet"),
        "hive partitions": str(d / "hive"),
        "spark partitions": str(d / "spark"),
        "pattern over partitions": str(d / "spark" / "date=*" / "*.parquet"),
    }


@pytest.fixture(scope="module")
def layouts(sales, tmp_path_factory):
    d = tmp_path_factory.mktemp("layouts")
    return d, write_layouts(sales, d)


KINDS = [
    "folder",
    "folder with a slash",
    "pattern",
    "recursive pattern",
    "hive partitions",
    "spark partitions",
    "pattern over partitions",
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_layout_reads_as_the_single_file(layouts, kind):
    d, paths = layouts
    single = io.read_table(str(d / "one.parquet"), **SALES)
    got = io.read_table(paths[kind], **SALES)
    assert got.schema["date"] == pl.Date
    assert got.select(single.columns).equals(single)


@pytest.mark.parametrize("kind", KINDS)
def test_columns_and_where_read_only_what_is_asked(layouts, kind):
    d, paths = layouts
    cut = END - dt.timedelta(days=5)
    wanted = ["product_id", "date", "units", "not_there"]  # optional names the table lacks are skipped
    expected = pl.read_parquet(d / "one.parquet").filter(pl.col("date") <= cut).select("product_id", "date", "units")
    got = io.read_table(paths[kind], **SALES, columns=wanted, where=pl.col("date") <= cut)
    assert sorted(got.columns) == ["date", "product_id", "units"]
    assert got.select(expected.columns).equals(expected)


def test_scan_table_is_lazy_renamed_and_typed(layouts):
    _, paths = layouts
    scan = io.scan_table(
        paths["spark partitions"], required=["sku", "date"], rename={"product_id": "sku"}, dates=["date"]
    )
    assert isinstance(scan, pl.LazyFrame)
    schema = scan.collect_schema()
    assert schema["sku"] == pl.Int64 and schema["date"] == pl.Date and "product_id" not in schema


def test_a_date_filter_skips_the_partitions_it_rules_out(layouts):
    _, paths = layouts
    cut = END - dt.timedelta(days=15)
    kept = sum(
        1
        for p in pathlib.Path(paths["spark partitions"]).iterdir()
        if p.name.startswith("date=") and dt.date.fromisoformat(p.name[5:]) <= cut
    )
    assert 0 < kept < 10
    plan = io.scan_table(paths["spark partitions"], dates=["date"]).filter(pl.col("date") <= cut).explain()
    scan_line = next(line for line in plan.splitlines() if "SCAN [" in line)
    others = re.search(r"(\d+) other sources", scan_line)
    assert others is not None and int(others.group(1)) + 1 == kept, plan
    assert "SELECTION" in plan


def test_a_where_quotes_the_row_of_the_file_not_of_what_was_read(tmp_path):
    frame = pl.DataFrame(
        {
            "product_id": [1, 2, 3, None],
            "date": [dt.date(2026, 3, d) for d in (1, 2, 3, 4)],
            "units": [1.0, 2.0, 3.0, 4.0],
        }
    )
    frame.write_parquet(tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"column 'product_id' is empty on row 4 "):
        io.read_table(str(tmp_path / "s.parquet"), dates=["date"], where=pl.col("date") >= dt.date(2026, 3, 3))
    frame.with_columns(units=pl.Series([1.0, float("inf"), 3.0, 4.0])).drop_nulls("product_id").write_parquet(
        tmp_path / "t.parquet"
    )
    with pytest.raises(DataError, match=r"column 'units' has inf on row 2;"):
        io.read_table(str(tmp_path / "t.parquet"), dates=["date"], where=pl.col("date") >= dt.date(2026, 3, 2))


def test_a_batch_of_a_scan_is_checked_with_the_rows_of_the_input():
    batch = pl.DataFrame({"product_id": [1, 2], "units": [1.0, float("inf")]})
    with pytest.raises(DataError, match=r"s.parquet: column 'units' has inf on row 1002;"):
        io.check_values(batch, "s.parquet", first_row=1000)
    with pytest.raises(DataError, match=r"column 'product_id' is empty on row 2 "):
        io.check_values(pl.DataFrame({"product_id": [1, None]}), "s.parquet")


def test_a_where_that_keeps_nothing_is_not_an_empty_table(layouts):
    _, paths = layouts
    got = io.read_table(paths["folder"], **SALES, where=pl.col("date") > END)
    assert got.height == 0


def test_text_ids_become_integers_for_every_kind_and_zeros_are_kept(tmp_path):
    canonical = pl.DataFrame({"product_id": ["1", "2", "10"], "x": [1.0, 2.0, 3.0]})
    padded = pl.DataFrame({"product_id": ["001", "002", "010"], "x": [1.0, 2.0, 3.0]})
    for name, frame in (("canonical", canonical), ("padded", padded)):
        (tmp_path / name).mkdir()
        frame.write_parquet(tmp_path / name / "a.parquet")
        frame.write_csv(tmp_path / f"{name}.csv")
        frame.write_parquet(tmp_path / f"{name}.parquet")
    for name, dtype in (("canonical", pl.Int64), ("padded", pl.String)):
        frames = [io.read_table(str(tmp_path / p)) for p in (f"{name}.csv", f"{name}.parquet", name)]
        assert all(f.schema["product_id"] == dtype for f in frames), name
        assert frames[0].equals(frames[1]) and frames[1].equals(frames[2])
        assert io.scan_table(str(tmp_path / name)).collect_schema()["product_id"] == dtype


def test_a_partition_column_is_typed_as_the_file_column_would_be(tmp_path):
    for store, category in (("1", "a"), ("2", "b")):
        folder = tmp_path / f"store_id={store}" / f"category={category}" / f"day={dt.date(2026, 3, int(store))}"
        folder.mkdir(parents=True)
        pl.DataFrame({"units": [1.0]}).write_parquet(folder / "p.parquet")
    (tmp_path / "cluster_id=007").mkdir()
    got = io.read_table(str(tmp_path), rename={"day": "date"}, dates=["date"], required=["date"])
    assert got.schema == pl.Schema({"units": pl.Float64, "store_id": pl.Int64, "category": pl.String, "date": pl.Date})
    assert got["date"].to_list() == [dt.date(2026, 3, 1), dt.date(2026, 3, 2)]


def test_key_value_folders_above_the_dataset_are_not_partitions(tmp_path, sales):
    root = tmp_path / "env=prod" / "sales"
    root.mkdir(parents=True)
    sales.write_parquet(root, partition_by="date")
    got = io.read_table(str(root), **SALES)
    assert "env" not in got.columns and got.height == sales.height


def test_string_and_timestamp_dates_in_parquet_are_checked_like_csv(tmp_path):
    days = pl.Series([dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)])
    base = pl.DataFrame({"product_id": [1, 2, 3], "date": days})
    base.with_columns(pl.col("date").cast(pl.String)).write_parquet(tmp_path / "text.parquet")
    base.with_columns(pl.col("date").cast(pl.Datetime("us"))).write_parquet(tmp_path / "midnight.parquet")
    for name in ("text.parquet", "midnight.parquet"):
        got = io.read_table(str(tmp_path / name), dates=["date"])
        assert got.equals(base), name
    base.with_columns(pl.Series("date", ["2026-03-01", "2026/03/02", "2026-03-03"])).write_parquet(
        tmp_path / "bad.parquet"
    )
    with pytest.raises(
        ColumnTypeError, match=r"bad.parquet: column 'date' .* not an ISO date .*'2026/03/02' \(row 2\)"
    ):
        io.scan_table(str(tmp_path / "bad.parquet"), dates=["date"])
    late = base.with_columns(pl.col("date").cast(pl.Datetime("us")) + pl.duration(hours=pl.Series([0, 0, 9])))
    late.write_parquet(tmp_path / "late.parquet")
    with pytest.raises(
        ColumnTypeError, match=r"late.parquet: column 'date' holds timestamps with a time of day.*row 3"
    ):
        io.read_table(str(tmp_path / "late.parquet"), dates=["date"])


# --------------------------------------------------------------------------- bad datasets


def test_files_that_disagree_are_refused_naming_two_files_and_the_column(tmp_path, sales):
    d = tmp_path / "ds"
    d.mkdir()
    sales.head(10).write_parquet(d / "a.parquet")
    sales.tail(10).with_columns(pl.col("units").cast(pl.Float64)).write_parquet(d / "b.parquet")
    with pytest.raises(DataError) as caught:
        io.scan_table(str(d), required=["product_id"])
    message = str(caught.value)
    assert f"{d}: its files disagree on column 'units'" in message
    assert f"type Int64 in {d / 'a.parquet'}" in message and f"type Float64 in {d / 'b.parquet'}" in message
    (d / "b.parquet").unlink()
    sales.tail(10).drop("price").write_parquet(d / "c.parquet")
    with pytest.raises(
        DataError, match=r"disagree on column 'price': type Float64 in .*a.parquet but absent in .*c.parquet"
    ):
        io.read_table(str(d))


def test_a_file_outside_the_partition_folders_is_refused(tmp_path, sales):
    sales.write_parquet(tmp_path / "ds", partition_by="date")
    stray = tmp_path / "ds" / "late.parquet"
    sales.head(3).write_parquet(stray)
    with pytest.raises(
        DataError, match=rf"{stray} is not in a date=\.\.\. folder, unlike .*partition column 'date' is missing"
    ):
        io.read_table(str(tmp_path / "ds"), **SALES)


def test_a_date_partition_that_is_not_a_date_is_refused(tmp_path, sales):
    sales.write_parquet(tmp_path / "ds", partition_by="date")
    first = sorted((tmp_path / "ds").iterdir())[0]
    first.rename(tmp_path / "ds" / "date=2026-02-30")
    with pytest.raises(ColumnTypeError, match=r"partition folder date=2026-02-30 \(.*\) is not an ISO date"):
        io.scan_table(str(tmp_path / "ds"), dates=["date"])


def test_a_missing_column_names_the_input_and_what_is_there(layouts):
    _, paths = layouts
    with pytest.raises(MissingColumnError) as caught:
        io.scan_table(paths["spark partitions"], required=["product_id", "stock"])
    message = str(caught.value)
    assert message.startswith(f"{paths['spark partitions']}: missing column 'stock'")
    assert "'product_id', 'units', 'price', 'revenue', 'date'" in message


def test_a_repeated_column_name_in_a_parquet_file_is_refused(tmp_path):
    pq.write_table(pa.table([pa.array([1]), pa.array([2])], names=["product_id", "product_id"]), tmp_path / "r.parquet")
    with pytest.raises(DataError, match=r"r.parquet: the file names column 'product_id' more than once"):
        io.read_table(str(tmp_path / "r.parquet"))


@pytest.mark.parametrize(
    ("make", "given", "fragment"),
    [
        (lambda d: None, lambda d: d, "is a folder, not a file, and holds no Parquet files (it is empty)"),
        (
            lambda d: (d / "a.csv").write_text("product_id\n1\n"),
            lambda d: d,
            "holds no Parquet files (1 other file(s), e.g. a.csv)",
        ),
        (lambda d: None, lambda d: d / "*.parquet", "no file matches this pattern"),
        (
            lambda d: (d / "a.csv").write_text("product_id\n1\n"),
            lambda d: d / "*",
            "matches 1 other file(s), e.g. a.csv, but no Parquet file",
        ),
        (
            lambda d: (d / "bad.parquet").write_text("not parquet"),
            lambda d: d,
            "bad.parquet: not a readable Parquet file",
        ),
        (lambda d: None, lambda d: d / "gone.parquet", "gone.parquet: no such file."),
    ],
    ids=[
        "empty folder",
        "folder without parquet",
        "pattern matching nothing",
        "pattern matching no parquet",
        "corrupt file in a folder",
        "missing file",
    ],
)
def test_nothing_to_read_is_an_input_error(tmp_path, make, given, fragment):
    d = tmp_path / "in"
    d.mkdir()
    make(d)
    with pytest.raises(InputFileError) as caught:
        io.read_table(str(given(d)))
    assert caught.value.exit_code == 66 and fragment in str(caught.value), str(caught.value)


def test_an_empty_dataset_is_an_empty_table(tmp_path, sales):
    d = tmp_path / "ds"
    d.mkdir()
    sales.head(0).write_parquet(d / "a.parquet")
    with pytest.raises(EmptyTableError, match=rf"{d}: the table has a header but no rows"):
        io.read_table(str(d))
    assert io.read_table(str(d), allow_empty=True).height == 0


def test_patterns_follow_glob_rules():
    rx = storage.glob_regex("s3://b/sales/**/*.parquet")
    assert rx.fullmatch("s3://b/sales/a.parquet") and rx.fullmatch("s3://b/sales/date=1/x/a.parquet")
    assert not rx.fullmatch("s3://b/salesx/a.parquet")
    one = storage.glob_regex("s3://b/sales/*.parquet")
    assert one.fullmatch("s3://b/sales/a.parquet") and not one.fullmatch("s3://b/sales/d/a.parquet")
    assert storage.glob_regex("x/part-[!0].parquet").fullmatch("x/part-1.parquet")
    assert not storage.glob_regex("x/part-[!0].parquet").fullmatch("x/part-0.parquet")
    assert paths.glob_root("s3://b/sales/date=*/p.parquet") == "s3://b/sales"
    assert paths.glob_root("/*.parquet") == "/" and paths.glob_root("*.parquet") == ""
    # The output checks and the readers share these rules: a character class is a class.
    assert paths.glob_regex("/d/part-[0-9].parquet").fullmatch("/d/part-3.parquet")


def test_a_csv_file_keeps_its_checks_and_takes_columns_and_where(tmp_path, sales):
    sales.write_csv(tmp_path / "s.csv")
    cut = END - dt.timedelta(days=3)
    got = io.read_table(
        str(tmp_path / "s.csv"), **SALES, columns=["product_id", "date", "units"], where=pl.col("date") <= cut
    )
    assert got.equals(sales.filter(pl.col("date") <= cut).select("product_id", "date", "units"))
    assert io.scan_table(str(tmp_path / "s.csv"), dates=["date"]).collect().equals(sales)


# --------------------------------------------------------------------------- object storage
# Against a real S3-compatible server (moto, started by the ``s3_server`` fixture).


@pytest.fixture
def store(s3_server, monkeypatch, layouts):
    s3_server.use(monkeypatch)
    bucket = s3_server.create_bucket()
    d, _ = layouts
    s3_server.upload(d / "one.parquet", bucket, "one")
    s3_server.upload(d / "plain", bucket, "plain")
    s3_server.upload(d / "spark", bucket, "env=prod/spark")
    return bucket


@pytest.mark.parametrize(
    "uri",
    [
        "one/one.parquet",
        "plain",
        "plain/",
        "plain/nested/*.parquet",
        "plain/**/*.parquet",
        "env=prod/spark/",
        "env=prod/spark/date=2026-03-0*/*.parquet",
    ],
)
def test_an_object_store_uri_reads_as_the_single_file(layouts, store, uri):
    d, _ = layouts
    single = io.read_table(str(d / "one.parquet"), **SALES)
    got = io.read_table(f"s3://{store}/{uri}", **SALES)
    if "*" in uri and "date=" in uri:
        single = single.filter(pl.col("date").dt.month() == 3, pl.col("date").dt.day() < 10)
    assert got.select(single.columns).equals(single)


def test_an_object_store_scan_prunes_partitions_and_checks_files(layouts, store, s3_server):
    cut = END - dt.timedelta(days=3)
    got = io.read_table(
        f"s3://{store}/env=prod/spark/", **SALES, columns=["product_id", "date", "units"], where=pl.col("date") > cut
    )
    assert got["date"].min() > cut and got.height == 30 * 3
    bad = pl.read_parquet(layouts[0] / "one.parquet").head(5).with_columns(pl.col("units").cast(pl.String))
    bad.drop("date").write_parquet(layouts[0] / "bad.parquet")
    s3_server.upload(layouts[0] / "bad.parquet", store, "env=prod/spark/date=2026-03-11")
    (layouts[0] / "bad.parquet").unlink()
    with pytest.raises(
        DataError,
        match=rf"s3://{store}/env=prod/spark/: its files disagree on column 'units': "
        rf"type Int64 in s3://{store}/.* but type String in s3://{store}/.*bad.parquet",
    ):
        io.scan_table(f"s3://{store}/env=prod/spark/")


def test_a_csv_object_is_read_whole(layouts, store, s3_server, tmp_path):
    sales = pl.read_parquet(layouts[0] / "one.parquet")
    sales.write_csv(tmp_path / "sales.csv")
    s3_server.upload(tmp_path / "sales.csv", store, "csv")
    assert io.read_table(f"s3://{store}/csv/sales.csv", **SALES).equals(sales)


def test_an_unreachable_store_or_no_credentials_is_an_input_error_in_seconds(s3_server, monkeypatch):
    import socket
    import time

    s3_server.use(monkeypatch)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    began = time.monotonic()
    with pytest.raises(InputFileError, match=r"s3://nowhere/sales/: cannot reach the object store .* AWS_ENDPOINT_URL"):
        io.read_table("s3://nowhere/sales/")
    assert time.monotonic() - began < 30
    s3_server.use(monkeypatch)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(InputFileError, match=r"s3://nowhere/sales/: no credentials are set; set AWS_ACCESS_KEY_ID"):
        io.scan_table("s3://nowhere/sales/")
