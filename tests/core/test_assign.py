import datetime as dt
import sys
import warnings

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pricelab_cli.assign import (
    BalanceTally,
    assign,
    balance_report,
    fnv1a64,
    plan_assignment,
    uniform_draws,
    unit_keys,
)
from pricelab_cli.design import make_design
from pricelab_cli.errors import DataError, DuplicateKeyError, PricelabWarning

D = dt.date
START = D(2026, 3, 2)


def products(n: int, offset: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"product_id": np.arange(offset, offset + n, dtype=np.int64)})


def binomial_ok(successes: int, n: int, p: float, z: float = 4.0) -> bool:
    return abs(successes - n * p) <= z * np.sqrt(n * p * (1 - p))


def test_fnv1a64_matches_reference_vectors():
    # Published FNV-1a 64-bit test vectors.
    got = fnv1a64(pl.Series(["", "a", "foobar"]))
    assert got.tolist() == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]


def test_draws_are_uniform_and_independent_across_periods():
    keys = unit_keys(pl.Series(np.arange(50_000)), "salt")
    u0 = uniform_draws(keys, np.zeros(len(keys)))
    u1 = uniform_draws(keys, np.ones(len(keys)))
    assert stats.kstest(u0, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(u0, u1)[0, 1]) < 0.02


def test_time_bound_rows_arms_and_share():
    design = make_design("time-bound", salt="tb", start=START, end=D(2026, 3, 15), treat_share=0.3)
    out = assign(design, products(4000))
    assert out.columns == ["product_id", "date", "treated", "blackout", "period"]
    assert out.height == 4000 * 14
    assert out["date"].min() == START and out["date"].max() == D(2026, 3, 15)
    per_product = out.group_by("product_id").agg(pl.col("treated").n_unique().alias("arms"), pl.col("treated").first())
    assert per_product["arms"].max() == 1, "a time-bound product never switches arm"
    assert binomial_ok(int(per_product["treated"].sum()), 4000, 0.3)
    assert not out["blackout"].any() and out["period"].max() == 0


