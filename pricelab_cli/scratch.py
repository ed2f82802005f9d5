"""A run's temporary files and folders, and the moves that commit its outputs.

Every temporary path a run makes carries its host and process id
(``.e.csv.pl-<host>-<pid>-<random>.tmp`` beside an output, ``pricelab-panel.pl-...tmp`` in
the scratch folder), so a later run can tell debris from work in progress: ``sweep`` removes
what a run that is gone left behind (a kill -9, a power cut), puts back a folder that was
moved aside and never replaced, and finishes a commit that was cut between its moves.

A commit (``commit``) holds an exclusive lock on each folder it writes into, so two runs
never interleave their moves; it writes a journal of its moves first, so that a commit cut
half-way is finished by the next run rather than leaving one run's outputs beside
another's. A folder replaces a folder in one atomic step where the system can swap two
paths (Linux ``renameat2(RENAME_EXCHANGE)``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pricelab_cli.errors import PricelabError

# How long a commit waits for another run's commit in the same folder before giving up
# (seconds; PRICELAB_LOCK_WAIT overrides it).
LOCK_WAIT_S = 30.0
LOCK_WAIT_ENV = "PRICELAB_LOCK_WAIT"
_KINDS = ("tmp", "old", "journal")
_TAGGED = re.compile(r"\.pl-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^.]*\.(?P<kind>tmp|old|journal)$")


class BusyError(PricelabError):
    """Another run is committing into the same folder (exit 75, EX_TEMPFAIL: try again)."""

    exit_code = 75


@functools.cache
def _host() -> str:
    # Imported here, as ctypes and json below: every command sweeps at its start, and most
    # never need them (each costs milliseconds of start-up).
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def tag() -> str:
    """This run's mark in its temporary names: ``pl-<host>-<pid>-``."""
    return f"pl-{_host()}-{os.getpid()}-"


def temp_file(target: Path, folder: Path | None) -> Path:
    """A new empty temporary file for ``target`` in ``folder`` (None: the scratch folder)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.{tag()}", suffix=".tmp", dir=folder)
    os.close(fd)
    return Path(name)


def temp_folder(target: Path, parent: Path) -> Path:
    """A new empty temporary folder for ``target`` in ``parent``."""
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag()}", suffix=".tmp", dir=parent))


def scratch_folder(what: str) -> Path:
    """A new folder in the scratch folder (``TMPDIR``) for this run's working files."""
    return Path(tempfile.mkdtemp(prefix=f"pricelab-{what}.{tag()}", suffix=".tmp"))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _orphans(folder: Path) -> list[tuple[Path, str]]:
    """(path, kind) of the tagged entries in ``folder`` left by a run of this host that is gone."""
    found = []
    host = _host()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = _TAGGED.search(entry.name)
        if match and match["host"] == host and not _alive(int(match["pid"])):
            found.append((Path(entry.path), match["kind"]))
    return found


def sweep(folders: Iterable[Path]) -> list[str]:
    """Clean up after runs that are gone, in ``folders`` and the scratch folder: finish their
    cut commits, put back folders moved aside, remove their temporary files. Returns what
    was restored or finished, for the run to say."""
    done: list[str] = []
    seen: set[Path] = set()
    for folder in [*folders, Path(tempfile.gettempdir())]:
        with contextlib.suppress(OSError):
            folder = folder.resolve()
        if folder in seen:
            continue
        seen.add(folder)
        orphans = _orphans(folder)
        for path, kind in orphans:
            if kind == "journal" and path.exists():
                done += _finish(path)
        for path, kind in orphans:
            if kind == "old" and (path.exists() or path.is_symlink()):
                target = path.with_name(path.name[1 : path.name.rindex(".pl-")])
                if not (target.exists() or target.is_symlink()):
                    os.rename(path, target)
                    done.append(f"{target}: put back (a run was stopped while replacing it)")
                else:
                    _remove(path)
            elif kind == "tmp":
                _remove(path)
    return done


