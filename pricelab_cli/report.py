"""The experiment readout: one self-contained HTML page (and the same as Markdown).

``build_report`` reads the files of a finished chain (design, assignment, sales, effects and
optionally cate, products, placebo, spillover, clusters, power), computes the diagnostics a
reviewer asks for (:mod:`pricelab_cli.diagnostics`, the placebo of
:mod:`pricelab_cli.hpte.placebo`) and the pictures, and returns what the templates show.
``render_html`` fills ``templates/report.html.j2`` (CSS inline, pictures as ``data:`` URIs,
nothing fetched when the page is opened); ``render_markdown`` fills ``report.md.j2`` with the
pictures as PNG files beside it. Numbers are shown to 4 significant digits; each headline
number also carries its exact value in a ``data-value`` attribute.
"""

from __future__ import annotations

import base64
import dataclasses
import io as io_bytes
import math
import warnings
from collections.abc import Mapping
from typing import cast

import numpy as np
import polars as pl

from pricelab_cli import __version__
from pricelab_cli.assign import BalanceReport, balance_report
from pricelab_cli.design import Design
from pricelab_cli.diagnostics import (
    ALPHA,
    MDE_POWER,
    SMD_LIMIT,
    carryover_check,
    covariate_balance,
    detrended_views,
    minimum_detectable_effect,
)
from pricelab_cli.engine import Engine, default_engine

SWITCHBACK = ("random-days", "crossover", "balanced-switchback")
# Features shown in "effect by feature", at most.
TOP_FEATURES = 3
PASS, LOOK, NOT_RUN, NOT_APPLICABLE = "pass", "look again", "not run", "not applicable"


