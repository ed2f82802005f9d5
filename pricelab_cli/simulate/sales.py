"""Daily sales panels with their known truth (``simulate_sales``).

The model and the truth are defined in the package docstring (:mod:`pricelab_cli.simulate`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from pricelab_cli.simulate.contamination import Contamination
from pricelab_cli.simulate.inputs import EPOCH, SalesPanel, as_date
from pricelab_cli.simulate.model import negative_binomial, treatment_multiplier, untreated_demand
from pricelab_cli.simulate.settings import ADDITIVE_CONTAMINATION, SalesSettings
from pricelab_cli.simulate.truth import known_truth

SALES_COLUMNS = ("product_id", "date", "units", "price", "revenue")


@dataclasses.dataclass(frozen=True, eq=False)
class SimulatedSales:
    """A simulated panel with its known truth.

    Attributes
    ----------
    sales : ``product_id``, ``date``, ``units`` (Int64), ``price``, ``revenue`` (Float64);
        one row per product and date, products in input order, dates increasing.
    truth : JSON-serialisable summary: ``effect``, ``effect_global``, ``lift``, ``baseline``
        (None without an assignment), ``n_products`` (assigned), ``n_catalog``,
        ``n_outliers`` and ``n_edges`` (whole catalog), the panel dates and every parameter.
    product_truth : one row per product in the assignment: ``product_id``, ``cate``,
        ``cate_global``, ``baseline`` (units per day; null when the product has no
        non-blackout experiment date in the panel), ``outlier``, ``elasticity``,
        ``contamination`` (the kind, null for a clean product).
    clean_sales : the same panel without the contamination (same draws otherwise); the
        same frame as ``sales`` when there is none.
    """

    sales: pl.DataFrame
    truth: dict
    product_truth: pl.DataFrame
    clean_sales: pl.DataFrame | None = None


def simulate_sales(
    products: pl.DataFrame,
    *,
    assignment: pl.DataFrame | None = None,
    edges: pl.DataFrame | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    history_days: int = 365,
    price_change: float = -0.10,
    elasticity: float = -2.0,
    heterogeneity: float = 0.5,
    trend_sd: float = 0.3,
    weekly: float = 0.2,
    shock_sd: float = 0.05,
    promo_rate: float = 0.05,
    promo_depth: float = 0.2,
    outlier_share: float = 0.0,
    carryover_days: float = 0.0,
    spillover: bool = True,
    base_units: float = 20.0,
    dispersion: float = 5.0,
    contamination: float = 0.0,
    contamination_kinds: Sequence[str] = ADDITIVE_CONTAMINATION,
    seed: int = 0,
) -> SimulatedSales:
    """Simulate daily sales of ``products`` under an assignment, with the known truth.

    The model and the truth are defined in the package docstring (:mod:`pricelab_cli.simulate`).

    Parameters
    ----------
    products : must have ``product_id``; ``base_price`` (default 20), ``quality``
        (default 0) and ``brand`` (default multiplier 1) are used when present.
    assignment : ``product_id``, ``date``, ``treated`` (0/1), optional ``blackout``; products
        absent from it are never treated. Rows outside the panel dates are ignored.
    edges : substitutes graph ``src``, ``dst``, ``weight`` (cross-price elasticity of the
        demand of ``dst`` to the price of ``src``); none means no cross-price effects.
    start, end : panel dates (inclusive). By default the panel runs from ``history_days``
        days before the first assignment date to the last one; without an assignment give
        ``end`` (and ``start``, else ``history_days`` days ending at ``end``) or ``start``.
    history_days : pre-experiment days, or the panel length when there is no assignment.
    price_change : relative price change of treated cells (-0.10 is a 10% cut); > -1.
    elasticity, heterogeneity : own-price elasticity and how much it varies with quality.
    trend_sd, weekly, shock_sd : product trend spread (log units per year), weekly
        amplitude (log units), store-wide daily shock spread.
    promo_rate, promo_depth : daily promotion start probability and relative price cut.
    outlier_share : share of products whose level jumps late in the panel.
    carryover_days : time constant (days) of the treatment effect's decay after treatment.
    spillover : whether treating ``src`` moves the demand of ``dst`` through the edges.
    base_units, dispersion : typical daily units and the negative binomial shape.
    contamination, contamination_kinds : share of products whose sales are spoiled, and
        how (see "Contamination" in the package docstring).
    seed : seed of the random generators (the contamination has its own, derived from it).

    Returns
    -------
    SimulatedSales
        With the same seed, products and dates, ``lambda0`` and the promotions do not
        depend on the assignment or on the treatment parameters.
    """
    # Here locals() holds exactly the arguments; the settings (all but the tables and the
    # dates) are taken from it by name rather than listed a second time.
    settings = SalesSettings.checked(locals())
    start, end = as_date(start, "start"), as_date(end, "end")
    panel = SalesPanel.from_tables(
        products, assignment, edges, start=start, end=end, history_days=settings.history_days
    )
    draws = _Draws.of(panel, settings)
    sales, clean_sales = _sales_frames(panel, settings, draws)
    product_truth, truth = draws.known_truth(panel, settings)
    return SimulatedSales(sales=sales, truth=truth, product_truth=product_truth, clean_sales=clean_sales)


@dataclasses.dataclass(frozen=True, eq=False)
class _Draws:
    """The random part of a panel: untreated demand, promotions, outliers and units."""

    own_elasticity: np.ndarray  # per product
    lambda0: np.ndarray  # (products x days) expected units with no treatment anywhere
    promo: np.ndarray  # (products x days) promotion days
    outlier: np.ndarray  # per product: its level shifts late in the panel
    spoil: Contamination
    units: np.ndarray  # (products x days), contaminated
    clean_units: np.ndarray  # the same without the contamination

    @classmethod
    def of(cls, panel: SalesPanel, settings: SalesSettings) -> _Draws:
        """Draw the panel: the untreated world, then the counts under treatment, then the
        contamination (from a generator of its own)."""
        own_elasticity = (
            settings.elasticity * (1.0 + settings.heterogeneity * np.tanh(panel.quality)) * panel.brand_multiplier
            if panel.elasticity is None
            else panel.elasticity
        )
        rng = np.random.default_rng(settings.seed)
        lambda0, promo, outlier = untreated_demand(
            rng,
            start=panel.start,
            n_days=panel.n_days,
            own_elasticity=own_elasticity,
            weight_matrix=panel.weight_matrix,
            settings=settings,
        )
        expected_units = treatment_multiplier(
            panel.treated,
            own_elasticity=own_elasticity,
            weight_matrix=panel.weight_matrix if settings.spillover else None,
            log_cut=panel.log_cut(settings.log_cut),
            carryover_days=settings.carryover_days,
        )
        expected_units *= lambda0
        spoil = Contamination.draw(
            settings.seed,
            n=panel.n_products,
            n_days=panel.n_days,
            share=settings.contamination,
            kinds=settings.contamination_kinds,
            analysed_rows=panel.analysed_rows,
            analysed_days=panel.analysed_days,
        )
        shifted_mean = spoil.shifted_means(expected_units)
        units = negative_binomial(rng, expected_units, settings.dispersion)
        del expected_units  # overwritten by the counts' draw
        clean_units = units
        if spoil.rows.size:
            units = spoil.apply(units, lambda0, shifted_mean, settings.dispersion)
        return cls(own_elasticity, lambda0, promo, outlier, spoil, units, clean_units)

    def known_truth(self, panel: SalesPanel, settings: SalesSettings) -> tuple[pl.DataFrame, dict[str, Any]]:
        """Per-product truth and the truth document (see ``truth.known_truth``)."""
        return known_truth(
            panel,
            settings,
            lambda0=self.lambda0,
            own_elasticity=self.own_elasticity,
            outlier=self.outlier,
            spoil=self.spoil,
        )


def _sales_frames(panel: SalesPanel, settings: SalesSettings, draws: _Draws) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The sales panel and the same without the contamination (the same frame when clean)."""
    price = np.where(draws.promo, 1.0 - settings.promo_depth, 1.0)
    change = settings.price_change if panel.price_change is None else panel.price_change[:, None]
    price *= np.where(panel.treated, 1.0 + change, 1.0)
    price *= panel.base_price[:, None]
    n, n_days = panel.n_products, panel.n_days
    day_numbers = (np.arange(n_days) + (panel.start - EPOCH).days).astype(np.int32)
    keys = pl.DataFrame(
        {
            "product_id": panel.ids.gather(np.repeat(np.arange(n), n_days)),
            "date": pl.Series(np.tile(day_numbers, n)).cast(pl.Date),
        }
    )

    def sales_frame(counts: np.ndarray) -> pl.DataFrame:
        return keys.with_columns(units=pl.Series(counts.ravel()), price=pl.Series(price.ravel())).with_columns(
            revenue=pl.col("units") * pl.col("price")
        )

    sales = sales_frame(draws.units)
    clean_sales = sales_frame(draws.clean_units) if draws.spoil.rows.size else sales
    return sales.select(SALES_COLUMNS), clean_sales.select(SALES_COLUMNS)
