"""hpte on a two-node Ray cluster on this machine (``make bench-ray``).

For each size (products x 84 days: 56 of history, 28 random days), the inputs are generated
day by day as a date-partitioned Parquet folder by ``scale_data.py`` (kept in ``bench_out/``
between runs). A head and a worker node (one CPU each) are started with ``ray start`` as in
the tests (``tests/ray_cluster.py``), hpte runs with ``--engine ray`` and 500 draws, and the
cluster is stopped. Reported: wall time, the driver's peak (the ``pricelab`` process group,
under ``memcap.py``) and each node's peak, sampled every 0.5 s as the proportional set size
(PSS) of its process group, so the object store's shared pages count once per node, not
once per process that maps them. A watchdog stops the cluster if a node outgrows its cap.

At the comparison size (200,000 products by default) hpte also runs with ``--engine local``
on the same inputs: the two outputs must be the same bytes, and Ray's time within twice the
local time.

Goals: driver <= 4 GB, each node <= 3 GB. ``python bench/ray_hpte.py 200000 1000000``
runs chosen sizes (default: 200,000 then 5,000,000).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, os.path.dirname(__file__))
from measure import bench_dir, measure_group, pricelab, report  # noqa: E402
from memcap import group_rss_mib  # noqa: E402
from scale_data import generate  # noqa: E402

HISTORY_DAYS = 56
COMPARE_SIZE = 200_000
DRIVER_GOAL_MIB, NODE_GOAL_MIB = 4096.0, 3072.0
# Each node's object store; what does not fit is spilled to disk by Ray.
OBJECT_STORE_BYTES = 1536 * 1024 * 1024


def _load_cluster_module():
    path = Path(__file__).resolve().parents[1] / "tests" / "ray_cluster.py"
    spec = importlib.util.spec_from_file_location("pricelab_bench_ray_cluster", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class NodeWatch(threading.Thread):
    """Samples each node's group PSS; stops the cluster past ``cap_mib``."""

    def __init__(self, cluster, cap_mib: float) -> None:
        super().__init__(daemon=True)
        self.cluster, self.cap = cluster, cap_mib
        self.peak = {"head": 0.0, "worker": 0.0}
        self.killed = ""
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.5):
            for name in ("head", "worker"):
                process = getattr(self.cluster, name)
                if process is None:
                    continue
                mib = group_rss_mib(process.pid, "Pss")
                self.peak[name] = max(self.peak[name], mib)
                if mib > self.cap:
                    self.killed = f"{name} node at {mib:.0f} MiB (cap {self.cap:.0f} MiB)"
                    self.cluster.stop()
                    return

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_size(n_products: int, cluster_module) -> bool:
    folder = os.path.join(bench_dir(), f"scale_{n_products}_{HISTORY_DAYS}")
    print(f"generating {n_products:,} products x {HISTORY_DAYS + 28} days in {folder} (kept between runs)", flush=True)
    paths = generate(folder, n_products, HISTORY_DAYS)
    args = [
        "hpte",
        "--sales",
        paths["sales"],
        "--assignment",
        paths["assignment"],
        "--bootstrap",
        "500",
        "--seed",
        "0",
        "-q",
    ]
    ok = True
    local_s = None
    if n_products <= COMPARE_SIZE:
        local_out = os.path.join(folder, "effects_local.csv")
        local_s, _, local_group = measure_group(
            [*pricelab(), *args, "-o", local_out, "--engine", "local"], limit_mib=2 * DRIVER_GOAL_MIB
        )
        ok &= report(
            f"hpte --engine local, {n_products:,} products x 84 days", local_s, local_group, 1e9, DRIVER_GOAL_MIB
        )
    root = Path(os.path.abspath(os.path.join(bench_dir(), "ray")))
    cluster = cluster_module.LocalRayCluster(root, object_store_bytes=OBJECT_STORE_BYTES)
    ray_out = os.path.join(folder, "effects_ray.csv")
    started = time.monotonic()
    cluster.start()
    print(f"two-node cluster started in {time.monotonic() - started:.1f} s at {cluster.address}", flush=True)
    watch = NodeWatch(cluster, cap_mib=2 * NODE_GOAL_MIB)
    watch.start()
    try:
        env = {**cluster.env, "PRICELAB_ENGINE": "ray"}
        seconds, _, driver = measure_group([*pricelab(), *args, "-o", ray_out], limit_mib=2 * DRIVER_GOAL_MIB, env=env)
    finally:
        try:
            watch.stop()
        finally:
            cluster.stop()
            # Ray's session folder holds the objects it spilled to disk (14 GB at 5M x 84).
            shutil.rmtree(root / "ray", ignore_errors=True)
    if watch.killed:
        print(f"FAIL  the watchdog stopped the cluster: {watch.killed}", flush=True)
        return False
    limit_s = 2 * local_s if local_s is not None else 1e9
    ok &= report(
        f"hpte --engine ray (2 nodes x 1 CPU), {n_products:,} products x 84 days: driver",
        seconds,
        driver,
        limit_s,
        DRIVER_GOAL_MIB,
    )
    for name, peak in watch.peak.items():
        verdict = "ok  " if peak <= NODE_GOAL_MIB else "OVER"
        print(f"{verdict}  {name} node peak {peak:.0f} MiB PSS (goal <= {NODE_GOAL_MIB:.0f} MiB)", flush=True)
        ok &= peak <= NODE_GOAL_MIB
    effects = pl.read_csv(ray_out).row(0, named=True)
    print(f"    lift {effects['lift']:+.4f}, se {effects['se']:.4g}, {effects['n_products']:,} products", flush=True)
    if local_s is not None:
        same = Path(ray_out).read_bytes() == Path(local_out).read_bytes()
        print(
            f"{'ok  ' if same else 'FAIL'}  ray output {'identical to' if same else 'DIFFERS from'} local; "
            f"ray/local time {seconds / local_s:.2f}x (goal <= 2x)",
            flush=True,
        )
        ok &= same
    return ok


def main(sizes: list[int]) -> int:
    cluster_module = _load_cluster_module()
    ok = True
    for n in sizes or [COMPARE_SIZE, 5_000_000]:
        ok &= run_size(n, cluster_module)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main([int(a) for a in sys.argv[1:]]))
