"""The known truth of a simulated panel: per-product effects and the summary document.

The definitions (``baseline``, ``cate``, ``cate_global``, ``cate_realised``, ``effect``,
``lift``) are in the package docstring (:mod:`pricelab_cli.simulate`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import polars as pl

from pricelab_cli.simulate.contamination import Contamination
from pricelab_cli.simulate.inputs import SalesPanel
from pricelab_cli.simulate.model import substitute_shift
from pricelab_cli.simulate.settings import SalesSettings

PRODUCT_TRUTH_COLUMNS = ("product_id", "cate", "cate_global", "baseline", "outlier", "elasticity", "contamination")
TRUTH_DESCRIPTION = (
    "effect: mean over assigned products (equal weights) of the expected change in "
    "daily units on their non-blackout experiment dates if the product alone is "
    "treated (no spillover, no carryover); effect_realised: the same direct effect at "
    "the demand level the substitutes' assigned arms leave each product on those dates "
    "(what a randomised comparison measures under spillover); effect_global: the same when every "
    "product is treated (substitutes' price changes spill over when spillover is "
    "on); lift: effect divided by the mean untreated baseline."
)


def known_truth(
    panel: SalesPanel,
    settings: SalesSettings,
    *,
    lambda0: np.ndarray,
    own_elasticity: np.ndarray,
    outlier: np.ndarray,
    spoil: Contamination,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Per-product truth of the assigned products and the truth document of the panel."""
    weight_matrix = panel.weight_matrix
    n = panel.n_products
    incoming_weight = np.zeros(n) if weight_matrix is None else np.asarray(weight_matrix.sum(axis=1)).ravel()
    realised_spill = None
    if settings.spillover and weight_matrix is not None and len(panel.analysed_rows):
        spill = substitute_shift(weight_matrix, panel.treated, panel.log_cut(settings.log_cut))
        realised_spill = spill[panel.analysed_rows, panel.analysed_days]
    truth_of = functools.partial(
        _product_truth,
        ids=panel.ids,
        assigned=panel.assigned,
        analysed_rows=panel.analysed_rows,
        analysed_days=panel.analysed_days,
        own_elasticity=own_elasticity,
        incoming_weight=incoming_weight if settings.spillover else np.zeros(n),
        log_cut=panel.log_cut(settings.log_cut),
        weight_matrix=weight_matrix if settings.spillover else None,
        outlier=outlier,
        realised_spill=realised_spill,
        contamination=spoil.kind_labels(),
    )
    product_truth, summary = truth_of(lambda0=lambda0)
    clean_summary = summary
    if spoil.any_outlier:
        # The multiplicative kind carries the effect: the truth follows the shifted demand.
        product_truth, summary = truth_of(lambda0=spoil.shift_lambda(lambda0))
    document = _truth_document(panel, settings, summary, clean_summary, outlier=outlier, spoil=spoil)
    if panel.category is not None:
        document["elasticity_by_group"] = group_elasticity(panel, settings, lambda0, own_elasticity, realised_spill)
        if settings.spillover and weight_matrix is not None:
            document["cross_elasticity_by_group"] = group_cross_elasticity(panel, lambda0, incoming_weight)
    return product_truth, document


def group_cross_elasticity(panel: SalesPanel, lambda0: np.ndarray, incoming_weight: np.ndarray) -> dict[str, float]:
    """Each category's cross-price elasticity: the mean, weighted by untreated demand over the
    analysed cells, of its products' total incoming substitute weight (the change of a
    product's units, in percent, when all its substitutes' prices move by 1%), over the
    products that have substitutes."""
    rows, days = panel.analysed_rows, panel.analysed_days
    has = incoming_weight[rows] > 0
    rows, days = rows[has], days[has]
    if not len(rows):
        return {}
    assert panel.category is not None
    names, code = np.unique(np.asarray(panel.category.to_numpy()[rows], dtype=str), return_inverse=True)
    mu = lambda0[rows, days].astype(np.float64)
    value = np.bincount(code, weights=mu * incoming_weight[rows], minlength=len(names)) / np.bincount(
        code, weights=mu, minlength=len(names)
    )
    return {str(name): float(v) for name, v in zip(names, value)}


