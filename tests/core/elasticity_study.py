"""The elasticity studies (shared by the slow and full tests and docs/method.md's figures).

``python tests/core/elasticity_study.py simulated KIND REPS`` / ``bound KIND REPS`` /
``optimum REPS`` / ``real PANEL REPS`` prints a study's summary.

- ``simulated``: catalogs of 2,000 products in 20 categories with planted elasticities in
  [-3, -0.3], a policy that cuts each product's price by 5-20%, substitutes on the planted
  graph (cross-elasticities) and 28 experiment days after 365 of history; one fresh
  assignment and panel per experiment. Errors and coverage against ``truth.json``'s
  ``elasticity_by_group`` and ``cross_elasticity_by_group``.
- ``bound``: on the same experiments, the information bound of any estimator that uses only
  the randomised price changes (see ``information_bound``).
- ``optimum``: the profit-maximising price change against its truth (the same rule with the
  planted elasticity), on catalogs of 20,000 products in 20 categories (costs a share of the
  base price drawn per category in [0.4, 0.7]): at 2,000 products the own elasticity's
  standard error alone (about 0.14) moves the optimum by 2-4 points.
- ``real``: a real panel from ``tests/real_panels.py`` as it comes; a planted elasticity of
  -1.5 applied through a planted price policy (each product's price times ``1 + c``, ``c``
  from -5% to -20% by a hash of its id, and its units times ``(1 + c) ** -1.5`` on treated
  days); Complete Journey by department (departments of 20 products or more), Ta Feng as
  one group (its subclasses hold a handful of products each).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.elasticity import estimate_elasticity
from pricelab_cli.errors import PricelabWarning
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2024, 6, 3)
PLANTED = -1.5
BOOTSTRAP = 200


@dataclasses.dataclass
class Found:
    """Estimates against their truth, one per group and experiment."""

    error: list[float] = dataclasses.field(default_factory=list)
    covered: list[bool] = dataclasses.field(default_factory=list)
    empty: int = 0

    def add(self, table: pl.DataFrame, truth: dict[str, float], kind: str) -> None:
        rows = table.filter(pl.col("kind") == kind).join(
            pl.DataFrame(
                {"group": list(truth), "truth": list(truth.values())}, schema={"group": pl.String, "truth": pl.Float64}
            ),
            on="group",
        )
        self.empty += rows["estimate"].null_count()
        rows = rows.drop_nulls("estimate")
        self.error += (rows["estimate"] - rows["truth"]).to_list()
        self.covered += ((rows["ci_low"] <= rows["truth"]) & (rows["truth"] <= rows["ci_high"])).to_list()

    def summary(self) -> dict:
        error = np.array(self.error)
        if not len(error):
            return {"n": 0, "empty": self.empty, "median_abs_error": np.nan, "bias": np.nan, "coverage": np.nan}
        return {
            "n": len(error),
            "empty": self.empty,
            "median_abs_error": float(np.median(np.abs(error))),
            "bias": float(error.mean()),
            "coverage": float(np.mean(self.covered)),
        }


def simulated(kind: str, reps: int, n_products: int = 2000, n_groups: int = 20) -> dict[str, dict]:
    found = {"own": Found(), "cross": Found()}
    for result, truth in _experiments(kind, reps, n_products, n_groups, BOOTSTRAP):
        found["own"].add(result.table, truth["elasticity_by_group"], "own")
        found["cross"].add(result.table, truth["cross_elasticity_by_group"], "cross")
    return {kind: f.summary() for kind, f in found.items()}


def _experiments(kind: str, reps: int, n_products: int, n_groups: int, n_bootstrap: int):
    """``simulated``'s experiments: each one's elasticity result and truth."""
    products, edges = simulate_catalog(
        n_products, n_groups, 5, seed=1, elasticity_range=(-3.0, -0.3), price_change_range=(-0.2, -0.05)
    )
    for rep in range(reps):
        design = make_design(kind, salt=f"elasticity-{rep}", start=START, end=START + dt.timedelta(days=27))
        assignment = assign(design, products)
        sim = simulate_sales(products, assignment=assignment, edges=edges, history_days=365, seed=100 + rep)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PricelabWarning)
            result = estimate_elasticity(
                sim.sales, assignment, products, edges=edges, n_bootstrap=n_bootstrap, seed=rep
            )
        yield result, sim.truth


def information_bound(kind: str, reps: int, n_products: int = 2000, n_groups: int = 20) -> dict[str, dict]:
    """The smallest error any estimator that uses only the randomised price changes can have
    on ``simulated``'s experiments (the same catalogs, assignments and panels).

    Per group and parameter, the Fisher information with every product's level unknown and
    everything else known (the untreated mean of every product-day, taken as the estimator's
    counterfactual ``c``; the negative binomial shape; the other parameter): ``sum_i sum_t v_t
    (s_i (z_t - zbar_i))^2``, ``v_t = mu_t / (1 + mu_t / k)``, ``zbar_i`` the ``v``-weighted mean
    of the instrument over the product's days and ``s_i`` the price change it made there (the
    weighted slope of the log price change on it). Its inverse square root bounds the
    standard error; ``median_abs_error`` is the median of ``|N(0, se^2)|`` over the groups."""
    from pricelab_cli import elasticity

    ses: dict[str, list[float]] = {"own": [], "cross": []}
    calls: list[int] = []
    solve, per_group = elasticity._Moment.solve, elasticity._group_elasticities

    def bounded(moment, stratum, n_bootstrap, seed):  # a group solves own, cross, then own again
        if len(calls) < 2:
            ses[("own", "cross")[len(calls)]].append(_bound_se(moment, dispersion=5.0))
        calls.append(1)
        return solve(moment, stratum, n_bootstrap, seed)

    def group(*args, **kwargs):
        calls.clear()
        return per_group(*args, **kwargs)

    elasticity._Moment.solve, elasticity._group_elasticities = bounded, group
    try:
        for _ in _experiments(kind, reps, n_products, n_groups, n_bootstrap=2):
            pass
    finally:
        elasticity._Moment.solve, elasticity._group_elasticities = solve, per_group
    out = {}
    for name, values in ses.items():
        se = np.array(values)
        normal = np.random.default_rng(0).standard_normal((200, len(se))) * se
        out[name] = {
            "n": len(se),
            "se_rms": float(np.sqrt(np.mean(se**2))),
            "median_abs_error": float(np.median(np.abs(normal))),
        }
    return out


def _bound_se(moment, dispersion: float) -> float:
    n = moment.n_units
    mu = np.clip(moment.c, 1e-3, None)
    v = mu / (1 + mu / dispersion)

    def unit_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(moment.unit, weights=values, minlength=n)

    zc = moment.z - (unit_sum(v * moment.z) / np.maximum(unit_sum(v), 1e-12))[moment.unit]
    slope = unit_sum(v * zc * moment.x) / np.maximum(unit_sum(v * zc * zc), 1e-12)
    return float(1.0 / np.sqrt(np.sum(v * (slope[moment.unit] * zc) ** 2)))


def optimum(reps: int, n_products: int = 20000, n_groups: int = 20) -> dict:
    """The optimum's error (percentage points) where its truth lies inside the tested range."""
    products, edges = simulate_catalog(
        n_products, n_groups, 5, seed=2, elasticity_range=(-3.0, -0.3), price_change_range=(-0.2, -0.05)
    )
    share = np.random.default_rng(5).uniform(0.4, 0.7, n_groups)
    category = products["category"].str.slice(4).cast(pl.Int64).to_numpy()
    products = products.with_columns(cost=pl.Series(products["base_price"].to_numpy() * share[category]))
    errors, inside, total = [], 0, 0
    for rep in range(reps):
        design = make_design("random-days", salt=f"optimum-{rep}", start=START, end=START + dt.timedelta(days=27))
        assignment = assign(design, products)
        sim = simulate_sales(
            products, assignment=assignment, edges=edges, history_days=365, spillover=False, seed=200 + rep
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PricelabWarning)
            result = estimate_elasticity(
                sim.sales, assignment, products, cost_col="cost", n_bootstrap=BOOTSTRAP, seed=rep
            )
        truth = sim.truth["elasticity_by_group"]
        for row in result.optimum.iter_rows(named=True):
            e = truth[row["group"]]
            if e >= -1:
                continue
            true_change = row["cost_share"] * e / (1 + e) - 1
            total += 1
            if row["tested_low"] <= true_change <= row["tested_high"] and row["price_change"] is not None:
                inside += 1
                errors.append(100 * (row["price_change"] - true_change))
    error = np.abs(np.array(errors))
    return {
        "groups": total,
        "inside": inside,
        "within_2pp": float((error <= 2).mean()),
        "median_abs_pp": float(np.median(error)),
    }


