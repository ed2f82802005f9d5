"""Time and peak memory of one command, measured in a child process.

Peak memory is the child's maximum resident set size (ru_maxrss), so each measured step
runs in its own process and nothing else in the benchmark inflates it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def measure(args: list[str], **kwargs) -> tuple[float, float]:
    """Run ``args``; return (wall seconds, peak RSS in MiB). Fails loudly if the command fails."""
    script = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "sys.stderr.write(f'\\n@@peak_kib={peak}\\n')\n"
        "sys.exit(code)\n"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"benchmark step failed ({done.returncode}): {' '.join(args)}")
    peak_kib = int(done.stderr.rsplit("@@peak_kib=", 1)[1].split()[0])
    if "@@group_peak_mib=" in done.stderr:
        global _last_group_peak
        _last_group_peak = float(done.stderr.rsplit("@@group_peak_mib=", 1)[1].split()[0])
    return seconds, peak_kib / 1024


def pricelab() -> list[str]:
    """The command that runs pricelab with this interpreter."""
    return [sys.executable, "-m", "pricelab_cli"]


def report(name: str, seconds: float, peak_mib: float, limit_s: float, limit_mib: float) -> bool:
    """Print one figure line; return whether it is within its budget."""
    ok = seconds <= limit_s and peak_mib <= limit_mib
    verdict = "ok" if ok else "OVER BUDGET"
    print(
        f"{name:<58} {seconds:7.1f} s (limit {limit_s:.0f})  {peak_mib:8.0f} MiB peak "
        f"(limit {limit_mib:.0f})  {verdict}",
        flush=True,
    )
    return ok


def bench_dir() -> str:
    """Scratch folder for benchmark inputs and outputs (kept out of git)."""
    path = os.environ.get("PRICELAB_BENCH_DIR", "bench_out")
    os.makedirs(path, exist_ok=True)
    return path


def power_on_history(folder: str) -> list[str]:
    """The command that runs ``power`` on the design studies' catalog and history: 5,000
    products (100 categories, substitutes) and 84 days of untreated sales to 2026-03-01,
    written to ``folder``; the caller adds the designs and the study's options."""
    import datetime as dt

    from pricelab_cli.simulate import simulate_catalog, simulate_sales

    products_path = os.path.join(folder, "power_products.csv")
    history_path = os.path.join(folder, "power_history.parquet")
    products, edges = simulate_catalog(5_000, 100, seed=31)
    products.write_csv(products_path)
    history = simulate_sales(products, edges=edges, end=dt.date(2026, 3, 1), history_days=84, price_change=0.0, seed=32)
    history.sales.write_parquet(history_path)
    return [*pricelab(), "power", "--history", history_path, "--products", products_path]


def measure_group(args: list[str], limit_mib: float, **kwargs) -> tuple[float, float, float]:
    """Run ``args`` under ``memcap.py`` (killed past ``limit_mib``); return (wall seconds,
    peak RSS of its largest process, sampled peak of its whole process group) in MiB.

    The group figure counts worker processes too, which ``ru_maxrss`` of one process does
    not; it is sampled every 0.2 s, so a spike shorter than that can escape it."""
    here = os.path.dirname(os.path.abspath(__file__))
    capped = [sys.executable, os.path.join(here, "memcap.py"), str(limit_mib), "--", *args]
    seconds, peak = measure(capped, **kwargs)
    return seconds, peak, _last_group_peak


_last_group_peak = 0.0
