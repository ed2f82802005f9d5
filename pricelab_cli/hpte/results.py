"""The tables of one outcome besides its effect: the audit trail of the products the robust
step and the outlier filter dropped or changed, the per-product CATE and the effect path
(the data of ``--plot``)."""

from __future__ import annotations

import numpy as np
import polars as pl

from pricelab_cli.engine import Engine, default_engine
from pricelab_cli.hpte.cells import Cells
from pricelab_cli.hpte.detrend import MODEL_NONE, CatalogDetrend
from pricelab_cli.hpte.panel import Panel, PartitionedPanel
from pricelab_cli.hpte.robust import WINSOR_K

OUTLIER_COLUMNS = ("product_id", "outcome", "action", "reason", "statistic", "days")
OUTLIER_SCHEMA = {
    "product_id": None,
    "outcome": pl.String,
    "action": pl.String,
    "reason": pl.String,
    "statistic": pl.Float64,
    "days": pl.Int64,
}
# History shown before the start in the effect path: twice the experiment, at least this.
MIN_PATH_PRE_PERIODS = 14


def unmeasurable(detrended: CatalogDetrend) -> np.ndarray:
    """Products the robust step cannot measure on their own days, left out: those with no
    measurable noise in their history while most products have one (nothing bounds or
    screens their experiment days)."""
    n = len(detrended.fit.model)
    if detrended.audit is None:
        return np.zeros(n, dtype=bool)
    noisy = np.isfinite(detrended.fit.volatility)
    if noisy.sum() <= n / 2:
        return np.zeros(n, dtype=bool)
    return ~noisy & (detrended.fit.model != MODEL_NONE)


def outlier_table(
    panel: Panel | PartitionedPanel,
    outcome: str,
    detrended: CatalogDetrend,
    keep_product: np.ndarray,
    swing_z: np.ndarray,
) -> pl.DataFrame:
    """The audit trail: one row per product and action of the robust step or the filter."""
    parts = []
    audit = detrended.audit

    def rows(mask: np.ndarray, action: str, reason: str, statistic: np.ndarray, days: np.ndarray | None) -> None:
        idx = np.flatnonzero(mask)
        if len(idx):
            parts.append(
                pl.DataFrame(
                    {
                        "product_id": panel.product_ids.gather(idx),
                        "outcome": outcome,
                        "action": action,
                        "reason": reason,
                        "statistic": statistic[idx].astype(np.float64),
                        "days": None if days is None else days[idx].astype(np.int64),
                    },
                    schema_overrides={"days": pl.Int64},
                )
            )

    if audit is not None:
        rows(
            audit.screened,
            "dropped",
            "history volatility (robust z of noise for its level or of tail weight, the larger)",
            audit.volatility_z,
            None,
        )
    rule_reason = "swing (robust z within arm stratum)" if audit is not None else "swing in the quantile tails"
    tail = ~keep_product & unmeasurable(detrended)
    if tail.any():
        rows(
            tail,
            "dropped",
            "no measurable noise in its history (nothing bounds its experiment days)",
            np.full(len(keep_product), np.nan),
            None,
        )
    rows(~keep_product & ~tail, "dropped", rule_reason, swing_z, None)
    if audit is not None:
        kept = ~audit.screened & keep_product
        rows(
            kept & (audit.n_stockout > 0),
            "days left out",
            "stock-out run (zero sales where sales were expected)",
            audit.n_stockout.astype(np.float64),
            audit.n_stockout,
        )
        rows(
            kept & (audit.n_winsorised > 0),
            "winsorised",
            f"residual beyond {WINSOR_K:g} robust SDs",
            audit.n_winsorised.astype(np.float64),
            audit.n_winsorised,
        )
    schema = pl.Schema(
        {name: panel.product_ids.dtype if dtype is None else dtype for name, dtype in OUTLIER_SCHEMA.items()}
    )
    if not parts:
        return pl.DataFrame(schema=schema)
    return (
        pl.concat(parts)
        .cast(schema)
        .with_columns(pl.col("statistic").fill_nan(None))
        .sort("product_id", maintain_order=True)
    )


