"""hpte on 100,000 products x 84 days (random days, 2 cells a product), 500 bootstrap draws.

Budget: <= 90 s wall and <= 4 GB peak RSS for the whole command (read, detrend, forest,
bootstrap, write), and <= 2x the time of fitting the causal forest alone on the same cells.
The default (robust) outlier rule is also timed against the method source's quantile rule
on the same files: it may cost at most 1.3x.
For comparison it also times econml's ``CausalForestDML`` on the same cells, with the same
forest size and linear first stages (its default ``auto`` first stages select models by
cross-validation and took about 11 minutes here; ``--dml-auto`` times that too).

Each measured step runs in its own child process; peak memory is that child's ru_maxrss.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from measure import bench_dir, measure, pricelab, report  # noqa: E402

N_PRODUCTS = 100_000
HISTORY_DAYS = 56
EXPERIMENT_DAYS = 28
LIMIT_S = 90.0
LIMIT_MIB = 4096.0


def make_inputs(folder: str) -> dict[str, str]:
    """Simulated catalog, random-days assignment and an 84-day sales panel (Parquet)."""

    from pricelab_cli import assign, make_design, simulate_catalog, simulate_sales

    paths = {name: os.path.join(folder, f"hpte_{name}.parquet") for name in ("sales", "assignment", "products")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    start = dt.date(2026, 3, 2)
    products, _ = simulate_catalog(N_PRODUCTS, 50, 5, seed=7)
    design = make_design("random-days", salt="bench", start=start, end=start + dt.timedelta(days=EXPERIMENT_DAYS - 1))
    assignment = assign(design, products)
    sim = simulate_sales(products, assignment=assignment, history_days=HISTORY_DAYS, seed=7)
    sim.sales.write_parquet(paths["sales"])
    assignment.write_parquet(paths["assignment"])
    products.drop("community").write_parquet(paths["products"])
    with open(os.path.join(folder, "hpte_truth.json"), "w") as fh:
        json.dump({"effect": sim.truth["effect"]}, fh)
    return paths


def cells(paths: dict[str, str]):
    """The forest's training rows exactly as hpte builds them: X, T, y per cell."""
    import numpy as np
    import polars as pl

    from pricelab_cli.hpte.detrend import detrend_partitions
    from pricelab_cli.hpte.estimate import HeterogeneousPanelEffect
    from pricelab_cli.hpte.forest import encode_features
    from pricelab_cli.hpte.panel import partition_panel

    with partition_panel(pl.read_parquet(paths["sales"]), pl.read_parquet(paths["assignment"]), ["units"]) as panel:
        user = encode_features(pl.read_parquet(paths["products"]), panel.product_ids)
        detrended = detrend_partitions(panel, "units", robust=True)
        fd = detrended.cells
        features, _ = HeterogeneousPanelEffect()._product_features(panel, detrended, user)
        X = features[fd.code]
    return X, fd.treated.astype(np.float64), fd.first_difference


