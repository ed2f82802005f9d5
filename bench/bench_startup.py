"""Start-up: `pricelab --help`, `pricelab --version` and `pricelab design ...` each take at
most 0.5 s (the median of 7 runs of the installed script), since every step of a Makefile or
a cron job pays it."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BUDGET_S = 0.5
RUNS = 7


def main() -> int:
    script = shutil.which("pricelab") or os.path.join(os.path.dirname(sys.executable), "pricelab")
    folder = tempfile.mkdtemp(prefix="pricelab-bench-")
    cases = {
        "pricelab --help": ["--help"],
        "pricelab --version": ["--version"],
        "pricelab design time-bound ...": [
            "design",
            "time-bound",
            "--start",
            "2026-03-02",
            "--end",
            "2026-03-29",
            "--seed",
            "1",
            "-o",
            os.path.join(folder, "design.json"),
            "--quiet",
        ],
    }
    over = []
    for name, args in cases.items():
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            subprocess.run([script, *args], check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"{name}: {median:.3f} s (median of {RUNS}; budget {BUDGET_S} s)", flush=True)
        if median > BUDGET_S:
            over.append(name)
    shutil.rmtree(folder, ignore_errors=True)
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
