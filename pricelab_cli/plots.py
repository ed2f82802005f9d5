"""Pictures of designs and results, drawn with matplotlib's file backend (no screen needed)."""

from __future__ import annotations

import datetime as dt
import string

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from pricelab_cli.assign import assign  # noqa: E402
from pricelab_cli.design import Design  # noqa: E402
from pricelab_cli.io import atomic_path  # noqa: E402

# Cell states of the grid, in colour-map order.
# Blackout cells keep their arm (the price is applied) but are drawn pale: their data is
# excluded from analysis.
OUTSIDE, CONTROL, TREATED, BLACKOUT_CONTROL, BLACKOUT_TREATED = 0, 1, 2, 3, 4
_COLOURS = ["#eeeeee", "#ffffff", "#d62728", "#9e9e9e", "#f4a6a6"]
_LABELS = ["not in experiment", "control", "treated", "blackout, control", "blackout, treated"]


def design_grid_cells(design: Design, n_products: int = 12, lead_days: int = 7) -> tuple[np.ndarray, list, list]:
    """The product x day grid of states for a sample of ``n_products`` lettered products.

    Triggered designs get staggered synthetic events (one every two days) so that their
    staggered starts show. ``lead_days`` of pre-experiment days are drawn before the start.
    """
    ids = list(string.ascii_uppercase[:n_products]) if n_products <= 26 else [f"P{i}" for i in range(n_products)]
    products = pl.DataFrame({"product_id": ids})
    events = None
    anchor = design.start or dt.date(2026, 1, 1) + dt.timedelta(days=lead_days)
    if design.kind == "triggered":
        events = pl.DataFrame(
            {"product_id": ids, "event_date": [anchor + dt.timedelta(days=2 * i) for i in range(n_products)]}
        )
    cells = assign(design, products, events=events)
    first = anchor - dt.timedelta(days=lead_days)
    last = cells["date"].max()
    days = pl.date_range(first, last, "1d", eager=True)
    grid = (
        pl.DataFrame({"product_id": ids})
        .join(pl.DataFrame({"date": days}), how="cross")
        .join(cells, on=["product_id", "date"], how="left")
        .with_columns(
            pl.when(pl.col("treated").is_null())
            .then(OUTSIDE)
            .when(pl.col("blackout") & (pl.col("treated") == 1))
            .then(BLACKOUT_TREATED)
            .when(pl.col("blackout"))
            .then(BLACKOUT_CONTROL)
            .when(pl.col("treated") == 1)
            .then(TREATED)
            .otherwise(CONTROL)
            .alias("state")
        )
    )
    states = grid["state"].to_numpy().reshape(len(ids), len(days))
    return states, ids, days.to_list()


def design_grid(design: Design, path: str, n_products: int = 12, lead_days: int = 7) -> None:
    """Draw the treated / control / blackout grid of ``design`` to a PNG at ``path``."""
    states, ids, days = design_grid_cells(design, n_products, lead_days)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(days) + 2), 0.35 * len(ids) + 1.6), dpi=110)
    ax.imshow(states, cmap=ListedColormap(_COLOURS), vmin=0, vmax=len(_COLOURS) - 1, aspect="auto", interpolation="none")
    ax.set_yticks(range(len(ids)), ids)
    step = max(1, len(days) // 20)
    ax.set_xticks(range(0, len(days), step), [str(i + 1) for i in range(0, len(days), step)])
    ax.set_xlabel(f"day (day 1 = {days[0]})")
    ax.set_ylabel("product")
    ax.set_xticks(np.arange(-0.5, len(days), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(ids), 1), minor=True)
    ax.grid(which="minor", color="#bbbbbb", linewidth=0.4)
    ax.tick_params(which="minor", length=0)
    ax.set_title(f"{design.label}: sample of {len(ids)} products")
    ax.legend(
        handles=[Patch(facecolor=c, edgecolor="#888888", label=lab) for c, lab in zip(_COLOURS, _LABELS)],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18 if len(ids) > 6 else -0.35),
        ncol=5,
        frameon=False,
        fontsize=8,
    )
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path) -> None:
    """Save a figure as PNG (atomically to a path, or into a binary stream) and release it."""
    if hasattr(path, "write"):
        fig.savefig(path, format="png")
    else:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)


def power_bars(summary: pl.DataFrame, path: str) -> None:
    """SE and bias per design side by side; bias bars carry +-1.96 Monte Carlo errors."""
    labels = summary["design"].to_list()
    x = np.arange(len(labels))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(7.0, 1.4 * len(labels) + 3), 4.2), dpi=110)
    left.bar(x, summary["se"].to_numpy(), color="#1f77b4")
    left.set_title("standard error (spread of estimates)")
    right.bar(x, summary["bias"].to_numpy(), yerr=1.96 * summary["bias_mc_se"].to_numpy(), color="#d62728", capsize=4)
    right.axhline(0.0, color="black", linewidth=0.8)
    right.set_title("bias (95% Monte Carlo band)")
    for ax in (left, right):
        ax.set_xticks(x, labels, rotation=20, ha="right")
        ax.set_ylabel("outcome units per product per day")
    fig.tight_layout()
    save_figure(fig, path)


def cate_histogram(values: np.ndarray, outcome: str, path: str) -> None:
    """The distribution of per-product effects, with zero and the median marked."""
    fig, ax = plt.subplots(figsize=(7.5, 3.2), dpi=110)
    if len(values):
        ax.hist(values, bins=min(40, max(10, len(values) // 10)), color="#1f77b4", alpha=0.85)
        ax.axvline(float(np.median(values)), color="#d62728", linewidth=1.4, label=f"median {np.median(values):.3g}")
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle=":", label="no effect")
    ax.set_xlabel(f"effect on {outcome} per day (one value per product)")
    ax.set_ylabel("products")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def effect_by_feature(features: list[tuple[str, pl.DataFrame]], outcome: str, path: str) -> None:
    """Mean per-product effect by quarter of each feature (``features``: name and a table of
    ``x`` (the quarter's mean value), ``cate`` and ``len`` per quarter)."""
    # One y-axis for every panel, so the features' effects compare at a glance.
    fig, axes = plt.subplots(1, len(features), figsize=(3.6 * len(features) + 0.6, 3.2), dpi=110, squeeze=False,
                             sharey=True)
    for ax, (name, means) in zip(axes[0], features):
        labels = [f"{x:.3g}" for x in means["x"].to_list()]
        ax.bar(range(len(labels)), means["cate"].to_numpy(), color="#2ca02c")
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(f"{name} (mean of each quarter)")
        ax.set_title(name, fontsize=10)
    axes[0, 0].set_ylabel(f"mean effect on {outcome}")
    fig.tight_layout()
    save_figure(fig, path)
