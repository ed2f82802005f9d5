"""Choose a design for the user's catalog and carryover: a grid searched on the history.

``power --recommend`` compares many designs under several carryover scenarios, which the
full estimator cannot afford (a grid of 40 designs x 3 scenarios x 30 repetitions is 3,600
estimates). So the grid runs on a *screen*: hpte's robust detrending of the history is done
once, and every cell of the grid reuses it.

The screen
----------
The history's last ``W`` days (the longest candidate's window) are laid out as hpte lays out
an experiment with every product in control: each product's baseline (level, trend and
weekday, by the robust step's Huber fit on the days before the window), its robust scale,
the window's stock-out days, and the residual of every window day from the baseline,
winsorised as hpte winsorises it. A repetition of a design then draws the design's
assignment (the same hash draws ``assign`` makes), plants the relative effect with its
decaying carryover on the treated days' outcomes (the rule of ``simulate --carryover-days``,
see :func:`~pricelab_cli.simulate.treatment_dose`), and forms hpte's differences on the
residuals:

- the common date shocks are the control cells' mean residual per day, taken out of every
  cell;
- each product's cell means (its treated and its control analysed days), the estimate the
  mean of the treated cells less the mean of the control cells, both adjusted by one
  least-squares slope on the history's level, trend and volatility (the forest's automatic
  features: a product's drift from its baseline in the window follows its fitted trend, and
  hpte's leaves compare products alike in it);
- its standard error the linearised bootstrap's (the sum of squared influences of the
  randomisation units, as hpte's bootstrap resamples them), and the 95% interval from it.

The truth is ``power``'s: the roll-out effect per product per day over each product's
analysed days (carryover does not change it), so the bias that carryover causes in a design
is in the grid's ``bias`` and ``rmse``.

The grid and the choice
-----------------------
Kinds time-bound, random-days, crossover and balanced-switchback (triggered designs need
events and are compared by ``power`` itself); block (crossover: phase) lengths from
``blocks``; blackouts from 0 to twice the longest carryover scenario by default, where the
kind has them and they are shorter than the block. The recommended design minimises the
worst RMSE over the scenarios (minimax, the criterion of Bojinov, Simchi-Levi and Zhao)
among the designs whose bias stays under a quarter of their SE in every scenario, so that
their 95% intervals stay honest (among all designs when none does); ties go to the design
listed first (fewer switches, shorter blackouts). The bias is measured against the same
repetition without carryover (a control variate) and the SE is the mean of the repetitions'
own SEs (see ``summarise_grid``), so 30 repetitions tell designs apart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
from scipy import stats

from pricelab_cli.assign import plan_assignment
from pricelab_cli.design import Design, make_design
from pricelab_cli.errors import DataError, UsageError
from pricelab_cli.ids import row_positions
from pricelab_cli.power import MIN_PRE_DAYS, Z80, Z975, interval_hits, window_design
from pricelab_cli.simulate import treatment_dose

GRID_BLOCKS = (1, 2, 3, 7, 14)
GRID_KINDS = ("time-bound", "random-days", "crossover", "balanced-switchback")
GRID_COLUMNS = (
    "design",
    "kind",
    "block_days",
    "blackout_days",
    "carryover_days",
    "bias",
    "mean_se",
    "rmse",
    "power",
    "coverage",
    "mde",
    "bias_raw",
    "se",
    "rmse_raw",
    "truth",
    "worst_rmse",
    "worst_bias_se",
    "honest",
    "recommended",
    "reps",
)
# A design whose bias stays under this share of its SE in every scenario keeps its 95%
# intervals honest (they cover the truth at least 94.4% of the time at 0.25).
MAX_BIAS_SE = 0.25


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One design of the grid, with what identifies it in the grid's table."""

    label: str
    design: Design
    block_days: int | None
    blackout_days: int


