"""The little of Octopus.Client that register-with and deregister-from need, over urllib.

HTTP failures become the exceptions Octopus.Client raises (OctopusExceptionFactory):
400/409 validation, 401/403 security, 404 not found, anything else a server error; network
failures an HttpRequestException. The root document is retried for up to a minute on network
errors and 503, as Octopus.Client does.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

_TIMEOUT_SECONDS = 30
_ROOT_RETRY_SECONDS = 60
_ROOT_RETRY_PAUSE = 1.0
_TEMPLATE = re.compile(r"\{([/?&]?)([^}]*)\}")


class OctopusException(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OctopusValidationException(OctopusException):
    """400 or 409: the server refused the request as invalid (a controlled failure for Tentacle)."""


class OctopusSecurityException(OctopusException):
    """401 or 403: no valid API key, or no permission."""


class OctopusResourceNotFoundException(OctopusException):
    pass


class OctopusServerException(OctopusException):
    pass


class HttpRequestException(Exception):
    """The server could not be reached at all."""


def expand(template: str, **values: Any) -> str:
    """Fill an Octopus link template (the RFC 6570 forms it uses: `{x}`, `{/id}`, `{?a,b}`)."""

    def one(match: re.Match) -> str:
        operator, names = match[1], match[2].split(",")
        given = [(n, values[n]) for n in names if values.get(n) is not None]
        if operator == "/":
            return "".join("/" + urllib.parse.quote(str(v), safe="") for _, v in given)
        if operator in ("?", "&"):
            return operator + urllib.parse.urlencode(given) if given else ""
        return ",".join(urllib.parse.quote(str(v), safe="") for _, v in given)

    return _TEMPLATE.sub(one, template)


def _error(status: int, body: bytes) -> OctopusException:
    try:
        contract = json.loads(body)
        message = contract.get("ErrorMessage") or body.decode(errors="replace")
        errors = contract.get("Errors") or []
    except (ValueError, AttributeError):
        message, errors = body.decode(errors="replace"), []
    if status in (400, 409):
        details = "".join(f"\n - {e}" for e in errors)
        return OctopusValidationException(status, message + details)
    if status in (401, 403):
        return OctopusSecurityException(status, message)
    if status == 404:
        return OctopusResourceNotFoundException(status, message)
    return OctopusServerException(status, f"Octopus Server returned an error: {message}")


class OctopusClient:
    def __init__(self, server: str, headers: dict[str, str]) -> None:
        self.server = server.rstrip("/") + "/"
        self.headers = {"Accept": "application/json", **headers}

    def request(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        url = urllib.parse.urljoin(self.server, path.lstrip("/"))
        if query:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise _error(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HttpRequestException(f"{reason} ({url})") from None
        return json.loads(payload) if payload.strip() else None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, **query)

    def root(self) -> dict:
        """GET /api, retried for a minute while the server is unreachable or answers 503."""
        deadline = time.monotonic() + _ROOT_RETRY_SECONDS
        while True:
            try:
                return self.get("/api")
            except (HttpRequestException, OctopusServerException) as exc:
                retryable = not isinstance(exc, OctopusServerException) or exc.status == 503
                if not retryable or time.monotonic() >= deadline:
                    raise
                time.sleep(_ROOT_RETRY_PAUSE)
