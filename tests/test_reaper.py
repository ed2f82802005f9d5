"""A process group tied to a test run ends when the run is killed before its teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REAPER = Path(__file__).with_name("reaper.py")

# A stand-in for a pytest worker: starts a server-like group, ties it, prints its id, waits.
_RUN = f"""
import importlib.util, subprocess, sys, time
spec = importlib.util.spec_from_file_location("reaper", {str(REAPER)!r})
reaper = importlib.util.module_from_spec(spec); spec.loader.exec_module(reaper)
server = subprocess.Popen(["sleep", "600"], start_new_session=True)
reaper.tie_to_this_run(server.pid)
print(server.pid, flush=True)
time.sleep(600)
"""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # A zombie leader (not yet reaped by its killed parent) no longer counts.
    stat = Path(f"/proc/{pgid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_run_takes_the_group_it_started_with_it():
    run = subprocess.Popen([sys.executable, "-c", _RUN], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pgid = int(run.stdout.readline())
        time.sleep(1.0)
        assert _group_alive(pgid), "the group should live while the run does"
        run.kill()  # SIGKILL: no teardown runs
        run.wait(timeout=10)
        deadline = time.monotonic() + 10  # the watcher looks every 0.5 s
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(pgid), "the watcher did not end the group within 10 s of the run's death"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)


# A stand-in for a pytest process: ties its descendants, starts a worker pool of two
# processes (one of which starts a grandchild), prints their ids, waits.
_POOL = f"""
import importlib.util, subprocess, sys, time
spec = importlib.util.spec_from_file_location("reaper", {str(REAPER)!r})
reaper = importlib.util.module_from_spec(spec); spec.loader.exec_module(reaper)
reaper.tie_descendants_to_this_run()
child = subprocess.Popen(["sleep", "600"])
parent = subprocess.Popen([sys.executable, "-c", "import subprocess, time; print(subprocess.Popen(['sleep', '600']).pid, flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
grandchild = int(parent.stdout.readline())
print(child.pid, parent.pid, grandchild, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_a_killed_run_takes_its_worker_processes_with_it():
    run = subprocess.Popen([sys.executable, "-c", _POOL], stdout=subprocess.PIPE, text=True, start_new_session=True)
    pids: list[int] = []
    try:
        pids = [int(p) for p in run.stdout.readline().split()]
        assert len(pids) == 3
        time.sleep(1.5)  # the watcher has looked at least twice
        assert all(_alive(p) for p in pids), "the workers should live while the run does"
        run.kill()  # SIGKILL: no teardown runs, and the workers are orphaned
        run.wait(timeout=10)
        deadline = time.monotonic() + 10  # the watcher looks every 0.5 s
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "orphaned workers still alive 10 s after the run's death"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