def fmt(value, digits: int = 4) -> str:
    """A number as the page shows it (``digits`` significant digits; a dash when missing)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def amount(value) -> str:
    """A total over many product-days: whole numbers with thousands separators from 1,000
    on (4 significant digits below)."""
    if value is not None and isinstance(value, (int, float)) and math.isfinite(value) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return fmt(value)


def pct(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.{digits}%}"


def p_text(p, n_bootstrap: int | None = None) -> str:
    """A p-value as the page shows it. At the bootstrap's floor ``1 / (B + 1)`` (every draw
    on one side of 0) it is shown as "< 1/(B+1)": the draws say only that it is that small."""
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "–"
    if n_bootstrap:
        floor = 1.0 / (n_bootstrap + 1)
        if p <= floor * (1 + 1e-9):
            return f"< {floor:.2g}"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


@dataclasses.dataclass
class Picture:
    """A PNG the report shows: its file name beside a Markdown report, its bytes, a caption."""

    name: str
    data: bytes
    caption: str

    @property
    def uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.data).decode("ascii")


@dataclasses.dataclass
class Report:
    """Everything the templates show (see ``build_report``)."""

    title: str
    tested: dict
    headlines: list[dict]
    banners: list[str]
    pictures: dict[str, Picture]
    heterogeneity: dict | None
    spillover: list[dict] | None
    elasticity: dict | None
    clusters: dict | None
    power: list[dict] | None
    power_choice: str | None
    balance: dict
    diagnostics: list[dict]
    provenance: list[dict]
    command: str
    version: str


def _picture_of(draw, name: str, caption: str) -> Picture:
    """Draw a figure into memory with ``draw(stream)`` and keep its PNG bytes."""
    stream = io_bytes.BytesIO()
    draw(stream)
    return Picture(name, stream.getvalue(), caption)


def _headline(row: dict, treated_days: int, n_bootstrap: int | None) -> dict:
    """One outcome's headline in numbers and in plain words: the lift first, then the
    effect per product-day, then its size over the catalog (the effect times the treated
    product-days)."""
    name, est, lo, hi, p, lift = (row[k] for k in ("outcome", "estimate", "ci_low", "ci_high", "p_value", "lift"))
    # Effects files written before the lift had an interval have no such columns.
    lift_lo, lift_hi = row.get("lift_low"), row.get("lift_high")
    mde = minimum_detectable_effect(row["se"]) if row["se"] is not None else float("nan")
    baseline = est / lift if lift not in (None, 0) and est is not None and math.isfinite(lift) else float("nan")
    mde_share = mde / abs(baseline) if math.isfinite(mde) and math.isfinite(baseline) and baseline else float("nan")
    clear = p is not None and p < ALPHA
    direction = "higher" if (est or 0) >= 0 else "lower"
    impact = {
        k: (v * treated_days if v is not None else None)
        for k, v in (("estimate", est), ("ci_low", lo), ("ci_high", hi))
    }
    words = [
        f"On an average day, {name} of a treated product came out {fmt(abs(est) if est is not None else None)} "
        f"{direction} than it would have without the change"
        + (f" ({pct(lift)} against what was expected)." if lift is not None else "."),
    ]
    if lo is not None and hi is not None:
        words.append(
            f"The true effect very likely (95%) lies between {fmt(lo)} and {fmt(hi)}"
            + (f", that is {pct(lift_lo)} to {pct(lift_hi)}." if lift_lo is not None and lift_hi is not None else ".")
        )
    if est is not None and treated_days:
        words.append(
            f"Over the {treated_days:,} treated product-days that is {amount(impact['estimate'])} {name} in all"
            + (
                f" ({amount(impact['ci_low'])} to {amount(impact['ci_high'])})."
                if lo is not None and hi is not None
                else "."
            )
        )
    shown_p = p_text(p, n_bootstrap)
    p_words = f"p {shown_p}" if shown_p.startswith("<") else f"p = {shown_p}"
    if p is None:
        words.append("No bootstrap was run, so there is no measure of how sure this is.")
    elif clear:
        words.append(f"A difference this large would rarely appear by chance alone ({p_words}).")
    else:
        words.append(f"This could well be chance ({p_words}): the experiment cannot tell it apart from no effect.")
    if math.isfinite(mde):
        share = f" ({mde_share:.1%} of expected {name})" if math.isfinite(mde_share) else ""
        words.append(f"It could reliably detect ({MDE_POWER:.0%} of the time) an effect of {fmt(mde)}{share} or more.")
    return {
        "outcome": name,
        "estimate": est,
        "se": row["se"],
        "ci_low": lo,
        "ci_high": hi,
        "p_value": p,
        "lift": lift,
        "lift_low": lift_lo,
        "lift_high": lift_hi,
        "mde": mde,
        "n_products": row["n_products"],
        "n_outliers": row["n_outliers"],
        "clear": clear,
        "verdict": "clear effect" if clear else "no clear effect",
        "sentence": " ".join(words),
        "treated_days": treated_days,
        "impact": impact,
        "total": None,
        "shown": {
            "estimate": fmt(est),
            "ci_low": fmt(lo),
            "ci_high": fmt(hi),
            "p_value": shown_p,
            "lift": pct(lift),
            "lift_low": pct(lift_lo),
            "lift_high": pct(lift_hi),
            "mde": fmt(mde),
            "impact": amount(impact["estimate"]),
            "impact_low": amount(impact["ci_low"]),
            "impact_high": amount(impact["ci_high"]),
        },
    }


def _with_total(headline: dict, total: dict) -> str | None:
    """Put ipw's total effect (a treated product whose substitutes are treated too: what
    treating every product does) beside the headline's direct effect; return a warning in
    plain words when the two disagree in sign or in whether they are clear."""
    p = total.get("p_value")
    clear = p is not None and p < ALPHA
    headline["total"] = {
        "estimate": total["estimate"],
        "ci_low": total["ci_low"],
        "ci_high": total["ci_high"],
        "p_value": p,
        "clear": clear,
        "shown": {
            "estimate": fmt(total["estimate"]),
            "ci_low": fmt(total["ci_low"]),
            "ci_high": fmt(total["ci_high"]),
            "p_value": p_text(p),
        },
    }
    direct, whole = headline["estimate"], total["estimate"]
    if direct is None or whole is None:
        return None
    opposite = (direct > 0) != (whole > 0) and direct != 0 and whole != 0
    if not opposite and clear == headline["clear"]:
        return None
    name = headline["outcome"]
    how = (
        f"has the opposite sign ({fmt(whole)} {name} per product per day)"
        if opposite
        else f"is {fmt(whole)} {name} per product per day, "
        + ("a clear effect" if clear else "which could be chance")
        + f" (p = {p_text(p)})"
    )
    return (
        f"Spillover changes the decision for {name}: against an untreated product, a treated one changes by "
        f"{fmt(direct)} per day ({'clear' if headline['clear'] else 'not clear'}), but treating every product, so that "
        f"substitutes take from each other, {how}. Rolling the change out to the whole catalog may not deliver "
        "the headline effect."
    )


def _tested(design: Design, assignment: pl.DataFrame) -> dict:
    analysed = assignment.filter(~pl.col("blackout")) if "blackout" in assignment.columns else assignment
    dates = assignment["date"]
    blackout_days = (
        int(assignment.filter(pl.col("blackout"))["date"].n_unique()) if "blackout" in assignment.columns else 0
    )
    arms = {
        "time-bound": "each product is treated or not for the whole experiment",
        "triggered": "each product's window starts at its own event; the product is treated or not for the window",
        "random-days": "every product is treated on some days and not on others, drawn at random",
        "crossover": "products swap arms between phases; the first days of each phase are left out (blackout)",
        "balanced-switchback": (
            "every product is treated on some days and not on others, drawn at random but balanced: every "
            "block of days treats the same number of products and every product is treated in the same "
            "share of its blocks"
            + ("; the first days after each switch are left out (blackout)" if design.blackout_days else "")
        ),
    }[design.kind]
    return {
        "design": design.label,
        "kind": design.kind,
        "arms": arms,
        "start": str(dates.min()),
        "end": str(dates.max()),
        "n_dates": dates.n_unique(),
        "n_products": assignment["product_id"].n_unique(),
        "treated_share": float(cast(float, analysed["treated"].mean())) if analysed.height else float("nan"),
        "blackout_days": blackout_days,
        "clustered": "cluster_id" in assignment.columns,
        "product_days": analysed.height,
        "treated_days": int(analysed["treated"].cast(pl.Int64).sum()),
    }


def _heterogeneity(
    cate: pl.DataFrame, products: pl.DataFrame | None, outcome: str, splits: Mapping[str, float] | None
) -> tuple[dict, list[Picture]]:
    """The CATE distribution, and the mean CATE by quarter of the features the forest split
    on most (``splits``: feature -> share of the forest's splits, from hpte's CATE output);
    without them, of the numeric product features whose quarters separate the CATEs most."""
    from pricelab_cli import plots

    if "outcome" in cate.columns:
        cate = cate.filter(pl.col("outcome") == outcome)
    values = cate["cate"].drop_nulls().drop_nans().to_numpy()
    ranked = sorted((splits or {}).items(), key=lambda kv: -kv[1])
    summary = {
        "outcome": outcome,
        "n": len(values),
        "q10": float(np.quantile(values, 0.1)) if len(values) else float("nan"),
        "median": float(np.median(values)) if len(values) else float("nan"),
        "q90": float(np.quantile(values, 0.9)) if len(values) else float("nan"),
        "share_positive": float((values > 0).mean()) if len(values) else float("nan"),
        "splits": [{"feature": name, "share": share} for name, share in ranked[:5] if share > 0],
        "features": [],
        "by_splits": bool(ranked),
    }
    pictures = [
        _picture_of(
            lambda p: plots.cate_histogram(values, outcome, p),
            "cate.png",
            f"How the effect on {outcome} differs between products (one estimate per product)",
        )
    ]
    if products is not None:
        joined = cate.join(products, on="product_id", how="inner")
        numeric = [c for c, t in products.schema.items() if t.is_numeric() and not _id_like(products, c)]
        scored = []
        for name in numeric:
            frame = joined.select(pl.col(name).cast(pl.Float64), "cate").drop_nulls().drop_nans()
            if frame.height < 20 or frame[name].n_unique() < 2:
                continue
            bins = frame.with_columns(
                pl.col(name).qcut(4, labels=["1", "2", "3", "4"], allow_duplicates=True).alias("q")
            )
            means = bins.group_by("q").agg(pl.col("cate").mean(), pl.col(name).mean().alias("x"), pl.len()).sort("x")
            spread = float(((means["cate"] - frame["cate"].mean()) ** 2 * means["len"]).sum() / frame.height)
            score = dict(ranked).get(name, -1.0) if ranked else spread
            scored.append((score, name, means))
        scored.sort(key=lambda s: -s[0])
        top = [s for s in scored if s[0] > 0][:TOP_FEATURES] if ranked else scored[:TOP_FEATURES]
        if top:
            summary["features"] = [name for _, name, _ in top]
            how = (
                "the product features the forest split on most"
                if ranked
                else "the product features that separate the effects most"
            )
            pictures.append(
                _picture_of(
                    lambda p: plots.effect_by_feature([(n, m) for _, n, m in top], outcome, p),
                    "effect_by_feature.png",
                    f"Average effect on {outcome} by quarter of {how}",
                )
            )
    return summary, pictures


# Column names that label products or groups rather than measure them.
ID_NAMES = ("id", "community", "cluster", "group", "code", "sku", "key")


def _id_like(products: pl.DataFrame, column: str) -> bool:
    """A column that names products or groups: an id by its name (``*_id``, ``community``,
    ...), or whole numbers that differ for every product. Its "quarters" would mean nothing."""
    lower = column.lower()
    if lower in ID_NAMES or lower.endswith(tuple(f"_{n}" for n in ID_NAMES)):
        return True
    values = products.get_column(column)
    return values.dtype.is_integer() and values.n_unique() == products.height


def _diagnostic(name: str, mark: str, result: str, detail: str) -> dict:
    return {"name": name, "mark": mark, "result": result, "detail": detail}


def build_report(
    *,
    design: Design,
    assignment: pl.DataFrame,
    sales: pl.LazyFrame,
    effects: pl.DataFrame,
    provenance: list[dict],
    records: Mapping[str, dict] | None = None,
    cate: pl.DataFrame | None = None,
    products: pl.DataFrame | None = None,
    placebo: pl.DataFrame | None = None,
    spillover: pl.DataFrame | None = None,
    clusters: pl.DataFrame | None = None,
    power: pl.DataFrame | None = None,
    monitor: pl.DataFrame | None = None,
    elasticity: pl.DataFrame | None = None,
    optimum: pl.DataFrame | None = None,
    command: str = "",
    engine=None,
    description: str | None = None,
) -> Report:
    """The readout of one experiment. ``provenance`` is the table of inputs (one row per
    input: ``role``, ``path``, ``sha256``, ``command``, ``version``, ``seed``), and
    ``records`` each input's provenance record by role (``effects``, ``cate``: the number
    of bootstrap draws and the forest's splits are read from them); ``description`` (what was
    changed) overrides the design's own; ``monitor`` (``pricelab monitor``'s table) adds the
    nights and, while the experiment runs, tonight's decision to the headline."""
    engine = default_engine(engine)
    outcomes = effects["outcome"].to_list()
    records = records or {}
    n_bootstrap = records.get("effects", {}).get("n_bootstrap")
    tested = {**_tested(design, assignment), "description": description or design.description}
    headlines = [_headline(row, tested["treated_days"], n_bootstrap) for row in effects.iter_rows(named=True)]
    banners = _spillover_banners(headlines, spillover)
    pictures, residuals = _figures(design, assignment, sales, effects, engine)
    heterogeneity = None
    if cate is not None:
        splits = (records.get("cate", {}).get("forest_splits") or {}).get(outcomes[0])
        heterogeneity, extra = _heterogeneity(cate, products, outcomes[0], splits)
        for picture in extra:
            pictures[picture.name.removesuffix(".png")] = picture

    # Balance: the split as drawn, and the arms' products and history.
    split = balance_report(assignment, design)
    covariates = covariate_balance(assignment, products, sales, outcomes[0])
    balance = _balance(split, covariates)
    diagnostics = [
        *_placebo_checks(placebo),
        *_carryover_checks(design, assignment, outcomes, residuals),
        *_design_checks(split, covariates, headlines),
    ]
    if monitor is not None and monitor.height:
        _monitoring(monitor, design, pictures, banners)
    failed = [d for d in diagnostics if d["mark"] == LOOK]
    if failed:
        banners.append(
            "Check before deciding: "
            + "; ".join(f"{d['name']} ({d['result']})" for d in failed)
            + ". See Checks below."
        )
    return Report(
        title=f"Price experiment readout: {design.label}",
        tested=tested,
        headlines=headlines,
        banners=banners,
        pictures=pictures,
        heterogeneity=heterogeneity,
        spillover=_spillover_rows(spillover, outcomes[0]) if spillover is not None else None,
        elasticity=_elasticity_section(elasticity, optimum, outcomes[0]) if elasticity is not None else None,
        clusters=_cluster_summary(clusters) if clusters is not None else None,
        power=_power_rows(power),
        power_choice=_power_choice(power, design),
        balance=balance,
        diagnostics=diagnostics,
        provenance=provenance,
        command=command,
        version=__version__,
    )


