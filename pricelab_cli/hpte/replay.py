"""Every past night of a running experiment at once, read with tonight's model: what
``pricelab monitor`` tabulates.

A nightly ``hpte --as-of NIGHT`` run detrends, screens, grows a forest and bootstraps that
night's data. Replaying 28 nights that way costs 28 runs. The replay here costs one run and
a little more, because it keeps what tonight's run chose and recomputes only what a night's
own sums decide:

- **kept from tonight's run**: the baselines, common shocks and robust step (winsorised
  days, stock-out days, the volatility screen, the de-treating factor), and the forest's
  trees (each product's leaf in every tree);
- **each night's own**: its cells (each cell's mean residual over its rows up to that
  night, from tonight's residuals), the product swing screen taken on those cells, the leaf
  second difference over the products it keeps, and its bootstrap;
- **one bootstrap for all nights**: the same resamples of units serve every night (one
  draw's multiplicities times every night's influence columns). A unit's stratum is its arm
  composition on the last night it is in (strata per pattern over the nights came out
  small and narrowed the intervals by 10-25%); on a night where a unit is absent its
  influence is 0. The de-treating factor is tonight's, and every night's draws redraw it
  from tonight's inputs.

Replayed at tonight's date, this gives tonight's point estimate exactly (the tests check
it); its SE comes from other resamples than the run's own, so it agrees within the
bootstrap's Monte Carlo error. Past nights read the data as tonight's model sees them, so a
past row can differ from what that night's run printed (docs/commands.md, `pricelab monitor`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import numpy as np

from pricelab_cli.engine import Engine, default_engine
from pricelab_cli.errors import DataError, PricelabWarning
from pricelab_cli.hpte.bootstrap import bootstrap_draws
from pricelab_cli.hpte.cells import Cells, first_difference
from pricelab_cli.hpte.detrend import CatalogDetrend
from pricelab_cli.hpte.draws import DrawPlan, DrawSummary, draw_plan
from pricelab_cli.hpte.forest import TreeLeaves, leaf_second_difference


def product_leaves(leaves, features: Callable[[], np.ndarray], n_products: int) -> np.ndarray:
    """Every product's leaf in every tree, as a (trees, products) array: the fitted trees
    applied to the products' ``features()`` (one shared leaf when no forest was grown)."""
    if isinstance(leaves, TreeLeaves):
        return np.ascontiguousarray(TreeLeaves(leaves.trees, features(), None, leaves.n_jobs).matrix().T)
    return np.zeros((1, n_products), dtype=np.int32)


def night_cells(
    panel, detrended: CatalogDetrend, tonight: Cells, nights: np.ndarray, engine: Engine | None = None
) -> list[Cells]:
    """Each night's cells before the swing screen: the mean of tonight's residuals over each
    cell's rows up to the night (``nights``: day numbers, ascending). A cell's contribution
    to the de-treating factor's inputs is tonight's (the factor is tonight's)."""
    engine = default_engine(engine)
    tasks = [(h, detrended.for_partition(h), nights) for h in panel.handles()]
    results = engine.map(_night_cells_task, tasks, stage=f"{detrended.outcome}: nights' first differences")
    position = np.full(2 * panel.n_products, -1, dtype=np.int64)
    position[tonight.code * 2 + tonight.treated] = np.arange(len(tonight.code))
    out = []
    for k in range(len(nights)):
        cells = Cells.concat([r[k] for r in results])
        at = position[cells.code * 2 + cells.treated]
        if (at < 0).any():  # cannot happen: a night's rows are tonight's rows
            raise ValueError("a night's cell is not among tonight's cells")
        out.append(
            dataclasses.replace(
                cells, detreat_difference=tonight.detreat_difference[at], detreat_level=tonight.detreat_level[at]
            )
        )
    return out


def _night_cells_task(task) -> list[Cells]:
    handle, inputs, nights = task
    part = handle.load()
    detrended = inputs.residuals(part)
    y = part.outcomes[inputs.outcome]
    day = part.dates[part.date_index]
    # A loop over the nights (a few dozen), each a pass of bincounts over the partition's rows.
    return [
        first_difference(part, dataclasses.replace(detrended, usable=detrended.usable & (day <= night)), y).shifted(
            handle.offset
        )
        for night in nights
    ]


@dataclasses.dataclass(frozen=True, eq=False)
class NightFit:
    """One night's estimate before its bootstrap."""

    plan: DrawPlan
    n_products: int
    n_outliers: int


def fit_night(
    panel,
    detrended: CatalogDetrend,
    cells: Cells,
    leaves: np.ndarray,
    screen_of: Callable[[Cells], tuple],
    detreat_of: Callable[[Cells, object], tuple | None],
) -> NightFit | None:
    """The night's swing screen (``screen_of``: the estimator's, giving the products kept, their
    statistic and the screen's state), leaf second difference (tonight's leaves, ``leaves``
    from ``product_leaves``) and draw plan (``detreat_of``: the de-treating factor's inputs
    and the estimate's slope in it); None when the night has no two-armed leaf yet."""
    with warnings.catch_warnings():
        # Tonight's run has said what there is to say about the data.
        warnings.simplefilter("ignore", PricelabWarning)
        keep, _, screen = screen_of(cells)
    kept = cells.take(keep[cells.code])
    if not ((kept.treated == 1).any() and (kept.treated == 0).any()):
        return None
    per_product = np.bincount(kept.code, minlength=panel.n_products)
    try:
        leaf = leaf_second_difference(
            leaves[:, kept.code].T, kept.treated, kept.first_difference, 1.0 / per_product[kept.code]
        )
    except DataError:
        return None
    plan = draw_plan(panel, kept, leaf, detreat_of(kept, leaf), (screen, cells) if screen is not None else None)
    in_estimate = np.bincount(kept.code[leaf.matched], minlength=panel.n_products) > 0
    return NightFit(plan, int(in_estimate.sum()), int((~keep).sum() + detrended.screened.sum()))


def draw_nights(
    fits: list[NightFit | None], n_bootstrap: int, seed: int, engine: Engine | None = None, progress=None
) -> list[DrawSummary | None]:
    """Every night's bootstrap summary (None for a night without a fit) from one set of
    resamples of the units."""
    used = [f for f in fits if f is not None]
    if not used:
        return [None] * len(fits)
    strata = np.stack([f.plan.stratum for f in used], axis=1)
    present = strata.any(axis=1)
    # A unit's stratum is its arm composition on the last night it is in (tonight's, for
    # most): a stratum per pattern over the nights would make small strata, whose
    # resamples move less than their units do.
    last = strata.shape[1] - 1 - np.argmax(strata[:, ::-1] > 0, axis=1)
    joint = strata[np.arange(len(strata)), last][present]
    widths = [len(f.plan.estimates) for f in used]
    draws = bootstrap_draws(
        np.concatenate([f.plan.estimates for f in used]),
        np.concatenate([f.plan.influence[present] for f in used], axis=1),
        joint.reshape(-1),
        n_bootstrap,
        seed,
        progress,
        engine,
        stage="nights: bootstrap",
    )
    bounds = np.concatenate([[0], np.cumsum(widths)])
    summaries = iter([f.plan.finish(draws[:, lo:hi]) for f, lo, hi in zip(used, bounds[:-1], bounds[1:])])
    return [None if f is None else next(summaries) for f in fits]