def _hash_share(ids: pl.Series, salt: str) -> np.ndarray:
    return np.array(
        [int.from_bytes(hashlib.blake2b(f"{salt}:{i}".encode(), digest_size=8).digest(), "big") / 2.0**64 for i in ids]
    )


def real(products: pl.DataFrame, sales: pl.DataFrame, group_col: str, reps: int, design_of) -> dict:
    """``products`` and ``sales`` prepared (``real_panel_study.prepare``); ``design_of(kind,
    salt, last, period_days)`` as in that module."""
    policy = pl.DataFrame(
        {"product_id": products["product_id"], "c": -0.05 - 0.15 * _hash_share(products["product_id"], "policy")}
    )
    last = sales["date"].max()
    found = Found()
    for rep in range(reps):
        assignment = assign(design_of("random-days", f"elasticity-{rep}", last, 1), products)
        on = pl.col("treated").fill_null(0) == 1
        planted = (
            sales.join(assignment.select("product_id", "date", "treated"), on=["product_id", "date"], how="left")
            .join(policy, on="product_id")
            .with_columns(
                price=pl.when(on).then(pl.col("price") * (1 + pl.col("c"))).otherwise(pl.col("price")),
                units=pl.when(on)
                .then(pl.col("units").cast(pl.Float64) * (1 + pl.col("c")) ** PLANTED)
                .otherwise(pl.col("units").cast(pl.Float64)),
            )
            .select("product_id", "date", "units", "price")
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PricelabWarning)
            result = estimate_elasticity(
                planted, assignment, products, group_col=group_col, n_bootstrap=BOOTSTRAP, seed=rep
            )
        table = result.table.filter(pl.col("n_products") >= 20)
        found.add(table, {g: PLANTED for g in table["group"]}, "own")
    return found.summary()


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "simulated":
        print(simulated(sys.argv[2], int(sys.argv[3])))
    elif what == "bound":
        print(information_bound(sys.argv[2], int(sys.argv[3])))
    elif what == "optimum":
        print(optimum(int(sys.argv[2]), *(int(a) for a in sys.argv[3:4])))
    else:
        here = Path(__file__).parent
        sys.path.insert(0, str(here.parent))
        sys.path.insert(0, str(here))
        import real_panel_study
        import real_panels

        loaded = real_panels.load_panel(sys.argv[2])
        products, sales = real_panel_study.prepare(loaded.products, loaded.sales, loaded.period_days)
        group = "department_code" if "department_code" in products.columns else "all"
        products = products.with_columns(all=pl.lit("all"))
        print(real(products, sales, group, int(sys.argv[3]), real_panel_study.design_of))
