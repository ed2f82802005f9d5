"""The demo chain's hpte outputs stay byte for byte what they were.

design -> assign -> simulate -> hpte, as ``scripts/demo.sh`` runs them, in a fresh folder
holding the sample data. The effects, CATE and outlier tables (and the effects' provenance)
must equal the copies kept in ``tests/data/demo_outputs/``: a change of layout, of engine
plumbing or of the order in which work is done may not move a single byte of a result. A
change that is meant to move them regenerates the copies with
``PRICELAB_REGENERATE_DEMO_OUTPUTS=1`` and says why in its commit.

The copies are kept per OpenBLAS kernel: OpenBLAS sums in another order with its AVX-512
kernels (SkylakeX and later) than with its AVX2 ones (Haswell), which moves the last digits
of the SEs and, through a near-tie between two splits of a tree, 1-2% of some products'
CATEs (each machine gives the same bytes on every run). The outputs must equal one kept set
exactly, every file from the same set; regenerating writes the set of the kernel in use
(``KEPT`` with AVX2, ``KEPT / "avx512"`` with AVX-512). An AVX-512 machine writes both: once
as it is, once with ``OPENBLAS_CORETYPE=Haswell``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEPT = ROOT / "tests" / "data" / "demo_outputs"
SETS = (KEPT, KEPT / "avx512")
# OpenBLAS's names of its AVX-512 kernels (the ``avx512`` set); every other kernel reads the
# AVX2 set, as every processor without AVX-512 did before the sets were told apart by kernel.
AVX512_KERNELS = {"SkylakeX", "CooperLake", "SapphireRapids"}
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
        kept = SETS[1] if _avx512() else SETS[0]
        kept.mkdir(parents=True, exist_ok=True)
        for name in COMPARED:
            shutil.copyfile(out / name, kept / name)
    differ = {
        kept.name: [name for name in COMPARED if (out / name).read_bytes() != (kept / name).read_bytes()]
        for kept in SETS
        if kept.is_dir()
    }
    assert any(not names for names in differ.values()), (
        f"the demo chain's outputs changed, against each kept set: {differ} (see this module's docstring)"
    )


def _avx512() -> bool:
    """Whether OpenBLAS runs its AVX-512 kernels (``OPENBLAS_CORETYPE`` chooses them)."""
    import numpy  # noqa: F401  (loads OpenBLAS, which threadpoolctl then reads)
    from threadpoolctl import threadpool_info

    kernels = {
        str(pool.get("architecture", "")) for pool in threadpool_info() if pool.get("internal_api") == "openblas"
    }
    return bool(kernels & AVX512_KERNELS)
