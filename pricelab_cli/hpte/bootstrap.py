"""Step 4 of hpte: bootstrap over randomisation units, resampling within each arm stratum.

The forest is not refitted per draw. Its leaves are held fixed and each unit's linearised
contribution ``psi_j`` (see :mod:`pricelab_cli.hpte.forest`) is resampled: a draw that takes
unit ``j`` ``omega_j`` times moves the estimate by ``sum_j (omega_j - 1) psi_j``. All draws
are index matrices (draws x units of a stratum), made in ``DRAW_CHUNKS`` fixed chunks each
from its own generator seeded with (seed, chunk) (so an engine can run the chunks side by
side and the draws stay the same), processed in batches so memory stays bounded; the loops
run over chunks and batches, never over single draws. With one statistic a batch gathers its
picked units' values; with several it counts each unit's picks and multiplies the counts by
the influence matrix (the same draws, to rounding, at a fifth of the time).

Units are products, or clusters when the assignment has ``cluster_id``. A unit's stratum is
its arm composition (treated only, control only, both), and draws keep the stratum sizes, so
a between-product design keeps its treated and control counts in every draw (a study with
one treated state keeps that state in every draw: its SE then reflects the control arm only,
and a warning says so).

The confidence interval is the percentile interval (2.5% and 97.5% quantiles of the draws,
linearly interpolated). The two-sided p-value inverts that same interval: it is the
smallest ``alpha`` whose ``1 - alpha`` percentile interval excludes 0 (twice the smaller
interpolated share of draws on either side of 0), never below ``1 / (B + 1)``. So the
p-value is below 0.05 exactly when the 95% interval excludes 0, however skewed the draws.

Several statistics can share the draws (``bootstrap_draws`` takes one influence column
each): the lift's interval is the percentile interval of the estimate's draws over the
counterfactual level's draws.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from pricelab_cli.engine import Engine, default_engine, resolve
from pricelab_cli.errors import UsageError

# Entries of the index matrix handled at once (about 64 MB of indices and gathered values).
BATCH_ENTRIES = 4_000_000
# A percentile 95% interval needs draws in both 2.5% tails: fewer than this and its ends are
# the extreme draws themselves (one draw gives an "interval" that can exclude the estimate).
MIN_BOOTSTRAP = 20
# The draws are kept (8 bytes each) and batched; beyond this a run would take days anyway.
MAX_BOOTSTRAP = 1_000_000


def check_bootstrap(n_bootstrap: int, flag: str = "`n_bootstrap`") -> None:
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


# Beyond this many statistics (a monitor's replay bootstraps every night at once) a batch
# holds as many draws as for one statistic: the counts times the influence matrix cost about
# the same whatever the number of statistics.
WIDE_COLUMNS = 16
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
    """How far each draw of a chunk moves each statistic: ``sum_j (omega_j - 1) psi_j``
    (draws x statistics)."""
    rng = np.random.default_rng([task.seed, task.chunk])
    unit_influence, stratum = resolve(task.data)
    labels = np.unique(stratum)
    members = [np.flatnonzero(stratum == label) for label in labels]
    n_units = max(len(unit_influence), 1) * unit_influence.shape[1]
    batch = max(1, min(task.count, BATCH_ENTRIES // n_units))
    shifts = np.empty((task.count, unit_influence.shape[1]))
    done = 0
    # One statistic: gather each draw's rows of it. More: count each draw's picks of every
    # unit and multiply the counts by the influence matrix (4-5 times faster from 4
    # statistics on; the same picks, so the same draws to rounding).
    by_counts = unit_influence.shape[1] > 1
    if unit_influence.shape[1] > WIDE_COLUMNS:
        # A monitor's replay (every night's statistics at once): batches as wide as for one.
        batch = max(1, min(task.count, BATCH_ENTRIES // max(len(unit_influence), 1)))
    while done < task.count:
        size = min(batch, task.count - done)
        shift = np.zeros((size, unit_influence.shape[1]))
        for rows in members:
            psi = unit_influence[rows]
            # 32-bit draws take half the random bits and half the memory of 64-bit ones.
            picks = rng.integers(0, len(rows), size=(size, len(rows)), dtype=np.int32)
            if by_counts:
                offsets = (np.arange(size, dtype=np.int64) * len(rows))[:, None]
                counts = np.bincount((picks + offsets).ravel(), minlength=size * len(rows)).reshape(size, len(rows))
                shift += (counts - 1.0) @ psi
            else:
                shift += psi[picks].sum(axis=1) - psi.sum(axis=0)
        shifts[done : done + size] = shift
        done += size
    return shifts


def bootstrap_draws(
    estimates: np.ndarray,
    unit_influence: np.ndarray,
    stratum: np.ndarray,
    n_bootstrap: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
    engine: Engine | None = None,
    stage: str = "bootstrap",
) -> np.ndarray:
    """Bootstrap draws (B x statistics) of several statistics from the same resamples.

    Parameters
    ----------
    estimates : the point estimates (one per statistic).
    unit_influence : units x statistics: per unit, its linearised contribution to each.
    stratum : per unit, its stratum label; draws keep every stratum's size.
    n_bootstrap : number of draws B (0 gives no draws).
    seed : seed of the generators that make the draws.
    progress : called with the number of draws done after each chunk.
    stage : what the engine's progress calls these draws (the count is added).
    engine : runs the ``DRAW_CHUNKS`` chunks of draws (in this process by default).
    """
    estimates = np.atleast_1d(np.asarray(estimates, dtype=np.float64))
    if n_bootstrap <= 0:
        return np.empty((0, len(estimates)))
    unit_influence = np.asarray(unit_influence, dtype=np.float64).reshape(len(stratum), len(estimates))
    cuts = np.linspace(0, n_bootstrap, min(DRAW_CHUNKS, n_bootstrap) + 1).astype(int)
    engine = default_engine(engine)
    data = engine.share((unit_influence, stratum))
    chunks = [_DrawChunk(data, int(hi - lo), seed, k) for k, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:]))]
    advance = None if progress is None else (lambda chunk: progress(chunk.count))
    return estimates + np.concatenate(
        engine.map(
            _chunk_shifts,
            chunks,
            progress=advance,
            stage=f"{stage} ({n_bootstrap} draws)",
            weights=lambda chunk: chunk.count,
        )
    )


def summarise_draws(draws: np.ndarray) -> BootstrapResult:
    """SE, percentile 95% interval and the p-value that inverts it, from one statistic's draws."""
    if len(draws) == 0:
        nan = float("nan")
        return BootstrapResult(nan, nan, nan, nan, np.empty(0))
    se = float(np.std(draws, ddof=1)) if len(draws) > 1 else float("nan")
    ci_low, ci_high = (float(v) for v in np.quantile(draws, [0.025, 0.975]))
    return BootstrapResult(se, ci_low, ci_high, percentile_p_value(draws), draws)


