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


_UNGROUPED = pytest.StashKey[set]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """On an xdist worker under ``--dist loadgroup``, every test with an ``xdist_group`` mark
    must carry its group in its node id by now (xdist's own hook adds it), or the scheduler
    splits the group across workers: the Ray tests then start a cluster per worker, and the
    real-panel studies load their panels twice. pytest 9.2 broke that silently
    (pytest-dev/pytest-xdist#1386), hence the pin below 9.2; this check keeps it from
    coming back unnoticed: such tests fail, saying why."""
    if getattr(config.option, "loadgroup", False):
        config.stash[_UNGROUPED] = {
            item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
        }


def pytest_runtest_setup(item):
    if item.nodeid in item.config.stash.get(_UNGROUPED, set()):
        pytest.fail(
            f"--dist loadgroup does not group tests with this pytest ({pytest.__version__}): this test has no "
            "@group suffix in its id (pytest-dev/pytest-xdist#1386); install the locked versions (make test).",
            pytrace=False,
        )


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