def _monitoring(monitor: pl.DataFrame, design: Design, pictures: dict[str, Picture], banners: list[str]) -> None:
    """The nights' picture, and, while the experiment is still running (its last night before
    the design's end), the decision of its last night as a banner above the headline."""
    from pricelab_cli.plots import monitor_plot

    pictures["monitor"] = _picture_of(
        lambda p: monitor_plot(monitor, p),
        "monitor.png",
        "Night by night: the estimate, its fixed 95% interval (dark) and the always-valid 95% sequence (light), "
        "which may be read every night; the dashed line marks the first night that said stop",
    )
    last = monitor.filter(pl.col("date") == pl.col("date").max())
    night = last.get_column("date")[0]
    running = design.end is None or night < design.end
    if running:
        said = "; ".join(f"{row['outcome']}: {row['decision']}" for row in last.iter_rows(named=True))
        banners.insert(0, f"Still running: as of {night}, the always-valid interval says {said}.")


def _spillover_banners(headlines: list[dict], spillover: pl.DataFrame | None) -> list[str]:
    """The banner that sets the headline against the spillover's total effect, when it differs."""
    banners = []
    if spillover is not None:
        total = spillover.filter(pl.col("effect") == "total")
        if total.height:
            warning = _with_total(headlines[0], total.row(0, named=True))
            if warning:
                banners.append(warning)
    return banners


