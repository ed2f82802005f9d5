"""Step 4 of hpte: bootstrap over randomisation units, resampling within each arm stratum.

The forest is not refitted per draw. Its leaves are held fixed and each unit's linearised
contribution ``psi_j`` (see :mod:`pricelab_cli.hpte.forest`) is resampled: a draw that takes
unit ``j`` ``omega_j`` times moves the estimate by ``sum_j (omega_j - 1) psi_j``. All draws
are index matrices (draws x units of a stratum), made in ``DRAW_CHUNKS`` fixed chunks each
from its own generator seeded with (seed, chunk) (so an engine can run the chunks side by
side and the draws stay the same), processed in batches so memory stays bounded; the loops
run over chunks and batches, never over single draws.

Units are products, or clusters when the assignment has ``cluster_id``. A unit's stratum is
its arm composition (treated only, control only, both), and draws keep the stratum sizes, so
a between-product design keeps its treated and control counts in every draw (a study with
one treated state keeps that state in every draw: its SE then reflects the control arm only,
and a warning says so).

The p-value is two-sided and reads the centred bootstrap distribution as the null:
``(1 + #{|theta*_b - theta| >= |theta|}) / (B + 1)``. The confidence interval is the
percentile interval (2.5% and 97.5% quantiles of the draws).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from pricelab_cli.engine import LocalEngine, resolve
from pricelab_cli.errors import UsageError

# Entries of the index matrix handled at once (about 64 MB of indices and gathered values).
BATCH_ENTRIES = 4_000_000
# A percentile 95% interval needs draws in both 2.5% tails: fewer than this and its ends are
# the extreme draws themselves (one draw gives an "interval" that can exclude the estimate).
MIN_BOOTSTRAP = 20
# The draws are kept (8 bytes each) and batched; beyond this a run would take days anyway.
MAX_BOOTSTRAP = 1_000_000


def check_bootstrap(n_bootstrap: int, flag: str = "--bootstrap") -> None:
    """Refuse a number of draws that cannot give a 95% interval, or that is absurdly large."""
    if n_bootstrap < 0 or 0 < n_bootstrap < MIN_BOOTSTRAP or n_bootstrap > MAX_BOOTSTRAP:
        raise UsageError(
            f"{flag} {n_bootstrap}: give 0 (no SE) or between {MIN_BOOTSTRAP} and {MAX_BOOTSTRAP:,} draws; "
            f"a 95% interval needs at least {MIN_BOOTSTRAP}."
        )


@dataclasses.dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Standard error, percentile 95% interval, p-value and the draws themselves."""

    se: float
    ci_low: float
    ci_high: float
    p_value: float
    draws: np.ndarray


# The draws are made in this many fixed chunks, each from its own seeded stream, so an
# engine may run them side by side and the draws are the same whichever runs them.
DRAW_CHUNKS = 4


@dataclasses.dataclass(frozen=True, eq=False)
class _DrawChunk:
    """Draws ``first`` .. ``first + count - 1`` of a bootstrap: their own stream is seeded
    with (seed, chunk)."""

    data: object  # (unit influence, stratum), or the engine's handle of it
    count: int
    seed: int
    chunk: int


def _chunk_shifts(task: _DrawChunk) -> np.ndarray:
    """How far each draw of a chunk moves the estimate: ``sum_j (omega_j - 1) psi_j``."""
    rng = np.random.default_rng([task.seed, task.chunk])
    unit_influence, stratum = resolve(task.data)
    labels = np.unique(stratum)
    members = [np.flatnonzero(stratum == label) for label in labels]
    n_units = max(len(unit_influence), 1)
    batch = max(1, min(task.count, BATCH_ENTRIES // n_units))
    shifts = np.empty(task.count)
    done = 0
    while done < task.count:
        size = min(batch, task.count - done)
        shift = np.zeros(size)
        for rows in members:
            psi = unit_influence[rows]
            # 32-bit draws take half the random bits and half the memory of 64-bit ones.
            picks = rng.integers(0, len(rows), size=(size, len(rows)), dtype=np.int32)
            shift += psi[picks].sum(axis=1) - psi.sum()
        shifts[done : done + size] = shift
        done += size
    return shifts


def bootstrap_se(
    estimate: float,
    unit_influence: np.ndarray,
    stratum: np.ndarray,
    n_bootstrap: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
    engine: LocalEngine | None = None,
) -> BootstrapResult:
    """Bootstrap the estimate by resampling units within strata (linearised statistic).

    Parameters
    ----------
    estimate : the point estimate.
    unit_influence : per unit, the sum of its cells' linearised contributions.
    stratum : per unit, its stratum label; draws keep every stratum's size.
    n_bootstrap : number of draws B (0 gives NaN for everything).
    seed : seed of the generators that make the draws.
    progress : called with the number of draws done after each chunk.
    engine : runs the ``DRAW_CHUNKS`` chunks of draws (in this process by default).
    """
    if n_bootstrap <= 0:
        nan = float("nan")
        return BootstrapResult(nan, nan, nan, nan, np.empty(0))
    cuts = np.linspace(0, n_bootstrap, min(DRAW_CHUNKS, n_bootstrap) + 1).astype(int)
    engine = engine or LocalEngine()
    data = engine.share((unit_influence, stratum))
    chunks = [_DrawChunk(data, int(hi - lo), seed, k) for k, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:]))]
    advance = None if progress is None else (lambda chunk: progress(chunk.count))
    draws = estimate + np.concatenate(engine.map(_chunk_shifts, chunks, progress=advance))
    se = float(np.std(draws, ddof=1)) if n_bootstrap > 1 else float("nan")
    ci_low, ci_high = (float(v) for v in np.quantile(draws, [0.025, 0.975]))
    extreme = np.count_nonzero(np.abs(draws - estimate) >= abs(estimate))
    p_value = float((1 + extreme) / (n_bootstrap + 1))
    return BootstrapResult(se, ci_low, ci_high, p_value, draws)
