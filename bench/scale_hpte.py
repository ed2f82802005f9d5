"""hpte at catalog scale, from a date-partitioned Parquet folder (``make bench-scale``).

- 1,000,000 products x 84 days (56 of history, 28 random days), 500 draws:
  <= 90 s and <= 4 GB peak (the whole process group: the command and its workers).
- 1,000,000 products x 393 days (365 of history, 28 random days), 500 draws:
  <= 6 GB peak; the time is reported.

The inputs are generated one day at a time by ``scale_data.py`` (and kept in
``bench_out/`` between runs). Each run goes through ``memcap.py``, which kills it past
twice its memory budget so a regression cannot take the machine down. Sizes can be cut
for a quick look: ``python bench/scale_hpte.py 100000``.
"""

from __future__ import annotations

import json
import os
import sys

import polars as pl

sys.path.insert(0, os.path.dirname(__file__))
from measure import bench_dir, measure_group, pricelab, report  # noqa: E402
from scale_data import generate  # noqa: E402

CASES = [
    # (history days, time budget s, memory budget MiB)
    (56, 90.0, 4096.0),
    (365, 1800.0, 6144.0),
]


def main(n_products: int = 1_000_000) -> int:
    ok = True
    for history, limit_s, limit_mib in CASES:
        folder = os.path.join(bench_dir(), f"scale_{n_products}_{history}")
        paths = generate(folder, n_products, history)
        out = os.path.join(folder, "effects.csv")
        seconds, biggest, group = measure_group(
            [
                *pricelab(),
                "hpte",
                "--sales",
                paths["sales"],
                "--assignment",
                paths["assignment"],
                "--bootstrap",
                "500",
                "--seed",
                "0",
                "-o",
                out,
                "-q",
            ],
            limit_mib=2 * limit_mib,
        )
        effects = pl.read_csv(out).row(0, named=True)
        with open(os.path.join(folder, "done.json")) as fh:
            truth = json.load(fh)
        days = history + 28
        ok &= report(
            f"hpte {n_products:,} products x {days} days (folder), 500 draws", seconds, group, limit_s, limit_mib
        )
        print(
            f"    largest process {biggest:.0f} MiB; lift {effects['lift']:+.4f} (planted {truth['effect']:+.2f}), "
            f"se {effects['se']:.4g}, {effects['n_products']:,} products",
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(*(int(a) for a in sys.argv[1:])))
