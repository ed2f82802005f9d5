"""The nightly-monitoring study behind `hpte --sequential` and `pricelab monitor` (shared by
the slow tests and docs/method.md; `python tests/core/sequential_study.py KIND REPS` prints
one design's figures, `KIND+replay` for monitor's one-pass replay).

Every repetition draws a fresh assignment (a new salt) and fresh sales (a new seed) for one
fixed catalog, and reads the experiment every night with ``monitor_nights``: by default each
night is the estimate ``hpte --as-of NIGHT --sequential`` gives that night (``exact``), else
monitor's default replay reads the past nights with the last night's model. An A/A repetition plants no price
change (the truth is 0); an effect repetition plants a price cut whose truth is the
simulator's ``truth["effect"]``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import warnings

import numpy as np
import polars as pl

from pricelab_cli.assign import assign
from pricelab_cli.design import make_design
from pricelab_cli.engine import LocalEngine
from pricelab_cli.monitor import monitor_nights
from pricelab_cli.simulate import simulate_catalog, simulate_sales

START = dt.date(2024, 6, 3)
DESIGNS = ("time-bound", "triggered", "random-days", "crossover")
# Elasticity -2 and a 2.5% price cut: about +5% units.
EFFECT_PRICE_CHANGE = -0.025
# Real panels: the products with the most receipt lines (as the real-panel tests).
REAL_PRODUCTS = 300


def design_of(kind: str, salt: str):
    """The four designs over 28 days; crossover: two 14-day phases opening with 3 blackout
    days; triggered: 21 days from each product's event, events over the first week."""
    if kind in ("time-bound", "random-days"):
        return make_design(kind, salt=salt, start=START, end=START + dt.timedelta(days=27))
    if kind == "crossover":
        return make_design(kind, salt=salt, start=START, phase_days=14, blackout_days=3)
    return make_design(kind, salt=salt, duration_days=21)


@dataclasses.dataclass(frozen=True)
class Night:
    """One repetition read night by night."""

    truth: float
    ever_cs: bool  # the sequence excluded 0 on some night
    ever_ci: bool  # the fixed interval excluded 0 on some night (naive daily looks)
    covered: bool  # the sequence held the truth on every night
    stop_night: int | None  # first night (1-based) with the decision "stop: effect"
    end_ci: bool  # the fixed interval excluded 0 at the last night (one look at the end)
    width_ratio: float  # sequence over fixed interval width at the last night
    nights: int


