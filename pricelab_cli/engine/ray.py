"""The Ray engine: a command's partition tasks run on a Ray cluster (``pricelab[ray]``).

The driver (the ``pricelab`` process) connects to the cluster by Ray's own rule, the
``RAY_ADDRESS`` environment variable: ``auto`` (or ``host:6379``) joins a cluster started on
this machine with ``ray start --head``, ``ray://host:10001`` one elsewhere through Ray
Client. The functions the tasks run are those the local engine runs in-process; only where
they run differs:

- ``map`` submits one task per item and gathers the results in item order;
- ``map_kept`` keeps the large parts of each task's result in the object store, owned by the
  driver, so the cluster rebuilds them by re-running their task when a node is lost;
- ``share`` puts a large read-only input in the object store once.

Failures a cluster can have (a worker or node lost after Ray's own retries, the cluster gone)
become :class:`EngineError` (exit 1) naming what was lost; errors in the data raised by a
task are re-raised as themselves, so their exit codes and messages are the local engine's.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np

from pricelab_cli.engine.base import MemoryPartitions, PartitionStore, TaskCounter, announce, prefetched, resolve
from pricelab_cli.errors import EngineError

START_HINT = (
    "start one with `ray start --head` and `export RAY_ADDRESS=auto` (or set RAY_ADDRESS=ray://HOST:10001 "
    "for a cluster elsewhere), or run with --engine local"
)
# How often a task is tried again after its worker or node is lost (Ray's own retry).
TASK_RETRIES = 3


# A cluster's writing tasks read this many input rows each (at least WRITERS of them).
SLICE_ROWS = 25_000_000
WRITERS = 8


def _import_ray():
    # This process is a driver; Ray's core would install a C++ handler for SIGTERM (and the
    # crash signals) in it that dumps a stack and aborts, and a run that is told to stop must
    # unwind and clean up instead. Read by Ray as it is imported.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise EngineError(
            "--engine ray needs Ray: install it with `pip install 'pricelab[ray]'`, or run with --engine local."
        ) from exc
    return ray


def _call(fn: Callable, item: Any, n_kept: int, keys: list[bytes], *values: Any):
    """The task body: ``fn(item)``, with the id of the node that ran it beside the small part.

    ``values`` are the objects behind the references inside ``fn`` and ``item`` (ids
    ``keys``), which Ray fetched before the task started: ``resolve`` answers from them."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    with prefetched(dict(zip(keys, values))):
        result = fn(item)
    if n_kept:
        return ((result[0], node), *result[1 : 1 + n_kept])
    return result, node


