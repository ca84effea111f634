"""A small client for the parts of the Octopus REST API octoboot needs (octopus-facts §3).

One OctopusClient per Octopus (URL + space) is shared by every machine's thread; httpx's
Client is thread-safe and pools connections. The API key only ever goes into the
X-Octopus-ApiKey header of requests to that Octopus. What every machine needs to know
(the space, the server thumbprint, the environments, the machines already registered) is
read once per client, that is once per run; a 429 is waited out (octoboot.ratelimit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from octoboot.errors import ConfigError, OctobootError
from octoboot.inventory import name_key
from octoboot.ratelimit import (
    DEFAULT_RETRY_AFTER,
    ApiBudget,
    ApiGate,
    current_budget,
    retry_after_seconds,
    waited,
)
from octoboot.report import one_line

# httpx is a third of `inv`'s start-up, and only a client uses it: imported where one is
# made or sends (status, exec and the tasks' help need this module's names, not HTTP).
if TYPE_CHECKING:
    import httpx

Resource = dict[str, Any]
TASK_DONE = frozenset({"Success", "Failed", "Canceled", "TimedOut"})
STATIC_POOL = "StaticWorkerPool"
# A machine record's HealthStatus values that octoboot acts on (health_status for the rest).
HEALTHY = "Healthy"
UNAVAILABLE = "Unavailable"


class OctopusError(OctobootError):
    """Octopus answered with an error, or could not be reached. Before any host is touched
    this ends the run with exit code 3; during a run it fails the machine's step."""

    exit_code = 3


class OctopusAuthError(OctopusError, ConfigError):
    """401/403: the API key is missing, wrong, or lacks permission: a configuration error."""

    exit_code = ConfigError.exit_code


class NotOctopus(OctopusError, ConfigError):
    """The URL answers, but not as Octopus' API does (a web page, a redirect, other JSON):
    the URL is probably wrong, a configuration error."""

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
        wanted = name_key(name)
        return [m for m in self.records if name_key(m["Name"]) == wanted]

    def with_thumbprint(self, thumbprint: str) -> list[Resource]:
        return [m for m in self.records if registered_thumbprint(m) == thumbprint.upper()]


class OctopusClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        space: str | None = None,
        key_hint: str,
        url_hint: str | None = None,
        retry_seconds: float = 30.0,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """key_hint, url_hint: the settings the key and the URL came from, for the errors
        that ask to fix them. transport: httpx's default (real HTTP) unless given, e.g. an
        httpx.MockTransport in unit tests."""
        import httpx

        self.url = url.rstrip("/")
        self.space_name = space
        self._key_hint = key_hint
        self._url_hint = url_hint
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
        self._gate = ApiGate()
        self._index_lock = threading.Lock()
        self._indexes: dict[str, MachineIndex] = {}
        self._worker_pools: list[Resource] | None = None
        self._catalog: dict[str, list[Resource]] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OctopusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        shape: Callable[[Any], bool] | None = None,
        recover: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """One API call, retried with back-off on network errors and 502/503/504, for at
        most retry_seconds. A POST that may have arrived is retried only with `recover`:
        before each new attempt, and when a retry is refused (400/409, e.g. the name is
        taken by the record the earlier attempt made), recover() looks for what an earlier
        attempt created; whatever it finds (not None) is the answer. shape: a test that the
        JSON answered is what Octopus answers there (else NotOctopus)."""
        import httpx

        deadline = time.monotonic() + self._retry_seconds
        delay, retrying = 0.5, False
        while True:
            if retrying and recover is not None and (found := recover()) is not None:
                return found
            try:
                response = self._send(method, path, **kwargs)
            except httpx.TransportError as exc:
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                unsafe = method == "POST" and sent and recover is None
                if unsafe or time.monotonic() + delay > deadline:
                    where = (
                        f"the URL is {self._url_hint}" if self._url_hint else "is the URL right?"
                    )
                    raise OctopusUnavailable(
                        f"Octopus at {self.url} did not answer: {exc or type(exc).__name__} "
                        f"(is it up and reachable from here? {where})"
                    ) from None
            else:
                transient = response.status_code in (502, 503, 504)
                if not transient or (method == "POST" and recover is None):
                    return self._answer(
                        method, path, response, shape, recover if retrying else None
                    )
                if time.monotonic() + delay > deadline:
                    self._result(method, path, response, shape)
            retrying = True
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _answer(
        self,
        method: str,
        path: str,
        response: httpx.Response,
        shape: Callable[[Any], bool] | None,
        recover: Callable[[], Any] | None,
    ) -> Any:
        try:
            return self._result(method, path, response, shape)
        except OctopusValidationError:
            if recover is not None and (found := recover()) is not None:
                return found
            raise

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

    def _result(
        self,
        method: str,
        path: str,
        response: httpx.Response,
        shape: Callable[[Any], bool] | None = None,
    ) -> Any:
        code = response.status_code
        body = _json(response)
        if body is _NOT_JSON or (code < 400 and shape is not None and not shape(body)):
            # Octopus answers JSON on every API route, errors included: this is something
            # else (a web page, a proxy's login or redirect), unless it is a proxy saying
            # that Octopus behind it is down.
            answered = f"{method} {path} answered {code} ({_what(response, body)})"
            if code >= 500:
                raise OctopusUnavailable(f"Octopus at {self.url} failed: {answered}")
            raise NotOctopus(
                f"{self.url} is not Octopus' API: {answered}; the URL is probably wrong "
                "(OCTOPUS_URL, or url under [octopus] in the inventory)"
            )
        if code < 400:
            return body
        message = _error_message(response, body)
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
        with self._lock:
            self._space_prefix = self._find_space()
        self.server_thumbprint()
        return {name: self.environment_id(name) for name in environments}

    def _find_space(self) -> str:
        # The spaces first, not the root document: one request fewer in every run. Only
        # if they do not answer as Octopus does, the root document tells what this is: not
        # Octopus, or one from before spaces (whose routes are not space-scoped).
        try:
            spaces = self.request("GET", "/api/spaces/all", shape=_is_space_list)
        except OctopusUnavailable:
            raise
        except OctopusError as exc:
            root = self.request("GET", "/api", shape=_is_octopus_root)
            if "Spaces" in root.get("Links", {}):
                raise exc from None  # an Octopus that refused the key, say
            return "/api"
        wanted = name_key(self.space_name or "")
        for space in spaces:
            if (name_key(space["Name"]) == wanted) if wanted else space.get("IsDefault"):
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
                if name_key(e["Name"]) == name_key(name)
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

    def catalog(self, route: str) -> list[Resource]:
        """Everything of one kind in the space that machines refer to by Id ("machinepolicies",
        "tenants", "tagsets", "proxies"), read once per client, so once per run."""
        with self._index_lock:
            if route not in self._catalog:
                self._catalog[route] = self.request("GET", f"{self._space}/{route}/all")
            return self._catalog[route]

    # --- machines (deployment targets) and workers ---------------------------------------
    # collection: "machines" (deployment targets) or "workers": Octopus keeps both kinds
    # alike, each under its own route.

    def machines_named(self, name: str, collection: str = "machines") -> list[Resource]:
        """Exact, case-insensitive name matches (the server's filter may be looser)."""
        wanted = name_key(name)
        return [
            m
            for m in self._paged(f"{self._space}/{collection}", {"name": name})
            if name_key(m["Name"]) == wanted
        ]

    def machine_index(self, collection: str = "machines") -> MachineIndex:
        """Every machine (or worker) of the space, read once per client (so once per run,
        however many machines ask) and looked up locally. Records a run changes are not
        updated here: each machine looks up only its own name and thumbprint, before it
        changes them."""
        with self._index_lock:
            if collection not in self._indexes:
                records = self.request("GET", f"{self._space}/{collection}/all")
                self._indexes[collection] = MachineIndex(tuple(records))
            return self._indexes[collection]

    def machines_with_thumbprint(
        self, thumbprint: str, collection: str = "machines"
    ) -> list[Resource]:
        return self.request(
            "GET", f"{self._space}/{collection}/all", params={"thumbprint": thumbprint}
        )

    def machine(self, machine_id: str, collection: str = "machines") -> Resource:
        return self.request("GET", f"{self._space}/{collection}/{machine_id}")

    def create_machine(self, body: Resource, collection: str = "machines") -> Resource:
        """Create a machine (or worker), safe to retry: a POST that timed out or met a
        restarting Octopus may still have made the record, so before another attempt the
        record with this name and thumbprint is looked up, and returned if it exists."""
        name, thumbprint = name_key(body["Name"]), body["Endpoint"]["Thumbprint"]

        def created() -> Resource | None:
            return next(
                (
                    m
                    for m in self.machines_with_thumbprint(thumbprint, collection)
                    if name_key(m["Name"]) == name
                ),
                None,
            )

        return self.request("POST", f"{self._space}/{collection}", json=body, recover=created)

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

    # --- health tasks (octoboot.health runs them) -------------------------------------------

    def start_health_task(
        self, machine_ids: list[str], environment_id: str | None, *, machine_timeout: int = 60
    ) -> Resource:
        """Queue one Health task for these machines (of one environment), or these workers
        (environment_id None: MachineIds takes workers' Ids too, as Octopus.Client's
        ExecuteHealthCheck sends them)."""
        timeout = f"00:{machine_timeout // 60:02d}:{machine_timeout % 60:02d}"
        arguments: Resource = {"Timeout": "00:05:00", "MachineTimeout": timeout}
        if environment_id is not None:
            arguments["EnvironmentId"] = environment_id
        return self.request(
            "POST",
            f"{self._space}/tasks",
            json={
                "Name": "Health",
                "Description": f"octoboot: check {len(machine_ids)} machine(s)",
                "Arguments": {**arguments, "MachineIds": machine_ids},
            },
            # A Health task only reads: one that an unanswered attempt made costs a check.
            recover=lambda: None,
        )

    def task(self, task_id: str) -> Resource:
        return self.request("GET", f"/api/tasks/{task_id}")

    def task_details(self, task_id: str) -> Resource:
        """The task with its activity log (`ActivityLogs`): where each machine's outcome is."""
        return self.request("GET", f"/api/tasks/{task_id}/details")

    def unfinished_tasks(self) -> list[Resource]:
        """Every task queued or running on the server, octoboot's or not."""
        return list(self._paged("/api/tasks", {"states": "Queued,Executing", "take": "100"}))

    def machines_by_id(
        self, machine_ids: list[str], collection: str = "machines"
    ) -> dict[str, Resource]:
        found: dict[str, Resource] = {}
        for first in range(0, len(machine_ids), 50):  # a query string has its limits
            ids = ",".join(machine_ids[first : first + 50])
            path = f"{self._space}/{collection}"
            for record in self._paged(path, {"ids": ids, "take": "50"}):
                found[record["Id"]] = record
        return found


