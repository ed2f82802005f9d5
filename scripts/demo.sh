#!/usr/bin/env bash
# The whole loop on sample_data/: design -> assign -> (experiment) -> hpte -> spillover-graph
# -> cluster -> ipw. Outputs land in demo_out/; results print on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
data=sample_data
out=demo_out
mkdir -p "$out"

step() { printf '\n== %s\n' "$*" >&2; }
# Print a small CSV result as aligned columns on stdout.
show() { python -c "import polars as pl, sys; pl.Config.set_tbl_hide_dataframe_shape(True); pl.Config.set_tbl_cols(-1); pl.Config.set_tbl_width_chars(200); print(pl.read_csv(sys.argv[1]))" "$1"; }

step "design: a four-week random-days experiment"
pricelab design random-days --start 2026-03-02 --end 2026-03-29 --salt demo-2026 \
    --name random-days --plot "$out/design_grid.png" -o "$out/design.json"

step "assign: every product, every day, by hash of (salt, product, day)"
pricelab assign --design "$out/design.json" --products "$data/products.csv" -o "$out/assignment.parquet"

step "the experiment runs: its sales are simulated here, with a known true effect (written as a date-partitioned Parquet folder, as a warehouse export would be)"
pricelab simulate sales --products "$data/products.csv" --assignment "$out/assignment.parquet" \
    --edges "$data/true_edges.csv" --history-days 120 --seed 11 \
    -o "$out/sales/" --truth-out "$out/truth.json"
python - "$out/truth.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
print("true effects, units per product per day:")
print(f"  direct, at the exposure this experiment produced (hpte's target): {t['effect_realised']:.3f}")
print(f"  direct, with no substitute treated (ipw's 'direct' target):        {t['effect']:.3f}")
print(f"  if every product were treated (spillover included):                {t['effect_global']:.3f}")
PY

step "hpte: heterogeneous panel treatment effect"
pricelab hpte --sales "$out/sales/" --assignment "$out/assignment.parquet" \
    --features "$data/products.csv" --outcome units --outcome revenue --bootstrap 200 --seed 0 \
    -o "$out/effects.csv" --cate-out "$out/cate.parquet" --plot "$out/effect_path.png" \
    --outliers-out "$out/outliers.csv" --placebo-out "$out/placebo.csv"
show "$out/effects.csv"

step "spillover-graph: which products are substitutes, from a year of history"
pricelab spillover-graph --sales "$data/history.parquet" --products "$data/products.csv" \
    --group-col category -o "$out/edges.parquet"

step "cluster: products that must share an arm"
pricelab cluster --edges "$out/edges.parquet" --products "$data/products.csv" --max-size 10 \
    --seed 0 -o "$out/clusters.parquet"

step "ipw: direct and spillover effects from the design's own exposure probabilities"
pricelab ipw --sales "$out/sales/" --assignment "$out/assignment.parquet" \
    --edges "$out/edges.parquet" --design "$out/design.json" --products "$data/products.csv" \
    --outcome units --seed 0 -o "$out/spillover.csv"
show "$out/spillover.csv"

step "report: the readout for the people who decide (one self-contained HTML page, and Markdown)"
pricelab report --design "$out/design.json" --assignment "$out/assignment.parquet" --sales "$out/sales/" \
    --effects "$out/effects.csv" --cate "$out/cate.parquet" --products "$data/products.csv" \
    --placebo "$out/placebo.csv" --spillover "$out/spillover.csv" --clusters "$out/clusters.parquet" \
    -o "$out/report.html" --markdown
printf '\ndemo outputs are in %s/\n' "$out" >&2
printf 'report: %s\n' "$(cd "$out" && pwd)/report.html"