def _figures(
    design: Design, assignment: pl.DataFrame, sales: pl.LazyFrame, effects: pl.DataFrame, engine: Engine
) -> tuple[dict[str, Picture], dict[str, pl.DataFrame]]:
    """The design grid and the effect path; and, for a switchback design, each outcome's
    detrended experiment rows (the carryover check reads them)."""
    from pricelab_cli import plots
    from pricelab_cli.plots import effect_path_plot

    pictures: dict[str, Picture] = {}
    pictures["grid"] = _picture_of(
        lambda p: plots.design_grid(design, p),
        "design_grid.png",
        "The design on a sample of products: which days are treated, control or left out",
    )
    # One layout of the panel and one detrending per outcome serve the path and the
    # carryover check.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path_table, residuals = detrended_views(
            sales, assignment, effects["outcome"].to_list(), rows=design.kind in SWITCHBACK, engine=engine
        )
    paths = cast(pl.DataFrame, path_table)  # detrended_views draws the paths unless told not to
    pictures["path"] = _picture_of(
        lambda p: effect_path_plot(paths, effects, p),
        "effect_path.png",
        "Treated minus control, day by day, before and during the experiment "
        "(grey: before the start, where the two should agree; red: during)",
    )
    return pictures, residuals


def _balance(split: BalanceReport, covariates: pl.DataFrame) -> dict:
    daily = split.daily["treated_share"]
    return {
        "treated_share": split.treated_share,
        "expected_share": split.expected_share,
        "srm_p_value": split.srm_p_value,
        "srm_ok": not split.srm_suspect,
        "daily_min": float(cast(float, daily.min())) if split.daily.height else float("nan"),
        "daily_max": float(cast(float, daily.max())) if split.daily.height else float("nan"),
        "covariates": covariates.to_dicts(),
        "smd_limit": SMD_LIMIT,
    }


