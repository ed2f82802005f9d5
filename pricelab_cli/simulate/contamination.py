"""Contamination: the spoiled sales a real catalog carries (noise, jumps, spikes,
stock-outs, level shifts), planted on a clean panel with draws of their own.

The kinds are described in the package docstring (:mod:`pricelab_cli.simulate`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import polars as pl

from pricelab_cli.simulate.model import OUTLIER_SHIFT_SD, negative_binomial
from pricelab_cli.simulate.settings import CONTAMINATION_KINDS

NOISE_SHAPE = 0.05
JUMP_LOW, JUMP_HIGH = 3.0, 6.0
SPIKE_RATE = 1.0 / 30.0
SPIKE_LOW, SPIKE_HIGH = 20.0, 50.0
STOCKOUT_MIN, STOCKOUT_MAX = 5, 10


@dataclasses.dataclass(frozen=True, eq=False)
class Contamination:
    """Which products are spoiled, how, and the draws that spoil them (own generator)."""

    rows: np.ndarray  # contaminated product rows
    kind: np.ndarray  # kind name per contaminated row
    n_products: int
    n_days: int
    rng: np.random.Generator
    start_day: np.ndarray  # per contaminated row: the kind's start day (jump, outlier)
    factor: np.ndarray  # per contaminated row: jump multiplier, spike size or log shift
    run_start: np.ndarray  # (rows, 2): stock-out run starts (history, experiment)
    run_length: np.ndarray  # (rows, 2)

    @classmethod
    def draw(
        cls,
        seed: int,
        *,
        n: int,
        n_days: int,
        share: float,
        kinds: Sequence[str],
        analysed_rows: np.ndarray,
        analysed_days: np.ndarray,
    ) -> Contamination:
        """Choose the spoiled products and their kinds and draw every parameter of theirs.

        ``analysed_rows`` and ``analysed_days`` are the product rows and day numbers of the
        analysed cells, which locate each product's experiment window.
        """
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
        n_spoiled = int(np.floor(share * n + 0.5)) if kinds else 0
        rows = rng.permutation(n)[:n_spoiled]
        kind = np.array([kinds[i % len(kinds)] for i in range(n_spoiled)], dtype=object)
        first, last = _experiment_windows(n, n_days, analysed_rows, analysed_days)
        first, last = first[rows], last[rows]
        # Every parameter is drawn for every spoiled row in a fixed order, whatever its kind.
        u_start = rng.random(n_spoiled)
        u_factor = rng.random(n_spoiled)
        shift = OUTLIER_SHIFT_SD * rng.standard_normal(n_spoiled)
        u_runs = rng.random((n_spoiled, 2))
        run_length = rng.integers(STOCKOUT_MIN, STOCKOUT_MAX + 1, size=(n_spoiled, 2))
        window_start = first + np.floor(u_start * (last - first + 1)).astype(np.int64)
        late = (2 * n_days) // 3
        late_start = late + np.floor(u_start * (n_days - late)).astype(np.int64)
        start_day = np.where(kind == "outlier", late_start, window_start)
        factor = np.select(
            [kind == "jump", kind == "spike", kind == "outlier"],
            [JUMP_LOW + (JUMP_HIGH - JUMP_LOW) * u_factor, SPIKE_LOW + (SPIKE_HIGH - SPIKE_LOW) * u_factor, shift],
            default=0.0,
        )
        history_room = np.maximum(first - run_length[:, 0], 1)
        window_room = np.maximum(last - first + 1, 1)
        run_start = np.stack(
            [np.floor(u_runs[:, 0] * history_room), first + np.floor(u_runs[:, 1] * window_room)], axis=1
        ).astype(np.int64)
        return cls(rows, kind, n, n_days, rng, start_day, factor, run_start, run_length)

    @property
    def any_outlier(self) -> bool:
        return bool((self.kind == "outlier").any())

    def _later(self, sel: np.ndarray) -> np.ndarray:
        """(selected rows x days) mask of the days from each row's start day on."""
        return np.arange(self.n_days)[None, :] >= self.start_day[sel][:, None]

    def _outlier_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Product rows of the multiplicative kind and their (rows x days) demand factors."""
        sel = np.flatnonzero(self.kind == "outlier")
        return self.rows[sel], np.exp(np.where(self._later(sel), self.factor[sel][:, None], 0.0))

    def shift_lambda(self, lambda0: np.ndarray) -> np.ndarray:
        """``lambda0`` with the multiplicative kind's level shifts (a copy)."""
        rows, factor = self._outlier_shift()
        shifted = lambda0.copy()
        shifted[rows] *= factor
        return shifted

    def shifted_means(self, expected_units: np.ndarray) -> np.ndarray:
        """Expected units of the multiplicative kind's rows after their shift."""
        rows, factor = self._outlier_shift()
        return expected_units[rows] * factor

    def apply(self, units: np.ndarray, lambda0: np.ndarray, shifted_mean: np.ndarray, dispersion: float) -> np.ndarray:
        """Spoiled copy of the clean ``units`` (products x days); ``shifted_mean`` is
        ``shifted_means`` of the expected units."""
        units = units.copy()
        rng = self.rng
        days = self.n_days
        for name in CONTAMINATION_KINDS:
            sel = np.flatnonzero(self.kind == name)
            if not len(sel):
                continue
            rows = self.rows[sel]
            if name == "noise":
                wild = rng.gamma(NOISE_SHAPE, 1.0 / NOISE_SHAPE, size=(len(sel), days))
                units[rows] = rng.poisson(units[rows] * wild)
            elif name == "jump":
                extra = (self.factor[sel] - 1.0)[:, None] * lambda0[rows] * self._later(sel)
                units[rows] += rng.poisson(extra)
            elif name == "spike":
                bulk = rng.random((len(sel), days)) < SPIKE_RATE
                units[rows] += rng.poisson(self.factor[sel][:, None] * lambda0[rows] * bulk)
            elif name == "stockout":
                day = np.arange(days)[None, None, :]
                start = self.run_start[sel][:, :, None]
                out = ((day >= start) & (day < start + self.run_length[sel][:, :, None])).any(axis=1)
                units[rows] = np.where(out, 0, units[rows])
            else:  # outlier: fresh counts around the shifted mean
                units[rows] = negative_binomial(rng, shifted_mean, dispersion)
        return units

    def kind_labels(self) -> pl.Series:
        labels = np.full(self.n_products, None, dtype=object)
        labels[self.rows] = self.kind
        return pl.Series(labels.tolist(), dtype=pl.String)

    def counts(self) -> dict[str, int]:
        return {name: int((self.kind == name).sum()) for name in CONTAMINATION_KINDS if (self.kind == name).any()}


def _experiment_windows(
    n: int, n_days: int, analysed_rows: np.ndarray, analysed_days: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First and last day of each product's experiment window (the last third of the panel
    when it has no analysed cell)."""
    first = np.full(n, (2 * n_days) // 3, dtype=np.int64)
    last = np.full(n, n_days - 1, dtype=np.int64)
    if len(analysed_rows):
        has = np.bincount(analysed_rows, minlength=n) > 0
        lo = np.full(n, n_days, dtype=np.int64)
        hi = np.full(n, -1, dtype=np.int64)
        np.minimum.at(lo, analysed_rows, analysed_days)
        np.maximum.at(hi, analysed_rows, analysed_days)
        first, last = np.where(has, lo, first), np.where(has, hi, last)
    return first, last