def product_cate(panel: Panel | PartitionedPanel, cells: Cells, cell_cate: np.ndarray | None) -> pl.DataFrame:
    cate = np.full(panel.n_products, np.nan)
    if cell_cate is not None:
        known = np.isfinite(cell_cate)
        count = np.bincount(cells.code[known], minlength=panel.n_products)
        total = np.bincount(cells.code[known], weights=cell_cate[known], minlength=panel.n_products)
        with np.errstate(invalid="ignore", divide="ignore"):
            cate = np.where(count > 0, total / count, np.nan)
    # Products are coded in hash order; the table is sorted by id, as users read it.
    return (
        pl.DataFrame({"product_id": panel.product_ids, "cate": cate})
        .with_columns(pl.col("cate").fill_nan(None))
        .sort("product_id")
    )


def effect_path(
    panel: Panel | PartitionedPanel, detrended: CatalogDetrend, keep_product: np.ndarray, engine: Engine | None = None
) -> pl.DataFrame:
    """Treated-minus-control mean residual per period relative to each product's start.

    Before the start a product counts in the arm it has on its first assignment date; during
    the experiment each row counts in its own arm. The band is the 95% normal interval of a
    difference of two independent means. History is shown for twice the experiment's length
    (at least ``MIN_PATH_PRE_PERIODS`` periods). Residuals are recomputed partition by
    partition (a task each, run by ``engine``); only per-period sums come back.
    """
    tasks = [
        (h, detrended.for_partition(h), keep_product[h.offset : h.offset + len(h.product_ids)]) for h in panel.handles()
    ]
    found = [r for r in default_engine(engine).map(_path_sums_task, tasks, stage="effect path") if r is not None]
    lowest = min((r[0] for r in found), default=0)
    highest = max((r[0] + r[1].shape[1] // 2 - 1 for r in found), default=-1)
    sums = np.zeros((3, 2 * (highest - lowest + 1)))
    # Added in partition order: the same bits whichever engine ran the tasks.
    for low, part_sums, _ in found:
        start = 2 * (low - lowest)
        sums[:, start : start + part_sums.shape[1]] += part_sums
    tops = [r[2] for r in found if r[2] is not None]
    last_exp = max(tops) if tops else None
    n_exp = last_exp + 1 if last_exp is not None else 1
    first = -max(2 * n_exp, MIN_PATH_PRE_PERIODS)
    count_all, total_all, square_all = (a.reshape(-1, 2) for a in sums)
    periods_all = lowest + np.arange(count_all.shape[0])
    seen = np.flatnonzero(count_all.sum(1) > 0)
    shown = (periods_all >= first) & (periods_all <= periods_all[seen].max() if len(seen) else False)
    count, total, square, periods = count_all[shown], total_all[shown], square_all[shown], periods_all[shown]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        var = np.maximum(square / count - mean * mean, 0.0) * count / np.maximum(count - 1, 1)
        diff = mean[:, 1] - mean[:, 0]
        half = 1.959963984540054 * np.sqrt(var[:, 1] / count[:, 1] + var[:, 0] / count[:, 0])
    both = (count[:, 0] > 0) & (count[:, 1] > 0)
    return pl.DataFrame(
        {
            "period": periods[both],
            "phase": np.where(periods[both] < 0, "pre", "experiment"),
            "difference": diff[both],
            "ci_low": (diff - half)[both],
            "ci_high": (diff + half)[both],
            "n_treated": count[both, 1].astype(np.int64),
            "n_control": count[both, 0].astype(np.int64),
        }
    ).with_columns(pl.col("ci_low", "ci_high").fill_nan(None))


def _path_sums_task(task) -> tuple[int, np.ndarray, int | None] | None:
    """One partition's count, sum and sum of squares of residuals per (period, arm), from
    its lowest period on, and its last experiment period."""
    handle, inputs, keep = task
    part = handle.load()
    detrended_k = inputs.residuals(part)
    rows = np.flatnonzero(detrended_k.usable & keep[part.code])
    if not len(rows):
        return None
    period = np.rint(part.t[rows]).astype(np.int64)
    exp = ~part.pre[rows]
    arm = np.where(exp, part.treated[rows], part.first_arm[part.code[rows]]).astype(np.int64)
    last_exp = int(period[exp].max()) if exp.any() else None
    low = int(period.min())
    width = 2 * (int(period.max()) - low + 1)
    key = (period - low) * 2 + arm
    r = detrended_k.residual[rows]
    sums = np.stack(
        [
            np.bincount(key, minlength=width).astype(np.float64),
            np.bincount(key, weights=r, minlength=width),
            np.bincount(key, weights=r * r, minlength=width),
        ]
    )
    return low, sums, last_exp
