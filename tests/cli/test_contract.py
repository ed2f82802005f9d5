"""Behaviours every command shares, tested once: help, exit codes, atomic outputs, quiet."""

import json
import subprocess
import sys

import polars as pl
import pytest
import typer

from pricelab_cli.cli import app


def all_commands():
    group = typer.main.get_command(app)
    names = []
    for name, command in group.commands.items():
        sub = getattr(command, "commands", None)
        names += [f"{name} {child}" for child in sub] if sub else [name]
    return names


@pytest.mark.parametrize("command", all_commands())
def test_every_command_has_help_with_an_example(run_cli, command):
    result = run_cli(*command.split(), "--help")
    assert result.code == 0
    assert "Example:" in result.text, f"`pricelab {command} --help` shows no example"
    assert all(flag in result.text for flag in ("--quiet", "--silent", "--format"))
    # --seed is offered where something is random; the others accept it without offering it.
    assert ("--seed" in result.text) == (command not in DETERMINISTIC)


# Commands in which nothing is random.
DETERMINISTIC = ("assign", "report", "spillover-graph")


@pytest.mark.parametrize("command", DETERMINISTIC)
def test_deterministic_commands_still_accept_seed(run_cli, command):
    """A Makefile may pass --seed to every step: where nothing is random it is accepted (and
    recorded), not an unknown flag."""
    result = run_cli(command, "--seed", "3")
    assert "No such option" not in result.stderr and result.code == 2  # a missing required flag, not --seed


@pytest.fixture
def workdir(tmp_path, run_cli):
    (tmp_path / "products.csv").write_text("product_id,category\n1,a\n2,a\n3,b\n")
    assert (
        run_cli(
            "design",
            "time-bound",
            "--start",
            "2026-03-02",
            "--end",
            "2026-03-04",
            "--salt",
            "s",
            "-o",
            tmp_path / "design.json",
        ).code
        == 0
    )
    return tmp_path


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


