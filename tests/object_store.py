"""A real S3-compatible server for the tests: moto's standalone server on 127.0.0.1.

``s3_server`` (session scope) starts ``python -m moto.server`` on a free loopback port in its
own process group, waits until it answers, and stops that group at the end. It carries the
endpoint, the AWS variables a user would set (``.env``), and helpers that use boto3 (a test
dependency, never needed at run time) to create buckets, upload local files and read back
what pricelab wrote. ``s3_bucket`` gives each test a fresh, empty bucket.

Tests that run the CLI against the server call ``s3_server.use(monkeypatch)``, which clears
every other AWS variable and sets ``.env``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STARTUP_SECONDS = 60
_bucket_numbers = itertools.count()


@dataclasses.dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_REGION"],
        )

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point the process at this server: other AWS_* variables removed, ``.env`` set."""
        for name in list(os.environ):
            if name.startswith("AWS_"):
                monkeypatch.delenv(name)
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name when none is given) and return its name."""
        name = name or f"pricelab-{os.getpid()}-{next(_bucket_numbers)}"
        self.client().create_bucket(Bucket=name)
        return name

    def upload(self, local: str | Path, bucket: str, prefix: str = "") -> list[str]:
        """Upload a file, or a folder tree keeping its relative paths, under ``prefix``.

        Returns the keys written, sorted; ``s3://{bucket}/{prefix}`` then mirrors ``local``.
        """
        local = Path(local)
        prefix = prefix.strip("/")
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        client, keys = self.client(), []
        for file in files:
            relative = file.name if local.is_file() else file.relative_to(local).as_posix()
            key = f"{prefix}/{relative}" if prefix else relative
            client.upload_file(str(file), bucket, key)
            keys.append(key)
        return sorted(keys)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for obj in page.get("Contents", [])
        )

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _reaper():
    """tests/reaper.py, loaded by path (the tests folder is not a package)."""
    import importlib.util

    name = "pricelab_tests_reaper"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("reaper.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _ahead_of_the_load() -> None:
    """Run the server ahead of other work where allowed. It stands for a remote store, not for
    the code under test, and pyarrow's S3 client calls a request that sends nothing for 3 s
    "too slow" (its request timeout cannot be set on Linux): on a machine whose cores are all
    busy, a starved server would fail tests that are not about slowness."""
    with contextlib.suppress(OSError):
        os.nice(-10)


def _stop(process: subprocess.Popen) -> None:
    """End the server's own process group (it leads it), nothing else."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def running_s3_server(log_path: Path, server_env: dict[str, str] | None = None) -> Iterator[S3Server]:
    """Start moto's server on a free loopback port, yield it once it answers, then stop it.

    ``server_env`` adds variables for the server process only (for example
    ``INITIAL_NO_AUTH_ACTION_COUNT=0``, which makes moto check credentials).
    """
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(server_env or {})},
            start_new_session=True,
            preexec_fn=_ahead_of_the_load,
        )
    # A run killed before its teardown still ends the server (tests/reaper.py).
    _reaper().tie_to_this_run(process.pid)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _answers(endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {process.returncode}" if process.poll() is not None else "still silent"
                pytest.fail(
                    f"moto S3 server on {endpoint} did not answer within {STARTUP_SECONDS} s ({state}); "
                    f"its output:\n{log_path.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.1)
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
            # Never ask the cloud instance-metadata address for anything from a test.
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        yield S3Server(endpoint, env)
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A moto S3 server on 127.0.0.1 for the whole session (one per xdist worker)."""
    with running_s3_server(tmp_path_factory.mktemp("moto") / "server.log") as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on ``s3_server``."""
    return s3_server.create_bucket()


class FaultyProxy:
    """A TCP proxy on 127.0.0.1 in front of the S3 server that fails on purpose.

    It forwards every connection to ``upstream`` and counts the HTTP requests going through.
    Once ``after`` requests have passed, it misbehaves as ``mode`` says: ``"drop"`` closes
    every connection at the next request; ``"stall"`` forwards nothing more and leaves the
    connections open (a store that went silent); ``"trickle"`` passes responses at
    ``rate`` bytes a second; ``"late"`` holds the next request ``delay`` seconds once, then
    forwards everything (a busy store). ``after=None`` never misbehaves (a run counts its
    requests).
    """

    def __init__(
        self, upstream: str, mode: str = "drop", after: int | None = None, rate: int = 4096, delay: float = 0.0
    ) -> None:
        import threading

        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.mode, self.after, self.rate, self.delay = mode, after, rate, delay
        self._held = False
        self.requests = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.endpoint = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _failing(self) -> bool:
        return self.after is not None and self.requests > self.after

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if requests:
                    with self._lock:
                        self.requests += data.count(b" HTTP/1.1\r\n")
                if self._failing():
                    if self.mode == "drop":
                        break
                    if self.mode == "stall":
                        time.sleep(3600)
                    if self.mode == "late" and requests and not self._held:
                        self._held = True
                        time.sleep(self.delay)
                    if self.mode == "trickle" and not requests:
                        for at in range(0, len(data), 256):
                            sink.sendall(data[at : at + 256])
                            time.sleep(256 / self.rate)
                        continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        for sock in [self._server, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()
