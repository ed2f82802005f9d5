"""A real two-node Ray cluster on this machine, for the tests and ``make bench-ray``.

``LocalRayCluster`` starts a head node and a worker node with the ``ray start`` CLI, each
``--block``-ed in a process group of its own (``start_new_session``), and ends them by
killing those groups: ``ray stop`` would end every Ray process on the machine, other users'
included.

Addresses: Ray 2.60 rewrites ``--node-ip-address 127.0.0.1`` (and ``localhost``) into the
machine's other address, so the nodes advertise other loopback addresses instead (Linux
routes all of 127.0.0.0/8 to the loopback device): the head ``127.0.0.2``, the worker
``127.0.0.3``. A driver started on this machine then attaches to the head, and the worker
can be killed without taking the driver with it. (Ray's GCS and raylet servers still listen
on every interface; Ray has no option to narrow that.) Token authentication is switched off
(``RAY_AUTH_MODE=disabled``) for this throwaway cluster, the dashboard is not started and
usage statistics are not sent.

A watcher (``tests/reaper.py``) kills each node's group if the process that started it dies
without stopping it (a run killed by a timeout).

``ray_cluster`` (session scope, one per xdist worker; the Ray tests share one xdist group)
yields a started cluster whose ``env`` a test passes to the ``pricelab`` processes it runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
# Generous: on a machine whose cores are all busy, starting a node and a driver's first
# ray.init take minutes rather than seconds.
STARTUP_SECONDS = 300
PROBE_SECONDS = 180
# What `ray start` prints when its raylet missed Ray's fixed 30 s wait to register, and how
# many times a node is then started again.
STARTUP_TIMEOUT_LINE = "timed out during startup"
NODE_RESTARTS = 3
# Each node's shared-memory object store (Ray's minimum is 75 MiB).
OBJECT_STORE_BYTES = 300 * 1024 * 1024
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _reaper():
    """tests/reaper.py, loaded by path (the tests folder is not a package)."""
    import importlib.util

    name = "pricelab_tests_reaper"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("reaper.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


def _ahead_of_the_load() -> None:
    """Run a node ahead of other work where allowed: it stands for another machine, and Ray
    gives a starting raylet a fixed 30 s, which a machine whose cores are all busy can miss."""
    with contextlib.suppress(OSError):
        os.nice(-10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _end_group(process: subprocess.Popen | None, grace: float = 10.0) -> None:
    """End a node: SIGTERM to its own process group, SIGKILL to what is left after ``grace``."""
    if process is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(process.pid):
            time.sleep(0.1)
        if not _group_alive(process.pid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL was sent
        process.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    # A zombie leader still counts as a member until reaped: ask /proc who is left.
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


@dataclasses.dataclass
class LocalRayCluster:
    """A head and a worker node on this machine (see the module docstring)."""

    root: Path
    head_cpus: int = 1
    worker_cpus: int = 1
    object_store_bytes: int = OBJECT_STORE_BYTES
    port: int = 0
    head: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment a driver (``pricelab --engine ray``) runs with."""
        return {**os.environ, **RAY_ENV, "RAY_ADDRESS": self.address}

    def start(self) -> LocalRayCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_head()
        self._wait_for(1)
        self.start_worker()
        return self

    def start_head(self) -> None:
        """Start (or start again, on a fresh port) the head node."""
        _end_group(self.head, grace=2.0)
        self.port = _free_port()
        self.head = self._node(
            "head",
            ["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.root / 'ray'}"],
            HEAD_IP,
            self.head_cpus,
        )

    def start_worker(self) -> None:
        """Start (or start again) the worker node and wait until the cluster has two live nodes."""
        self._start_worker_node()
        self._wait_for(2)

    def _start_worker_node(self) -> None:
        _end_group(self.worker, grace=2.0)
        self.worker = self._node("worker", [f"--address={self.address}"], WORKER_IP, self.worker_cpus)

    def _node(self, name: str, args: list[str], ip: str, cpus: int) -> subprocess.Popen:
        with open(self.root / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                [
                    _ray_cli(),
                    "start",
                    "--block",
                    *args,
                    f"--node-ip-address={ip}",
                    f"--num-cpus={cpus}",
                    f"--object-store-memory={self.object_store_bytes}",
                    "--disable-usage-stats",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **RAY_ENV},
                start_new_session=True,
                preexec_fn=_ahead_of_the_load,
            )
        # A run killed before its teardown still ends the node (tests/reaper.py).
        _reaper().tie_to_this_run(process.pid)
        return process

    def alive_nodes(self) -> list[dict]:
        """The cluster's live nodes, asked in a separate driver process."""
        code = (
            f"import json, ray; ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False); "
            "print(json.dumps([{'id': n['NodeID'], 'ip': n['NodeManagerAddress']} for n in ray.nodes() if n['Alive']]))"
        )
        try:
            out = subprocess.run(
                [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=PROBE_SECONDS
            )
        except subprocess.TimeoutExpired:
            return []  # asked again until STARTUP_SECONDS have passed
        if out.returncode != 0:
            return []
        import json

        return json.loads(out.stdout.strip().splitlines()[-1])

    def _wait_for(self, n_nodes: int) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        restarts = 0
        while True:
            for name, process in (("head", self.head), ("worker", self.worker)):
                if process is None or process.poll() is None:
                    continue
                # `ray start` gives its own raylet a fixed 30 s to register; a starved machine
                # can miss that, and the node is then started again while time remains.
                if STARTUP_TIMEOUT_LINE in self.log(name) and restarts < NODE_RESTARTS and time.monotonic() < deadline:
                    restarts += 1
                    with open(self.root / f"{name}.log", "a") as log:
                        log.write(f"\n[the {name} node missed Ray's startup wait; started again]\n")
                    (self.start_head if name == "head" else self._start_worker_node)()
                    continue
                self.stop()
                raise RuntimeError(f"the Ray {name} node exited with {process.returncode}:\n{self.log(name)}")
            if len({n["ip"] for n in self.alive_nodes()} & {HEAD_IP, WORKER_IP}) >= n_nodes:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the Ray cluster did not reach {n_nodes} node(s) in {STARTUP_SECONDS} s:\n"
                    f"{self.log('head')}\n{self.log('worker')}"
                )
            time.sleep(0.5)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def worker_raylet_pid(self) -> int:
        """The worker node's raylet (a member of the worker's process group)."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == self.worker.pid and cmd.endswith(b"/raylet"):
                return int(entry)
        raise RuntimeError("the worker node has no raylet process")

    def stop(self) -> None:
        # A throwaway cluster: a short grace, then SIGKILL (Ray's own orderly stop takes
        # ten seconds and more, at the end of every run that used it).
        _end_group(self.worker, grace=2.0)
        _end_group(self.head, grace=2.0)
        self.worker = self.head = None


@pytest.fixture(scope="session")
def ray_cluster():
    """A started two-node cluster for the session, stopped at its end whatever happened."""
    pytest.importorskip("ray", reason="the Ray tests need the pricelab[ray] extra (make test installs it)")
    # A short folder: Ray's unix sockets live under it and their paths are limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="prl-ray-", dir="/tmp"))
    cluster = LocalRayCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