# ------------------------------------------------------------------ the moves of a commit


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system cannot."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(tmp: Path, target: Path) -> None:
    """Put the finished folder ``tmp`` at ``target``, replacing what is there.

    A swap where the system has one (``target`` is never absent); elsewhere the old folder
    moves aside first (a tagged ``.old`` that ``sweep`` puts back if the run dies before
    the new one is in place)."""
    if not (target.exists() or target.is_symlink()):
        os.rename(tmp, target)
        return
    if not target.is_symlink() and exchange(tmp, target):
        _remove(tmp)  # the old folder, now under the temporary name
        return
    aside = target.with_name(f".{target.name}.{tag()}{os.urandom(4).hex()}.old")
    os.rename(target, aside)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(aside, target)
        raise
    _remove(aside)


def _identity(path: Path) -> list[int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return [st.st_dev, st.st_ino]


def _finish(journal: Path) -> list[str]:
    """Finish the moves a journal lists (those whose new file or folder is not in place
    yet), then remove the journal's copies."""
    import json

    try:
        moves = json.loads(journal.read_text())
    except (OSError, ValueError):
        _remove(journal)
        return []
    finished = []
    for move in moves["moves"]:
        tmp, target, identity = Path(move["tmp"]), Path(move["target"]), move["identity"]
        if _identity(target) == identity:
            continue  # in place already
        if _identity(tmp) == identity:
            (replace_folder if move["folder"] else os.replace)(tmp, target)
            finished.append(str(target))
    for copy in moves["copies"]:
        _remove(Path(copy))
    return [f"{t}: a cut commit of an earlier run was finished" for t in finished]


@contextlib.contextmanager
def _locked(folders: list[Path], wait_s: float) -> Iterator[None]:
    """Hold an exclusive lock on each folder (in a fixed order, so two runs cannot each
    wait for the other)."""
    with contextlib.ExitStack() as stack:
        for folder in sorted(set(folders)):
            try:
                fd = os.open(folder, os.O_RDONLY)
            except OSError:
                continue
            stack.callback(os.close, fd)
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise BusyError(
                            f"{folder}: another pricelab run is committing its outputs in this folder and has not "
                            f"finished after {wait_s:.0f} s; nothing was written. Run again once it has ended."
                        ) from None
                    time.sleep(0.05)
                except OSError:
                    break  # a file system without locks: the journal still protects the outputs
        yield


def commit(files: list[tuple[Path, Path]], folders: list[tuple[Path, Path]], wait_s: float | None = None) -> None:
    """Move each finished (temporary, target) file and folder into place, together.

    Under a lock on every folder written into; with a journal of the moves in each of those
    folders while they run, which the next run's ``sweep`` follows to finish them should
    this process die between two moves."""
    moves = [(tmp, target, False) for tmp, target in files] + [(tmp, target, True) for tmp, target in folders]
    if not moves:
        return
    parents = [target.parent.resolve() for _, target, _ in moves]
    with _locked(parents, _lock_wait() if wait_s is None else wait_s):
        copies = []
        if len(moves) > 1:
            import json

            name = f".pricelab-commit.{tag()}{os.urandom(4).hex()}.journal"
            copies = [str(parent / name) for parent in sorted(set(parents))]
            record = {
                "moves": [
                    {
                        "tmp": str(tmp.resolve()),
                        "target": str(target.resolve()),
                        "folder": folder,
                        "identity": _identity(tmp),
                    }
                    for tmp, target, folder in moves
                ],
                "copies": copies,
            }
            for copy in copies:
                _write_synced(Path(copy), json.dumps(record))
        try:
            for tmp, target, folder in moves:
                (replace_folder if folder else os.replace)(tmp, target)
        finally:
            for copy in copies:
                _remove(Path(copy))


def _lock_wait() -> float:
    value = os.environ.get(LOCK_WAIT_ENV, "").strip()
    try:
        return max(0.0, float(value)) if value else LOCK_WAIT_S
    except ValueError:
        raise BusyError(f"{LOCK_WAIT_ENV}={value!r} is not a number of seconds.") from None


def _write_synced(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
