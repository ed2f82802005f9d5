"""pricelab monitor over the 28 nights of a 100,000-product random-days experiment (the
inputs of bench_hpte.py), against one hpte run on the same files.

Budget (issue: nightly monitoring): the whole replay <= 3x one hpte run, under the same
memory cap. monitor estimates the last night whole (tonight's hpte run) and replays the 27
past nights with that run's model in one more pass (``pricelab_cli.hpte.replay``): each
night's own cells, swing screen and leaf second difference, and one bootstrap for all.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from bench_hpte import make_inputs  # noqa: E402
from measure import bench_dir, measure_group, pricelab  # noqa: E402

LIMIT_MIB = 4096.0
RATIO = 3.0


def main() -> int:
    folder = bench_dir()
    paths = make_inputs(folder)
    design = os.path.join(folder, "monitor_design.json")
    from pricelab_cli import make_design

    start = dt.date(2026, 3, 2)
    spec = make_design("random-days", salt="bench", start=start, end=start + dt.timedelta(days=27))
    with open(design, "w") as fh:
        json.dump(spec.to_dict(), fh)
    common = ["--sales", paths["sales"], "--assignment", paths["assignment"], "--outcome", "units", "--quiet"]
    hpte_s, hpte_peak, _ = measure_group(
        [*pricelab(), "hpte", *common, "-o", os.path.join(folder, "monitor_hpte.csv")], LIMIT_MIB
    )
    monitor_s, monitor_peak, _ = measure_group(
        [*pricelab(), "monitor", "--design", design, *common, "-o", os.path.join(folder, "monitor.csv")], LIMIT_MIB
    )
    ratio = monitor_s / hpte_s
    ok = ratio <= RATIO and monitor_peak <= LIMIT_MIB
    print(
        f"monitor 100,000 products, 28 nights: {monitor_s:.1f} s, {monitor_peak:.0f} MiB peak; one hpte run "
        f"{hpte_s:.1f} s, {hpte_peak:.0f} MiB; monitor / hpte = {ratio:.1f} (limit {RATIO:.0f})  "
        f"{'ok' if ok else 'OVER BUDGET'}",
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
