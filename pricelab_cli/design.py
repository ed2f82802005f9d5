"""Experiment designs: what is treated when, written as a small JSON spec.

A design holds no products. ``assign`` expands it over a product list; the design only says
how dates are cut into randomisation periods, which periods are blackout, and the salt that
makes the hash-based draws reproducible.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn, cast

from pricelab_cli.errors import DesignError

if TYPE_CHECKING:  # numpy is loaded only where a calendar is drawn: writing a design needs none
    import numpy as np

KINDS = ("time-bound", "triggered", "random-days", "crossover", "balanced-switchback")
# Kinds that re-randomise every block of ``block_days`` days.
BLOCK_KINDS = ("random-days", "balanced-switchback")
SPEC_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Calendar:
    """Per day: ``period`` (the number written in the assignment), ``draw_period`` (the
    period whose hash draw decides the arm), ``flipped`` (arms swapped: a crossover's odd
    phases) and ``blackout`` (the arm holds but the day is not analysed)."""

    period: np.ndarray
    draw_period: np.ndarray
    flipped: np.ndarray
    blackout: np.ndarray


@dataclasses.dataclass(frozen=True)
class Design:
    """A validated experiment design.

    Attributes
    ----------
    kind : one of ``KINDS``.
    start, end : first and last experiment date (``None`` for triggered designs, whose
        windows start at each product's event).
    treat_share : probability that a randomisation unit is treated (in the first phase for
        crossover designs).
    salt : text mixed into every hash draw; the same salt gives the same assignment.
    block_days : random-days and balanced-switchback, length of each re-randomised block.
    duration_days : triggered only, window length from the event date.
    phase_days, phases : crossover only.
    blackout_days : crossover, the blackout days opening each phase; balanced-switchback,
        the blackout days opening each block after the first (a switch, for some units).
    description : what the experiment changes, in words (e.g. "10% price cut"), for reports.
    salt_from : how the salt was made: ``seed`` (hashed from the seed with what identifies
        the experiment, see ``salt_from_seed``), ``random`` or ``given``.
    """

    kind: str
    salt: str
    treat_share: float = 0.5
    name: str | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    block_days: int | None = None
    duration_days: int | None = None
    phase_days: int | None = None
    blackout_days: int | None = None
    phases: int | None = None
    description: str | None = None
    salt_from: str | None = None

    @property
    def label(self) -> str:
        """The name reports use for this design: its ``name``, else its kind."""
        return self.name or self.kind

    def calendar(self, day_offsets: np.ndarray) -> Calendar:
        """The design's calendar at these days (counted from its start, or from a product's
        event for a triggered design): the one rule that ``assign`` writes and that ipw and
        power replay, so a design kind cannot mean one thing in one command and another in
        the next."""
        import numpy as np

        offsets = np.asarray(day_offsets, dtype=np.int64)
        length = {
            "random-days": self.block_days,
            "balanced-switchback": self.block_days,
            "crossover": self.phase_days,
        }.get(self.kind)
        period = offsets // length if length else np.zeros_like(offsets)
        if self.kind == "crossover":
            if self.phase_days is None:
                _missing(self, "phase_days")
            # One draw per unit decides its group; the groups swap arms every phase.
            return Calendar(
                period, np.zeros_like(period), period % 2 == 1, (offsets % self.phase_days) < (self.blackout_days or 0)
            )
        no = np.zeros(len(offsets), dtype=bool)
        if self.kind == "balanced-switchback" and self.blackout_days and length:
            # Every block but the first opens with a switch for some units; the first follows
            # the untreated pre-period, so nothing carries over into it.
            return Calendar(period, period, no, (period > 0) & ((offsets % length) < self.blackout_days))
        return Calendar(period, period, no, no.copy())

    @property
    def n_days(self) -> int:
        """Experiment length in days (per product window for triggered designs)."""
        if self.kind == "triggered":
            if self.duration_days is None:
                _missing(self, "duration_days")
            return self.duration_days
        if self.start is None or self.end is None:
            _missing(self, "start" if self.start is None else "end")
        return (self.end - self.start).days + 1

    @property
    def n_blocks(self) -> int:
        """Randomisation blocks of a kind with ``block_days`` (the last may be shorter)."""
        if self.block_days is None:
            _missing(self, "block_days")
        return -(-self.n_days // self.block_days)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: plain values, dates as ISO text, unused fields left out."""
        out: dict[str, Any] = {"pricelab_design": SPEC_VERSION}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            out[field.name] = value.isoformat() if isinstance(value, dt.date) else value
        return out


