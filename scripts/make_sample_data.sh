#!/usr/bin/env bash
# Rebuild sample_data/ from pricelab's own simulator (deterministic: fixed seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
out=sample_data
mkdir -p "$out"
pricelab simulate catalog --n-products 200 --n-groups 10 --community-size 5 --seed 7 \
    -o "$out/products.csv" --edges-out "$out/true_edges.csv" -q
# A year of daily history before the experiment (2025-03-02 .. 2026-03-01). Frequent, deep
# promotions and steady sellers give the independent price variation that reveals substitutes.
pricelab simulate sales --products "$out/products.csv" --edges "$out/true_edges.csv" \
    --end 2026-03-01 --history-days 365 --promo-rate 0.1 --promo-depth 0.3 --dispersion 50 \
    --base-units 50 --seed 8 -o "$out/history.parquet" -q
# Event dates for a triggered design: one per product for 150 of the 200 products.
python - "$out" <<'PY'
import datetime as dt, sys
import numpy as np, polars as pl
out = sys.argv[1]
rng = np.random.default_rng(9)
ids = pl.read_csv(f"{out}/products.csv")["product_id"].to_numpy()
chosen = np.sort(rng.choice(ids, size=150, replace=False))
days = rng.integers(0, 21, size=len(chosen))
pl.DataFrame({"product_id": chosen,
              "event_date": [dt.date(2026, 3, 2) + dt.timedelta(days=int(d)) for d in days]}
             ).write_csv(f"{out}/events.csv")
PY
rm -f "$out"/*.meta.json