def group_elasticity(
    panel: SalesPanel,
    settings: SalesSettings,
    lambda0: np.ndarray,
    own_elasticity: np.ndarray,
    realised_spill: np.ndarray | None,
) -> dict[str, float]:
    """Each category's own-price elasticity over its treated analysed cells: the ``e`` with
    ``sum mu exp(e d) = sum mu exp(e_i d)``, ``mu`` the cells' untreated demand (at the level
    the substitutes leave it), ``d`` the product's change of log price and ``e_i`` its own
    elasticity. The one number that, for every product alike, moves the category's units as
    the products' own elasticities do; when a category's products share one elasticity, that
    elasticity. (What ``pricelab elasticity`` estimates; categories with no treated cell,
    or whose price did not move, are left out.)"""
    rows, days = panel.analysed_rows, panel.analysed_days
    treated = panel.treated[rows, days]
    rows, days = rows[treated], days[treated]
    if not len(rows):
        return {}
    cut = panel.log_cut(settings.log_cut)
    d = np.broadcast_to(cut, (panel.n_products,))[rows]
    mu = lambda0[rows, days].astype(np.float64)
    if realised_spill is not None:
        mu = mu * np.exp(realised_spill[treated])
    assert panel.category is not None
    categories = np.asarray(panel.category.to_numpy()[rows], dtype=str)
    names, code = np.unique(categories, return_inverse=True)
    target = np.bincount(code, weights=mu * np.exp(own_elasticity[rows] * d), minlength=len(names))
    total = np.bincount(code, weights=mu, minlength=len(names))
    e = np.bincount(code, weights=mu * own_elasticity[rows], minlength=len(names)) / total
    moved = np.bincount(code, weights=mu * np.abs(d), minlength=len(names)) > 0
    for _ in range(50):  # Newton's method, every category at once (convex in e)
        grow = mu * np.exp(e[code] * d)
        value = np.bincount(code, weights=grow, minlength=len(names)) - target
        slope = np.bincount(code, weights=grow * d, minlength=len(names))
        step = np.divide(value, slope, out=np.zeros_like(value), where=slope != 0)
        e -= step
        if np.all(np.abs(step) < 1e-12):
            break
    return {str(name): float(value) for name, value, ok in zip(names, e, moved) if ok}


def _truth_document(
    panel: SalesPanel,
    settings: SalesSettings,
    summary: dict[str, Any],
    clean_summary: dict[str, Any],
    *,
    outlier: np.ndarray,
    spoil: Contamination,
) -> dict[str, Any]:
    """The JSON-serialisable truth: the summary, the counts, the panel dates and every setting."""
    return {
        "description": TRUTH_DESCRIPTION,
        **summary,
        "n_catalog": panel.n_products,
        "n_outliers": int(outlier.sum()),
        "n_contaminated": int(spoil.rows.size),
        "contaminated_by_kind": spoil.counts(),
        "effect_clean": clean_summary["effect"],
        "contamination_kinds": list(settings.contamination_kinds),
        "n_edges": 0 if panel.weight_matrix is None else int(panel.weight_matrix.nnz),
        "start": panel.start.isoformat(),
        "end": panel.end.isoformat(),
        "n_days": panel.n_days,
        **settings.numbers(),
        "spillover": settings.spillover,
        "seed": int(settings.seed),
    }


def _product_truth(
    *,
    ids: pl.Series,
    assigned: np.ndarray,
    lambda0: np.ndarray,
    analysed_rows: np.ndarray,
    analysed_days: np.ndarray,
    own_elasticity: np.ndarray,
    incoming_weight: np.ndarray,
    log_cut: float | np.ndarray,
    outlier: np.ndarray,
    weight_matrix=None,
    realised_spill: np.ndarray | None = None,
    contamination: pl.Series | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Per-product truth for assigned products and its equally weighted summary.

    ``realised_spill`` is the log demand shift each analysed cell gets from its substitutes'
    assigned arms (None without spillover).
    """
    n = len(ids)
    rows = np.flatnonzero(assigned)
    n_analysed = np.bincount(analysed_rows, minlength=n)[rows]
    cell_lambda0 = lambda0[analysed_rows, analysed_days]
    total = np.bincount(analysed_rows, weights=cell_lambda0, minlength=n)[rows]
    shifted = cell_lambda0 if realised_spill is None else cell_lambda0 * np.exp(realised_spill)
    total_realised = np.bincount(analysed_rows, weights=shifted, minlength=n)[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        baseline = np.where(n_analysed > 0, total / n_analysed, np.nan)
        baseline_realised = np.where(n_analysed > 0, total_realised / n_analysed, np.nan)
    cut = log_cut if np.ndim(log_cut) == 0 else np.asarray(log_cut)[rows]
    cate = baseline * np.expm1(own_elasticity[rows] * cut)
    cate_realised = baseline_realised * np.expm1(own_elasticity[rows] * cut)
    if np.ndim(log_cut) == 0 or weight_matrix is None:
        cate_global = baseline * np.expm1((own_elasticity[rows] + incoming_weight[rows]) * cut)
    else:
        # Every product treated: each substitute moves demand by its own price change.
        cate_global = baseline * np.expm1(own_elasticity[rows] * cut + (weight_matrix @ log_cut)[rows])
    product_truth = pl.DataFrame(
        {
            "product_id": ids.gather(rows),
            "cate": cate,
            "cate_global": cate_global,
            "baseline": baseline,
            "outlier": outlier[rows],
            "elasticity": own_elasticity[rows],
            "contamination": None if contamination is None else contamination.gather(rows),
        },
        schema_overrides={"outlier": pl.Boolean, "contamination": pl.String},
    ).with_columns(pl.col("cate", "cate_global", "baseline").fill_nan(None))
    known = ~np.isnan(baseline)
    if not known.any():
        effect = effect_global = effect_realised = lift = mean_baseline = None
    else:
        effect = float(cate[known].mean())
        effect_realised = float(cate_realised[known].mean())
        effect_global = float(cate_global[known].mean())
        mean_baseline = float(baseline[known].mean())
        lift = effect / mean_baseline
    summary = {
        "effect": effect,
        "effect_realised": effect_realised,
        "effect_global": effect_global,
        "lift": lift,
        "baseline": mean_baseline,
        "n_products": int(len(rows)),
    }
    return product_truth.select(PRODUCT_TRUTH_COLUMNS), summary
