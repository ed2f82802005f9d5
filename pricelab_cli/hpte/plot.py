"""The effect path picture: treated minus control detrended outcome, before and during."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from pricelab_cli.plots import save_figure  # noqa: E402


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
            ax.plot(x, difference, color=colour, marker="o", markersize=2.5, linewidth=1.2, label=f"treated − control ({phase})")
        if estimate is not None and data.filter(pl.col("phase") == "experiment").height:
            last = data.get_column("period").max()
            ax.hlines(estimate, 0, last, colors="#1f77b4", linestyles="dashed", linewidth=1.2, label=f"estimate {estimate:.4g}")
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.axvline(-0.5, color="black", linewidth=0.6, linestyle=":")
        ax.set_title(f"{name}: treated minus control, detrended")
        ax.set_ylabel(f"{name} per product")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    axes[-1, 0].set_xlabel(_period_label(spacing_days))
    fig.tight_layout()
    save_figure(fig, path)
