"""assign on 1,000,000 products x 28 days (random days) to one Parquet file: <= 30 s and
<= 4 GB peak; on 5,000,000 products x 28 days to a date-partitioned folder: <= 3 GB peak
(its time is reported against a loose limit)."""

from __future__ import annotations

import os
import shutil
import sys

import polars as pl

sys.path.insert(0, os.path.dirname(__file__))
from measure import bench_dir, measure, pricelab, report  # noqa: E402


def products_file(folder: str, n: int) -> str:
    path = os.path.join(folder, f"products_{n // 1_000_000}m.csv")
    if not os.path.exists(path):
        pl.DataFrame({"product_id": pl.int_range(1, n + 1, eager=True)}).write_csv(path)
    return path


def main() -> int:
    folder = bench_dir()
    design = os.path.join(folder, "random_days_28.json")
    measure(
        [
            *pricelab(),
            "design",
            "random-days",
            "--start",
            "2026-03-02",
            "--end",
            "2026-03-29",
            "--seed",
            "1",
            "-o",
            design,
            "-q",
        ]
    )
    ok = True

    output = os.path.join(folder, "assignment_1m.parquet")
    seconds, peak = measure(
        [*pricelab(), "assign", "--design", design, "--products", products_file(folder, 1_000_000), "-o", output, "-q"]
    )
    rows = pl.scan_parquet(output).select(pl.len()).collect().item()
    ok &= report(f"assign 1,000,000 products x 28 days ({rows:,} rows)", seconds, peak, 30, 4096)

    dataset = os.path.join(folder, "assignment_5m")
    shutil.rmtree(dataset, ignore_errors=True)
    seconds, peak = measure(
        [
            *pricelab(),
            "assign",
            "--design",
            design,
            "--products",
            products_file(folder, 5_000_000),
            "-o",
            dataset + "/",
            "-q",
        ]
    )
    scan = pl.scan_parquet(dataset, hive_partitioning=True)
    rows, dates = scan.select(pl.len(), pl.col("date").n_unique()).collect().row(0)
    ok &= report(
        f"assign 5,000,000 products x 28 days to a folder ({rows:,} rows, {dates} dates)", seconds, peak, 120, 3072
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