def _placebo_checks(placebo: pl.DataFrame | None) -> list[dict]:
    if placebo is None:
        return [
            _diagnostic(
                "Pre-trend (placebo)",
                NOT_RUN,
                "not run",
                "Run hpte with --placebo-out and pass the file with --placebo.",
            )
        ]
    checks = []
    for row in placebo.iter_rows(named=True):
        p = row["p_value"]
        mark = NOT_RUN if p is None else (PASS if p >= ALPHA else LOOK)
        checks.append(
            _diagnostic(
                f"Pre-trend (placebo), {row['outcome']}",
                mark,
                f"fake experiment before the start: {fmt(row['estimate'])} (p = {p_text(p)})",
                "The same estimate over the last stretch before the start, as long as the experiment, where nothing "
                "was changed. It should be near zero; if not, the arms were already drifting apart.",
            )
        )
    return checks


def _carryover_checks(
    design: Design, assignment: pl.DataFrame, outcomes: list[str], residuals: Mapping[str, pl.DataFrame]
) -> list[dict]:
    checks = []
    for outcome in outcomes:
        if design.kind not in SWITCHBACK:
            checks.append(
                _diagnostic(
                    f"Carryover, {outcome}",
                    NOT_APPLICABLE,
                    "one switch per product",
                    "Products do not switch back and forth in this design.",
                )
            )
            continue
        row = carryover_check(residuals[outcome], assignment).lingering()
        p = row["p_value"]
        mark = NOT_RUN if p is None else (PASS if p >= ALPHA else LOOK)
        suggestion = (
            f" A blackout of {row['suggested_blackout_days']} day(s) after each switch would remove it."
            if mark == LOOK
            else ""
        )
        checks.append(
            _diagnostic(
                f"Carryover, {outcome}",
                mark,
                f"first control day after a treated stretch vs later control days: {fmt(row['estimate'])} "
                f"(p = {p_text(p)})",
                "If the change lingers after it is undone, control days right after treated ones look treated, and "
                "the estimate shrinks." + suggestion,
            )
        )
    return checks