def repetition(kind: str, rep: int, *, n: int = 150, price_change: float = 0.0, trees: int = 50,
               bootstrap: int = 200, exact: bool = True) -> Night:  # fmt: skip
    products, _ = simulate_catalog(n, 4, 5, seed=7)
    events = None
    if kind == "triggered":
        offsets = np.random.default_rng(rep).integers(0, 7, n)
        events = pl.DataFrame(
            {"product_id": products["product_id"], "event_date": [START + dt.timedelta(days=int(o)) for o in offsets]}
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assignment = assign(design_of(kind, f"sequential-{rep}"), products, events=events)
        sim = simulate_sales(
            products, assignment=assignment, history_days=56, seed=rep, price_change=price_change, spillover=False
        )
    return _read(
        every_night(sim.sales, assignment, rep, trees, bootstrap, exact), sim.truth["effect"] if price_change else 0.0
    )


def real_repetition(products: pl.DataFrame, sales: pl.DataFrame, period_days: int, kind: str, rep: int,
                    *, trees: int = 10, bootstrap: int = 200, exact: bool = True) -> Night:  # fmt: skip
    """An A/A experiment on a real panel as it comes (``real_panel_study``'s designs over its
    last weeks, a fresh salt), read every night."""
    import real_panel_study as real

    last = sales["date"].max()
    design = real.design_of(kind, f"sequential-real-{kind}-{rep}", last, period_days)
    events = real._events(products, rep, last, period_days) if kind == "triggered" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assignment = assign(design, products.select("product_id"), events=events)
    table = every_night(sales.select("product_id", "date", "units"), assignment, rep, trees, bootstrap, exact)
    return _read(table, 0.0)


def every_night(
    sales: pl.DataFrame, assignment: pl.DataFrame, rep: int, trees: int, bootstrap: int, exact: bool = True
) -> pl.DataFrame:
    """The monitoring table of one repetition (one process, seeded by the repetition):
    ``exact``, every night as that night's ``hpte --as-of`` run read it (the nightly job's
    sequence); else monitor's default replay, the past nights read with the last night's
    model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return monitor_nights(
            sales,
            assignment,
            n_bootstrap=bootstrap,
            n_estimators=trees,
            seed=rep,
            n_jobs=1,
            engine=LocalEngine(1),
            exact_nights=exact,
        )


def _read(table: pl.DataFrame, truth: float) -> Night:
    """What one repetition's nights say (see ``Night``)."""
    cs_low, cs_high = table["cs_low"].to_numpy(), table["cs_high"].to_numpy()
    ci_low, ci_high = table["ci_low"].to_numpy(), table["ci_high"].to_numpy()
    stops = np.flatnonzero(table["decision"].to_numpy() == "stop: effect")
    return Night(
        truth=truth,
        ever_cs=bool(((cs_low > 0) | (cs_high < 0)).any()),
        ever_ci=bool(((ci_low > 0) | (ci_high < 0)).any()),
        covered=bool(((cs_low <= truth) & (truth <= cs_high)).all()),
        stop_night=int(stops[0]) + 1 if len(stops) else None,
        end_ci=bool(ci_low[-1] > 0 or ci_high[-1] < 0),
        width_ratio=float((cs_high[-1] - cs_low[-1]) / (ci_high[-1] - ci_low[-1])),
        nights=table.height,
    )


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's 95% interval of a binomial share."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def summary(nights: list[Night]) -> dict:
    n = len(nights)
    ever_cs, ever_ci = sum(x.ever_cs for x in nights), sum(x.ever_ci for x in nights)
    stops = [x.stop_night for x in nights if x.stop_night is not None]
    return {
        "reps": n,
        "nights": int(np.median([x.nights for x in nights])),
        "ever_cs": ever_cs / n,
        "ever_cs_interval": wilson(ever_cs, n),
        "ever_ci": ever_ci / n,
        "ever_ci_interval": wilson(ever_ci, n),
        "covered_every_night": sum(x.covered for x in nights) / n,
        "median_stop_night": float(np.median(stops)) if stops else None,
        "power_at_end_fixed": sum(x.end_ci for x in nights) / n,
        "width_ratio_at_end": float(np.median([x.width_ratio for x in nights])),
    }


_REAL: dict = {}


def _run(args: tuple[str, int, float]) -> Night:
    kind, rep, price_change = args
    # KIND+replay: monitor's default replay instead of a whole run a night.
    exact = not kind.endswith("+replay")
    kind = kind.removesuffix("+replay")
    if ":" not in kind:
        return repetition(kind, rep, price_change=price_change, exact=exact)
    name, design = kind.split(":")
    if name not in _REAL:
        import importlib.util
        from pathlib import Path

        here = Path(__file__).resolve().parent
        sys.path.insert(0, str(here))
        spec = importlib.util.spec_from_file_location("real_panels", here.parent / "real_panels.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["real_panels"] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        import real_panel_study as real

        loaded = module.load_panel(name, max_products=REAL_PRODUCTS)
        _REAL[name] = (*real.prepare(loaded.products, loaded.sales, loaded.period_days), loaded.period_days)
    products, sales, period_days = _REAL[name]
    return real_repetition(products, sales, period_days, design, rep, exact=exact)


if __name__ == "__main__":
    import multiprocessing

    kind, reps = sys.argv[1], int(sys.argv[2])
    price_change = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    with multiprocessing.get_context("spawn").Pool(int(sys.argv[4]) if len(sys.argv) > 4 else 2) as pool:
        nights = pool.map(_run, [(kind, rep, price_change) for rep in range(reps)], chunksize=4)
    print(json.dumps({"kind": kind, "price_change": price_change, **summary(nights)}))
