"""Behaviour every command shares for its outputs, tested once over every command (the
csvkit way): no output may overwrite an input or another output, at most one output and
one input use the standard streams, and a refused run leaves every file as it was."""

from __future__ import annotations

import datetime as dt
import hashlib
import pathlib
import warnings

import pytest

from pricelab_cli import io
from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.hpte import estimate_hpte
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        effects = estimate_hpte(sim.sales, assignment, n_bootstrap=20, n_estimators=5, n_jobs=1, effect_paths=False)
    effects.effects.write_csv(d / "effects.csv")
    return d


# Each command with its inputs, its primary output flag and a secondary output flag.
COMMANDS = {
    "design": (
        ["design", "random-days", "--start", "2026-03-02", "--end", "2026-03-15", "--seed", "1"],
        "-o",
        "--plot",
        "json",
    ),
    "assign": (["assign", "--design", "{d}/design.json", "--products", "{d}/products.csv"], "-o", None, "csv"),
    "simulate catalog": (["simulate", "catalog", "--n-products", "20", "--n-groups", "2"], "-o", "--edges-out", "csv"),
    "simulate sales": (
        [
            "simulate",
            "sales",
            "--products",
            "{d}/products.csv",
            "--assignment",
            "{d}/assignment.parquet",
            "--history-days",
            "20",
        ],
        "-o",
        "--product-truth-out",
        "csv",
    ),
    "hpte": (
        ["hpte", "--sales", "{d}/sales.parquet", "--assignment", "{d}/assignment.parquet", "--bootstrap", "20"],
        "-o",
        "--cate-out",
        "csv",
    ),
    "spillover-graph": (
        [
            "spillover-graph",
            "--sales",
            "{d}/history.parquet",
            "--products",
            "{d}/products.csv",
            "--group-col",
            "category",
        ],
        "-o",
        "--all-pairs",
        "csv",
    ),
    "cluster": (["cluster", "--edges", "{d}/edges.csv", "--products", "{d}/products.csv"], "-o", None, "csv"),
    "ipw": (
        [
            "ipw",
            "--sales",
            "{d}/sales.parquet",
            "--assignment",
            "{d}/assignment.parquet",
            "--edges",
            "{d}/edges.csv",
            "--design",
            "{d}/design.json",
            "--products",
            "{d}/products.csv",
            "--bootstrap",
            "20",
        ],
        "-o",
        None,
        "csv",
    ),
    "power": (
        [
            "power",
            "--history",
            "{d}/history.parquet",
            "--products",
            "{d}/products.csv",
            "--design",
            "{d}/design.json",
            "--reps",
            "2",
            "--jobs",
            "1",
        ],
        "-o",
        "--repetitions-out",
        "csv",
    ),
    "report": (
        [
            "report",
            "--design",
            "{d}/design.json",
            "--assignment",
            "{d}/assignment.parquet",
            "--sales",
            "{d}/sales.parquet",
            "--effects",
            "{d}/effects.csv",
            "--products",
            "{d}/products.csv",
        ],
        "-o",
        None,
        "html",
    ),
}
WITH_INPUTS = [name for name, (args, *_) in COMMANDS.items() if any("{d}" in a for a in args)]
WITH_SECONDARY = [name for name, (_, _, secondary, _) in COMMANDS.items() if secondary]


def result_of(path: pathlib.Path) -> bytes:
    """An output's bytes; a report's without its provenance section, which names the input
    files (and so differs when an input is given another way)."""
    data = path.read_bytes()
    return data.split(b'<h2 id="provenance">')[0] if path.suffix == ".html" else data


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
    assert "both write to standard output" in result.stderr


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

    with pytest.raises(RuntimeError), io.output_transaction():
        io.write_table(pl.DataFrame({"x": [1]}), str(first))
        io.write_table(pl.DataFrame({"x": [2]}), str(second))
        raise RuntimeError("the run fails after writing")
    assert first.read_text() == "old a\n" and not second.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    with io.output_transaction():
        io.write_table(pl.DataFrame({"x": [1]}), str(first))
        assert first.read_text() == "old a\n"  # nothing lands before the commit
    assert first.read_text().startswith("x\n1")


# --------------------------------------------------------------------------- bad input
# Every case spoils one input file (a copy; the original is never touched) and runs every
# command that reads that input: same exit code, a message naming the file (and the column),
# no traceback, every input and a pre-existing output byte-identical afterwards.

import json  # noqa: E402

import polars as pl  # noqa: E402


def csv_text(transform):
    def spoil(path: pathlib.Path, target: pathlib.Path) -> None:
        target.write_text(transform(path.read_text()))

    return spoil


def table(transform):
    def spoil(path: pathlib.Path, target: pathlib.Path) -> None:
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
        frame = transform(frame)
        frame.write_parquet(target) if target.suffix == ".parquet" else frame.write_csv(target)

    return spoil


