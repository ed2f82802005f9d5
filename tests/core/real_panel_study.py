"""Experiments drawn on real retail panels: A/A, planted multiplicative effects, contamination.

The panel is used as it comes (zeros, gaps, bulk orders): its last weeks are the experiment,
everything before is history. Each repetition draws a fresh assignment with pricelab's own
``make_design`` and ``assign`` (a new salt), then builds outcome columns on the same rows so
that every estimate of one repetition shares one assignment:

- ``aa``: the sales as they are (no effect);
- ``m05`` and ``m10``: units times 1.05 and 1.10 on treated, analysed product-days;
- ``het``: units times ``1 + tau_i`` on treated product-days, ``tau_i`` from 0.02 to 0.18
  rising with the product's mean price rank (mean 0.10);
- ``m10_dirty``: ``m10`` with additive contamination on 3% of products (bulk orders of 20-50
  times the product's level on a day in 30, a level jump of 3-6 times its level from an
  experiment day on, stock-out runs of 5-10 days in history and experiment, mean-preserving
  gamma noise), dealt out in turn; the truth is ``m10``'s.

The panel is prepared once (``prepare``): its last ``STUDY_DAYS`` days, with the days a
product has no row filled with 0 from its first row on (as ``hpte`` reads a sparse export by
default), so that the truth and every estimator (today's rule included) see the same rows.

The truth of a planted outcome is the all-product average of what was added: per product
the mean over its treated analysed days of ``tau_i * y_it``, then the mean over products
with treated analysed days (every product weighted equally, as hpte's estimate). The paired
recovery ratio of a repetition is ``(estimate - estimate of aa) / truth``: the A/A estimate
on the same assignment takes out the experiment's own noise, which dominates a real panel.
The same ratio over the truth of the products in the estimate (those with a CATE) tells
what the estimator reads on the products it keeps from what its robust step leaves out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import warnings

import numpy as np
import polars as pl

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.hpte import estimate_hpte

DESIGNS = ("time-bound", "triggered", "random-days", "crossover", "balanced-switchback")
PLANTED = {"m05": 0.05, "m10": 0.10}
OUTCOMES = ("aa", "m05", "m10", "het", "m10_dirty")
CONTAMINATION_SHARE = 0.03
STUDY_DAYS = 182
TREES = 10
BOOTSTRAP = 500


def prepare(products: pl.DataFrame, sales: pl.DataFrame, period_days: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The panel's last ``STUDY_DAYS`` days, every product filled with 0 on the panel's dates
    from its first row to the last date; products with no row in that window are dropped."""
    last = sales["date"].max()
    window = sales.filter(pl.col("date") > last - dt.timedelta(days=STUDY_DAYS))
    dates = window.select(pl.col("date").unique().sort())
    first = window.group_by("product_id").agg(pl.col("date").min().alias("first"))
    grid = first.join(dates, how="cross").filter(pl.col("date") >= pl.col("first")).drop("first")
    extra = [c for c in window.columns if c not in ("product_id", "date", "units")]
    dense = (
        grid.join(window, on=["product_id", "date"], how="left")
        .with_columns(pl.col("units").fill_null(0.0))
        .select("product_id", "date", "units", *extra)
        .sort("product_id", "date")
    )
    kept = products.join(first.select("product_id"), on="product_id", how="semi").sort("product_id")
    return kept, dense


def experiment_days(period_days: int) -> int:
    """28 days on a daily panel; 8 weeks on a weekly one."""
    return 28 if period_days == 1 else 8 * period_days


