"""`deregister`: taking machines out.

Deregister removes the machine's record (a target's, or a worker's) from Octopus first
(found by name and checked by thumbprint), so that a machine being destroyed leaves no
record behind even when the host is already unreachable; with `uninstall` it then stops and
removes the Tentacle service and instance on the host. The identity stays in the store, so
a machine of the same name comes back with the same thumbprint (as a new Octopus record,
since the old one is gone), unless `forget_identity` is given. A damaged identity cannot
show that a record is this machine's, so the record is kept; with `forget_identity` the
damaged file still goes, and a bootstrap with `--take-over` gives the record the new
certificate (same Id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from octoboot import tentacle
from octoboot.errors import ConfigError
from octoboot.identity import DamagedIdentity
from octoboot.inventory import SAFE_NAME, Machine
from octoboot.octopus import Resource, registered_thumbprint
from octoboot.pipeline import (
    Change,
    Command,
    IdentityAction,
    Job,
    Noop,
    Pipeline,
    Plan,
    StepFailed,
    plan_delete,
)
from octoboot.report import RunReport
from octoboot.run import Run, RunOptions, Selection
from octoboot.settings import Settings


def deregister(
    selection: Selection,
    options: RunOptions = RunOptions(),
    settings: Settings | None = None,
    *,
    uninstall: bool = False,
    forget_identity: bool = False,
    records: Sequence[str] = (),
) -> RunReport:
    """Remove each machine's record from Octopus; with uninstall, also its service and
    instance on the host; with forget_identity, also its certificate from the store.
    records: instead of machines, these names' records in the Octopus of selection.env,
    which no inventory lists any more (renamed or gone machines)."""
    own = DeregisterOptions(uninstall, forget_identity, tuple(records))
    if own.records:
        return UnlistedRecords(selection, options, settings, own).execute()
    return Run("deregister", Deregister, selection, options, settings, own).execute()


@dataclass(frozen=True)
class DeregisterOptions:
    """deregister's own flags."""

    uninstall: bool = False  # also the service and instance on the host
    forget_identity: bool = False  # also the certificate in the store
    # Instead of machines: these names' records, which no inventory lists any more.
    records: Sequence[str] = ()


class Deregister(Pipeline[DeregisterOptions]):
    STEPS: ClassVar = ("deregister", "connect", "probe", "uninstall", "forget")
    NEEDS_OCTOPUS = NEEDS_IDENTITIES = True
    RECORDS_OUTCOME = False

    def __init__(self, job: Job[DeregisterOptions]) -> None:
        super().__init__(job)
        self.removed: str | None = None  # the Id deleted from Octopus, if any

    def steps(self) -> Sequence[str]:
        host = ("connect", "probe", "uninstall") if self.job.options.uninstall else ()
        return ("deregister", *host, "forget")

    def step_deregister(self) -> tuple[str, str]:
        name = self.machine.name
        try:
            identity, damaged = self._identities().get(name), None
        except DamagedIdentity as exc:
            identity, damaged = None, exc
        thumbprint = identity.thumbprint if identity else None
        self.job.result.thumbprint = thumbprint
        records = self._octopus().machines_named(name, self.collection)
        if records:
            self.job.result.octopus_id = records[0]["Id"]
        plan = plan_deregister(
            name,
            records,
            thumbprint=thumbprint,
            damaged=str(damaged) if damaged else None,
            forget_identity=self.job.options.forget_identity,
            collection=self.collection,
        )
        if isinstance(plan, Noop) and plan.status == "skipped":
            # Said in the row's reason too: the record outlives this "changed" machine.
            self.job.result.reason = plan.reason
        return self.apply(plan, then=self._deleted)

    def _deleted(self, results: list[Any]) -> str:
        self.removed = self.job.result.octopus_id
        return f"deleted {self.removed}"

    def step_connect(self) -> tuple[str, str]:
        try:
            return super().step_connect()
        except StepFailed as exc:
            if self.removed:
                raise StepFailed(
                    f"removed {self.removed} from Octopus, but {exc}", exc.state
                ) from None
            raise

    def step_uninstall(self) -> tuple[str, str]:
        return self.apply(plan_uninstall(self._probe(), self.machine.tentacle.instance))

    def step_forget(self) -> tuple[str, str]:
        name = self.machine.name
        # A damaged identity is forgotten too: whether its file is there, not what it holds.
        stored = self._identities().path(name).exists()
        return self.apply(plan_forget(name, forget=self.job.options.forget_identity, stored=stored))


class DeregisterRecord(Deregister):
    """A record no inventory lists any more, removed by name from the Octopus of the
    environment file it was asked for in. Nothing on a host: no machine to reach."""

    def steps(self) -> Sequence[str]:
        return ("deregister", "forget")

    def step_deregister(self) -> tuple[str, str]:
        name = self.machine.name
        records = self._octopus().machines_named(name)
        if records:
            self.job.result.octopus_id = records[0]["Id"]
            self.job.result.thumbprint = registered_thumbprint(records[0]) or None
        identity = self._identities().get(name) if records else None
        plan = plan_deregister_record(
            self.machine,
            records,
            environment_id=self.job.environment_id,
            stored_thumbprint=identity.thumbprint if identity else None,
        )
        return self.apply(plan, then=self._deleted)


