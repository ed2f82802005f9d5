"""Everything pricelab says to a person goes to stderr through here; stdout carries data only.

Three levels: everything (summaries, tables, progress bars, warnings); ``quiet`` (warnings
only: an SRM or a failed placebo still reaches the log); ``silent`` (nothing but the error
line of a failed run).

A log or a pipe is not a terminal: there, tables are printed at their full width (never cut
at 80 columns) and no progress bar is drawn, so a cron log holds lines of text and no
blank or half-drawn lines. A stderr whose reader went away (``2>&1 | head -1``) never fails
the run: what pricelab has to say is dropped and the run ends as it would have.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# Width of a console that is not a terminal: wide enough that no table is cut.
LOG_WIDTH = 1000
# In a log, a stage's progress is a line every this many seconds, and a last line when it
# ends if it took at least LOG_MIN_SECONDS.
LOG_EVERY = 30.0
LOG_MIN_SECONDS = 1.0


class _Stderr:
    """``sys.stderr`` as it is at each write (so test capture works), with a reader that
    went away ignored: the first broken write points file descriptor 2 at /dev/null, so
    nothing later (the interpreter's final flush included) trips over it again."""

    broken = False

    def write(self, text: str) -> int:
        if not _Stderr.broken:
            try:
                return sys.stderr.write(text)
            except OSError as exc:
                _gone(exc)
        return len(text)

    def flush(self) -> None:
        if not _Stderr.broken:
            try:
                sys.stderr.flush()
            except OSError as exc:
                _gone(exc)

    def isatty(self) -> bool:
        try:
            return not _Stderr.broken and sys.stderr.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name):
        return getattr(sys.stderr, name)


def _gone(exc: OSError) -> None:
    if not isinstance(exc, BrokenPipeError) and exc.errno not in (errno.EPIPE, errno.EBADF):
        raise exc
    _Stderr.broken = True
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stderr.fileno())
        os.close(devnull)


def _console() -> Console:
    stream = _Stderr()
    terminal = stream.isatty()
    return Console(
        file=stream,
        highlight=False,
        soft_wrap=True,
        width=None if terminal else LOG_WIDTH,
        force_terminal=None if terminal else False,
    )


class Reporter:
    """Summaries, tables and progress bars on stderr unless ``quiet``; warnings unless
    ``silent``."""

    def __init__(self, quiet: bool = False, silent: bool = False) -> None:
        self.silent = silent
        self.quiet = quiet or silent
        self.console = _console()

    def say(self, text: str) -> None:
        """A line of summary."""
        if not self.quiet:
            self.console.print(text, markup=False)

    def warn(self, text: str) -> None:
        """A warning; shown even without a terminal and with --quiet, hidden by --silent."""
        if not self.silent:
            self.console.print(f"warning: {text}", style="yellow", markup=False)

    def table(self, table: Table) -> None:
        """A rich table of results (in a log without its outer edge: some box styles draw it
        as a line of spaces)."""
        if not self.quiet:
            if not self.console.is_terminal:
                table.show_edge = False
            self.console.print(table)

    @property
    def _bars(self) -> bool:
        """Progress bars are for a person at a terminal: not for --quiet, not for a log."""
        return not self.quiet and self.console.is_terminal

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Yield ``advance(n)``; draws a bar on stderr while the block runs (a count without
        an end when ``total`` is None). In a log: a line every ``LOG_EVERY`` seconds, and one
        when a stage of ``LOG_MIN_SECONDS`` or more ends."""
        if self.quiet or (total is not None and total <= 0):
            yield lambda n=1: None
            return
        if not self._bars:
            log = _LogProgress(self, description, total)
            try:
                yield log.advance
            finally:
                log.end()
            return
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}" if total is None else "{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    @contextlib.contextmanager
    def stages(self) -> Iterator[StageBar]:
        """Yield the counter an engine reports its stages to (see
        :class:`pricelab_cli.engine.TaskCounter`): each stage is a bar named after it with
        its whole size from the start, replaced by the next stage's when that begins. In a
        log, each stage is a line as ``progress`` writes them."""
        if self.quiet:
            yield StageBar(None, None)
            return
        if not self._bars:
            bar = StageBar(None, self)
            try:
                yield bar
            finally:
                bar.close()
            return
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with progress:
            bar = StageBar(progress, None)
            try:
                yield bar
            finally:
                bar.close()


class _LogProgress:
    """Progress as lines of a log (see ``Reporter.progress``)."""

    def __init__(self, reporter: Reporter, description: str, total: int | None) -> None:
        self.reporter, self.description, self.total = reporter, description, total
        self.done = 0
        self.start = self.last = time.monotonic()

    def _count(self) -> str:
        return f"{self.done:,}" if self.total is None else f"{self.done:,}/{self.total:,}"

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= LOG_EVERY:
            self.last = now
            self.reporter.say(f"{self.description}: {self._count()} ({now - self.start:.0f} s)")

    def end(self) -> None:
        # Stages overlap (rows are read while the estimate runs), so the last line gives the
        # count, not a time that would mislead.
        if time.monotonic() - self.start >= LOG_MIN_SECONDS and self.done:
            self.reporter.say(f"{self.description}: {self._count()}")


class StageBar:
    """The counter ``Reporter.stages`` yields: ``add(total, stage)`` as a stage starts,
    ``done(n)`` as its work finishes (a terminal's bar, a log's lines, or nothing)."""

    def __init__(self, bar: Progress | None, log: Reporter | None) -> None:
        self._bar, self._log_to = bar, log
        self._task = None
        self._log: _LogProgress | None = None

    def add(self, total: int, stage: str = "tasks") -> None:
        self.close()
        if self._bar is not None:
            self._task = self._bar.add_task(stage, total=total)
        elif self._log_to is not None:
            self._log = _LogProgress(self._log_to, stage, total)

    def done(self, n: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, n)
        elif self._log is not None:
            self._log.advance(n)

    def close(self) -> None:
        """End the current stage (its bar goes; in a log, its last line is written)."""
        if self._task is not None:
            self._bar.remove_task(self._task)
            self._task = None
        if self._log is not None:
            self._log.end()
            self._log = None


def error(text: str) -> None:
    """The one error line a failed run prints."""
    console = _console()
    console.print(f"pricelab: error: {text}", style="bold red", markup=False)
    console.file.flush()