def default_max_blackout(carryover: Sequence[float]) -> int:
    """Blackouts searched by default: up to twice the longest carryover scenario (a decaying
    carryover of K days still holds exp(-1), 37%, of the effect K days after the switch)."""
    return int(math.ceil(2 * max(carryover, default=0.0)))


def candidate_designs(template: Design, blocks: Sequence[int], max_blackout: int) -> list[Candidate]:
    """The grid's designs over ``template``'s window (its start, length, share and salt)."""
    if template.kind == "triggered":
        raise UsageError("--recommend needs a design with dates (start and end), not a triggered one.")
    n_days = template.n_days
    common = {"salt": template.salt, "treat_share": template.treat_share, "start": template.start}
    end = template.start + dt.timedelta(days=n_days - 1) if template.start else None
    out = [Candidate("time-bound", make_design("time-bound", end=end, **common), None, 0)]
    usable = sorted({b for b in blocks if 1 <= b < n_days})
    for block in usable:
        out.append(
            Candidate(
                f"random-days {block}d", make_design("random-days", end=end, block_days=block, **common), block, 0
            )
        )
    for block in usable:
        for blackout in range(0, min(max_blackout, block - 1) + 1):
            tail = f" blackout {blackout}d" if blackout else ""
            if n_days // block >= 2:
                crossover = make_design(
                    "crossover", phase_days=block, blackout_days=blackout, phases=n_days // block, **common
                )
                out.append(Candidate(f"crossover {block}d{tail}", crossover, block, blackout))
            balanced = make_design("balanced-switchback", end=end, block_days=block, blackout_days=blackout, **common)
            out.append(Candidate(f"balanced-switchback {block}d{tail}", balanced, block, blackout))
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Screen:
    """The history's window, detrended once (module docstring): (products x window days)
    arrays in the products table's order."""

    ids: pl.Series
    end: dt.date  # last day of the window (the history's last date)
    outcome: np.ndarray  # untreated outcome (0 where the product has no row)
    residual: np.ndarray  # winsorised residual from the product's baseline
    usable: np.ndarray  # a row the estimator reads (present, baseline fitted, not a stock-out)
    covariates: np.ndarray  # (products x 3) the history's level, trend and volatility, standardised

    @property
    def n_days(self) -> int:
        return self.outcome.shape[1]


def detrend_history(history: pl.DataFrame, products: pl.DataFrame, outcome: str, window_days: int) -> Screen:
    """hpte's robust detrending of the history's last ``window_days`` days, done once."""
    from pricelab_cli.hpte.baseline import MODEL_NONE, baseline_at
    from pricelab_cli.hpte.detrend import fit_partition, screen_products
    from pricelab_cli.hpte.panel import build_panel

    end = history["date"].max()
    if not isinstance(end, dt.date):
        raise DataError("history: no dates.")
    first = end - dt.timedelta(days=window_days - 1)
    span = (end - history["date"].min()).days + 1
    if span - window_days < MIN_PRE_DAYS:
        raise DataError(
            f"history: {span} days cannot hold a {window_days}-day experiment window and "
            f"{MIN_PRE_DAYS} days of pre-period before it; give a longer history or shorter designs."
        )
    ids = products["product_id"]
    days = pl.date_range(first, end, "1d", eager=True)
    # Nothing is treated: the arms only label the products in two halves, as the panel needs.
    window = (
        pl.DataFrame({"product_id": ids, "treated": (np.arange(len(ids)) % 2).astype(np.int8)})
        .join(pl.DataFrame({"date": days}), how="cross")
        .with_columns(blackout=pl.lit(False), period=pl.lit(0, pl.Int32))
        .select("product_id", "date", "treated", "blackout", "period")
    )
    panel = build_panel(history.select("product_id", "date", outcome), window, [outcome], price_col=None)
    y = panel.outcomes[outcome]
    part = fit_partition(panel, y, robust_step=True)
    # hpte's volatility screen: products whose history is too wild to read are left out.
    _, screened = screen_products(part.fit, part.screen_inputs, True) if part.screen_inputs else (None, None)
    rows = np.flatnonzero(~panel.pre)
    resid = y[rows] - baseline_at(panel, part.fit, rows)
    code = panel.code[rows]
    low = part.centre[code] - part.bound[code]
    high = part.centre[code] + part.bound[code]
    resid = np.clip(resid, low, high)
    ok = part.fit.model[code] != MODEL_NONE
    if screened is not None:
        ok &= ~screened[code]
    ok &= ~np.isin(rows, part.stockout) & np.isfinite(resid)
    row = row_positions(panel.product_ids.gather(code), ids)
    col = panel.dates[panel.date_index[rows]] - (first - dt.date(1970, 1, 1)).days
    shape = (len(ids), window_days)
    outcome_m, residual_m, usable_m = np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=bool)
    outcome_m[row, col] = y[rows]
    residual_m[row, col] = np.where(ok, resid, 0.0)
    usable_m[row, col] = ok
    at = row_positions(panel.product_ids, ids)
    covariates = np.zeros((len(ids), 3))
    for j, values in enumerate((part.fit.level, part.fit.trend, part.fit.volatility)):
        column = np.full(len(ids), np.nan)
        column[at] = values
        known = np.isfinite(column)
        if known.sum() > 1 and np.std(column[known]) > 0:
            covariates[known, j] = (column[known] - column[known].mean()) / column[known].std()
    return Screen(ids, end, outcome_m, residual_m, usable_m, covariates)


