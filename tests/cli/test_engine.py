"""--engine local|ray: the same answers on a real two-node Ray cluster as on this machine.

The cluster tests start a head and a worker node with the ``ray start`` CLI (see
tests/ray_cluster.py), run the real ``pricelab`` command in a process of its own with
``RAY_ADDRESS`` set, as a user would, and compare its output bytes with the local engine's.
They share one xdist group, so one cluster serves them all.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import _run as run

PRICELAB = str(Path(sys.executable).with_name("pricelab"))
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
ray_group = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A random-days chain on a simulated catalog of 2,500 products: with partitions of
    40,000 sales rows, hpte and ipw lay out three partitions of products (whole blocks of
    1,024), so every step of theirs has several tasks."""
    d = tmp_path_factory.mktemp("engine")
    steps = [
        [
            "simulate",
            "catalog",
            "--n-products",
            "2500",
            "--n-groups",
            "100",
            "--seed",
            "2",
            "-o",
            d / "products.csv",
            "--edges-out",
            d / "edges.parquet",
        ],
        [
            "design",
            "random-days",
            "--start",
            "2026-03-02",
            "--end",
            "2026-03-15",
            "--salt",
            "engine",
            "-o",
            d / "design.json",
        ],
        ["assign", "--design", d / "design.json", "--products", d / "products.csv", "-o", d / "assignment.parquet"],
        [
            "simulate",
            "sales",
            "--products",
            d / "products.csv",
            "--assignment",
            d / "assignment.parquet",
            "--edges",
            d / "edges.parquet",
            "--history-days",
            "42",
            "--seed",
            "3",
            "-o",
            f"{d}/sales/",
        ],
    ]
    for step in steps:
        result = run([str(a) for a in step] + ["-q"])
        assert result.code == 0, result.stderr
    return d


def _hpte_args(d: Path, out: Path) -> list[str]:
    return [
        "hpte",
        "--sales",
        str(d / "sales"),
        "--assignment",
        str(d / "assignment.parquet"),
        "--features",
        str(d / "products.csv"),
        "--outcome",
        "units",
        "--outcome",
        "revenue",
        "--bootstrap",
        "100",
        "--seed",
        "4",
        "--partition-rows",
        "40000",
        "-o",
        str(out / "effects.csv"),
        "--cate-out",
        str(out / "cate.parquet"),
    ]