# How a design's salt was made (``Design.salt_from``).
SALT_SOURCES = ("seed", "random", "given")


def salt_from_seed(seed: int | None, design: Design) -> str:
    """A salt: random without ``seed``; with it, a hash of the seed and of what identifies the
    experiment (``design``'s kind, name and dates, or window length for a triggered design),
    so two experiments that differ in any of them draw independent arms from the same seed
    (the experiment key is part of the hash), and the same experiment redrawn gets the same
    salt."""
    if seed is None:
        return secrets.token_hex(8)
    parts = (design.kind, design.name or "", design.start, design.end, design.duration_days)
    key = "\x1f".join(["pricelab-salt:2", str(seed), *("" if p is None else str(p) for p in parts)])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def make_design(
    kind: str,
    *,
    salt: str,
    treat_share: float = 0.5,
    name: str | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    block_days: int = 1,
    duration_days: int | None = None,
    phase_days: int | None = None,
    blackout_days: int = 0,
    phases: int = 2,
    description: str | None = None,
    salt_from: str | None = None,
) -> Design:
    """Build and validate a design of ``kind``; raise DesignError if it cannot be run."""
    if kind not in KINDS:
        raise DesignError(f"unknown design kind {kind!r}; use one of {', '.join(KINDS)}.")
    common = Design(
        kind=kind, salt=salt, treat_share=treat_share, name=name, description=description, salt_from=salt_from
    )
    if kind == "time-bound":
        design = dataclasses.replace(common, start=start, end=end)
    elif kind == "random-days":
        design = dataclasses.replace(common, start=start, end=end, block_days=block_days)
    elif kind == "balanced-switchback":
        design = dataclasses.replace(common, start=start, end=end, block_days=block_days, blackout_days=blackout_days)
    elif kind == "triggered":
        design = dataclasses.replace(common, duration_days=duration_days)
    else:
        design = dataclasses.replace(
            common,
            start=start,
            end=_crossover_end(start, phase_days, phases),
            phase_days=phase_days,
            blackout_days=blackout_days,
            phases=phases,
        )
    validate(design)
    return design


def _crossover_end(start: dt.date | None, phase_days: int | None, phases: int | None) -> dt.date | None:
    if start is None or not phase_days or not phases or phase_days < 1 or phases < 1:
        return None
    return start + dt.timedelta(days=phase_days * phases - 1)


def _missing(design: Design, field: str) -> NoReturn:
    raise DesignError(f"a {design.kind} design needs `{field}`.")


def validate(design: Design) -> None:
    """Raise DesignError naming the value that makes ``design`` impossible to run."""
    if not 0.0 < design.treat_share < 1.0:
        raise DesignError(
            f"treat share {design.treat_share} must lie strictly between 0 and 1 (both arms need products)."
        )
    if not design.salt:
        raise DesignError("the salt must not be empty.")
    if design.kind == "triggered":
        if design.duration_days is None:
            _missing(design, "duration_days")
        if design.duration_days < 1:
            raise DesignError(f"`duration_days` {design.duration_days} must be at least 1.")
        return
    if design.kind == "crossover":
        if design.phase_days is None:
            _missing(design, "phase_days")
        if design.phase_days < 1:
            raise DesignError(f"`phase_days` {design.phase_days} must be at least 1.")
        if design.phases is None or design.phases < 2:
            raise DesignError(f"`phases` {design.phases} must be at least 2 (arms swap between phases).")
        if design.blackout_days is None or design.blackout_days < 0:
            raise DesignError(f"`blackout_days` {design.blackout_days} must be 0 or more.")
        if design.blackout_days >= design.phase_days:
            raise DesignError(
                f"`blackout_days` {design.blackout_days} must be shorter than `phase_days` "
                f"{design.phase_days}, or no day of a phase is left to analyse."
            )
    if design.start is None:
        _missing(design, "start")
    if design.end is None:
        _missing(design, "end")
    if design.end < design.start:
        raise DesignError(f"`end` {design.end} is before `start` {design.start}.")
    if design.kind in BLOCK_KINDS and (design.block_days is None or design.block_days < 1):
        raise DesignError(f"`block_days` {design.block_days} must be at least 1.")
    if design.kind == "balanced-switchback":
        if design.blackout_days is None or design.blackout_days < 0:
            raise DesignError(f"`blackout_days` {design.blackout_days} must be 0 or more.")
        if design.blackout_days >= cast(int, design.block_days):
            raise DesignError(
                f"`blackout_days` {design.blackout_days} must be shorter than `block_days` "
                f"{design.block_days}, or no day of a block is left to analyse."
            )


