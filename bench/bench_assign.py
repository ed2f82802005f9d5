"""assign on 1,000,000 products x 28 days (random days): <= 30 s and <= 4 GB peak."""

from __future__ import annotations

import os
import sys

import polars as pl

sys.path.insert(0, os.path.dirname(__file__))
from measure import bench_dir, measure, pricelab, report  # noqa: E402


def main() -> int:
    folder = bench_dir()
    products = os.path.join(folder, "products_1m.csv")
    design = os.path.join(folder, "random_days_28.json")
    output = os.path.join(folder, "assignment_1m.parquet")
    pl.DataFrame({"product_id": pl.int_range(1, 1_000_001, eager=True)}).write_csv(products)
    measure([*pricelab(), "design", "random-days", "--start", "2026-03-02", "--end", "2026-03-29", "--seed", "1", "-o", design, "-q"])
    seconds, peak = measure([*pricelab(), "assign", "--design", design, "--products", products, "-o", output, "-q"])
    rows = pl.scan_parquet(output).select(pl.len()).collect().item()
    ok = report(f"assign 1,000,000 products x 28 days ({rows:,} rows)", seconds, peak, 30, 4096)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
