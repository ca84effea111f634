"""A small client for the parts of the Octopus REST API octoboot needs (reference §4).

One OctopusClient per Octopus (URL + space) is shared by every machine's thread; httpx's
Client is thread-safe and pools connections. The API key only ever goes into the
X-Octopus-ApiKey header of requests to that Octopus.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from octoboot.errors import ConfigError, OctobootError

Resource = dict[str, Any]
TASK_DONE = frozenset({"Success", "Failed", "Canceled", "TimedOut"})
STATIC_POOL = "StaticWorkerPool"


class OctopusError(OctobootError):
    """Octopus answered with an error, or could not be reached. Before any host is touched
    this ends the run with exit code 3; during a run it fails the machine's step."""

    exit_code = 3


class OctopusAuthError(OctopusError, ConfigError):
    """401/403: the API key is missing, wrong, or lacks permission: a configuration error."""

    exit_code = ConfigError.exit_code


class OctopusUnavailable(OctopusError):
    """No answer, or 5xx, for longer than the retry budget."""


class OctopusValidationError(OctopusError):
    """400/409: Octopus refused the request (e.g. a name that is taken)."""


@dataclass(frozen=True)
class HealthCheck:
    task_id: str
    state: str
    health_status: str
    summary: str


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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """transport: httpx's default (real HTTP) unless given, e.g. an httpx.MockTransport
        in unit tests."""
        self.url = url.rstrip("/")
        self.space_name = space
        self._key_hint = key_hint
        self._retry_seconds = retry_seconds
        self._http = httpx.Client(
            base_url=self.url,
            headers={"X-Octopus-ApiKey": api_key, "Accept": "application/json"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            transport=transport,
        )
        self._lock = threading.Lock()
        self._space_prefix: str | None = None
        self._server_thumbprint: str | None = None
        self._environment_ids: dict[str, str] = {}
        self._worker_pools: list[Resource] | None = None

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
                response = self._http.request(method, path, **kwargs)
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

    def worker_pool_ids(self, wanted: list[str]) -> dict[str, str]:
        """Worker pools by name, then slug, then Id, each without case, as `register-worker`
        finds them (name → Id); read once per client. Raises before any machine is touched
        if one is missing, or is dynamic: only static pools take workers (a dynamic one is
        refused by the server: OctopusTentacle#331)."""
        if self._worker_pools is None:
            self._worker_pools = self.request("GET", f"{self._space}/workerpools/all")
        found, missing = {}, []
        for item in wanted:
            key = item.strip().lower()
            pool = next(
                (
                    p
                    for field in ("Name", "Slug", "Id")
                    for p in self._worker_pools
                    if str(p.get(field) or "").strip().lower() == key
                ),
                None,
            )
            if pool is None:
                missing.append(item)
            elif pool.get("WorkerPoolType", STATIC_POOL) != STATIC_POOL:
                raise ConfigError(
                    f'worker pool "{pool["Name"]}" ({pool["Id"]}) is a {pool["WorkerPoolType"]}: '
                    "Octopus adds workers only to static pools; name a static pool in "
                    "worker_pools"
                )
            else:
                found[item] = pool["Id"]
        if missing:
            known = ", ".join(p["Name"] for p in self._worker_pools) or "none"
            raise ConfigError(
                f"Octopus at {self.url} has no worker pool named, with slug or Id "
                f"{', '.join(map(repr, missing))} (pools: {known}): create it in Octopus, or "
                "fix worker_pools in the inventory"
            )
        return found

    # --- machines (deployment targets) and workers ---------------------------------------
    # collection: "machines" (deployment targets) or "workers": Octopus keeps both kinds
    # alike, each under its own route.

    def machines_named(self, name: str, collection: str = "machines") -> list[Resource]:
        """Exact, case-insensitive name matches (the server's filter may be looser)."""
        wanted = name.strip().lower()
        return [
            m
            for m in self._paged(f"{self._space}/{collection}", {"name": name})
            if m["Name"].strip().lower() == wanted
        ]

    def machines_with_thumbprint(
        self, thumbprint: str, collection: str = "machines"
    ) -> list[Resource]:
        return self.request(
            "GET", f"{self._space}/{collection}/all", params={"thumbprint": thumbprint}
        )

    def machines_in_environment(self, environment_id: str) -> list[Resource]:
        return self.request(
            "GET", f"{self._space}/machines/all", params={"environmentIds": environment_id}
        )

    def workers_in_pool(self, pool_id: str) -> list[Resource]:
        return self.request("GET", f"{self._space}/workers/all", params={"workerpoolIds": pool_id})

    def machine(self, machine_id: str, collection: str = "machines") -> Resource:
        return self.request("GET", f"{self._space}/{collection}/{machine_id}")

    def create_machine(self, body: Resource, collection: str = "machines") -> Resource:
        return self.request("POST", f"{self._space}/{collection}", json=body)

    def update_machine(self, resource: Resource, collection: str = "machines") -> Resource:
        return self.request("PUT", f"{self._space}/{collection}/{resource['Id']}", json=resource)

    def delete_machine(self, machine_id: str, collection: str = "machines") -> None:
        """Delete a machine; one already gone (e.g. a retried DELETE whose first attempt
        arrived) counts as deleted."""
        try:
            self.request("DELETE", f"{self._space}/{collection}/{machine_id}")
        except OctopusError as exc:
            if "(404)" not in str(exc):
                raise

    # --- health --------------------------------------------------------------------------

    def check_health(
        self,
        machine_id: str,
        environment_id: str | None,
        *,
        deadline_in: float,
        machine_timeout: int = 60,
        cancelled: threading.Event | None = None,
        collection: str = "machines",
    ) -> HealthCheck:
        """Start a Health task for one machine (a worker: environment_id None; MachineIds
        takes workers' Ids too, as Octopus.Client's ExecuteHealthCheck sends them) and wait up
        to deadline_in seconds for it (less if `cancelled` is set: the caller gave up)."""
        deadline = time.monotonic() + deadline_in
        timeout = f"00:{machine_timeout // 60:02d}:{machine_timeout % 60:02d}"
        arguments: Resource = {"Timeout": "00:05:00", "MachineTimeout": timeout}
        if environment_id is not None:
            arguments["EnvironmentId"] = environment_id
        task = self.request(
            "POST",
            f"{self._space}/tasks",
            json={
                "Name": "Health",
                "Description": f"octoboot: check {machine_id}",
                "Arguments": {**arguments, "MachineIds": [machine_id]},
            },
        )
        delay, stop = 0.1, cancelled or threading.Event()
        while task["State"] not in TASK_DONE:
            if time.monotonic() + delay > deadline:
                raise TimeoutError(f"health task {task['Id']} still {task['State']}")
            if stop.wait(delay):
                raise TimeoutError(f"gave up waiting for health task {task['Id']}")
            delay = min(delay * 1.5, 2.0)
            task = self.request("GET", f"/api/tasks/{task['Id']}")
        machine = self.machine(machine_id, collection)
        return HealthCheck(
            task_id=task["Id"],
            state=task["State"],
            health_status=machine.get("HealthStatus", "Unknown"),
            summary=machine.get("StatusSummary") or task.get("ErrorMessage") or "",
        )


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
