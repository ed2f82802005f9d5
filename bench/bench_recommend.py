"""power --recommend: the grid (kinds x blocks 1, 2, 3, 7, 14 x blackouts 0-6) under carryover
0, 1 and 3 days, 30 repetitions a cell, on 5,000 products x 84 days, in <= 5 minutes."""

from __future__ import annotations

import json
import os
import sys

import polars as pl

sys.path.insert(0, os.path.dirname(__file__))
from measure import bench_dir, measure, power_on_history, pricelab, report  # noqa: E402


def main() -> int:
    folder = bench_dir()
    power = power_on_history(folder)
    design = os.path.join(folder, "recommend_window.json")
    measure([*pricelab(), "design", "random-days", "--start", "2026-02-02", "--end", "2026-03-01", "-o", design, "-q"])
    grid, chosen = os.path.join(folder, "recommend_grid.csv"), os.path.join(folder, "recommended.json")
    seconds, peak = measure(
        [
            *power,
            "--design",
            design,
            "--recommend",
            "--carryover-days",
            "0,1,3",
            "--reps",
            "30",
            "--seed",
            "0",
            "--recommend-out",
            chosen,
            "-o",
            grid,
            "-q",
        ]
    )
    table = pl.read_csv(grid)
    n_designs = table["design"].n_unique()
    ok = report(
        f"power --recommend: {n_designs} designs x 3 carryover scenarios x 30 reps, 5,000 products x 84 days",
        seconds,
        peak,
        300,
        8192,
    )
    best = table.filter(pl.col("recommended"))
    with pl.Config(tbl_cols=-1, tbl_width_chars=160, float_precision=4):
        print(best.select("design", "carryover_days", "bias", "se", "rmse", "coverage", "worst_rmse"))
    with open(chosen) as handle:
        print("recommended:", json.load(handle)["kind"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
