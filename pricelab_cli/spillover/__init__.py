"""Spillover between substitutes: find them, randomise them together, measure what remains.

- :mod:`.graph` estimates the substitutes graph from price and demand history
  (``spillover_graph``), from the panel and candidate pairs :mod:`.panel` builds out of the
  sales and products tables;
- :mod:`.cluster` partitions that graph into clusters that ``assign --clusters`` randomises
  as one unit (``leiden_clusters``);
- :mod:`.ipw` estimates direct and spillover effects of an experiment by inverse-probability
  weighting with exposure probabilities computed from the design (``ipw_effects``).
"""

from pricelab_cli.spillover.cluster import ClusterResult, leiden_clusters
from pricelab_cli.spillover.graph import (
    SpilloverGraph,
    benjamini_hochberg,
    cross_price_elasticities,
    spillover_graph,
)
from pricelab_cli.spillover.ipw import (
    ExposureProbabilities,
    IpwResult,
    exposure_probs,
    hajek_estimates,
    ipw_effects,
)

__all__ = [
    "ClusterResult",
    "ExposureProbabilities",
    "IpwResult",
    "SpilloverGraph",
    "benjamini_hochberg",
    "cross_price_elasticities",
    "exposure_probs",
    "hajek_estimates",
    "ipw_effects",
    "leiden_clusters",
    "spillover_graph",
]
