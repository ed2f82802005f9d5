"""Run every bench/bench_*.py in turn and print their figures; exit 1 if any is over budget."""

from __future__ import annotations

import glob
import os
import subprocess
import sys


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    failed = []
    for script in sorted(glob.glob(os.path.join(here, "bench_*.py"))):
        print(f"== {os.path.basename(script)}", flush=True)
        if subprocess.run([sys.executable, script]).returncode != 0:
            failed.append(os.path.basename(script))
    print("catalog scale (hpte on a million products, a year of history): make bench-scale")
    if failed:
        print(f"over budget or failed: {', '.join(failed)}")
        return 1
    print("all benchmarks within budget")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
