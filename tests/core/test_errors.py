"""Errors carry what they concern (the parameters and the table), so that a caller acts on
them without reading the text, and the command line names its flags and files from them."""

from __future__ import annotations

import pickle

import polars as pl
import pytest

from pricelab_cli.cli.run import name_the_file
from pricelab_cli.errors import DataError, MissingColumnError, UsageError
from pricelab_cli.tables import check_columns


def test_a_table_error_carries_its_role():
    with pytest.raises(MissingColumnError) as caught:
        check_columns(pl.DataFrame({"product_id": [1]}), ["product_id", "units"], "sales")
    assert caught.value.table == "sales"
    assert caught.value.parameters == ()


def test_what_is_given_wins_over_what_the_text_says():
    error = DataError("`a` and `b` disagree", parameters=["b"], table="edges")
    assert (error.parameter, error.parameters, error.table) == ("b", ("b",), "edges")
    assert DataError("nothing named here").parameter is None


def test_errors_keep_what_they_concern_across_processes():
    again = pickle.loads(pickle.dumps(UsageError("edges: `min_weight` must be positive")))
    assert (again.parameter, again.table, type(again)) == ("min_weight", "edges", UsageError)


def test_the_command_line_shows_flags_and_the_file_given():
    error = UsageError("edges: `n_bootstrap` and `fill_zeros=False` clash", table="edges")
    shown = name_the_file(error, ["ipw", "--edges", "my_edges.csv", "--bootstrap", "10"])
    assert shown == "my_edges.csv: --bootstrap and --no-fill-zeros clash"
    # A table the command line was not given keeps its role.
    assert name_the_file(error, ["ipw"]) == "edges: --bootstrap and --no-fill-zeros clash"