def _design_checks(split: BalanceReport, covariates: pl.DataFrame, headlines: list[dict]) -> list[dict]:
    """The sample ratio, the balance of the arms and each outcome's sensitivity."""
    checks = [
        _diagnostic(
            "Randomisation (sample ratio)",
            PASS if not split.srm_suspect else LOOK,
            f"treated share {split.treated_share:.1%} against {split.expected_share:.0%} planned "
            f"(p = {p_text(split.srm_p_value)})",
            "A split far from the plan means units were lost or added on one side.",
        )
    ]
    unbalanced = [c["variable"] for c in covariates.to_dicts() if not c["balanced"]]
    checks.append(
        _diagnostic(
            "Balance of products and history",
            PASS if not unbalanced else LOOK,
            f"all standardised differences within ±{SMD_LIMIT:g}"
            if not unbalanced
            else "imbalanced: " + ", ".join(unbalanced),
            "The arms should look alike in product features and in sales before the start.",
        )
    )
    for h in headlines:
        checks.append(
            _diagnostic(
                f"Sensitivity, {h['outcome']}",
                PASS if h["clear"] or not math.isfinite(h["mde"]) else LOOK,
                f"smallest effect it could reliably detect: {fmt(h['mde'])}",
                "With no clear effect, an effect smaller than this may still exist: the experiment was too small "
                "to see it."
                if not h["clear"]
                else "The experiment was large enough to see the effect it found.",
            )
        )
    return checks


def _spillover_rows(spillover: pl.DataFrame, outcome: str) -> list[dict]:
    """The spillover table's rows, each with a sentence saying what it means."""
    rows = []
    meaning = {
        "direct": "a treated product whose substitutes were not treated",
        "spillover": "an untreated product with a treated substitute",
        "total": "a treated product with a treated substitute",
    }
    for row in spillover.to_dicts():
        clear = row["p_value"] is not None and row["p_value"] < ALPHA
        who = meaning.get(row["effect"], row["effect"])
        change = "gained" if (row["estimate"] or 0) >= 0 else "lost"
        row["sentence"] = (
            f"{who[0].upper()}{who[1:]} {change} {fmt(abs(row['estimate']))} {outcome} a day against products "
            "with neither" + ("." if clear else f", which could be chance (p = {p_text(row['p_value'])}).")
        )
        rows.append(row)
    return rows


