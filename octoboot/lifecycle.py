"""Taking machines out, and looking at them: `deregister` and `exec`.

Deregister removes the machine's record (a target's, or a worker's) from Octopus first
(found by name and checked by thumbprint), so that a machine being destroyed leaves no
record behind even when the host is already unreachable; with `uninstall` it then stops and
removes the Tentacle service and instance on the host. The identity stays in the store, so
a machine of the same name comes back with the same thumbprint (as a new Octopus record,
since the old one is gone), unless `forget_identity` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from octoboot import tentacle
from octoboot.octopus import registered_thumbprint
from octoboot.pipeline import Pipeline, StepFailed, last_lines
from octoboot.report import State


class Deregister(Pipeline):
    STEPS: ClassVar = ("deregister", "connect", "probe", "uninstall", "forget")
    NEEDS_OCTOPUS = NEEDS_IDENTITIES = True
    RECORDS_OUTCOME = False

    def __init__(self, job) -> None:
        super().__init__(job)
        self.removed: str | None = None  # the Id deleted from Octopus, if any

    def steps(self) -> Sequence[str]:
        host = ("connect", "probe", "uninstall") if self.job.options.get("uninstall") else ()
        return ("deregister", *host, "forget")

    def step_deregister(self) -> tuple[str, str]:
        octopus, name = self._octopus(), self.machine.name
        assert self.job.identities is not None
        identity = self.job.identities.get(name)
        thumbprint = identity.thumbprint if identity else None
        self.job.result.thumbprint = thumbprint
        records = octopus.machines_named(name, self.collection)
        if not records:
            return "unchanged", "not registered in Octopus"
        record = records[0]
        registered = registered_thumbprint(record)
        self.job.result.octopus_id = record["Id"]
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
        if self.job.dry_run:
            return self.plan(
                f"would delete {record['Id']}", f"DELETE {self.collection}/{record['Id']}"
            )
        octopus.delete_machine(record["Id"], self.collection)
        self.removed = record["Id"]
        return "changed", f"deleted {record['Id']}"

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
        probe, instance = self._probe(), self.machine.tentacle.instance
        if not probe.instance_exists and not probe.service_enabled:
            return "unchanged", "no Tentacle instance on the host"
        command = tentacle.uninstall_command(instance, service_installed=probe.service_enabled)
        if self.job.dry_run:
            return self.plan(f"would remove the service and instance {instance}", command)
        self.remote(command)
        return "changed", f"removed the service and instance {instance}"

    def step_forget(self) -> tuple[str, str]:
        store = self.job.identities
        assert store is not None
        if not self.job.options.get("forget_identity"):
            return "unchanged", "identity kept: the machine comes back with the same thumbprint"
        if store.get(self.machine.name) is None:
            return "unchanged", "no identity in the store"
        if self.job.dry_run:
            return self.plan("would delete the identity from the store")
        store.forget(self.machine.name)
        return "changed", "identity deleted: a machine of this name gets a new certificate"


class Exec(Pipeline):
    """One command on each machine, as root, through the same runner as everything else."""

    STEPS: ClassVar = ("connect", "exec")
    RECORDS_OUTCOME = False  # looking at machines must not change what a retry re-runs

    def step_exec(self) -> tuple[str, str]:
        command = self.job.options["command"]
        result = self.remote(command, check=False)
        self.job.result.facts.update(
            exit_code=str(result.exited), stdout=result.stdout, stderr=result.stderr
        )
        if result.exited != 0:
            raise StepFailed(last_lines(result.stderr or result.stdout, result.exited))
        lines = result.stdout.strip().splitlines()
        self.job.result.reason = lines[-1] if lines else ""
        return "ok", "exit 0"

    def final_state(self, statuses: list[str]) -> State:
        return State.OK
