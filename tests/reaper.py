"""Tie a process group a test started to the test run itself.

A fixture that starts a server or a cluster stops it in its teardown; but a run that is
killed (a CI timeout, a crashed xdist worker) runs no teardown. ``tie_to_this_run(pgid)``
starts a small watcher, in a session of its own, that checks every half second whether the
process that called it (the pytest process or xdist worker) and that process's parent (the
pytest controller, under xdist) are still alive. When either has gone it kills the whole
process group ``pgid`` with SIGKILL and exits; it also exits on its own once the group has
ended (the normal teardown). So no cluster, server or worker pool outlives its test run.
"""

from __future__ import annotations

import os
import subprocess
import sys

_WATCHER = r"""
import os, signal, sys, time

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False

def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

pgid, watched = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
while group_alive(pgid):
    if not all(alive(p) for p in watched):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
    time.sleep(0.5)
"""


def tie_to_this_run(pgid: int) -> subprocess.Popen:
    """Kill process group ``pgid`` if this process or its parent dies before it ends."""
    watched = [os.getpid()]
    if os.getppid() > 1:
        watched.append(os.getppid())
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(pgid), *map(str, watched)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
