"""The hash draws behind every assignment: FNV-1a keys of the units and SplitMix64 draws.

A unit's key is the 64-bit FNV-1a hash of ``salt \\x1f level \\x1f unit``; its draw in a period
mixes the key with the period number by the SplitMix64 finaliser and reads the top 53 bits as
a uniform number in [0, 1). ``assign``, ``ipw``'s replays and the balanced switchback's
schedule all draw from here, so they agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from pricelab_cli.errors import DataError

# Strings hashed per block of this many, so the temporaries stay small.
CHUNK_ROWS = 1 << 20

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def fnv1a64(labels: pl.Series, start: np.uint64 = _FNV_OFFSET) -> np.ndarray:
    """64-bit FNV-1a hash of each UTF-8 string, vectorised over strings.

    ``start`` is the state to continue from: FNV-1a is a left fold, so hashing ``prefix + s``
    equals hashing ``s`` from the state after ``prefix``. The loop runs over blocks of
    strings and character positions (a few dozen), never over single strings.
    """
    arr = pa.array(labels.cast(pl.String).to_arrow(), type=pa.large_string())
    if arr.null_count:
        raise DataError("cannot hash a missing (null) identifier.")
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data_buf = arr.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, np.uint8)
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    h = np.full(n, start, dtype=np.uint64)
    for lo in range(0, n, CHUNK_ROWS):  # blocks keep the temporaries small
        block = h[lo : lo + CHUNK_ROWS]  # a view: updated in place
        block_starts, block_lengths = starts[lo : lo + CHUNK_ROWS], lengths[lo : lo + CHUNK_ROWS]
        for pos in range(int(block_lengths.max())):
            active = block_lengths > pos
            if active.all():
                block ^= data[block_starts + pos]
                block *= _FNV_PRIME
            else:
                rows = np.flatnonzero(active)
                byte = data[block_starts[rows] + pos].astype(np.uint64)
                block[rows] = (block[rows] ^ byte) * _FNV_PRIME
    return h


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z.copy()
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def text_key(text: str) -> np.uint64:
    """The 64-bit FNV-1a hash of one string."""
    return fnv1a64(pl.Series([text]))[0]


def unit_keys(units: pl.Series, salt: str, level: str = "p") -> np.ndarray:
    """The per-unit 64-bit key: FNV-1a of ``salt \\x1f level \\x1f unit``."""
    # The prefix is hashed once and every unit continues from its state.
    return fnv1a64(units.cast(pl.String), start=text_key(f"{salt}\x1f{level}\x1f"))


def uniform_draws(keys: np.ndarray, periods: npt.ArrayLike) -> np.ndarray:
    """Uniform [0, 1) draw for each (unit key, period) pair; arrays broadcast."""
    periods = np.asarray(periods, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(keys ^ ((periods + np.uint64(1)) * _GOLDEN))
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