def time_forest_alone(paths: dict[str, str]) -> None:
    """Child step: fit hpte's causal forest (default size) on the cells; print seconds."""
    from econml.grf import CausalForest

    from pricelab_cli.hpte.forest import DEFAULT_MAX_SAMPLES, DEFAULT_MIN_SAMPLES_LEAF, DEFAULT_TREES

    X, T, y = cells(paths)
    start = time.perf_counter()
    CausalForest(
        n_estimators=DEFAULT_TREES,
        max_samples=min(DEFAULT_MAX_SAMPLES, len(y) // 2),
        min_samples_leaf=DEFAULT_MIN_SAMPLES_LEAF,
        honest=True,
        inference=False,
        random_state=0,
        n_jobs=-1,
    ).fit(X, T, y)
    print(f"@@seconds={time.perf_counter() - start}")


def time_dml(paths: dict[str, str], auto: bool) -> None:
    """Child step: fit econml's CausalForestDML on the same cells; print seconds and ATE."""
    import warnings

    from econml.dml import CausalForestDML
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from pricelab_cli.hpte.forest import DEFAULT_MAX_SAMPLES, DEFAULT_MIN_SAMPLES_LEAF, DEFAULT_TREES

    warnings.simplefilter("ignore")
    X, T, y = cells(paths)
    first_stages = {} if auto else {"model_y": LinearRegression(), "model_t": LogisticRegression()}
    start = time.perf_counter()
    model = CausalForestDML(
        **first_stages,
        discrete_treatment=True,
        n_estimators=DEFAULT_TREES,
        max_samples=min(DEFAULT_MAX_SAMPLES, len(y) // 2),
        min_samples_leaf=DEFAULT_MIN_SAMPLES_LEAF,
        inference=False,
        cv=2,
        random_state=0,
    ).fit(y, T, X=X)
    seconds = time.perf_counter() - start
    print(f"@@seconds={seconds}\n@@ate={float(model.ate(X))}")


def child_figure(step: str, paths_file: str, *extra: str) -> tuple[float, float, dict[str, float]]:
    """Run a child step of this script; return wall, peak MiB and the figures it printed."""
    import subprocess

    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, step, paths_file, *extra], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"benchmark step {step} failed")
    figures = {
        line[2:].split("=")[0]: float(line.split("=")[1]) for line in done.stdout.splitlines() if line.startswith("@@")
    }
    return wall, 0.0, figures


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] in ("--forest-alone", "--dml", "--dml-auto"):
        with open(argv[1]) as fh:
            paths = json.load(fh)
        if argv[0] == "--forest-alone":
            time_forest_alone(paths)
        else:
            time_dml(paths, auto=argv[0] == "--dml-auto")
        return 0

    folder = bench_dir()
    start = time.perf_counter()
    paths = make_inputs(folder)
    print(
        f"inputs ready in {time.perf_counter() - start:.1f} s ({N_PRODUCTS:,} products x {HISTORY_DAYS + EXPERIMENT_DAYS} days)"
    )
    paths_file = os.path.join(folder, "hpte_paths.json")
    with open(paths_file, "w") as fh:
        json.dump(paths, fh)
    output = os.path.join(folder, "hpte_effects.csv")

    def run_hpte(out: str, *extra: str) -> tuple[float, float]:
        return measure(
            [
                *pricelab(),
                "hpte",
                "--sales",
                paths["sales"],
                "--assignment",
                paths["assignment"],
                "--features",
                paths["products"],
                "--outcome",
                "units",
                "--bootstrap",
                "500",
                "--seed",
                "0",
                "-o",
                out,
                "-q",
                *extra,
            ]
        )

    seconds, peak = run_hpte(output)
    ok = report("hpte 100,000 products x 84 days, 500 bootstrap draws", seconds, peak, LIMIT_S, LIMIT_MIB)
    q_seconds, q_peak = run_hpte(os.path.join(folder, "hpte_effects_quantile.csv"), "--outlier-rule", "quantile")
    print(
        f"  same with --outlier-rule quantile: {q_seconds:.1f} s, {q_peak:.0f} MiB peak; "
        f"robust / quantile = {seconds / q_seconds:.2f} (limit 1.30)"
    )
    ok = ok and seconds <= 1.3 * q_seconds
    import polars as pl

    row = pl.read_csv(output).row(0, named=True)
    with open(os.path.join(folder, "hpte_truth.json")) as fh:
        truth = json.load(fh)["effect"]
    print(f"  estimate {row['estimate']:.4f} (SE {row['se']:.4f}), true effect {truth:.4f}")

    _, _, forest = child_figure("--forest-alone", paths_file)
    ratio = seconds / forest["seconds"]
    print(
        f"  causal forest alone (same cells, same size): {forest['seconds']:.1f} s; hpte / forest = {ratio:.2f} (limit 2.00)"
    )
    ok = ok and ratio <= 2.0

    dml_step = "--dml-auto" if "--dml-auto" in argv else "--dml"
    _, _, dml = child_figure(dml_step, paths_file)
    stages = "auto" if dml_step == "--dml-auto" else "linear"
    print(
        f"  econml CausalForestDML ({stages} first stages, same forest size): {dml['seconds']:.1f} s, ATE {dml['ate']:.4f}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