def parquet_bytes(path: pathlib.Path, target: pathlib.Path) -> None:
    pl.read_csv(path).write_parquet(target)  # Parquet content under the .csv name


def design_field(field, value):
    def spoil(path: pathlib.Path, target: pathlib.Path) -> None:
        spec = json.loads(path.read_text())
        spec[field] = value
        target.write_text(json.dumps(spec))

    return spoil


def first_column_blank(text: str) -> str:
    header, first, *rest = text.splitlines()
    return "\n".join([header, "," + first.split(",", 1)[1], *rest]) + "\n"


def late_in_the_day(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("date").cast(pl.Datetime("us")) + pl.duration(hours=10))


def in_a_time_zone(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("date").cast(pl.Datetime("us")).dt.replace_time_zone("Europe/Paris"))


CSV_INPUTS = ("--products", "--edges")
DATED_INPUTS = ("--sales", "--assignment", "--history")
# case -> (inputs it applies to, how the copy is spoiled, exit code, message fragments)
BAD_INPUT = {
    "repeated header": (
        CSV_INPUTS,
        csv_text(
            lambda t: t.replace(",", ",product_id,", 1) if t.startswith("product_id") else t.replace(",", ",src,", 1)
        ),
        65,
        ["more than once"],
    ),
    "semicolons": (CSV_INPUTS, csv_text(lambda t: t.replace(",", ";")), 65, ["separated by semicolons"]),
    "Parquet named .csv": (CSV_INPUTS, parquet_bytes, 66, ["this is a Parquet file"]),
    "missing identifier": (CSV_INPUTS, csv_text(first_column_blank), 65, ["is empty on row 1"]),
    "time of day": (DATED_INPUTS, table(late_in_the_day), 65, ["column 'date'", "time of day"]),
    "time zone": (DATED_INPUTS, table(in_a_time_zone), 65, ["column 'date'", "time zone"]),
    "infinite outcome": (
        ("--sales", "--history"),
        table(
            lambda f: f.with_columns(
                pl.when(pl.int_range(pl.len()) == 0)
                .then(float("inf"))
                .otherwise(pl.col("units").cast(pl.Float64))
                .alias("units")
            )
        ),
        65,
        ["column 'units'", "inf on row 1"],
    ),
    "no blackout column": (("--assignment",), table(lambda f: f.drop("blackout")), 65, ["missing column 'blackout'"]),
    "no period column": (("--assignment",), table(lambda f: f.drop("period")), 65, ["missing column 'period'"]),
    "fractional block_days": (
        ("--design",),
        design_field("block_days", 1.5),
        65,
        ["block_days must be a whole number"],
    ),
    "block_days as text": (("--design",), design_field("block_days", "1"), 65, ["block_days must be a whole number"]),
    "start as a number": (("--design",), design_field("start", 20260302), 65, ["start must be a date"]),
}
BAD_CASES = [
    (case, name, flag)
    for case, (flags, *_rest) in BAD_INPUT.items()
    for name in COMMANDS
    for flag in flags
    if flag in argv(name, pathlib.Path("{d}"))
]


@pytest.mark.parametrize(("case", "name", "flag"), BAD_CASES, ids=[f"{c}-{n}-{f}" for c, n, f in BAD_CASES])
def test_bad_input_is_refused_naming_file_and_column_with_nothing_touched(run_cli, files, tmp_path, case, name, flag):
    _, spoil, code, fragments = BAD_INPUT[case]
    args = argv(name, files)
    original = pathlib.Path(args[args.index(flag) + 1])
    bad = tmp_path / f"bad{''.join(original.suffixes)}"
    spoil(original, bad)
    args[args.index(flag) + 1] = str(bad)
    primary, kind = COMMANDS[name][1], COMMANDS[name][3]
    existing = tmp_path / f"result.{kind}"
    existing.write_bytes(b"yesterday's result\n")
    inputs_before, spoiled_before = digest(files), bad.read_bytes()
    result = run_cli(*args, primary, existing)
    assert result.code == code, result.stderr
    assert str(bad) in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert digest(files) == inputs_before and bad.read_bytes() == spoiled_before
    assert existing.read_bytes() == b"yesterday's result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([bad.name, existing.name])


