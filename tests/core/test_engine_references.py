"""A cluster task gets the objects behind the references inside its function and item as
direct arguments (Ray fetches them before the task takes a CPU), and ``resolve`` in the task
answers from them. No cluster is needed: references are made from ids."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from pricelab_cli.engine.base import prefetched, resolve

ray = pytest.importorskip("ray")
from pricelab_cli.engine.ray import _references_in  # noqa: E402


@dataclasses.dataclass
class _Task:
    parts: list
    rows: np.ndarray
    nested: dict


def _ref(byte: int):
    return ray.ObjectRef(bytes([byte]) * 28)


def test_every_reference_inside_a_function_and_its_item_is_found_once_in_order():
    a, b, c = _ref(1), _ref(2), _ref(3)
    fn = functools.partial(np.add, a)
    item = _Task([b, a], np.zeros(1_000_000), {"deep": (None, [c])})
    found = _references_in((fn, item), ray.ObjectRef)
    assert [ref.binary() for ref in found] == [a.binary(), b.binary(), c.binary()]
    assert _references_in((np.add, _Task([], np.zeros(3), {})), ray.ObjectRef) == []


def test_resolve_answers_a_prefetched_reference_and_forgets_it_after_the_task():
    a = _ref(4)
    with prefetched({a.binary(): "value"}):
        assert resolve(a) == "value"
        assert resolve(7) == 7
    from pricelab_cli.engine import base

    assert base._PREFETCHED == {}