def _elasticity_section(elasticity: pl.DataFrame, optimum: pl.DataFrame | None, outcome: str) -> dict:
    """``pricelab elasticity``'s rows in words, group by group: how the outcome answers a 1%
    price cut, how much of that its substitutes give up, what the policy did to profit and
    the price that would maximise it (flagged when the experiment did not try such a change)."""
    table = elasticity.to_dicts()
    best = {r["group"]: r for r in optimum.to_dicts()} if optimum is not None else {}
    groups: dict = {}
    for row in table:
        groups.setdefault(row["group"], {})[row["kind"]] = row
    rows = []
    for group, kinds in groups.items():
        if group is None:
            continue
        own, cross, profit = kinds.get("own"), kinds.get("cross"), kinds.get("profit")
        words = []
        if own is not None and own["estimate"] is not None:
            e = own["estimate"]
            words.append(
                f"A 1% price cut sells {-e:.1f}% more {outcome} "
                f"(95% interval {-own['ci_high']:.1f}% to {-own['ci_low']:.1f}%)."
                if e < 0
                else f"A 1% price cut moves {outcome} by {-e:+.1f}%: demand does not rise as the price falls here."
            )
            if cross is not None and cross["estimate"] is not None and cross["estimate"] > 0 and e < 0:
                share = cross["estimate"] / abs(e)
                words.append(
                    f"About {share:.0%} of that comes out of its substitutes' sales (cross-elasticity {cross['estimate']:.2f})."
                    if share <= 1
                    else f"Its substitutes lose more than it gains (cross-elasticity {cross['estimate']:.2f}): a cut moves "
                    "sales inside the group rather than growing it."
                )
        elif own is not None:
            words.append("The policy barely moved prices here: no elasticity (weak instrument).")
        if profit is not None and profit["estimate"] is not None:
            words.append(
                f"The policy changed profit by {amount(profit['estimate'])} per product per day "
                f"(95% interval {amount(profit['ci_low'])} to {amount(profit['ci_high'])})."
            )
        opt = best.get(group)
        if opt is not None and opt["price_change"] is not None:
            where = (
                "inside the range the experiment tried"
                if opt["inside_tested"]
                else f"outside the {pct(opt['tested_low'], 0)} to {pct(opt['tested_high'], 0)} the experiment tried: an "
                "extrapolation, not a measurement"
            )
            words.append(
                f"At constant elasticity, profit peaks at a price change of {pct(opt['price_change'], 0)}, {where}."
            )
        elif opt is not None:
            words.append("At this elasticity demand is inelastic: profit rises with price beyond anything tested.")
        rows.append({"group": group, "own": own, "cross": cross, "profit": profit, "sentence": " ".join(words)})
    catalog = next((r for r in table if r["group"] is None and r["kind"] == "profit"), None)
    return {"rows": rows, "catalog": catalog}


def _cluster_summary(clusters: pl.DataFrame) -> dict:
    sizes = clusters.group_by("cluster_id").len()["len"]
    return {
        "n_clusters": sizes.len(),
        "n_products": clusters.height,
        "largest": int(cast(int, sizes.max())),
        "median": float(cast(float, sizes.median())),
        "singletons": int((sizes == 1).sum()),
    }


def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("pricelab_cli", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(report: Report) -> str:
    env = _environment()
    env.filters.update(fmt=fmt, pct=pct, p_text=p_text)
    return env.get_template("report.html.j2").render(r=report, PASS=PASS, LOOK=LOOK)


def render_markdown(report: Report, image_folder: str) -> str:
    """The Markdown readout; pictures are linked as ``image_folder/<name>``."""
    env = _environment()
    env.filters.update(fmt=fmt, pct=pct, p_text=p_text)
    return env.get_template("report.md.j2").render(r=report, images=image_folder, PASS=PASS, LOOK=LOOK)


def _power_rows(power: pl.DataFrame | None) -> list[dict] | None:
    """The design comparison's rows; a ``power --recommend`` grid's rows are labelled with
    their carryover scenario, the recommended design's first."""
    if power is None:
        return None
    if "carryover_days" not in power.columns:
        return power.to_dicts()
    days = pl.col("carryover_days")
    text = pl.when(days == days.floor()).then(days.cast(pl.Int64).cast(pl.String)).otherwise(days.cast(pl.String))
    label = pl.format("{} (carryover {} days)", pl.col("design"), text)
    ordered = power.sort(
        pl.col("recommended").cast(pl.Int8) if "recommended" in power.columns else pl.lit(0),
        descending=True,
        maintain_order=True,
    )
    return ordered.with_columns(label.alias("design")).to_dicts()


def _power_choice(power: pl.DataFrame | None, design: Design) -> str | None:
    """The recommendation of a ``power --recommend`` grid, in plain words."""
    if power is None or not {"recommended", "worst_rmse", "kind", "block_days", "blackout_days"} <= set(power.columns):
        return None
    if not power["recommended"].any():
        return None
    from pricelab_cli.recommend import explain

    return explain(power, design.treat_share)
