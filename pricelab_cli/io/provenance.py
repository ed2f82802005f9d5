"""The record every output carries (version, command line, seed), and what the report shows of each input."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

from pricelab_cli._lazy import lazy

# Loaded on first use: writing a design's JSON or checking output paths needs none of them.
from pricelab_cli.io.formats import PROVENANCE_KEY, detect_format
from pricelab_cli.io.read import read_json
from pricelab_cli.paths import STDIO

np = lazy("numpy")
pl = lazy("polars")
pq = lazy("pyarrow.parquet")


def provenance(version: str, argv: Sequence[str], seed: int | None, outputs: Sequence[str] = ()) -> dict:
    """The record every output carries: version, command line and seed.

    Output paths in the command line are recorded as ``{output}`` so that the same run
    writes the same bytes wherever it writes them; credentials given as ``--storage-option``
    are recorded as ``KEY=***``, never in the clear.
    """
    shown = ["{output}" if a in outputs and a != STDIO else a for a in argv]
    for i, arg in enumerate(shown):
        if arg.startswith("--storage-option="):
            shown[i] = "--storage-option=" + _hide_credential(arg.split("=", 1)[1])
        elif arg == "--storage-option" and i + 1 < len(shown):
            shown[i + 1] = _hide_credential(shown[i + 1])
    return {"version": version, "command": " ".join(shown), "seed": seed}


_CREDENTIAL_KEY = re.compile(r"secret|token|password|access_key|credential", re.IGNORECASE)


def _hide_credential(pair: str) -> str:
    key, sep, _ = pair.partition("=")
    return f"{key}=***" if sep and _CREDENTIAL_KEY.search(key) else pair


def read_provenance(path: str) -> dict | None:
    """Return the provenance record of a pricelab output, or None if it has none."""
    if detect_format(path) == "parquet":
        meta = pq.read_schema(path).metadata or {}
        raw = meta.get(PROVENANCE_KEY.encode())
        return json.loads(raw) if raw else None
    sidecar = Path(f"{path}.meta.json")
    return json.loads(sidecar.read_text()) if sidecar.exists() else None


def file_digest(path: str) -> str | None:
    """SHA-256 of a file, or of every file of a folder (in sorted order); None for a stream
    or an object-store URI."""
    p = Path(path)
    if path == STDIO or not p.exists():
        return None
    digest = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            digest.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_record(path: str | None) -> dict:
    """The provenance record of a pricelab output (empty when there is none)."""
    if not path or not Path(path).is_file():
        return {}
    try:
        return read_provenance(path) or {}
    except Exception:  # a file without readable metadata has no record
        return {}


def provenance_row(role: str, path: str) -> dict:
    """One row of a report's table of inputs: the file's role, path, digest and the run that
    made it (``–`` where unknown)."""
    record = read_record(path)
    if not record and Path(path).is_dir():
        # A dataset folder: every file carries the same record.
        parts = sorted(Path(path).rglob("*.parquet"))
        record = read_record(str(parts[0])) if parts else {}
    if not record and path.endswith(".json") and Path(path).is_file():
        record = read_json(path).get("provenance") or {}
    return {
        "role": role,
        "path": path,
        "sha256": file_digest(path) or "–",
        "command": record.get("command", "–"),
        "version": record.get("version", "–"),
        "seed": "–" if record.get("seed") is None else record["seed"],
    }
