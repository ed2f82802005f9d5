"""Direct and spillover effects by inverse-probability weighting on the design's own exposures.

Exposure mapping
----------------
On each analysed product-day (``i``, ``t``): the own arm ``Z_it`` and whether ``i`` is
*exposed*, ``E_it = S_it / W_i > threshold``, where ``W_i`` is the total weight of the
substitute edges into ``i`` (``src -> i``, positive weights only: a complement is not a
substitute) and ``S_it`` the part of it whose ``src`` is treated on ``t``. Four exposure
conditions follow: neither (0, 0), spillover (0, 1), direct (1, 0), total (1, 1).

Exposure probabilities
----------------------
Under pricelab's designs every randomisation unit (product, or cluster with ``--clusters``)
is treated independently with the same probability ``q_t`` on a date (``treat_share``; its
complement in the odd phases of a crossover), and products outside their window (triggered
designs) or outside the assignment are untreated. With the default threshold 0 the
probabilities are exact: with ``K_it`` the number of *other* units holding an in-substitute of
``i`` that is in the experiment on ``t``, and ``own_it`` whether one such substitute shares
``i``'s own unit::

    P(neither)   = (1 - q)^(K + 1)
    P(spillover) = (1 - q) (1 - (1 - q)^K)
    P(direct)    = q (1 - q)^K   if not own, else 0
    P(total)     = q - P(direct)

A balanced switchback treats an exact number of units in every block, so its units are not
independent and these formulas do not hold: its probabilities are always replayed.

A positive threshold has no closed form; the probabilities are then estimated by replaying
the design's randomisation with ``replays`` fresh salts (the same hash draws ``assign`` makes,
computed for all units at once), counting the realised assignment as one more replay so an
observed condition never gets probability 0.

Estimates
---------
For each contrast (direct, spillover, total; each against neither) the cells that can be in
both compared conditions (both probabilities above 0) are kept; a product none of whose
cells can is *left out* and reported. Hajek (self-normalised) estimates of the mean outcome
in each condition, each cell weighted by 1 / P(its condition), are differenced. The outcome
is the detrended residual of ``hpte`` (observed minus the product's predicted untreated
outcome, common date shocks removed), so the estimate is per product per day, in outcome
units. By default these are hpte's robust residuals (see :mod:`pricelab_cli.hpte.robust`):
winsorised at each product's robust scale, stock-out days left out, and products screened
for extreme history volatility left out (reported as a warning). ``clip`` (optional) raises probabilities below it to it before weighting, bounding
every weight by ``1 / clip``.

Standard errors come from a bootstrap over randomisation units (products, or clusters), all
days of a unit resampled together: ``se`` is the standard deviation of the bootstrap
estimates, the 95% interval ``estimate +- 1.96 se`` and the p-value two-sided normal. The
bootstrap treats units as independent; products that share substitutes are not, so the
standard error is slightly optimistic when spillovers are strong (see the coverage study in
``tests/core/test_ipw.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import warnings
from collections.abc import Callable

import numpy as np
import polars as pl
from scipy import sparse, stats

from pricelab_cli.assign import uniform_draws, unit_keys
from pricelab_cli.balanced import balanced_schedule
from pricelab_cli.design import Design
from pricelab_cli.errors import ColumnTypeError, DataError, EmptyTableError, PricelabWarning, UsageError
from pricelab_cli.ids import row_positions
from pricelab_cli.tables import (
    align_id_types,
    assignment_flags,
    check_columns,
    check_numeric,
    check_unique,
)

NEITHER, SPILLOVER, DIRECT, TOTAL = 0, 1, 2, 3
CONDITIONS = ("neither", "spillover", "direct", "total")
CONTRASTS = (("direct", DIRECT), ("spillover", SPILLOVER), ("total", TOTAL))
EFFECT_COLUMNS = ("effect", "estimate", "se", "ci_low", "ci_high", "p_value", "n")
PROBABILITY_COLUMNS = tuple(f"p_{c}" for c in CONDITIONS)
Z95 = float(stats.norm.ppf(0.975))
_EPOCH = dt.date(1970, 1, 1)
# Bootstrap draws are made this many at a time so the (draws x units) count matrix stays small.
_BOOTSTRAP_BATCH = 64
_REPLAY_BATCH = 32


@dataclasses.dataclass(frozen=True, eq=False)
class _Experiment:
    """The assignment as dense (product x date) arrays, with randomisation units."""

    ids: pl.Series  # products table order
    dates: np.ndarray  # day numbers of the assignment dates, increasing
    active: np.ndarray  # (n, D) product in the assignment on that date
    treated: np.ndarray  # (n, D)
    analysed: np.ndarray  # (n, D) active and not blackout
    unit: np.ndarray  # (n,) unit index, -1 for products outside the assignment
    unit_ids: pl.Series  # label hashed by assign for each unit
    unit_level: str  # "p" or "c"
    in_weights: sparse.csr_matrix  # W[i, j] = weight of substitute edge j -> i (> 0)


@dataclasses.dataclass(frozen=True, eq=False)
class ExposureProbabilities:
    """Exposure conditions and their probabilities for every analysed product-day.

    Attributes
    ----------
    cells : ``product_id``, ``date``, ``unit`` (randomisation unit index), ``treated``,
        ``exposed``, ``condition`` (0 neither, 1 spillover, 2 direct, 3 total) and
        ``p_neither``, ``p_spillover``, ``p_direct``, ``p_total``.
    method : ``"exact"`` or ``"replay"``.
    n_replays : replays used (0 when exact).
    design_mismatch : share of analysed cells whose arm differs from the design's own draw
        (0 when the assignment was made from this design).
    """

    cells: pl.DataFrame
    method: str
    n_replays: int
    design_mismatch: float


@dataclasses.dataclass(frozen=True, eq=False)
class IpwResult:
    """Output of ``ipw_effects``.

    Attributes
    ----------
    effects : one row per effect: ``effect`` (direct, spillover, total), ``estimate``,
        ``se``, ``ci_low``, ``ci_high``, ``p_value``, ``n`` (product-days in the two
        compared conditions).
    left_out : ``effect``, ``product_id``, ``reason``: products none of whose days can be
        in both compared conditions.
    exposure : the exposure probabilities behind the weights.
    n_units : randomisation units resampled by the bootstrap.
    """

    effects: pl.DataFrame
    left_out: pl.DataFrame
    exposure: ExposureProbabilities
    n_units: int


# --------------------------------------------------------------------------- inputs


def _experiment(
    assignment: pl.DataFrame,
    edges: pl.DataFrame,
    products: pl.DataFrame,
    clusters: pl.DataFrame | None,
) -> _Experiment:
    check_columns(products, ["product_id"], "products")
    check_unique(products, ["product_id"], "products")
    check_columns(assignment, ["product_id", "date", "treated"], "assignment")
    check_columns(edges, ["src", "dst", "weight"], "edges")
    if assignment.height == 0:
        raise EmptyTableError("assignment: the table has no rows.")
    if assignment.schema["date"] != pl.Date:
        raise ColumnTypeError(f"assignment: column 'date' must hold dates but has type {assignment.schema['date']}.")
    check_unique(assignment, ["product_id", "date"], "assignment")
    ids = products["product_id"]
    n = len(ids)
    row_product = row_positions(assignment["product_id"], ids)
    if (row_product < 0).any():
        missing = assignment["product_id"].filter(pl.Series(row_product < 0))
        raise DataError(
            f"assignment: {missing.n_unique()} product(s) are not in the products table, e.g. "
            f"{missing[0]!r}; pass the products table the assignment was made from."
        )
    flags = assignment_flags(assignment, "assignment")
    treated_row, blackout_row = (flags["treated"] == 1).to_numpy(), flags["blackout"].to_numpy()
    day = assignment["date"].to_physical().to_numpy().astype(np.int64)
    dates = np.unique(day)
    col = np.searchsorted(dates, day)
    shape = (n, len(dates))
    active = np.zeros(shape, dtype=bool)
    treated = np.zeros(shape, dtype=bool)
    analysed = np.zeros(shape, dtype=bool)
    active[row_product, col] = True
    treated[row_product, col] = treated_row
    analysed[row_product, col] = ~blackout_row

    unit, unit_ids, level = _units(assignment, ids, row_product, clusters)
    in_weights = substitute_weights(edges, ids, stacklevel=4)
    return _Experiment(ids, dates, active, treated, analysed, unit, unit_ids, level, in_weights)


def substitute_weights(edges: pl.DataFrame, ids: pl.Series, stacklevel: int = 3) -> sparse.csr_matrix:
    """The substitutes graph among ``ids`` as a matrix ``M[dst, src] = weight``: edges with a
    positive weight between two different products of ``ids`` (a complement is not a
    substitute); an edge naming another product is ignored, with a warning. Checks the
    edges' columns, types, weights and that each (src, dst) comes once (``DataError``)."""
    check_columns(edges, ["src", "dst", "weight"], "edges")
    if edges.height == 0:
        # A header-only file carries no types; give it the ones an edge list has.
        edges = edges.with_columns(pl.col("src", "dst").cast(ids.dtype), pl.col("weight").cast(pl.Float64))
    check_numeric(edges, ["weight"], "edges")
    weight = edges["weight"].cast(pl.Float64)
    if weight.null_count() or not weight.is_finite().all():
        raise DataError("edges: column 'weight' has missing or non-finite values.")
    check_unique(edges, ["src", "dst"], "edges")
    src, dst = row_positions(edges["src"], ids), row_positions(edges["dst"], ids)
    outside = (src < 0) | (dst < 0)
    if outside.any():
        warnings.warn(
            f"edges: {int(outside.sum())} edge(s) name a product that is not in the products table "
            "and are ignored (such a product is never treated).",
            PricelabWarning,
            stacklevel=stacklevel,
        )
    w = weight.to_numpy()
    negative = (w < 0) & ~outside
    if negative.any():
        warnings.warn(
            f"edges: {int(negative.sum())} edge(s) have a negative weight (complements) and do not "
            "count towards exposure, which is about substitutes.",
            PricelabWarning,
            stacklevel=stacklevel,
        )
    keep = ~outside & (w > 0) & (src != dst)
    n = len(ids)
    return sparse.csr_matrix((w[keep], (dst[keep], src[keep])), shape=(n, n))


