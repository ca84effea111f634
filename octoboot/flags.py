"""Numbers from command-line flags, as Invoke gives them (text): one parse and one wording for
every flag that takes a number, a wrong one being a ConfigError saying which flag and why."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, overload

from octoboot.errors import ConfigError

N = TypeVar("N", int, float)


@overload
def number(
    value: None,
    flag: str,
    kind: Callable[[Any], N],
    *,
    more_than: float | None = None,
    at_least: float | None = None,
) -> None: ...


@overload
def number(
    value: str | float,
    flag: str,
    kind: Callable[[Any], N],
    *,
    more_than: float | None = None,
    at_least: float | None = None,
) -> N: ...


def number(
    value: str | float | None,
    flag: str,
    kind: Callable[[Any], N],
    *,
    more_than: float | None = None,
    at_least: float | None = None,
) -> N | None:
    """A finite number of `kind` (int or float) from a flag, or None when the flag was not
    given; more_than / at_least: the bound it must keep."""
    if value is None:
        return None
    try:
        parsed = kind(value)
    except ValueError:
        raise ConfigError(f"{flag} takes a number, not {value!r}") from None
    if not math.isfinite(parsed):
        raise ConfigError(f"{flag} takes a finite number, not {value!r}")
    if more_than is not None and parsed <= more_than:
        raise ConfigError(f"{flag} must be more than {more_than:g}, not {value}")
    if at_least is not None and parsed < at_least:
        raise ConfigError(f"{flag} must be at least {at_least:g}, not {value}")
    return parsed
