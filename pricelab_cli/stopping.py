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
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

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
    _STATE.received = signum
    # From here the run is stopping and says so in one line: what a background thread raises
    # as the work around it unwinds (a worker pool's manager thread, "Exception in thread
    # ExecutorManagerThread: ...") is a consequence of the stop, not news, and is not printed.
    threading.excepthook = _quiet_thread
    raise Stopped(signum)


def _quiet_thread(args) -> None:
    """A background thread's exception once the run is stopping: not printed."""


@dataclasses.dataclass
class _State:
    armed: bool = False
    # The signal the run received, if any. Python runs a signal's handler wherever the main
    # thread is, and an exception raised inside a weakref callback or a __del__ (the import
    # system has such callbacks) is printed as "ignored" and lost; the run then goes on as if
    # nothing came. ``raise_if_received`` stops it all the same before anything is committed.
    received: int | None = None


def raise_if_received() -> None:
    """Raise ``Stopped`` for a signal the run received whose exception a library swallowed."""
    if _STATE.received is not None:
        raise Stopped(_STATE.received)


_STATE = _State()

# What must happen however the run ends (a cluster connection to close), keyed by token: run
# when the ``stoppable`` block ends unless forgotten first. A signal taken by another thread
# reaches the main thread only at its next check, which may be after the code that would have
# cleaned up has been left; this is where such a late stop still finds the cleanup.
_UNWIND: dict[int, Callable[[], None]] = {}
_TOKENS = iter(range(1, 1 << 62))


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise ``Stopped`` in this (main) thread while the block runs."""
    try:
        previous = {sig: signal.signal(sig, _raise) for sig in HANDLED}
    except ValueError:  # not the main thread: leave the signals alone
        yield
        return
    _STATE.armed, _STATE.received = True, None
    default_unraisable = sys.unraisablehook

    def unraisable(report) -> None:  # a Stopped lost where exceptions are ignored: not printed
        if not isinstance(report.exc_value, Stopped):
            default_unraisable(report)

    sys.unraisablehook = unraisable
    stop: Stopped | None = None
    try:
        yield
    except Stopped as exc:
        stop = exc
        raise
    finally:
        late = _wind_up(previous, default_unraisable)
        if late is not None and stop is None:
            raise late  # a stop that landed while the block was being left


def _wind_up(previous: dict, unraisable_hook) -> Stopped | None:
    """Run the cleanups still registered and put the previous handlers back; a stop that lands
    meanwhile (a late one, see ``_UNWIND``) interrupts neither and is returned."""
    late: Stopped | None = None
    for _ in range(5):
        try:
            while _UNWIND:
                token = next(reversed(_UNWIND))
                with contextlib.suppress(Exception):  # last resort: the run's own error comes first
                    _UNWIND[token]()
                _UNWIND.pop(token, None)
            break
        except Stopped as exc:  # the cleanup is tried again (cleanups may be run twice)
            late = late or exc
    sys.unraisablehook = unraisable_hook
    _STATE.armed = False
    for sig, handler in previous.items():
        for _ in range(5):
            try:
                signal.signal(sig, handler)  # runs a pending handler first, then changes it
                break
            except Stopped as exc:
                late = late or exc
    return late


def on_unwind(cleanup: Callable[[], None]) -> int | None:
    """Have ``cleanup`` run when the run's ``stoppable`` block ends, however it ends, unless
    ``forget`` is called with the token first; outside such a block nothing is registered."""
    if not _STATE.armed:
        return None
    token = next(_TOKENS)
    _UNWIND[token] = cleanup
    return token


def forget(token: int | None) -> None:
    """The cleanup registered under ``token`` was done by its owner."""
    if token is not None:
        _UNWIND.pop(token, None)


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
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, Stopped):
            return found
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return None


def end_workers() -> None:
    """End the local engine's worker processes, if this run started any (joblib keeps a
    pool alive for reuse; a stopped run must not leave it behind, nor wait for it)."""
    if "joblib" not in sys.modules:
        return
    import multiprocessing

    # The pool's manager thread may fail as its workers go ("Exception in thread
    # ExecutorManagerThread: ..."); ``_raise`` has already silenced background threads.
    executor = None
    with contextlib.suppress(Exception):
        from joblib.externals.loky import reusable_executor

        executor = reusable_executor._executor
        if executor is not None:
            executor.shutdown(wait=False, kill_workers=True)
    # The shutdown ends them from a thread of its own, which may not run before this process
    # exits; and a worker being started when the signal came is not in the pool's list yet,
    # though it would hold the run's stderr open (and the interpreter's exit would wait for
    # it) after the run is gone. So for a short while every worker process of this run that
    # appears (in the pool, among multiprocessing's children, or as a child process running
    # loky's worker) is ended and waited for.
    ended: set[int] = set()
    quiet_rounds = 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and quiet_rounds < 20:
        found = [*getattr(executor, "_processes", {}).values(), *multiprocessing.active_children()]
        fresh = [w for w in found if w.pid is not None and w.pid not in ended]
        strays = [pid for pid in _loky_children() if pid not in ended and pid not in {w.pid for w in fresh}]
        quiet_rounds = 0 if fresh or strays else quiet_rounds + 1
        for worker in fresh:
            # By its pid: loky's process objects have no kill() (an AttributeError would
            # leave the worker running, and the interpreter's exit waiting for it).
            with contextlib.suppress(OSError):
                os.kill(worker.pid, signal.SIGKILL)
        for pid in strays:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for worker in fresh:
            ended.add(worker.pid)
            with contextlib.suppress(Exception):
                worker.join(timeout=5)
        ended.update(strays)
        time.sleep(0.05)


def _loky_children() -> list[int]:
    """Child processes of this one that run a loky worker (read from /proc; none elsewhere)."""
    me, found = str(os.getpid()), []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] != me:
                        continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"popen_loky_posix" in f.read():
                        found.append(int(entry))
    return found
