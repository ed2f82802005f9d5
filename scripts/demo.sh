#!/usr/bin/env bash
# The whole loop on sample_data/: design -> assign -> (experiment) -> hpte -> spillover-graph
# -> cluster -> ipw. Outputs land in demo_out/; results print on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
data=sample_data
out=demo_out
mkdir -p "$out"

has() { pricelab --help 2>/dev/null | grep -qE "^│ $1 "; }
step() { printf '\n== %s\n' "$*" >&2; }

step "design: a four-week random-days experiment"
pricelab design random-days --start 2026-03-02 --end 2026-03-29 --salt demo-2026 \
    --name random-days --plot "$out/design_grid.png" -o "$out/design.json"

step "assign: every product, every day, by hash of (salt, product, day)"
pricelab assign --design "$out/design.json" --products "$data/products.csv" -o "$out/assignment.parquet"

step "the experiment runs: its sales are simulated here, with a known true effect"
pricelab simulate sales --products "$data/products.csv" --assignment "$out/assignment.parquet" \
    --edges "$data/true_edges.csv" --history-days 120 --seed 11 \
    -o "$out/sales.parquet" --truth-out "$out/truth.json"
python -c "import json,sys; t=json.load(open(sys.argv[1])); print(f\"true effect: {t['effect']:.3f} units per product per day (lift {t['lift']:.1%})\")" "$out/truth.json"

pending=()
if has hpte; then
    step "hpte: heterogeneous panel treatment effect"
    pricelab hpte --sales "$out/sales.parquet" --assignment "$out/assignment.parquet" \
        --features "$data/products.csv" --outcome units --outcome revenue --bootstrap 200 --seed 0 \
        -o "$out/effects.csv" --cate-out "$out/cate.parquet"
    column -s, -t < "$out/effects.csv"
else
    pending+=(hpte)
fi
if has spillover-graph; then
    step "spillover-graph: which products are substitutes, from a year of history"
    pricelab spillover-graph --sales "$data/history.parquet" --products "$data/products.csv" \
        --group-col category -o "$out/edges.parquet"
else
    pending+=(spillover-graph)
fi
if has cluster; then
    step "cluster: products that must share an arm"
    pricelab cluster --edges "$out/edges.parquet" --products "$data/products.csv" --max-size 10 \
        --seed 0 -o "$out/clusters.parquet"
else
    pending+=(cluster)
fi
if has ipw; then
    step "ipw: direct and spillover effects from the design's own exposure probabilities"
    pricelab ipw --sales "$out/sales.parquet" --assignment "$out/assignment.parquet" \
        --edges "$out/edges.parquet" --design "$out/design.json" --products "$data/products.csv" \
        --outcome units -o "$out/spillover.csv"
    column -s, -t < "$out/spillover.csv"
else
    pending+=(ipw)
fi
if ((${#pending[@]})); then
    printf '\nnot yet available in this version: %s (the chain continues with them as they land)\n' "${pending[*]}" >&2
fi
printf '\ndemo outputs are in %s/\n' "$out" >&2