def _pricelab(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PRICELAB, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ no cluster needed


def test_ray_without_ray_address_says_how_to_start_one(chain, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = run(_hpte_args(chain, tmp_path) + ["--engine", "ray"])
    assert result.code == 1
    assert "RAY_ADDRESS is not set" in result.stderr and "ray start --head" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "effects.csv").exists() and not (tmp_path / "cate.parquet").exists()


def test_an_unreachable_cluster_is_a_clear_error(chain, tmp_path):
    pytest.importorskip("ray")
    args = [
        "spillover-graph",
        "--sales",
        str(SAMPLE / "history.parquet"),
        "--products",
        str(SAMPLE / "products.csv"),
        "--engine",
        "ray",
        "-o",
        str(tmp_path / "edges.csv"),
    ]
    # The discard port: nothing listens there.
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9", "RAY_AUTH_MODE": "disabled"}
    # pricelab gives a connection 10 s; the rest of the margin is for a busy machine's start-up.
    result = subprocess.run([PRICELAB, *args], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 1, result.stderr
    assert "could not connect to the Ray cluster at RAY_ADDRESS='127.0.0.1:9'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "edges.csv").exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_unknown_engine_is_a_usage_error(chain, tmp_path, monkeypatch, how):
    args = _hpte_args(chain, tmp_path)
    if how == "flag":
        args += ["--engine", "spark"]
    else:
        monkeypatch.setenv("PRICELAB_ENGINE", "spark")
    result = run(args)
    assert result.code == 2
    assert ("--engine" if how == "flag" else "PRICELAB_ENGINE") + " 'spark' is not one of: local, ray" in result.stderr
    assert not (tmp_path / "effects.csv").exists()


def test_the_local_engine_never_imports_ray(chain, tmp_path):
    code = (
        "import sys\n"
        "from pricelab_cli.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('ray' in sys.modules)\n"
    )
    args = _hpte_args(chain, tmp_path) + ["-q", "--engine", "local"]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "effects.csv").exists()


# ------------------------------------------------------------------ on a two-node cluster


def _both_nodes(stderr: str) -> None:
    assert "(2 nodes, 2 CPUs)" in stderr and "ran on 2 nodes" in stderr, stderr


@ray_group
def test_hpte_on_ray_gives_the_local_bytes_and_uses_both_nodes(ray_cluster, chain, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    local.mkdir(), remote.mkdir()
    args = _hpte_args(chain, local)
    assert run(args).code == 0
    # PRICELAB_ENGINE rather than the flag: the command line (kept in the Parquet
    # provenance) is then the same, so every output file must be the same bytes.
    result = _pricelab(_hpte_args(chain, remote), {**ray_cluster.env, "PRICELAB_ENGINE": "ray"})
    assert result.returncode == 0, result.stderr
    _both_nodes(result.stderr)
    for name in ("effects.csv", "cate.parquet"):
        assert (remote / name).read_bytes() == (local / name).read_bytes(), name
    assert pl.read_csv(remote / "effects.csv").height == 2
    # Three partitions: each of the map steps ran a task per partition (and more).
    assert int(re.search(r"; (\d+) tasks ran", result.stderr).group(1)) >= 25, result.stderr


@ray_group
def test_spillover_graph_ipw_and_power_on_ray_give_the_local_bytes(ray_cluster, chain, tmp_path):
    d = chain
    commands = {
        "edges.csv": [
            "spillover-graph",
            "--sales",
            str(SAMPLE / "history.parquet"),
            "--products",
            str(SAMPLE / "products.csv"),
            "--all-pairs",
            "{out}/pairs.csv",
        ],
        "ipw.csv": [
            "ipw",
            "--sales",
            str(d / "sales"),
            "--assignment",
            str(d / "assignment.parquet"),
            "--edges",
            str(d / "edges.parquet"),
            "--design",
            str(d / "design.json"),
            "--products",
            str(d / "products.csv"),
            "--bootstrap",
            "100",
        ],
        "power.csv": [
            "power",
            "--history",
            str(SAMPLE / "history.parquet"),
            "--products",
            str(SAMPLE / "products.csv"),
            "--design",
            str(d / "design.json"),
            "--reps",
            "4",
            "--interval-reps",
            "2",
            "--bootstrap",
            "40",
            "--seed",
            "5",
            "--repetitions-out",
            "{out}/reps.csv",
        ],
    }
    for output, command in commands.items():
        outs = {}
        for engine in ("local", "ray"):
            out = tmp_path / f"{output}-{engine}"
            out.mkdir()
            args = [a.replace("{out}", str(out)) for a in command] + ["-o", str(out / output), "--engine", engine]
            result = _pricelab(args, ray_cluster.env)
            assert result.returncode == 0, (output, engine, result.stderr)
            if engine == "ray":
                _both_nodes(result.stderr)
            outs[engine] = out
        for file in outs["local"].iterdir():
            if not file.name.endswith(".meta.json"):  # the provenance records the command line, --engine included
                assert (outs["ray"] / file.name).read_bytes() == file.read_bytes(), file.name


def _wait_for_the_driver(ray_cluster, process: subprocess.Popen, then: float) -> None:
    """Wait until the pricelab run has connected to the cluster (its driver log, named by its
    pid, appears; its first tasks are then under way), and ``then`` seconds more."""
    logs = ray_cluster.root / "ray" / "session_latest" / "logs"
    deadline = time.monotonic() + 180  # a driver's first connection takes minutes on a busy machine
    while not any(str(process.pid) in p.name for p in logs.glob("*driver*")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    time.sleep(then)
    assert process.poll() is None, "hpte ended before the fault could be injected: give it more work"


@pytest.fixture(scope="module")
def local_hpte(chain, tmp_path_factory):
    """The chain's hpte outputs from the local engine."""
    local = tmp_path_factory.mktemp("local-hpte")
    assert run(_hpte_args(chain, local)).code == 0
    return local


@ray_group
@pytest.mark.parametrize("then", [0.5, 1.0, 2.0])
def test_a_worker_lost_in_the_middle_of_hpte_ends_in_a_retried_success_or_a_clear_error(
    ray_cluster, chain, local_hpte, tmp_path, then
):
    """The worker node's raylet is killed ``then`` seconds after the driver connects: early
    in the run, while the sales are partitioned, or while they are detrended. The lost
    partitions are rebuilt by re-running their tasks on the head node, whose one CPU must
    not be held by a task waiting for them (it was, and the run waited for ever, until
    tasks were given their inputs as direct arguments)."""
    local, remote = local_hpte, tmp_path / "ray"
    remote.mkdir()
    process = subprocess.Popen(
        [PRICELAB, *_hpte_args(chain, remote)],
        env={**ray_cluster.env, "PRICELAB_ENGINE": "ray"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_the_driver(ray_cluster, process, then)
        os.kill(ray_cluster.worker_raylet_pid(), signal.SIGKILL)
        _, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
        ray_cluster.start_worker()
    print(f"exit {process.returncode}; {stderr.strip().splitlines()[0] if stderr.strip() else ''}")
    assert "Traceback" not in stderr
    if process.returncode == 0:
        for name in ("effects.csv", "cate.parquet"):
            assert (remote / name).read_bytes() == (local / name).read_bytes(), name
    else:
        assert process.returncode == 1, stderr
        assert "Ray cluster" in stderr and "nothing was written" in stderr, stderr
        assert not (remote / "effects.csv").exists() and not (remote / "cate.parquet").exists()


@ray_group
@pytest.mark.parametrize("then", [0.0, 0.5], ids=["while-connecting", "connected"])
def test_sigterm_on_ray_unwinds_like_ctrl_c(ray_cluster, chain, tmp_path, then):
    """SIGTERM to a driver as it connects to the cluster or once connected: one line, exit
    143, nothing written, and no stack dump from Ray's core (whose own handler is installed
    while it connects, and which the run replaces)."""
    process = subprocess.Popen(
        [PRICELAB, *_hpte_args(chain, tmp_path)],
        env={**ray_cluster.env, "PRICELAB_ENGINE": "ray"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_the_driver(ray_cluster, process, then)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines() == [
        "pricelab: error: stopped by SIGTERM; nothing was written (existing outputs are unchanged)."
    ]
    assert not (tmp_path / "effects.csv").exists() and not (tmp_path / "cate.parquet").exists()
