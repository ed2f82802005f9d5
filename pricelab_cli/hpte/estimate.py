"""The hpte estimator: first difference, outlier filter, leaf second difference, bootstrap.

``HeterogeneousPanelEffect`` is the estimator for one outcome (scikit-learn shape: a
logic-free ``__init__``, ``fit`` returns ``self``, fitted attributes end in ``_``);
``estimate_hpte`` runs it for several outcomes on one panel and returns the tables the
command writes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl

from pricelab_cli.engine import LocalEngine, default_engine
from pricelab_cli.errors import DataError, PricelabWarning, UsageError
from pricelab_cli.hpte import robust
from pricelab_cli.hpte.bootstrap import bootstrap_draws, check_bootstrap
from pricelab_cli.hpte.cells import Cells
from pricelab_cli.hpte.detreat import DetreatInputs
from pricelab_cli.hpte.detrend import MODEL_NONE, CatalogDetrend, detrend_partitions, warn_left_out
from pricelab_cli.hpte.draws import DrawSummary, draw_plan
from pricelab_cli.hpte.forest import (
    DEFAULT_MAX_SAMPLES,
    DEFAULT_MIN_SAMPLES_LEAF,
    DEFAULT_TREES,
    TreeLeaves,
    encode_features,
    forest_leaves,
    leaf_second_difference,
    pre_period_summaries,
)
from pricelab_cli.hpte.outliers import (
    DEFAULT_OUTLIER_C,
    MAX_TAIL_SHARE,
    OUTLIER_RULES,
    outlier_filter,
    product_swings,
    swing_screen,
)
from pricelab_cli.hpte.panel import Panel, PartitionedPanel, partition_panel
from pricelab_cli.hpte.replay import draw_nights, fit_night, night_cells, product_leaves
from pricelab_cli.hpte.reselect import (
    ScreenState,
    screen_state,
    swing_slope,
)

# The per-outcome tables besides the effect, importable from here as before.
from pricelab_cli.hpte.results import MIN_PATH_PRE_PERIODS as MIN_PATH_PRE_PERIODS
from pricelab_cli.hpte.results import OUTLIER_COLUMNS as OUTLIER_COLUMNS
from pricelab_cli.hpte.results import OUTLIER_SCHEMA as OUTLIER_SCHEMA
from pricelab_cli.hpte.results import effect_path as effect_path
from pricelab_cli.hpte.results import outlier_table, product_cate, unmeasurable
from pricelab_cli.sequential import as_it_stood, information_fractions, with_sequence

METHODS = ("hpte", "did")
EFFECT_COLUMNS = (
    "outcome",
    "estimate",
    "se",
    "ci_low",
    "ci_high",
    "p_value",
    "lift",
    "lift_low",
    "lift_high",
    "n_products",
    "n_outliers",
)
# With ``sequential=True``: the confidence sequence, after the other columns.
SEQUENCE_COLUMNS = ("cs_low", "cs_high", "lift_cs_low", "lift_cs_high")
_EPOCH = dt.date(1970, 1, 1)
# The float columns of the effects table (estimate to lift_high).
_FLOAT_COLUMNS = EFFECT_COLUMNS[1:9]
# From this many resampled units the bootstrap runs in worker processes: below it, starting
# them costs more than it saves.
POOL_SIZE = 200_000
# Fewer resampling units than this in an arm and the bootstrap cannot see that arm's noise.
MIN_RELIABLE_UNITS = 5


class HeterogeneousPanelEffect:
    """Heterogeneous panel treatment effect of one outcome (or the classic DID baseline).

    Parameters
    ----------
    method : ``"hpte"`` (detrended first differences, outlier filter, causal-forest second
        difference) or ``"did"`` (mean after minus mean before, difference of arm means).
    n_bootstrap : bootstrap draws (0: no SE).
    outlier_rule : ``"robust"`` (the default: the robust step of
        :mod:`~pricelab_cli.hpte.robust` and the adaptive swing screen) or ``"quantile"``
        (the method source's rule: least-squares residuals, a tail share ``c / n`` dropped).
    outlier_c : about how many products the quantile rule drops (tail share ``c / n``).
    outlier_filter : whether to drop products (hpte only); False keeps every product (the
        robust rule still winsorises residuals and leaves out stock-out days).
    detrend : fit level + trend (+ weekday) baselines; False fits the level only.
    n_estimators, max_samples, min_samples_leaf, n_jobs : the causal forest's size.
    random_state : seed of the forest and of the bootstrap.
    effect_path : whether to compute ``path_`` (the data of ``--plot``).
    engine : where the partition tasks run (:mod:`pricelab_cli.engine`); default this
        machine with ``n_jobs`` workers. The result does not depend on it.

    Attributes (after ``fit``)
    --------------------------
    estimate_, se_, ci_low_, ci_high_, p_value_, lift_, lift_low_, lift_high_ : the effect
        per product per day (outcome units, products weighted equally), its uncertainty, and
        the lift with its 95% interval (percentile interval of the same bootstrap draws).
    n_products_, n_outliers_ : products in the estimate; products dropped as outliers.
    outliers_ : ``OUTLIER_COLUMNS``: every product the robust step dropped, and every
        product with winsorised or stock-out days, with the reason and its statistic.
    cate_ : ``product_id``, ``cate`` for every assigned product (null when the product is
        not in the estimate, or for ``did``).
    path_ : treated-minus-control mean residual per period relative to the start (None
        when ``effect_path`` is False).
    baseline_models_ : products per baseline model (``level+trend+weekday``, ``level only``,
        ``left out``).
    n_unmatched_ : products never in a two-armed leaf (not in the estimate).
    arm_units_ : resampling units with treated and with control cells.
    bootstrap_draws_ : the bootstrap replicates of the estimate.
    forest_splits_ : each forest feature's share of the forest's splits (empty for ``did``
        or when no tree split).
    """

    def __init__(
        self,
        method: str = "hpte",
        n_bootstrap: int = 500,
        outlier_rule: str = "robust",
        outlier_c: float = DEFAULT_OUTLIER_C,
        outlier_filter: bool = True,
        detrend: bool = True,
        n_estimators: int = DEFAULT_TREES,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        min_samples_leaf: int = DEFAULT_MIN_SAMPLES_LEAF,
        n_jobs: int = -1,
        random_state: int = 0,
        effect_path: bool = True,
        engine=None,
    ) -> None:
        self.method = method
        self.n_bootstrap = n_bootstrap
        self.outlier_rule = outlier_rule
        self.outlier_c = outlier_c
        self.outlier_filter = outlier_filter
        self.detrend = detrend
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.min_samples_leaf = min_samples_leaf
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.effect_path = effect_path
        self.engine = engine

    def fit(
        self,
        sales: pl.DataFrame,
        assignment: pl.DataFrame,
        outcome: str = "units",
        features: pl.DataFrame | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> HeterogeneousPanelEffect:
        """Estimate the effect of the assignment's treatment on ``outcome``."""
        with partition_panel(sales, assignment, [outcome]) as panel:
            user = encode_features(features, panel.product_ids) if features is not None else None
            return self.fit_panel(panel, outcome, user, progress)

    def fit_panel(
        self,
        panel: Panel | PartitionedPanel,
        outcome: str,
        user_features: tuple[np.ndarray, list[str]] | None = None,
        progress: Callable[[int], None] | None = None,
        nights: np.ndarray | None = None,
    ) -> HeterogeneousPanelEffect:
        """``fit`` on a panel already laid out (shared by several outcomes), in memory or in
        partitions (each step maps over the partitions, see :mod:`pricelab_cli.hpte.panel`).

        ``nights`` (day numbers, ascending) also replays those past nights with this fit's
        model (:mod:`pricelab_cli.hpte.replay`): ``nights_`` has a ``summary()`` row per night
        (None for a night with no two-armed leaf yet)."""
        self._check_params()
        classic = self.method == "did"
        # Step 1: the classic DID is the first difference against the history's level alone.
        robust = self.outlier_rule == "robust" and not classic
        detrended = detrend_partitions(
            panel,
            outcome,
            detrend=self.detrend and not classic,
            remove_shocks=not classic,
            robust=robust,
            screen=self.outlier_filter,
            engine=self._partition_engine(),
        )
        warn_left_out(panel, detrended.fit, outcome)
        # From here on the cells are the filtered ones; the detrending keeps its per-product
        # arrays only.
        cells, detrended = detrended.take_cells()
        _check_arms(cells, outcome)
        _warn_without_experiment_rows(panel, detrended, cells, outcome)
        # Step 2.
        keep_product, swing_z, screen = self._outlier_mask(panel, detrended, cells)
        self.n_outliers_ = int((~keep_product).sum() + detrended.screened.sum())
        self.outliers_ = outlier_table(panel, outcome, detrended, keep_product, swing_z)
        # Every cell before the screen: the bootstrap takes the screen again in each draw.
        screened_from = cells
        cells = cells.take(keep_product[cells.code])
        _check_arms(cells, outcome, after="the outlier filter")
        # Step 3: the classic DID is the leaf estimator with one leaf.
        self.forest_splits_: dict[str, float] = {}
        # Work of this process, not a map of tasks: one step of the engine's progress.
        counter = self._partition_engine().counter
        counter.add(
            1, f"{outcome}: one leaf (did)" if classic else f"{outcome}: causal forest ({self.n_estimators} trees)"
        )
        leaves = (
            np.zeros((len(cells.code), 1), dtype=np.int64)
            if classic
            else self._forest_leaves(panel, detrended, cells, user_features)
        )
        cells_per_product = np.bincount(cells.code, minlength=panel.n_products)
        # In this process: shipping the fitted trees to workers costs what it would save.
        leaf = leaf_second_difference(
            leaves, cells.treated, cells.first_difference, 1.0 / cells_per_product[cells.code]
        )
        counter.done(1)
        in_estimate = np.bincount(cells.code[leaf.matched], minlength=panel.n_products) > 0
        self.estimate_ = leaf.estimate
        self.n_products_ = int(in_estimate.sum())
        self.n_unmatched_ = int((cells_per_product > 0).sum()) - self.n_products_
        if self.n_unmatched_:
            warnings.warn(
                f"{outcome}: {self.n_unmatched_} product(s) never share a forest leaf with the other arm "
                "and are not in the estimate.",
                PricelabWarning,
                stacklevel=2,
            )
        # Step 4 (the lift shares the estimate's draws).
        detreat = self._detreat_sensitivity(detrended, cells, leaf)
        self._bootstrap(
            panel, cells, leaf, outcome, progress, detreat, (screen, screened_from) if screen is not None else None
        )
        self.cate_ = product_cate(panel, cells, None if classic else leaf.cate)
        self.path_ = effect_path(panel, detrended, keep_product, self._partition_engine()) if self.effect_path else None
        self.baseline_models_ = detrended.fit.model_counts(panel.daily)
        self.outcome_ = outcome
        if nights is not None:
            self.nights_ = self._replay(panel, detrended, screened_from, leaves, user_features, nights)
        return self

    def _replay(
        self,
        panel: Panel | PartitionedPanel,
        detrended: CatalogDetrend,
        cells: Cells,
        leaves,
        user_features,
        nights: np.ndarray,
    ) -> list[dict | None]:
        """Each past night's summary row, from this fit's model (``hpte.replay``); ``cells``
        are tonight's cells before the swing screen."""
        engine = self._partition_engine()
        by_product = product_leaves(
            leaves, lambda: self._product_features(panel, detrended, user_features)[0], panel.n_products
        )
        per_night = night_cells(panel, detrended, cells, nights, engine)
        fits = []
        engine.counter.add(len(per_night), f"{self.outcome_}: {len(per_night)} past nights")
        while per_night:
            # Each night's cells go as soon as its fit has what the bootstrap needs.
            fits.append(
                fit_night(
                    panel,
                    detrended,
                    per_night.pop(0),
                    by_product,
                    lambda night: self._outlier_mask(panel, detrended, night),
                    lambda night, leaf: self._detreat_sensitivity(detrended, night, leaf),
                )
            )
            engine.counter.done(1)
        present = max((int(f.plan.present.sum()) for f in fits if f is not None), default=0)
        drawn = draw_nights(fits, self.n_bootstrap, self.random_state, self._engine(present))
        rows: list[dict | None] = []
        for fit, night in zip(fits, drawn):
            if fit is None or night is None:
                rows.append(None)
                continue
            rows.append(
                {
                    "outcome": self.outcome_,
                    "estimate": fit.plan.estimate,
                    **night.columns(),
                    "n_products": fit.n_products,
                    "n_outliers": fit.n_outliers,
                }
            )
        return rows

    def _outlier_mask(
        self, panel: Panel | PartitionedPanel, detrended: CatalogDetrend, cells: Cells
    ) -> tuple[np.ndarray, np.ndarray, ScreenState | None]:
        """Products kept by the outlier filter (everyone for ``did`` or without the filter),
        each product's swing statistic (NaN where not ranked), and for the robust rule what
        its decisions move with (the bootstrap takes them again, see ``hpte.reselect``)."""
        keep = np.ones(panel.n_products, dtype=bool)
        statistic = np.full(panel.n_products, np.nan)
        screen = None
        if self.method == "hpte" and self.outlier_filter:
            swing, stratum = product_swings(cells, detrended.fit.volatility, panel.n_products)
            analysed = np.flatnonzero(stratum >= 0)
            if self.outlier_rule == "robust":
                keep[analysed], statistic[analysed] = swing_screen(swing[analysed], stratum[analysed])
                # A product that sold nothing on every day of an arm may have been killed by the
                # price: both arms alike keep such products (see robust.stockout_rows).
                killed = np.zeros(panel.n_products, dtype=bool)
                killed[np.unique(cells.code[cells.empty])] = True
                gone = unmeasurable(detrended)
                keep = (keep | killed) & ~gone
                inputs = detrended.detreat_inputs
                factor = inputs.factor() if inputs is not None else 1.0
                slope = swing_slope(cells, detrended.fit.volatility, factor, panel.n_products)
                screen = screen_state(swing, stratum, keep, killed | gone, slope, robust.SWING_Z)
            else:
                if self.outlier_c / max(len(analysed), 1) > MAX_TAIL_SHARE:
                    warnings.warn(
                        f"`outlier_c` {self.outlier_c:g} asks for a tail share of {self.outlier_c / len(analysed):.0%} "
                        f"of {len(analysed):,} products; the quantile rule caps it at {MAX_TAIL_SHARE:.0%}.",
                        PricelabWarning,
                        stacklevel=3,
                    )
                keep[analysed] = outlier_filter(swing[analysed], stratum[analysed], self.outlier_c)
                statistic[analysed] = swing[analysed]
        return keep, statistic, screen

    def _forest_leaves(self, panel: Panel | PartitionedPanel, detrended: CatalogDetrend, cells: Cells, user_features):
        features, names = self._product_features(panel, detrended, user_features)
        products, index = np.unique(cells.code, return_inverse=True)
        leaves = forest_leaves(
            None,
            cells.treated,
            cells.first_difference,
            n_estimators=self.n_estimators,
            max_samples=self.max_samples,
            min_samples_leaf=self.min_samples_leaf,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            distinct_rows=(features[products], index),
        )
        counts = leaves.split_counts(len(names)) if isinstance(leaves, TreeLeaves) else np.zeros(len(names))
        total = counts.sum()
        self.forest_splits_ = {n: float(c / total) for n, c in zip(names, counts)} if total else {}
        return leaves

    def _detreat_sensitivity(self, detrended: CatalogDetrend, cells: Cells, leaf) -> tuple[DetreatInputs, float] | None:
        """The de-treating factor's inputs and how fast the estimate moves with the factor
        (the leaf second difference of the cells' slopes: the estimate is linear in the
        cells' first differences), when the robust step chose a factor from the data and
        the bootstrap is to redraw it; else None."""
        inputs = detrended.detreat_inputs
        if inputs is None or self.n_bootstrap == 0 or not np.any(cells.detreat_slope):
            return None
        return inputs, float(leaf.coefficient @ cells.detreat_slope)

    def _bootstrap(
        self,
        panel: Panel | PartitionedPanel,
        cells: Cells,
        leaf,
        outcome: str,
        progress,
        detreat=None,
        screen: tuple[ScreenState, Cells] | None = None,
    ) -> None:
        """Resample units (products or clusters) within their arm strata: the estimate and
        the treated cells' observed mean, together; the lift's draws are ``estimate /
        (observed - estimate)``.

        With ``detreat`` (the robust step's de-treating factor's inputs and the estimate's
        slope in it), each draw also redraws the factor's two inputs from the same resample
        and moves the estimate by its slope times the factor's change: the factor is chosen
        from the data, and its noise is the estimate's too (a clipped treated row's effect
        part is ``(1 - 1/g) y``).

        With ``screen`` (the swing screen's state and every cell before it), each draw takes
        the screen again with the draw's factor and its strata's resampled centres and
        spreads, and moves the estimate by what the products it drops or keeps contribute
        (:mod:`pricelab_cli.hpte.reselect`)."""
        plan = draw_plan(panel, cells, leaf, detreat, screen)
        self.arm_units_ = plan.arm_units
        self._warn_few_units(panel, outcome)
        present = plan.present
        draws = bootstrap_draws(
            plan.estimates,
            plan.influence[present],
            plan.stratum[present],
            self.n_bootstrap,
            self.random_state,
            progress,
            self._engine(int(present.sum())),
            stage=f"{outcome}: bootstrap",
        )
        self._take_draws(plan.finish(draws))

    def _take_draws(self, drawn: DrawSummary) -> None:
        self.se_, self.ci_low_, self.ci_high_, self.p_value_ = drawn.se, drawn.ci_low, drawn.ci_high, drawn.p_value
        self.lift_, self.lift_low_, self.lift_high_ = drawn.lift, drawn.lift_low, drawn.lift_high
        self.bootstrap_draws_ = drawn.draws

    def _partition_engine(self):
        return default_engine(self.engine, self.n_jobs)

    def _engine(self, size: int):
        """The engine's workers for the bootstrap chunks of a large catalog (the draws do
        not depend on where they run); below ``POOL_SIZE`` this process."""
        engine = self._partition_engine()
        return engine if size >= POOL_SIZE else LocalEngine(1, engine.counter)

    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"`method` {self.method!r} is not one of: {', '.join(METHODS)}.")
        if self.outlier_rule not in OUTLIER_RULES:
            raise UsageError(f"`outlier_rule` {self.outlier_rule!r} is not one of: {', '.join(OUTLIER_RULES)}.")
        check_bootstrap(self.n_bootstrap)
        if not self.outlier_c >= 0:
            raise UsageError(f"`outlier_c` {self.outlier_c} must be 0 or more.")
        if self.n_estimators < 1 or self.min_samples_leaf < 1 or self.max_samples < 2:
            raise UsageError("the forest needs at least 1 tree, leaves of at least 1 cell and 2 samples a tree.")

    def _product_features(
        self, panel: Panel | PartitionedPanel, detrended: CatalogDetrend, user_features
    ) -> tuple[np.ndarray, list[str]]:
        """Product features (user columns and pre-period summaries), one row per product, and
        their names."""
        summaries, names = pre_period_summaries(
            detrended.level, detrended.fit.trend, detrended.fit.volatility, panel.price
        )
        if user_features is None:
            return summaries, names
        return np.column_stack([user_features[0], summaries]), [*user_features[1], *names]

    def _warn_few_units(self, panel: Panel | PartitionedPanel, outcome: str) -> None:
        few = {arm: n for arm, n in self.arm_units_.items() if n < MIN_RELIABLE_UNITS}
        if few and self.n_bootstrap > 0:
            shown = " and ".join(f"{n} {arm}" for arm, n in few.items())
            warnings.warn(
                f"{outcome}: only {shown} {panel.unit_label}(s) to resample; the bootstrap keeps each arm's "
                "units, so it cannot see that arm's own noise and the SE is unreliable (too small).",
                PricelabWarning,
                stacklevel=3,
            )

    def summary(self) -> dict:
        """The output row of this outcome (SPEC column order)."""
        return {
            "outcome": self.outcome_,
            "estimate": self.estimate_,
            "se": self.se_,
            "ci_low": self.ci_low_,
            "ci_high": self.ci_high_,
            "p_value": self.p_value_,
            "lift": self.lift_,
            "lift_low": self.lift_low_,
            "lift_high": self.lift_high_,
            "n_products": self.n_products_,
            "n_outliers": self.n_outliers_,
        }