@pytest.mark.parametrize("name", [n for n in COMMANDS if "--assignment" in argv(n, pathlib.Path("{d}"))])
def test_treated_written_as_floats_is_read_as_zero_one(run_cli, files, tmp_path, name):
    """0.0 / 1.0, as every pandas export writes them, give the same result as 0 / 1."""
    args = argv(name, files)
    floats = tmp_path / "assignment_floats.parquet"
    pl.read_parquet(files / "assignment.parquet").with_columns(pl.col("treated").cast(pl.Float64)).write_parquet(floats)
    kind = COMMANDS[name][3]
    plain = run_cli(*args, COMMANDS[name][1], tmp_path / f"plain.{kind}", "--seed", "4", "-q")
    args[args.index("--assignment") + 1] = str(floats)
    as_floats = run_cli(*args, COMMANDS[name][1], tmp_path / f"floats.{kind}", "--seed", "4", "-q")
    assert plain.code == as_floats.code == 0, as_floats.stderr
    assert result_of(tmp_path / f"plain.{kind}") == result_of(tmp_path / f"floats.{kind}")


@pytest.mark.parametrize("name", ["hpte", "ipw", "power"])
@pytest.mark.parametrize("draws", ["1", "19", "2000000"])
def test_a_bootstrap_that_cannot_give_an_interval_is_a_usage_error(run_cli, files, tmp_path, name, draws):
    result = run_cli(*argv(name, files), "--bootstrap", draws, "-o", tmp_path / "x.csv")
    assert result.code == 2 and f"--bootstrap {draws}" in result.stderr and "at least 20" in result.stderr
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    ("name", "flag", "spoil", "fragment"),
    [
        ("ipw", "--edges", lambda f: f.with_columns(pl.col("src").cast(pl.String) + "x"), "not in the products table"),
        (
            "power",
            "--history",
            lambda f: f.filter(pl.col("date") >= pl.col("date").max() - pl.duration(days=20)),
            "cannot hold a 14-day experiment window",
        ),
        ("cluster", "--edges", lambda f: f.with_columns(dst=pl.col("src")), "join a product to itself"),
    ],
)
def test_messages_from_the_core_name_the_file_the_user_gave(run_cli, files, tmp_path, name, flag, spoil, fragment):
    args = argv(name, files)
    original = pathlib.Path(args[args.index(flag) + 1])
    bad = tmp_path / f"my_table{''.join(original.suffixes)}"
    table(spoil)(original, bad)
    args[args.index(flag) + 1] = str(bad)
    result = run_cli(*args, "-o", tmp_path / "out.csv")
    assert f"{bad}: " in result.stderr and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_one_armed_assignments_and_a_capped_outlier_c_are_said_loudly(run_cli, files, tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("product_id\nA\n")
    design = run_cli(
        "design",
        "time-bound",
        "--start",
        "2026-03-02",
        "--end",
        "2026-03-05",
        "--salt",
        "x",
        "--treat-share",
        "0.01",
        "-o",
        tmp_path / "d.json",
        "-q",
    )
    assert design.code == 0
    result = run_cli("assign", "--design", tmp_path / "d.json", "--products", one, "-o", tmp_path / "a.csv")
    assert result.code == 0 and "every analysed product-day of this assignment is control" in result.stderr
    capped = run_cli(*argv("hpte", files), "--outlier-rule", "quantile", "--outlier-c", "30", "-o", tmp_path / "e.csv")
    assert capped.code == 0 and "caps it at 10%" in capped.stderr


def test_null_cluster_ids_and_numbers_too_large_to_sum_are_refused(run_cli, files, tmp_path):
    frame = pl.read_parquet(files / "assignment.parquet")
    nulls = tmp_path / "clustered.parquet"
    frame.with_columns(cluster_id=pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.lit(1))).write_parquet(
        nulls
    )
    result = run_cli("hpte", "--sales", files / "sales.parquet", "--assignment", nulls, "-o", tmp_path / "e.csv")
    assert result.code == 65 and f"{nulls}: column 'cluster_id' is empty on row 4" in result.stderr
    huge = tmp_path / "huge.parquet"
    pl.read_parquet(files / "sales.parquet").with_columns(pl.col("price") * 1e120).write_parquet(huge)
    result = run_cli("hpte", "--sales", huge, "--assignment", files / "assignment.parquet", "-o", tmp_path / "e.csv")
    assert result.code == 65 and "column 'price'" in result.stderr and "below 1e+100" in result.stderr
    assert not (tmp_path / "e.csv").exists()


def test_a_read_only_output_folder_is_refused_before_any_work(run_cli, files, tmp_path):
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("no permission to mount a read-only folder here")
    try:
        result = run_cli(*argv("hpte", files), "-o", folder / "e.csv")
        assert result.code == 2 and "Read-only file system" in result.stderr and "-o" in result.stderr
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_weekly_panel_is_summarised_per_period(run_cli, tmp_path):
    data = pathlib.Path(__file__).parent.parent / "data"
    result = run_cli(
        "hpte",
        "--sales",
        data / "organ_donation_sales.csv",
        "--assignment",
        data / "organ_donation_assignment.csv",
        "--outcome",
        "units",
        "--method",
        "did",
        "--bootstrap",
        "50",
        "-o",
        tmp_path / "did.csv",
    )
    assert result.code == 0, result.stderr
    assert "per product per period" in result.stderr and "per product per day" not in result.stderr