def test_random_days_rerandomises_every_block():
    design = make_design("random-days", salt="rd", start=START, end=D(2026, 3, 29), block_days=2)
    out = assign(design, products(3000))
    day = (pl.col("date") - pl.lit(START)).dt.total_days()
    assert (out["period"] == out.select(day // 2).to_series()).all()
    blocks = out.group_by("product_id", "period").agg(pl.col("treated").n_unique().alias("arms"))
    assert blocks["arms"].max() == 1, "arm is constant inside a block"
    switches = out.group_by("product_id").agg(pl.col("treated").n_unique().alias("arms"))
    assert (switches["arms"] == 2).mean() > 0.99, "over 14 blocks almost every product sees both arms"
    draws = out.filter(pl.col("date").dt.day() % 2 == 0)  # one day per block
    assert binomial_ok(int(draws["treated"].sum()), draws.height, 0.5)


def test_crossover_flips_arms_and_flags_blackout():
    design = make_design("crossover", salt="co", start=START, phase_days=7, blackout_days=3, phases=3)
    out = assign(design, products(2000))
    offset = (pl.col("date") - pl.lit(START)).dt.total_days()
    expected = out.select((offset % 7 < 3).alias("b"), (offset // 7).alias("p"))
    assert (out["blackout"] == expected["b"]).all()
    assert (out["period"] == expected["p"]).all()
    by_phase = (
        out.group_by("product_id", "period")
        .agg(pl.col("treated").first())
        .pivot(on="period", index="product_id", values="treated")
    )
    assert (by_phase["0"] != by_phase["1"]).all() and (by_phase["0"] == by_phase["2"]).all()
    assert binomial_ok(int(by_phase["0"].sum()), 2000, 0.5)


def test_triggered_windows_start_at_the_earliest_event():
    design = make_design("triggered", salt="tr", duration_days=5)
    events = pl.DataFrame(
        {
            "product_id": [1, 1, 2, 99],
            "event_date": [D(2026, 4, 10), D(2026, 4, 3), D(2026, 5, 1), D(2026, 5, 1)],
        }
    )
    with pytest.warns(PricelabWarning) as caught:
        out = assign(design, products(4), events=events)
    messages = " ".join(str(w.message) for w in caught)
    assert "1 product(s) are not in the products table" in messages
    assert "more than one event" in messages
    assert "2 product(s) have no event" in messages
    windows = (
        out.group_by("product_id").agg(pl.col("date").min().alias("first"), pl.len().alias("n")).sort("product_id")
    )
    assert windows.to_dicts() == [
        {"product_id": 1, "first": D(2026, 4, 3), "n": 5},
        {"product_id": 2, "first": D(2026, 5, 1), "n": 5},
    ]


def test_triggered_without_events_is_a_data_error():
    design = make_design("triggered", salt="tr", duration_days=5)
    with pytest.raises(DataError, match="needs `events`"):
        assign(design, products(3))


def test_cluster_assignment_never_splits_a_cluster():
    design = make_design("random-days", salt="cl", start=START, end=D(2026, 3, 15))
    prods = products(600)
    clusters = prods.with_columns((pl.col("product_id") // 7).alias("cluster_id"))
    out = assign(design, prods, clusters=clusters)
    assert "cluster_id" in out.columns
    per_cluster_day = out.group_by("cluster_id", "date").agg(pl.col("treated").n_unique().alias("arms"))
    assert per_cluster_day["arms"].max() == 1
    assert balance_report(out, design).n_units == clusters["cluster_id"].n_unique()


def test_clusters_must_cover_each_product_once():
    design = make_design("time-bound", salt="cl", start=START, end=START)
    prods = products(5)
    with pytest.raises(DataError, match=r"2 product\(s\) have no cluster, e.g. 3"):
        assign(design, prods, clusters=pl.DataFrame({"product_id": [0, 1, 2], "cluster_id": [0, 0, 1]}))
    with pytest.raises(DuplicateKeyError, match="product 1 appears in more than one row"):
        assign(design, prods, clusters=pl.DataFrame({"product_id": [0, 1, 1, 2, 3, 4], "cluster_id": [0] * 6}))


def test_same_salt_same_assignment_other_salt_differs():
    kw = dict(start=START, end=D(2026, 3, 29))
    a = assign(make_design("random-days", salt="one", **kw), products(500))
    b = assign(make_design("random-days", salt="one", **kw), products(500))
    c = assign(make_design("random-days", salt="two", **kw), products(500))
    assert a.equals(b)
    assert not a.equals(c)


def test_integer_and_text_ids_get_the_same_arm():
    design = make_design("time-bound", salt="ids", start=START, end=START)
    as_int = assign(design, pl.DataFrame({"product_id": [1, 42, 7]}))
    as_text = assign(design, pl.DataFrame({"product_id": ["1", "42", "7"]}))
    assert as_int["treated"].to_list() == as_text["treated"].to_list()


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=60, unique=True),
    extra=st.lists(st.integers(min_value=0, max_value=10**9), max_size=30, unique=True),
    drop=st.integers(min_value=0, max_value=59),
    kind=st.sampled_from(["time-bound", "random-days", "crossover"]),
)
def test_adding_or_removing_products_never_moves_another_products_arm(ids, extra, drop, kind):
    kw = {"crossover": dict(phase_days=3, blackout_days=1)}.get(kind, dict(end=D(2026, 3, 8)))
    design = make_design(kind, salt="stable", start=START, **kw)
    base = pl.DataFrame({"product_id": ids})
    grown = pl.DataFrame({"product_id": list(dict.fromkeys(ids + extra))})
    shrunk = base.filter(pl.col("product_id") != ids[drop % len(ids)])
    reference = assign(design, base)
    for other in (grown, shrunk):
        got = assign(design, other)
        common = reference.join(got, on=["product_id", "date"], suffix="_other")
        assert common.height == min(reference.height, got.height), "every shared product-date is compared"
        assert (common["treated"] == common["treated_other"]).all()


def test_balance_report_flags_sample_ratio_mismatch():
    design = make_design("time-bound", salt="srm", start=START, end=D(2026, 3, 8))
    out = assign(design, products(4000))
    fair = balance_report(out, design)
    assert not fair.srm_suspect and fair.n_draws == 4000
    # Losing a third of the treated products (a broken join upstream) must be flagged.
    lost = out.filter(~((pl.col("treated") == 1) & (pl.col("product_id") % 3 == 0)))
    skewed = balance_report(lost, design)
    assert skewed.srm_suspect and skewed.srm_p_value < 1e-6
    assert skewed.daily.height == 7


def _designs():
    return [
        make_design("random-days", salt="a", start=START, end=D(2026, 3, 29), block_days=3),
        make_design("crossover", salt="b", start=START, phase_days=5, blackout_days=2, phases=3),
        make_design("time-bound", salt="c", start=START, end=D(2026, 3, 9), treat_share=0.3),
        make_design("triggered", salt="d", duration_days=6),
    ]


@pytest.mark.parametrize("design", _designs(), ids=lambda d: d.kind)
@pytest.mark.parametrize("by_cluster", [False, True], ids=["products", "clusters"])
def test_pieces_of_a_plan_hold_the_rows_of_the_whole_and_give_the_same_balance(design, by_cluster):
    rng = np.random.default_rng(0)
    prods = pl.DataFrame({"product_id": [f"p{i}" for i in rng.permutation(3000)]})
    clusters = prods.with_columns(cluster_id=pl.int_range(pl.len()) // 7) if by_cluster else None
    events = pl.DataFrame(
        {
            "product_id": prods["product_id"].sample(2000, seed=1),
            "event_date": [START + dt.timedelta(days=int(x)) for x in rng.integers(0, 40, 2000)],
        }
    )
    kw = dict(clusters=clusters, events=events if design.kind == "triggered" else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PricelabWarning)
        whole = assign(design, prods, **kw)
        plan = plan_assignment(design, prods, **kw)
    assert plan.n_rows == whole.height
    assert pl.concat(plan.by_products(max_rows=5000)).equals(whole), "product-major pieces are the frame in order"
    tally = BalanceTally()
    by_date = list(tally.count(plan.by_date()))
    assert all(piece["date"].n_unique() == 1 for piece in by_date), "one date per piece"
    assert [piece["date"][0] for piece in by_date] == sorted(whole["date"].unique())
    assert pl.concat(by_date).equals(whole.sort("date", maintain_order=True)), "products keep their order in a date"
    streamed, reference = plan.balance(tally), balance_report(whole, design)
    for field in ("treated_share", "n_units", "n_draws", "n_treated_draws", "srm_chi2", "srm_p_value"):
        assert getattr(streamed, field) == getattr(reference, field), field
    assert streamed.daily.equals(reference.daily)
    assert reference.n_units == (clusters["cluster_id"].n_unique() if by_cluster else whole["product_id"].n_unique())


def test_a_one_armed_stream_is_said_once_its_counts_are_in():
    design = make_design("time-bound", salt="x", start=START, end=D(2026, 3, 5), treat_share=0.01)
    plan = plan_assignment(design, products(1))
    tally = BalanceTally()
    for _ in tally.count(plan.by_date()):
        pass
    with pytest.warns(PricelabWarning, match="every analysed product-day of this assignment is control"):
        report = plan.balance(tally)
    assert report.treated_share == 0.0 and report.n_draws == 1


def test_unit_keys_continue_the_hash_of_the_salt_prefix_in_blocks(monkeypatch):
    assign_module = sys.modules[assign.__module__]  # the package exports a function of that name
    ids = pl.Series(["", "7", "sku-0042", "prodüct", "a" * 40, "42"])
    whole = [int(fnv1a64(pl.Series([f"s\x1fp\x1f{i}"]))[0]) for i in ids]
    assert unit_keys(ids, "s").tolist() == whole
    monkeypatch.setattr(assign_module, "CHUNK_ROWS", 4)  # blocks of mixed and equal lengths
    assert unit_keys(ids, "s").tolist() == whole
