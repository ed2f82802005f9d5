"""Tie a process group a test started to the test run itself.

A fixture that starts a server or a cluster stops it in its teardown; but a run that is
killed (a CI timeout, a crashed xdist worker) runs no teardown. ``tie_to_this_run(pgid)``
starts a small watcher, in a session of its own, that checks every half second whether the
process that called it (the pytest process or xdist worker) and that process's parent (the
pytest controller, under xdist) are still alive. When either has gone it kills the whole
process group ``pgid`` with SIGKILL and exits; it also exits on its own once the group has
ended (the normal teardown). ``tie_descendants_to_this_run()`` does the same for the
processes a pytest process starts without a session of their own (worker pools, xdist
workers, commands run by a test). So no cluster, server or worker pool outlives its run.
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


_DESCENDANT_WATCHER = r"""
import os, signal, sys, time

def table():
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # state, parent, session, start time
            found[int(entry)] = (fields[0], int(fields[1]), int(fields[3]), fields[19])
    return found

watched = int(sys.argv[1])
last = {}
while True:
    now = table()
    if watched not in now or now[watched][0] in ("Z", "X"):
        break
    children = {}
    for pid, (_, parent, _, _) in now.items():
        children.setdefault(parent, []).append(pid)
    seen, todo = {}, list(children.get(watched, []))
    while todo:
        pid = todo.pop()
        state, _, session, started = now[pid]
        if session == pid or pid == os.getpid():
            continue  # a server, node or watcher of its own session: tied to the run by its own watcher
        seen[pid] = started
        todo += children.get(pid, [])
    last = seen
    time.sleep(0.5)
now = table()
for pid, started in last.items():
    if pid in now and now[pid][3] == started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
"""


def tie_descendants_to_this_run() -> subprocess.Popen:
    """When this process dies, kill what it left behind: every process that descended from it
    at its last look (every 0.5 s), except those that lead a session of their own (servers
    and nodes, which ``tie_to_this_run`` covers). For pytest processes: an xdist worker killed
    by a timeout or a crash, or a controller killed with its workers, leaves no worker pool
    or command behind."""
    return subprocess.Popen(
        [sys.executable, "-c", _DESCENDANT_WATCHER, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
