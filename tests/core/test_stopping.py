"""The cleanups a run registers with ``stopping.on_unwind`` run however its ``stoppable`` block
ends, a stop that lands while they run does not cut them short, and the previous signal
handlers come back."""

from __future__ import annotations

import os
import signal

import pytest

from pricelab_cli import stopping


def test_a_registered_cleanup_runs_when_the_block_is_stopped_and_not_once_forgotten():
    before = signal.getsignal(signal.SIGTERM)
    ran: list[str] = []
    with pytest.raises(stopping.Stopped) as stopped, stopping.stoppable():
        stopping.on_unwind(lambda: ran.append("left open"))
        stopping.forget(stopping.on_unwind(lambda: ran.append("closed by its owner")))
        os.kill(os.getpid(), signal.SIGTERM)
        signal.getsignal(signal.SIGTERM)  # a check point: the handler runs by here
    assert stopped.value.exit_code == 143
    assert ran == ["left open"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_that_lands_during_a_cleanup_has_it_run_again_and_is_raised():
    calls: list[int] = []

    def cleanup() -> None:
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered at once, into the cleanup
            signal.getsignal(signal.SIGTERM)

    with pytest.raises(stopping.Stopped), stopping.stoppable():
        stopping.on_unwind(cleanup)
    assert len(calls) == 2


def test_nothing_is_registered_outside_a_run():
    assert stopping.on_unwind(lambda: None) is None
    stopping.forget(None)
