"""A signal that comes while the cluster engine connects. ``ray.init`` installs a SIGTERM
handler of its own (``sys.exit(15)``), and Ray's core a C++ one that dumps a stack and aborts
(which the driver switches off with RAY_DISABLE_FAILURE_SIGNAL_HANDLER). The run holds its
signals while it connects, and a stop that reaches Ray's handler is the same stop. The real
cluster's version of this is in tests/cli/test_engine.py; here a stand-in library does what
``ray.init`` does, and the signal lands inside it every time. A run stopped there must also
disconnect: a connection left to the interpreter's exit crashed the process (SIGSEGV) after
it had said it stopped. And a signal that another thread of the process took reaches the main
thread only at its next check, which can come after ``connect`` has left the code that would
disconnect: the "late" case has the stop land just after ``ray.init`` has returned."""

from __future__ import annotations

import subprocess
import sys

import pytest

_RUN = """
import os, signal, socket, sys, types

listening = socket.socket()
listening.bind(("127.0.0.1", 0))
listening.listen(1)
os.environ["RAY_ADDRESS"] = "127.0.0.1:%d" % listening.getsockname()[1]

state = {"connected": False}

WHEN = sys.argv[1]

def init(**kwargs):
    state["connected"] = True
    assert os.environ.get("RAY_DISABLE_FAILURE_SIGNAL_HANDLER") == "1", "Ray's C++ handler is on"
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as ray.init does
    if WHEN == "inside":
        os.kill(os.getpid(), signal.SIGTERM)  # the signal comes while it connects
        for _ in range(1000):
            pass

def remote(**kwargs):
    if WHEN == "late":  # the engine is being made, after ray.init and its held signals
        os.kill(os.getpid(), signal.SIGTERM)
    return lambda fn: fn

def shutdown():
    state["connected"] = False

sys.modules["ray"] = types.SimpleNamespace(
    is_initialized=lambda: state["connected"], init=init, shutdown=shutdown,
    remote=remote,
)

from pricelab_cli import stopping
from pricelab_cli.engine.ray import RayEngine

try:
    with stopping.stoppable():
        RayEngine.connect()
except stopping.Stopped as exc:
    print("stopped by", exc.name, "connected" if state["connected"] else "disconnected")
    sys.exit(exc.exit_code)
print("not stopped")
"""


@pytest.mark.parametrize("when", ["inside", "late"])
def test_a_signal_while_the_engine_connects_reaches_the_run_not_the_library(when):
    done = subprocess.run([sys.executable, "-c", _RUN, when], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (143, "stopped by SIGTERM disconnected"), done.stderr
    assert "Traceback" not in done.stderr
