"""`pricelab hpte`: the real command on files, its outputs, messages and exit codes."""

from __future__ import annotations

import datetime as dt
import json
import pathlib

import numpy as np
import polars as pl
import pytest

from pricelab_cli import io
from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.hpte import DEFAULT_OUTLIER_C, EFFECT_COLUMNS
from pricelab_cli.simulate import simulate_catalog, simulate_sales

DATA = pathlib.Path(__file__).parent.parent / "data"
START = dt.date(2024, 6, 3)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A small simulated random-days experiment written as the files a user would have."""
    folder = tmp_path_factory.mktemp("hpte")
    products, _ = simulate_catalog(120, 4, 5, seed=3)
    design = make_design("random-days", salt="cli", start=START, end=START + dt.timedelta(days=20))
    assignment = assign(design, products)
    sim = simulate_sales(products, assignment=assignment, history_days=63, seed=3)
    sim.sales.write_parquet(folder / "sales.parquet")
    sim.sales.write_csv(folder / "sales.csv")
    assignment.write_parquet(folder / "assignment.parquet")
    assignment.write_csv(folder / "assignment.csv")
    products.write_csv(folder / "products.csv")
    return folder


def args(folder, *extra, sales="sales.parquet", assignment="assignment.parquet"):
    return ["hpte", "--sales", folder / sales, "--assignment", folder / assignment, "--bootstrap", "100", *extra]


def test_writes_one_row_per_outcome_with_the_contract_columns(run_cli, experiment, tmp_path):
    out, cate, png = tmp_path / "effects.csv", tmp_path / "cate.parquet", tmp_path / "effect.png"
    result = run_cli(
        *args(experiment, "--outcome", "units", "--outcome", "revenue", "--features", experiment / "products.csv"),
        "-o",
        out,
        "--cate-out",
        cate,
        "--plot",
        png,
        "--seed",
        "1",
    )
    assert result.code == 0, result.stderr
    effects = pl.read_csv(out)
    assert effects.columns == list(EFFECT_COLUMNS)
    assert effects["outcome"].to_list() == ["units", "revenue"]
    assert (effects["ci_low"] < effects["estimate"]).all() and (effects["estimate"] < effects["ci_high"]).all()
    cates = pl.read_parquet(cate)
    assert cates.columns == ["product_id", "outcome", "cate"] and cates.height == 240
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((tmp_path / "effects.csv.meta.json").read_text())
    assert meta["seed"] == 1 and "hpte" in meta["command"]
    assert io.read_provenance(str(cate))["seed"] == 1
    # The forest's split shares travel with the CATEs, per outcome, over the features it used.
    splits = io.read_provenance(str(cate))["forest_splits"]["units"]
    assert abs(sum(splits.values()) - 1) < 1e-9 and {"quality", "pre_level"} <= set(splits)
    assert "effect per product per day" in result.stderr and "baselines" in result.stderr


def test_one_outcome_cate_has_exactly_product_id_and_cate(run_cli, experiment, tmp_path):
    cate = tmp_path / "cate.csv"
    result = run_cli(*args(experiment), "-o", tmp_path / "e.csv", "--cate-out", cate, "-q")
    assert result.code == 0 and result.stderr == ""
    assert pl.read_csv(cate).columns == ["product_id", "cate"]


def test_same_seed_gives_identical_bytes_and_stdout_carries_only_data(run_cli, experiment, tmp_path):
    first = run_cli(*args(experiment), "-o", "-", "--seed", "5")
    second = run_cli(*args(experiment), "-o", "-", "--seed", "5")
    assert first.code == second.code == 0
    assert first.stdout == second.stdout
    assert first.text.splitlines()[0] == ",".join(EFFECT_COLUMNS)
    assert len(first.text.splitlines()) == 2


def test_csv_inputs_with_renamed_columns(run_cli, experiment, tmp_path):
    sales = pl.read_csv(experiment / "sales.csv").rename({"product_id": "sku", "date": "day", "units": "qty"})
    assignment = pl.read_csv(experiment / "assignment.csv").rename({"product_id": "sku", "date": "day"})
    sales.write_csv(tmp_path / "s.csv")
    assignment.write_csv(tmp_path / "a.csv")
    out = tmp_path / "e.csv"
    result = run_cli(
        "hpte",
        "--sales",
        tmp_path / "s.csv",
        "--assignment",
        tmp_path / "a.csv",
        "--unit-col",
        "sku",
        "--time-col",
        "day",
        "--outcome",
        "qty",
        "--bootstrap",
        "50",
        "-o",
        out,
        "--cate-out",
        tmp_path / "c.csv",
        "-q",
    )
    assert result.code == 0, result.stderr
    assert pl.read_csv(out)["outcome"].to_list() == ["qty"]
    assert pl.read_csv(tmp_path / "c.csv").columns == ["sku", "cate"]


def test_did_reproduces_the_organ_donation_estimate_and_warns_about_the_se(run_cli, tmp_path):
    out = tmp_path / "did.csv"
    result = run_cli(
        "hpte",
        "--sales",
        DATA / "organ_donation_sales.csv",
        "--assignment",
        DATA / "organ_donation_assignment.csv",
        "--method",
        "did",
        "-o",
        out,
    )
    assert result.code == 0, result.stderr
    row = pl.read_csv(out).row(0, named=True)
    assert row["estimate"] == pytest.approx(-0.02246, abs=1e-4)
    assert row["n_products"] == 27 and row["n_outliers"] == 0
    assert "warning: units: only 1 treated product(s) to resample" in result.stderr
    assert "SE is unreliable" in result.stderr


def test_help_shows_the_outlier_default_the_estimator_uses(run_cli):
    result = run_cli("hpte", "--help")
    assert result.code == 0
    assert f"[default: ({DEFAULT_OUTLIER_C:g});" in " ".join(result.text.split())


def write(path: pathlib.Path, frame: pl.DataFrame) -> pathlib.Path:
    frame.write_csv(path)
    return path


def bad_sales(experiment, mutate):
    return lambda d: ["--sales", write(d / "s.csv", mutate(pl.read_csv(experiment / "sales.csv")))]


def bad_assignment(experiment, mutate):
    return lambda d: ["--assignment", write(d / "a.csv", mutate(pl.read_csv(experiment / "assignment.csv")))]


FIRST_DAY = START.isoformat()


CASES = {
    "product missing from sales": (
        65,
        "assignment.csv: 1 assigned product(s) have no sales rows, e.g. 7; give every assigned product its rows in",
        lambda e: bad_sales(e, lambda s: s.filter(pl.col("product_id") != 7)),
    ),
    "no pre-period": (
        65,
        "s.csv: no product has sales before its experiment starts",
        lambda e: bad_sales(e, lambda s: s.filter(pl.col("date") >= FIRST_DAY)),
    ),
    "arm with no products": (
        65,
        "a.csv: the treated arm has no analysed experiment rows",
        lambda e: bad_assignment(e, lambda a: a.with_columns(treated=pl.lit(0))),
    ),
    "missing outcome values": (
        65,
        "s.csv: column 'units' has 1 missing or non-finite value(s) on analysed dates, e.g. product 1 on 2024-06-03",
        lambda e: bad_sales(
            e,
            lambda s: s.with_columns(
                units=pl.when((pl.col("product_id") == 1) & (pl.col("date") == FIRST_DAY))
                .then(None)
                .otherwise(pl.col("units"))
            ),
        ),
    ),
    "duplicate product-dates": (
        65,
        "s.csv: 2 rows repeat a (product_id, date) key, e.g. product_id=1",
        lambda e: bad_sales(e, lambda s: pl.concat([s, s.head(1)])),
    ),
    "missing outcome column": (
        65,
        "missing column 'revenue_eur'",
        lambda e: lambda d: ["--outcome", "revenue_eur"],
    ),
    "treated not 0/1": (
        65,
        "a.csv: column 'treated' must hold 0 or 1, found 3",
        lambda e: bad_assignment(e, lambda a: a.with_columns(treated=pl.lit(3))),
    ),
    "missing file": (66, "nope.parquet: no such file", lambda e: lambda d: ["--sales", d / "nope.parquet"]),
    "cate with did": (
        2,
        "--cate-out needs the causal forest",
        lambda e: lambda d: ["--method", "did", "--cate-out", d / "c.csv"],
    ),
    "outcome is the date": (
        2,
        "--outcome 'date' names the product or date column",
        lambda e: lambda d: ["--outcome", "date"],
    ),
    "negative bootstrap": (
        2,
        "Invalid value for '--bootstrap': Input should be greater than or equal to 0",
        lambda e: lambda d: ["--bootstrap", "-1"],
    ),
    "unknown method": (2, "'ols' is not one of 'hpte', 'did'", lambda e: lambda d: ["--method", "ols"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_with_its_code_and_message_and_leaves_no_output(run_cli, experiment, tmp_path, case):
    code, message, extra = CASES[case]
    out = tmp_path / "effects.csv"
    base = [
        "hpte",
        "--sales",
        experiment / "sales.csv",
        "--assignment",
        experiment / "assignment.csv",
        "--bootstrap",
        "20",
        "-o",
        out,
    ]
    extra_args = extra(experiment)(tmp_path)
    for flag in ("--sales", "--assignment"):  # a case that brings its own file replaces the default
        if flag in extra_args:
            i = base.index(flag)
            base = base[:i] + base[i + 2 :]
    result = run_cli(*base, *extra_args)
    assert result.code == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "effects.csv.meta.json").exists() and not (tmp_path / "c.csv").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_negative_outcomes_warn_but_run(run_cli, experiment, tmp_path):
    sales = pl.read_csv(experiment / "sales.csv").with_columns(
        units=pl.when((pl.col("product_id") == 2) & (pl.col("date") == FIRST_DAY)).then(-3).otherwise(pl.col("units"))
    )
    result = run_cli(*args(experiment, sales=write(tmp_path / "s.csv", sales)), "-o", tmp_path / "e.csv")
    assert result.code == 0, result.stderr
    assert "s.csv: column 'units' has 1 negative value(s), e.g. product 2 on 2024-06-03" in result.stderr


def test_progress_bar_does_not_reach_stdout(run_cli, experiment):
    result = run_cli(*args(experiment), "-o", "-", "--format", "parquet")
    assert result.code == 0
    import io as _io

    assert pl.read_parquet(_io.BytesIO(result.stdout)).columns == list(EFFECT_COLUMNS)


def test_no_outlier_filter_and_no_detrend_flags(run_cli, experiment, tmp_path):
    out = tmp_path / "e.csv"
    result = run_cli(*args(experiment, "--no-outlier-filter", "--no-detrend"), "-o", out, "-q")
    assert result.code == 0, result.stderr
    assert pl.read_csv(out)["n_outliers"][0] == 0
    assert np.isfinite(pl.read_csv(out)["estimate"][0])


@pytest.fixture(scope="module")
def contaminated(tmp_path_factory):
    """A time-bound experiment on 300 products, 4% of them with spikes, jumps or stock-outs."""
    folder = tmp_path_factory.mktemp("hpte_robust")
    products, _ = simulate_catalog(300, 6, 5, seed=5)
    design = make_design("time-bound", salt="robust-cli", start=START, end=START + dt.timedelta(days=27))
    assignment = assign(design, products)
    sim = simulate_sales(
        products,
        assignment=assignment,
        history_days=91,
        seed=5,
        contamination=0.04,
        contamination_kinds=("noise", "jump", "spike", "stockout"),
    )
    sim.sales.write_parquet(folder / "sales.parquet")
    assignment.write_parquet(folder / "assignment.parquet")
    sim.product_truth.write_parquet(folder / "truth.parquet")
    return folder


def test_outliers_out_lists_what_the_robust_step_did_with_reasons(run_cli, contaminated, tmp_path):
    out, audit = tmp_path / "effects.csv", tmp_path / "outliers.csv"
    result = run_cli(*args(contaminated), "-o", out, "--outliers-out", audit)
    assert result.code == 0, result.stderr
    table = pl.read_csv(audit)
    assert table.columns == ["product_id", "outcome", "action", "reason", "statistic", "days"]
    assert set(table["action"]) <= {"dropped", "winsorised", "days left out", "counted through the lift"}
    truth = pl.read_parquet(contaminated / "truth.parquet")
    kind_of = dict(zip(truth["product_id"], truth["contamination"]))
    dropped = table.filter(pl.col("action") == "dropped")
    # Every stock-out product has its zero run left out; most noisy products are screened.
    stock = {p for p, k in kind_of.items() if k == "stockout"}
    left_out = set(table.filter(pl.col("action") == "days left out")["product_id"])
    assert stock <= left_out | set(dropped["product_id"])
    noisy = {p for p, k in kind_of.items() if k == "noise"}
    assert len(noisy & set(dropped["product_id"])) >= len(noisy) // 2
    effects = pl.read_csv(out)
    through_lift = table.filter(pl.col("action") == "counted through the lift")
    assert effects["n_outliers"][0] == dropped["product_id"].n_unique() + through_lift["product_id"].n_unique()
    assert "dropped (history volatility" in result.stderr and "winsorised" in result.stderr


def test_quantile_rule_reproduces_the_source_filter_and_c_needs_it(run_cli, contaminated, tmp_path):
    quantile = run_cli(*args(contaminated), "--outlier-rule", "quantile", "--outlier-c", "4", "-o", tmp_path / "q.csv")
    assert quantile.code == 0, quantile.stderr
    assert pl.read_csv(tmp_path / "q.csv")["n_outliers"][0] == 4
    misplaced = run_cli(*args(contaminated), "--outlier-c", "4", "-o", tmp_path / "r.csv")
    assert misplaced.code == 2 and "--outlier-rule quantile" in misplaced.stderr
    assert not (tmp_path / "r.csv").exists()


def test_placebo_and_carryover_outputs(run_cli, experiment, tmp_path):
    """--placebo-out: the effects columns for the fake experiment before the start;
    --carryover-out: one row per outcome and arm."""
    placebo, carryover = tmp_path / "placebo.csv", tmp_path / "carryover.csv"
    result = run_cli(
        *args(experiment), "-o", tmp_path / "effects.csv", "--placebo-out", placebo, "--carryover-out", carryover
    )
    assert result.code == 0, result.stderr
    fake = pl.read_csv(placebo)
    assert fake.columns == list(EFFECT_COLUMNS) and fake["outcome"].to_list() == ["units"]
    assert "placebo: fake experiment 2024-05-13 to 2024-06-02" in result.stderr
    checks = pl.read_csv(carryover)
    assert checks["arm"].to_list() == ["control", "treated"] and (checks["n_products"] > 100).all()
    assert "MDE" in result.stderr
    # The same inputs give the same bytes (a group_by's order once moved the last digits).
    # (That changed the bytes in each of 4 runs, so one more run finds it.)
    again = tmp_path / "carryover_again.csv"
    rerun = run_cli(*args(experiment), "-o", tmp_path / "e_again.csv", "--carryover-out", again)
    assert rerun.code == 0, rerun.stderr
    assert again.read_bytes() == carryover.read_bytes()


def test_placebo_needs_history_as_long_as_the_experiment(run_cli, experiment, tmp_path):
    short = tmp_path / "sales.parquet"
    pl.read_parquet(experiment / "sales.parquet").filter(pl.col("date") >= START - dt.timedelta(days=25)).write_parquet(
        short
    )
    out = tmp_path / "effects.csv"
    result = run_cli(
        "hpte",
        "--sales",
        short,
        "--assignment",
        experiment / "assignment.parquet",
        "--bootstrap",
        "100",
        "-o",
        out,
        "--placebo-out",
        tmp_path / "placebo.csv",
    )
    assert result.code == 65 and "a placebo needs" in result.stderr
    assert not out.exists() and not (tmp_path / "placebo.csv").exists()


def test_a_log_names_each_stage_with_its_size(run_cli, experiment, tmp_path, monkeypatch):
    """In a cron log, each stage of the run is a line with its name and its whole size, in
    the order they ran; --quiet drops them."""
    from pricelab_cli import console

    monkeypatch.setattr(console, "LOG_MIN_SECONDS", 0.0)
    result = run_cli(*args(experiment, "-o", tmp_path / "e.csv", "--jobs", "1"))
    assert result.code == 0, result.stderr
    stages = [line for line in result.stderr.splitlines() if line.count("/") == 1 and ": " in line]
    names = [line.rsplit(": ", 1)[0] for line in stages]
    assert names[0] == "sales rows read" and names[-1] == "units: bootstrap (100 draws)", names
    assert "units: causal forest (100 trees)" in names
    for line in stages:
        done, total = line.rsplit(": ", 1)[1].split("/")
        assert done == total, line
    quiet = run_cli(*args(experiment, "-o", tmp_path / "q.csv", "--jobs", "1", "--quiet"))
    assert quiet.code == 0 and quiet.stderr == ""