def label(record: Resource) -> str:
    """A record as messages name it: "web01 (Machines-1)"."""
    return f"{record['Name']} ({record['Id']})"


def health_status(record: Resource) -> str:
    """A machine record's HealthStatus; "Unknown" when Octopus gives none (absent or null)."""
    return str(record.get("HealthStatus") or "Unknown")


def registered_thumbprint(record: Resource) -> str:
    """The thumbprint a machine record is registered with ('' if none), upper-case."""
    return str((record.get("Endpoint") or {}).get("Thumbprint") or "").upper()


_NOT_JSON = object()


def _json(response: httpx.Response) -> Any:
    """The JSON answered (None for an empty body), or _NOT_JSON."""
    if not response.content:
        return None
    if "json" not in response.headers.get("content-type", ""):
        return _NOT_JSON
    try:
        return response.json()
    except ValueError:
        return _NOT_JSON


def _is_space_list(body: Any) -> bool:
    return isinstance(body, list) and all(isinstance(s, dict) and "Id" in s for s in body)


def _is_octopus_root(body: Any) -> bool:
    # Octopus.Client's Model/RootResource.cs: Application, Version, ApiVersion, Links.
    return (
        isinstance(body, dict)
        and body.get("Application") == "Octopus Deploy"
        and isinstance(body.get("Links"), dict)
    )


def _what(response: httpx.Response, body: Any) -> str:
    """What answered, in a few words: its content type, where it redirects to."""
    what = response.headers.get("content-type", "no content type").split(";")[0].strip()
    if body is not _NOT_JSON:
        what += ", not shaped as Octopus' answer"
    if "location" in response.headers:
        what += f", redirecting to {response.headers['location']}"
    return one_line(what, 200)


def _error_message(response: httpx.Response, body: Any) -> str:
    if not isinstance(body, dict):
        return one_line(str(body) if body is not None else response.reason_phrase, 200)
    errors = [e for e in body.get("Errors") or [] if e != body.get("ErrorMessage")]
    return one_line("; ".join([body.get("ErrorMessage") or response.reason_phrase, *errors]), 500)
