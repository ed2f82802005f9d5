"""pricelab: design, assign and analyse price experiments on a product catalog.

The command line is a thin shell over these functions, so a notebook can use them directly::

    import pricelab_cli as pl_
    design = pl_.make_design("random-days", salt="s1", start=..., end=...)
    assignment = pl_.assign(design, products)
"""

import sys
import types

# The one place the version is written (pyproject.toml reads it from here): a literal, so
# that no run pays importlib.metadata's 30-70 ms to learn it.
__version__ = "0.1.0"

# The public names, each imported from its module the first time it is used (importing the
# package stays cheap: `pricelab --help` loads no numpy, polars or scipy).
_WHERE = {
    "AssignmentPlan": "pricelab_cli.assign",
    "BalanceTally": "pricelab_cli.assign",
    "assign": "pricelab_cli.assign",
    "balance_report": "pricelab_cli.assign",
    "plan_assignment": "pricelab_cli.assign",
    "Design": "pricelab_cli.design",
    "design_from_dict": "pricelab_cli.design",
    "make_design": "pricelab_cli.design",
    "carryover_check": "pricelab_cli.diagnostics",
    "covariate_balance": "pricelab_cli.diagnostics",
    "minimum_detectable_effect": "pricelab_cli.diagnostics",
    "LocalEngine": "pricelab_cli.engine",
    "HeterogeneousPanelEffect": "pricelab_cli.hpte",
    "detrended_outcomes": "pricelab_cli.hpte",
    "estimate_hpte": "pricelab_cli.hpte",
    "partition_panel": "pricelab_cli.hpte.panel",
    "estimate_placebo": "pricelab_cli.hpte.placebo",
    "read_table": "pricelab_cli.io",
    "scan_table": "pricelab_cli.io",
    "HpteEstimator": "pricelab_cli.power",
    "design_arms": "pricelab_cli.power",
    "power_study": "pricelab_cli.power",
    "SimulatedSales": "pricelab_cli.simulate",
    "simulate_catalog": "pricelab_cli.simulate",
    "simulate_sales": "pricelab_cli.simulate",
    "exposure_probs": "pricelab_cli.spillover",
    "ipw_effects": "pricelab_cli.spillover",
    "leiden_clusters": "pricelab_cli.spillover",
    "spillover_graph": "pricelab_cli.spillover",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'pricelab_cli' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """The package keeps ``assign`` the function: importing the submodule of the same name
    (which the import system would set as this attribute) leaves it alone."""

    def __setattr__(self, name: str, value) -> None:
        if name == "assign" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted(__all__)


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
