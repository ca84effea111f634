"""A small client for the parts of the Octopus REST API octoboot needs (reference §4).

One OctopusClient per Octopus (URL + space) is shared by every machine's thread; httpx's
Client is thread-safe and pools connections. The API key only ever goes into the
X-Octopus-ApiKey header of requests to that Octopus. What every machine needs to know
(the space, the server thumbprint, the environments, the machines already registered) is
read once per client, that is once per run; a 429 is waited out (octoboot.ratelimit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from octoboot.errors import ConfigError, OctobootError
from octoboot.ratelimit import (
    DEFAULT_RETRY_AFTER,
    ApiBudget,
    ApiGate,
    current_budget,
    retry_after_seconds,
    waited,
)

Resource = dict[str, Any]
TASK_DONE = frozenset({"Success", "Failed", "Canceled", "TimedOut"})


class OctopusError(OctobootError):
    """Octopus answered with an error, or could not be reached. Before any host is touched
    this ends the run with exit code 3; during a run it fails the machine's step."""

    exit_code = 3


class OctopusAuthError(OctopusError, ConfigError):
    """401/403: the API key is missing, wrong, or lacks permission: a configuration error."""

    exit_code = ConfigError.exit_code


class OctopusUnavailable(OctopusError):
    """No answer, or 5xx, for longer than the retry budget."""


class OctopusRateLimited(OctopusUnavailable):
    """429 for longer than the machine's deadline (or the retry budget) allows to wait."""


class OctopusValidationError(OctopusError):
    """400/409: Octopus refused the request (e.g. a name that is taken)."""


@dataclass(frozen=True)
class MachineIndex:
    """The machines of a space, looked up by name and by thumbprint without a request."""

    records: tuple[Resource, ...]

    def named(self, name: str) -> list[Resource]:
        wanted = name.strip().lower()
        return [m for m in self.records if m["Name"].strip().lower() == wanted]

    def with_thumbprint(self, thumbprint: str) -> list[Resource]:
        return [m for m in self.records if registered_thumbprint(m) == thumbprint.upper()]


class OctopusClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        space: str | None = None,
        key_hint: str = "OCTOPUS_API_KEY",
        retry_seconds: float = 30.0,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.space_name = space
        self._key_hint = key_hint
        self._retry_seconds = retry_seconds
        self._http = httpx.Client(
            base_url=self.url,
            headers={"X-Octopus-ApiKey": api_key, "Accept": "application/json"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self._lock = threading.Lock()
        self._space_prefix: str | None = None
        self._server_thumbprint: str | None = None
        self._environment_ids: dict[str, str] = {}
        self._gate = ApiGate()
        self._index_lock = threading.Lock()
        self._index: MachineIndex | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OctopusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests ----------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call, retried with back-off on network errors and 502/503/504 (for a
        POST only when it cannot have arrived), for at most retry_seconds."""
        deadline = time.monotonic() + self._retry_seconds
        delay = 0.5
        while True:
            try:
                response = self._send(method, path, **kwargs)
            except httpx.TransportError as exc:
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if (method == "POST" and sent) or time.monotonic() + delay > deadline:
                    raise OctopusUnavailable(
                        f"Octopus at {self.url} did not answer: {exc or type(exc).__name__}"
                    ) from None
            else:
                if response.status_code not in (502, 503, 504) or method == "POST":
                    return self._result(method, path, response)
                if time.monotonic() + delay > deadline:
                    self._result(method, path, response)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, in turn with the other threads' (ApiGate). A 429 was not processed
        (any method may be sent again): wait as Retry-After says and send it again, as long
        as the budget of the machine it is for (else retry_seconds) allows."""
        budget = current_budget()
        while True:
            with self._gate.turn():
                response = self._http.request(method, path, **kwargs)
            if response.status_code != 429:
                return response
            if budget is None:
                budget = ApiBudget(time.monotonic() + self._retry_seconds)
            asked = retry_after_seconds(response.headers.get("Retry-After"))
            wait = max(0.1, DEFAULT_RETRY_AFTER if asked is None else asked)
            if wait > budget.remaining() - 1:
                raise OctopusRateLimited(
                    f"{method} {path}: Octopus at {self.url} is rate-limiting this API key "
                    f"(429) and asks to wait {wait:.0f} s, more than the machine's deadline "
                    "leaves: run fewer machines at once (--workers, --batch), or ask for a "
                    "higher rate limit for the key"
                )
            time.sleep(wait)
            waited(wait)

    def _result(self, method: str, path: str, response: httpx.Response) -> Any:
        code = response.status_code
        if code < 400:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise OctopusError(
                    f"{method} {path}: Octopus at {self.url} answered {code} with something "
                    f"that is not JSON ({response.headers.get('content-type', 'no type')}): "
                    "is the URL right?"
                ) from None
        message = _error_message(response)
        if code in (401, 403):
            raise OctopusAuthError(
                f"Octopus at {self.url} refused the API key ({code}: {message}): "
                f"set a valid key in {self._key_hint}"
            )
        if code in (400, 409):
            raise OctopusValidationError(message)
        if code == 404:
            raise OctopusError(f"{method} {path}: not found (404): {message}")
        raise OctopusUnavailable(f"Octopus at {self.url} failed ({code}): {message}")

    def _paged(self, path: str, params: dict[str, str]) -> Iterator[Resource]:
        page = self.request("GET", path, params=params)
        while True:
            yield from page["Items"]
            following = page.get("Links", {}).get("Page.Next")
            if not following or not page["Items"]:
                return
            page = self.request("GET", following)

    # --- the server --------------------------------------------------------------------

    def connect(self, environments: list[str]) -> dict[str, str]:
        """Check the key and the space, read the server thumbprint, and look up the
        environments (name → Id); raises before any machine is touched if one is missing."""
        root = self.request("GET", "/api")
        with self._lock:
            self._space_prefix = self._find_space(root)
        self.server_thumbprint()
        return {name: self.environment_id(name) for name in environments}

    def _find_space(self, root: Resource) -> str:
        if "Spaces" not in root.get("Links", {}):
            return "/api"  # a server from before spaces: routes are not space-scoped
        spaces = self.request("GET", "/api/spaces/all")
        wanted = (self.space_name or "").strip().lower()
        for space in spaces:
            if (space["Name"].lower() == wanted) if wanted else space.get("IsDefault"):
                return f"/api/{space['Id']}"
        names = ", ".join(s["Name"] for s in spaces)
        what = f'no space named "{self.space_name}"' if wanted else "no default space"
        raise ConfigError(f"Octopus at {self.url} has {what} (spaces: {names})")

    @property
    def _space(self) -> str:
        if self._space_prefix is None:
            raise RuntimeError("OctopusClient.connect() first")
        return self._space_prefix

    def server_thumbprint(self) -> str:
        if self._server_thumbprint is None:
            cert = self.request("GET", "/api/configuration/certificates/certificate-global")
            self._server_thumbprint = cert["Thumbprint"].upper()
        return self._server_thumbprint

    def environment_id(self, name: str) -> str:
        if name not in self._environment_ids:
            found = [
                e
                for e in self._paged(f"{self._space}/environments", {"name": name})
                if e["Name"].strip().lower() == name.strip().lower()
            ]
            if not found:
                raise ConfigError(
                    f'Octopus at {self.url} has no environment "{name}": create it in '
                    "Octopus, or fix `environment` in the inventory"
                )
            self._environment_ids[name] = found[0]["Id"]
        return self._environment_ids[name]

    # --- machines ----------------------------------------------------------------------

    def machines_named(self, name: str) -> list[Resource]:
        """Exact, case-insensitive name matches (the server's filter may be looser)."""
        wanted = name.strip().lower()
        return [
            m
            for m in self._paged(f"{self._space}/machines", {"name": name})
            if m["Name"].strip().lower() == wanted
        ]

    def machine_index(self) -> MachineIndex:
        """Every machine of the space, read once per client (so once per run, however many
        machines ask) and looked up locally. Records a run changes are not updated here:
        each machine looks up only its own name and thumbprint, before it changes them."""
        with self._index_lock:
            if self._index is None:
                records = self.request("GET", f"{self._space}/machines/all")
                self._index = MachineIndex(tuple(records))
            return self._index

    def machines_with_thumbprint(self, thumbprint: str) -> list[Resource]:
        return self.request("GET", f"{self._space}/machines/all", params={"thumbprint": thumbprint})

    def machines_in_environment(self, environment_id: str) -> list[Resource]:
        return self.request(
            "GET", f"{self._space}/machines/all", params={"environmentIds": environment_id}
        )

    def machine(self, machine_id: str) -> Resource:
        return self.request("GET", f"{self._space}/machines/{machine_id}")

    def create_machine(self, body: Resource) -> Resource:
        return self.request("POST", f"{self._space}/machines", json=body)

    def update_machine(self, resource: Resource) -> Resource:
        return self.request("PUT", f"{self._space}/machines/{resource['Id']}", json=resource)

    def delete_machine(self, machine_id: str) -> None:
        """Delete a machine; one already gone (e.g. a retried DELETE whose first attempt
        arrived) counts as deleted."""
        try:
            self.request("DELETE", f"{self._space}/machines/{machine_id}")
        except OctopusError as exc:
            if "(404)" not in str(exc):
                raise

    # --- health tasks (octoboot.health runs them) -------------------------------------------

    def start_health_task(
        self, machine_ids: list[str], environment_id: str, *, machine_timeout: int = 60
    ) -> Resource:
        """Queue one Health task for these machines (of one environment)."""
        timeout = f"00:{machine_timeout // 60:02d}:{machine_timeout % 60:02d}"
        return self.request(
            "POST",
            f"{self._space}/tasks",
            json={
                "Name": "Health",
                "Description": f"octoboot: check {len(machine_ids)} machine(s)",
                "Arguments": {
                    "Timeout": "00:05:00",
                    "MachineTimeout": timeout,
                    "EnvironmentId": environment_id,
                    "MachineIds": machine_ids,
                },
            },
        )

    def task(self, task_id: str) -> Resource:
        return self.request("GET", f"/api/tasks/{task_id}")

    def task_details(self, task_id: str) -> Resource:
        """The task with its activity log (`ActivityLogs`): where each machine's outcome is."""
        return self.request("GET", f"/api/tasks/{task_id}/details")

    def unfinished_tasks(self) -> list[Resource]:
        """Every task queued or running on the server, octoboot's or not."""
        return list(self._paged("/api/tasks", {"states": "Queued,Executing", "take": "100"}))

    def machines_by_id(self, machine_ids: list[str]) -> dict[str, Resource]:
        found: dict[str, Resource] = {}
        for first in range(0, len(machine_ids), 50):  # a query string has its limits
            ids = ",".join(machine_ids[first : first + 50])
            for record in self._paged(f"{self._space}/machines", {"ids": ids, "take": "50"}):
                found[record["Id"]] = record
        return found


def registered_thumbprint(record: Resource) -> str:
    """The thumbprint a machine record is registered with ('' if none), upper-case."""
    return str((record.get("Endpoint") or {}).get("Thumbprint") or "").upper()


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:200]
    errors = [e for e in body.get("Errors") or [] if e != body.get("ErrorMessage")]
    return "; ".join([body.get("ErrorMessage") or response.reason_phrase, *errors])
