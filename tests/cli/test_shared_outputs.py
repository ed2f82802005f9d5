"""Behaviour every command shares for its outputs, tested once over every command (the
csvkit way): no output may overwrite an input or another output, at most one output and
one input use the standard streams, and a refused run leaves every file as it was."""

from __future__ import annotations

import datetime as dt
import hashlib
import pathlib

import pytest

from pricelab_cli import io
from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2026, 3, 2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small valid inputs for every command."""
    d = tmp_path_factory.mktemp("shared")
    products, edges = simulate_catalog(40, 4, 5, seed=2)
    design = make_design("random-days", salt="shared", start=START, end=START + dt.timedelta(days=13))
    assignment = assign(design, products)
    sim = simulate_sales(products, assignment=assignment, edges=edges, history_days=35, seed=2)
    history = simulate_sales(products, edges=edges, end=START - dt.timedelta(days=1), history_days=70, seed=3).sales
    products.write_csv(d / "products.csv")
    edges.write_csv(d / "edges.csv")
    assignment.write_parquet(d / "assignment.parquet")
    sim.sales.write_parquet(d / "sales.parquet")
    history.write_parquet(d / "history.parquet")
    io.write_json(design.to_dict(), str(d / "design.json"))
    return d


# Each command with its inputs, its primary output flag and a secondary output flag.
COMMANDS = {
    "design": (["design", "random-days", "--start", "2026-03-02", "--end", "2026-03-15", "--seed", "1"],
               "-o", "--plot", "json"),
    "assign": (["assign", "--design", "{d}/design.json", "--products", "{d}/products.csv"], "-o", None, "csv"),
    "simulate catalog": (["simulate", "catalog", "--n-products", "20", "--n-groups", "2"], "-o", "--edges-out", "csv"),
    "simulate sales": (["simulate", "sales", "--products", "{d}/products.csv", "--assignment", "{d}/assignment.parquet",
                        "--history-days", "20"], "-o", "--product-truth-out", "csv"),
    "hpte": (["hpte", "--sales", "{d}/sales.parquet", "--assignment", "{d}/assignment.parquet", "--bootstrap", "20"],
             "-o", "--cate-out", "csv"),
    "spillover-graph": (["spillover-graph", "--sales", "{d}/history.parquet", "--products", "{d}/products.csv",
                         "--group-col", "category"], "-o", "--all-pairs", "csv"),
    "cluster": (["cluster", "--edges", "{d}/edges.csv", "--products", "{d}/products.csv"], "-o", None, "csv"),
    "ipw": (["ipw", "--sales", "{d}/sales.parquet", "--assignment", "{d}/assignment.parquet", "--edges",
             "{d}/edges.csv", "--design", "{d}/design.json", "--products", "{d}/products.csv", "--bootstrap", "20"],
            "-o", None, "csv"),
    "power": (["power", "--history", "{d}/history.parquet", "--products", "{d}/products.csv", "--design",
               "{d}/design.json", "--reps", "2", "--jobs", "1"], "-o", "--repetitions-out", "csv"),
}
WITH_INPUTS = [name for name, (args, *_) in COMMANDS.items() if any("{d}" in a for a in args)]
WITH_SECONDARY = [name for name, (_, _, secondary, _) in COMMANDS.items() if secondary]


def argv(name: str, d: pathlib.Path) -> list[str]:
    return [a.format(d=d) for a in COMMANDS[name][0]]


def digest(folder: pathlib.Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def first_input(name: str, d: pathlib.Path) -> tuple[str, str]:
    args = argv(name, d)
    for flag, value in zip(args, args[1:]):
        if flag.startswith("--") and value.startswith(str(d)):
            return flag, value
    raise AssertionError(name)


@pytest.mark.parametrize("name", WITH_INPUTS)
def test_an_output_on_an_input_is_refused_and_the_input_kept(run_cli, files, name):
    flag, path = first_input(name, files)
    before = digest(files)
    result = run_cli(*argv(name, files), COMMANDS[name][1], path)
    assert result.code == 2, result.stderr
    assert f"is also the input of {flag}" in result.stderr and "Traceback" not in result.stderr
    assert digest(files) == before


@pytest.mark.parametrize("name", WITH_SECONDARY)
def test_two_outputs_on_one_file_are_refused_and_the_existing_file_kept(run_cli, files, tmp_path, name):
    _, primary, secondary, kind = COMMANDS[name]
    target = tmp_path / f"out.{'png' if secondary == '--plot' else kind}"
    target.write_bytes(b"precious\n")
    result = run_cli(*argv(name, files), primary, target, secondary, target)
    assert result.code == 2, result.stderr
    assert f"{primary} and {secondary} name the same file" in result.stderr
    assert target.read_bytes() == b"precious\n"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize("name", [n for n in WITH_SECONDARY if COMMANDS[n][2] != "--plot"])
def test_two_outputs_on_stdout_are_refused(run_cli, files, name):
    _, primary, secondary, _ = COMMANDS[name]
    result = run_cli(*argv(name, files), primary, "-", secondary, "-")
    assert result.code == 2 and result.stdout == b""
    assert "all write to standard output" in result.stderr


@pytest.mark.parametrize("name", WITH_SECONDARY)
def test_a_bad_secondary_output_refuses_the_run_before_the_primary_is_written(run_cli, files, tmp_path, name):
    _, primary, secondary, kind = COMMANDS[name]
    existing = tmp_path / f"primary.{kind}"
    existing.write_bytes(b"yesterday's result\n")
    result = run_cli(*argv(name, files), primary, existing, secondary, tmp_path / "missing" / "x.csv")
    assert result.code == 2, result.stderr
    assert secondary in result.stderr and "does not exist" in result.stderr
    assert existing.read_bytes() == b"yesterday's result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing.name]


def test_two_inputs_on_stdin_are_a_usage_error(run_cli, files):
    result = run_cli("hpte", "--sales", "-", "--assignment", "-", "-o", "-", stdin=b"product_id,date,units\n")
    assert result.code == 2 and "only one input can come from a stream" in result.stderr


def test_a_failed_run_commits_none_of_its_outputs(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("old a\n")
    import polars as pl

    with pytest.raises(RuntimeError):
        with io.output_transaction():
            io.write_table(pl.DataFrame({"x": [1]}), str(first))
            io.write_table(pl.DataFrame({"x": [2]}), str(second))
            raise RuntimeError("the run fails after writing")
    assert first.read_text() == "old a\n" and not second.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    with io.output_transaction():
        io.write_table(pl.DataFrame({"x": [1]}), str(first))
        assert first.read_text() == "old a\n"  # nothing lands before the commit
    assert first.read_text().startswith("x\n1")
