"""The settings of ``simulate_sales`` and the checks of the simulators' scalar arguments.

Every check raises ``UsageError`` naming the parameter in backquotes; the command line turns
each such name into its flag.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pricelab_cli.errors import UsageError

CONTAMINATION_KINDS = ("noise", "jump", "spike", "stockout", "outlier")
ADDITIVE_CONTAMINATION = ("noise", "jump", "spike", "stockout")

# The numeric settings after ``history_days``, in the order they are checked and reported,
# each with its rule and the requirement its message states.
_NUMBER_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "price_change": (lambda v: v > -1.0, "greater than -1 (a cut of 100% leaves no price)"),
    "elasticity": (lambda v: True, ""),
    "heterogeneity": (lambda v: True, ""),
    "trend_sd": (lambda v: v >= 0.0, "at least 0"),
    "weekly": (lambda v: v >= 0.0, "at least 0"),
    "shock_sd": (lambda v: v >= 0.0, "at least 0"),
    "promo_rate": (lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
    "promo_depth": (lambda v: 0.0 <= v < 1.0, "at least 0 and below 1"),
    "outlier_share": (lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
    "contamination": (lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
    "carryover_days": (lambda v: v >= 0.0, "at least 0 (0 means no carryover)"),
    "base_units": (lambda v: v > 0.0, "greater than 0"),
    "dispersion": (lambda v: v > 0.0, "greater than 0 (larger is closer to Poisson)"),
}


@dataclasses.dataclass(frozen=True)
class SalesSettings:
    """The checked settings of ``simulate_sales`` (its parameters of the same names).

    The numbers are plain ``int`` (``history_days``) and ``float``; ``numbers()`` gives them
    in the order the truth reports them.
    """

    history_days: int
    price_change: float
    elasticity: float
    heterogeneity: float
    trend_sd: float
    weekly: float
    shock_sd: float
    promo_rate: float
    promo_depth: float
    outlier_share: float
    contamination: float
    carryover_days: float
    base_units: float
    dispersion: float
    spillover: bool
    contamination_kinds: tuple[str, ...]
    seed: int

    @classmethod
    def checked(cls, arguments: Mapping[str, Any]) -> SalesSettings:
        """The settings among ``simulate_sales``'s arguments (by name), checked in the order
        of its signature: the numbers, the contamination kinds, then the seed."""
        check_count("history_days", arguments["history_days"], 0)
        numbers = {name: _checked_number(name, arguments[name], *rule) for name, rule in _NUMBER_RULES.items()}
        kinds = checked_kinds(arguments["contamination_kinds"])
        check_count("seed", arguments["seed"], 0)
        return cls(
            history_days=int(arguments["history_days"]),
            **numbers,
            spillover=bool(arguments["spillover"]),
            contamination_kinds=kinds,
            seed=arguments["seed"],
        )

    def numbers(self) -> dict[str, int | float]:
        """``history_days`` and the numeric settings, by name, in the order they are checked."""
        return {name: getattr(self, name) for name in ("history_days", *_NUMBER_RULES)}

    @property
    def log_cut(self) -> float:
        """``log(1 + price_change)``: the treatment's change of log price."""
        return math.log1p(self.price_change)


def flag_name(name: str) -> str:
    """A parameter as messages name it (the command line shows its flag)."""
    return f"`{name}`"


def check_count(name: str, value: Any, minimum: int) -> None:
    """``value`` must be an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"{flag_name(name)} must be an integer of at least {minimum}; got {value!r}.")


def _checked_number(name: str, value: Any, ok: Callable[[float], bool], requirement: str) -> float:
    """``value`` as a float when it is a finite number (not a bool) that passes ``ok``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or not ok(number):
        wanted = f"a finite number {requirement}".rstrip()
        raise UsageError(f"{flag_name(name)} must be {wanted}; got {value!r}.")
    return number


def checked_kinds(kinds: Sequence[str] | str) -> tuple[str, ...]:
    """Contamination kinds as a tuple of known names (a comma-separated text is accepted)."""
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in CONTAMINATION_KINDS]
    if unknown:
        raise UsageError(
            f"`contamination_kinds`: {unknown[0]!r} is not a kind; choose from {', '.join(CONTAMINATION_KINDS)}."
        )
    return tuple(dict.fromkeys(kinds))
