"""The substitutes graph from price and demand history: cross-price elasticities, FDR cut.

Model
-----
For product ``i`` on date ``t`` (a row of the sales table)::

    y_it = log(1 + units_it),  x_it = log(price_it)
    y_it = a_i + d_t + sum_{j in block} beta_ji x_jt + e_it

``a_i`` (product) and ``d_t`` (date, shared by every product of the sales table, candidates
or not) are removed by the two-way within transformation, computed on the observed cells by
alternating projections (exact after one pass on a balanced panel). ``beta_ii`` is the
own-price elasticity, kept in the regression as a control; ``beta_ji`` (``j != i``) is the
cross-price elasticity of the demand of ``dst = i`` to the price of ``src = j``: positive for
substitutes.

Choices the contract leaves open
--------------------------------
- **Zero sales.** ``log(1 + units)`` keeps zero-sales days in the sample. For products that
  sell a handful of units a day the elasticities it measures are smaller in size than those
  of ``log(units)``, and a stray zero on a product that usually sells many units is a large
  outlier; the test (is the effect zero?) stays valid.
- **Missing days.** Dates are the distinct dates of the sales table. A product without a row
  on a date (or whose outcome or price is null there) is missing on that date: its demand
  equation leaves the date out, and as a regressor its demeaned price counts as 0 (its
  expected value) on that date.
- **Regression.** Products are tested in blocks: the ``group_col`` groups, or the connected
  components of a ``pairs`` file. Each ``dst`` is regressed jointly on the prices of every
  product of its block (own price included), so coordinated price changes of two candidate
  sources are not credited to the wrong one. All equations of a block share the regressors,
  so one ``k x k`` solve gives every coefficient of the block. A block falls back, with a
  warning, to one regression per pair on the ``src`` and ``dst`` prices (own price still
  controlled) when its regressors would use half the days or more (``k + 1 >= n_days / 2``)
  or when its prices are collinear (two products always priced alike, or a block that is the
  whole sales table, whose date-demeaned prices sum to zero).
- **Standard errors.** Prices (promotions, price tests) are taken as exogenous, so the
  variance of ``sum_t a_t e_t`` (``a`` a row of ``(X'X)^-1 X'``) is
  ``sum_{|l| <= L} (sum_t a_t a_{t-l}) gamma(l)`` with ``gamma`` the autocovariance of the
  demand residuals up to ``hac_lags`` = 14 days: weekly patterns and trends leave residuals
  serially correlated, promotions last days, and standard errors that ignore both are too
  small. Each ``gamma(l)`` is corrected for the fit (see ``_residual_autocov``); plain
  Newey-West on ``a_t e_t`` shrinks as the window grows because fitted residuals are
  orthogonal to the prices, and was measured to under-cover. p-values are two-sided from
  Student's t with ``n - k - 1`` degrees of freedom.
- **Untestable pairs** are reported with a reason and never enter the FDR: no sales history,
  a ``src`` price that never changes (log price constant over its days), prices collinear
  on the days ``dst`` sold, or fewer than ``MIN_DF`` residual degrees of freedom.
- **FDR.** Benjamini-Hochberg over every tested pair, on the two-sided p-values; then
  substitutes (positive weight) are kept, complements too with ``keep_complements``.
- **Scale.** The date effects are shared by the whole table, so the demeaned panel is held
  as two dates x products float matrices (built a slice of rows at a time and demeaned in
  place); the regressions then run block by block, each keeping only its pairs' results.
  Blocks run with one BLAS thread: their matrices are too small to gain from more.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import numpy as np
import polars as pl
from scipy import linalg, stats
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from pricelab_cli.engine import default_engine, resolve
from pricelab_cli.errors import EmptyTableError, PricelabWarning, UsageError
from pricelab_cli.spillover.panel import (
    _Candidates,
    _group_candidates,
    _pair_candidates,
    _Panel,
    _panel,
    two_way_demean,  # noqa: F401 - part of this module's interface
)

HAC_LAGS = 14
MIN_DF = 10
METHODS = ("auto", "pairwise")
EDGE_COLUMNS = ("src", "dst", "weight", "t_stat", "p_value")
PAIR_COLUMNS = ("src", "dst", "weight", "se", "t_stat", "p_value", "q_value", "n_days", "status")
# Tasks per engine worker the blocks are grouped into (a few each, so loads balance and
# progress moves).
BLOCK_TASKS = 8
# Bounds the (pairs x days) work arrays to about 100 MB each.
_CHUNK_CELLS = 12_000_000

# How a block was estimated.
JOINT, NOTHING, PAIRWISE_REQUESTED, PAIRWISE_FEW_DAYS, PAIRWISE_COLLINEAR = range(5)
TESTED = 0
_STATUS = {
    TESTED: "tested",
    1: "src has no sales history",
    2: "dst has no sales history",
    3: "src price never changes",
    4: "prices collinear on the days dst sold",
    5: "too few days with sales for dst",
    6: "src and dst prices collinear",
}
NO_SRC_HISTORY, NO_DST_HISTORY, CONSTANT_PRICE, SINGULAR, TOO_FEW_DAYS, PAIR_COLLINEAR = 1, 2, 3, 4, 5, 6


@dataclasses.dataclass(frozen=True, eq=False)
class SpilloverGraph:
    """The estimated substitutes graph and every pair behind it.

    Attributes
    ----------
    edges : kept edges ``src``, ``dst``, ``weight`` (cross-price elasticity), ``t_stat``,
        ``p_value``; products in the order of the products table (of first appearance in
        ``pairs``).
    pairs : every candidate pair, tested or not: ``weight``, ``se``, ``t_stat``, ``p_value``,
        ``q_value`` (Benjamini-Hochberg), ``n_days`` and ``status`` (``"tested"`` or why not).
    fdr : the false-discovery rate of the cut.
    n_pairwise_blocks : blocks estimated pair by pair because they had too few days for the
        joint regression.
    """

    edges: pl.DataFrame
    pairs: pl.DataFrame
    fdr: float
    n_blocks: int
    n_pairwise_blocks: int

    @property
    def n_tested(self) -> int:
        """Pairs with an estimate (they enter the FDR)."""
        return int((self.pairs["status"] == _STATUS[TESTED]).sum())

    @property
    def untestable(self) -> pl.DataFrame:
        """``status``, ``n_pairs``, ``example`` (``src -> dst``) for each reason a pair was not tested."""
        return (
            self.pairs.filter(pl.col("status") != _STATUS[TESTED])
            .group_by("status", maintain_order=True)
            .agg(
                pl.len().alias("n_pairs"),
                (pl.col("src").first().cast(pl.String) + " -> " + pl.col("dst").first().cast(pl.String)).alias(
                    "example"
                ),
            )
        )


# --------------------------------------------------------------------------- statistics


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN entries stay NaN and do not count.

    A hypothesis is rejected at false-discovery rate ``alpha`` when its q-value is at most
    ``alpha``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    if m == 0:
        return q
    # Tied p-values end with the same q whatever their order, so any sort will do.
    order = finite[np.argsort(p[finite])]
    scaled = p[order] * m / np.arange(1, m + 1)
    # Step-up: each q is the smallest scaled p at or above its rank.
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


def _lag_sums(u: np.ndarray, v: np.ndarray, lags: int) -> np.ndarray:
    """``sum_t u[..., t] * v[..., t - l]`` for l = 0..lags, stacked on a new last axis."""
    n_time = u.shape[-1]
    out = np.zeros((*np.broadcast_shapes(u.shape[:-1], v.shape[:-1]), lags + 1))
    for lag in range(min(lags, n_time - 1) + 1):
        out[..., lag] = np.einsum("...t,...t->...", u[..., lag:], v[..., : n_time - lag])
    return out


def _residual_autocov(
    resid: np.ndarray, hat_lag: np.ndarray, n_obs: np.ndarray, n_params: int | np.ndarray
) -> np.ndarray:
    """Autocovariances of the errors at lags 0..L, corrected for the fit (last axis = lag).

    Residuals of a least-squares fit are the errors times the annihilator ``I - H`` (and
    minus their product mean): at a lag where the prices are autocorrelated, fitted
    residuals look negatively autocorrelated even when the errors are not. Adding back
    ``sigma^2 (h_l + (n - l) / n)``, with ``h_l = sum_t H[t, t - l]``, makes each
    autocovariance unbiased for uncorrelated errors, so a long lag window no longer shrinks
    the standard error.
    """
    lags = hat_lag.shape[-1] - 1
    raw = _lag_sums(resid, resid, lags)
    n = np.asarray(n_obs, dtype=np.float64)[..., None]
    df = n - np.asarray(n_params, dtype=np.float64)[..., None] - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma2 = raw[..., :1] / df
        return (raw + sigma2 * (hat_lag + (n - np.arange(lags + 1)) / n)) / n


def _lag_weights(lags: int) -> np.ndarray:
    """Both-sided weights of the lag terms (a truncated window: lag l counts twice for l > 0)."""
    return np.concatenate([[1.0], np.full(lags, 2.0)])


# --------------------------------------------------------------------------- estimation


@dataclasses.dataclass
class _Estimates:
    weight: np.ndarray
    var: np.ndarray
    df: np.ndarray
    n_days: np.ndarray
    status: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _Estimates:
        return cls(
            weight=np.full(n, np.nan),
            var=np.full(n, np.nan),
            df=np.full(n, np.nan),
            n_days=np.zeros(n, dtype=np.int64),
            status=np.zeros(n, dtype=np.int8),
        )


def _aliased_columns(x: np.ndarray) -> np.ndarray:
    """Boolean mask of columns that are (numerically) linear combinations of the others.

    Pivoted Cholesky of the correlation matrix of the columns: the pivots past the rank are
    the aliased columns. (A pivoted QR of the data gives the same answer far more slowly.)
    """
    k = x.shape[1]
    aliased = np.zeros(k, dtype=bool)
    if k == 0:
        return aliased
    gram = x.T @ x
    scale = np.sqrt(np.diag(gram))
    aliased[scale <= 0] = True
    keep = np.flatnonzero(~aliased)
    if len(keep):
        corr = gram[np.ix_(keep, keep)] / np.outer(scale[keep], scale[keep])
        _, piv, rank, _ = lapack.dpstrf(corr, tol=1e-10)
        aliased[keep[piv[rank:] - 1]] = True
    return aliased


def _joint_block(
    x: np.ndarray, y: np.ndarray, m: np.ndarray, lags: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Regress every column of ``y`` on all columns of ``x`` over its observed days ``m``.

    Returns coefficients and their variances (regressors x equations), residual degrees
    of freedom per equation and a per-equation flag of a singular design.
    """
    n_days, k = x.shape
    n_eq = y.shape[1]
    coef = np.full((k, n_eq), np.nan)
    var = np.full((k, n_eq), np.nan)
    n_obs = m.sum(axis=0)
    singular = np.zeros(n_eq, dtype=bool)
    weights = _lag_weights(lags)
    full = np.flatnonzero(n_obs == n_days)
    if len(full):
        # Equations observed every day share X'X: one solve serves all of them.
        a = linalg.solve(x.T @ x, x.T, assume_a="pos")  # (k, T): coefficient = a @ y
        b = a @ y[:, full]
        resid = (y[:, full] - x @ b).T  # (q, T)
        hat_lag = _lag_sums(x.T, a, lags).sum(axis=0)  # sum_t H[t, t - l]
        gamma = _residual_autocov(resid, hat_lag, np.full(len(full), n_days), k)
        coef[:, full] = b
        var[:, full] = (_lag_sums(a, a, lags) * weights) @ gamma.T
    partial = np.flatnonzero((n_obs < n_days) & (n_obs > k + 1))
    chunk = max(1, _CHUNK_CELLS // max(1, k * n_days))
    for start in range(0, len(partial), chunk):
        eq = partial[start : start + chunk]
        mask = m[:, eq].T.astype(np.float64)  # (c, T)
        gram = np.einsum("ct,tj,tk->cjk", mask, x, x, optimize=True)
        eig = np.linalg.eigvalsh(gram)
        bad = eig[:, 0] <= 1e-10 * np.maximum(eig[:, -1], 1e-300)
        gram[bad] = np.eye(k)
        xm = x.T[None, :, :] * mask[:, None, :]  # (c, k, T)
        a = np.linalg.solve(gram, xm)
        yc = y[:, eq].T  # (c, T), already 0 where unobserved
        b = np.einsum("ckt,ct->ck", a, yc)
        resid = (yc - b @ x.T) * mask
        hat_lag = _lag_sums(xm, a, lags).sum(axis=1)  # (c, L+1)
        gamma = _residual_autocov(resid, hat_lag, n_obs[eq], k)
        v = np.einsum("ckl,cl->ck", _lag_sums(a, a, lags) * weights, gamma)
        coef[:, eq] = b.T
        var[:, eq] = v.T
        singular[eq[bad]] = True
    return coef, var, n_obs - k - 1, singular


def _pairwise(
    xs: np.ndarray, xo: np.ndarray, y: np.ndarray, m: np.ndarray, lags: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pair (rows): regress ``y`` on the src price ``xs`` and own price ``xo`` (may be 0).

    Two regressors make the normal equations 2 x 2, solved in closed form for all rows at
    once. Returns the src coefficient, its variance, degrees of freedom and a flag for
    collinear prices.
    """
    xs, xo = xs * m, xo * m
    g_ss, g_oo, g_so = (xs * xs).sum(1), (xo * xo).sum(1), (xs * xo).sum(1)
    own = g_oo > 0
    # Without own-price variation the own column is dropped: a unit diagonal stands in so
    # the same formulas give the one-regressor fit.
    g_oo_eff = np.where(own, g_oo, 1.0)
    det = g_oo_eff * g_ss - g_so**2
    collinear = det <= 1e-10 * g_oo_eff * np.maximum(g_ss, 1e-300)
    det = np.where(collinear, 1.0, det)[:, None]
    # Rows of (X'X)^-1 X': the src and own coefficients as weighted sums of demand.
    a_s = (g_oo_eff[:, None] * xs - g_so[:, None] * xo) / det
    a_o = (g_ss[:, None] * xo - g_so[:, None] * xs) / det
    b_s, b_o = (a_s * y).sum(1), (a_o * y).sum(1)
    resid = (y - b_o[:, None] * xo - b_s[:, None] * xs) * m
    hat_lag = _lag_sums(xs, a_s, lags) + _lag_sums(xo, a_o, lags)
    n_obs = m.sum(1)
    n_params = np.where(own, 2, 1)
    gamma = _residual_autocov(resid, hat_lag, n_obs, n_params)
    var = (_lag_sums(a_s, a_s, lags) * _lag_weights(lags) * gamma).sum(-1)
    return b_s, var, n_obs - n_params - 1, collinear


def cross_price_elasticities(
    sales: pl.DataFrame,
    products: pl.DataFrame | None = None,
    *,
    group_col: str = "category",
    pairs: pl.DataFrame | None = None,
    outcome: str = "units",
    price_col: str = "price",
    hac_lags: int = HAC_LAGS,
    method: str = "auto",
    progress: Callable[[int], None] | None = None,
    engine=None,
) -> tuple[pl.DataFrame, int, int]:
    """Estimate the cross-price elasticity of every candidate pair (see the module docstring).

    Candidates are all ordered pairs of products sharing a ``group_col`` value of
    ``products``, or the rows ``src``, ``dst`` of ``pairs`` when given. ``method="auto"``
    regresses each demand on every price of its block unless the block has too many products
    for its days or collinear prices (then pair by pair); ``"pairwise"`` always pair by pair.
    ``progress(n)`` is called as blocks with ``n`` demand equations are done. ``engine``
    runs the blocks, grouped into tasks (this process by default); each block's regressions
    are the same wherever they run.

    Returns
    -------
    pairs : ``src``, ``dst``, ``weight``, ``se``, ``t_stat``, ``p_value``, ``n_days``,
        ``status``; one row per candidate pair.
    n_blocks, n_pairwise_blocks : blocks, and blocks that fell back to pairwise regressions.
    """
    if hac_lags < 0:
        raise UsageError(f"hac_lags must be 0 or more; got {hac_lags}.")
    if method not in METHODS:
        raise UsageError(f"method {method!r} is not one of {', '.join(METHODS)}.")
    if pairs is None:
        if products is None:
            raise UsageError("give products with a group column, or a pairs table, to say which pairs to test.")
        cand = _group_candidates(products, group_col)
    else:
        cand = _pair_candidates(pairs, products)
    if len(cand.src) == 0:
        raise EmptyTableError(
            f"products: no {group_col!r} value is shared by two products, so there is no pair to test."
        )
    panel = _panel(sales, cand.ids, outcome, price_col, "sales")
    if panel.n_missing_values:
        warnings.warn(
            f"sales: {panel.n_missing_values} row(s) have no {outcome!r} or {price_col!r} value; "
            "those product-days count as missing.",
            PricelabWarning,
            stacklevel=2,
        )
    n_days_total = panel.observed.shape[0]
    inputs = _BlockInputs(panel, cand.src, cand.dst, cand.bounds, panel.n_obs > 0, hac_lags, method)
    est, how = _run_blocks(cand, inputs, progress, engine)
    del panel, inputs  # only the per-pair results are needed from here on
    _warn_fallbacks(how, n_days_total)
    n_pairwise = int(np.isin(how, [PAIRWISE_REQUESTED, PAIRWISE_FEW_DAYS, PAIRWISE_COLLINEAR]).sum())
    return _pair_table(cand, est), len(cand.bounds) - 1, n_pairwise


def _run_blocks(
    cand: _Candidates, inputs: _BlockInputs, progress: Callable[[int], None] | None, engine
) -> tuple[_Estimates, np.ndarray]:
    """Every pair's estimates, the blocks grouped into engine tasks, and how each block was
    estimated."""
    engine = default_engine(engine)
    shared = engine.share(inputs)
    cuts = _task_cuts(cand.bounds, BLOCK_TASKS * engine.workers)
    tasks = [(shared, int(lo), int(hi)) for lo, hi in zip(cuts[:-1], cuts[1:])]
    before = _equations_before(cand)
    advance = None if progress is None else (lambda task: progress(int(before[task[2]] - before[task[1]])))
    est = _Estimates.empty(len(cand.src))
    how = np.zeros(len(cand.bounds) - 1, dtype=np.int64)
    for (_, lo, hi), (part, part_how) in zip(
        tasks,
        engine.map(
            _blocks_task,
            tasks,
            progress=advance,
            stage="cross-price regressions",
            weights=lambda task: int(before[task[2]] - before[task[1]]),
        ),
    ):
        sl = slice(cand.bounds[lo], cand.bounds[hi])
        est.weight[sl], est.var[sl], est.df[sl], est.n_days[sl], est.status[sl] = (
            part.weight,
            part.var,
            part.df,
            part.n_days,
            part.status,
        )
        how[lo:hi] = part_how
    return est, how


def _warn_fallbacks(how: np.ndarray, n_days_total: int) -> None:
    """One warning per reason blocks fell back to pairwise regressions (the caller's caller
    is the one warned)."""
    fallback = {
        PAIRWISE_FEW_DAYS: f"have too many products for a joint regression on {n_days_total} days",
        PAIRWISE_COLLINEAR: "have prices that move together (or make up the whole sales table, so "
        "date effects absorb their average price)",
    }
    for code, why in fallback.items():
        n_fallback = int((how == code).sum())
        if n_fallback:
            warnings.warn(
                f"{n_fallback} block(s) {why}; their pairs were tested one at a time (own price "
                "controlled, other prices of the block not).",
                PricelabWarning,
                stacklevel=3,
            )


@dataclasses.dataclass(frozen=True)
class _BlockInputs:
    """What every block task reads: the panel and the candidate pairs (shared once)."""

    panel: _Panel
    src: np.ndarray
    dst: np.ndarray
    bounds: np.ndarray
    has_history: np.ndarray
    lags: int
    method: str


def _task_cuts(bounds: np.ndarray, n_tasks: int) -> np.ndarray:
    """Block numbers cutting the blocks into about ``n_tasks`` runs of similar pair counts."""
    n_blocks = len(bounds) - 1
    if n_blocks <= n_tasks:
        return np.arange(n_blocks + 1)
    targets = np.linspace(0, bounds[-1], n_tasks + 1)[1:-1]
    cuts = np.searchsorted(bounds, targets)
    return np.unique(np.concatenate([[0], cuts, [n_blocks]]))


def _equations_before(cand: _Candidates) -> np.ndarray:
    """Demand equations (distinct dst) of the blocks before each block boundary; a block's
    pairs hold each dst in one run."""
    first = np.ones(len(cand.dst), dtype=bool)
    first[1:] = cand.dst[1:] != cand.dst[:-1]
    first[cand.bounds[:-1]] = True
    return np.concatenate([[0], np.cumsum(np.add.reduceat(first, cand.bounds[:-1]))])


def _blocks_task(task: tuple[object, int, int]) -> tuple[_Estimates, np.ndarray]:
    """Blocks ``lo`` .. ``hi - 1`` as one engine task: their pairs' estimates and how each
    block was estimated."""
    shared, lo, hi = task
    inputs: _BlockInputs = resolve(shared)
    base = int(inputs.bounds[lo])
    est = _Estimates.empty(int(inputs.bounds[hi]) - base)
    how = np.zeros(hi - lo, dtype=np.int64)
    # A block's matrices are small (a group's prices over the dates): BLAS threads cost
    # more to start and join than they save, and on a busy machine many times more.
    with threadpool_limits(limits=1, user_api="blas"):
        for b in range(lo, hi):
            sl = slice(int(inputs.bounds[b]), int(inputs.bounds[b + 1]))
            how[b - lo] = _estimate_block(
                inputs.panel,
                inputs.src[sl],
                inputs.dst[sl],
                inputs.has_history,
                inputs.lags,
                inputs.method,
                est,
                slice(sl.start - base, sl.stop - base),
            )
    return est, how


def _pair_table(cand: _Candidates, est: _Estimates) -> pl.DataFrame:
    """One row per candidate pair, in output order (src, then dst)."""
    order = cand.order
    tested = est.status[order] == TESTED
    weight, var, df = (np.where(tested, values[order], np.nan) for values in (est.weight, est.var, est.df))
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(var)
        t_stat = weight / se
        p_value = np.where(tested, 2.0 * stats.t.sf(np.abs(t_stat), np.maximum(df, 1)), np.nan)
    return pl.DataFrame(
        [
            cand.ids.gather(cand.src[order]).alias("src"),
            cand.ids.gather(cand.dst[order]).alias("dst"),
            pl.Series("weight", weight, nan_to_null=True),
            pl.Series("se", se, nan_to_null=True),
            pl.Series("t_stat", t_stat, nan_to_null=True),
            pl.Series("p_value", p_value, nan_to_null=True),
            pl.Series("n_days", est.n_days[order]),
            pl.Series("status", est.status[order]).replace_strict(_STATUS, return_dtype=pl.String),
        ]
    )


def _estimate_block(
    panel: _Panel,
    src: np.ndarray,
    dst: np.ndarray,
    has_history: np.ndarray,
    lags: int,
    method: str,
    est: _Estimates,
    sl: slice,
) -> int:
    """Fill ``est[sl]`` for one block's candidate pairs; return how (``JOINT`` or a fallback)."""
    status = np.zeros(len(src), dtype=np.int8)
    status[~has_history[src]] = NO_SRC_HISTORY
    status[(status == 0) & ~panel.price_varies[src]] = CONSTANT_PRICE
    status[~has_history[dst]] = NO_DST_HISTORY
    members = np.unique(np.concatenate([src, dst]))
    regs = members[panel.price_varies[members] & has_history[members]]
    eqs = np.unique(dst[has_history[dst]])
    n_days = panel.observed.shape[0]
    weight = np.full(len(src), np.nan)
    var = np.full(len(src), np.nan)
    df = np.full(len(src), np.nan)
    n_obs = panel.n_obs[dst]
    how = JOINT
    if not (len(eqs) and len(regs)):
        how = NOTHING
    elif method == "pairwise":
        how = PAIRWISE_REQUESTED
    elif len(regs) + 1 >= n_days / 2:
        how = PAIRWISE_FEW_DAYS
    elif _aliased_columns(panel.log_price[:, regs]).any():
        # Dropping an aliased price would turn every other coefficient into a contrast with
        # it; pairs are then tested one at a time instead.
        how = PAIRWISE_COLLINEAR
    if how == JOINT:
        x = panel.log_price[:, regs]
        coef, v, dfs, singular = _joint_block(x, panel.log_demand[:, eqs], panel.observed[:, eqs], lags)
        ok = status == 0
        r = np.searchsorted(regs, src[ok])
        e = np.searchsorted(eqs, dst[ok])
        weight[ok], var[ok], df[ok] = coef[r, e], v[r, e], dfs[e]
        sing = np.zeros(len(src), dtype=bool)
        sing[ok] = singular[e]
        status[(status == 0) & sing] = SINGULAR
    elif how != NOTHING:
        ok = np.flatnonzero(status == 0)
        chunk = max(1, _CHUNK_CELLS // max(1, n_days))
        own_varies = panel.price_varies[dst]
        for start in range(0, len(ok), chunk):
            rows = ok[start : start + chunk]
            xs = panel.log_price[:, src[rows]].T
            xo = panel.log_price[:, dst[rows]].T * own_varies[rows, None]
            y = panel.log_demand[:, dst[rows]].T
            m = panel.observed[:, dst[rows]].T.astype(np.float64)
            b, v, d, collinear = _pairwise(xs, xo, y, m, lags)
            weight[rows], var[rows], df[rows] = b, v, d
            status[rows[collinear]] = PAIR_COLLINEAR
    status[(status == 0) & ~(df >= MIN_DF)] = TOO_FEW_DAYS
    status[(status == 0) & ~(var > 0)] = TOO_FEW_DAYS
    est.weight[sl], est.var[sl], est.df[sl] = weight, var, df
    est.n_days[sl] = n_obs
    est.status[sl] = status
    return how


def spillover_graph(
    sales: pl.DataFrame,
    products: pl.DataFrame | None = None,
    *,
    group_col: str = "category",
    pairs: pl.DataFrame | None = None,
    outcome: str = "units",
    price_col: str = "price",
    fdr: float = 0.05,
    keep_complements: bool = False,
    hac_lags: int = HAC_LAGS,
    method: str = "auto",
    progress: Callable[[int], None] | None = None,
    engine=None,
) -> SpilloverGraph:
    """Estimate the substitutes graph: significant cross-price effects at false-discovery rate ``fdr``.

    Parameters
    ----------
    sales : ``product_id``, ``date``, ``outcome`` and ``price_col``; a year of daily
        history is typical. Price variation (promotions, price tests) is what identifies
        the effects.
    products : ``product_id`` and ``group_col``; candidates are ordered pairs inside a group.
    pairs : ``src``, ``dst`` candidate pairs instead of groups.
    fdr : Benjamini-Hochberg false-discovery rate over every tested pair, in (0, 1).
    keep_complements : also keep significant negative cross-elasticities (complements).
    hac_lags : lags (in dates) of residual autocorrelation the standard errors allow for.
    method : ``"auto"`` or ``"pairwise"``, see ``cross_price_elasticities``.
    engine : where the block regressions run (:mod:`pricelab_cli.engine`); default this process.

    Returns
    -------
    SpilloverGraph
    """
    if not 0.0 < fdr < 1.0:
        raise UsageError(f"`fdr` {fdr} must lie strictly between 0 and 1.")
    table, n_blocks, n_pairwise = cross_price_elasticities(
        sales,
        products,
        group_col=group_col,
        pairs=pairs,
        outcome=outcome,
        price_col=price_col,
        hac_lags=hac_lags,
        method=method,
        progress=progress,
        engine=engine,
    )
    q = benjamini_hochberg(table["p_value"].fill_null(np.nan).to_numpy())
    table = table.with_columns(pl.Series("q_value", q).fill_nan(None)).select(PAIR_COLUMNS)
    keep = (pl.col("q_value") <= fdr) & ((pl.col("weight") > 0) | pl.lit(keep_complements))
    edges = table.filter(keep.fill_null(False)).select(EDGE_COLUMNS)
    return SpilloverGraph(edges=edges, pairs=table, fdr=fdr, n_blocks=n_blocks, n_pairwise_blocks=n_pairwise)