def _warn_without_experiment_rows(
    panel: Panel | PartitionedPanel, detrended: CatalogDetrend, cells: Cells, outcome: str
) -> None:
    """Name assigned products that have history but no analysed experiment row with sales."""
    has_cell = np.bincount(cells.code, minlength=panel.n_products) > 0
    has_history = detrended.fit.model != MODEL_NONE
    missing = np.flatnonzero(~has_cell & has_history & ~detrended.screened)
    if len(missing):
        shown = ", ".join(repr(panel.product_ids[int(i)]) for i in missing[:5])
        warnings.warn(
            f"{outcome}: {len(missing)} assigned product(s) have no sales on their analysed experiment dates "
            f"and are not in the estimate: {shown}{', ...' if len(missing) > 5 else ''}.",
            PricelabWarning,
            stacklevel=3,
        )


def _check_arms(cells: Cells, outcome: str, after: str | None = None) -> None:
    for arm, name in ((1, "treated"), (0, "control")):
        if not (cells.treated == arm).any():
            reason = f" after {after}" if after else " with pre-experiment history"
            raise DataError(f"{outcome}: the {name} arm has no products{reason}; both arms need products.")


@dataclasses.dataclass(frozen=True, eq=False)
class HpteResult:
    """What ``pricelab hpte`` writes and reports.

    Attributes
    ----------
    effects : one row per outcome, columns ``EFFECT_COLUMNS``.
    cate : ``product_id``, ``cate`` (one outcome) or ``product_id``, ``outcome``, ``cate``.
    outliers : ``OUTLIER_COLUMNS``, every outcome's audit trail of the robust step.
    paths : ``outcome`` plus the columns of ``effect_path`` (for ``--plot``); None when not
        asked for.
    estimators : the fitted estimator of each outcome.
    spacing_days, unit_label, n_ignored_sales_products : facts about the panel.
    """

    effects: pl.DataFrame
    cate: pl.DataFrame
    paths: pl.DataFrame | None
    outliers: pl.DataFrame
    estimators: dict[str, HeterogeneousPanelEffect]
    spacing_days: int
    unit_label: str
    n_ignored_sales_products: int
    # With ``nights``: ``date`` and the effects' columns, a row per past night and outcome.
    nights: pl.DataFrame | None = None


