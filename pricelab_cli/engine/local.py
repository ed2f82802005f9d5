"""The local engine: a command's tasks run on this machine.

``LocalEngine`` runs the tasks in this process (``n_jobs=1``) or in a pool of worker
processes (joblib's process backend: each worker loads its partition from the scratch folder
itself, so only per-partition summaries travel back). Partitions of more than one are kept
as raw column files in a scratch folder (``DiskPartitions``), written by ``WRITERS`` tasks
side by side; a single partition stays in memory.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pricelab_cli.engine.base import MemoryPartitions, TaskCounter, announce, replaced
from pricelab_cli.errors import OutputError

T = TypeVar("T")

# How many writing tasks read an input into partitions on disk, side by side.
WRITERS = 8


class LocalEngine:
    """Run ``map`` tasks on this machine.

    Parameters
    ----------
    n_jobs : worker processes; 1 runs every task in this process, 0 or less uses every core.
    """

    def __init__(self, n_jobs: int = 1, counter: TaskCounter | None = None) -> None:
        self.n_jobs = n_jobs
        self.counter = counter or TaskCounter()

    @property
    def workers(self) -> int:
        return self.n_jobs if self.n_jobs > 0 else (os.cpu_count() or 1)

    def share(self, value: Any) -> Any:
        return value

    def map(
        self,
        fn: Callable[..., T],
        items: Sequence[Any],
        progress: Callable[[Any], None] | None = None,
        stage: str | None = None,
        weights: Callable[[Any], int] | None = None,
    ) -> list[T]:
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

    def map_kept(
        self,
        fn: Callable[..., tuple],
        items: Sequence[Any],
        n_kept: int,
        progress: Callable[[Any], None] | None = None,
        stage: str | None = None,
        weights: Callable[[Any], int] | None = None,
    ) -> list[tuple[Any, list[Any]]]:
        """``fn(item)`` returns ``(small, big_1, ..., big_n_kept)``; here every part comes back."""
        out = self.map(fn, items, progress, stage, weights)
        return [(result[0], list(result[1 : 1 + n_kept])) for result in out]

    def partition_store(
        self, n_parts: int, columns: Mapping[str, np.dtype], kept: Sequence[str], total_rows: int
    ) -> DiskPartitions | MemoryPartitions:
        """One partition stays in memory; more live as column files in a scratch folder."""
        if n_parts == 1:
            return MemoryPartitions(1, columns, kept)
        from pricelab_cli.scratch import scratch_folder

        try:
            folder = scratch_folder("panel")
        except OSError as exc:
            raise no_room(Path(tempfile.gettempdir()), exc) from None
        store = DiskPartitions(n_parts, columns, folder, kept)
        store.need_bytes = total_rows * sum(np.dtype(d).itemsize for d in columns.values()) * 2
        return store

    def write_partitions(self, fn: Callable[[Any], Any], tasks: Sequence[Any], store, **map_options: Any) -> list[Any]:
        """Run writing tasks (each appends its rows to ``task.store``); their small results."""
        return self.map(fn, tasks, **map_options)

    def rewrite_partitions(
        self, fn: Callable[[Any], tuple], tasks: Sequence[Any], store, **map_options: Any
    ) -> list[Any]:
        """Run ``fn(task) -> (small, rows)`` per partition; the rows replace the partition."""
        map_options.setdefault("stage", getattr(fn, "__name__", None))
        return self.map(functools.partial(replaced, fn), tasks, **map_options)

    def summary(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def _in_process(
    fn: Callable[..., T], items: Iterable[Any], sizes: list[int], progress, counter: TaskCounter
) -> Iterable[T]:
    for item, size in zip(items, sizes):
        yield fn(item)
        counter.done(size)
        if progress is not None:
            progress(item)


class DiskPartitions:
    """The rows of each partition as raw column files in a scratch folder.

    Rows arrive from ``WRITERS`` writing tasks (slices of the input read side by side), each
    appending to files of its own; once a partition is rewritten (``replace``) it is one set
    of files holding only the ``kept`` columns."""

    def __init__(self, n_parts: int, columns: Mapping[str, np.dtype], folder: Path, kept: Sequence[str]) -> None:
        self.columns = dict(columns)
        self.kept = list(kept)
        self.folder = folder
        self.scratch = folder
        self.n_writers = WRITERS
        # What the partitions take on disk at most (pieces and their sorted copy), for messages.
        self.need_bytes = 0

    def writer(self, w: int) -> _DiskWriter:
        return _DiskWriter(self, w)

    def view(self, k: int) -> DiskPartitions:
        return self

    def slices(self, count: Callable[[], int]) -> tuple[int | None, int]:
        return count(), self.n_writers

    def _path(self, k: int, column: str, writer: int | None = None) -> Path:
        return self.folder / (f"{k}.{column}" if writer is None else f"{k}.w{writer}.{column}")

    def _write(self, path: Path, values: np.ndarray, mode: str) -> None:
        try:
            with open(path, mode) as sink:
                values.tofile(sink)
        except OSError as exc:
            raise no_room(self.folder.parent, exc, self.need_bytes) from None

    def append(self, k: int, arrays: Mapping[str, np.ndarray], writer: int = 0) -> None:
        for column, dtype in self.columns.items():
            self._write(self._path(k, column, writer), np.ascontiguousarray(arrays[column], dtype=dtype), "ab")

    def load(self, k: int) -> dict[str, np.ndarray]:
        if self._path(k, "code").exists():
            return {c: np.fromfile(self._path(k, c), dtype=self.columns[c]) for c in self.kept}
        out = {}
        for column, dtype in self.columns.items():
            pieces = [self._path(k, column, w) for w in range(self.n_writers)]
            found = [np.fromfile(p, dtype=dtype) for p in pieces if p.exists()]
            out[column] = np.concatenate(found) if len(found) > 1 else (found[0] if found else np.empty(0, dtype=dtype))
        return out

    def replace(self, k: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Keep ``arrays`` (sorted) as partition ``k``, only the ``kept`` columns."""
        for column in self.kept:
            self._write(self._path(k, column), np.ascontiguousarray(arrays[column], dtype=self.columns[column]), "wb")
        for column in self.columns:
            for w in range(self.n_writers):
                self._path(k, column, w).unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class _DiskWriter:
    """What writing task ``w`` appends to: its own files of each partition."""

    def __init__(self, store: DiskPartitions, w: int) -> None:
        self.store, self.w = store, w

    def append(self, k: int, arrays: Mapping[str, np.ndarray]) -> None:
        self.store.append(k, arrays, writer=self.w)


def no_room(folder: Path, exc: OSError, need_bytes: int = 0) -> OutputError:
    """The error for a scratch folder that cannot take the partitions."""
    need = f", about {need_bytes / 1e6:,.0f} MB for this sales table" if need_bytes else ""
    return OutputError(
        f"the scratch folder {str(folder)!r} has no room for the sales partitions "
        f"({exc.strerror or 'the disk is full'}{need}); point TMPDIR at a folder with more space, "
        "e.g. TMPDIR=/var/tmp pricelab ..."
    )