def percentile_p_value(draws: np.ndarray) -> float:
    """Two-sided p-value of 0 that inverts the (linearly interpolated) percentile interval.

    With ``Q`` the interpolated quantile function of the draws, ``p_low = sup{p : Q(p) <= 0}``
    and ``p_high = 1 - inf{p : Q(p) >= 0}``; the p-value is ``2 * min(p_low, p_high)``,
    capped at 1 and floored at ``1 / (B + 1)``. The ``1 - alpha`` interval excludes 0 exactly
    when this is below ``alpha``.
    """
    x = np.sort(np.asarray(draws, dtype=np.float64))
    b = len(x)
    if b < 2 or not np.isfinite(x).all():
        return float("nan")
    step = b - 1
    below = np.flatnonzero(x <= 0)
    if not len(below):
        p_low = 0.0
    elif below[-1] == step:
        p_low = 1.0
    else:
        k = below[-1]
        p_low = (k + (0.0 - x[k]) / (x[k + 1] - x[k])) / step
    above = np.flatnonzero(x >= 0)
    if not len(above):
        p_high = 0.0
    elif above[0] == 0:
        p_high = 1.0
    else:
        j = above[0]
        p_high = 1.0 - ((j - 1) + (0.0 - x[j - 1]) / (x[j] - x[j - 1])) / step
    return float(max(min(1.0, 2.0 * min(p_low, p_high)), 1.0 / (b + 1)))


def bootstrap_se(
    estimate: float,
    unit_influence: np.ndarray,
    stratum: np.ndarray,
    n_bootstrap: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
    engine: Engine | None = None,
) -> BootstrapResult:
    """Bootstrap one estimate by resampling units within strata (linearised statistic); the
    arguments are those of ``bootstrap_draws`` for one statistic."""
    draws = bootstrap_draws(np.array([estimate]), unit_influence[:, None], stratum, n_bootstrap, seed, progress, engine)
    return summarise_draws(draws[:, 0])
