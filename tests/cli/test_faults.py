"""Faults never cost data or a clear word: signals, cut commits, two writers, full disks,
damaged inputs, closed streams.

Each test reproduces a fault on the real command (a subprocess where the fault is a signal
or a kill, strace's fault injection where a system call must fail at a given moment, a
small tmpfs where a disk must be full) and checks the exit code, the one-line message, that
the previous outputs are intact (or put back by the next run), and that nothing is left
behind: no temporary file, no scratch folder, no process.
"""

from __future__ import annotations

import datetime as dt
import glob
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from pricelab_cli import io as pio
from pricelab_cli import scratch
from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.simulate import simulate_catalog, simulate_sales
from pricelab_cli.stopping import Stopped

START = dt.date(2026, 3, 2)
STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


def pricelab(*args) -> list[str]:
    return [sys.executable, "-m", "pricelab_cli", *map(str, args)]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A catalog, a time-bound design, its assignment and sales: the W folder of the faults."""
    folder = tmp_path_factory.mktemp("faults")
    products, _ = simulate_catalog(2_000, 10, 5, seed=4)
    design = make_design("time-bound", salt="faults", start=START, end=START + dt.timedelta(days=27))
    assignment = assign(design, products)
    sim = simulate_sales(products, assignment=assignment, history_days=120, seed=4)
    products.write_csv(folder / "products.csv")
    (folder / "tb.json").write_text(json.dumps(design.to_dict()))
    assignment.write_parquet(folder / "a.parquet")
    sim.sales.write_parquet(folder / "sales.parquet")
    other = make_design("time-bound", salt="other", start=START, end=START + dt.timedelta(days=13))
    (folder / "tb2.json").write_text(json.dumps(other.to_dict()))
    return folder


def _env(tmp: Path) -> dict[str, str]:
    (tmp / "scratch").mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp / "scratch"), "PYTHONUNBUFFERED": "1"}


def _group(pgid: int) -> list[str]:
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()


def _debris(*folders: Path) -> list[str]:
    """Temporary files, folders and journals of pricelab runs in ``folders``."""
    return sorted(p.name for f in folders for p in f.iterdir() if ".pl-" in p.name)


def _reaped_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ signals


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_mid_run_writes_nothing_and_leaves_no_scratch_or_worker(work, tmp_path, sig, code):
    """hpte with its partitions on disk and two worker processes, stopped by a signal: the
    earlier output is unchanged, no temporary file or scratch folder is left, no process of
    the run outlives it, and one line says what happened."""
    out = tmp_path / "e.csv"
    out.write_text("earlier results\n")
    env = _env(tmp_path)
    proc = subprocess.Popen(
        pricelab(
            "hpte",
            "--sales",
            work / "sales.parquet",
            "--assignment",
            work / "a.parquet",
            "-o",
            out,
            "--partition-rows",
            "20000",
            "--jobs",
            "2",
            "--bootstrap",
            "20000",
        ),
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    # Stopped once its partitions are on disk and its workers are up (or after 120 s).
    while time.monotonic() < deadline and proc.poll() is None:
        if glob.glob(str(tmp_path / "scratch" / f"pricelab-panel.pl-*-{proc.pid}-*")) and len(_group(proc.pid)) >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    name = signal.Signals(sig).name
    assert err.strip().splitlines() == [
        f"pricelab: error: stopped by {name}; nothing was written (existing outputs are unchanged)."
    ]
    # The workers are ended before the run exits; the pool's resource trackers follow within
    # moments, once the pipe from the run closes.
    deadline = time.monotonic() + 15
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _group(proc.pid) == [], "a process of the run outlived it"
    assert out.read_text() == "earlier results\n"
    assert _debris(tmp_path, tmp_path / "scratch") == []


def test_a_signal_while_an_output_is_written_removes_its_temporary_file(tmp_path):
    """The write phase: an output half written when the signal lands is removed with its
    temporary file, and the file it would have replaced is untouched."""
    target = tmp_path / "e.csv"
    target.write_text("earlier\n")
    with pytest.raises(Stopped), pio.output_transaction(), pio.atomic_path(target) as tmp:
        tmp.write_text("half of a new")
        raise Stopped(signal.SIGTERM)
    assert target.read_text() == "earlier\n"
    assert _debris(tmp_path) == []


@needs_strace
def test_a_signal_during_the_commit_waits_for_it_to_finish(work, tmp_path):
    """SIGTERM arriving as the outputs move into place (injected at the first rename) is
    held until the commit is complete: the outputs are whole and the run says so."""
    out = tmp_path / "x.csv"
    done = subprocess.run(
        [
            STRACE,
            "-f",
            "-o",
            os.devnull,
            "-e",
            "trace=rename,renameat,renameat2",
            "-e",
            "inject=rename,renameat,renameat2:signal=SIGTERM:when=1",
            *pricelab("assign", "--design", work / "tb.json", "--products", work / "products.csv", "-o", out, "-q"),
        ],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
    )
    assert done.returncode == 143, done.stderr
    assert "stopped by SIGTERM after its outputs were committed" in done.stderr
    assert pl.read_csv(out).height == 2_000 * 28
    assert json.loads((tmp_path / "x.csv.meta.json").read_text())["command"].startswith("pricelab assign")
    assert _debris(tmp_path) == []


def test_debris_of_a_run_that_is_gone_is_removed_by_the_next(work, tmp_path, run_cli):
    """kill -9 leaves temporary files; the next run that writes beside them removes those
    whose process is gone, and leaves a live run's alone."""
    dead, alive = _reaped_pid(), os.getpid()
    host = scratch.tag().split("-")[1]
    gone = tmp_path / f".e.csv.pl-{host}-{dead}-abcd1234.tmp"
    gone.write_text("partial")
    gone_folder = tmp_path / f".ad.pl-{host}-{dead}-abcd1234.tmp"
    gone_folder.mkdir()
    live = tmp_path / f".e.csv.pl-{host}-{alive}-abcd1234.tmp"
    live.write_text("in progress")
    result = run_cli(
        "assign", "--design", work / "tb.json", "--products", work / "products.csv", "-o", tmp_path / "e.csv", "-q"
    )
    assert result.code == 0, result.stderr
    assert not gone.exists() and not gone_folder.exists()
    assert live.exists()