def screen_estimate(
    screen: Screen, treated: np.ndarray, analysed: np.ndarray, unit: np.ndarray, effect: float, carryover_days: float
) -> dict:
    """One repetition on the screen (module docstring): estimate, se, interval, p-value and
    truth, per product per day in outcome units."""
    dose = treatment_dose(treated, carryover_days)
    y = screen.residual + effect * dose * screen.outcome
    cells = analysed & screen.usable
    on, off = cells & treated, cells & ~treated
    # Common date shocks: the control cells' mean residual per day.
    n_off_day = off.sum(axis=0)
    shock = np.divide((y * off).sum(axis=0), n_off_day, out=np.zeros(y.shape[1]), where=n_off_day > 0)
    y = y - shock[None, :]
    n_on, n_off = on.sum(axis=1), off.sum(axis=1)
    mean_on = np.divide((y * on).sum(axis=1), n_on, out=np.zeros(len(n_on)), where=n_on > 0)
    mean_off = np.divide((y * off).sum(axis=1), n_off, out=np.zeros(len(n_off)), where=n_off > 0)
    has_on, has_off = n_on > 0, n_off > 0
    level = np.divide(
        (screen.outcome * cells).sum(axis=1), cells.sum(axis=1), out=np.zeros(len(n_on)), where=cells.any(axis=1)
    )
    truth = float(effect * level[cells.any(axis=1)].mean()) if cells.any() else math.nan
    baseline = float(level[cells.any(axis=1)].mean()) if cells.any() else math.nan
    if not has_on.any() or not has_off.any():
        nan = math.nan
        return {
            "estimate": nan,
            "se": nan,
            "ci_low": nan,
            "ci_high": nan,
            "p_value": nan,
            "truth": truth,
            "baseline": baseline,
        }
    # The second difference of the cell means, adjusted for the history's level, trend and
    # volatility (what hpte's forest splits on): one slope for both arms, fitted on the cells'
    # deviations from their arm's mean.
    x = screen.covariates
    x_on, x_off = x[has_on], x[has_off]
    v_on, v_off = mean_on[has_on], mean_off[has_off]
    stacked = np.vstack([x_on - x_on.mean(axis=0), x_off - x_off.mean(axis=0)])
    target = np.concatenate([v_on - v_on.mean(), v_off - v_off.mean()])
    slope = np.zeros(x.shape[1])
    if len(target) > x.shape[1] + 2:
        slope = np.linalg.lstsq(stacked, target, rcond=None)[0]
    centre = x[has_on | has_off].mean(axis=0)
    adjusted_on = mean_on - (x - centre) @ slope
    adjusted_off = mean_off - (x - centre) @ slope
    k_on, k_off = has_on.sum(), has_off.sum()
    mu_on, mu_off = adjusted_on[has_on].mean(), adjusted_off[has_off].mean()
    estimate = float(mu_on - mu_off)
    influence = np.where(has_on, (adjusted_on - mu_on) / k_on, 0.0) - np.where(
        has_off, (adjusted_off - mu_off) / k_off, 0.0
    )
    per_unit = np.bincount(unit, weights=influence)
    n_units = int((np.bincount(unit, weights=(has_on | has_off).astype(float)) > 0).sum())
    se = float(np.sqrt((per_unit**2).sum() * n_units / max(n_units - 1, 1)))
    p_value = float(2 * stats.norm.sf(abs(estimate) / se)) if se > 0 else math.nan
    return {
        "estimate": estimate,
        "se": se,
        "ci_low": estimate - Z975 * se,
        "ci_high": estimate + Z975 * se,
        "p_value": p_value,
        "truth": truth,
        "baseline": baseline,
    }


