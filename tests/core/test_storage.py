"""Object storage against a real S3-compatible server (moto, started by the ``s3_server`` fixture)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import textwrap
import time

import polars as pl
import pytest

from pricelab_cli import storage
from pricelab_cli.errors import InputFileError, UsageError

# The contract: an unreachable store is reported within this many seconds, never a hang.
BOUND_SECONDS = 30


@pytest.fixture
def sales_folder(tmp_path):
    """A small date-partitioned Parquet folder: sales/date=YYYY-MM-DD/00000000.parquet."""
    days = [dt.date(2026, 3, 1) + dt.timedelta(days=d) for d in range(3)]
    frame = pl.DataFrame(
        {
            "product_id": [p for _ in days for p in (101, 102, 103, 104)],
            "date": [d for d in days for _ in range(4)],
            "units": [float(i) for i in range(12)],
        }
    )
    folder = tmp_path / "sales"
    frame.write_parquet(folder, partition_by=["date"])
    return folder


@pytest.fixture
def store(s3_server, monkeypatch):
    """The server's variables as the process environment, and options built from them."""
    s3_server.use(monkeypatch)
    return storage.storage_options()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _no_aws_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --------------------------------------------------------------------------- reading


def test_polars_reads_hive_partitioned_folder_through_storage_options(s3_server, s3_bucket, store, sales_folder):
    keys = s3_server.upload(sales_folder, s3_bucket, "sales")
    uri = f"s3://{s3_bucket}/sales/"

    found = storage.check_access(uri, store)
    remote = pl.scan_parquet(uri, storage_options=store, hive_partitioning=True).collect()
    local = pl.scan_parquet(sales_folder, hive_partitioning=True).collect()

    assert found == [f"s3://{s3_bucket}/{k}" for k in keys] and len(found) == 3
    assert remote.schema == local.schema
    assert remote.sort("product_id", "date").equals(local.sort("product_id", "date"))
    assert remote.height == 12


def test_list_objects_prefix_glob_and_single_object(s3_server, s3_bucket, store, sales_folder):
    s3_server.upload(sales_folder, s3_bucket, "sales")
    s3_server.upload(sales_folder, s3_bucket, "sales_old")
    base = f"s3://{s3_bucket}"
    first = f"{base}/sales/date=2026-03-01/00000000.parquet"

    assert len(storage.list_objects(f"{base}/sales", store)) == 3  # not sales_old/
    every = storage.list_objects(f"{base}/sales/", store)
    assert storage.list_objects(f"{base}/sales/*/*.parquet", store) == every
    assert storage.list_objects(f"{base}/sales/*.parquet", store) == []  # * stays within a segment
    assert len(storage.list_objects(f"{base}/**/*.parquet", store)) == 6
    assert storage.list_objects(f"{base}/sales/date=2026-03-0[12]/*", store) == [
        first,
        f"{base}/sales/date=2026-03-02/00000000.parquet",
    ]
    assert storage.list_objects(first, store) == [first]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("nothing/", "no objects under this prefix"),
        ("sales/*.csv", "no object matches this pattern"),
        ("sales/missing.csv", "no such object"),
    ],
)
def test_nothing_there_is_an_input_error_naming_the_uri(s3_server, s3_bucket, store, sales_folder, path, expected):
    s3_server.upload(sales_folder, s3_bucket, "sales")
    uri = f"s3://{s3_bucket}/{path}"
    with pytest.raises(InputFileError) as caught:
        storage.check_access(uri, store)
    assert str(caught.value).startswith(f"{uri}: ") and expected in str(caught.value)
    assert caught.value.exit_code == 66


def test_missing_bucket_is_named(store):
    uri = "s3://no-such-bucket-here/sales/"
    expected = r"^s3://no-such-bucket-here/sales/: the bucket 'no-such-bucket-here' does not exist at http://"
    with pytest.raises(InputFileError, match=expected):
        storage.check_access(uri, store)
    with pytest.raises(InputFileError, match="does not exist"):
        storage.get_object("s3://no-such-bucket-here/design.json", store)


# --------------------------------------------------------------------------- writing


def test_put_then_get_round_trips_bytes_and_replaces_whole(s3_server, s3_bucket, store):
    uri = f"s3://{s3_bucket}/out/effects.csv"
    data = bytes(range(256)) * 1000

    storage.put_object(uri, data, store)
    assert storage.get_object(uri, store) == data
    assert s3_server.read(s3_bucket, "out/effects.csv") == data

    storage.put_object(uri, b"outcome,estimate\nunits,1.5\n", store)
    assert storage.get_object(uri, store) == b"outcome,estimate\nunits,1.5\n"
    assert s3_server.list_keys(s3_bucket) == ["out/effects.csv"]  # no staging object left


