import json

import pytest


def test_design_writes_a_readable_spec_with_provenance(run_cli, tmp_path):
    out = tmp_path / "design.json"
    result = run_cli(
        "design",
        "crossover",
        "--start",
        "2026-03-02",
        "--phase-days",
        "14",
        "--blackout-days",
        "7",
        "--name",
        "spring",
        "--seed",
        "4",
        "-o",
        out,
    )
    assert result.code == 0, result.stderr
    spec = json.loads(out.read_text())
    assert spec["kind"] == "crossover" and spec["end"] == "2026-03-29" and spec["phases"] == 2
    assert spec["name"] == "spring" and len(spec["salt"]) == 16
    assert spec["provenance"]["seed"] == 4 and "design crossover" in spec["provenance"]["command"]
    assert "spring: 2026-03-02 to 2026-03-29" in result.stderr


def test_same_seed_same_salt_without_seed_random(run_cli):
    args = ("design", "random-days", "--start", "2026-03-02", "--end", "2026-03-08", "-q")
    first, second = run_cli(*args, "--seed", "1"), run_cli(*args, "--seed", "1")
    assert first.stdout == second.stdout
    assert json.loads(run_cli(*args).text)["salt"] != json.loads(run_cli(*args).text)["salt"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["time-bound", "--start", "2026-03-09", "--end", "2026-03-02"],
            65,
            "--end 2026-03-02 is before --start 2026-03-09",
        ),
        (
            ["crossover", "--start", "2026-03-02", "--phase-days", "7", "--blackout-days", "7"],
            65,
            "--blackout-days 7 must be shorter",
        ),
        (
            ["random-days", "--start", "2026-03-02", "--end", "2026-03-09", "--treat-share", "1.5"],
            65,
            "treat share 1.5",
        ),
        (
            ["time-bound", "--start", "2026-02-30", "--end", "2026-03-09"],
            2,
            "'2026-02-30' is not a date in YYYY-MM-DD form",
        ),
        (["weekly", "--start", "2026-03-02"], 2, "weekly"),
        (
            ["time-bound", "--start", "2026-03-02", "--end", "2026-03-09", "--phase-days", "7"],
            2,
            "--phase-days does not apply to a time-bound design",
        ),
        (["triggered"], 65, "needs --duration-days"),
    ],
)
def test_bad_designs_exit_with_contract_codes(run_cli, tmp_path, args, code, message):
    out = tmp_path / "d.json"
    result = run_cli("design", *args, "-o", out)
    assert result.code == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_plot_draws_a_png(run_cli, tmp_path):
    png = tmp_path / "grid.png"
    result = run_cli("design", "triggered", "--duration-days", "10", "--plot", png, "-o", tmp_path / "d.json", "-q")
    assert result.code == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "other",
    [
        ["--name", "may-price-test", "--start", "2026-03-02", "--end", "2026-03-29"],
        ["--name", "march-promo", "--start", "2026-05-04", "--end", "2026-05-31"],
    ],
)
def test_two_seeded_experiments_that_differ_in_name_or_dates_treat_independent_products(run_cli, tmp_path, other):
    """`--seed 0` on two experiments: the name and dates are in the salt, so the treated sets
    overlap about as two independent draws would (treat share 0.5: half of one set is in the
    other), not 100%."""
    import polars as pl

    n = 2000
    products = tmp_path / "products.csv"
    pl.DataFrame({"product_id": range(n)}).write_csv(products)
    treated = []
    for tag, args in (("a", ["--name", "march-promo", "--start", "2026-03-02", "--end", "2026-03-29"]), ("b", other)):
        assert run_cli("design", "time-bound", *args, "--seed", "0", "-o", tmp_path / f"{tag}.json", "-q").code == 0
        assert (
            run_cli(
                "assign",
                "--design",
                tmp_path / f"{tag}.json",
                "--products",
                products,
                "-o",
                tmp_path / f"{tag}.parquet",
                "-q",
            ).code
            == 0
        )
        rows = pl.read_parquet(tmp_path / f"{tag}.parquet").filter(pl.col("treated") == 1)
        treated.append(set(rows["product_id"].unique().to_list()))
    a, b = treated
    shared = len(a & b) / len(a)
    # Independent draws: shared ~ 0.5 with SD sqrt(0.25 / 1000) = 0.016; 0.1 either side is 6 SD.
    assert 0.4 < shared < 0.6, shared
    assert 0.4 < len(a) / n < 0.6 and 0.4 < len(b) / n < 0.6


def test_description_and_salt_source_are_recorded(run_cli, tmp_path):
    out = tmp_path / "d.json"
    assert (
        run_cli(
            "design",
            "time-bound",
            "--start",
            "2026-03-02",
            "--end",
            "2026-03-29",
            "--seed",
            "3",
            "--description",
            "10% price cut",
            "-o",
            out,
        ).code
        == 0
    )
    spec = json.loads(out.read_text())
    assert spec["description"] == "10% price cut" and spec["salt_from"] == "seed"
    given = json.loads(
        run_cli("design", "time-bound", "--start", "2026-03-02", "--end", "2026-03-29", "--salt", "s").text
    )
    assert given["salt"] == "s" and given["salt_from"] == "given"


def test_a_seeded_triggered_design_with_events_warns_that_the_events_are_not_in_the_salt(run_cli, tmp_path):
    (tmp_path / "products.csv").write_text("product_id\n1\n2\n3\n4\n")
    (tmp_path / "events.csv").write_text(
        "product_id,event_date\n1,2026-03-02\n2,2026-03-04\n3,2026-03-05\n4,2026-03-06\n"
    )
    assert run_cli("design", "triggered", "--duration-days", "7", "--seed", "1", "-o", tmp_path / "t.json").code == 0
    result = run_cli(
        "assign",
        "--design",
        tmp_path / "t.json",
        "--products",
        tmp_path / "products.csv",
        "--events",
        tmp_path / "events.csv",
        "-o",
        tmp_path / "a.csv",
    )
    assert result.code == 0
    assert "the events (which set this experiment's dates) are not part of it" in " ".join(result.stderr.split())
