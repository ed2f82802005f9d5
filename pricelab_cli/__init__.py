"""pricelab: design, assign and analyse price experiments on a product catalog.

The command line is a thin shell over these functions, so a notebook can use them directly::

    import pricelab_cli as pl_
    design = pl_.make_design("random-days", salt="s1", start=..., end=...)
    assignment = pl_.assign(design, products)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pricelab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from pricelab_cli.assign import AssignmentPlan, BalanceTally, assign, balance_report, plan_assignment  # noqa: E402
from pricelab_cli.design import Design, design_from_dict, make_design  # noqa: E402
from pricelab_cli.diagnostics import carryover_check, covariate_balance, minimum_detectable_effect  # noqa: E402
from pricelab_cli.engine import LocalEngine  # noqa: E402
from pricelab_cli.hpte import HeterogeneousPanelEffect, detrended_outcomes, estimate_hpte  # noqa: E402
from pricelab_cli.hpte.panel import partition_panel  # noqa: E402
from pricelab_cli.hpte.placebo import estimate_placebo  # noqa: E402
from pricelab_cli.io import read_table, scan_table  # noqa: E402
from pricelab_cli.power import HpteEstimator, design_arms, power_study  # noqa: E402
from pricelab_cli.simulate import SimulatedSales, simulate_catalog, simulate_sales  # noqa: E402
from pricelab_cli.spillover import exposure_probs, ipw_effects, leiden_clusters, spillover_graph  # noqa: E402

__all__ = [
    "AssignmentPlan",
    "BalanceTally",
    "Design",
    "HeterogeneousPanelEffect",
    "HpteEstimator",
    "LocalEngine",
    "SimulatedSales",
    "__version__",
    "assign",
    "balance_report",
    "carryover_check",
    "covariate_balance",
    "design_arms",
    "design_from_dict",
    "detrended_outcomes",
    "estimate_hpte",
    "estimate_placebo",
    "exposure_probs",
    "ipw_effects",
    "leiden_clusters",
    "make_design",
    "minimum_detectable_effect",
    "partition_panel",
    "plan_assignment",
    "power_study",
    "read_table",
    "scan_table",
    "simulate_catalog",
    "simulate_sales",
    "spillover_graph",
]
