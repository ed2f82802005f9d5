"""Where the per-partition work of a command runs.

A command's work is split into plain functions over one partition of products (``map``) and
a reduction of their small results in the calling process; an engine only decides where the
``map`` runs. The statistics never ask which engine they run on, and every engine returns the
results in the order of the items, so the answer is the same on each.

``LocalEngine`` runs the tasks in this process (``n_jobs=1``) or in a pool of worker
processes on this machine (joblib's process backend: each worker loads its partition from the
scratch folder itself, so only per-partition summaries travel back).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class LocalEngine:
    """Run ``map`` tasks on this machine.

    Parameters
    ----------
    n_jobs : worker processes; 1 runs every task in this process, 0 or less uses every core.
    """

    def __init__(self, n_jobs: int = 1) -> None:
        self.n_jobs = n_jobs

    @property
    def workers(self) -> int:
        return self.n_jobs if self.n_jobs > 0 else (os.cpu_count() or 1)

    def map(self, fn: Callable[..., T], items: Sequence[Any], progress: Callable[[int], None] | None = None) -> list[T]:
        """``[fn(item) for item in items]``, in order; ``progress(1)`` after each task."""
        if self.workers == 1 or len(items) < 2:
            return list(_in_process(fn, items, progress))
        from joblib import Parallel, delayed

        results: list[T] = []
        runner = Parallel(n_jobs=min(self.workers, len(items)), return_as="generator")
        for result in runner(delayed(fn)(item) for item in items):
            results.append(result)
            if progress is not None:
                progress(1)
        return results


def _in_process(fn: Callable[..., T], items: Iterable[Any], progress) -> Iterable[T]:
    for item in items:
        yield fn(item)
        if progress is not None:
            progress(1)
