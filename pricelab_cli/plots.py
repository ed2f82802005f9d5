"""Pictures of designs and results, drawn with matplotlib's file backend (no screen needed).

Each function draws to a path or a binary stream it is given; it never decides where or
when a file appears (the command line writes them in its output transaction)."""

from __future__ import annotations

import datetime as dt
import string
from typing import TYPE_CHECKING, cast

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from pricelab_cli.assign import assign  # noqa: E402
from pricelab_cli.design import Design  # noqa: E402

if TYPE_CHECKING:
    from pricelab_cli.spillover.cluster import ClusterResult

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
    last = cast(dt.date, cells["date"].max())
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
    ax.imshow(
        states, cmap=ListedColormap(_COLOURS), vmin=0, vmax=len(_COLOURS) - 1, aspect="auto", interpolation="none"
    )
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


def save_figure(fig, target, dpi: float | str = "figure") -> None:
    """Save a figure as PNG to ``target`` (a path or a binary stream) and release it. A
    command passes the temporary path of its output transaction (``io.atomic_path``), so
    the picture appears with the run's other outputs or not at all."""
    fig.savefig(target, format="png", dpi=dpi)
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
    fig, axes = plt.subplots(
        1, len(features), figsize=(3.6 * len(features) + 0.6, 3.2), dpi=110, squeeze=False, sharey=True
    )
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


# --------------------------------------------------------------------------- hpte


def _period_label(spacing_days: int) -> str:
    if spacing_days == 1:
        return "days since the product's experiment start"
    if spacing_days == 7:
        return "weeks since the product's experiment start"
    return f"periods since the product's experiment start (1 period = {spacing_days} days)"


def _with_gaps(period: np.ndarray, *series: np.ndarray) -> tuple[np.ndarray, ...]:
    """Insert a NaN after every jump of more than one period, so lines and bands break
    over periods with no data (blackout days) instead of bridging them."""
    breaks = np.flatnonzero(np.diff(period) > 1) + 1
    x = np.insert(period.astype(float), breaks, np.nan)
    return (x, *(np.insert(values.astype(float), breaks, np.nan) for values in series))


def effect_path_plot(paths: pl.DataFrame, effects: pl.DataFrame, path: str, *, spacing_days: int = 1) -> None:
    """Draw, per outcome, the treated-minus-control path with its 95% band to a PNG.

    ``paths`` has ``outcome``, ``period``, ``phase``, ``difference``, ``ci_low``,
    ``ci_high``; ``effects`` the ``outcome`` and ``estimate`` drawn as a dashed level over
    the experiment periods.
    """
    outcomes = effects.get_column("outcome").to_list()
    fig, axes = plt.subplots(len(outcomes), 1, figsize=(10.5, 3.4 * len(outcomes)), dpi=110, squeeze=False)
    for ax, (name, estimate) in zip(axes[:, 0], effects.select("outcome", "estimate").iter_rows()):
        data = paths.filter(pl.col("outcome") == name).sort("period")
        for phase, colour in (("pre", "#7f7f7f"), ("experiment", "#d62728")):
            part = data.filter(pl.col("phase") == phase)
            if part.height == 0:
                continue
            x, difference, low, high = _with_gaps(
                part.get_column("period").to_numpy(),
                *(part.get_column(c).fill_null(float("nan")).to_numpy() for c in ("difference", "ci_low", "ci_high")),
            )
            ax.fill_between(
                x,
                low,
                high,
                color=colour,
                alpha=0.18,
                linewidth=0,
                label=f"95% band ({phase})",
            )
            ax.plot(
                x,
                difference,
                color=colour,
                marker="o",
                markersize=2.5,
                linewidth=1.2,
                label=f"treated − control ({phase})",
            )
        if estimate is not None and data.filter(pl.col("phase") == "experiment").height:
            last = data.get_column("period").max()
            ax.hlines(
                estimate,
                0,
                last,
                colors="#1f77b4",
                linestyles="dashed",
                linewidth=1.2,
                label=f"estimate {estimate:.4g}",
            )
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.axvline(-0.5, color="black", linewidth=0.6, linestyle=":")
        ax.set_title(f"{name}: treated minus control, detrended")
        ax.set_ylabel(f"{name} per product")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    axes[-1, 0].set_xlabel(_period_label(spacing_days))
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------- cluster


def cluster_size_plot(result: ClusterResult, path: str, *, max_size: int | None = None) -> None:
    """Draw the distribution of cluster sizes (products per cluster) to a PNG (a path or a stream)."""
    sizes = result.sizes
    counts = np.bincount(sizes)
    present = np.flatnonzero(counts)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    left.bar(present, counts[present], width=0.8, color="#4c72b0")
    left.set_yscale("log")
    left.set_xlabel("products in cluster")
    left.set_ylabel("clusters (log scale)")
    left.set_title(f"{result.n_clusters:,} clusters")
    # Share of products by the size of their cluster: what randomisation units look like
    # from a product's point of view.
    share = present * counts[present] / sizes.sum()
    right.bar(present, share, width=0.8, color="#dd8452")
    right.set_xlabel("products in cluster")
    right.set_ylabel("share of products")
    right.set_title(f"edge weight cut: {result.cut_share:.1%}")
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if max_size is not None:
            ax.axvline(max_size + 0.5, color="#c44e52", linestyle="--", label=f"--max-size {max_size}")
            ax.legend(loc="upper right")
    save_figure(fig, path, dpi=110)


def monitor_plot(monitor: pl.DataFrame, path: str) -> None:
    """Draw, per outcome, the nightly estimate with its fixed 95% interval and its always-valid
    sequence, the first night that said stop marked, to a PNG."""
    outcomes = monitor.get_column("outcome").unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(len(outcomes), 1, figsize=(10.5, 3.4 * len(outcomes)), dpi=110, squeeze=False)
    for ax, name in zip(axes[:, 0], outcomes):
        data = monitor.filter(pl.col("outcome") == name).sort("date")
        x = data.get_column("date").to_numpy()
        column = {
            c: data.get_column(c).fill_null(float("nan")).to_numpy()
            for c in ("estimate", "ci_low", "ci_high", "cs_low", "cs_high")
        }
        ax.fill_between(
            x,
            column["cs_low"],
            column["cs_high"],
            color="#1f77b4",
            alpha=0.15,
            linewidth=0,
            label="always-valid 95% sequence",
        )
        ax.fill_between(
            x, column["ci_low"], column["ci_high"], color="#1f77b4", alpha=0.3, linewidth=0, label="fixed 95% interval"
        )
        ax.plot(x, column["estimate"], color="#1f77b4", marker="o", markersize=3, linewidth=1.4, label="estimate")
        ax.axhline(0.0, color="black", linewidth=0.8)
        stops = data.filter(pl.col("decision") != "continue")
        if stops.height:
            night, said = stops.row(0)[0], stops.get_column("decision")[0]
            ax.axvline(night, color="#d62728", linestyle="--", linewidth=1.2, label=f"first stop: {said} ({night})")
        ax.set_title(f"{name}: effect per product per day, night by night", loc="left", fontsize=10)
        ax.legend(loc="upper left", fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