class RayEngine:
    """Run ``map`` tasks on the Ray cluster this process is connected to."""

    def __init__(
        self, ray_module, address: str, counter: TaskCounter | None = None, unwind_token: int | None = None
    ) -> None:
        self._ray = ray_module
        self._unwind_token = unwind_token
        self.address = address
        self.counter = counter or TaskCounter()
        self.nodes_used: set[str] = set()
        self.tasks_run = 0
        # SPREAD: a command's tasks are few and heavy (a partition each), so they go to every
        # node rather than queue on the first one that has a free CPU.
        self._task = ray_module.remote(max_retries=TASK_RETRIES, retry_exceptions=False, scheduling_strategy="SPREAD")(
            _call
        )

    @classmethod
    def connect(cls, counter: TaskCounter | None = None) -> RayEngine:
        address = os.environ.get("RAY_ADDRESS", "").strip()
        if not address:
            raise EngineError(f"--engine ray needs a running Ray cluster, and RAY_ADDRESS is not set: {START_HINT}.")
        _check_reachable(address)
        ray = _import_ray()
        token = None
        if not ray.is_initialized():
            from pricelab_cli import stopping

            # ray.init installs a SIGTERM handler of its own (it exits with code 15). So the
            # run's signals wait while it connects (the threads Ray starts keep them
            # blocked), the run's own handlers come back, and a signal that came meanwhile is
            # then delivered to them; one that another thread took while Ray's handler was
            # in place ends init with SystemExit(15), which is the same stop. Either way the
            # run unwinds and cleans up as on this machine. The address was checked just
            # above, so the wait is bounded by Ray's own connection timeout.
            # A stop (or any error) after ray.init has connected must still disconnect: a
            # connected core worker left to the interpreter's exit can crash it (SIGSEGV)
            # after the run has said it stopped. A stop another thread took reaches this one
            # only at its next check, possibly after this block: the run's unwinding then
            # disconnects (stopping.on_unwind).
            token = stopping.on_unwind(lambda: _disconnect(ray))
            try:
                with stopping.deferred():
                    try:
                        ray.init(
                            address=address,
                            logging_level="ERROR",
                            log_to_driver=False,
                        )
                        # Inside the try: Ray's handler may still run for a signal taken before
                        # the run's own are back, and its exit must be caught below.
                        stopping.rearm()
                    except SystemExit as exc:
                        stopping.rearm()
                        if exc.code == signal.SIGTERM:
                            raise stopping.Stopped(signal.SIGTERM) from None
                        raise
                    except Exception as exc:  # ConnectionError, RuntimeError, ValueError by Ray version
                        stopping.rearm()
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        raise EngineError(
                            f"--engine ray could not connect to the Ray cluster at RAY_ADDRESS={address!r} ({first}); "
                            f"{START_HINT}."
                        ) from None
            except BaseException:
                _disconnect(ray)
                raise
        return cls(ray, address, counter, token)

    @property
    def workers(self) -> int:
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def share(self, value: Any) -> Any:
        return self._ray.put(value)

    def map(
        self,
        fn: Callable,
        items: Sequence[Any],
        progress: Callable[[Any], None] | None = None,
        stage: str | None = None,
        weights: Callable[[Any], int] | None = None,
    ) -> list:
        """As :meth:`pricelab_cli.engine.local.LocalEngine.map`, each item a task of the cluster."""
        sizes = announce(self.counter, fn, items, stage, weights)
        refs = [self._submit(self._task, fn, item, 0) for item in items]
        results = self._gather(refs, items, sizes, progress)
        return [value for value, _ in results]

    def map_kept(
        self,
        fn: Callable,
        items: Sequence[Any],
        n_kept: int,
        progress: Callable[[Any], None] | None = None,
        stage: str | None = None,
        weights: Callable[[Any], int] | None = None,
    ) -> list[tuple[Any, list[Any]]]:
        sizes = announce(self.counter, fn, items, stage, weights)
        task = self._task.options(num_returns=1 + n_kept)
        calls = [self._submit(task, fn, item, n_kept) for item in items]
        if n_kept == 0:
            calls = [[ref] for ref in calls]
        smalls = self._gather([refs[0] for refs in calls], items, sizes, progress)
        return [(small, list(refs[1:])) for (small, _), refs in zip(smalls, calls)]

    def partition_store(
        self, n_parts: int, columns: Mapping[str, np.dtype], kept: Sequence[str], total_rows: int
    ) -> ObjectPartitions:
        """The cluster's object store keeps the partitions, whatever their number."""
        return ObjectPartitions(n_parts, columns, kept)

    def write_partitions(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any], store: PartitionStore, **map_options: Any
    ) -> list[Any]:
        """Run writing tasks; the rows each wrote to a partition stay in the object store."""
        assert isinstance(store, ObjectPartitions), "a Ray run keeps its partitions in the object store"
        out = self.map_kept(functools.partial(_written_pieces, fn), tasks, store.n_parts, **map_options)
        for _, pieces in out:
            store.add_pieces(pieces)
        return [small for small, _ in out]

    def rewrite_partitions(
        self, fn: Callable[[Any], tuple], tasks: Sequence[Any], store: PartitionStore, **map_options: Any
    ) -> list[Any]:
        """Run ``fn(task) -> (small, rows)`` per partition; the rows, kept columns only,
        become the partition's one object."""
        assert isinstance(store, ObjectPartitions), "a Ray run keeps its partitions in the object store"
        out = self.map_kept(functools.partial(_kept_rows, fn), tasks, 1, **map_options)
        for task, (_, (rows,)) in zip(tasks, out):
            store.set_sorted(task.k, rows)
        return [small for small, _ in out]

    def _submit(self, task: Any, fn: Callable, item: Any, n_kept: int) -> Any:
        """Submit ``fn(item)`` with the object references inside ``fn`` and ``item`` also
        given as direct arguments. Ray then has their objects on the task's node before the
        task takes a CPU, instead of the task waiting for them (``ray.get``) while holding
        one: when a node is lost, the tasks that rebuild its objects need that CPU, and a
        node with every CPU held by a waiting task would wait for ever (Ray's "nested
        ray.get" anti-pattern)."""
        refs = _references_in((fn, item), self._ray.ObjectRef)
        return task.remote(fn, item, n_kept, [ref.binary() for ref in refs], *refs)

    def _gather(self, refs: list, items: Sequence[Any], sizes: list[int], progress) -> list:
        """Results in item order; progress as tasks finish, in whatever order they do."""
        ray = self._ray
        position = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(refs)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    # Fetched as it ends: a failed task surfaces at once.
                    results[position[ref]] = ray.get(ref)
                    self.counter.done(sizes[position[ref]])
                    if progress is not None:
                        progress(items[position[ref]])
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if hasattr(exc, "cause") else None
            if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
                raise cause from None
            raise EngineError(f"a task failed on the Ray cluster: {_first_line(exc)}") from None
        except ray.exceptions.RayError as exc:
            raise EngineError(
                f"the Ray cluster at RAY_ADDRESS={self.address!r} lost work it could not redo "
                f"({type(exc).__name__}: {_first_line(exc)}); nothing was written. Check the cluster "
                "(`ray status`) and run the command again."
            ) from None
        self.tasks_run += len(results)
        self.nodes_used.update(node for _, node in results)
        return results

    def describe(self) -> str:
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        cpus = self.workers
        return f"ray at {self.address} ({len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus} CPU{'s' if cpus != 1 else ''})"

    def summary(self) -> str:
        """Where this run's tasks ran, for the run's report."""
        nodes = len(self.nodes_used)
        return f"{self.describe()}; {self.tasks_run} tasks ran on {nodes} node{'s' if nodes != 1 else ''}"

    def close(self) -> None:
        """Disconnect from the cluster. Ray's C++ core logs what it could not finish while
        shutting down (a task whose error it could no longer report, after a stop) straight
        to this process's stderr; the run says what became of it in its own words, so those
        lines go to /dev/null for the length of the shutdown."""
        from pricelab_cli import stopping

        _disconnect(self._ray)
        stopping.forget(self._unwind_token)


