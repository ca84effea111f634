"""The `Status` pipeline: one machine's checks, connect → probe → identity → octopus →
drift, none of which changes anything. A host that cannot be reached does not stop the
rest: its Octopus columns are still filled from the API.

A machine is `ok` only in the wanted state: Tentacle installed, service active, the host's
thumbprint the store's, a polling host polling this Octopus with a subscription, and an
Octopus record as `register` would leave it (the same `drift.differences`), Healthy, its
certificate registered under no other name. Otherwise it is `failed` at `drift` (the reason
lists what differs), or `unreachable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from octoboot.drift import POLLING, duplicates_of, find_drift
from octoboot.inventory import STATUS_DEADLINE
from octoboot.octopus import Resource, health_status, label, registered_thumbprint
from octoboot.pipeline import Job, Pipeline, StepFailed
from octoboot.report import State

# What a status row's facts are called (`--format json`, the table's columns): the host's
# side, the identity store's, Octopus'; the Octopus Id is the row's own `octopus_id`.
REACHABLE = "reachable"
VERSION = "version"
SERVICE = "service"
HOST_THUMBPRINT = "host_thumbprint"
HOST_SUBSCRIPTION = "host_subscription"
STORE_THUMBPRINT = "store_thumbprint"
OCTOPUS_THUMBPRINT = "octopus_thumbprint"
OCTOPUS_SUBSCRIPTION = "octopus_subscription"
HEALTH = "health"
DRIFT = "drift"


@dataclass(frozen=True)
class StatusOptions:
    """status' own flag."""

    health: bool = False  # ask Octopus for a fresh health check first


class Status(Pipeline[StatusOptions]):
    STEPS: ClassVar = ("connect", "probe", "identity", "octopus", "drift")
    NEEDS_OCTOPUS = NEEDS_IDENTITIES = NEEDS_REGISTRATION = READ_ONLY = True
    RECORDS_OUTCOME = False
    DEADLINE = STATUS_DEADLINE
    # The host gets this share of the deadline, so that a host that does not answer in
    # time is still shown with what the store and Octopus say about it.
    HOST_SHARE = 2 / 3

    def __init__(self, job: Job[StatusOptions]) -> None:
        super().__init__(job)
        self.facts = job.result.facts
        self.host_failure: StepFailed | None = None
        self.store_thumbprint: str | None = None
        self.record: Resource | None = None
        self.registered_as: list[str] = []
        self.duplicates: list[str] = []
        self.health: str | None = None

    def remaining(self) -> float:
        left = super().remaining()
        if self.job.current_step in ("connect", "probe"):
            left -= self.job.deadline_seconds * (1 - self.HOST_SHARE)
        return left

    def step_connect(self) -> tuple[str, str]:
        try:
            status, detail = super().step_connect()
        except StepFailed as exc:
            return self._host_failed("connect", exc)
        self.facts[REACHABLE] = "yes"
        return status, detail

    def step_probe(self) -> tuple[str, str]:
        if self.host_failure:
            return "skipped", "not connected"
        try:
            status, detail = super().step_probe()  # READ_ONLY: it cleans nothing up
        except StepFailed as exc:
            return self._host_failed("probe", exc)
        probe = self._probe()
        if not probe.installed:
            self.facts[VERSION] = "not installed"
            return status, detail
        self.facts[VERSION] = probe.version or "?"
        if probe.service_active:
            self.facts[SERVICE] = "active"
        else:
            self.facts[SERVICE] = "inactive" if probe.service_enabled else "absent"
        if probe.thumbprint:
            self.facts[HOST_THUMBPRINT] = probe.thumbprint
        if probe.subscription:
            self.facts[HOST_SUBSCRIPTION] = probe.subscription
        return status, detail

    def step_identity(self) -> tuple[str, str]:
        assert self.job.identities is not None
        identity = self.job.identities.get(self.machine.name)  # never minted here
        if identity is None:
            return "ok", "no identity in the store"
        self.store_thumbprint = identity.thumbprint
        self.job.result.thumbprint = self.facts[STORE_THUMBPRINT] = identity.thumbprint
        return "ok", identity.thumbprint

    def step_octopus(self) -> tuple[str, str]:
        # The space's machines (or workers), read once for the whole run, not per machine.
        known = self._octopus().machine_index(self.collection)
        named = known.named(self.machine.name)
        if not named:
            if self.store_thumbprint:
                self.registered_as = list(map(label, known.with_thumbprint(self.store_thumbprint)))
            return "ok", "not registered"
        self.record = record = named[0]
        self.duplicates = list(map(label, duplicates_of(record, known.records)))
        self.health = health_status(record)
        checked = ""
        if self.job.options.health:
            checked = self._check_health(record)
        self.job.result.octopus_id = record["Id"]
        self.facts[OCTOPUS_THUMBPRINT] = registered_thumbprint(record)
        endpoint = record.get("Endpoint") or {}
        if endpoint.get("CommunicationStyle") == POLLING:
            self.facts[OCTOPUS_SUBSCRIPTION] = endpoint.get("Uri") or ""
        self.facts[HEALTH] = self.health
        return "ok", f"{record['Id']}, {self.health}{checked}"

    def _check_health(self, record: Resource) -> str:
        """Ask Octopus for a fresh health check; returns what to add to the step's detail."""
        environments = record.get("EnvironmentIds") or [self.job.environment_id]
        try:
            check = self.check_health(record["Id"], record["Name"], environments[0])
        except TimeoutError as exc:
            self.health = "Unknown (the health check did not finish)"
            return f" ({exc})"
        if check.task_failed_itself:
            state = check.task_state
            self.health = f"Unknown (health task {check.task_id} {state}: {check.error})"
            return f" (not checked: {check.task_id} {state})"
        self.health = check.health_status
        return f" (checked: {check.task_id} {check.task_state})"

    def step_drift(self) -> tuple[str, str]:
        probe = None if self.host_failure else self.probe
        wanted = self.wanted_record(
            # The store's certificate is the one wanted; without one, the host's is compared.
            thumbprint=self.store_thumbprint or (probe.thumbprint if probe else None),
            # A polling record must name the id the host polls with (unknown: not compared).
            subscription=probe.subscription if probe and probe.subscription else None,
        )
        drift = find_drift(
            wanted,
            probe=probe,
            store_thumbprint=self.store_thumbprint,
            record=self.record,
            health=self.health,
            thumbprint_registered_as=self.registered_as,
            polling=self.job.polling,
            polling_proxy=self.machine.registration.polling_proxy,
            duplicates=self.duplicates,
        )
        self.facts[DRIFT] = ", ".join(d.what for d in drift)
        listed = "; ".join(map(str, drift))
        if self.host_failure is None:
            if drift:
                raise StepFailed(f"drift: {listed}")
            return "ok", "as the inventory wants"
        # The host's failure stays the machine's state; Octopus' side is added to the reason.
        if drift:
            self.job.result.reason += f"; drift: {listed}"
            return "failed", listed
        return "ok", "Octopus as the inventory wants (host not checked)"

    def final_state(self, statuses: list[str]) -> State:
        return self.host_failure.state if self.host_failure else State.OK

    def _host_failed(self, step: str, exc: StepFailed) -> tuple[str, str]:
        """Note why the host could not be looked at, and go on with Octopus' side."""
        self.host_failure = exc
        result = self.job.result
        result.failed_step, result.reason = step, str(exc)
        if step == "connect":
            self.facts[REACHABLE] = "no"
        return "failed", str(exc)