def estimate_hpte(
    sales: pl.DataFrame | pl.LazyFrame,
    assignment: pl.DataFrame | pl.LazyFrame,
    *,
    outcomes: Sequence[str] = ("units",),
    features: pl.DataFrame | None = None,
    method: str = "hpte",
    n_bootstrap: int = 500,
    seed: int = 0,
    outlier_rule: str = "robust",
    outlier_c: float = DEFAULT_OUTLIER_C,
    outlier_filter: bool = True,
    detrend: bool = True,
    n_estimators: int = DEFAULT_TREES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    min_samples_leaf: int = DEFAULT_MIN_SAMPLES_LEAF,
    price_col: str | None = "price",
    effect_paths: bool = True,
    labels: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    read_progress: Callable[[int], None] | None = None,
    rows_per_partition: int | None = None,
    n_jobs: int = -1,
    engine=None,
    fill_zeros: bool = True,
    as_of: dt.date | None = None,
    sequential: bool = False,
    sequential_horizon: dt.date | None = None,
    nights: Sequence[dt.date] | None = None,
) -> HpteResult:
    """Heterogeneous panel treatment effect of each outcome (see :mod:`pricelab_cli.hpte`).

    Parameters
    ----------
    sales : ``product_id``, ``date`` and the outcome columns (``price_col`` optional), as a
        frame or a lazy scan (read as a stream of batches: only these columns, only dates up
        to the assignment's end).
    assignment : ``product_id``, ``date``, ``treated`` [, ``blackout``, ``cluster_id``].
    outcomes : outcome columns, one output row each.
    features : optional product table (``product_id`` + feature columns) for the forest.
    method : ``hpte`` or ``did``.
    n_bootstrap, seed : bootstrap draws and the seed of the forest and the draws.
    outlier_rule, outlier_c, outlier_filter, detrend : see ``HeterogeneousPanelEffect``.
    effect_paths : compute ``paths`` (the data of ``--plot``); skipping saves a pass.
    labels : names of the tables in error messages, e.g. their file names
        (``{"sales": ..., "assignment": ..., "features": ...}``).
    progress : called with the number of bootstrap draws done, batch by batch.
    read_progress : called with the number of sales rows read, batch by batch.
    n_jobs : worker processes for the per-partition steps and threads for the forest (0 or
        less: every core); the result does not depend on it.
    rows_per_partition : sales rows per partition of products (default
        ``hpte.panel.PARTITION_ROWS``); the result does not depend on it.
    engine : where the partition tasks run (this machine with ``n_jobs`` processes by
        default, or any :class:`~pricelab_cli.engine.Engine`); the result does not depend on it.
    fill_zeros : read a product-date without a row as a day without sales (see
        :func:`~pricelab_cli.hpte.panel.partition_panel`); False leaves it absent.
    as_of : analyse the experiment as it stood at the end of this date (assignment rows,
        and so sales, up to it); a date before the first analysed day is a usage error.
    sequential : add the 95% confidence sequence (``SEQUENCE_COLUMNS``, see
        :mod:`pricelab_cli.sequential`), tightest at ``sequential_horizon`` (by default the
        assignment's last date, the design's planned end).
    nights : past nights (before the last date analysed) to replay with this run's model
        (:mod:`pricelab_cli.hpte.replay`): the result's ``nights`` table, a row per night and
        outcome (a night with no two-armed leaf yet has none).
    """
    if method not in METHODS:
        raise UsageError(f"`method` {method!r} is not one of: {', '.join(METHODS)}.")
    labels = dict(labels or {})
    engine = default_engine(engine, n_jobs)
    # The estimator's own settings, named once: one estimator per outcome is made from them
    # (the bootstrap and the path, the outlier filter, the forest).
    settings = dict(method=method, n_bootstrap=n_bootstrap, random_state=seed, effect_path=effect_paths, engine=engine)
    settings.update(outlier_rule=outlier_rule, outlier_c=outlier_c, outlier_filter=outlier_filter, detrend=detrend)
    settings.update(
        n_estimators=n_estimators, max_samples=max_samples, min_samples_leaf=min_samples_leaf, n_jobs=n_jobs
    )
    analysed = assignment if as_of is None else as_it_stood(assignment.lazy(), sales, as_of)
    with partition_panel(
        sales,
        analysed,
        outcomes,
        price_col=price_col,
        labels=labels,
        rows_per_partition=rows_per_partition,
        progress=read_progress,
        engine=engine,
        fill_zeros=fill_zeros,
    ) as panel:
        last_seen = _EPOCH + dt.timedelta(days=int(panel.dates[-1]))
        past = None
        if nights is not None:
            past = sorted(n for n in set(nights) if n < last_seen)
            days = np.array([(n - _EPOCH).days for n in past], dtype=np.int64)
        result = _estimate_panel(panel, outcomes, features, labels, progress, settings, None if past is None else days)
    if past is not None:
        result = dataclasses.replace(result, nights=_night_table(result, past))
    if not sequential:
        return result
    # One count of the assignment gives tonight's share of the plan and every past night's.
    *before, fraction = information_fractions(assignment, [*(past or []), last_seen], sequential_horizon)
    effects = with_sequence(result.effects, fraction)
    if past is None or result.nights is None:
        return dataclasses.replace(result, effects=effects)
    fractions = dict(zip(past, before))
    table = result.nights
    by_night = [with_sequence(table.filter(pl.col("date") == n), fractions[n]) for n in past]
    nights_table = pl.concat(by_night) if by_night else with_sequence(table, float("nan"))
    return dataclasses.replace(result, effects=effects, nights=nights_table)


