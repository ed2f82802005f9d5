"""power: 200 repetitions x 3 designs on 5,000 products x 84 days in <= 5 minutes."""

from __future__ import annotations

import os
import sys

import polars as pl

sys.path.insert(0, os.path.dirname(__file__))
from measure import bench_dir, measure, power_on_history, pricelab, report  # noqa: E402


def main() -> int:
    folder = bench_dir()
    power = power_on_history(folder)
    designs = {
        "time-bound": ["--end", "2026-01-28"],
        "random-days": ["--end", "2026-01-28"],
        "crossover": ["--phase-days", "14", "--blackout-days", "4"],
    }
    paths = []
    for kind, extra in designs.items():
        path = os.path.join(folder, f"power_{kind}.json")
        measure([*pricelab(), "design", kind, "--start", "2026-01-01", *extra, "--seed", "1", "-o", path, "-q"])
        paths += ["--design", path]
    output = os.path.join(folder, "power.csv")
    seconds, peak = measure(
        [
            *power,
            *paths,
            "--effect",
            "0.05",
            "--reps",
            "200",
            "--seed",
            "0",
            "-o",
            output,
            "-q",
        ]
    )
    ok = report("power 200 reps x 3 designs, 5,000 products x 84 days", seconds, peak, 300, 8192)
    summary = pl.read_csv(output)
    with pl.Config(tbl_cols=-1, tbl_width_chars=160, float_precision=4):
        print(summary.select("design", "bias", "se", "rmse", "power", "coverage", "mde"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
