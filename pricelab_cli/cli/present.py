"""What a command prints on stderr when it is done: tables and one-line summaries."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich import box
from rich.table import Table

from pricelab_cli._lazy import lazy
from pricelab_cli.console import Reporter
from pricelab_cli.design import Design

if TYPE_CHECKING:  # annotations only: the modules load polars
    import polars as pl

    import pricelab_cli.assign as assign_module
    from pricelab_cli.hpte.placebo import PlaceboWindow
else:
    # Loaded when a command first needs them: help, --version and `design` never do.
    pl = lazy("polars")


def report_balance(reporter: Reporter, report: assign_module.BalanceReport, spec: Design) -> None:
    reporter.say(
        f"{spec.label}: {report.n_units} randomisation units, treated share {report.treated_share:.3f} "
        f"(design {spec.treat_share}); SRM chi-square {report.srm_chi2:.2f}, p = {report.srm_p_value:.3g}"
    )
    daily = report.daily
    table = Table(title="treated share per day (blackout days excluded)", title_justify="left")
    for col in ("date", "products", "treated share"):
        table.add_column(col, justify="right")
    shown = daily if daily.height <= 31 else daily.head(14).vstack(daily.tail(14))
    for row in shown.iter_rows():
        table.add_row(str(row[0]), f"{row[1]:,}", f"{row[2]:.3f}")
    if daily.height > 31:
        # A share per day: a float column, whose min and max polars types as any scalar.
        low, high = cast(float, daily["treated_share"].min()), cast(float, daily["treated_share"].max())
        table.caption = f"{daily.height} days; showing first and last 14. Range {low:.3f} to {high:.3f}."
    reporter.table(table)
    if report.srm_suspect:
        reporter.warn(
            f"sample ratio mismatch: {report.n_treated_draws} of {report.n_draws} randomisation draws "
            f"treated, implausible for a treat share of {spec.treat_share} (p = {report.srm_p_value:.2g}). "
            "Check the products and clusters files for duplicates or filtering."
        )


def report_hpte(reporter: Reporter, result, method: str) -> None:
    unit = result.unit_label
    for name, est in result.estimators.items():
        models = ", ".join(f"{n:,} {model}" for model, n in est.baseline_models_.items() if n)
        reporter.say(
            f"{name}: {est.n_products_:,} products in the estimate, {est.n_outliers_:,} outliers dropped; "
            f"baselines {models}; {est.arm_units_['treated']:,} treated and {est.arm_units_['control']:,} "
            f"control {unit}s resampled"
        )
        audit = est.outliers_
        if audit.height:
            counts = audit.group_by("action", "reason", maintain_order=True).agg(
                pl.len().alias("products"), pl.col("days").sum().alias("days")
            )
            parts = [
                f"{r['products']:,} product(s) {r['action']} ({r['reason']}"
                + (f"; {r['days']:,} product-days" if r["days"] else "")
                + ")"
                for r in counts.iter_rows(named=True)
            ]
            reporter.say(f"{name}: " + "; ".join(parts))
    if result.n_ignored_sales_products:
        reporter.say(
            f"{result.n_ignored_sales_products:,} product(s) of the sales table are not in the assignment (ignored)."
        )
    per = "day" if result.spacing_days == 1 else f"period ({result.spacing_days} days)"
    table = Table(title=f"{method}: effect per product per {per}", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("outcome", "estimate", "se", "95% interval", "p", "lift (95% interval)", "MDE"):
        table.add_column(col, justify="left" if col == "outcome" else "right", no_wrap=True)

    def num(v) -> str:
        return "-" if v is None or v != v else f"{v:.4g}"

    from pricelab_cli.diagnostics import minimum_detectable_effect

    for row in result.effects.iter_rows(named=True):
        table.add_row(
            row["outcome"],
            num(row["estimate"]),
            num(row["se"]),
            f"{num(row['ci_low'])} to {num(row['ci_high'])}",
            num(row["p_value"]),
            lift_text(row),
            num(minimum_detectable_effect(row["se"]) if row["se"] is not None else None),
        )
    table.caption = "MDE: the smallest effect this experiment detects 80% of the time (5% two-sided test), 2.8 SEs."
    table.caption_justify = "left"
    reporter.table(table)


def report_placebo(reporter: Reporter, effects: pl.DataFrame, window: PlaceboWindow, path: str) -> None:
    """Where the placebo's fake experiment lay and where it was written; a warning per outcome
    whose placebo effect is significant."""
    from pricelab_cli.hpte.placebo import placebo_warnings

    reporter.say(
        f"placebo: fake experiment {window.fake_start} to {window.fake_end} ({window.periods} periods before "
        f"the start on {window.real_start}), written to {path}"
    )
    for message in placebo_warnings(effects, window):
        reporter.warn(message)


def lift_text(row: dict) -> str:
    """``+4.21% (+1.02% to +7.40%)``: the lift and its interval, as percentages."""
    if row["lift"] is None:
        return "-"
    text = f"{100 * row['lift']:+.2f}%"
    if row.get("lift_low") is not None and row.get("lift_high") is not None:
        text += f" ({100 * row['lift_low']:+.2f}% to {100 * row['lift_high']:+.2f}%)"
    return text


def report_spillover_graph(reporter: Reporter, graph, keep_complements: bool) -> None:
    pairs = graph.pairs
    untestable = graph.untestable
    n_substitutes = int((graph.edges["weight"] > 0).sum())
    kept = f"{graph.edges.height:,} edges kept at FDR {graph.fdr:g} ({n_substitutes:,} substitutes"
    kept += f", {graph.edges.height - n_substitutes:,} complements)" if keep_complements else ")"
    reporter.say(
        f"{pairs.height:,} candidate pairs in {graph.n_blocks:,} blocks: {graph.n_tested:,} tested, "
        f"{pairs.height - graph.n_tested:,} untestable; {kept}"
    )
    if untestable.height:
        table = Table(title="untestable pairs (not in the FDR)", title_justify="left")
        for col in ("reason", "pairs", "e.g."):
            table.add_column(col, justify="right" if col == "pairs" else "left")
        for row in untestable.iter_rows(named=True):
            table.add_row(row["status"], f"{row['n_pairs']:,}", row["example"])
        reporter.table(table)


def report_clusters(reporter: Reporter, result, max_size: int | None) -> None:
    q = result.size_quantiles()
    reporter.say(
        f"{result.n_clusters:,} clusters of {int(result.sizes.sum()):,} products "
        f"({result.n_isolated:,} on no edge, each alone); size min {q[0.0]:.0f}, median {q[0.5]:g}, "
        f"90% {q[0.9]:g}, 99% {q[0.99]:g}, max {q[1.0]:.0f}"
    )
    if max_size is not None:
        note = f"{result.n_resplit:,} cluster(s) above --max-size {max_size} were re-split"
        if result.n_balanced:
            note += f" ({result.n_balanced:,} by a balanced cut)"
        reporter.say(note)
    reporter.say(
        f"edge weight cut: {result.cut_share:.1%} (spillover between clusters, which cluster randomisation does not contain)"
    )


def report_ipw(reporter: Reporter, result, outcome: str) -> None:
    exposure = result.exposure
    how = "exact" if exposure.method == "exact" else f"from {exposure.n_replays:,} replays of the design"
    counts = dict(exposure.cells.group_by("condition").len().iter_rows())
    names = ("neither", "spillover only", "treated only", "treated and exposed")
    shown = ", ".join(f"{counts.get(c, 0):,} {name}" for c, name in enumerate(names))
    reporter.say(f"exposure probabilities {how}; product-days: {shown}; {result.n_units:,} randomisation units")
    if result.left_out.height:
        summary = result.left_out.group_by("effect", "reason", maintain_order=True).agg(
            pl.len().alias("n"), pl.col("product_id").first().cast(pl.String).alias("example")
        )
        for row in summary.iter_rows(named=True):
            reporter.say(f"{row['effect']}: {row['n']:,} product(s) left out, e.g. {row['example']}: {row['reason']}")
    table = Table(title=f"{outcome}: effect per product per day (Hajek IPW, 95% interval)", title_justify="left")
    for col in ("effect", "estimate", "se", "95% CI", "p", "product-days"):
        table.add_column(col, justify="left" if col == "effect" else "right")

    def num(v) -> str:
        return "-" if v is None else f"{v:.4g}"

    for row in result.effects.iter_rows(named=True):
        table.add_row(
            row["effect"],
            num(row["estimate"]),
            num(row["se"]),
            f"{num(row['ci_low'])} to {num(row['ci_high'])}",
            num(row["p_value"]),
            f"{row['n']:,}",
        )
    reporter.table(table)


def report_power(reporter: Reporter, summary: pl.DataFrame, effect: float, reps: int) -> None:
    table = Table(title=f"designs on this history: +{effect:.1%} injected, {reps} repetitions", title_justify="left")
    for col in ("design", "bias", "se", "rmse", "power", "coverage", "mde"):
        table.add_column(col, justify="right" if col != "design" else "left")
    for row in summary.iter_rows(named=True):
        cells = [row["design"]] + [
            "-" if row[c] is None else f"{row[c]:.4g}" for c in ("bias", "se", "rmse", "power", "coverage", "mde")
        ]
        table.add_row(*cells)
    reporter.table(table)


def report_grid(reporter: Reporter, grid: pl.DataFrame, effect: float, reps: int, share: float = 0.5) -> None:
    """The grid of ``power --recommend``: per design and carryover scenario RMSE, bias,
    coverage and power, designs by worst RMSE; then the recommendation in words."""
    from pricelab_cli.recommend import explain

    scenarios = sorted(set(grid["carryover_days"].to_list()))
    table = Table(
        title=f"design grid on this history: +{effect:.1%} injected, {reps} repetitions per cell; "
        "per carryover scenario: rmse / bias / coverage / power",
        title_justify="left",
    )
    table.add_column("design", justify="left")
    table.add_column("worst rmse", justify="right")
    for days in scenarios:
        table.add_column(f"carryover {days:g}d", justify="right")
    order = grid.group_by("design", maintain_order=True).agg(pl.col("worst_rmse").first()).sort("worst_rmse")
    for design, worst in order.iter_rows():
        rows = grid.filter(pl.col("design") == design).sort("carryover_days")
        cells = [
            " / ".join("-" if r[c] is None else f"{r[c]:.3g}" for c in ("rmse", "bias", "coverage", "power"))
            for r in rows.iter_rows(named=True)
        ]
        mark = " (recommended)" if rows["recommended"][0] else ""
        table.add_row(f"{design}{mark}", f"{worst:.3g}", *cells)
    reporter.table(table)
    reporter.say(explain(grid, share))


def report_monitor(reporter: Reporter, table: pl.DataFrame) -> None:
    """Tonight's row of each outcome, and the first night that said stop."""
    if table.is_empty():
        return
    last = table.filter(pl.col("date") == pl.col("date").max())
    for row in last.iter_rows(named=True):
        stops = table.filter((pl.col("outcome") == row["outcome"]) & (pl.col("decision") != "continue"))
        first = f"; first stop {stops['date'][0]} ({stops['decision'][0]})" if stops.height else ""
        reporter.say(
            f"{row['outcome']} on {row['date']}: {row['estimate']:.4g} per product per day, always-valid 95% "
            f"{row['cs_low']:.4g} to {row['cs_high']:.4g} (fixed {row['ci_low']:.4g} to {row['ci_high']:.4g}): "
            f"{row['decision']}{first}"
        )


