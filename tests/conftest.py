"""Shared fixtures: run the real CLI in-process and capture its streams and exit code."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import sys
from pathlib import Path

import pytest

from pricelab_cli.cli import main

# The object-store fixtures (a real S3-compatible server) live in tests/object_store.py; the
# tests folder is not a package, so load that file by path and register its fixtures here.
_object_store_spec = importlib.util.spec_from_file_location(
    "pricelab_tests_object_store", Path(__file__).with_name("object_store.py")
)
object_store = importlib.util.module_from_spec(_object_store_spec)
sys.modules[_object_store_spec.name] = object_store
_object_store_spec.loader.exec_module(object_store)
s3_server = object_store.s3_server
s3_bucket = object_store.s3_bucket

# The Ray cluster fixture (a real head and worker node started with `ray start`), likewise.
_ray_spec = importlib.util.spec_from_file_location(
    "pricelab_tests_ray_cluster", Path(__file__).with_name("ray_cluster.py")
)
ray_cluster_module = importlib.util.module_from_spec(_ray_spec)
sys.modules[_ray_spec.name] = ray_cluster_module
_ray_spec.loader.exec_module(ray_cluster_module)
ray_cluster = ray_cluster_module.ray_cluster


def pytest_configure(config):
    """Each pytest process (the controller and every xdist worker) is watched: when it dies
    without a teardown (a timeout, a crash, a kill), what it started dies with it."""
    ray_cluster_module._reaper().tie_descendants_to_this_run()


@dataclasses.dataclass
class CliResult:
    code: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode()


def _run(args: list[str], stdin: bytes = b"") -> CliResult:
    out, err = io.BytesIO(), io.BytesIO()
    saved = sys.stdin, sys.stdout, sys.stderr, sys.argv
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    sys.argv = ["pricelab", *args]
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Read before the wrappers are dropped: closing them closes the buffers too.
        stdout, stderr = out.getvalue(), err.getvalue().decode()
        sys.stdin, sys.stdout, sys.stderr, sys.argv = saved
    return CliResult(code, stdout, stderr)


@pytest.fixture
def run_cli():
    """``run_cli("assign", "--design", ..., stdin=b"...")`` -> CliResult(code, stdout, stderr)."""

    def runner(*args: str, stdin: bytes = b"") -> CliResult:
        return _run([str(a) for a in args], stdin)

    return runner


@pytest.fixture(scope="module")
def run_cli_module():
    """``run_cli`` for module-scoped fixtures (a chain of commands shared by a module's tests)."""

    def runner(*args: str, stdin: bytes = b"") -> CliResult:
        return _run([str(a) for a in args], stdin)

    return runner