class UnlistedRecords(Run[DeregisterOptions]):
    """`deregister --record NAME`: records that no inventory lists any more (a machine
    renamed or gone), looked for in the Octopus of one environment file. There is no host
    to go to: each name is a machine with that name, the file's Octopus and nothing else."""

    def __init__(
        self,
        selection: Selection,
        options: RunOptions,
        settings: Settings | None,
        pipeline_options: DeregisterOptions,
    ) -> None:
        super().__init__(
            "deregister", DeregisterRecord, selection, options, settings, pipeline_options
        )

    def _select(self, selection: Selection) -> list[Machine]:
        if not selection.env or selection.hosts or selection.limits or selection.retry_failed:
            raise ConfigError(
                "--record needs --env (the environment whose Octopus has the record) and "
                "takes no --host, --limit or --retry-failed"
            )
        if self.pipeline_options.uninstall:
            raise ConfigError("--record removes Octopus records only: no host to --uninstall")
        environment = self.inventory.environment(selection.env)
        names = list(dict.fromkeys(self.pipeline_options.records))
        for name in names:
            if not SAFE_NAME.fullmatch(name):
                raise ConfigError(f"--record {name!r} is not a machine name")
            listed = self.inventory.files_listing(name)
            if listed:
                raise ConfigError(
                    f"{name} is listed in {', '.join(map(str, listed))}: deregister it with "
                    f"--host {name}"
                )
        return [environment.unlisted_machine(name) for name in names]


# --- planning: from data alone ---------------------------------------------------------------


def plan_deregister(
    name: str,
    records: Sequence[Resource],
    *,
    thumbprint: str | None,
    damaged: str | None = None,
    forget_identity: bool = False,
    collection: str = "machines",
) -> Plan:
    """Delete the record named name (records: Octopus' by that name) if it is this
    machine's: its thumbprint is the stored identity's (thumbprint; damaged: why the
    store's cannot be read)."""
    if not records:
        return Noop("unchanged", "not registered in Octopus")
    record = records[0]
    registered = registered_thumbprint(record)
    if damaged and forget_identity:
        return Noop(
            "skipped",
            f"{record['Id']} kept: a damaged identity cannot show it is this machine's; "
            f"`inv bootstrap --host {name} --take-over` gives it the new certificate",
        )
    if damaged:
        raise StepFailed(f"{damaged}; {record['Id']} was not removed")
    if thumbprint is None:
        raise StepFailed(
            f"{record['Id']} is named {name}, but the identity store has no certificate "
            "for it, so it cannot be told from another machine's record; not removed "
            "(restore the store, or delete it in Octopus)"
        )
    if registered != thumbprint:
        raise StepFailed(
            f"{record['Id']} is named {name} but has thumbprint {registered}, not this "
            f"machine's {thumbprint}: it is another machine's record; not removed"
        )
    return plan_delete(record, collection)


def plan_deregister_record(
    machine: Machine,
    records: Sequence[Resource],
    *,
    environment_id: str | None,
    stored_thumbprint: str | None,
) -> Plan:
    """Delete the unlisted record named machine.name if it is in the environment asked
    for, and has the stored identity's certificate when the store has one."""
    name = machine.name
    if not records:
        return Noop("unchanged", "not registered in Octopus")
    record, registered = records[0], registered_thumbprint(records[0])
    if environment_id not in (record.get("EnvironmentIds") or []):
        raise StepFailed(
            f"{record['Id']} ({name}) is not in {machine.environment}: not removed "
            "(run with the --env of its environment)"
        )
    if stored_thumbprint and stored_thumbprint != registered:
        raise StepFailed(
            f"{record['Id']} ({name}) has thumbprint {registered or '(none)'}, not the "
            f"stored identity of {name} ({stored_thumbprint}): not removed"
        )
    return plan_delete(record, "machines")


def plan_uninstall(probe: tentacle.Probe, instance: str) -> Plan:
    """The Tentacle service and instance removed from the host."""
    if not probe.instance_exists and not probe.service_enabled:
        return Noop("unchanged", "no Tentacle instance on the host")
    command = tentacle.uninstall_command(instance, service_installed=probe.service_enabled)
    return Change(
        f"would remove the service and instance {instance}",
        (Command(command),),
        done=f"removed the service and instance {instance}",
    )


def plan_forget(name: str, *, forget: bool, stored: bool) -> Plan:
    """The machine's identity deleted from the store, when asked (forget) and there
    (stored)."""
    if not forget:
        return Noop("unchanged", "identity kept: the machine comes back with the same thumbprint")
    if not stored:
        return Noop("unchanged", "no identity in the store")
    return Change(
        "would delete the identity from the store",
        (IdentityAction("forget", name),),
        done="identity deleted: a machine of this name gets a new certificate",
    )
