import dataclasses
import datetime as dt

import pytest

from pricelab_cli.design import design_from_dict, make_design, salt_from_seed
from pricelab_cli.errors import DesignError

D = dt.date


def test_crossover_end_is_derived_from_phases():
    design = make_design("crossover", salt="s", start=D(2026, 3, 2), phase_days=14, blackout_days=7, phases=3)
    assert design.end == D(2026, 4, 12)
    assert design.n_days == 42


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("time-bound", dict(start=D(2026, 3, 2), end=D(2026, 3, 1)), "`end` 2026-03-01 is before `start` 2026-03-02"),
        ("time-bound", dict(end=D(2026, 3, 1)), "needs `start`"),
        (
            "random-days",
            dict(start=D(2026, 3, 2), end=D(2026, 3, 9), block_days=0),
            "`block_days` 0 must be at least 1",
        ),
        ("crossover", dict(start=D(2026, 3, 2), phase_days=7, blackout_days=7), "`blackout_days` 7 must be shorter"),
        ("crossover", dict(start=D(2026, 3, 2), phase_days=7, phases=1), "`phases` 1 must be at least 2"),
        ("crossover", dict(start=D(2026, 3, 2)), "needs `phase_days`"),
        ("triggered", dict(duration_days=0), "`duration_days` 0 must be at least 1"),
        ("triggered", dict(duration_days=5, treat_share=1.0), "treat share 1.0 must lie strictly between 0 and 1"),
        ("triggered", dict(duration_days=5, treat_share=0.0), "treat share 0.0"),
    ],
)
def test_impossible_designs_are_rejected_with_the_value(kind, kwargs, message):
    with pytest.raises(DesignError, match=message.replace("(", r"\(")):
        make_design(kind, salt="s", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kind="time-bound", start=D(2026, 3, 2), end=D(2026, 3, 29)),
        dict(kind="triggered", duration_days=14, treat_share=0.3, name="promo-trigger"),
        dict(kind="random-days", start=D(2026, 3, 2), end=D(2026, 3, 29), block_days=2),
        dict(kind="crossover", start=D(2026, 3, 2), phase_days=14, blackout_days=7, phases=2),
    ],
)
def test_json_form_round_trips(kwargs):
    design = make_design(salt="abc", **kwargs)
    assert design_from_dict(design.to_dict()) == design


def test_json_form_rejects_foreign_documents():
    with pytest.raises(DesignError, match="not a pricelab design"):
        design_from_dict({"kind": "time-bound"}, source="x.json")
    good = make_design("triggered", salt="s", duration_days=3).to_dict()
    with pytest.raises(DesignError, match="unknown field"):
        design_from_dict({**good, "colour": "red"}, source="x.json")
    with pytest.raises(DesignError, match=r"x.json: start '2026-02-30' is not an ISO date"):
        design_from_dict({**good, "kind": "time-bound", "start": "2026-02-30", "end": "2026-03-01"}, source="x.json")


def test_salt_from_seed_is_reproducible_and_random_without_seed():
    march = make_design("time-bound", salt="x", name="march-promo", start=dt.date(2026, 3, 2), end=dt.date(2026, 3, 29))
    assert salt_from_seed(7, march) == salt_from_seed(7, march)
    assert salt_from_seed(7, march) != salt_from_seed(8, march)
    assert salt_from_seed(None, march) != salt_from_seed(None, march)
    # Everything that identifies the experiment is in the hash.
    others = [
        dataclasses.replace(march, name="may-price-test"),
        dataclasses.replace(march, name=None),
        dataclasses.replace(march, start=dt.date(2026, 3, 3)),
        dataclasses.replace(march, end=dt.date(2026, 3, 28)),
        dataclasses.replace(march, kind="random-days", block_days=1),
    ]
    salts = {salt_from_seed(7, d) for d in [march, *others]}
    assert len(salts) == 6