def test_put_file_streams_a_local_file(s3_server, s3_bucket, store, tmp_path):
    local = tmp_path / "assignment.parquet"
    local.write_bytes(os.urandom(3_000_000))
    storage.put_file(f"s3://{s3_bucket}/assignment.parquet", local, store)
    assert s3_server.read(s3_bucket, "assignment.parquet") == local.read_bytes()


def test_interrupted_upload_leaves_old_object_and_nothing_else(s3_server, s3_bucket, store):
    # In a child process, so that what matters is checked after it has exited: pyarrow
    # completes an unclosed upload when the stream is destroyed, at exit at the latest.
    uri = f"s3://{s3_bucket}/out/assignment.parquet"
    storage.put_object(uri, b"the previous run's output", store)
    script = textwrap.dedent(
        f"""
        import os
        from pricelab_cli import storage

        def interrupted():
            yield os.urandom(12 << 20)  # past pyarrow's part size: a multipart upload is under way
            raise KeyboardInterrupt

        try:
            storage._upload({uri!r}, storage.storage_options(), interrupted())
        except KeyboardInterrupt:
            print("interrupted")
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ}, capture_output=True, text=True, timeout=60
    )

    assert (child.returncode, child.stdout, child.stderr) == (0, "interrupted\n", "")
    assert s3_server.list_keys(s3_bucket) == ["out/assignment.parquet"]
    assert s3_server.read(s3_bucket, "out/assignment.parquet") == b"the previous run's output"


def test_output_needs_an_object_name(s3_bucket, store):
    with pytest.raises(UsageError, match="needs an object name"):
        storage.put_object(f"s3://{s3_bucket}/out/", b"x", store)


# --------------------------------------------------------------------------- failures


def test_unreachable_endpoint_fails_fast_naming_uri_and_variable(s3_server, monkeypatch):
    s3_server.use(monkeypatch)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    options = storage.storage_options()
    uri = "s3://sales-bucket/sales/"

    started = time.monotonic()
    with pytest.raises(InputFileError) as caught:
        storage.check_access(uri, options)
    elapsed = time.monotonic() - started

    message = str(caught.value)
    assert elapsed < BOUND_SECONDS
    assert message.startswith(f"{uri}: cannot reach the object store at {endpoint}")
    assert "AWS_ENDPOINT_URL" in message and caught.value.exit_code == 66

    # The reader itself is bounded by the same options, and its failure reads the same.
    started = time.monotonic()
    with pytest.raises(OSError) as raw:
        pl.scan_parquet(uri, storage_options=options).collect_schema()
    assert time.monotonic() - started < BOUND_SECONDS
    assert "AWS_ENDPOINT_URL" in str(storage.cloud_error(uri, raw.value, options))


def test_silent_endpoint_does_not_hang(s3_server, monkeypatch):
    # A server that accepts connections and never answers (the kernel completes the
    # handshake on the listening socket; nobody reads the request).
    s3_server.use(monkeypatch)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        # A slow store is told how to wait longer, an absent one where to point.
        expected = (
            r"^s3://b/sales/: the object store at .* did not answer within the timeout.*"
            r"--storage-option timeout=.*AWS_ENDPOINT_URL"
        )
        with pytest.raises(InputFileError, match=expected):
            storage.check_access("s3://b/sales/", storage.storage_options(["timeout=8s"]))
        waited = time.monotonic() - started
        # The whole timeout is waited for (pyarrow alone gives up after 3 s), and no longer
        # than a generous bound: a loaded machine only lengthens the wait.
        assert 5 <= waited < BOUND_SECONDS, waited


def test_a_store_that_answers_late_is_waited_for(s3_server, s3_bucket, monkeypatch):
    """A store that is silent for longer than pyarrow's fixed 3 s before its first answer (a
    busy server) is read, within the timeout given, not called unreachable."""
    import importlib

    s3_server.use(monkeypatch)
    storage.put_object(f"s3://{s3_bucket}/late/one.csv", b"a\n1\n", storage.storage_options())
    late = importlib.import_module("pricelab_tests_object_store").FaultyProxy(
        s3_server.endpoint, "late", after=0, delay=4.5
    )
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", late.endpoint)
        started = time.monotonic()
        found = storage.check_access(f"s3://{s3_bucket}/late/", storage.storage_options(["timeout=20s"]))
        waited = time.monotonic() - started
    finally:
        late.close()
    assert found == [f"s3://{s3_bucket}/late/one.csv"]
    assert waited >= 3, waited  # pyarrow gave up once, and was asked again


@pytest.mark.parametrize(
    "call",
    [
        lambda uri, o: storage.check_access(uri, o),
        lambda uri, o: storage.get_object(uri, o),
        lambda uri, o: storage.put_object(uri, b"x", o),
    ],
    ids=["check_access", "get_object", "put_object"],
)
def test_missing_credentials_are_named_at_once(s3_server, monkeypatch, call):
    _no_aws_environment(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    uri = "s3://sales-bucket/sales/part-0.csv"

    # "At once": refused before any client is built, so nothing waits on a network or on the
    # credential chain's metadata address (measured here: 2.3 s when the client is asked).
    import pyarrow.fs

    def asked(*args, **kwargs):
        raise AssertionError("an S3 client was built without credentials")

    monkeypatch.setattr(pyarrow.fs, "S3FileSystem", asked)
    with pytest.raises(InputFileError) as caught:
        call(uri, storage.storage_options())

    message = str(caught.value)
    assert message.startswith(f"{uri}: no credentials are set")
    for named in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "--storage-option"):
        assert named in message


def test_refused_credentials_are_named(tmp_path, monkeypatch):
    # A second server that checks credentials (moto accepts any by default); it knows no keys.
    from pricelab_tests_object_store import running_s3_server

    with running_s3_server(tmp_path / "auth.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as server:
        server.use(monkeypatch)
        options = storage.storage_options()
        uri = "s3://sales-bucket/sales/"
        with pytest.raises(InputFileError) as caught:
            storage.check_access(uri, options)
        with pytest.raises(OSError) as raw:
            pl.scan_parquet(uri, storage_options=options).collect_schema()

    for message in (str(caught.value), str(storage.cloud_error(uri, raw.value, options))):
        assert message.startswith(f"{uri}: the object store at {server.endpoint} refused access")
        assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message


def test_half_the_keys_says_which_is_missing(monkeypatch):
    _no_aws_environment(monkeypatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-example")
    expected = "only AWS_ACCESS_KEY_ID is set; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    with pytest.raises(InputFileError, match=expected):
        storage.check_access("s3://b/k", storage.storage_options())


def test_other_schemes_are_a_usage_error(store):
    with pytest.raises(UsageError, match=r"^gs://b/sales/: pricelab reads object storage through s3:// URIs"):
        storage.check_access("gs://b/sales/", store)


# --------------------------------------------------------------------------- options


def test_storage_options_from_environment_and_overrides():
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "env-key",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
        "AWS_SESSION_TOKEN": "env-token",
    }
    options = storage.storage_options(environ=env)
    assert options == {
        "aws_endpoint_url": "http://127.0.0.1:9000",
        "aws_region": "eu-west-1",
        "aws_access_key_id": "env-key",
        "aws_secret_access_key": "env-secret",
        "aws_session_token": "env-token",
        "aws_allow_http": "true",
        **storage.DEFAULT_BOUNDS,
        # pricelab's timeout is the whole wait; polars, which asks twice, gets half a request.
        "timeout": f"{int(storage.DEFAULT_TIMEOUT_S * 500)}ms",
    }

    given = storage.storage_options(
        ["Region=us-west-2", "endpoint_url=https://s3.example.com", "max_retries=5", "aws_access_key_id=k"],
        environ={**env, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9001"},
    )
    assert given["aws_region"] == "us-west-2"
    assert given["aws_endpoint_url"] == "https://s3.example.com"
    assert given["max_retries"] == 5  # polars wants an int here
    assert "aws_session_token" not in given  # the environment's token belongs to its keys
    assert "aws_allow_http" not in given  # https endpoint
    s3_specific = storage.storage_options(environ={**env, "AWS_ENDPOINT_URL_S3": "http://s3:1"})
    assert s3_specific["aws_endpoint_url"] == "http://s3:1"
    assert storage.storage_options({"aws_allow_http": "false"}, environ=env)["aws_allow_http"] == "false"


def test_storage_option_pairs_must_be_key_value():
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        storage.storage_options(["aws_region"], environ={})
    with pytest.raises(UsageError, match="max_retries must be a number"):
        storage.storage_options(["max_retries=many"], environ={})


@pytest.mark.parametrize(
    ("path", "remote"),
    [
        ("s3://bucket/sales/", True),
        ("S3://bucket/key.parquet", True),
        ("gs://bucket/x", True),
        ("-", False),
        ("sales.parquet", False),
        ("/data/sales/date=2026-03-01/", False),
        ("C:\\data\\sales.csv", False),
        ("file:///data/sales.csv", False),
    ],
)
def test_is_remote(path, remote):
    assert storage.is_remote(path) is remote
