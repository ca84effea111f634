"""One request as a route handler sees it (`Call`: method, path, query, body, the path's
parameters), what a handler answers (`Handler`), and Octopus's error body, with `ApiError`
for the HTTP errors the HTTP layer itself raises (401, 404 for an unknown route, 405, a bad
query or body)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from octoboot.sandbox.octopus_api.records import Resource


class ApiError(Exception):
    """An HTTP error answered with Octopus's error body."""

    def __init__(self, status: int, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.errors = list(errors)


def error_body(message: str, errors: Sequence[str] = (), full: str | None = None) -> Resource:
    return {
        "ErrorMessage": message,
        "Errors": list(errors),
        "FullException": full,
        "HelpText": None,
        "HelpLink": None,
        "Details": None,
        "ParsedHelpLinks": [],
    }


@dataclass
class Call:
    """One request as the route handlers see it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def value(self, name: str) -> str | None:
        """The last non-blank value of a query parameter (names are case-insensitive)."""
        values = [v.strip() for k, v in self.query if k.lower() == name.lower() and v.strip()]
        return values[-1] if values else None

    def values(self, name: str) -> set[str]:
        """A list parameter, given as a comma list and/or repeated, case-folded."""
        return {
            item.strip().casefold()
            for k, v in self.query
            if k.lower() == name.lower()
            for item in v.split(",")
            if item.strip()
        }

    def integer(self, name: str, default: int) -> int:
        text = self.value(name)
        if text is None:
            return default
        if not text.isdigit():
            raise ApiError(400, f"The query parameter '{name}' must be a whole number.")
        return int(text)

    def json(self) -> Resource:
        try:
            parsed = json.loads(self.body)
        except ValueError as exc:
            raise ApiError(400, f"The request body is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return parsed


# (status, JSON payload) for one call.
Handler = Callable[[Call], tuple[int, Any]]