def test_assigned_products_without_experiment_sales_are_named(run_cli, files, tmp_path):
    """With --no-fill-zeros a product whose experiment rows are absent is named and left out;
    by default its absent days are zero sales (it stays in the estimate) and a note says so."""
    sales = pl.read_parquet(files / "sales.parquet")
    first = sales["product_id"][0]
    cut = tmp_path / "cut.parquet"
    sales.filter(~((pl.col("product_id") == first) & (pl.col("date") >= START))).write_parquet(cut)
    args = ("hpte", "--sales", cut, "--assignment", files / "assignment.parquet", "--bootstrap", "20")
    result = run_cli(*args, "--no-fill-zeros", "-o", tmp_path / "e.csv")
    assert result.code == 0, result.stderr
    assert "1 assigned product(s) have no sales on their analysed experiment dates" in result.stderr
    assert repr(first) in result.stderr
    filled = run_cli(*args, "-o", tmp_path / "f.csv")
    assert filled.code == 0, filled.stderr
    assert "have no sales on their analysed experiment dates" not in filled.stderr
    assert "14 of 1,960 analysed product-dates (0.7%) have no row and are read as zero sales" in filled.stderr
    kept = pl.read_csv(tmp_path / "f.csv")["n_products"].item()
    assert kept == pl.read_csv(tmp_path / "e.csv")["n_products"].item() + 1


# --------------------------------------------------------------------------- datasets
# Every table flag of every command also takes a folder of Parquet files: the same table
# split over two files in two sub-folders gives the same output bytes as the single file,
# and files that disagree are refused naming the folder, both files and the column.

TABLE_FLAGS = ("--sales", "--history", "--assignment", "--products", "--edges")
DATASET_CASES = [(name, flag) for name in COMMANDS for flag in TABLE_FLAGS if flag in argv(name, pathlib.Path("{d}"))]


def as_dataset(original: pathlib.Path, folder: pathlib.Path, spoil=None) -> tuple[pathlib.Path, pathlib.Path]:
    """Write the table of ``original`` as ``folder/a/part-0.parquet`` and ``folder/b/part-0.parquet``."""
    frame = io.read_table(str(original))
    half = frame.height // 2
    first, second = folder / "a" / "part-0.parquet", folder / "b" / "part-0.parquet"
    for path, part in ((first, frame.head(half)), (second, frame.slice(half))):
        path.parent.mkdir(parents=True)
        (spoil(part) if spoil is not None and path == second else part).write_parquet(path)
    return first, second


@pytest.mark.parametrize(("name", "flag"), DATASET_CASES, ids=[f"{n}-{f}" for n, f in DATASET_CASES])
def test_every_table_input_can_be_a_folder_of_parquet_files(run_cli, files, tmp_path, name, flag):
    args = argv(name, files)
    kind = COMMANDS[name][3]
    plain = run_cli(*args, COMMANDS[name][1], tmp_path / f"plain.{kind}", "--seed", "4", "-q")
    assert plain.code == 0, plain.stderr
    as_dataset(pathlib.Path(args[args.index(flag) + 1]), tmp_path / "dataset")
    args[args.index(flag) + 1] = str(tmp_path / "dataset")
    folder = run_cli(*args, COMMANDS[name][1], tmp_path / f"folder.{kind}", "--seed", "4", "-q")
    assert folder.code == 0, folder.stderr
    assert result_of(tmp_path / f"folder.{kind}") == result_of(tmp_path / f"plain.{kind}")


@pytest.mark.parametrize(("name", "flag"), DATASET_CASES, ids=[f"{n}-{f}" for n, f in DATASET_CASES])
def test_a_folder_whose_files_disagree_is_refused_naming_both_files(run_cli, files, tmp_path, name, flag):
    args = argv(name, files)
    folder = tmp_path / "dataset"
    first, second = as_dataset(
        pathlib.Path(args[args.index(flag) + 1]),
        folder,
        spoil=lambda part: part.with_columns(pl.col(part.columns[0]).cast(pl.String)),
    )
    column = pl.read_parquet(first).columns[0]
    args[args.index(flag) + 1] = str(folder)
    existing = tmp_path / f"result.{COMMANDS[name][3]}"
    existing.write_bytes(b"yesterday's result\n")
    result = run_cli(*args, COMMANDS[name][1], existing)
    assert result.code == 65, result.stderr
    assert f"{folder}: its files disagree on column {column!r}" in result.stderr
    assert str(first) in result.stderr and str(second) in result.stderr and "Traceback" not in result.stderr
    assert existing.read_bytes() == b"yesterday's result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dataset", existing.name])
