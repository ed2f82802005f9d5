"""The README runs as written: every shell block, in order, in a fresh folder holding the
sample data, with the installed `pricelab` on the PATH (the way sqlite-utils tests its
docs). A block is skipped only when an HTML comment right above it says why (the quick
start's own `make` commands)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"(?:<!--(?P<skip>[^>]*)-->\s*\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)\n```", re.S)


def shell_blocks() -> list[tuple[str | None, str]]:
    """(reason to skip or None, text) of every ```sh block of the README, in order."""
    text = (ROOT / "README.md").read_text()
    return [
        (m.group("skip"), m.group("body")) for m in FENCE.finditer(text) if m.group("lang") in ("sh", "bash", "shell")
    ]


def test_the_readme_has_shell_blocks_and_says_why_it_skips_any():
    blocks = shell_blocks()
    assert len([b for b in blocks if b[0] is None]) >= 2
    assert all(reason is None or reason.strip() for reason, _ in blocks)


def test_every_readme_shell_block_runs_as_written(tmp_path):
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    ran = 0
    for reason, body in shell_blocks():
        if reason is not None:
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"README block failed:\n{body}\n--- stderr:\n{done.stderr[-3000:]}"
        ran += 1
    assert ran >= 2
    assert (tmp_path / "first" / "report.html").stat().st_size > 10_000


@pytest.mark.parametrize("doc", sorted(p.name for p in (ROOT / "docs").glob("*.md")) + ["../README.md"])
def test_links_between_the_docs_point_at_files_that_exist(doc):
    path = ROOT / "docs" / doc
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{doc} links to {target}, which does not exist"
