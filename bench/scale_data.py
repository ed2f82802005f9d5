"""Generate a catalog-scale experiment on disk, in chunks, for the scale benchmarks.

A date-partitioned Parquet sales folder (``sales/date=YYYY-MM-DD/part-0.parquet``, one file
a day) for N products: each product has its own level, trend and weekday pattern, Poisson
noise, and a +5% effect on its treated days. The assignment is written first by pricelab's own
``assign`` (random days over the last 28 days), and each day's treated flags are read
back from it with a filtered scan, so at most one day of the panel is ever in memory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

import numpy as np
import polars as pl

EFFECT = 0.05
EXPERIMENT_DAYS = 28


def generate(folder: str, n_products: int, history_days: int, seed: int = 7) -> dict[str, str]:
    """Write products, design, assignment and the sales folder under ``folder`` (kept
    between runs: a folder with a ``done.json`` is reused)."""
    paths = {
        "products": os.path.join(folder, "products.parquet"),
        "design": os.path.join(folder, "design.json"),
        "assignment": os.path.join(folder, "assignment.parquet"),
        "sales": os.path.join(folder, "sales") + os.sep,
    }
    done = os.path.join(folder, "done.json")
    if os.path.exists(done):
        return paths
    os.makedirs(paths["sales"], exist_ok=True)
    rng = np.random.default_rng(seed)
    start = dt.date(2026, 3, 2)
    first = start - dt.timedelta(days=history_days)
    level = rng.gamma(2.0, 10.0, n_products)
    trend = rng.normal(0.0, 0.3 / 365, n_products)
    weekly = 1.0 + 0.2 * np.sin(2 * np.pi * (np.arange(7)[None, :] + rng.integers(0, 7, n_products)[:, None]) / 7)
    price = np.round(rng.lognormal(3.0, 0.5, n_products), 2)
    pl.DataFrame({"product_id": np.arange(1, n_products + 1, dtype=np.int64), "base_price": price}).write_parquet(
        paths["products"]
    )
    end = start + dt.timedelta(days=EXPERIMENT_DAYS - 1)
    from pricelab_cli import assign, make_design

    design = make_design("random-days", salt="scale", start=start, end=end)
    with open(paths["design"], "w") as fh:
        json.dump(design.to_dict(), fh, indent=2)
    assign(design, pl.read_parquet(paths["products"], columns=["product_id"])).write_parquet(paths["assignment"])
    assignment = pl.scan_parquet(paths["assignment"])
    for d in range(history_days + EXPERIMENT_DAYS):
        day = first + dt.timedelta(days=d)
        t = (day - start).days
        mu = level * weekly[:, day.weekday()] * np.maximum(1.0 + trend * t, 0.05)
        if day >= start:
            flags = assignment.filter(pl.col("date") == day).sort("product_id").select("treated").collect()
            mu = mu * (1.0 + EFFECT * flags["treated"].to_numpy())
        units = rng.poisson(mu)
        part = os.path.join(paths["sales"], f"date={day.isoformat()}")
        os.makedirs(part, exist_ok=True)
        pl.DataFrame(
            {
                "product_id": np.arange(1, n_products + 1, dtype=np.int64),
                "units": units.astype(np.int64),
                "price": price,
            }
        ).write_parquet(os.path.join(part, "part-0.parquet"))
    with open(done, "w") as fh:
        json.dump({"n_products": n_products, "history_days": history_days, "effect": EFFECT}, fh)
    return paths


if __name__ == "__main__":
    generate(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
