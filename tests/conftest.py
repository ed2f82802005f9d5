"""Shared fixtures: run the real CLI in-process and capture its streams and exit code."""

from __future__ import annotations

import dataclasses
import io
import sys

import pytest

from pricelab_cli.cli import main


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
