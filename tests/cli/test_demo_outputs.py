"""The demo chain's hpte outputs stay byte for byte what they were.

design -> assign -> simulate -> hpte, as ``scripts/demo.sh`` runs them, in a fresh folder
holding the sample data. The effects, CATE and outlier tables (and the effects' provenance)
must equal the copies kept in ``tests/data/demo_outputs/``: a change of layout, of engine
plumbing or of the order in which work is done may not move a single byte of a result. A
change that is meant to move them regenerates the copies with
``PRICELAB_REGENERATE_DEMO_OUTPUTS=1`` and says why in its commit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEPT = ROOT / "tests" / "data" / "demo_outputs"
COMPARED = ("effects.csv", "effects.csv.meta.json", "cate.parquet", "outliers.csv")

CHAIN = """
mkdir -p demo_out
pricelab design random-days --start 2026-03-02 --end 2026-03-29 --salt demo-2026 \\
    --name random-days -o demo_out/design.json
pricelab assign --design demo_out/design.json --products sample_data/products.csv -o demo_out/assignment.parquet
pricelab simulate sales --products sample_data/products.csv --assignment demo_out/assignment.parquet \\
    --edges sample_data/true_edges.csv --history-days 120 --seed 11 \\
    -o demo_out/sales/ --truth-out demo_out/truth.json
pricelab hpte --sales demo_out/sales/ --assignment demo_out/assignment.parquet \\
    --features sample_data/products.csv --outcome units --outcome revenue --bootstrap 200 --seed 0 \\
    -o demo_out/effects.csv --cate-out demo_out/cate.parquet \\
    --outliers-out demo_out/outliers.csv --placebo-out demo_out/placebo.csv
"""


def test_the_demo_chain_writes_the_same_bytes_as_before(tmp_path):
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", CHAIN], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "demo_out"
    if os.environ.get("PRICELAB_REGENERATE_DEMO_OUTPUTS") == "1":
        KEPT.mkdir(parents=True, exist_ok=True)
        for name in COMPARED:
            shutil.copyfile(out / name, KEPT / name)
    differ = [name for name in COMPARED if (out / name).read_bytes() != (KEPT / name).read_bytes()]
    assert not differ, f"the demo chain's outputs changed: {differ} (see this module's docstring)"
