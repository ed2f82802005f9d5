"""spillover-graph, cluster and ipw at scale, each in its own process (time and peak RSS).

- spillover-graph: 20,000 products in 200 groups x 365 days   <= 60 s, <= 8 GB
- spillover-graph: 100,000 products in 1,000 groups x 365 days <= 60 s, <= 4 GB
- cluster: 1,000,000 products, 10,000,000 edges               <= 120 s, <= 8 GB
- ipw: 100,000 products, 1,000,000 edges, 28-day random days  <= 60 s, <= 8 GB

Inputs are generated here with vectorised numpy (not timed): planted substitutes so the
steps do real work (graph: one substitute per product; cluster: communities of 10 with 10%
of the weight between them; ipw: sales whose demand moves with treated substitutes).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

import numpy as np
import polars as pl

sys.path.insert(0, os.path.dirname(__file__))
from measure import bench_dir, measure, pricelab, report  # noqa: E402

LIMIT_MIB = 8192
SEED = 20260302


def history_inputs(
    folder: str, n_products: int = 20_000, n_groups: int = 200, n_days: int = 365, chunk_products: int = 10_000
) -> tuple[str, str]:
    """Daily history with promotions; each product's demand moves with one group neighbour's price.

    Written a chunk of whole groups at a time (each with its own seeded generator), so making
    the input of a large catalog takes the memory of one chunk, not of the whole panel.
    """
    size = n_products // n_groups
    per_chunk = max(size, chunk_products // size * size)
    days = np.datetime64("2025-01-01") + np.arange(n_days)
    name = f"{n_products // 1000}k"
    sales_path, products_path = (
        os.path.join(folder, f"history_{name}.parquet"),
        os.path.join(folder, f"products_{name}.csv"),
    )
    parts = []
    for first in range(0, n_products, per_chunk):
        rng = np.random.default_rng([SEED, first])
        product = np.arange(first, min(first + per_chunk, n_products))
        local = product - first
        neighbour = local // size * size + (local % size + 1) % size
        promo = rng.random((n_days, len(product))) < 0.15
        log_price = np.log(20.0) + np.log(0.75) * promo
        log_mu = np.log(20.0) - 2.0 * (log_price - np.log(20.0)) + 0.6 * (log_price[:, neighbour] - np.log(20.0))
        units = rng.poisson(np.exp(log_mu) * rng.gamma(20.0, 1 / 20.0, log_mu.shape))
        part = os.path.join(folder, f"history_{name}.part{len(parts)}.parquet")
        pl.DataFrame(
            {
                "product_id": np.tile(product, n_days),
                "date": np.repeat(days, len(product)),
                "units": units.ravel(),
                "price": np.exp(log_price).ravel(),
            }
        ).write_parquet(part)
        parts.append(part)
    pl.scan_parquet(parts).sink_parquet(sales_path)
    for part in parts:
        os.remove(part)
    product = np.arange(n_products)
    pl.DataFrame({"product_id": product, "category": product // size}).write_csv(products_path)
    return sales_path, products_path


def graph_inputs(folder: str, n_products: int = 1_000_000, n_edges: int = 10_000_000, size: int = 10) -> str:
    """Communities of ``size`` (every ordered pair an edge) plus random edges up to ``n_edges``."""
    rng = np.random.default_rng(SEED + 1)
    src_in = np.repeat(np.arange(n_products), size - 1)
    step = np.tile(np.arange(1, size), n_products)
    dst_in = (src_in // size) * size + (src_in % size + step) % size
    n_cross = n_edges - len(src_in)
    src_x = rng.integers(0, n_products, n_cross)
    dst_x = (src_x + rng.integers(1, n_products, n_cross)) % n_products
    edges = pl.DataFrame(
        {
            "src": np.concatenate([src_in, src_x]),
            "dst": np.concatenate([dst_in, dst_x]),
            "weight": rng.uniform(0.4, 0.9, n_edges),
        }
    ).unique(["src", "dst"], keep="first", maintain_order=True)
    path = os.path.join(folder, "edges_10m.parquet")
    edges.write_parquet(path)
    return path


def experiment_inputs(folder: str, n_products: int = 100_000, n_edges: int = 1_000_000) -> dict[str, str]:
    """Catalog, substitutes, a 28-day random-days design, its assignment and sales with history."""
    from pricelab_cli.assign import assign
    from pricelab_cli.design import make_design

    rng = np.random.default_rng(SEED + 2)
    start, n_days, history_days = dt.date(2026, 3, 2), 28, 28
    design = make_design("random-days", salt="bench-ipw", start=start, end=start + dt.timedelta(days=n_days - 1))
    products = pl.DataFrame({"product_id": np.arange(n_products)})
    # Substitutes inside groups of 50: ten incoming edges per product on average.
    src = rng.integers(0, n_products, n_edges)
    dst = (src // 50) * 50 + (src % 50 + rng.integers(1, 50, n_edges)) % 50
    edges = pl.DataFrame({"src": src, "dst": dst, "weight": rng.uniform(0.05, 0.2, n_edges)}).unique(["src", "dst"])
    assignment = assign(design, products)
    treated = assignment["treated"].to_numpy().reshape(n_products, n_days).astype(np.float64)
    w = edges.to_numpy()
    from scipy import sparse

    in_weights = sparse.csr_matrix(
        (w[:, 2], (w[:, 1].astype(np.int64), w[:, 0].astype(np.int64))), shape=(n_products, n_products)
    )
    log_cut = np.log(0.9)
    level = np.log(20.0) + 0.5 * rng.standard_normal(n_products)
    log_mu = np.empty((n_products, history_days + n_days))
    log_mu[:] = level[:, None]
    log_mu[:, history_days:] += -2.0 * log_cut * treated + log_cut * (in_weights @ treated)
    units = rng.poisson(np.exp(log_mu))
    days = np.datetime64(start.isoformat()) - history_days + np.arange(history_days + n_days)
    sales = pl.DataFrame(
        {
            "product_id": np.repeat(np.arange(n_products), history_days + n_days),
            "date": np.tile(days, n_products),
            "units": units.ravel(),
        }
    )
    paths = {
        name: os.path.join(folder, f"ipw_{name}")
        for name in ("products.csv", "edges.parquet", "design.json", "assignment.parquet", "sales.parquet")
    }
    products.write_csv(paths["products.csv"])
    edges.write_parquet(paths["edges.parquet"])
    with open(paths["design.json"], "w") as fh:
        json.dump(design.to_dict(), fh)
    assignment.write_parquet(paths["assignment.parquet"])
    sales.write_parquet(paths["sales.parquet"])
    return paths


def main() -> int:
    folder = bench_dir()
    ok = True

    # Groups of 100 at both sizes: the work per group is the same, the catalog five times larger.
    for n_products, limit_mib in ((20_000, LIMIT_MIB), (100_000, 4096)):
        sales, products = history_inputs(folder, n_products=n_products, n_groups=n_products // 100)
        out = os.path.join(folder, f"edges_{n_products // 1000}k.parquet")
        seconds, peak = measure(
            [
                *pricelab(),
                "spillover-graph",
                "--sales",
                sales,
                "--products",
                products,
                "--group-col",
                "category",
                "-o",
                out,
                "-q",
            ]
        )
        kept = pl.scan_parquet(out).select(pl.len()).collect().item()
        name = f"spillover-graph {n_products:,} products x 365 days ({kept:,} edges kept)"
        ok &= report(name, seconds, peak, 60, limit_mib)

    edges = graph_inputs(folder)
    out = os.path.join(folder, "clusters_1m.parquet")
    seconds, peak = measure(
        [*pricelab(), "cluster", "--edges", edges, "--max-size", "50", "--seed", "0", "-o", out, "-q"]
    )
    n_clusters = pl.scan_parquet(out).select(pl.col("cluster_id").n_unique()).collect().item()
    ok &= report(
        f"cluster 1,000,000 products, 10,000,000 edges ({n_clusters:,} clusters)", seconds, peak, 120, LIMIT_MIB
    )

    p = experiment_inputs(folder)
    out = os.path.join(folder, "spillover_100k.csv")
    seconds, peak = measure(
        [
            *pricelab(),
            "ipw",
            "--sales",
            p["sales.parquet"],
            "--assignment",
            p["assignment.parquet"],
            "--edges",
            p["edges.parquet"],
            "--design",
            p["design.json"],
            "--products",
            p["products.csv"],
            "--outcome",
            "units",
            "-o",
            out,
            "-q",
        ]
    )
    ok &= report("ipw 100,000 products, 1,000,000 edges, 28 days", seconds, peak, 60, LIMIT_MIB)
    print(pl.read_csv(out), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
