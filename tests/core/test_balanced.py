"""The balanced switchback: its balance conditions hold exactly, and every command replays it."""

import datetime as dt
import math
import warnings

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricelab_cli.assign import assign, balance_report, plan_assignment, unit_keys
from pricelab_cli.balanced import balanced_schedule, treated_per_block
from pricelab_cli.design import design_from_dict, make_design
from pricelab_cli.errors import DesignError
from pricelab_cli.spillover.ipw import exposure_probs

START = dt.date(2026, 3, 2)


def design(days: int, block_days: int, share: float = 0.5, blackout_days: int = 0, salt: str = "bal"):
    return make_design(
        "balanced-switchback",
        salt=salt,
        start=START,
        end=START + dt.timedelta(days=days - 1),
        block_days=block_days,
        blackout_days=blackout_days,
        treat_share=share,
    )


def block_counts(assignment: pl.DataFrame, unit: str = "product_id") -> tuple[pl.DataFrame, pl.DataFrame]:
    """(treated units per block, treated blocks per unit) of an assignment."""
    draws = assignment.group_by(unit, "period").agg(pl.col("treated").max())
    per_block = draws.group_by("period").agg(pl.col("treated").sum())
    per_unit = draws.group_by(unit).agg(pl.col("treated").sum(), pl.len().alias("blocks"))
    return per_block, per_unit


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 240),
    days=st.integers(1, 60),
    block_days=st.integers(1, 9),
    share=st.floats(0.05, 0.95),
    salt=st.text(min_size=1, max_size=8),
)
def test_every_block_treats_round_share_n_and_every_product_its_share_of_blocks(n, days, block_days, share, salt):
    """The balance conditions, exactly, through ``assign``: per block ``round(share x n)``
    products (halves up); per product the floor or the ceiling of ``blocks x k / n``, which is
    within one of ``share x blocks`` whenever any schedule with ``k`` per block can be."""
    spec = design(days, block_days, share, salt=salt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a one-armed split of a tiny catalog is warned about
        out = assign(spec, pl.DataFrame({"product_id": [f"p{i}" for i in range(n)]}))
    per_block, per_unit = block_counts(out)
    k = math.floor(share * n + 0.5)
    n_blocks = math.ceil(days / block_days)
    assert per_block.height == n_blocks
    assert (per_block["treated"] == k).all()
    assert (per_unit["blocks"] == n_blocks).all()
    counts = per_unit["treated"].to_numpy()
    ideal = n_blocks * k / n
    assert counts.min() >= math.floor(ideal) and counts.max() <= math.ceil(ideal)
    assert counts.sum() == n_blocks * k
    target = share * n_blocks
    if n * math.ceil(target - 1) <= n_blocks * k <= n * math.floor(target + 1):
        assert np.all(np.abs(counts - target) <= 1 + 1e-9)


@settings(max_examples=25, deadline=None)
@given(n_clusters=st.integers(2, 60), size=st.integers(1, 4), days=st.integers(2, 30), share=st.floats(0.1, 0.9))
def test_clusters_are_balanced_as_units_and_share_every_arm(n_clusters, size, days, share):
    ids = [f"p{i}" for i in range(n_clusters * size)]
    clusters = pl.DataFrame({"product_id": ids, "cluster_id": [f"c{i // size}" for i in range(len(ids))]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = assign(design(days, 2, share), pl.DataFrame({"product_id": ids}), clusters=clusters)
    assert out.group_by("cluster_id", "date").agg(pl.col("treated").n_unique())["treated"].max() == 1
    per_block, per_unit = block_counts(out, "cluster_id")
    assert (per_block["treated"] == math.floor(share * n_clusters + 0.5)).all()
    ideal = per_block.height * math.floor(share * n_clusters + 0.5) / n_clusters
    assert per_unit["treated"].min() >= math.floor(ideal) and per_unit["treated"].max() <= math.ceil(ideal)


def test_the_schedule_is_the_same_whatever_the_order_of_the_products():
    ids = [f"sku-{i}" for i in range(500)]
    spec = design(28, 1)
    forward = assign(spec, pl.DataFrame({"product_id": ids}))
    backward = assign(spec, pl.DataFrame({"product_id": ids[::-1]}))
    assert forward.sort("product_id", "date").equals(backward.sort("product_id", "date"))
    again = assign(design_from_dict(spec.to_dict()), pl.DataFrame({"product_id": ids}))
    assert forward.equals(again)


def test_schedules_mix_well_beyond_the_dealt_patterns():
    """Two units agree on a block about as often as two independent balanced rows would
    (one half), and nearly every unit has a schedule of its own."""
    keys = unit_keys(pl.Series([f"p{i}" for i in range(4000)]), "mix")
    schedule = balanced_schedule(keys, "mix", 28, 0.5)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4000, (2, 5000))
    a, b = a[a != b], b[a != b]
    agree = (schedule[a] == schedule[b]).mean()
    assert abs(agree - 0.5) < 0.02
    assert len(np.unique(np.packbits(schedule, axis=1), axis=0)) > 0.9 * 4000


def test_every_block_after_the_first_opens_with_its_blackout_days():
    out = assign(design(21, 7, blackout_days=2), pl.DataFrame({"product_id": ["a", "b", "c", "d"]}))
    blackout_days = sorted({(d - START).days for d in out.filter(pl.col("blackout"))["date"].to_list()})
    assert blackout_days == [7, 8, 14, 15]


def test_designs_that_cannot_run_are_refused_with_the_value():
    with pytest.raises(DesignError, match="blackout_days` 7 must be shorter than `block_days` 7"):
        design(28, 7, blackout_days=7)
    with pytest.raises(DesignError, match="block_days` 0"):
        design(28, 0)
    spec = design(28, 7).to_dict()
    del spec["blackout_days"]
    with pytest.raises(DesignError, match="needs blackout_days"):
        design_from_dict(spec)


def test_balance_report_counts_the_exact_split():
    spec = design(28, 7, share=0.3)
    ids = pl.DataFrame({"product_id": np.arange(1000)})
    out = assign(spec, ids)
    report = balance_report(out, spec)
    assert report.n_treated_draws == 4 * 300 and report.n_draws == 4 * 1000
    assert (report.daily["treated_share"] == 0.3).all()
    plan = plan_assignment(spec, ids)
    assert plan.schedule is not None and plan.schedule.sum(axis=0).tolist() == [300] * 4
    assert treated_per_block(1000, 0.3) == 300 and treated_per_block(5, 0.5) == 3


def test_ipw_replays_the_balanced_schedule_itself():
    """ipw's exposure probabilities come from replays of the balanced schedule (the
    independent-draw formulas do not hold): the realised assignment matches the design's own
    replay, and every product is treated in a block with probability exactly k / n, which the
    replayed probabilities recover within Monte Carlo error."""
    n = 10
    ids = pl.DataFrame({"product_id": [f"p{i}" for i in range(n)]})
    spec = design(14, 2, share=0.5)
    out = assign(spec, ids)
    edges = pl.DataFrame({"src": [f"p{i}" for i in range(n)], "dst": [f"p{(i + 1) % n}" for i in range(n)]})
    edges = edges.with_columns(weight=pl.lit(1.0))
    probs = exposure_probs(out, edges, spec, ids, replays=1000, seed=3)
    assert probs.method == "replay" and probs.design_mismatch == 0.0
    treated = probs.cells["p_direct"] + probs.cells["p_total"]
    assert abs(float(treated.mean()) - 0.5) < 0.01
    # A neighbour of a treated product is treated with probability (k - 1) / (n - 1) under an
    # exact split, not k / n: here 4/9 for the product's one substitute, against 1/2.
    p_exposed_given_treated = float((probs.cells["p_total"] / treated).mean())
    assert abs(p_exposed_given_treated - 4 / 9) < 0.015


def test_the_carryover_check_reads_the_blackout_after_a_switch_not_inside_a_run():
    """A balanced switchback's blackout days open every block, but for a product that keeps
    its arm they fall inside a run: the check reads the blackout as the days that open a run
    after a switch (2 here), and finds an effect planted on the first control day after it."""
    from pricelab_cli.diagnostics import carryover_check, periods_since_switch

    out = assign(design(28, 7, blackout_days=2), pl.DataFrame({"product_id": [f"p{i}" for i in range(80)]}))
    since = periods_since_switch(out).join(out.select("product_id", "date", "blackout"), on=["product_id", "date"])
    rng = np.random.default_rng(1)
    residuals = since.filter(~pl.col("blackout")).with_columns(
        residual=pl.Series(rng.normal(0, 0.1, since.filter(~pl.col("blackout")).height))
        + pl.when(pl.col("after_switch") & (pl.col("treated") == 0) & (pl.col("since") == 3)).then(1.0).otherwise(0.0)
    )
    check = carryover_check(residuals.select("product_id", "date", "residual"), out)
    control = check.lingering()
    assert control["blackout_days"] == 2
    assert control["estimate"] > 0.5 and control["p_value"] < 0.001
