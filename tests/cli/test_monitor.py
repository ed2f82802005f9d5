"""Reading a running experiment: `hpte --as-of/--sequential`, `pricelab monitor`, `ipw` and
`report --as-of`, and `report --monitor`, on files as a nightly job has them."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import subprocess

import polars as pl
import pytest

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.hpte import EFFECT_COLUMNS
from pricelab_cli.sequential import MONITOR_COLUMNS
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2024, 6, 3)
END = START + dt.timedelta(days=13)
TONIGHT = START + dt.timedelta(days=9)  # the sales so far end here: the experiment is running
SEQUENCE = ["cs_low", "cs_high", "lift_cs_low", "lift_cs_high"]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A random-days experiment planned for 14 days, with sales up to its 10th day."""
    folder = tmp_path_factory.mktemp("monitor")
    products, _ = simulate_catalog(150, 4, 5, seed=11)
    design = make_design("random-days", salt="monitor", start=START, end=END)
    assignment = assign(design, products)
    sim = simulate_sales(products, assignment=assignment, history_days=56, seed=11)
    sim.sales.filter(pl.col("date") <= TONIGHT).write_parquet(folder / "sales.parquet")
    assignment.write_parquet(folder / "assignment.parquet")
    products.write_csv(folder / "products.csv")
    (folder / "design.json").write_text(json.dumps(design.to_dict()))
    return folder


def _hpte(folder, *extra):
    return ["hpte", "--sales", folder / "sales.parquet", "--assignment", folder / "assignment.parquet",
            "--bootstrap", "100", *extra]  # fmt: skip


def test_as_of_is_the_experiment_cut_by_hand(run_cli, running, tmp_path):
    night = START + dt.timedelta(days=5)
    pl.read_parquet(running / "assignment.parquet").filter(pl.col("date") <= night).write_parquet(
        tmp_path / "a.parquet"
    )
    pl.read_parquet(running / "sales.parquet").filter(pl.col("date") <= night).write_parquet(tmp_path / "s.parquet")
    by_flag = run_cli(*_hpte(running, "--as-of", night.isoformat(), "-o", tmp_path / "flag.csv"))
    by_hand = run_cli(
        "hpte", "--sales", tmp_path / "s.parquet", "--assignment", tmp_path / "a.parquet", "--bootstrap", "100",
        "-o", tmp_path / "hand.csv",
    )  # fmt: skip
    assert by_flag.code == 0 and by_hand.code == 0, by_flag.stderr + by_hand.stderr
    assert (tmp_path / "flag.csv").read_bytes() == (tmp_path / "hand.csv").read_bytes()


def test_a_date_before_the_first_analysed_day_is_a_usage_error(run_cli, running, tmp_path):
    result = run_cli(*_hpte(running, "--as-of", "2024-06-01", "-o", tmp_path / "e.csv"))
    assert result.code == 2, result.stderr
    assert "--as-of 2024-06-01 is before the experiment's first analysed day, 2024-06-03" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "e.csv").exists()
    alone = run_cli(*_hpte(running, "--sequential-horizon", "2024-06-20", "-o", tmp_path / "e.csv"))
    assert alone.code == 2 and "give it with --sequential" in alone.stderr


def test_sequential_adds_a_wider_interval_that_is_tightest_at_the_horizon(run_cli, running, tmp_path):
    planned = run_cli(*_hpte(running, "--sequential", "-o", tmp_path / "planned.csv"))
    assert planned.code == 0, planned.stderr
    effects = pl.read_csv(tmp_path / "planned.csv")
    assert effects.columns == [*EFFECT_COLUMNS, *SEQUENCE]
    row = effects.row(0, named=True)
    assert row["cs_low"] < row["ci_low"] < row["estimate"] < row["ci_high"] < row["cs_high"]
    assert row["lift_cs_low"] < row["lift"] < row["lift_cs_high"]
    # Tonight is 10 of 14 planned days; tuned for tonight, the sequence is narrower.
    tonight = run_cli(
        *_hpte(running, "--sequential", "--sequential-horizon", TONIGHT.isoformat(), "-o", tmp_path / "t.csv")
    )
    assert tonight.code == 0, tonight.stderr
    narrow = pl.read_csv(tmp_path / "t.csv").row(0, named=True)
    assert narrow["estimate"] == row["estimate"]
    assert narrow["cs_high"] - narrow["cs_low"] < row["cs_high"] - row["cs_low"]
    # At its horizon the sequence is 1.55 times as wide as the fixed interval (see
    # tests/core/test_sequential.py), on each side, for the effect and the lift alike.
    for low, high, centre in (("ci_low", "ci_high", "estimate"), ("lift_low", "lift_high", "lift")):
        cs_low, cs_high = ("cs_low", "cs_high") if centre == "estimate" else ("lift_cs_low", "lift_cs_high")
        below = (narrow[centre] - narrow[cs_low]) / (narrow[centre] - narrow[low])
        above = (narrow[cs_high] - narrow[centre]) / (narrow[high] - narrow[centre])
        assert below == pytest.approx(1.5486, abs=1e-3) and above == pytest.approx(1.5486, abs=1e-3)


