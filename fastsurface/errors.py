"""The one exception type fastsurface raises for bad input."""

from __future__ import annotations

import numbers
from collections.abc import Sequence


class FastsurfaceError(ValueError):
    """A value passed to fastsurface breaks a documented rule.

    Messages name the argument in backticks, state the rule and quote the value
    received, e.g. "`step` must be > 0, got -0.05".
    """


# Counts above this are typos: no tensor dimension or loop of fastsurface reaches it.
_LARGEST_COUNT = 2**62


def check_positive_int(name: str, value: object) -> None:
    """Raise unless ``value`` is an integer in ``[1, 2**62]`` (``bool`` excluded)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise FastsurfaceError(f"`{name}` must be a positive integer, got {value!r}")
    if int(value) > _LARGEST_COUNT:
        raise FastsurfaceError(f"`{name}` must be a positive integer up to 2**62, got {value!r}")


def check_seed(name: str, value: object) -> None:
    """Raise unless ``value`` is an integer in ``[0, 2**32)``, a seed every generator accepts."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 0 <= int(value) < 2**32:
        raise FastsurfaceError(f"`{name}` must be an integer in [0, 2**32), got {value!r}")


def check_bool(name: str, value: object) -> None:
    """Raise unless ``value`` is ``True`` or ``False`` (a string such as ``"no"`` is not)."""
    if not isinstance(value, bool):
        raise FastsurfaceError(f"`{name}` must be True or False, got {value!r}")


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """Raise unless ``value`` is one of ``choices``, of the choice's type (so an array or a
    number is never taken for a string choice)."""
    if not any(isinstance(value, type(choice)) and value == choice for choice in choices):
        raise FastsurfaceError(f"`{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}")