def _disconnect(ray: Any) -> None:
    """Shut down this process's connection to the cluster, if it has one, with the core's
    own shutdown lines sent to /dev/null (see ``RayEngine.close``)."""
    if not ray.is_initialized():
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        ray.shutdown()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _written_pieces(fn: Callable[[Any], Any], task: Any) -> tuple:
    """A writing task on the cluster: ``fn(task)`` fills ``task.store`` (in memory), whose
    rows of each partition are returned after the small result, to stay in the object store.
    A small result that is an error comes back alone (no rows)."""
    result = fn(task)
    n_parts = task.store.n_parts
    if isinstance(result, BaseException):
        return (result, *([None] * n_parts))
    return (result, *(task.store.take(k) for k in range(n_parts)))


def _kept_rows(fn: Callable[[Any], tuple], task: Any) -> tuple:
    small, rows = fn(task)
    return small, {c: rows[c] for c in task.store.kept}


class ObjectPartitions:
    """The partitions in the cluster's object store: the pieces each writing task sent to a
    partition, until the partition is rewritten into one object. A task gets a ``view``
    holding its own partition's handles only."""

    scratch = None

    def __init__(self, n_parts: int, columns: Mapping[str, np.dtype], kept: Sequence[str]) -> None:
        self.columns = dict(columns)
        self.kept = list(kept)
        self.n_parts = n_parts
        self.pieces: list[list] = [[] for _ in range(n_parts)]
        self.sorted: list = [None] * n_parts

    def writer(self, w: int) -> MemoryPartitions:
        return MemoryPartitions(self.n_parts, self.columns)

    def slices(self, count: Callable[[], int]) -> tuple[int | None, int]:
        total = count()
        return total, max(WRITERS, math.ceil(total / SLICE_ROWS))

    def add_pieces(self, per_partition: Sequence) -> None:
        for k, piece in enumerate(per_partition):
            self.pieces[k].append(piece)

    def set_sorted(self, k: int, handle) -> None:
        """Partition ``k`` is now the one sorted object ``handle``; its pieces are let go."""
        self.sorted[k] = handle
        self.pieces[k] = []

    def view(self, k: int) -> ObjectPartitions:
        view = ObjectPartitions(self.n_parts, self.columns, self.kept)
        view.pieces[k], view.sorted[k] = list(self.pieces[k]), self.sorted[k]
        return view

    def load(self, k: int) -> dict[str, np.ndarray]:
        if self.sorted[k] is not None:
            return resolve(self.sorted[k])
        found = [piece for piece in (resolve(p) for p in self.pieces[k]) if piece is not None]
        return {
            c: np.concatenate([piece[c] for piece in found]) if found else np.empty(0, dtype=dtype)
            for c, dtype in self.columns.items()
        }

    def close(self) -> None:
        pass


def _references_in(value: Any, ref_type: type) -> list:
    """The distinct object references anywhere inside ``value``, in the order met, found by
    pickling it as Ray will (arrays' buffers are skipped, not copied)."""
    import io

    from ray import cloudpickle

    found: dict[bytes, Any] = {}

    class _Finder(cloudpickle.CloudPickler):
        def persistent_id(self, obj: Any) -> Any:
            if not isinstance(obj, ref_type):
                return None
            key: bytes = cast(Any, obj).binary()
            found.setdefault(key, obj)
            return key

    _Finder(io.BytesIO(), protocol=5, buffer_callback=lambda buffer: False).dump(value)
    return list(found.values())


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) nothing answers on, at once: Ray itself
    keeps trying for minutes. ``auto`` and other forms are left to Ray."""
    import socket

    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or "/" in target:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise EngineError(
            f"--engine ray could not connect to the Ray cluster at RAY_ADDRESS={address!r} "
            f"({exc.strerror or type(exc).__name__}); {START_HINT}."
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
