"""What every engine offers, and the pieces the engines share.

``Engine`` is the protocol a command's core code runs its per-partition work through:
``map`` (a plain function over items, results in item order), ``map_kept`` (tasks whose large
results stay with the engine), ``share`` (a large read-only input placed once), and the
partition verbs below. The statistics never ask which engine they run on, and every engine
returns the results in the order of the items, so the answer is the same on each.

Partitions of rows (hpte's sales panel) live where the engine keeps them: a scratch folder
of raw column files on this machine, or a cluster's object store. Core code asks the engine
for a store (``partition_store``), gives each writing task ``store.writer()`` to append to,
and runs the writers and the per-partition rewrites through ``write_partitions`` and
``rewrite_partitions``; it never needs to know where the rows are.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

T = TypeVar("T")


class TaskCounter:
    """What an engine reports its progress to, stage by stage: ``add(total, stage)`` as a
    stage starts (its name and its whole size: tasks, or the weights ``map`` was given),
    ``done(n)`` as its work finishes. The default does nothing."""

    def add(self, total: int, stage: str = "tasks") -> None:  # noqa: D102
        pass

    def done(self, n: int = 1) -> None:  # noqa: D102
        pass


class Engine(Protocol):
    """Where the per-partition work of a command runs (see the module docstring)."""

    counter: TaskCounter

    @property
    def workers(self) -> int: ...

    def share(self, value: Any) -> Any: ...

    def map(
        self,
        fn: Callable[..., T],
        items: Sequence[Any],
        progress: Callable[[Any], None] | None = None,
        stage: str | None = None,
        weights: Callable[[Any], int] | None = None,
    ) -> list[T]: ...

    def map_kept(
        self,
        fn: Callable[..., tuple],
        items: Sequence[Any],
        n_kept: int,
        progress: Callable[[Any], None] | None = None,
        stage: str | None = None,
        weights: Callable[[Any], int] | None = None,
    ) -> list[tuple[Any, list[Any]]]: ...

    def partition_store(
        self, n_parts: int, columns: Mapping[str, np.dtype], kept: Sequence[str], total_rows: int
    ) -> PartitionStore: ...

    def write_partitions(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any], store: PartitionStore, **map_options: Any
    ) -> list[Any]: ...

    def rewrite_partitions(
        self,
        fn: Callable[[Any], tuple[Any, Mapping[str, np.ndarray]]],
        tasks: Sequence[Any],
        store: PartitionStore,
        **map_options: Any,
    ) -> list[Any]: ...

    def summary(self) -> str | None: ...

    def close(self) -> None: ...


def announce(
    counter: TaskCounter, fn: Callable, items: Sequence[Any], stage: str | None, weights: Callable[[Any], int] | None
) -> list[int]:
    """Tell ``counter`` a stage of ``items`` starts and return each item's size.

    The stage is named ``stage``, else after the task function (``_cells_task`` ->
    "cells"); its size is the number of items, or the sum of ``weights(item)``."""
    sizes = [1] * len(items) if weights is None else [int(weights(item)) for item in items]
    if not stage:
        stage = getattr(fn, "__name__", "tasks").strip("_").removesuffix("_task").replace("_", " ") or "tasks"
    counter.add(sum(sizes), stage)
    return sizes


class PartitionStore(Protocol):
    """The rows of each partition, wherever an engine keeps them.

    ``columns`` are the columns written (name -> dtype) and ``kept`` those a rewritten
    partition keeps. ``writer(w)`` is what writing task ``w`` appends to (picklable),
    ``view(k)`` what a task handling partition ``k`` loads from, and ``slices(count)``
    how many writing tasks to cut an input into: ``(rows, n)``, where ``rows`` is the input's
    row count (``count()``, called only when the cut needs it) or None for one task reading
    it all."""

    columns: dict[str, np.dtype]
    kept: list[str]
    scratch: Any

    def writer(self, w: int) -> Any: ...

    def view(self, k: int) -> Any: ...

    def load(self, k: int) -> dict[str, np.ndarray]: ...

    def slices(self, count: Callable[[], int]) -> tuple[int | None, int]: ...

    def close(self) -> None: ...


class MemoryPartitions:
    """Partitions held as lists of arrays in this process: the store of a single partition
    on this machine, and what a writing task of a cluster fills before its pieces go to the
    object store (``take``)."""

    scratch = None

    def __init__(self, n_parts: int, columns: Mapping[str, np.dtype], kept: Sequence[str] | None = None) -> None:
        self.columns = dict(columns)
        self.kept = list(kept) if kept is not None else list(self.columns)
        self.n_parts = n_parts
        self._memory: list[dict[str, list[np.ndarray]]] = [{c: [] for c in self.columns} for _ in range(n_parts)]

    def writer(self, w: int) -> MemoryPartitions:
        return self

    def view(self, k: int) -> MemoryPartitions:
        return self

    def slices(self, count: Callable[[], int]) -> tuple[int | None, int]:
        return None, 1

    def append(self, k: int, arrays: Mapping[str, np.ndarray]) -> None:
        for column, dtype in self.columns.items():
            self._memory[k][column].append(np.ascontiguousarray(arrays[column], dtype=dtype))

    def load(self, k: int) -> dict[str, np.ndarray]:
        parts = self._memory[k]
        return {c: (np.concatenate(v) if v else np.empty(0, dtype=self.columns[c])) for c, v in parts.items()}

    def take(self, k: int) -> dict[str, np.ndarray]:
        """``load(k)``, after which partition ``k`` is forgotten."""
        rows = self.load(k)
        self._memory[k] = {c: [] for c in self.columns}
        return rows

    def replace(self, k: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Keep ``arrays`` (sorted) as partition ``k``, only the ``kept`` columns."""
        self._memory[k] = {c: [np.asarray(arrays[c])] for c in self.kept}

    def close(self) -> None:
        pass


def replaced(fn: Callable[[Any], tuple[Any, Mapping[str, np.ndarray]]], task: Any) -> Any:
    """A rewrite task on this machine: ``fn(task)`` gives ``(small, rows)``; the rows replace
    the task's partition (``task.store``, ``task.k``) and the small part comes back."""
    small, rows = fn(task)
    task.store.replace(task.k, rows)
    return small


def release_freed_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc's ``malloc_trim``; elsewhere
    nothing happens).

    Threads that make many small allocations (a forest's fit: 0.35 GB on 400,000 cells)
    leave the freed memory in per-thread arenas that glibc keeps for reuse, and the
    process would carry it to the end of the run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# The values of the object references a cluster task was given as its direct arguments, by
# reference id: what ``resolve`` returns in that task (see pricelab_cli/engine/ray.py).
_PREFETCHED: dict[bytes, Any] = {}
_MISSING = object()


@contextlib.contextmanager
def prefetched(values: Mapping[bytes, Any]):
    """While a cluster task runs: ``resolve`` answers these references from ``values``."""
    _PREFETCHED.update(values)
    try:
        yield
    finally:
        _PREFETCHED.clear()


def resolve(value: Any) -> Any:
    """The value behind what ``share`` or ``map_kept`` handed out (itself on this machine).

    Recognises a Ray object reference by its type's module, so the local engine never
    imports ray. In a cluster task the value was fetched before the task started."""
    if type(value).__module__.split(".")[0] == "ray":
        found = _PREFETCHED.get(value.binary(), _MISSING)
        if found is not _MISSING:
            return found
        import ray

        return ray.get(value)
    return value
