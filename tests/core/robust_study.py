"""The contamination study behind hpte's robust default (shared by the slow tests and docs/method.md).

Every repetition draws a fresh assignment (a new salt) and fresh sales (a new seed) for one
fixed catalog, twice contaminated (1% and 3% of products, the additive kinds dealt out in
turn) and once clean: the clean twin is the same draw without the contamination, so the
three panels differ only by it. The truth of a repetition is the simulator's
``truth["effect"]``, the same for the twins since the additive kinds leave the effect alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings

import numpy as np
import polars as pl

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.hpte import HeterogeneousPanelEffect
from pricelab_cli.simulate import ADDITIVE_CONTAMINATION, simulate_catalog, simulate_sales

START = dt.date(2024, 6, 3)
FEATURES = ("product_id", "quality", "brand", "size", "base_price")
DESIGNS = ("time-bound", "triggered", "random-days", "crossover")


def design_of(kind: str, salt: str):
    """The four designs over 28 days; crossover: two 14-day phases opening with 7 blackout days."""
    if kind in ("time-bound", "random-days"):
        return make_design(kind, salt=salt, start=START, end=START + dt.timedelta(days=27))
    if kind == "crossover":
        return make_design(kind, salt=salt, start=START, phase_days=14, blackout_days=7)
    return make_design(kind, salt=salt, duration_days=28)


@dataclasses.dataclass
class Arm:
    """One estimator on one version of the panels, over the repetitions."""

    error: list = dataclasses.field(default_factory=list)
    se: list = dataclasses.field(default_factory=list)
    hit: list = dataclasses.field(default_factory=list)
    estimate: list = dataclasses.field(default_factory=list)
    control: list = dataclasses.field(default_factory=list)

    def add(self, est: HeterogeneousPanelEffect, truth: float, control_error: float) -> None:
        self.error.append(est.estimate_ - truth)
        self.se.append(est.se_)
        self.hit.append(est.ci_low_ <= truth <= est.ci_high_)
        self.estimate.append(est.estimate_)
        self.control.append(control_error)

    @property
    def spread(self) -> float:
        """Standard deviation of the estimates' errors across repetitions (the real SE)."""
        return float(np.std(self.error, ddof=1))

    @property
    def bias(self) -> float:
        return float(np.mean(self.error))

    @property
    def bias_cv(self) -> tuple[float, float]:
        """The bias with the design-based difference in means as a control variate, and its
        Monte Carlo standard error.

        The plain difference of arm means (``raw_difference``) is unbiased by randomisation
        alone, so its mean error is known to be 0; subtracting ``beta`` times its observed
        mean error (``beta`` the regression slope of the estimator's errors on it) removes
        the share of the Monte Carlo noise the two share, which in switchback designs is
        most of it. With uncorrelated errors it is the plain mean.
        """
        e, c = np.asarray(self.error), np.asarray(self.control)
        beta = float(np.cov(e, c)[0, 1] / np.var(c, ddof=1)) if np.var(c) > 0 else 0.0
        adjusted = e - beta * (c - 0.0)
        return float(adjusted.mean()), float(adjusted.std(ddof=1) / np.sqrt(len(e)))

    @property
    def coverage(self) -> float:
        return float(np.mean(self.hit))

    @property
    def mean_se(self) -> float:
        return float(np.mean(self.se))

    def row(self) -> str:
        cv, cv_se = self.bias_cv
        return (
            f"bias {self.bias:+.3f} ({self.bias / self.spread:+.2f} SE; with control variate {cv:+.3f} "
            f"+- {cv_se:.3f}, {cv / self.spread:+.2f} SE), SE {self.spread:.3f} "
            f"(bootstrap {self.mean_se:.3f}), coverage {self.coverage:.2f}"
        )


def raw_difference(sales: pl.DataFrame, assignment: pl.DataFrame) -> float:
    """Mean outcome of treated cells minus that of control cells, each product's cell weighted
    equally (non-blackout days): unbiased for the average effect by randomisation alone."""
    cells = (
        sales.join(
            assignment.filter(~pl.col("blackout")).select("product_id", "date", "treated"), on=["product_id", "date"]
        )
        .group_by("product_id", "treated")
        .agg(pl.col("units").mean())
        .group_by("treated")
        .agg(pl.col("units").mean())
    )
    means = dict(cells.iter_rows())
    return float(means[1] - means[0])


def contamination_study(
    kind: str,
    reps: int,
    *,
    n: int = 500,
    shares: tuple[float, ...] = (0.01, 0.03),
    kinds: tuple[str, ...] = ADDITIVE_CONTAMINATION,
    history_days: int = 91,
    trees: int = 10,
    n_bootstrap: int = 200,
    quantile_dirty: bool = True,
    first_rep: int = 0,
) -> dict[str, Arm]:
    """Arms ``robust clean``, ``quantile clean``, ``robust <share>`` (and ``quantile <share>``)."""
    products, _ = simulate_catalog(n, 10, 5, seed=1)
    features = products.select(FEATURES)
    arms: dict[str, Arm] = {}

    def fit(
        name: str, sales: pl.DataFrame, assignment: pl.DataFrame, truth: float, rep: int, control: float, **settings
    ) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = HeterogeneousPanelEffect(
                n_bootstrap=n_bootstrap, n_estimators=trees, random_state=rep, effect_path=False, n_jobs=1, **settings
            ).fit(sales, assignment, "units", features)
        arms.setdefault(name, Arm()).add(est, truth, control)

    for rep in range(first_rep, first_rep + reps):
        events = None
        if kind == "triggered":
            offsets = np.random.default_rng(rep).integers(0, 28, n)
            events = pl.DataFrame(
                {
                    "product_id": products["product_id"],
                    "event_date": [START + dt.timedelta(days=int(o)) for o in offsets],
                }
            )
        assignment = assign(design_of(kind, f"robust-{rep}"), products, events=events)
        for i, share in enumerate(shares):
            sim = simulate_sales(
                products,
                assignment=assignment,
                history_days=history_days,
                seed=rep,
                contamination=share,
                contamination_kinds=kinds,
            )
            truth = sim.truth["effect"]
            # The control variate: the design-based difference on a panel whose effect is the
            # truth (the clean twin for the additive kinds; the panel itself when the
            # contamination carries the effect).
            carries = "outlier" in kinds
            control = raw_difference(sim.sales if carries else sim.clean_sales, assignment) - truth
            if i == 0:
                clean_truth = sim.truth["effect_clean"]
                clean_control = raw_difference(sim.clean_sales, assignment) - clean_truth
                fit("robust clean", sim.clean_sales, assignment, clean_truth, rep, clean_control)
                fit(
                    "quantile clean",
                    sim.clean_sales,
                    assignment,
                    clean_truth,
                    rep,
                    clean_control,
                    outlier_rule="quantile",
                )
            fit(f"robust {share:.0%}", sim.sales, assignment, truth, rep, control)
            if quantile_dirty:
                fit(f"quantile {share:.0%}", sim.sales, assignment, truth, rep, control, outlier_rule="quantile")
    return arms
