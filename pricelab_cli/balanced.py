"""The schedule of a balanced switchback: which units are treated in which blocks.

A balanced switchback re-randomises every block like random days, but with balance across
both units and time: every block treats exactly ``k = round(share x n)`` of the ``n`` units
(rounded half up), and every unit is treated in ``floor(B k / n)`` or ``ceil(B k / n)`` of the
``B`` blocks (the closest to equal any schedule with ``k`` per block can be, so within one of
``share x B`` whenever any such schedule is).

Construction (every random choice is a hash draw of the units' keys, which carry the salt)
-----------------------------------------------------------------------------------------
1. Order the units by a hash draw, and the blocks by another one.
2. Deal: the units take their treated blocks in turn, each the next ``r_i`` blocks of the
   block order, going round it (the first ``B k - n floor(B k / n)`` units in the order take
   one more). Each block is dealt exactly ``k`` times, and no unit twice the same block.
3. Scramble: ``SWEEPS`` rounds of swaps that keep every row and column total. In a round the
   units are paired at random and each pair draws two blocks; where one unit of the pair is
   treated in the first block only and the other in the second only, they trade.

Step 2 alone gives few distinct schedules (with a share of 0.5 and an even number of blocks,
two); the swaps of step 3 mix them, so two units share their schedule no more often than
chance would have them do. The schedule depends on the whole set of units: unlike the other
kinds, adding or removing a product moves other products' arms (the order of the products
table does not).
"""

from __future__ import annotations

import math

import numpy as np

from pricelab_cli.hashing import text_key, uniform_draws

# Swap rounds of step 3: every unit takes part in one swap attempt per round.
SWEEPS = 48
# Hash "periods" of the draws of steps 1 and 3, far from any block number.
_ORDER_PERIOD = 1 << 40
_SWEEP_PERIOD = 1 << 41


def treated_per_block(n_units: int, share: float) -> int:
    """``round(share x n_units)``, halves rounded up."""
    return int(math.floor(share * n_units + 0.5))


def balanced_schedule(keys: np.ndarray, salt: str, n_blocks: int, share: float) -> np.ndarray:
    """(units x blocks) treated flags of a balanced switchback (module docstring).

    ``keys`` are the units' 64-bit hash keys (``assign.unit_keys``), one per distinct unit;
    the result does not depend on their order beyond following it row for row.
    """
    n = len(keys)
    schedule = np.zeros((n, n_blocks), dtype=bool)
    if n == 0 or n_blocks == 0:
        return schedule
    k = treated_per_block(n, share)
    total = n_blocks * k
    base, extra = divmod(total, n)
    # Step 1: the unit order (a stable sort: ties, which need a 53-bit collision, keep the rows' order) and the block order.
    order = np.argsort(uniform_draws(keys, _ORDER_PERIOD), kind="stable")
    salt_key = text_key(f"{salt}\x1fblocks")
    block_order = np.argsort(uniform_draws(np.full(n_blocks, salt_key, dtype=np.uint64), np.arange(n_blocks)))
    # Step 2: unit ``order[p]`` takes blocks start_p, ..., start_p + r_p - 1 of the block order.
    count = np.full(n, base, dtype=np.int64)
    count[:extra] += 1
    start = np.concatenate([[0], np.cumsum(count)[:-1]]) % n_blocks
    for j in range(base + (1 if extra else 0)):  # at most n_blocks steps, each over all units
        dealt = j < count
        schedule[order[dealt], block_order[(start[dealt] + j) % n_blocks]] = True
    if n >= 2 and n_blocks >= 2:
        _scramble(schedule, keys)
    return schedule


def _scramble(schedule: np.ndarray, keys: np.ndarray) -> None:
    """Step 3, in place: margin-preserving swaps between random pairs of units."""
    n, n_blocks = schedule.shape
    half = n // 2
    for sweep in range(SWEEPS):
        period = _SWEEP_PERIOD + 3 * sweep
        order = np.argsort(uniform_draws(keys, period), kind="stable")
        a, b = order[:half], order[half : 2 * half]
        first = np.minimum((uniform_draws(keys[a], period + 1) * n_blocks).astype(np.int64), n_blocks - 1)
        second = np.minimum((uniform_draws(keys[a], period + 2) * (n_blocks - 1)).astype(np.int64), n_blocks - 2)
        second += second >= first
        a_first, a_second = schedule[a, first], schedule[a, second]
        b_first, b_second = schedule[b, first], schedule[b, second]
        trade = (a_first != a_second) & (b_first != b_second) & (a_first != b_first)
        a, b, first, second = a[trade], b[trade], first[trade], second[trade]
        schedule[a, first] = ~schedule[a, first]
        schedule[a, second] = ~schedule[a, second]
        schedule[b, first] = ~schedule[b, first]
        schedule[b, second] = ~schedule[b, second]