def _units(
    assignment: pl.DataFrame, ids: pl.Series, row_product: np.ndarray, clusters: pl.DataFrame | None
) -> tuple[np.ndarray, pl.Series, str]:
    """Randomisation unit of each product: its cluster (from --clusters or the assignment), else itself."""
    n = len(ids)
    in_experiment = np.zeros(n, dtype=bool)
    in_experiment[row_product] = True
    if clusters is None and "cluster_id" not in assignment.columns:
        members = np.flatnonzero(in_experiment)
        unit = np.full(n, -1, dtype=np.int64)
        unit[members] = np.arange(len(members))
        return unit, ids.gather(members), "p"
    if clusters is not None:
        check_columns(clusters, ["product_id", "cluster_id"], "clusters")
        check_unique(clusters, ["product_id"], "clusters")
        pos = row_positions(clusters["product_id"], ids)
        label = clusters["cluster_id"].filter(pl.Series(pos >= 0))
        pos = pos[pos >= 0]
        source = "clusters"
    else:
        pairs = pl.DataFrame({"_pos": row_product, "cluster_id": assignment["cluster_id"]}).unique()
        if pairs["_pos"].is_duplicated().any():
            bad = pairs.filter(pl.col("_pos").is_duplicated())["_pos"][0]
            raise DataError(f"assignment: product {ids[int(bad)]!r} has more than one cluster_id.")
        pos, label = pairs["_pos"].to_numpy(), pairs["cluster_id"]
        source = "assignment"
    cluster_of = pl.Series("cluster_id", [None] * n, dtype=label.dtype).scatter(pos, label)
    lacking = np.flatnonzero(in_experiment & cluster_of.is_null().to_numpy())
    if len(lacking):
        raise DataError(
            f"{source}: {len(lacking)} assigned product(s) have no cluster, e.g. {ids[int(lacking[0])]!r}; "
            "every product of the assignment needs one."
        )
    members = np.flatnonzero(in_experiment)
    labels = cluster_of.gather(members)
    uniq = labels.unique(maintain_order=True)
    unit = np.full(n, -1, dtype=np.int64)
    unit[members] = row_positions(labels, uniq)
    return unit, uniq, "c"