def design_of(kind: str, salt: str, last: dt.date, period_days: int):
    """The design of ``kind`` over the panel's last ``experiment_days``; crossover: two
    phases, the first quarter of each a blackout (rounded to whole periods)."""
    days = experiment_days(period_days)
    start = last - dt.timedelta(days=days - 1)
    if kind == "time-bound":
        return make_design(kind, salt=salt, start=start, end=last)
    if kind in ("random-days", "balanced-switchback"):
        return make_design(kind, salt=salt, start=start, end=last, block_days=period_days)
    if kind == "crossover":
        phase = days // 2
        blackout = max(period_days, (phase // 4) // period_days * period_days)
        return make_design(kind, salt=salt, start=start, phase_days=phase, blackout_days=blackout)
    return make_design(kind, salt=salt, duration_days=days // 2)


def _events(products: pl.DataFrame, rep: int, last: dt.date, period_days: int) -> pl.DataFrame:
    """Staggered starts: each product's event on one of the first half of the window's periods."""
    days = experiment_days(period_days)
    start = last - dt.timedelta(days=days - 1)
    n_starts = days // 2 // period_days
    offsets = np.random.default_rng([rep, 7]).integers(0, n_starts, len(products)) * period_days
    return pl.DataFrame(
        {"product_id": products["product_id"], "event_date": [start + dt.timedelta(days=int(o)) for o in offsets]}
    )


def _hash_unit(ids: pl.Series, salt: str) -> np.ndarray:
    """A uniform number per id from a hash (independent of row order)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(f"{salt}:{i}".encode(), digest_size=8).digest(), "big") / 2.0**64 for i in ids]
    )


def product_taus(products: pl.DataFrame) -> np.ndarray:
    """The heterogeneous planted lift: 0.02 to 0.18 by rank of the first numeric feature."""
    feature = next(c for c in products.columns if c != "product_id" and products[c].dtype.is_numeric())
    values = products[feature].fill_null(products[feature].median()).to_numpy().astype(np.float64)
    rank = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return 0.02 + 0.16 * rank / max(len(values) - 1, 1)


@dataclasses.dataclass
class Repetition:
    """One experiment: the design's estimates per outcome and the truths."""

    kind: str
    rep: int
    effects: pl.DataFrame
    truth: dict
    truth_lift: dict
    # The same truths over the products in the estimate (those with a CATE): what the
    # estimate measures once the robust step has left its products out.
    truth_in: dict = dataclasses.field(default_factory=dict)


def run_experiment(
    products: pl.DataFrame,
    sales: pl.DataFrame,
    period_days: int,
    kind: str,
    rep: int,
    *,
    estimate=estimate_hpte,
    trees: int = TREES,
    n_bootstrap: int = BOOTSTRAP,
) -> Repetition:
    """Draw one experiment of ``kind`` on the panel and estimate every outcome of it."""
    last = sales["date"].max()
    design = design_of(kind, f"real-{kind}-{rep}", last, period_days)
    events = _events(products, rep, last, period_days) if kind == "triggered" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assignment = assign(design, products.select("product_id"), events=events)
    planted, truth, truth_lift = plant(products, sales, assignment, rep)
    result = _estimate(estimate, planted, assignment, products, rep, list(OUTCOMES), trees, n_bootstrap)
    per_product = _added(products, sales, assignment)
    truth_in = {}
    for name in OUTCOMES[1:]:
        kept = result.cate.filter((pl.col("outcome") == name) & pl.col("cate").is_not_null())["product_id"]
        truth_in[name] = float(
            per_product.filter(pl.col("product_id").is_in(kept.implode()))[
                "m10" if name == "m10_dirty" else name
            ].mean()
        )
    return Repetition(kind, rep, result.effects, truth, truth_lift, truth_in)


def _estimate(estimate, planted, assignment, products, rep: int, outcomes: list[str], trees: int, n_bootstrap: int):
    """One repetition's estimates of ``outcomes`` (warnings silenced), on one core."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimate(
            planted.select("product_id", "date", *outcomes),
            assignment,
            outcomes=outcomes,
            features=products,
            n_bootstrap=n_bootstrap,
            seed=rep,
            n_estimators=trees,
            n_jobs=1,
            effect_paths=False,
        )


def _added(products: pl.DataFrame, sales: pl.DataFrame, assignment: pl.DataFrame) -> pl.DataFrame:
    """Per product with treated analysed days, the mean added per treated analysed day by
    each planted outcome (``plant``'s truths before the mean over products)."""
    tau = pl.DataFrame({"product_id": products["product_id"], "tau_het": product_taus(products)})
    treated = (
        sales.select("product_id", "date", "units")
        .join(assignment.select("product_id", "date", "treated", "blackout"), on=["product_id", "date"])
        .filter((pl.col("treated") == 1) & ~pl.col("blackout").fill_null(False))
        .join(tau, on="product_id", how="left")
    )
    y = pl.col("units").cast(pl.Float64)
    return (
        treated.group_by("product_id")
        .agg(m05=y * PLANTED["m05"], m10=y * PLANTED["m10"], het=y * pl.col("tau_het"))
        .with_columns(pl.col("m05", "m10", "het").list.mean())
    )


def plant(products: pl.DataFrame, sales: pl.DataFrame, assignment: pl.DataFrame, rep: int):
    """The outcome columns of one repetition, and each planted outcome's truth (units and lift)."""
    tau = pl.DataFrame({"product_id": products["product_id"], "tau_het": product_taus(products)})
    arms = assignment.select("product_id", "date", "treated", "blackout")
    frame = (
        sales.select("product_id", "date", "units")
        .join(arms, on=["product_id", "date"], how="left")
        .join(tau, on="product_id", how="left")
        .with_columns(
            on=(pl.col("treated").fill_null(0) == 1),
            analysed=(pl.col("treated").is_not_null() & ~pl.col("blackout").fill_null(False)),
        )
    )
    y = pl.col("units").cast(pl.Float64)
    columns = {"aa": y}
    for name, effect in PLANTED.items():
        columns[name] = pl.when(pl.col("on")).then(y * (1 + effect)).otherwise(y)
    columns["het"] = pl.when(pl.col("on")).then(y * (1 + pl.col("tau_het"))).otherwise(y)
    frame = frame.with_columns(**columns)
    # Truths: per product the mean added over treated analysed rows, then the product mean.
    treated_rows = frame.filter(pl.col("on") & pl.col("analysed"))
    added = treated_rows.group_by("product_id").agg(
        base=y.mean(),
        m05=(y * PLANTED["m05"]).mean(),
        m10=(y * PLANTED["m10"]).mean(),
        het=(y * pl.col("tau_het")).mean(),
    )
    truth = {name: float(added[name].mean()) for name in ("m05", "m10", "het")}
    truth["m10_dirty"] = truth["m10"]
    base = float(added["base"].mean())
    truth_lift = {name: value / base for name, value in truth.items()}
    dirty = contaminate(frame.select("product_id", "date", "m10", "treated", "aa"), rep)
    out = frame.select("product_id", "date", *[c for c in OUTCOMES if c != "m10_dirty"]).with_columns(m10_dirty=dirty)
    return out, truth, truth_lift


def contaminate(frame: pl.DataFrame, rep: int) -> np.ndarray:
    """``m10`` with additive contamination on ``CONTAMINATION_SHARE`` of products (the
    kinds dealt out in turn); rows keep their order."""
    rng = np.random.default_rng([rep, 11])
    ids = frame["product_id"].unique(maintain_order=True).sort()
    pick = _hash_unit(ids, f"dirty-{rep}")
    n_spoiled = max(1, int(round(CONTAMINATION_SHARE * len(ids))))
    spoiled = ids.gather(np.argsort(pick)[:n_spoiled])
    kinds = ("spike", "jump", "stockout", "noise")
    kind_of = dict(zip(spoiled.to_list(), (kinds[i % 4] for i in range(n_spoiled))))
    values = frame["m10"].to_numpy().astype(np.float64).copy()
    exp = frame["treated"].is_not_null().to_numpy()
    base = frame["aa"].to_numpy().astype(np.float64)
    index = frame.with_row_index("row").group_by("product_id").agg(pl.col("row"))
    for product, rows in index.iter_rows():
        kind = kind_of.get(product)
        if kind is None:
            continue
        rows = np.asarray(rows)
        level = max(float(base[rows].mean()), 0.5)
        if kind == "spike":
            bulk = rng.random(len(rows)) < 1 / 30
            values[rows] += rng.poisson(rng.uniform(20, 50) * level * bulk)
        elif kind == "jump":
            exp_rows = rows[exp[rows]]
            if len(exp_rows):
                from_row = exp_rows[rng.integers(0, len(exp_rows))]
                later = rows[rows >= from_row]
                values[later] += rng.poisson(rng.uniform(2, 5) * level, len(later))
        elif kind == "stockout":
            for part in (rows[~exp[rows]], rows[exp[rows]]):
                if len(part) > 10:
                    at = rng.integers(0, len(part) - 10)
                    values[part[at : at + rng.integers(5, 11)]] = 0.0
        else:
            values[rows] = rng.poisson(values[rows] * rng.gamma(0.05, 1 / 0.05, len(rows)))
    return values


def study(
    products: pl.DataFrame, sales: pl.DataFrame, period_days: int, kind: str, reps: int, first: int = 0, **settings
) -> list[Repetition]:
    """``reps`` experiments of ``kind`` on a prepared panel (seeds ``first`` on)."""
    return [run_experiment(products, sales, period_days, kind, rep, **settings) for rep in range(first, first + reps)]


def summarise(reps: list[Repetition]) -> dict:
    """Per outcome: A/A rejection rate, mean SE and spread of the A/A estimates, paired
    recovery ratio (with its Monte Carlo error), coverage of the truth and of the true lift,
    mean SE."""
    aa = np.array([r.effects.filter(pl.col("outcome") == "aa")["estimate"].item() for r in reps])
    aa_lo = np.array([r.effects.filter(pl.col("outcome") == "aa")["ci_low"].item() for r in reps])
    aa_hi = np.array([r.effects.filter(pl.col("outcome") == "aa")["ci_high"].item() for r in reps])
    aa_p = np.array([r.effects.filter(pl.col("outcome") == "aa")["p_value"].item() for r in reps])
    out = {
        "n": len(reps),
        "aa_reject": float(np.mean((aa_lo > 0) | (aa_hi < 0))),
        "aa_reject_p": float(np.mean(aa_p < 0.05)),
        "aa_se": float(np.mean([r.effects.filter(pl.col("outcome") == "aa")["se"].item() for r in reps])),
        "aa_spread": float(aa.std(ddof=1)),
    }
    for name in ("m05", "m10", "het", "m10_dirty"):
        rows = [r.effects.filter(pl.col("outcome") == name).row(0, named=True) for r in reps]
        est = np.array([row["estimate"] for row in rows])
        truth = np.array([r.truth[name] for r in reps])
        diff = est - aa
        # Ratio of means, with its delta-method Monte Carlo error.
        ratio = diff.mean() / truth.mean()
        resid = diff - ratio * truth
        ratio_se = float(resid.std(ddof=1) / np.sqrt(len(reps)) / abs(truth.mean()))
        hit = [row["ci_low"] <= t <= row["ci_high"] for row, t in zip(rows, truth)]
        truth_in = np.array([r.truth_in.get(name, np.nan) for r in reps])
        ratio_in = diff.mean() / truth_in.mean()
        entry = {
            "recovery": float(ratio),
            "recovery_mc": ratio_se,
            "recovery_in_estimate": float(ratio_in),
            "recovery_in_estimate_mc": float(
                (diff - ratio_in * truth_in).std(ddof=1) / np.sqrt(len(reps)) / abs(truth_in.mean())
            ),
            "truth_in_estimate_share": float(truth_in.mean() / truth.mean()),
            "coverage": float(np.mean(hit)),
            "se": float(np.mean([row["se"] for row in rows])),
            "spread": float(np.std(diff, ddof=1)),
        }
        if "lift_low" in rows[0]:
            lift_truth = np.array([r.truth_lift[name] for r in reps])
            entry["lift_coverage"] = float(
                np.mean([row["lift_low"] <= t <= row["lift_high"] for row, t in zip(rows, lift_truth)])
            )
        out[name] = entry
    return out


class DesignVariance:
    """A design-based SE of hpte beside its bootstrap, on switchbacks with one-day blocks:
    with the forest's leaves fixed the estimate is linear in the cells' first differences
    (``coefficient @ y``), and each cell's mean residual varies with which of the product's
    days the design treated. The Neyman variance over days is then
    ``sum(coefficient^2 * s^2 / n)`` with ``s^2`` the variance of the residuals over the
    cell's ``n`` analysed days. Measured by hooking the estimator (nothing in pricelab
    computes it: it is not offered, see docs/method.md); ``se[outcome]`` after each fit."""

    def __init__(self) -> None:
        self.se: dict[str, float] = {}
        self._within: dict[tuple, tuple[float, int]] = {}

    def __enter__(self) -> DesignVariance:
        from pricelab_cli.hpte import detrend
        from pricelab_cli.hpte.estimate import HeterogeneousPanelEffect

        self._saved = detrend.first_difference, HeterogeneousPanelEffect._bootstrap
        first_difference, bootstrap = self._saved
        within, se = self._within, self.se

        def hooked_first_difference(panel, detrended, y=None):
            cells = first_difference(panel, detrended, y)
            rows = np.flatnonzero(~panel.pre & detrended.usable)
            of_row = np.searchsorted(cells.code * 2 + cells.treated, panel.code[rows] * 2 + panel.treated[rows])
            deviation = detrended.residual[rows] - cells.first_difference[of_row]
            squares = np.bincount(of_row, weights=deviation**2, minlength=len(cells.code))
            ids = np.asarray(panel.product_ids)[cells.code]
            within.update(zip(zip(ids, cells.treated.tolist()), zip(squares, cells.n_rows)))
            return cells

        def hooked_bootstrap(estimator, panel, cells, leaf, outcome, *args):
            ids = np.asarray(panel.product_ids)[cells.code]
            squares = np.array([within[(i, t)][0] for i, t in zip(ids, cells.treated.tolist())])
            n = cells.n_rows.astype(np.float64)
            s2 = np.where(n > 1, squares / np.maximum(n - 1, 1), 0.0)
            se[outcome] = float(np.sqrt(np.sum(leaf.coefficient**2 * s2 / n)))
            return bootstrap(estimator, panel, cells, leaf, outcome, *args)

        detrend.first_difference = hooked_first_difference
        HeterogeneousPanelEffect._bootstrap = hooked_bootstrap
        return self

    def __exit__(self, *exc) -> None:
        from pricelab_cli.hpte import detrend
        from pricelab_cli.hpte.estimate import HeterogeneousPanelEffect

        detrend.first_difference, HeterogeneousPanelEffect._bootstrap = self._saved


def design_variance_study(products: pl.DataFrame, sales: pl.DataFrame, period_days: int, reps: int) -> dict:
    """``reps`` balanced switchbacks with one-day blocks, outcomes ``aa`` and ``m10``: per
    outcome the estimates, the bootstrap's SE and interval, the design-based SE, the truth."""
    last = sales["date"].max()
    out: dict[str, dict[str, list]] = {
        o: {k: [] for k in ("est", "se", "lo", "hi", "dse", "truth")} for o in ("aa", "m10")
    }
    with DesignVariance() as design_se:
        for rep in range(reps):
            design = design_of("balanced-switchback", f"real-balanced-switchback-{rep}", last, period_days)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assignment = assign(design, products.select("product_id"))
                planted, truth, _ = plant(products, sales, assignment, rep)
            result = _estimate(estimate_hpte, planted, assignment, products, rep, ["aa", "m10"], TREES, BOOTSTRAP)
            for name, column in out.items():
                row = result.effects.filter(pl.col("outcome") == name).row(0, named=True)
                for key, value in (("est", "estimate"), ("se", "se"), ("lo", "ci_low"), ("hi", "ci_high")):
                    column[key].append(row[value])
                column["dse"].append(design_se.se[name])
                column["truth"].append(0.0 if name == "aa" else truth[name])
    return {name: {k: np.asarray(v, dtype=np.float64) for k, v in column.items()} for name, column in out.items()}
