"""The effect path picture: treated minus control detrended outcome, before and during."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from pricelab_cli.plots import save_figure  # noqa: E402


def _period_label(spacing_days: int) -> str:
    if spacing_days == 1:
        return "days since the product's experiment start"
    if spacing_days == 7:
        return "weeks since the product's experiment start"
    return f"periods since the product's experiment start (1 period = {spacing_days} days)"


def effect_path_plot(paths: pl.DataFrame, effects: pl.DataFrame, path: str, *, spacing_days: int = 1) -> None:
    """Draw, per outcome, the treated-minus-control path with its 95% band to a PNG.

    ``paths`` has ``outcome``, ``period``, ``phase``, ``difference``, ``ci_low``,
    ``ci_high``; ``effects`` the ``outcome`` and ``estimate`` drawn as a dashed level over
    the experiment periods.
    """
    outcomes = effects.get_column("outcome").to_list()
    fig, axes = plt.subplots(len(outcomes), 1, figsize=(9, 3.4 * len(outcomes)), dpi=110, squeeze=False)
    for ax, (name, estimate) in zip(axes[:, 0], effects.select("outcome", "estimate").iter_rows()):
        data = paths.filter(pl.col("outcome") == name).sort("period")
        for phase, colour in (("pre", "#7f7f7f"), ("experiment", "#d62728")):
            part = data.filter(pl.col("phase") == phase)
            if part.height == 0:
                continue
            x = part.get_column("period").to_numpy()
            ax.fill_between(
                x,
                part.get_column("ci_low").fill_null(float("nan")).to_numpy(),
                part.get_column("ci_high").fill_null(float("nan")).to_numpy(),
                color=colour,
                alpha=0.18,
                linewidth=0,
                label=f"95% band ({phase})",
            )
            ax.plot(x, part.get_column("difference").to_numpy(), color=colour, marker="o", markersize=2.5, linewidth=1.2, label=f"treated − control ({phase})")
        if estimate is not None and data.filter(pl.col("phase") == "experiment").height:
            last = data.get_column("period").max()
            ax.hlines(estimate, 0, last, colors="#1f77b4", linestyles="dashed", linewidth=1.2, label=f"estimate {estimate:.4g}")
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.axvline(-0.5, color="black", linewidth=0.6, linestyle=":")
        ax.set_title(f"{name}: treated minus control, detrended")
        ax.set_ylabel(f"{name} per product")
        ax.legend(loc="upper left", fontsize=7, frameon=False, ncol=2)
    axes[-1, 0].set_xlabel(_period_label(spacing_days))
    fig.tight_layout()
    save_figure(fig, path)