# --------------------------------------------------------------------------- design


def _calendar(design: Design, dates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per date (days since 1970-01-01): period, draw period and whether arms are flipped, as
    ``assign`` drew them (``Design.calendar``; a triggered window's period is always 0)."""
    offsets = dates - (design.start - _EPOCH).days if design.start is not None else np.zeros(len(dates), np.int64)
    calendar = design.calendar(offsets)
    return calendar.period, calendar.draw_period, calendar.flipped


def _unit_keys(exp: _Experiment, salts: list[str]) -> np.ndarray:
    """(units x salts) hash keys of the randomisation units, as ``assign`` computes them."""
    # One vectorised hash pass per salt: the loop runs over salts, never over units.
    return np.stack([unit_keys(exp.unit_ids, salt, exp.unit_level) for salt in salts], axis=1)


def _unit_draws(keys: np.ndarray, design: Design, draw_period: int, flip: bool) -> np.ndarray:
    """Treated flags of every unit (rows) under every salt (columns) in one draw period."""
    return (uniform_draws(keys, np.int64(draw_period)) < design.treat_share) ^ flip


def _salt_draws(exp: _Experiment, design: Design, salts: list[str]) -> Callable[[int, bool], np.ndarray]:
    """``(draw_period, flip) -> (units x salts)`` treated flags, as ``assign`` draws them
    under each salt: independent hash draws, or a balanced switchback's schedule."""
    keys = _unit_keys(exp, salts)
    if design.kind != "balanced-switchback":
        return lambda period, flip: _unit_draws(keys, design, period, flip)
    # One schedule per salt (each is dealt over every unit at once).
    schedules = np.stack(
        [balanced_schedule(keys[:, j], salt, design.n_blocks, design.treat_share) for j, salt in enumerate(salts)],
        axis=2,
    )
    return lambda period, flip: schedules[:, period, :] ^ flip


def _replay_salts(seed: int, n: int) -> list[str]:
    return [hashlib.sha256(f"pricelab-ipw-replay:{seed}:{r}".encode()).hexdigest()[:16] for r in range(n)]


def _exposed(exp: _Experiment, treated: np.ndarray, threshold: float) -> np.ndarray:
    """Exposure of every product given treated flags (products x columns)."""
    total = np.asarray(exp.in_weights.sum(axis=1)).ravel()
    share_weight = exp.in_weights @ treated.astype(np.float64)
    # Strictly above the threshold share; the tiny slack absorbs rounding in the sums.
    return share_weight > (threshold * total + 1e-12 * total)[:, None]


def _exact_probs(exp: _Experiment, q: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(cells, 4) exact probabilities of each condition for threshold 0 (module docstring)."""
    n = exp.active.shape[0]
    w = exp.in_weights.tocoo()
    dst, src = w.row, w.col
    src_unit = exp.unit[src]
    ok = src_unit >= 0
    dst, src, src_unit = dst[ok], src[ok], src_unit[ok]
    n_units = max(len(exp.unit_ids), 1)
    # One "pair" per (product, unit holding some of its in-substitutes): a unit counts once
    # however many of the product's substitutes it holds.
    key = dst.astype(np.int64) * n_units + src_unit
    pair_key, pair_of_edge = np.unique(key, return_inverse=True)
    n_pairs = len(pair_key)
    pair_dst, pair_unit = pair_key // n_units, pair_key % n_units
    edge_to_pair = sparse.csr_matrix((np.ones(len(src)), (pair_of_edge.ravel(), src)), shape=(n_pairs, n))
    pair_active = ((edge_to_pair @ exp.active.astype(np.float32)) > 0).astype(np.float32)  # (pairs, D)
    own = pair_unit == exp.unit[pair_dst]
    to_dst_other = sparse.csr_matrix(
        (np.ones((~own).sum()), (pair_dst[~own], np.flatnonzero(~own))), shape=(n, n_pairs)
    )
    to_dst_own = sparse.csr_matrix((np.ones(own.sum()), (pair_dst[own], np.flatnonzero(own))), shape=(n, n_pairs))
    k_other = np.asarray(to_dst_other @ pair_active)[rows, cols]
    own_active = np.asarray(to_dst_own @ pair_active)[rows, cols] > 0
    qc = q[cols]
    none_other = (1.0 - qc) ** k_other
    probs = np.empty((len(rows), 4))
    probs[:, NEITHER] = (1.0 - qc) * none_other
    probs[:, SPILLOVER] = (1.0 - qc) * (1.0 - none_other)
    probs[:, DIRECT] = np.where(own_active, 0.0, qc * none_other)
    probs[:, TOTAL] = qc - probs[:, DIRECT]
    return probs


def _replay_probs(
    exp: _Experiment,
    design: Design,
    threshold: float,
    rows: np.ndarray,
    cols: np.ndarray,
    observed: np.ndarray,
    replays: int,
    seed: int,
    progress: Callable[[int], None] | None,
) -> np.ndarray:
    """(cells, 4) probabilities estimated from ``replays`` fresh draws of the design.

    Dates that share a draw period and the same set of active products have the same
    exposure distribution, so each such group of dates is replayed once.
    """
    n = exp.active.shape[0]
    _, draw_period, flip = _calendar(design, exp.dates)
    signature = np.concatenate(
        [np.packbits(exp.active, axis=0).T, draw_period[:, None].astype(np.uint8), flip[:, None].astype(np.uint8)],
        axis=1,
    )
    _, group_of_date = np.unique(signature, axis=0, return_inverse=True)
    group_of_cell = group_of_date.ravel()[cols]
    groups = [
        (int(np.flatnonzero(group_of_date.ravel() == g)[0]), np.flatnonzero(group_of_cell == g))
        for g in np.unique(group_of_date)
    ]
    members = exp.unit >= 0
    counts = np.zeros((len(rows), 4))
    salts = _replay_salts(seed, replays)
    for start in range(0, replays, _REPLAY_BATCH):
        batch = salts[start : start + _REPLAY_BATCH]
        draw = _salt_draws(exp, design, batch)
        for t, cells in groups:
            draws = draw(int(draw_period[t]), bool(flip[t]))
            z = np.zeros((n, len(batch)), dtype=bool)
            z[members] = draws[exp.unit[members]] & exp.active[members, t][:, None]
            cond = 2 * z + _exposed(exp, z, threshold)
            tally = np.stack([(cond == c).sum(axis=1) for c in range(4)], axis=1)
            counts[cells] += tally[rows[cells]]
        if progress is not None:
            progress(len(batch))
    # The realised assignment counts as one more draw: an observed condition never gets 0.
    counts[np.arange(len(rows)), observed] += 1
    return counts / (replays + 1)


def exposure_probs(
    assignment: pl.DataFrame,
    edges: pl.DataFrame,
    design: Design,
    products: pl.DataFrame,
    *,
    clusters: pl.DataFrame | None = None,
    exposure_threshold: float = 0.0,
    replays: int = 200,
    method: str = "auto",
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ExposureProbabilities:
    """Observed exposure condition and its design probabilities for each analysed product-day.

    Parameters
    ----------
    assignment : ``product_id``, ``date``, ``treated`` [, ``blackout``, ``cluster_id``],
        as written by ``assign`` from ``design``.
    edges : substitutes ``src``, ``dst``, ``weight``; ``dst`` is exposed through ``src``.
    design : the design the assignment was drawn from (its kind, dates and treat share).
    products : ``product_id`` of the catalog (substitutes outside the assignment count
        towards ``W_i`` but are never treated).
    clusters : ``product_id``, ``cluster_id`` when the assignment randomised clusters
        (otherwise read from the assignment's ``cluster_id`` if it has one).
    exposure_threshold : exposed when the treated share of incoming substitute weight
        exceeds this, in [0, 1).
    replays, method, seed : ``method="auto"`` is exact for threshold 0 and replays
        otherwise; ``"replay"`` always replays (``replays`` fresh salts derived from ``seed``).
    """
    if not 0.0 <= exposure_threshold < 1.0:
        raise UsageError(f"`exposure_threshold` {exposure_threshold} must lie in [0, 1).")
    if method not in ("auto", "replay"):
        raise UsageError(f"method {method!r} is not one of auto, replay.")
    if replays < 1:
        raise UsageError(f"`replays` {replays} must be at least 1.")
    exp = _experiment(assignment, edges, products, clusters)
    _, draw_period, flip = _calendar(design, exp.dates)
    q = np.where(flip, 1.0 - design.treat_share, design.treat_share)

    rows, cols = np.nonzero(exp.analysed)
    exposed = _exposed(exp, exp.treated, exposure_threshold)[rows, cols]
    treated = exp.treated[rows, cols]
    observed = 2 * treated.astype(np.int64) + exposed
    mismatch = _design_mismatch(exp, design, draw_period, flip)
    if exposure_threshold == 0.0 and method == "auto" and design.kind != "balanced-switchback":
        probs, how, n_replays = _exact_probs(exp, q, rows, cols), "exact", 0
    else:
        probs = _replay_probs(exp, design, exposure_threshold, rows, cols, observed, replays, seed, progress)
        how, n_replays = "replay", replays
    cells = pl.DataFrame(
        {
            "product_id": exp.ids.gather(rows),
            "date": pl.Series(exp.dates[cols].astype(np.int32)).cast(pl.Date),
            "unit": exp.unit[rows],
            "treated": treated.astype(np.int8),
            "exposed": exposed,
            "condition": observed.astype(np.int8),
            **{name: probs[:, c] for c, name in enumerate(PROBABILITY_COLUMNS)},
        }
    )
    return ExposureProbabilities(cells, how, n_replays, mismatch)


def _design_mismatch(exp: _Experiment, design: Design, draw_period: np.ndarray, flip: np.ndarray) -> float:
    """Share of analysed cells whose arm differs from the design's own hash draw."""
    members = exp.unit >= 0
    draw = _salt_draws(exp, design, [design.salt])
    differ = 0
    for p in np.unique(np.stack([draw_period, flip.astype(np.int64)]), axis=1).T:
        dates = np.flatnonzero((draw_period == p[0]) & (flip == bool(p[1])))
        draws = draw(int(p[0]), bool(p[1]))[:, 0]
        expected = np.zeros(len(exp.ids), dtype=bool)
        expected[members] = draws[exp.unit[members]]
        cells = exp.analysed[:, dates]
        differ += int((cells & (exp.treated[:, dates] != expected[:, None])).sum())
    total = int(exp.analysed.sum())
    return differ / total if total else 0.0


# --------------------------------------------------------------------------- estimates


def hajek_estimates(
    outcome: np.ndarray,
    condition: np.ndarray,
    probs: np.ndarray,
    unit: np.ndarray,
    *,
    bootstrap: int = 500,
    clip: float | None = None,
    seed: int = 0,
) -> tuple[pl.DataFrame, np.ndarray]:
    """Hajek estimates of each contrast against ``neither``, with unit-bootstrap errors.

    Parameters
    ----------
    outcome : (cells,) outcome of each product-day.
    condition : (cells,) observed condition 0..3 (neither, spillover, direct, total).
    probs : (cells, 4) probability of each condition under the design.
    unit : (cells,) randomisation unit index; the bootstrap resamples units.
    bootstrap : number of bootstrap draws (at least 2).
    clip : probabilities below ``clip`` are raised to it before weighting.

    Returns
    -------
    effects : ``effect``, ``estimate``, ``se``, ``ci_low``, ``ci_high``, ``p_value``, ``n``.
    eligible : (cells, 3) whether each cell is in each contrast (both probabilities > 0).
    """
    if bootstrap < 2:
        raise UsageError(f"`bootstrap` {bootstrap} must be at least 2.")
    if clip is not None and not 0.0 < clip < 1.0:
        raise UsageError(f"`clip` {clip} must lie strictly between 0 and 1.")
    unit = np.unique(unit, return_inverse=True)[1].ravel()
    n_units = int(unit.max()) + 1 if len(unit) else 0
    p_obs = np.take_along_axis(probs, condition[:, None].astype(np.int64), 1)[:, 0]
    if clip is not None:
        p_obs = np.maximum(p_obs, clip)
    with np.errstate(divide="ignore"):
        weight = np.where(p_obs > 0, 1.0 / p_obs, 0.0)
    sums, eligible, counts = _unit_sums(outcome, weight, condition, probs, unit, n_units)
    boot = _bootstrap_sums(sums, n_units, bootstrap, seed)
    return _effects_table(sums.sum(axis=0), boot, counts), eligible


def _unit_sums(
    outcome: np.ndarray, weight: np.ndarray, condition: np.ndarray, probs: np.ndarray, unit: np.ndarray, n_units: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Per unit and contrast: the weighted outcome sums and weight sums of the contrast's
    condition and of ``neither`` (4 columns per contrast); each cell's eligibility for each
    contrast; and each contrast's cell counts in its two conditions."""
    weighted = weight * outcome
    eligible = np.zeros((len(weight), len(CONTRASTS)), dtype=bool)
    sums = np.zeros((n_units, 4 * len(CONTRASTS)))
    counts = []
    for k, (_, cond) in enumerate(CONTRASTS):
        ok = (probs[:, cond] > 0) & (probs[:, NEITHER] > 0)
        eligible[:, k] = ok
        in_k, in_0 = ok & (condition == cond), ok & (condition == NEITHER)
        counts.append((int(in_k.sum()), int(in_0.sum())))
        # Per unit: weighted outcome sums and weight sums in each compared condition, so a
        # bootstrap draw is a matrix product of unit multiplicities with these sums.
        for j, (mask, wy) in enumerate(((in_k, weighted), (in_k, weight), (in_0, weighted), (in_0, weight))):
            sums[:, 4 * k + j] = np.bincount(unit, weights=np.where(mask, wy, 0.0), minlength=n_units)
    return sums, eligible, counts


def _bootstrap_sums(sums: np.ndarray, n_units: int, bootstrap: int, seed: int) -> np.ndarray:
    """(bootstrap, columns) sums of ``sums`` over units resampled with replacement."""
    rng = np.random.default_rng(seed)
    boot = np.empty((bootstrap, sums.shape[1]))
    for start in range(0, bootstrap, _BOOTSTRAP_BATCH):
        size = min(_BOOTSTRAP_BATCH, bootstrap - start)
        multiplicity = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=size)
        boot[start : start + size] = multiplicity @ sums
    return boot


def _effects_table(total: np.ndarray, boot: np.ndarray, counts: list[tuple[int, int]]) -> pl.DataFrame:
    """The Hajek estimate of each contrast from the summed columns, with its bootstrap error."""
    rows: list[tuple[str, float | None, float | None, float | None, float | None, float | None, int]] = []
    for k, (name, _) in enumerate(CONTRASTS):
        n_k, n_0 = counts[k]
        if n_k == 0 or n_0 == 0:
            rows.append((name, None, None, None, None, None, n_k + n_0))
            continue
        t = total[4 * k : 4 * k + 4]
        estimate = t[0] / t[1] - t[2] / t[3]
        b = boot[:, 4 * k : 4 * k + 4]
        with np.errstate(divide="ignore", invalid="ignore"):
            boot_est = b[:, 0] / b[:, 1] - b[:, 2] / b[:, 3]
        # A resample without any cell of a condition has no estimate; it is skipped.
        boot_est = boot_est[np.isfinite(boot_est)]
        se = float(np.std(boot_est, ddof=1)) if len(boot_est) > 1 else float("nan")
        z = estimate / se if se > 0 else float("nan")
        p_value = float(2.0 * stats.norm.sf(abs(z))) if np.isfinite(z) else None
        rows.append((name, float(estimate), se, estimate - Z95 * se, estimate + Z95 * se, p_value, n_k + n_0))
    return pl.DataFrame(
        rows,
        schema={
            "effect": pl.String,
            "estimate": pl.Float64,
            "se": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
            "p_value": pl.Float64,
            "n": pl.Int64,
        },
        orient="row",
    ).with_columns(pl.col(pl.Float64).fill_nan(None))


def _left_out(cells: pl.DataFrame, eligible: np.ndarray) -> pl.DataFrame:
    """Products none of whose cells can be in a contrast, with the reason."""
    frames = []
    reasons = {
        "direct": "a substitute shares its randomisation unit, so it is never treated without being exposed",
        "spillover": "no substitute outside its randomisation unit is in the experiment, so it is never exposed while untreated",
        "total": "no substitute of it is in the experiment, so it is never exposed",
    }
    for k, (name, _) in enumerate(CONTRASTS):
        per_product = (
            cells.select("product_id")
            .with_columns(pl.Series("_ok", eligible[:, k]))
            .group_by("product_id", maintain_order=True)
            .agg(pl.col("_ok").any())
            .filter(~pl.col("_ok"))
        )
        if per_product.height:
            frames.append(
                per_product.select(pl.lit(name).alias("effect"), "product_id", pl.lit(reasons[name]).alias("reason"))
            )
    if not frames:
        return pl.DataFrame(schema={"effect": pl.String, "product_id": cells.schema["product_id"], "reason": pl.String})
    return pl.concat(frames)


def ipw_effects(
    sales: pl.DataFrame | pl.LazyFrame,
    assignment: pl.DataFrame,
    edges: pl.DataFrame,
    design: Design,
    products: pl.DataFrame,
    *,
    clusters: pl.DataFrame | None = None,
    outcome: str = "units",
    exposure_threshold: float = 0.0,
    replays: int = 200,
    bootstrap: int = 500,
    clip: float | None = None,
    method: str = "auto",
    outlier_rule: str = "robust",
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    engine=None,
) -> IpwResult:
    """Direct, spillover and total effects of an experiment by inverse-probability weighting.

    See the module docstring for the exposure mapping, the probabilities and the variance.
    ``sales`` needs pre-experiment history for the detrending (``hpte``'s step 1);
    ``progress(n)`` is called as replays (or, when exact, all at once) are done.
    ``outlier_rule`` chooses hpte's residuals: ``robust`` (the default: stock-out days and
    products screened for wild history left out, residuals winsorised) or ``quantile``
    (least-squares residuals, every product kept). ``engine`` runs the detrending's
    partition tasks (every core of this machine by default; the result does not depend on it).
    """
    from pricelab_cli.hpte.bootstrap import check_bootstrap
    from pricelab_cli.hpte.outliers import OUTLIER_RULES

    if outlier_rule not in OUTLIER_RULES:
        raise UsageError(f"`outlier_rule` {outlier_rule!r} is not one of: {', '.join(OUTLIER_RULES)}.")
    check_bootstrap(bootstrap, "`bootstrap`")
    if bootstrap == 0:
        raise UsageError("`bootstrap` 0: ipw's standard errors come from the bootstrap; give at least 20 draws.")

    exposure = exposure_probs(
        assignment,
        edges,
        design,
        products,
        clusters=clusters,
        exposure_threshold=exposure_threshold,
        replays=replays,
        method=method,
        seed=seed,
        progress=progress,
    )
    if exposure.design_mismatch > 0:
        warnings.warn(
            f"{exposure.design_mismatch:.1%} of the assignment's analysed product-days differ from "
            f"the design's own draw (salt {design.salt!r}); the exposure probabilities assume the "
            "assignment was made from this design and these clusters.",
            PricelabWarning,
            stacklevel=2,
        )
    cells = _outcome_cells(exposure.cells, sales, assignment, outcome, outlier_rule, engine)
    effects, eligible = hajek_estimates(
        cells["_y"].to_numpy(),
        cells["condition"].to_numpy(),
        cells.select(PROBABILITY_COLUMNS).to_numpy(),
        cells["unit"].to_numpy(),
        bootstrap=bootstrap,
        clip=clip,
        seed=seed,
    )
    return IpwResult(
        effects=effects,
        left_out=_left_out(cells, eligible),
        exposure=exposure,
        n_units=int(cells["unit"].n_unique()),
    )


def _outcome_cells(
    cells: pl.DataFrame,
    sales: pl.DataFrame | pl.LazyFrame,
    assignment: pl.DataFrame,
    outcome: str,
    outlier_rule: str,
    engine,
) -> pl.DataFrame:
    """The exposure cells that have a detrended outcome (hpte's residual), in column ``_y``."""
    from pricelab_cli.hpte.detrend import detrended_outcomes

    kept_columns = [c for c in ("blackout", "cluster_id") if c in assignment.columns]
    residuals = detrended_outcomes(
        sales,
        assignment.select("product_id", "date", "treated", *kept_columns),
        outcome,
        robust=outlier_rule == "robust",
        engine=engine,
    )
    cells, residuals = align_id_types(cells, residuals)
    cells = cells.join(
        residuals.select("product_id", "date", pl.col("residual").alias("_y")),
        on=["product_id", "date"],
        how="inner",
        maintain_order="left",
    )
    if cells.height == 0:
        raise EmptyTableError(
            "sales: no analysed product-day of the assignment has a detrended outcome; the sales "
            "table needs the experiment dates and each product's history before them."
        )
    return cells
