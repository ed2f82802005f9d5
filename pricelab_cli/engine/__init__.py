"""Where the per-partition work of a command runs.

A command's work is split into plain functions over one partition of products (``map``) and
a reduction of their small results in the calling process (the driver); an engine only
decides where the ``map`` runs. :mod:`.base` holds the protocol every engine follows,
:mod:`.local` runs the tasks on this machine, and :mod:`.ray` on a Ray cluster (the
``pricelab[ray]`` extra, imported only when chosen). Nothing outside this package knows
which engine it runs on.
"""

from __future__ import annotations

import os

from pricelab_cli.engine.base import Engine, PartitionStore, TaskCounter, announce, release_freed_memory, resolve
from pricelab_cli.engine.local import LocalEngine
from pricelab_cli.errors import UsageError

__all__ = [
    "ENGINES",
    "ENGINE_ENV",
    "Engine",
    "LocalEngine",
    "PartitionStore",
    "TaskCounter",
    "announce",
    "default_engine",
    "engine_name",
    "make_engine",
    "release_freed_memory",
    "resolve",
]

ENGINES = ("local", "ray")
ENGINE_ENV = "PRICELAB_ENGINE"


def default_engine(engine: Engine | None, n_jobs: int = 1) -> Engine:
    """``engine`` when a caller gave one, else this machine with ``n_jobs`` processes (1: the
    calling process itself; 0: every core). Core functions run in-process unless told."""
    return engine if engine is not None else LocalEngine(n_jobs)


def engine_name(name: str | None) -> str:
    """``--engine`` if given, else ``PRICELAB_ENGINE``, else ``local``; checked."""
    chosen = name if name is not None else os.environ.get(ENGINE_ENV) or "local"
    chosen = chosen.strip().lower()
    if chosen not in ENGINES:
        source = "--engine" if name is not None else ENGINE_ENV
        raise UsageError(f"{source} {chosen!r} is not one of: {', '.join(ENGINES)}.")
    return chosen


def make_engine(name: str | None, n_jobs: int = 0, counter: TaskCounter | None = None) -> Engine:
    """The engine a command runs on: ``local`` (``n_jobs`` processes, 0 = every core) or
    ``ray`` (the cluster at ``RAY_ADDRESS``; see :mod:`pricelab_cli.engine.ray`)."""
    if engine_name(name) == "ray":
        from pricelab_cli.engine.ray import RayEngine

        return RayEngine.connect(counter=counter)
    return LocalEngine(n_jobs, counter)
