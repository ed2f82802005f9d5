"""Everything pricelab says to a person goes to stderr through here; stdout carries data only."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class Reporter:
    """Summaries, warnings and progress bars on stderr; silent when ``quiet``."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        # stderr=True makes rich look up sys.stderr at each write, so test capture works.
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)

    def say(self, text: str) -> None:
        """A line of summary."""
        if not self.quiet:
            self.console.print(text, markup=False)

    def warn(self, text: str) -> None:
        """A warning; shown even without a terminal, hidden only by --quiet."""
        if not self.quiet:
            self.console.print(f"warning: {text}", style="yellow", markup=False)

    def table(self, table: Table) -> None:
        """A rich table of results."""
        if not self.quiet:
            self.console.print(table)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Yield ``advance(n)``; draws a bar on stderr while the block runs (a count without
        an end when ``total`` is None)."""
        if self.quiet or (total is not None and total <= 0):
            yield lambda n=1: None
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
    def tasks(self, description: str) -> Iterator["TaskBar"]:
        """Yield a counter of tasks (``add(n)`` as a stage of ``n`` starts, ``done(n)`` as
        they finish) drawn as one bar on stderr whose total grows stage by stage."""
        if self.quiet:
            yield TaskBar(None, None)
            return
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        with bar:
            yield TaskBar(bar, bar.add_task(description, total=0))


class TaskBar:
    """The counter ``Reporter.tasks`` yields (see :class:`pricelab_cli.engine.TaskCounter`)."""

    def __init__(self, bar: Progress | None, task) -> None:
        self._bar, self._task, self._total = bar, task, 0

    def add(self, n: int) -> None:
        self._total += n
        if self._bar is not None:
            self._bar.update(self._task, total=self._total)

    def done(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)


def error(text: str) -> None:
    """The one error line a failed run prints."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"pricelab: error: {text}", style="bold red", markup=False
    )
    sys.stderr.flush()
