"""Heterogeneous panel treatment effect (hpte): the price experiment's average effect.

Four steps, one module each:

1. :mod:`~pricelab_cli.hpte.detrend` -- each product's untreated outcome is predicted from
   its own history (level, trend, weekday pattern) and shocks common to all products on a
   date are removed; a cell's (product x arm) first difference is its mean residual.
2. :mod:`~pricelab_cli.hpte.robust` and :mod:`~pricelab_cli.hpte.outliers` -- by default
   (``outlier_rule="robust"``) a robust baseline and scale, stock-out runs left out,
   products with a wild history screened, robust date shocks, winsorised residuals and an
   adaptive swing screen; ``outlier_rule="quantile"`` is the method source's rule (least
   squares, tails of share ``c / n_products`` dropped).
3. :mod:`~pricelab_cli.hpte.forest` -- treated and control cells that share a leaf of an
   honest causal forest are compared, and the leaf differences averaged (every product
   weighted equally) over leaves and trees.
4. :mod:`~pricelab_cli.hpte.bootstrap` -- the SE, percentile interval and p-value come from
   resampling randomisation units (products or clusters) within arm strata, using the
   linearised contribution of each unit with the forest held fixed.

``method="did"`` is the classic two-period baseline: first difference = mean after minus
mean before, no detrending, no filter, no forest (one leaf).

The estimate is the average effect per product per period (outcome units), every product
weighted equally: for a between-product design (time-bound, triggered) the difference
between treated and control products; for a switchback design (random days, crossover) the
difference between the treated and control days of the same products.

The robust step's contamination study is in :mod:`~pricelab_cli.hpte.robust` (tests:
``tests/core/test_robust_studies.py``); the quantile rule's default ``c`` and its study are in
:mod:`~pricelab_cli.hpte.outliers`; the coverage, SE-ratio, filter and detrending studies are
``tests/core/test_hpte_studies.py``.
"""

from pricelab_cli.hpte.detrend import detrended_outcomes
from pricelab_cli.hpte.estimate import (
    EFFECT_COLUMNS,
    HeterogeneousPanelEffect,
    HpteResult,
    estimate_hpte,
)
from pricelab_cli.hpte.outliers import DEFAULT_OUTLIER_C, OUTLIER_RULES

__all__ = [
    "DEFAULT_OUTLIER_C",
    "EFFECT_COLUMNS",
    "OUTLIER_RULES",
    "HeterogeneousPanelEffect",
    "HpteResult",
    "detrended_outcomes",
    "estimate_hpte",
]
