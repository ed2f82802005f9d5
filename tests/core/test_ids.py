"""The one id -> position lookup agrees with a plain dictionary, whatever the ids look like."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pricelab_cli.ids import IdLookup, row_positions


def _expected(values: list, ids: list) -> list[int]:
    where = {v: i for i, v in enumerate(ids)}
    return [where.get(v, -1) if v is not None else -1 for v in values]


# Narrow spans take the table, wide ones the binary search; the lookup must not care.
integer_ids = st.one_of(
    st.lists(st.integers(-50, 200), unique=True, min_size=1, max_size=60),
    st.lists(st.integers(-(2**40), 2**40), unique=True, min_size=1, max_size=60),
)


@settings(max_examples=150, deadline=None)
@given(ids=integer_ids, extra=st.lists(st.integers(-(2**41), 2**41), max_size=20), data=st.data())
def test_integer_ids_are_found_where_a_dictionary_finds_them(ids, extra, data):
    pool = ids + extra
    values = data.draw(st.lists(st.one_of(st.sampled_from(pool), st.none()), max_size=80))
    got = IdLookup.of(pl.Series(ids, dtype=pl.Int64)).positions(pl.Series(values, dtype=pl.Int64))
    assert got.tolist() == _expected(values, ids)


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.text(min_size=1, max_size=4), unique=True, min_size=1, max_size=40), data=st.data())
def test_text_ids_are_found_where_a_dictionary_finds_them(ids, data):
    values = data.draw(st.lists(st.one_of(st.sampled_from(ids + ["?absent?"]), st.none()), max_size=60))
    got = row_positions(pl.Series(values, dtype=pl.String), pl.Series(ids, dtype=pl.String))
    assert got.tolist() == _expected(values, ids)


def test_integers_of_other_widths_match_as_numbers_and_text_as_text():
    ids = pl.Series([42, 7, 1000], dtype=pl.Int64)
    assert row_positions(pl.Series([7, 42, 5], dtype=pl.Int32), ids).tolist() == [1, 0, -1]
    # Text never equals a number, and "042" is not 42.
    assert row_positions(pl.Series(["42", "042"]), ids).tolist() == [0, -1]


def test_a_large_table_is_read_a_slice_at_a_time_with_the_same_answer(monkeypatch):
    import pricelab_cli.ids as ids_module

    monkeypatch.setattr(ids_module, "CHUNK_ROWS", 7)
    ids = pl.Series(np.arange(100, 0, -1), dtype=pl.Int64)
    values = pl.Series([5, 100, 1, 200, 50] * 5, dtype=pl.Int64)
    got = IdLookup.of(ids).positions(values, np.int32)
    assert got.dtype == np.int32 and got.tolist() == _expected(values.to_list(), ids.to_list())
