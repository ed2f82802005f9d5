"""The console for logs and cron: a broken stderr, quiet and silent, help text, start-up."""

import os
import subprocess
import sys

import polars as pl
import pytest

HEAVY = ("numpy", "scipy", "polars", "pyarrow", "sklearn", "econml", "igraph", "matplotlib")


@pytest.fixture
def designed(tmp_path, run_cli):
    (tmp_path / "products.csv").write_text("product_id\n" + "\n".join(str(i) for i in range(300)) + "\n")
    assert (
        run_cli(
            "design",
            "time-bound",
            "--start",
            "2026-03-02",
            "--end",
            "2026-03-29",
            "--salt",
            "s",
            "-o",
            tmp_path / "design.json",
        ).code
        == 0
    )
    return tmp_path


def test_a_closed_stderr_does_not_fail_the_run_and_the_output_is_complete(designed):
    """`pricelab assign ... 2>&1 | head -1`: the reader goes away after the first line of the
    summary; the run still commits its output and exits 0."""
    out = designed / "a.parquet"
    cmd = (
        f"{sys.executable} -m pricelab_cli assign --design {designed / 'design.json'} --products "
        f'{designed / "products.csv"} -o {out} 2>&1 | head -n 1; echo "status=${{PIPESTATUS[0]}}"'
    )
    done = subprocess.run(
        ["bash", "-c", cmd], capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    lines = done.stdout.splitlines()
    assert lines[-1] == "status=0", done.stdout + done.stderr
    assert lines[0].startswith("time-bound: 300 randomisation units")
    assert pl.read_parquet(out).height == 300 * 28


def test_quiet_keeps_warnings_and_silent_drops_them(run_cli, designed):
    (designed / "events.csv").write_text("product_id,event_date\n1,2026-03-05\n")
    args = [
        "assign",
        "--design",
        designed / "design.json",
        "--products",
        designed / "products.csv",
        "--events",
        designed / "events.csv",
        "-o",
        designed / "a.csv",
    ]
    loud = run_cli(*args)
    quiet = run_cli(*args, "--quiet")
    silent = run_cli(*args, "--silent")
    assert loud.code == quiet.code == silent.code == 0
    warning = "warning: --events is used by triggered designs only"
    assert warning in loud.stderr and "randomisation units" in loud.stderr
    assert quiet.stderr.strip().startswith(warning) and "randomisation units" not in quiet.stderr
    assert silent.stderr == ""


def test_tables_are_not_cut_when_stderr_is_not_a_terminal(run_cli, designed):
    """A log gets every column of a table whole: no 80-column cut, no ellipsis."""
    result = run_cli(
        "assign",
        "--design",
        designed / "design.json",
        "--products",
        designed / "products.csv",
        "-o",
        designed / "a.csv",
    )
    assert result.code == 0
    assert "treated share per day" in result.stderr and "…" not in result.stderr
    assert "\n\n\n" not in result.stderr


def test_help_keeps_bracketed_text_and_shows_flags_and_choices(run_cli):
    design = " ".join(run_cli("design", "--help").text.split())
    assert "[default: (hash of --seed, kind, --name and dates, else random)]" in design
    assert "[default: (1)]" in design and "<time-bound|triggered|random-days|crossover|balanced-switchback>" in design
    assert "<bool>" not in design and "--quiet " in design
    hpte = " ".join(run_cli("hpte", "--help").text.split())
    assert "--engine local|ray" in hpte and "--outcome COLUMN" in hpte and "[default: (all cores)]" in hpte
    assert "list[" not in hpte


def test_version_and_no_command(run_cli):
    from pricelab_cli import __version__

    version = run_cli("--version")
    assert version.code == 0 and version.text.strip() == f"pricelab {__version__}"
    bare = run_cli()
    assert bare.code == 2
    assert "Commands:" in bare.stderr and "pricelab: error: no command given" in bare.stderr
    assert not [line for line in bare.stderr.splitlines() if line.strip() == "pricelab: error:"]


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["design", "--help"]])
def test_help_and_version_load_no_heavy_library(args):
    code = (
        "import sys\nfrom pricelab_cli.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr


def test_the_package_keeps_its_public_names_and_loads_them_on_use():
    code = (
        "import sys\nimport pricelab_cli as p\nloaded = 'polars' in sys.modules\n"
        "import pricelab_cli.assign\n"
        "print(loaded, callable(p.assign) and p.assign.__module__ == 'pricelab_cli.assign', "
        "p.estimate_hpte.__name__, sorted(p.__all__) == sorted(dir(p)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "True", "estimate_hpte", "True"], done.stderr


def test_progress_in_a_log_is_lines_of_text(monkeypatch, capsys):
    """Not a terminal: no bar, but a line per LOG_EVERY seconds with the stage's name and
    count, and one when a stage that took a while ends; --quiet prints none of them."""
    from pricelab_cli import console

    monkeypatch.setattr(console, "LOG_EVERY", 0.0)
    monkeypatch.setattr(console, "LOG_MIN_SECONDS", 0.0)
    with console.Reporter().progress("bootstrap", 3) as advance:
        for _ in range(3):
            advance(1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "bootstrap: 1/3",
        "bootstrap: 2/3",
        "bootstrap: 3/3",
        "bootstrap: 3/3",
    ]
    assert all(line.strip() for line in lines)
    with console.Reporter(quiet=True).progress("bootstrap", 3) as advance:
        advance(3)
    assert capsys.readouterr().err == ""


def test_a_table_in_a_log_has_no_blank_lines(capsys):
    """hpte's results table uses a box style whose outer edge is a line of spaces: in a log
    that edge is left out, so every line carries text."""
    from rich import box
    from rich.table import Table

    from pricelab_cli import console

    table = Table(box=box.SIMPLE_HEAD)
    for name in ("outcome", "estimate"):
        table.add_column(name)
    table.add_row("units", "4.32")
    console.Reporter().table(table)
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.strip() for line in lines), lines


def test_a_terminal_shows_one_bar_per_stage_named_and_sized_from_the_start():
    """At a terminal each stage gets its own bar, named, with its total set when it starts;
    the next stage's bar replaces it (no bar whose total grows, no bar left at 0)."""
    import io

    from rich.console import Console

    from pricelab_cli import console

    reporter = console.Reporter()
    reporter.console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with reporter.stages() as bar:
        bar.add(4, "sales rows read")
        bar.done(4)
        bar.add(500, "bootstrap (500 draws)")
        shown = [(t.description, t.total, t.completed) for t in bar._bar.tasks]
        assert shown == [("bootstrap (500 draws)", 500, 0)]
        bar.done(200)
        assert [(t.total, t.completed) for t in bar._bar.tasks] == [(500, 200)]
    assert "bootstrap (500 draws)" in reporter.console.file.getvalue()