def report_elasticity(reporter: Reporter, result, outcome: str) -> None:
    """The elasticity table on stderr, and each group's moment (within products or between arms)."""
    moments: dict[str, list[str]] = {}
    for group, how in result.designs.items():
        moments.setdefault(how, []).append(group)
    shown = "; ".join(
        f"{len(groups):,} group(s) within products" if how == "within" else f"{len(groups):,} group(s) between arms"
        for how, groups in moments.items()
    )
    reporter.say(f"{outcome}: price contrasts {shown}")
    table = Table(title=f"{outcome}: elasticities (95% interval) and profit per product per day", title_justify="left")
    for col in ("group", "kind", "estimate", "se", "95% CI", "products"):
        table.add_column(col, justify="left" if col in ("group", "kind") else "right")

    def num(v) -> str:
        return "-" if v is None else f"{v:.4g}"

    for row in result.table.iter_rows(named=True):
        table.add_row(
            "(catalog)" if row["group"] is None else row["group"],
            row["kind"],
            num(row["estimate"]),
            num(row["se"]),
            f"{num(row['ci_low'])} to {num(row['ci_high'])}",
            f"{row['n_products']:,}",
        )
    reporter.table(table)
    if result.optimum is not None:
        outside = result.optimum.filter(~pl.col("inside_tested").fill_null(True))
        if outside.height:
            reporter.say(
                f"{outside.height} group(s) have a profit-maximising price change outside the changes the experiment "
                f"tested, e.g. {outside['group'][0]!r}: extrapolated, not measured."
            )
