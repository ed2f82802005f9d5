"""How a run ends when it is told to stop.

Ctrl-C (SIGINT), SIGTERM (``timeout``, systemd, Kubernetes, cron's killers) and SIGHUP (a
closed terminal) end a run alike: an exception that no library's ``except Exception`` or
``except KeyboardInterrupt`` takes for its own (the command-line parser would turn a
KeyboardInterrupt into a normal return, and the outputs written so far would be committed)
unwinds through every cleanup (temporary
outputs, the scratch folder of partitions), the local engine's worker processes are ended,
nothing is committed, and the exit code is 128 + the signal's number. While the outputs
are being moved into place the signals wait, so a commit is never cut by them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
from collections.abc import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """The run received SIGINT, SIGTERM or SIGHUP."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum


def _raise(signum, frame) -> None:
    raise Stopped(signum)


@dataclasses.dataclass
class _State:
    armed: bool = False


_STATE = _State()


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise ``Stopped`` in this (main) thread while the block runs."""
    try:
        previous = {sig: signal.signal(sig, _raise) for sig in HANDLED}
    except ValueError:  # not the main thread: leave the signals alone
        yield
        return
    _STATE.armed = True
    try:
        yield
    finally:
        _STATE.armed = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def rearm() -> None:
    """Put the run's handlers back after a library replaced them (inside ``stoppable``)."""
    if _STATE.armed:
        with contextlib.suppress(ValueError):
            for sig in HANDLED:
                signal.signal(sig, _raise)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends (they are delivered then)."""
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED)
    except (AttributeError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def behind(exc: BaseException) -> Stopped | None:
    """The signal behind an error, when a library's compiled code met ``Stopped`` and raised
    an error of its own around it (a cluster engine's core worker gives a SystemError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Stopped):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def end_workers() -> None:
    """End the local engine's worker processes, if this run started any (joblib keeps a
    pool alive for reuse; a stopped run must not leave it behind, nor wait for it)."""
    if "joblib" not in sys.modules:
        return
    import multiprocessing

    workers = []
    with contextlib.suppress(Exception):
        from joblib.externals.loky import reusable_executor

        executor = reusable_executor._executor
        if executor is not None:
            workers = list(getattr(executor, "_processes", {}).values())
            executor.shutdown(wait=False, kill_workers=True)
    # The shutdown ends them from a thread of its own, which may not run before this process
    # exits; and a worker being started when the signal came is not in the pool's list yet,
    # though the interpreter would wait for it at exit. Each is ended here and waited for.
    workers += [child for child in multiprocessing.active_children() if child not in workers]
    for worker in workers:
        with contextlib.suppress(Exception):
            worker.kill()
    for worker in workers:
        with contextlib.suppress(Exception):
            worker.join(timeout=5)
