"""Where the per-partition work of a command runs.

A command's work is split into plain functions over one partition of products (``map``) and
a reduction of their small results in the calling process (the driver); an engine only
decides where the ``map`` runs. The statistics never ask which engine they run on, and every
engine returns the results in the order of the items, so the answer is the same on each.

``LocalEngine`` runs the tasks in this process (``n_jobs=1``) or in a pool of worker
processes on this machine (joblib's process backend: each worker loads its partition from the
scratch folder itself, so only per-partition summaries travel back). ``RayEngine``
(:mod:`pricelab_cli.ray_engine`, the ``pricelab[ray]`` extra) runs the same functions as
tasks of a Ray cluster, and keeps the partitions themselves in the cluster's object store.

Two more verbs serve data too large to travel with every task:

- ``share(value)`` puts a large read-only input (the assignment grid, bootstrap influences)
  where the tasks can reach it once; a task turns what it gets back into the value with
  :func:`resolve`. On this machine it is the value itself.
- ``map_kept(fn, items, n_kept)`` runs tasks whose function returns ``(small, big_1, ...,
  big_n)``: the small part comes back, the big parts stay with the engine (Ray's object
  store) as handles that later tasks :func:`resolve`. ``remote`` says whether an engine
  keeps them away from the driver; the local engine keeps its partitions in a scratch
  folder instead (see :mod:`pricelab_cli.hpte.panel`).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from pricelab_cli.errors import UsageError

T = TypeVar("T")

ENGINES = ("local", "ray")
ENGINE_ENV = "PRICELAB_ENGINE"


class TaskCounter:
    """What an engine reports its progress to, stage by stage: ``add(total, stage)`` as a
    stage starts (its name and its whole size: tasks, or the weights ``map`` was given),
    ``done(n)`` as its work finishes. The default does nothing."""

    def add(self, total: int, stage: str = "tasks") -> None:  # noqa: D102
        pass

    def done(self, n: int = 1) -> None:  # noqa: D102
        pass


def announce(counter: TaskCounter, fn: Callable, items: Sequence[Any], stage: str | None,
             weights: Callable[[Any], int] | None) -> list[int]:
    """Tell ``counter`` a stage of ``items`` starts and return each item's size.

    The stage is named ``stage``, else after the task function (``_cells_task`` ->
    "cells"); its size is the number of items, or the sum of ``weights(item)``."""
    sizes = [1] * len(items) if weights is None else [int(weights(item)) for item in items]
    if not stage:
        stage = getattr(fn, "__name__", "tasks").strip("_").removesuffix("_task").replace("_", " ") or "tasks"
    counter.add(sum(sizes), stage)
    return sizes


class LocalEngine:
    """Run ``map`` tasks on this machine.

    Parameters
    ----------
    n_jobs : worker processes; 1 runs every task in this process, 0 or less uses every core.
    """

    remote = False

    def __init__(self, n_jobs: int = 1, counter: TaskCounter | None = None) -> None:
        self.n_jobs = n_jobs
        self.counter = counter or TaskCounter()

    @property
    def workers(self) -> int:
        return self.n_jobs if self.n_jobs > 0 else (os.cpu_count() or 1)

    def share(self, value: Any) -> Any:
        return value

    def map(self, fn: Callable[..., T], items: Sequence[Any], progress: Callable[[Any], None] | None = None,
            stage: str | None = None, weights: Callable[[Any], int] | None = None) -> list[T]:
        """``[fn(item) for item in items]``, in order; ``progress(item)`` as each task ends.

        The counter sees one stage named ``stage`` whose size is the number of tasks, or the
        sum of ``weights(item)`` (rows, draws) when given, known before the first task runs."""
        sizes = announce(self.counter, fn, items, stage, weights)
        if self.workers == 1 or len(items) < 2:
            return list(_in_process(fn, items, sizes, progress, self.counter))
        from joblib import Parallel, delayed

        results: list[T] = []
        runner = Parallel(n_jobs=min(self.workers, len(items)), return_as="generator")
        for item, size, result in zip(items, sizes, runner(delayed(fn)(item) for item in items)):
            results.append(result)
            self.counter.done(size)
            if progress is not None:
                progress(item)
        return results

    def map_kept(self, fn: Callable[..., tuple], items: Sequence[Any], n_kept: int,
                 progress: Callable[[Any], None] | None = None, stage: str | None = None,
                 weights: Callable[[Any], int] | None = None) -> list[tuple[Any, list[Any]]]:
        """``fn(item)`` returns ``(small, big_1, ..., big_n_kept)``; here every part comes back."""
        out = self.map(fn, items, progress, stage, weights)
        return [(result[0], list(result[1:1 + n_kept])) for result in out]

    def close(self) -> None:
        pass


def _in_process(fn: Callable[..., T], items: Iterable[Any], sizes: list[int], progress,
                counter: TaskCounter) -> Iterable[T]:
    for item, size in zip(items, sizes):
        yield fn(item)
        counter.done(size)
        if progress is not None:
            progress(item)


def release_freed_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc's ``malloc_trim``; elsewhere
    nothing happens).

    Threads that make many small allocations (a forest's fit: 0.35 GB on 400,000 cells)
    leave the freed memory in per-thread arenas that glibc keeps for reuse, and the
    process would carry it to the end of the run."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def resolve(value: Any) -> Any:
    """The value behind what ``share`` or ``map_kept`` handed out (itself on this machine).

    Recognises a Ray object reference by its type's module, so the local engine never
    imports ray."""
    if type(value).__module__.split(".")[0] == "ray":
        import ray

        return ray.get(value)
    return value


def engine_name(name: str | None) -> str:
    """``--engine`` if given, else ``PRICELAB_ENGINE``, else ``local``; checked."""
    chosen = name if name is not None else os.environ.get(ENGINE_ENV) or "local"
    chosen = chosen.strip().lower()
    if chosen not in ENGINES:
        source = "--engine" if name is not None else ENGINE_ENV
        raise UsageError(f"{source} {chosen!r} is not one of: {', '.join(ENGINES)}.")
    return chosen


def make_engine(name: str | None, n_jobs: int = 0, counter: TaskCounter | None = None):
    """The engine a command runs on: ``local`` (``n_jobs`` processes, 0 = every core) or
    ``ray`` (the cluster at ``RAY_ADDRESS``; see :mod:`pricelab_cli.ray_engine`)."""
    if engine_name(name) == "ray":
        from pricelab_cli.ray_engine import RayEngine

        return RayEngine.connect(counter=counter)
    return LocalEngine(n_jobs, counter)
