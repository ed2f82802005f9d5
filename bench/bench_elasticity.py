"""elasticity on 100,000 products x 84 days (random days, 50 categories), 500 bootstrap draws,
against one hpte run on the same files (the inputs of bench_hpte.py).

Budget: elasticity (own elasticities) takes no more than 1.5x the time of one hpte run (both
with 500 draws); <= 4 GB peak RSS. With substitutes and costs (cross and profit rows), it is
timed too and printed against the same hpte run.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from bench_hpte import make_inputs  # noqa: E402
from measure import bench_dir, measure, pricelab, report  # noqa: E402

LIMIT_MIB = 4096.0


def main() -> int:
    folder = bench_dir()
    paths = make_inputs(folder)
    common = ["--sales", paths["sales"], "--assignment", paths["assignment"]]
    hpte_s, hpte_peak = measure(
        [
            *pricelab(),
            "hpte",
            *common,
            "--outcome",
            "units",
            "--seed",
            "0",
            "-o",
            os.path.join(folder, "el_hpte.csv"),
            "-q",
        ]
    )
    print(f"{'hpte (the reference), 100,000 products x 84 days':<58} {hpte_s:7.1f} s  {hpte_peak:8.0f} MiB peak")
    out = os.path.join(folder, "elasticity.csv")
    args = [*pricelab(), "elasticity", *common, "--products", paths["products"], "--group-col", "category"]
    seconds, peak = measure([*args, "--seed", "0", "-o", out, "-q"])
    ok = report("elasticity: own, 50 categories (<= 1.5x hpte)", seconds, peak, 1.5 * hpte_s, LIMIT_MIB)
    print(f"elasticity / hpte: {seconds / hpte_s:.2f}x")
    # Everything on: substitutes (the catalog's planted graph) and a unit cost.
    import polars as pl

    from pricelab_cli import simulate_catalog

    full = {name: os.path.join(folder, f"elasticity_{name}.parquet") for name in ("products", "edges")}
    if not all(os.path.exists(p) for p in full.values()):
        _, edges = simulate_catalog(100_000, 50, 5, seed=7)
        edges.select("src", "dst", "weight").write_parquet(full["edges"])
        pl.read_parquet(paths["products"]).with_columns(cost=pl.col("base_price") * 0.6).write_parquet(full["products"])
    everything = [*pricelab(), "elasticity", *common, "--products", full["products"], "--edges", full["edges"]]
    everything += ["--cost-col", "cost", "--optimum-out", os.path.join(folder, "optimum.csv")]
    all_s, all_peak = measure([*everything, "--seed", "0", "-o", os.path.join(folder, "elasticity_all.csv"), "-q"])
    print(f"{'elasticity with --edges and --cost-col (for the record)':<58} {all_s:7.1f} s  {all_peak:8.0f} MiB peak")
    print(f"with cross and profit rows / hpte: {all_s / hpte_s:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