def _nightly_hpte(run_cli, running, night, out):
    """What a nightly `hpte --as-of NIGHT --sequential` run printed."""
    check = run_cli(
        *_hpte(running, "--outcome", "units", "--outcome", "revenue", "--as-of", night.isoformat(), "--sequential",
               "--sequential-horizon", END.isoformat(), "-o", out),
    )  # fmt: skip
    assert check.code == 0, check.stderr
    return pl.read_csv(out)


def _monitor(run_cli, running, out, *extra):
    result = run_cli(
        "monitor", "--design", running / "design.json", "--assignment", running / "assignment.parquet",
        "--sales", running / "sales.parquet", "--outcome", "units", "--outcome", "revenue", "--bootstrap", "100",
        "--min-effect", "0.01", "-o", out, *extra,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    return result, pl.read_csv(out, try_parse_dates=True)


def test_monitor_replays_every_night_and_tonight_is_the_nightly_run(run_cli, running, tmp_path):
    result, table = _monitor(run_cli, running, tmp_path / "monitor.csv")
    assert table.columns == list(MONITOR_COLUMNS)
    nights = [START + dt.timedelta(days=d) for d in range(10)]
    assert table["date"].unique().sort().to_list() == nights
    assert table.height == 2 * len(nights)
    assert set(table["decision"]) <= {"continue", "stop: effect", "stop: futile"}
    # Tonight's row is what tonight's `hpte --as-of` prints (same seed, same draws).
    now = _nightly_hpte(run_cli, running, nights[-1], tmp_path / "tonight.csv")
    tonight = table.filter(pl.col("date") == nights[-1])
    for column in ("estimate", "ci_low", "ci_high", "cs_low", "cs_high", "n_products"):
        assert tonight[column].to_list() == now[column].to_list(), column
    # A past night is read with tonight's model: near what that night's run printed, not
    # the same bits (the whole-run replay below gives those).
    then = _nightly_hpte(run_cli, running, nights[6], tmp_path / "night.csv")
    replayed = table.filter(pl.col("date") == nights[6])
    for fast, whole in zip(replayed.iter_rows(named=True), then.iter_rows(named=True)):
        assert abs(fast["estimate"] - whole["estimate"]) < 0.5 * whole["se"], (fast, whole)
        assert fast["ci_high"] - fast["ci_low"] == pytest.approx(whole["ci_high"] - whole["ci_low"], rel=0.3)
    # stderr says tonight's reading in words; stdout is free for data.
    assert f"units on {nights[-1]}" in result.stderr


def test_monitor_exact_nights_replays_every_night_as_the_nightly_hpte_saw_it(run_cli, running, tmp_path):
    _, table = _monitor(run_cli, running, tmp_path / "monitor.csv", "--exact-nights", "--as-of", "2024-06-09")
    assert table["date"].max() == START + dt.timedelta(days=6)
    night = START + dt.timedelta(days=4)
    then = _nightly_hpte(run_cli, running, night, tmp_path / "night.csv")
    replayed = table.filter(pl.col("date") == night)
    for column in ("estimate", "ci_low", "ci_high", "cs_low", "cs_high", "n_products"):
        assert replayed[column].to_list() == then[column].to_list(), column


def test_report_draws_the_nights_and_puts_tonights_decision_first(run_cli, running, tmp_path):
    effects, monitor = tmp_path / "effects.csv", tmp_path / "monitor.csv"
    assert run_cli(*_hpte(running, "-o", effects)).code == 0
    common = ["--design", running / "design.json", "--assignment", running / "assignment.parquet",
              "--sales", running / "sales.parquet"]  # fmt: skip
    assert run_cli("monitor", *common, "--bootstrap", "50", "-o", monitor).code == 0
    page = tmp_path / "report.html"
    result = run_cli("report", *common, "--effects", effects, "--monitor", monitor, "-o", page, "--markdown")
    assert result.code == 0, result.stderr
    html = page.read_text()
    assert 'alt="nightly monitoring"' in html
    assert f"Still running: as of {TONIGHT}, the always-valid interval says units:" in html
    assert (tmp_path / "report_files" / "monitor.png").stat().st_size > 10_000
    # As it stood three nights earlier: the nights after are not drawn or read.
    earlier = START + dt.timedelta(days=6)
    result = run_cli(
        "report", *common, "--effects", effects, "--monitor", monitor, "--as-of", earlier.isoformat(),
        "-o", tmp_path / "then.html",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert f"Still running: as of {earlier}" in (tmp_path / "then.html").read_text()


def test_ipw_as_of_reads_the_assignment_up_to_the_date(run_cli, running, tmp_path):
    edges = pl.DataFrame({"src": [1, 2, 3], "dst": [2, 3, 1], "weight": [1.0, 1.0, 1.0]})
    products = pl.read_csv(running / "products.csv")
    ids = products["product_id"].to_list()
    edges = edges.with_columns(
        pl.col("src", "dst").map_elements(lambda i: ids[i], return_dtype=products["product_id"].dtype)
    )
    edges.write_parquet(tmp_path / "edges.parquet")
    common = ["ipw", "--sales", running / "sales.parquet", "--assignment", running / "assignment.parquet",
              "--edges", tmp_path / "edges.parquet", "--design", running / "design.json",
              "--products", running / "products.csv", "--bootstrap", "50"]  # fmt: skip
    before = run_cli(*common, "--as-of", "2024-06-01", "-o", tmp_path / "x.csv")
    assert before.code == 2 and "first analysed day" in before.stderr
    result = run_cli(*common, "--as-of", (START + dt.timedelta(days=4)).isoformat(), "-o", tmp_path / "s.csv")
    assert result.code == 0, result.stderr
    assert pl.read_csv(tmp_path / "s.csv").height > 0


def test_the_readme_cron_line_runs(running, tmp_path):
    """The crontab example of the README, run as cron would (a shell, no terminal)."""
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    lines = [row for row in readme.splitlines() if "pricelab monitor" in row and row.lstrip()[:1].isdigit()]
    assert len(lines) == 1, lines
    line = lines[0]
    command = line.split(None, 5)[5]  # after the five time fields
    command = command.replace("/data/experiment", str(running)).replace("/data/readout", str(tmp_path))
    env = {"PATH": str(Path(__import__("sys").executable).parent) + ":/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, shlex.quote(command) + "\n" + done.stderr
    assert (tmp_path / "monitor.csv").exists() and (tmp_path / "report.html").exists()


def test_a_product_that_first_sells_later_waits_for_its_first_row(run_cli, running, tmp_path):
    """A product with no sales row yet on a night is left out of that night's reading, with a
    warning, instead of failing the nightly job (a full read still refuses it)."""
    sales = pl.read_parquet(running / "sales.parquet")
    late = sales["product_id"].unique().sort()[0]
    sales.filter((pl.col("product_id") != late) | (pl.col("date") >= START + dt.timedelta(days=4))).write_parquet(
        tmp_path / "sales.parquet"
    )
    base = ["hpte", "--sales", tmp_path / "sales.parquet", "--assignment", running / "assignment.parquet",
            "--bootstrap", "50"]  # fmt: skip
    early = run_cli(
        *base, "--as-of", (START + dt.timedelta(days=2)).isoformat(), "-o", tmp_path / "early.csv",
        "--carryover-out", tmp_path / "carryover.csv",
    )  # fmt: skip
    assert early.code == 0, early.stderr
    assert (tmp_path / "carryover.csv").exists()
    assert early.stderr.count("no sales row up to") == 1  # said once, though carryover cuts the same way
    assert "1 assigned product(s) have no sales row up to --as-of 2024-06-05" in early.stderr
    assert f"e.g. {late!r}" in early.stderr
    later = run_cli(*base, "--as-of", (START + dt.timedelta(days=6)).isoformat(), "-o", tmp_path / "later.csv")
    assert later.code == 0 and "no sales row up to" not in later.stderr, later.stderr