# ------------------------------------------------------------------ commits


def _assign_folder(work: Path, out: Path, design: str = "tb.json", *pre: str, env=None):
    return subprocess.run(
        [
            *pre,
            *pricelab("assign", "--design", work / design, "--products", work / "products.csv", "-o", f"{out}/", "-q"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )


@needs_strace
def test_a_kill_while_a_folder_is_replaced_never_loses_it(work, tmp_path):
    """kill -9 at the replacing rename: the folder is the old one or the new one, never
    missing (a swap in one step), and the next run removes what the killed one left."""
    env = _env(tmp_path)
    out = tmp_path / "ad"
    assert _assign_folder(work, out, env=env).returncode == 0
    before = pl.read_parquet(out).sort("product_id", "date")
    killed = _assign_folder(
        work,
        out,
        "tb2.json",
        STRACE,
        "-f",
        "-o",
        os.devnull,
        "-e",
        "trace=rename,renameat,renameat2",
        "-e",
        "inject=rename,renameat,renameat2:signal=SIGKILL:when=1",
        env=env,
    )
    assert killed.returncode != 0
    assert out.is_dir()
    assert pl.read_parquet(out).sort("product_id", "date").equals(before)
    assert _assign_folder(work, out, "tb2.json", env=env).returncode == 0
    assert pl.read_parquet(out)["date"].max() == START + dt.timedelta(days=13)
    assert _debris(tmp_path) == []


def test_a_folder_moved_aside_by_a_killed_run_is_put_back(work, tmp_path, run_cli):
    """Where no swap exists, the old folder moves aside before the new one comes in; if the
    run dies between the two, the next run puts it back before anything else."""
    out = tmp_path / "ad"
    assert (
        run_cli("assign", "--design", work / "tb.json", "--products", work / "products.csv", "-o", f"{out}/", "-q").code
        == 0
    )
    host = scratch.tag().split("-")[1]
    aside = tmp_path / f".ad.pl-{host}-{_reaped_pid()}-0badc0de.old"
    out.rename(aside)
    result = run_cli(
        "assign", "--design", work / "tb.json", "--products", work / "products.csv", "-o", tmp_path / "other.csv", "-q"
    )
    assert result.code == 0
    assert out.is_dir() and not aside.exists()
    assert f"{out}: put back" in result.stderr


def test_the_fallback_swap_restores_the_old_folder_when_the_new_cannot_move_in(tmp_path, monkeypatch):
    """The two-rename replacement (no swap on this file system): a failed second rename
    puts the old folder back."""
    target, tmp = tmp_path / "ad", tmp_path / ".ad.new"
    target.mkdir()
    (target / "old").write_text("old")
    tmp.mkdir()
    monkeypatch.setattr(scratch, "exchange", lambda a, b: False)
    real_rename = os.rename

    def failing(src, dst):
        if Path(src) == tmp:
            raise OSError(5, "injected")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError):
        scratch.replace_folder(tmp, target)
    monkeypatch.setattr(os, "rename", real_rename)
    assert (target / "old").read_text() == "old"


def _wait_for_lock(folder: Path, proc: subprocess.Popen, seconds: float = 60) -> bool:
    """Wait until another process holds the commit lock of ``folder`` (it is in its commit)."""
    import fcntl

    deadline = time.monotonic() + seconds
    fd = os.open(folder, os.O_RDONLY)
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                return True
            time.sleep(0.05)
    finally:
        os.close(fd)
    return False


@needs_strace
def test_a_second_writer_waits_for_the_first_commit_then_gives_up_with_75(work, tmp_path):
    """Run A is paused inside its commit; run B, committing to the same folder, waits for
    A's lock, gives up with exit 75 and writes nothing; A then finishes whole."""
    env = _env(tmp_path)
    out = tmp_path / "ad"
    assert _assign_folder(work, out, env=env).returncode == 0
    a = subprocess.Popen(
        [
            STRACE,
            "-f",
            "-o",
            os.devnull,
            "-e",
            "trace=rename,renameat,renameat2",
            "-e",
            "inject=rename,renameat,renameat2:signal=SIGSTOP:when=1",
            *pricelab(
                "assign", "--design", work / "tb2.json", "--products", work / "products.csv", "-o", f"{out}/", "-q"
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert _wait_for_lock(tmp_path, a), "run A never reached its commit"
        b = _assign_folder(work, out, env={**env, "PRICELAB_LOCK_WAIT": "2"})
        assert b.returncode == 75, b.stderr
        assert "another pricelab run is committing its outputs in this folder" in b.stderr
        for pid in subprocess.run(["pgrep", "-P", str(a.pid)], capture_output=True, text=True).stdout.split():
            os.kill(int(pid), signal.SIGCONT)
        a.communicate(timeout=60)
    finally:
        if a.poll() is None:
            a.kill()
    assert a.returncode == 0
    assert pl.read_parquet(out)["date"].max() == START + dt.timedelta(days=13)
    assert _debris(tmp_path) == []


@needs_strace
def test_a_commit_cut_between_two_outputs_is_finished_by_the_next_run(work, tmp_path):
    """kill -9 between the renames of one run's outputs (a CSV and its provenance sidecar):
    the next run in the folder finishes the commit from its journal, so the two come from
    the same run."""
    env = _env(tmp_path)
    out = tmp_path / "x.csv"
    first = pricelab("assign", "--design", work / "tb.json", "--products", work / "products.csv", "-o", out, "-q")
    assert subprocess.run(first, env=env).returncode == 0
    killed = subprocess.run(
        [
            STRACE,
            "-f",
            "-o",
            os.devnull,
            "-e",
            "trace=rename,renameat,renameat2",
            "-e",
            "inject=rename,renameat,renameat2:signal=SIGKILL:when=2",
            *pricelab("assign", "--design", work / "tb2.json", "--products", work / "products.csv", "-o", out, "-q"),
        ],
        env=env,
        capture_output=True,
    )
    assert killed.returncode != 0
    assert any(name.endswith(".journal") for name in _debris(tmp_path))
    following = subprocess.run(
        pricelab("assign", "--design", work / "tb.json", "--products", work / "products.csv", "-o", tmp_path / "y.csv"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert following.returncode == 0
    assert "a cut commit of an earlier run was finished" in following.stderr
    meta = json.loads((tmp_path / "x.csv.meta.json").read_text())
    assert f"--design {work / 'tb2.json'}" in meta["command"]
    assert pl.read_csv(out)["date"].str.to_date().max() == START + dt.timedelta(days=13)
    assert _debris(tmp_path) == []


# ------------------------------------------------------------------ full disks, damaged inputs, closed streams


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


@needs_root
def test_a_full_disk_names_the_output_and_keeps_the_old_one(work, small_disk, run_cli):
    out = small_disk / "a.csv"
    out.write_text("earlier\n")
    result = run_cli("assign", "--design", work / "tb.json", "--products", work / "products.csv", "-o", out, "-q")
    assert result.code == 73
    assert result.stderr.startswith(f"pricelab: error: {out}: could not be written")
    assert "full" in result.stderr
    assert out.read_text() == "earlier\n"
    assert _debris(small_disk) == []


@needs_root
def test_a_full_scratch_folder_says_where_and_how_to_move_it(work, small_disk, tmp_path):
    env = {**os.environ, "TMPDIR": str(small_disk)}
    done = subprocess.run(
        pricelab(
            "hpte",
            "--sales",
            work / "sales.parquet",
            "--assignment",
            work / "a.parquet",
            "-o",
            tmp_path / "e.csv",
            "--partition-rows",
            "20000",
            "--jobs",
            "1",
            "-q",
        ),
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 73, done.stderr
    assert f"the scratch folder {str(small_disk)!r} has no room for the sales partitions" in done.stderr
    assert "TMPDIR" in done.stderr
    assert not (tmp_path / "e.csv").exists()
    assert _debris(small_disk) == []


def test_closed_stdout_and_a_full_device_are_named(work, tmp_path):
    base = pricelab("assign", "--design", work / "tb.json", "--products", work / "products.csv", "-q")
    closed = subprocess.run(
        [*base, "-o", "-"],
        capture_output=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        close_fds=True,
        preexec_fn=lambda: os.close(1),
    )
    assert closed.returncode == 73, closed.stderr
    assert "standard output is closed" in closed.stderr
    full = subprocess.run([*base, "-o", "/dev/full"], capture_output=True, text=True)
    assert full.returncode == 73
    assert full.stderr.startswith("pricelab: error: /dev/full: the device or pipe refused the output")


def _damage(source: Path, target: Path) -> None:
    data = bytearray(source.read_bytes())
    at = len(data) // 3
    data[at : at + 2000] = bytes(b ^ 0xFF for b in data[at : at + 2000])
    target.write_bytes(bytes(data))


@pytest.mark.parametrize("partition_rows", [None, "20000"])
def test_a_damaged_page_in_the_streamed_sales_is_named(work, tmp_path, run_cli, partition_rows):
    bad = tmp_path / "bad.parquet"
    _damage(work / "sales.parquet", bad)
    extra = ["--partition-rows", partition_rows] if partition_rows else []
    result = run_cli("hpte", "--sales", bad, "--assignment", work / "a.parquet", "-o", tmp_path / "e.csv", "-q", *extra)
    assert result.code == 66, result.stderr
    assert result.stderr.startswith(f"pricelab: error: {bad}: part of the file is damaged")
    assert not (tmp_path / "e.csv").exists()


def test_a_damaged_page_in_ipws_sales_is_named(work, tmp_path, run_cli):
    bad = tmp_path / "bad.parquet"
    _damage(work / "sales.parquet", bad)
    edges = tmp_path / "edges.csv"
    edges.write_text("src,dst,weight\n1,2,0.5\n")
    result = run_cli(
        "ipw",
        "--sales",
        bad,
        "--assignment",
        work / "a.parquet",
        "--edges",
        edges,
        "--design",
        work / "tb.json",
        "--products",
        work / "products.csv",
        "-o",
        tmp_path / "s.csv",
        "-q",
    )
    assert result.code == 66, result.stderr
    assert result.stderr.startswith(f"pricelab: error: {bad}: part of the file is damaged")
    assert not (tmp_path / "s.csv").exists()


def test_a_truncated_gzip_is_named_as_a_file_and_on_stdin(work, tmp_path, run_cli):
    whole = gzip.compress((work / "products.csv").read_bytes())
    cut = tmp_path / "p.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    args = ["assign", "--design", work / "tb.json", "-o", tmp_path / "a.csv", "-q"]
    as_file = run_cli(*args, "--products", cut)
    assert as_file.code == 66 and f"{cut}: the gzip file ends before its end marker" in as_file.stderr
    on_stdin = run_cli(*args, "--products", "-", stdin=whole[: len(whole) // 2])
    assert on_stdin.code == 66 and "standard input: the gzip file ends before its end marker" in on_stdin.stderr


def test_utf16_and_a_ragged_row_are_named(work, tmp_path, run_cli):
    utf16 = tmp_path / "u.csv"
    utf16.write_bytes("product_id,group\n1,a\n".encode("utf-16"))
    result = run_cli("assign", "--design", work / "tb.json", "--products", utf16, "-o", tmp_path / "a.csv", "-q")
    assert result.code == 65 and "UTF-16" in result.stderr and "UTF-8" in result.stderr
    ragged = tmp_path / "r.csv"
    ragged.write_text("product_id,group\n1,a\n2,b,c\n3,d\n")
    result = run_cli("assign", "--design", work / "tb.json", "--products", ragged, "-o", tmp_path / "a.csv", "-q")
    assert result.code == 65 and "line 3 has 3 fields and the header has 2" in result.stderr


# ------------------------------------------------------------------ an object store that fails part-way


@pytest.fixture(scope="module")
def s3_sales(work, s3_server):
    bucket = s3_server.create_bucket()
    s3_server.upload(work / "sales.parquet", bucket)
    return f"s3://{bucket}/sales.parquet"


def _hpte_through(proxy, s3_server, work, uri, out, *extra):
    env = {**os.environ, **s3_server.env, "AWS_ENDPOINT_URL": proxy.endpoint}
    start = time.monotonic()
    done = subprocess.run(
        pricelab(
            "hpte", "--sales", uri, "--assignment", work / "a.parquet", "-o", out, "--bootstrap", "50", "-q", *extra
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, time.monotonic() - start


@pytest.mark.parametrize("mode", ["drop", "stall", "trickle"])
def test_an_object_store_failing_part_way_is_named_and_bounded(work, s3_server, s3_sales, tmp_path, mode):
    """A store that closes its connections, goes silent or slows to 4 KB/s after the read
    has begun (a proxy in front of the S3 server counts the requests of a clean run and
    misbehaves at the last one): exit 66 naming the URI, within the timeout given, and a
    message that says how to give a slow store longer."""
    import importlib

    FaultyProxy = importlib.import_module("pricelab_tests_object_store").FaultyProxy
    clean = FaultyProxy(s3_server.endpoint)
    try:
        done, clean_s = _hpte_through(clean, s3_server, work, s3_sales, tmp_path / "clean.csv")
    finally:
        clean.close()
    assert done.returncode == 0, done.stderr
    faulty = FaultyProxy(s3_server.endpoint, mode, after=clean.requests - 1)
    try:
        done, seconds = _hpte_through(
            faulty, s3_server, work, s3_sales, tmp_path / "e.csv", "--storage-option", "timeout=4s"
        )
    finally:
        faulty.close()
    assert done.returncode == 66, done.stderr
    assert done.stderr.startswith(f"pricelab: error: {s3_sales}: ")
    assert "--storage-option timeout=" in done.stderr
    assert "Traceback" not in done.stderr
    if mode != "drop":
        assert seconds < clean_s + 4 + 5, f"{seconds:.1f} s against a clean run's {clean_s:.1f} s and a 4 s timeout"
    assert not (tmp_path / "e.csv").exists()


def test_sales_that_start_after_the_experiment_say_so(work, tmp_path, run_cli):
    """Not "products have no sales rows": they have rows, all after the experiment."""
    early = make_design("time-bound", salt="early", start=dt.date(2020, 3, 2), end=dt.date(2020, 3, 29))
    products = pl.read_csv(work / "products.csv")
    assign(early, products).write_parquet(tmp_path / "early.parquet")
    result = run_cli(
        "hpte",
        "--sales",
        work / "sales.parquet",
        "--assignment",
        tmp_path / "early.parquet",
        "-o",
        tmp_path / "e.csv",
        "-q",
    )
    assert result.code == 65
    assert "its sales start on" in result.stderr and "after the experiment's last date 2020-03-29" in result.stderr


def test_end_workers_ends_every_worker_of_a_live_pool():
    """The pool's workers are ended by their pids (loky's process objects have no kill()), so
    none is left for the interpreter's exit to wait for, even when the pool's own shutdown
    (from a thread of its own) has not run yet."""
    code = (
        "import os, joblib\n"
        "from joblib.externals.loky import reusable_executor\n"
        "from pricelab_cli import stopping\n"
        "joblib.Parallel(n_jobs=2)(joblib.delayed(os.getpid)() for _ in range(4))\n"
        "pids = [p.pid for p in reusable_executor._executor._processes.values()]\n"
        "assert len(pids) == 2, pids\n"
        "# The pool's own shutdown runs in a thread that may come too late; without it the\n"
        "# workers must still end.\n"
        "reusable_executor._executor.shutdown = lambda *a, **k: None\n"
        "stopping.end_workers()\n"
        "alive = [p for p in pids if os.path.exists(f'/proc/{p}') and open(f'/proc/{p}/stat').read().split(')')[-1].split()[0] != 'Z']\n"
        "print('alive', alive)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "alive []", done.stdout
