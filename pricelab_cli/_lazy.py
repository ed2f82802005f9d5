"""Modules loaded on first use, so that `pricelab --help`, `--version` and `design` start in
a fraction of a second instead of paying for numpy, polars, pyarrow and scipy up front."""

from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    """Stands for the module ``name``, imported the first time one of its attributes is read."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self.__dict__["_lazy_target"]), attr)


def lazy(name: str) -> types.ModuleType:
    return LazyModule(name)