def grid_study(
    screen: Screen,
    products: pl.DataFrame,
    candidates: Sequence[Candidate],
    carryover: Sequence[float],
    *,
    effect: float = 0.05,
    reps: int = 30,
    seed: int = 0,
    clusters: pl.DataFrame | None = None,
    on_progress: Callable[[int], None] | None = None,
    engine=None,
    n_jobs: int = 1,
) -> pl.DataFrame:
    """One row per candidate, carryover scenario and repetition, the scenario of no carryover
    always among them (``summarise_grid``'s control variate). Every scenario of a repetition
    shares its assignment, so the scenarios differ by the carryover alone. The candidates run
    as tasks on ``engine`` (default: this machine with ``n_jobs`` processes); each repetition
    seeds itself from ``seed``, the repetition and the candidate, so the rows do not depend on
    where they ran."""
    from pricelab_cli.engine import default_engine

    if reps < 2:
        raise UsageError(f"`reps` {reps} must be at least 2 (the spread of estimates needs two).")
    task = _GridTask(
        screen,
        products.select("product_id"),
        tuple(candidates),
        tuple(sorted({0.0, *(float(d) for d in carryover)})),
        float(effect),
        reps,
        seed,
        clusters,
    )
    chosen = default_engine(engine, n_jobs)
    shared = chosen.share(task)
    advance = None if on_progress is None else (lambda item: on_progress(1))
    parts = chosen.map(
        _grid_task, [(shared, index) for index in range(len(candidates))], progress=advance, stage="designs"
    )
    return pl.DataFrame([row for part in parts for row in part])


@dataclasses.dataclass(frozen=True, eq=False)
class _GridTask:
    """What every candidate's repetitions need; sent once to each worker."""

    screen: Screen
    products: pl.DataFrame
    candidates: tuple[Candidate, ...]
    carryover: tuple[float, ...]
    effect: float
    reps: int
    seed: int
    clusters: pl.DataFrame | None


def _grid_task(item: tuple[object, int]) -> list[dict]:
    from pricelab_cli.engine import resolve

    shared, index = item
    task: _GridTask = resolve(shared)
    screen, candidate = task.screen, task.candidates[index]
    offset = screen.n_days - candidate.design.n_days
    rows = []
    for rep in range(task.reps):
        design = window_design(candidate.design, screen.end, salt=f"recommend:{task.seed}:{rep}:{index}")
        plan = plan_assignment(design, task.products, clusters=task.clusters)
        treated_w, blackout_w = plan.matrices()
        treated = np.zeros(screen.outcome.shape, dtype=bool)
        analysed = np.zeros(screen.outcome.shape, dtype=bool)
        treated[:, offset:] = treated_w
        analysed[:, offset:] = ~blackout_w
        unit = plan.unit_index()
        for days in task.carryover:
            result = screen_estimate(screen, treated, analysed, unit, task.effect, days)
            rows.append({"candidate": index, "carryover_days": days, "rep": rep, **result})
    return rows