def _night_table(result: HpteResult, past: list[dt.date]) -> pl.DataFrame:
    """The replayed nights of every outcome: ``date`` and the effects' columns."""
    rows = [
        {"date": night, **row}
        for est in result.estimators.values()
        for night, row in zip(past, est.nights_)
        if row is not None
    ]
    return (
        pl.DataFrame(rows, schema={"date": pl.Date, **result.effects.schema}, orient="row")
        .with_columns(pl.col(_FLOAT_COLUMNS).fill_nan(None))
        .sort("date", maintain_order=True)
    )


def _estimate_panel(
    panel: PartitionedPanel,
    outcomes: Sequence[str],
    features: pl.DataFrame | None,
    labels: Mapping[str, str],
    progress: Callable[[int], None] | None,
    settings: dict,
    nights: np.ndarray | None = None,
) -> HpteResult:
    """Fit one ``HeterogeneousPanelEffect(**settings)`` per outcome on the laid-out panel
    (replaying ``nights`` too, see ``fit_panel``)."""
    user = (
        encode_features(features, panel.product_ids, labels.get("features", "features"))
        if features is not None and settings["method"] == "hpte"
        else None
    )
    fitted: dict[str, HeterogeneousPanelEffect] = {}
    for outcome in dict.fromkeys(outcomes):
        fitted[outcome] = HeterogeneousPanelEffect(**settings).fit_panel(panel, outcome, user, progress, nights)
    effects = pl.DataFrame(
        [est.summary() for est in fitted.values()],
        schema={
            "outcome": pl.String,
            **{c: pl.Float64 for c in _FLOAT_COLUMNS},
            "n_products": pl.Int64,
            "n_outliers": pl.Int64,
        },
        orient="row",
    ).with_columns(pl.col(_FLOAT_COLUMNS).fill_nan(None))
    if len(fitted) == 1:
        cate = next(iter(fitted.values())).cate_
    else:
        cate = pl.concat(
            [est.cate_.select("product_id", pl.lit(name).alias("outcome"), "cate") for name, est in fitted.items()]
        )
    paths = (
        pl.concat(
            [
                est.path_.select(pl.lit(name).alias("outcome"), pl.all())
                for name, est in fitted.items()
                if est.path_ is not None
            ]
        )
        if settings["effect_path"]
        else None
    )
    outliers = pl.concat([est.outliers_ for est in fitted.values()])
    return HpteResult(
        effects, cate, paths, outliers, fitted, panel.spacing_days, panel.unit_label, panel.n_ignored_sales_products
    )