def _date(value: Any, field: str, source: str) -> dt.date | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 10 or value[4] != "-" or value[7] != "-":
        raise DesignError(f'{source}: {field} must be a date in quotes ("YYYY-MM-DD"), not {value!r}.')
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise DesignError(f"{source}: {field} {value!r} is not an ISO date (YYYY-MM-DD).") from exc


def design_from_dict(spec: Mapping[str, Any], source: str = "design") -> Design:
    """Read a design from its JSON form, validating it as ``make_design`` does."""
    if spec.get("pricelab_design") != SPEC_VERSION:
        raise DesignError(
            f'{source}: not a pricelab design (expected "pricelab_design": {SPEC_VERSION}); '
            "write one with `pricelab design`."
        )
    known = {f.name for f in dataclasses.fields(Design)}
    unknown = sorted(set(spec) - known - {"pricelab_design", "provenance"})
    if unknown:
        raise DesignError(f"{source}: unknown field(s) {', '.join(map(repr, unknown))}.")
    if spec.get("kind") not in KINDS:
        raise DesignError(f"{source}: kind {spec.get('kind')!r} is not one of {', '.join(KINDS)}.")
    values = dict(spec)
    values.pop("pricelab_design")
    values.pop("provenance", None)
    values["start"] = _date(values.get("start"), "start", source)
    values["end"] = _date(values.get("end"), "end", source)
    # Hand-edited values of the wrong type are refused, never coerced: 14.5 days is not 14.
    share = values.get("treat_share", 0.5)
    if isinstance(share, bool) or not isinstance(share, (int, float)):
        raise DesignError(f"{source}: treat_share must be a number between 0 and 1, not {share!r}.")
    values["treat_share"] = float(share)
    for field in ("block_days", "duration_days", "phase_days", "blackout_days", "phases"):
        value = values.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise DesignError(f"{source}: {field} must be a whole number of days or phases, not {value!r}.")
    for field in ("salt", "name", "description", "salt_from"):
        value = values.get(field)
        if value is not None and not isinstance(value, str):
            raise DesignError(f"{source}: {field} must be text, not {value!r}.")
    if values.get("salt_from") is not None and values["salt_from"] not in SALT_SOURCES:
        raise DesignError(f"{source}: salt_from {values['salt_from']!r} is not one of {', '.join(SALT_SOURCES)}.")
    values["salt"] = values.get("salt") or ""
    needed = {
        "time-bound": ("start", "end"),
        "triggered": ("duration_days",),
        "random-days": ("start", "end", "block_days"),
        "crossover": ("start", "phase_days", "blackout_days", "phases"),
        "balanced-switchback": ("start", "end", "block_days", "blackout_days"),
    }[values["kind"]]
    missing = [field for field in needed if values.get(field) is None]
    if missing:
        raise DesignError(f"{source}: a {values['kind']} design needs {', '.join(missing)}, which is missing or null.")
    design = Design(**values)
    try:
        validate(design)
    except DesignError as exc:
        raise DesignError(f"{source}: {exc}") from exc
    if design.kind == "crossover" and design.end != _crossover_end(design.start, design.phase_days, design.phases):
        raise DesignError(f"{source}: end {design.end} does not match start + phases x phase_days.")
    return design