def summarise_grid(
    repetitions: pl.DataFrame, candidates: Sequence[Candidate], carryover: Sequence[float] | None = None
) -> pl.DataFrame:
    """One row per candidate and scenario of ``carryover`` (default: every scenario of the
    repetitions), ``GRID_COLUMNS``, the minimax choice flagged ``recommended``.

    Each figure the choice reads is taken where it is least noisy, so that 30 repetitions
    tell designs apart:

    - ``bias``: the carryover's bias by control variate, the mean over repetitions of the
      estimate less the same repetition's estimate without carryover (same assignment, same
      data), which randomisation makes unbiased; ``bias_raw`` is the plain mean of estimate
      minus truth, whose noise is the spread over the square root of the repetitions.
    - ``mean_se``: the mean of the repetitions' own (linearised-bootstrap) SEs, each read
      from a whole catalog; ``se`` is the spread of the estimates across repetitions, as in
      ``power``'s table, which 30 repetitions know to about 13%.
    - ``rmse``: ``sqrt(bias^2 + mean_se^2)``; ``rmse_raw`` the root mean squared error.

    A design is *honest* when in every scenario its bias, plus twice the bias's Monte Carlo
    error, stays under ``MAX_BIAS_SE`` of its ``mean_se``; the recommended design has the
    smallest worst ``rmse`` among the honest ones (among all when none is), ties to the one
    listed first. ``worst_bias_se`` is the largest ``|bias| / mean_se`` over the scenarios."""
    clean = repetitions.filter(pl.col("carryover_days") == 0).select(
        "candidate", "rep", pl.col("estimate").alias("_clean")
    )
    rows = repetitions.join(clean, on=["candidate", "rep"], how="left")
    if carryover is not None:
        rows = rows.filter(pl.col("carryover_days").is_in([float(d) for d in carryover]))
    with_ci = pl.col("se").is_finite()
    error = pl.col("estimate") - pl.col("truth")
    lingering = pl.col("estimate") - pl.col("_clean")
    table = (
        rows.group_by("candidate", "carryover_days", maintain_order=True)
        .agg(
            lingering.mean().alias("bias"),
            (lingering.std() / pl.len().sqrt()).fill_null(0.0).alias("_bias_mc"),
            error.mean().alias("bias_raw"),
            pl.col("estimate").std().alias("se"),
            pl.col("se").filter(with_ci).mean().alias("mean_se"),
            (error**2).mean().sqrt().alias("rmse_raw"),
            *interval_hits(with_ci),
            pl.col("truth").mean().alias("truth"),
            pl.len().alias("reps"),
        )
        .with_columns(
            (pl.col("bias") ** 2 + pl.col("mean_se") ** 2).sqrt().alias("rmse"),
            ((Z975 + Z80) * pl.col("mean_se")).alias("mde"),
            (pl.col("bias").abs() / pl.col("mean_se")).alias("_bias_se"),
            ((pl.col("bias").abs() + 2 * pl.col("_bias_mc")) / pl.col("mean_se")).alias("_bias_se_high"),
        )
        .with_columns(
            pl.col("rmse").max().over("candidate").alias("worst_rmse"),
            pl.col("_bias_se").max().over("candidate").alias("worst_bias_se"),
            pl.col("_bias_se_high").max().over("candidate").alias("_worst_high"),
        )
    )
    per_design = table.group_by("candidate", maintain_order=True).agg(
        pl.col("worst_rmse").first(), pl.col("_worst_high").first()
    )
    honest = per_design.filter(pl.col("_worst_high") <= MAX_BIAS_SE)
    pool = honest if honest.height else per_design
    best = int(pool.sort("worst_rmse", "candidate", nulls_last=True)["candidate"][0])
    info = pl.DataFrame(
        {
            "candidate": list(range(len(candidates))),
            "design": [c.label for c in candidates],
            "kind": [c.design.kind for c in candidates],
            "block_days": pl.Series([c.block_days for c in candidates], dtype=pl.Int64),
            "blackout_days": [c.blackout_days for c in candidates],
        }
    )
    return (
        table.join(info, on="candidate", how="left")
        .with_columns(
            (pl.col("candidate") == best).alias("recommended"),
            (pl.col("candidate").is_in(honest["candidate"].to_list())).alias("honest"),
        )
        .select(GRID_COLUMNS)
    )