CASES = {
    "missing column": (
        65,
        "missing column 'product_id' (columns present: 'sku')",
        lambda d: ["--products", write(d / "p.csv", "sku\n1\n")],
    ),
    "duplicate keys": (
        65,
        "repeat a (product_id) key, e.g. product_id=2",
        lambda d: ["--products", write(d / "p.csv", "product_id\n1\n2\n2\n")],
    ),
    "empty table": (
        65,
        "the table has a header but no rows",
        lambda d: ["--products", write(d / "p.csv", "product_id\n")],
    ),
    "empty file": (65, "the file is empty", lambda d: ["--products", write(d / "p.csv", "")]),
    "missing file": (66, "nope.csv: no such file", lambda d: ["--products", d / "nope.csv"]),
    # A folder is a dataset input; one without Parquet files cannot be read as a table.
    "folder as file": (
        66,
        "is a folder, not a file, and holds no Parquet files",
        lambda d: ["--products", write(d / "notes" / "readme.txt", "hi").parent],
    ),
    "corrupt parquet": (
        66,
        "not a readable Parquet file",
        lambda d: ["--products", write(d / "p.parquet", "not parquet")],
    ),
    "unknown extension": (
        2,
        "cannot tell the format from the extension",
        lambda d: ["--products", write(d / "p.xlsx", "x")],
    ),
    "unknown stream format": (
        2,
        "--format 'xlsx' is not one of: csv, csv.gz, tsv, tsv.gz, parquet",
        lambda d: ["--products", d / "products.csv", "--format", "xlsx"],
    ),
    "unknown flag": (2, "No such option: --colour", lambda d: ["--products", d / "products.csv", "--colour", "red"]),
    "wrong type": (
        65,
        "column 'event_date' has a value that is not an ISO date (YYYY-MM-DD): '2026/03/01'",
        lambda d: [
            "--products",
            d / "products.csv",
            "--events",
            write(d / "e.csv", "product_id,event_date\n1,2026/03/01\n"),
        ],
    ),
    "impossible design": (
        65,
        "--blackout-days 9 must be shorter than --phase-days 7",
        lambda d: [
            "--products",
            d / "products.csv",
            "--design",
            write(
                d / "design.json",
                json.dumps(
                    {
                        "pricelab_design": 1,
                        "kind": "crossover",
                        "salt": "s",
                        "start": "2026-03-02",
                        "end": "2026-03-15",
                        "phase_days": 7,
                        "blackout_days": 9,
                        "phases": 2,
                    }
                ),
            ),
        ],
    ),
    "not json": (
        65,
        "not valid JSON",
        lambda d: ["--products", d / "products.csv", "--design", write(d / "design.json", "{")],
    ),
    "output folder missing": (
        2,
        "does not exist",
        lambda d: ["--products", d / "products.csv", "-o", d / "no" / "out.csv"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_its_exit_code_a_message_and_leaves_no_output(run_cli, workdir, case):
    code, message, extra = CASES[case]
    out = workdir / "out.parquet"
    out.write_bytes(b"what the user had")
    args = ["assign", "--design", workdir / "design.json", "-o", out, *extra(workdir)]
    if args.count("-o") == 2:  # the case names its own output
        args = args[:3] + args[5:]
    if args.count("--design") == 2:
        i = args.index("--design")
        args = args[:i] + args[i + 2 :]
    result = run_cli(*args)
    assert result.code == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert out.read_bytes() == b"what the user had", "a failed run must not touch the existing output"
    assert not [p.name for p in workdir.iterdir() if p.name.endswith(".tmp")], "no temporary file left behind"


def test_verbose_shows_the_traceback(run_cli, workdir):
    result = run_cli("assign", "--design", workdir / "design.json", "--products", workdir / "nope.csv", "--verbose")
    assert result.code == 66 and "Traceback" in result.stderr


def test_silent_prints_nothing_on_success_and_quiet_only_warnings(run_cli, workdir):
    args = (
        "assign",
        "--design",
        workdir / "design.json",
        "--products",
        workdir / "products.csv",
        "-o",
        workdir / "a.csv",
    )
    result = run_cli(*args, "--silent")
    assert result.code == 0 and result.stderr == ""
    assert pl.read_csv(workdir / "a.csv").height == 9
    quiet = run_cli(*args, "--quiet")
    assert quiet.code == 0 and quiet.stderr
    assert all(line.startswith("warning: ") for line in quiet.stderr.splitlines())


def test_outputs_get_ordinary_file_permissions(run_cli, workdir):
    out = workdir / "a.csv"
    assert (
        run_cli(
            "assign", "--design", workdir / "design.json", "--products", workdir / "products.csv", "-o", out, "-q"
        ).code
        == 0
    )
    assert out.stat().st_mode & 0o044 == 0o044, "readable by group and others under the usual umask"


def test_writing_to_dev_null_leaves_the_device_alone(run_cli, workdir):
    assert (
        run_cli(
            "assign",
            "--design",
            workdir / "design.json",
            "--products",
            workdir / "products.csv",
            "-o",
            "/dev/null",
            "-q",
        ).code
        == 0
    )
    import os
    import stat

    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_ctrl_c_while_pricelab_starts_exits_130_without_a_traceback():
    """The first half second is spent loading polars and numpy; an interrupt there is quiet."""
    import os
    import shutil
    import signal
    import subprocess
    import time

    script = shutil.which("pricelab") or os.path.join(os.path.dirname(sys.executable), "pricelab")
    proc = subprocess.Popen([script, "design", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Interrupted once pricelab's own imports have begun: the first compiled module of the
    # standard library is mapped then (the interpreter's start-up and site import map none).
    # A fixed delay would land in the interpreter's own start-up on a busy machine, where no
    # program can turn Ctrl-C into anything but Python's "Fatal Python error".
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{proc.pid}/maps") as maps:
                if "lib-dynload" in maps.read():
                    break
        except OSError:
            pass
        time.sleep(0.001)
    assert proc.poll() is None, "pricelab ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err


# Python runs a signal's handler wherever the main thread is; an exception it raises inside a
# weakref callback is reported as "ignored" and lost. These put SIGINT exactly there.
_LOST_INTERRUPT = """
import os, signal, sys, weakref

def interrupt_where_exceptions_are_lost():
    class Thing:
        pass

    thing = Thing()
    ref = weakref.ref(thing, lambda _: os.kill(os.getpid(), signal.SIGINT))
    del thing
"""


def test_an_interrupt_lost_inside_the_start_up_imports_still_exits_130():
    code = (
        _LOST_INTERRUPT
        + """
class Hook:  # the interrupt comes as pricelab's own package is imported
    def find_spec(self, name, path=None, target=None):
        if name == "pricelab_cli.cli":
            sys.meta_path.remove(self)
            interrupt_where_exceptions_are_lost()
        return None

sys.meta_path.insert(0, Hook())
sys.argv = ["pricelab", "design", "--help"]
import pricelab_launch
pricelab_launch.main()
"""
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stdout == "" and "Traceback" not in done.stderr and "ignored" not in done.stderr


def test_an_interrupt_lost_inside_a_run_still_stops_it_before_its_commit(tmp_path):
    out = tmp_path / "design.json"
    code = (
        _LOST_INTERRUPT
        + f"""
import pricelab_cli.cli.commands.design as command

made = command.make_design

def make_design(*args, **kwargs):
    interrupt_where_exceptions_are_lost()
    return made(*args, **kwargs)

command.make_design = make_design
from pricelab_cli.cli import main
main(["design", "random-days", "--start", "2024-01-01", "--end", "2024-01-28", "-o", {str(out)!r}])
"""
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr.strip().splitlines()[-1] == (
        "pricelab: error: stopped by SIGINT; nothing was written (existing outputs are unchanged)."
    )
    assert "Traceback" not in done.stderr and "ignored" not in done.stderr
    assert not out.exists()
