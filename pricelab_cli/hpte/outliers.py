"""Step 2 of hpte: drop products whose first difference lies in the far tails.

The tail share is inversely proportional to the number of products,
``q = min(c / n_products, MAX_TAIL_SHARE)``, so about ``c`` products are dropped whatever the
catalog size (half from each tail): only the few wildest swings go, and a large catalog is
not trimmed harder than a small one.

What is trimmed
---------------
A product's first difference here is the mean residual over all its experiment rows (both
arms together). Products are ranked *within their arm stratum* (treated only, control only,
or both arms for switchback designs), and in each stratum of ``m`` products the
``round(q * m / 2)`` lowest and as many highest are dropped. Trimming each arm by its own
quantiles keeps the treatment's shift from pushing one arm's products out of one tail, which
would bias the second difference; in a stratum too small for one drop per tail (one treated
state) nobody is dropped.

Default ``c``
-------------
``DEFAULT_OUTLIER_C = 4`` was chosen by the simulation study described in the package
docstring (:mod:`pricelab_cli.hpte`): it minimised the RMSE on catalogs with heavy-tailed
level jumps while leaving RMSE and coverage on clean catalogs unchanged.
"""

from __future__ import annotations

import numpy as np

from pricelab_cli.hpte.detrend import Cells

DEFAULT_OUTLIER_C = 4.0
MAX_TAIL_SHARE = 0.1


def tail_share(n_products: int, c: float) -> float:
    """Total tail share ``min(c / n, MAX_TAIL_SHARE)`` trimmed from the first differences."""
    if n_products <= 0 or c <= 0:
        return 0.0
    return min(c / n_products, MAX_TAIL_SHARE)


def outlier_filter(first_difference: np.ndarray, stratum: np.ndarray, c: float = DEFAULT_OUTLIER_C) -> np.ndarray:
    """Boolean mask of products to keep: False for the tails of each stratum.

    Parameters
    ----------
    first_difference : per product, the mean residual over its experiment rows.
    stratum : per product, an integer label; products are ranked within their stratum.
    c : about how many products to drop in total (the tail share is ``c / n``).
    """
    n = len(first_difference)
    q = tail_share(n, c)
    keep = np.ones(n, dtype=bool)
    if q == 0.0 or n == 0:
        return keep
    # Ties in value are broken by position so the result does not depend on sort internals.
    order = np.lexsort((np.arange(n), first_difference, stratum))
    sorted_stratum = stratum[order]
    _, first_of_stratum, size = np.unique(sorted_stratum, return_index=True, return_counts=True)
    stratum_slot = np.searchsorted(sorted_stratum[first_of_stratum], sorted_stratum)
    rank = np.arange(n) - first_of_stratum[stratum_slot]
    m = size[stratum_slot]
    per_tail = np.floor(q * m / 2.0 + 0.5).astype(np.int64)
    keep[order] = (rank >= per_tail) & (rank < m - per_tail)
    return keep


def product_swings(cells: Cells, volatility: np.ndarray, n_products: int) -> tuple[np.ndarray, np.ndarray]:
    """Per product, the swing the filter ranks and its arm stratum (-1: no cell).

    The swing is the first difference of the product's control cell when it has one (its
    treated cell otherwise), less its stratum's typical relative change times the cell's
    counterfactual level, in units of the product's own noise::

        swing = (fd - r_s * counterfactual) / (volatility / sqrt(rows))

    with ``r_s`` the median of ``fd / counterfactual`` in the stratum and ``volatility`` the
    residual standard deviation of the product's history.

    Why: a product's effect in units grows with its sales, and so does its first difference,
    so ranking raw treated differences would pick big sellers with big effects, and dropping
    them would bias the average effect down. Removing the typical relative effect and
    dividing by the product's own noise leaves what is unusual about the product; judging
    switchback products on their control days leaves the effect out entirely (level jumps
    still show there).
    """
    control = cells.treated == 0
    fd = np.full(n_products, np.nan)
    level = np.full(n_products, np.nan)
    rows = np.zeros(n_products)
    # Treated cells first, then control cells overwrite them where a product has both.
    for mask in (~control, control):
        fd[cells.code[mask]] = cells.first_difference[mask]
        level[cells.code[mask]] = cells.counterfactual[mask]
        rows[cells.code[mask]] = cells.n_rows[mask]
    has_t = np.zeros(n_products, dtype=bool)
    has_c = np.zeros(n_products, dtype=bool)
    has_t[cells.code[~control]] = True
    has_c[cells.code[control]] = True
    stratum = np.where(has_t & has_c, 2, np.where(has_t, 1, np.where(has_c, 0, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(level > 0, fd / level, np.nan)
        typical = np.zeros(n_products)
        for s in np.unique(stratum[stratum >= 0]):  # at most three strata
            inside = stratum == s
            if np.isfinite(relative[inside]).any():
                typical[inside] = np.nanmedian(relative[inside])
        centred = fd - typical * np.where(level > 0, level, 0.0)
        swing = centred / (volatility / np.sqrt(np.maximum(rows, 1)))
    # No measurable volatility and a non-zero difference is an infinitely wild swing.
    return np.nan_to_num(swing, nan=0.0, posinf=np.inf, neginf=-np.inf), stratum