def recommended(grid: pl.DataFrame, candidates: Sequence[Candidate]) -> Candidate:
    """The grid's minimax design."""
    label = grid.filter(pl.col("recommended"))["design"][0]
    return next(c for c in candidates if c.label == label)


def parse_blocks(text: str) -> list[int]:
    """``"1,2,3,7,14"`` -> [1, 2, 3, 7, 14]; refuses what is not a list of whole days >= 1."""
    values = []
    for part in text.split(","):
        value = part.strip()
        if not value.isdigit() or int(value) < 1:
            raise UsageError(f"--blocks: {value!r} is not a whole number of days, 1 or more (e.g. 1,2,3,7,14).")
        values.append(int(value))
    return sorted(set(values))


def parse_carryover(text: str) -> list[float]:
    """``"0,1,3"`` -> [0.0, 1.0, 3.0]; refuses what is not a list of numbers of days >= 0."""
    values = []
    for part in text.split(","):
        try:
            value = float(part.strip())
        except ValueError:
            raise UsageError(f"--carryover-days: {part.strip()!r} is not a number of days (e.g. 0,1,3).") from None
        if not (value >= 0 and math.isfinite(value)):
            raise UsageError(f"--carryover-days: {part.strip()!r} must be 0 or more days.")
        values.append(value)
    return sorted(set(values))


def _days(n: int) -> str:
    return "day" if n == 1 else f"{n} days"


def explain(grid: pl.DataFrame, share: float = 0.5) -> str:
    """The grid's recommendation in one paragraph a business partner can follow."""
    best = grid.filter(pl.col("recommended")).row(0, named=True)
    kind, block, blackout = best["kind"], best["block_days"], best["blackout_days"]
    part = "half the products" if share == 0.5 else f"{share:.0%} of the products"
    how = {
        "time-bound": f"{part} get the new price for the whole experiment and the others keep the old one",
        "random-days": f"every {_days(block or 1)}, each product gets the new price or keeps the old one by an "
        "independent draw",
        "crossover": f"the products are split in two groups that take turns at the new price, swapping every "
        f"{_days(block or 1)}",
        "balanced-switchback": f"every {_days(block or 1)}, {part} get the new price, drawn at random but so that "
        "every period treats the same number of products and every product spends the same share of periods "
        "at each price",
    }[kind]
    if blackout:
        first = "day after each switch is" if blackout == 1 else f"{blackout} days after each switch are"
        how += f"; the first {first} not counted, so what lingers from the previous price does not blur the reading"
    values = [f"{d:g}" for d in sorted(set(grid["carryover_days"].to_list()))]
    scenarios = values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"
    text = (
        f"Recommended design: {best['design']}. In words: {how}. On this catalog's own history its typical error "
        f"(RMSE) is at most {best['worst_rmse']:.3g} units per product per day whichever of the carryover "
        f"scenarios holds (the effect lingering {scenarios} days after a price returns)"
    )
    plain = grid.filter(pl.col("design") == "random-days 1d")
    if plain.height and best["design"] != "random-days 1d":
        worst = float(plain["worst_rmse"][0])
        text += f", against {worst:.3g} for a fresh random draw every day ({1 - best['worst_rmse'] / worst:.0%} less)"
    return text + "."
