"""What every part of the Octopus stand-in says the same way: a record (`Resource`), the one
space and user, the errors a request ends in (400 with Octopus's validation texts, 404, 500),
and Octopus's forms of times, time spans and names.

The model (`state`), the catalog's rules (`catalog`) and the HTTP layer all build on this
module, which builds on nothing of theirs.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

Resource = dict[str, Any]

SPACE_ID = "Spaces-1"
USER_NAME = "admin"
_TIMESPAN = re.compile(r"(?:(?P<d>\d+)\.)?(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d+)?)")


GENERIC_PROBLEM = "There was a problem with your request."


class ValidationError(Exception):
    """A request the server refuses with 400: ErrorMessage plus the list of Errors."""

    def __init__(self, *errors: str, headline: str | None = None) -> None:
        # One problem is its own headline; several get Octopus's generic one.
        super().__init__(headline or (errors[0] if len(errors) == 1 else GENERIC_PROBLEM))
        self.errors = list(errors)


class NotFoundError(Exception):
    """No resource with that Id: 404."""


class ServerError(Exception):
    """What the real server does not handle but fails on: 500 with its message."""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime) -> str:
    """Octopus's timestamp form: 2024-08-27T17:39:57.123+00:00."""
    return moment.isoformat(timespec="milliseconds")


def human_time(moment: dt.datetime) -> str:
    """The long form Octopus puts in summaries: Tuesday, 27 August 2024 5:39:57 PM +00:00."""
    hour = moment.hour % 12 or 12
    return f"{moment:%A}, {moment.day} {moment:%B %Y} {hour}:{moment:%M:%S %p} +00:00"


def human_duration(seconds: float) -> str:
    if seconds < 1:
        return "less than a second"
    if seconds < 60:
        whole = int(seconds)
        return f"{whole} second" if whole == 1 else f"{whole} seconds"
    minutes = int(seconds // 60)
    return f"{minutes} minute" if minutes == 1 else f"{minutes} minutes"


def parse_timespan(text: object, default: float) -> float:
    """Seconds in a .NET TimeSpan string ("00:05:00", "1.02:00:00"); default when absent."""
    if text is None or text == "":
        return default
    match = _TIMESPAN.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValidationError(f"'{text}' is not a valid time span; use HH:MM:SS.")
    days = int(match["d"] or 0)
    return ((days * 24 + int(match["h"])) * 60 + int(match["m"])) * 60 + float(match["s"])


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def same_name(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def string_list(body: Resource, field: str, errors: list[str]) -> list[str]:
    value = body.get(field)
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    errors.append(f"{field} must be a list of strings.")
    return []


def known(records: list[Resource], record_id: str) -> bool:
    """Whether a resource with this Id (without case) is among records."""
    return any(record["Id"].casefold() == record_id.casefold() for record in records)
