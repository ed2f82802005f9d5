"""Run a command under a memory cap: its whole process group is killed past the limit.

This machine has no swap; a run that outgrows memory takes everything on it down. Every
large benchmark runs through this watchdog (``python bench/memcap.py MIB -- command ...``),
which samples the resident memory of the command's process group every 0.2 s and ends the
group with SIGKILL once it exceeds MIB, exiting 137 with a message on stderr. On a normal end
it writes the group's sampled peak (``@@group_peak_mib=N``) as its last line on stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def group_pids(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (field 5 of /proc/PID/stat)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.append(int(pid))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def group_rss_mib(pgid: int, field: str = "Rss") -> float:
    """Summed resident memory (MiB) of every process in process group ``pgid``; with
    ``field="Pss"`` the proportional set size (shared pages split among their users)."""
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith(f"{field}:")) * 1024
        except (OSError, StopIteration, ValueError):
            continue
    return total / 2**20


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: memcap.py MIB -- command [args...]\n")
        return 2
    limit = float(argv[0])
    child = subprocess.Popen(argv[2:], start_new_session=True)
    peak = 0.0
    while child.poll() is None:
        rss = group_rss_mib(child.pid)
        peak = max(peak, rss)
        if rss > limit:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            sys.stderr.write(f"memcap: killed {' '.join(argv[2:])!r} at {rss:.0f} MiB (limit {limit:.0f} MiB)\n")
            return 137
        time.sleep(0.2)
    # The summed peak of the whole process group (workers included), for benchmarks.
    sys.stderr.write(f"\n@@group_peak_mib={peak:.0f}\n")
    return child.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
