"""The Octopus stand-in's model: one space, environments, machines (deployment targets),
worker pools, workers, server tasks, and the catalog machines refer to (`catalog`:
machine policies, tenants, tag sets, proxies).

Everything lives in one JSON document that is rewritten atomically on every change, so a
restarted stand-in carries on where it stopped. Records hold API fields only; the HTTP layer
adds `Links`, because it knows the routes. Validation texts follow octopus-facts §2.1 and §3.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from octoboot.errors import SandboxError
from octoboot.files import write_atomic
from octoboot.sandbox.octopus_api.catalog import machine_references, seeds
from octoboot.sandbox.octopus_api.records import (
    GENERIC_PROBLEM,
    SPACE_ID,
    USER_NAME,
    NotFoundError,
    Resource,
    ValidationError,
    human_duration,
    human_time,
    iso,
    known,
    now,
    parse_timespan,
    same_name,
    slugify,
    string_list,
)

DEFAULT_MACHINE_TIMEOUT = 60.0
DEFAULT_TASK_TIMEOUT = 300.0

DEFAULT_SPACE: Resource = {
    "Id": SPACE_ID,
    "Name": "Default",
    "Slug": "default",
    "Description": None,
    "IsDefault": True,
    "IsPrivate": False,
    "TaskQueueStopped": False,
    "SpaceManagersTeams": ["teams-administrators"],
    "SpaceManagersTeamMembers": [],
    "ExtensionSettings": [],
}

STATIC_POOL, DYNAMIC_POOL = "StaticWorkerPool", "DynamicWorkerPool"
# Every space has one (Octopus creates it with the space); it takes workers.
DEFAULT_WORKER_POOL = "Default Worker Pool"
LISTENING_STYLE, POLLING_STYLE = "TentaclePassive", "TentacleActive"

_PARTICIPATIONS = ("Untenanted", "TenantedOrUntenanted", "Tenanted")
# Fields only the server sets: a PUT keeps the stored values whatever the body says.
_SERVER_SET = (
    "HealthStatus",
    "Status",
    "StatusSummary",
    "HasLatestCalamari",
    "IsInProcess",
    "OperatingSystem",
    "ShellName",
    "ShellVersion",
    "Architecture",
)
_ID_PREFIX = {"machines": "Machines", "workers": "Workers"}


def _endpoint_problems(endpoint: Resource) -> list[str]:
    """A Tentacle endpoint: listening at https://host:port/, or polling as poll://<id>/
    (the subscription id the Tentacle polls with). [derived: the texts]"""
    style = endpoint.get("CommunicationStyle") or LISTENING_STYLE
    uri = endpoint.get("Uri")
    uri = uri.strip().lower() if isinstance(uri, str) else ""
    if style not in (LISTENING_STYLE, POLLING_STYLE):
        return [f"The communication style '{style}' is not supported here."]
    if style == POLLING_STYLE and not (uri.startswith("poll://") and len(uri) > len("poll://")):
        return ["Please provide the subscription ID (poll://...) of this polling Tentacle."]
    if style == LISTENING_STYLE and not uri.startswith("https://"):
        return ["Please provide the URL (https://host:port/) of this listening Tentacle."]
    return []


def _stored_endpoint(endpoint: Resource, thumb: str, existing: Resource | None) -> Resource:
    old_endpoint = existing["Endpoint"] if existing else {}
    return {
        "CommunicationStyle": LISTENING_STYLE,
        "ProxyId": None,
        "Id": None,
        "LastModifiedOn": None,
        "LastModifiedBy": None,
        "Links": {},
        **endpoint,
        "Thumbprint": thumb,
        "CertificateSignatureAlgorithm": old_endpoint.get("CertificateSignatureAlgorithm"),
        "TentacleVersionDetails": old_endpoint.get("TentacleVersionDetails")
        or {
            "UpgradeLocked": False,
            "Version": None,
            "UpgradeSuggested": False,
            "UpgradeRequired": False,
            "UpgradeAvailable": False,
        },
    }


def _server_set(existing: Resource | None) -> Resource:
    if existing:
        return {field: existing[field] for field in _SERVER_SET}
    return {
        "HealthStatus": "Unknown",
        "Status": "Unknown",
        "StatusSummary": "This machine has not been health checked yet.",
        "HasLatestCalamari": False,
        "IsInProcess": False,
        "OperatingSystem": "Unknown",
        "ShellName": "Unknown",
        "ShellVersion": "Unknown",
        "Architecture": "Unknown",
    }


def _find(records: list[Resource], record_id: str) -> Resource:
    for record in records:
        if record["Id"].casefold() == record_id.casefold():
            return record
    raise NotFoundError(f"The resource '{record_id}' was not found.")


class OctopusState:
    """The stand-in's data, safe to use from many request threads at once."""

    def __init__(
        self,
        path: Path,
        environments: Sequence[str] = (),
        worker_pools: Sequence[tuple[str, str]] = (),
    ) -> None:
        """worker_pools: (name, StaticWorkerPool or DynamicWorkerPool) to create if missing,
        besides the default pool every space has."""
        self._path = path
        self._lock = threading.Lock()
        self._closed = False
        self._doc = self._load()
        changed = not path.exists()
        # The catalog as a new server has it; a state from before a kind existed gets it too.
        counters = self._doc["counters"]
        for route, seed in seeds().items():
            if route not in self._doc["catalog"]:
                self._doc["catalog"][route] = seed
                changed = True
                for item in seed:  # the next Id comes after the seeded ones
                    prefix, number = item["Id"].rsplit("-", 1)
                    counters[prefix] = max(counters.get(prefix, 0), int(number))
        changed |= self._fail_interrupted_tasks()
        for name in environments:
            if not any(same_name(env["Name"], name) for env in self._doc["environments"]):
                self._new_environment({"Name": name})
                changed = True
        for name, pool_type in [(DEFAULT_WORKER_POOL, STATIC_POOL), *worker_pools]:
            if not any(same_name(pool["Name"], name) for pool in self._doc["worker_pools"]):
                self._new_worker_pool(name, pool_type)
                changed = True
        if changed:
            self._save()

    def close(self) -> None:
        """Stop writing to disk: threads still finishing must not touch a restarted stand-in."""
        with self._lock:
            self._closed = True

    @property
    def installation_id(self) -> str:
        return self._doc["installation_id"]

    # -- reads (deep copies, so callers can render them while writers carry on) --

    def spaces(self) -> list[Resource]:
        return self._copy(lambda doc: doc["spaces"])

    def environments(self) -> list[Resource]:
        return self._copy(
            lambda doc: sorted(doc["environments"], key=lambda e: (e["SortOrder"], e["Name"]))
        )

    def environment(self, env_id: str) -> Resource:
        return self._copy(lambda doc: _find(doc["environments"], env_id))

    def machines(self) -> list[Resource]:
        return self._copy(
            lambda doc: sorted(doc["machines"], key=lambda m: (m["Name"].casefold(), m["Id"]))
        )

    def machine(self, machine_id: str) -> Resource:
        return self._copy(lambda doc: _find(doc["machines"], machine_id))

    def workers(self) -> list[Resource]:
        return self._copy(
            lambda doc: sorted(doc["workers"], key=lambda m: (m["Name"].casefold(), m["Id"]))
        )

    def worker(self, worker_id: str) -> Resource:
        return self._copy(lambda doc: _find(doc["workers"], worker_id))

    def worker_pools(self) -> list[Resource]:
        return self._copy(
            lambda doc: sorted(doc["worker_pools"], key=lambda p: (p["SortOrder"], p["Name"]))
        )

    def worker_pool(self, pool_id: str) -> Resource:
        return self._copy(lambda doc: _find(doc["worker_pools"], pool_id))

    def tasks(self) -> list[Resource]:
        # Ids grow with time; Octopus lists the newest task first.
        return self._copy(
            lambda doc: sorted(doc["tasks"], key=lambda t: int(t["Id"].split("-")[1]), reverse=True)
        )

    def task(self, task_id: str) -> Resource:
        return self._copy(lambda doc: _find(doc["tasks"], task_id))

    # -- the catalog: machine policies, tenants, tag sets, proxies --

    def catalog(self, route: str) -> list[Resource]:
        """The items of one kind, by name (as the server sorts them)."""
        return self._copy(
            lambda doc: sorted(doc["catalog"][route], key=lambda i: i["Name"].casefold())
        )

    def catalog_item(self, route: str, item_id: str) -> Resource:
        return self._copy(lambda doc: _find(doc["catalog"][route], item_id))

    def add_catalog_item(
        self,
        route: str,
        prefix: str,
        body: Resource,
        build: Callable[[Resource, str, Mapping[str, list[Resource]]], Resource],
    ) -> Resource:
        """build(body, new Id, the whole catalog) checks the body and makes the item."""
        with self._lock:
            item = build(body, self._next_id(prefix), self._doc["catalog"])
            self._doc["catalog"][route].append(item)
            self._save()
            return copy.deepcopy(item)

    # -- environments --

    def add_environment(self, body: Resource) -> Resource:
        with self._lock:
            created = self._new_environment(body)
            self._save()
            return copy.deepcopy(created)

    def _new_environment(self, body: Resource) -> Resource:
        name = body.get("Name")
        name = name.strip() if isinstance(name, str) else ""
        if not name:
            raise ValidationError("Please provide a name for this environment.")
        if any(same_name(env["Name"], name) for env in self._doc["environments"]):
            raise ValidationError(
                f"An environment named '{name}' already exists. Please choose a different name."
            )
        envs = self._doc["environments"]
        created: dict[str, Any] = {
            "Id": self._next_id("Environments"),
            "Name": name,
            "Slug": slugify(name),
            "Description": body.get("Description") or "",
            "SortOrder": max((env["SortOrder"] for env in envs), default=0) + 1,
            "UseGuidedFailure": bool(body.get("UseGuidedFailure", False)),
            "AllowDynamicInfrastructure": bool(body.get("AllowDynamicInfrastructure", False)),
            "SpaceId": SPACE_ID,
            "EnvironmentTags": [],
            "ExtensionSettings": [],
        }
        envs.append(created)
        return created

    # -- machines --

    # collection: "machines" (deployment targets) or "workers"; both are machines to
    # Octopus (MachineBasedResource), kept apart, with their own Ids and names.

    def add_machine(self, body: Resource, collection: str = "machines") -> Resource:
        with self._lock:
            if collection == "workers":
                self._check_pools_take_workers(body)
            machine = self._machine_from(body, existing=None, collection=collection)
            machine["Id"] = self._next_id(_ID_PREFIX[collection])
            self._doc[collection].append(machine)
            self._save()
            return copy.deepcopy(machine)

    def update_machine(
        self, machine_id: str, body: Resource, collection: str = "machines"
    ) -> Resource:
        with self._lock:
            existing = _find(self._doc[collection], machine_id)
            if collection == "workers":
                self._check_pools_take_workers(body)
            updated = self._machine_from(body, existing=existing, collection=collection)
            existing.clear()
            existing.update(updated)
            self._save()
            return copy.deepcopy(existing)

    def delete_machine(self, machine_id: str, collection: str = "machines") -> Resource:
        with self._lock:
            machine = _find(self._doc[collection], machine_id)
            self._doc[collection].remove(machine)
            self._save()
            return machine

    def record_health(
        self, machine_id: str, health: str, status: str, summary: str, *, task_id: str = ""
    ) -> None:
        """The outcome of a health check, in the machine's record and in the log of the task
        that checked it; a machine deleted meanwhile is left alone."""
        with self._lock:
            try:
                machine = _find(self._doc["machines"] + self._doc["workers"], machine_id)
            except NotFoundError:
                return
            machine.update(HealthStatus=health, Status=status, StatusSummary=summary)
            for entry in self._doc["task_logs"].get(task_id, []):
                if entry["Name"] == machine["Name"] and entry["Ended"] is None:
                    ended = iso(now())
                    healthy = health == "Healthy"
                    entry.update(Ended=ended, Status="Success" if healthy else "Failed")
                    entry["LogElements"].append(
                        {"Category": "Info" if healthy else "Error", "OccurredAt": ended,
                         "MessageText": summary}
                    )  # fmt: skip
                    break
            self._save()

    def _check_pools_take_workers(self, body: Resource) -> None:
        """Only static pools take workers: a dynamic pool's workers are Octopus's own
        (the server's answer, with its generic headline: OctopusTentacle#331)."""
        ids = body.get("WorkerPoolIds")
        pools = [p for p in self._doc["worker_pools"] if isinstance(ids, list) and p["Id"] in ids]
        dynamic = [p["Name"] for p in pools if p["WorkerPoolType"] != STATIC_POOL]
        if dynamic:
            names = ", ".join(dynamic)
            raise ValidationError(
                f"Worker Pools '{names}' do not support adding workers directly",
                headline=GENERIC_PROBLEM,
            )

    def _machine_from(
        self, body: Resource, existing: Resource | None, collection: str = "machines"
    ) -> Resource:
        """A full machine (or worker) record from a POST/PUT body: writeable fields
        replaced, not merged."""
        errors: list[str] = []
        name = body.get("Name")
        name = name.strip() if isinstance(name, str) else ""
        if not name:
            errors.append("Please provide a name for this machine.")
        endpoint = body.get("Endpoint")
        if not isinstance(endpoint, dict):
            endpoint = {}
        thumb = endpoint.get("Thumbprint")
        thumb = thumb.strip() if isinstance(thumb, str) else ""
        if not thumb:
            errors.append("Please provide a thumbprint for this machine.")
        errors += _endpoint_problems(endpoint)
        if collection == "workers":
            return self._worker_from(body, existing, name, endpoint, thumb, errors)
        env_ids = string_list(body, "EnvironmentIds", errors)
        if not env_ids:
            errors.append("Please select at least one environment for this deployment target.")
        known_envs = {env["Id"].casefold() for env in self._doc["environments"]}
        errors += [
            f"The environment '{env_id}' does not exist."
            for env_id in env_ids
            if env_id.casefold() not in known_envs
        ]
        roles = string_list(body, "Roles", errors)
        policy_id, tenant_ids, tenant_tags = machine_references(body, self._doc["catalog"], errors)
        participation = body.get("TenantedDeploymentParticipation") or "Untenanted"
        if participation not in _PARTICIPATIONS:
            errors.append(
                f"TenantedDeploymentParticipation must be one of {', '.join(_PARTICIPATIONS)}."
            )
        return self._record(
            "machines",
            body,
            existing,
            name,
            endpoint,
            thumb,
            errors,
            {
                "EnvironmentIds": env_ids,
                "Roles": roles,
                "TenantedDeploymentParticipation": participation,
                "TenantIds": tenant_ids,
                "TenantTags": tenant_tags,
                "MachinePolicyId": policy_id,
                "SkipInitialHealthCheck": bool(body.get("SkipInitialHealthCheck", False)),
            },
        )

    def _worker_from(
        self,
        body: Resource,
        existing: Resource | None,
        name: str,
        endpoint: Resource,
        thumb: str,
        errors: list[str],
    ) -> Resource:
        """WorkerResource: MachineBasedResource with WorkerPoolIds, and no environments,
        roles or tenants (Octopus.Client's WorkerResource)."""
        pool_ids = string_list(body, "WorkerPoolIds", errors)
        if not pool_ids:
            errors.append("Please select at least one worker pool for this worker.")
        pools = {pool["Id"].casefold() for pool in self._doc["worker_pools"]}
        errors += [
            f"The worker pool '{pool_id}' does not exist."
            for pool_id in pool_ids
            if pool_id.casefold() not in pools
        ]
        policies = self._doc["catalog"]["machinepolicies"]
        policy_id = body.get("MachinePolicyId") or next(p["Id"] for p in policies if p["IsDefault"])
        if not known(policies, policy_id):
            errors.append(f"The machine policy '{policy_id}' does not exist.")
        fields = {"WorkerPoolIds": pool_ids, "MachinePolicyId": policy_id}
        return self._record("workers", body, existing, name, endpoint, thumb, errors, fields)

    def _record(
        self,
        collection: str,
        body: Resource,
        existing: Resource | None,
        name: str,
        endpoint: Resource,
        thumb: str,
        errors: list[str],
        fields: Resource,
    ) -> Resource:
        """What every machine-based record (a target's, a worker's) has around its own
        fields, once its body is checked (errors, then a name taken in its collection)."""
        if errors:
            raise ValidationError(*errors)
        kind = "machine" if collection == "machines" else "worker"
        for other in self._doc[collection]:
            if other is not existing and same_name(other["Name"], name):
                raise ValidationError(
                    f"A {kind} named '{name}' already exists. Please choose a different name."
                )
        stored_endpoint = _stored_endpoint(endpoint, thumb, existing)
        slug = body.get("Slug")
        return {
            "Id": existing["Id"] if existing else None,
            "Name": name,
            "Slug": slug if isinstance(slug, str) and slug else slugify(name),
            "SpaceId": SPACE_ID,
            **fields,
            "Thumbprint": thumb,
            "Uri": stored_endpoint.get("Uri"),
            "IsDisabled": bool(body.get("IsDisabled", False)),
            **_server_set(existing),
            "Endpoint": stored_endpoint,
            "LastModifiedOn": iso(now()),
            "LastModifiedBy": USER_NAME,
        }

    # -- worker pools --

    def _new_worker_pool(self, name: str, pool_type: str) -> Resource:
        pools = self._doc["worker_pools"]
        created = {
            "Id": self._next_id("WorkerPools"),
            "Name": name,
            "Slug": slugify(name),
            "Description": "",
            "IsDefault": same_name(name, DEFAULT_WORKER_POOL),
            "SortOrder": max((pool["SortOrder"] for pool in pools), default=0) + 1,
            "SpaceId": SPACE_ID,
            "WorkerPoolType": pool_type,
            "CanAddWorkers": pool_type == STATIC_POOL,
            **({"WorkerType": "UbuntuDefault"} if pool_type == DYNAMIC_POOL else {}),
        }
        pools.append(created)
        return created

    # -- server tasks --

    def add_health_task(self, body: Resource) -> tuple[Resource, list[Resource]]:
        """A queued health task and the machines it is to check."""
        with self._lock:
            if body.get("Name") != "Health":
                raise ValidationError(
                    f"The task '{body.get('Name')}' is not supported here; only 'Health' is."
                )
            args = body.get("Arguments") or {}
            if not isinstance(args, dict):
                raise ValidationError("Arguments must be an object.")
            parse_timespan(args.get("Timeout"), DEFAULT_TASK_TIMEOUT)
            parse_timespan(args.get("MachineTimeout"), DEFAULT_MACHINE_TIMEOUT)
            machines = self._health_targets(args)
            queued = iso(now())
            task = {
                "Id": self._next_id("ServerTasks"),
                "SpaceId": SPACE_ID,
                "EstimatedRemainingQueueDurationSeconds": 0,
                "Name": "Health",
                "Description": body.get("Description") or "Manual health check",
                "Arguments": args,
                "State": "Queued",
                "Completed": None,
                "QueueTime": queued,
                "QueueTimeExpiry": None,
                "StartTime": None,
                "LastUpdatedTime": queued,
                "CompletedTime": None,
                "ServerNode": None,
                "Duration": "",
                "ErrorMessage": "",
                "HasBeenPickedUpByProcessor": False,
                "IsCompleted": False,
                "FinishedSuccessfully": False,
                "HasPendingInterruptions": False,
                "CanRerun": False,
                "HasWarningsOrErrors": False,
                "ProjectId": None,
            }
            self._doc["tasks"].append(task)
            self._save()
            return copy.deepcopy(task), copy.deepcopy(machines)

    def _health_targets(self, args: Resource) -> list[Resource]:
        machine_ids = args.get("MachineIds") or []
        env_id = args.get("EnvironmentId")
        if machine_ids:
            if not isinstance(machine_ids, list):
                raise ValidationError("MachineIds must be a list of machine Ids.")
            # Octopus.Client sends workers' Ids in MachineIds too (ExecuteHealthCheck).
            everyone = self._doc["machines"] + self._doc["workers"]
            try:
                return [_find(everyone, str(mid)) for mid in machine_ids]
            except NotFoundError as exc:
                raise ValidationError(str(exc)) from None
        if env_id:
            try:
                env = _find(self._doc["environments"], str(env_id))
            except NotFoundError as exc:
                raise ValidationError(str(exc)) from None
            return [m for m in self._doc["machines"] if env["Id"] in m["EnvironmentIds"]]
        return list(self._doc["machines"])

    def start_task(self, task_id: str, machine_names: Sequence[str] = ()) -> None:
        """The task leaves the queue; its log gets an entry per machine it checks."""
        with self._lock:
            task = _find(self._doc["tasks"], task_id)
            started = iso(now())
            task.update(
                State="Executing",
                StartTime=started,
                LastUpdatedTime=started,
                HasBeenPickedUpByProcessor=True,
            )
            self._doc["task_logs"][task["Id"]] = [
                {"Name": name, "Started": started, "Ended": None, "Status": "Running",
                 "LogElements": []}
                for name in machine_names
            ]  # fmt: skip
            self._save()

    def task_log(self, task_id: str) -> list[Resource]:
        """Per machine of the task: Name, Started, Ended, Status, LogElements."""
        with self._lock:
            task = _find(self._doc["tasks"], task_id)
            return copy.deepcopy(self._doc["task_logs"].get(task["Id"], []))

    def finish_task(self, task_id: str, state: str, error_message: str = "") -> None:
        with self._lock:
            self._finish(_find(self._doc["tasks"], task_id), state, error_message)
            self._save()

    def _finish(self, task: Resource, state: str, error_message: str) -> None:
        finished = now()
        started = dt.datetime.fromisoformat(task["StartTime"] or task["QueueTime"])
        task.update(
            State=state,
            Completed=human_time(finished),
            CompletedTime=iso(finished),
            LastUpdatedTime=iso(finished),
            Duration=human_duration((finished - started).total_seconds()),
            ErrorMessage=error_message,
            IsCompleted=True,
            FinishedSuccessfully=state == "Success",
            HasWarningsOrErrors=state != "Success",
        )

    def _fail_interrupted_tasks(self) -> bool:
        interrupted = [t for t in self._doc["tasks"] if not t["IsCompleted"]]
        for task in interrupted:
            self._finish(task, "Failed", "The Octopus stand-in stopped before this task finished.")
        return bool(interrupted)

    # -- storage --

    def _copy(self, pick: Callable[[Resource], Any]) -> Any:
        with self._lock:
            return copy.deepcopy(pick(self._doc))

    def _next_id(self, prefix: str) -> str:
        counters = self._doc["counters"]
        counters[prefix] = counters.get(prefix, 0) + 1
        return f"{prefix}-{counters[prefix]}"

    def _load(self) -> Resource:
        if not self._path.exists():
            return {
                "installation_id": str(uuid.uuid4()),
                "counters": {},
                "spaces": [DEFAULT_SPACE],
                "environments": [],
                "machines": [],
                "workers": [],
                "worker_pools": [],
                "tasks": [],
                "task_logs": {},
                "catalog": {},
            }
        try:
            doc = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SandboxError(
                f"cannot read the Octopus stand-in state {self._path}: {exc}; "
                "delete the file to start afresh"
            ) from exc
        # State written before workers, task logs or the catalog existed.
        doc.setdefault("task_logs", {})
        doc.setdefault("catalog", {})
        doc.setdefault("workers", [])
        doc.setdefault("worker_pools", [])
        return doc

    def _save(self) -> None:
        if not self._closed:
            write_atomic(self._path, json.dumps(self._doc), mode=0o644)
