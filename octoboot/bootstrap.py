"""The bootstrap pipeline, step by step, each step idempotent:

    connect → probe → install → identity → configure → register → service → health

`Install` and `Register` run parts of it. Before a certificate is put on a host, Octopus is
asked whether registering it would conflict (its thumbprint under another name, or the name
under another thumbprint): a failed run must not leave a working target with a certificate
Octopus does not know.
"""

from __future__ import annotations

import base64
import uuid
from typing import ClassVar

import paramiko

from octoboot import drift, tentacle
from octoboot.health import HealthResult
from octoboot.identity import Identity
from octoboot.octopus import Resource, registered_thumbprint
from octoboot.pipeline import Pipeline, StepFailed
from octoboot.report import State


class Bootstrap(Pipeline):
    STEPS: ClassVar = (
        "connect", "probe", "install", "identity", "configure", "register", "service", "health",
    )  # fmt: skip
    NEEDS_OCTOPUS = NEEDS_IDENTITIES = True

    def __init__(self, job) -> None:
        super().__init__(job)
        self.identity: Identity | None = None
        self.thumbprint: str | None = None  # None in a dry run when it would be minted
        self.record: Resource | None = None
        self.conflict: str | None = None
        self.created_instance = False
        self.service_started = False  # (re)started by this run

    # --- install ------------------------------------------------------------------------

    def step_install(self) -> tuple[str, str]:
        options, probe = self.machine.tentacle, self._probe()
        wanted = options.version
        if probe.installed and (wanted is None or _version(probe.version) >= _version(wanted)):
            return "unchanged", f"Tentacle {probe.version}"
        source = options.resolved_source()
        if source is None:
            raise StepFailed(
                f"Tentacle is not installed and {self.machine.source_file} has no "
                "[tentacle] source to install it from"
            )
        before = f"{probe.version} → " if probe.installed else ""
        restart = options.instance if probe.instance_exists else None
        if self.job.dry_run:
            self.probe = tentacle.with_version(probe, wanted or "?")
            return self.plan(
                f"would install Tentacle {before}{wanted or source}",
                tentacle.install_from_url_command(source, restart_instance=restart),
            )
        if options.source_is_local:
            remote_file = f"/tmp/octoboot-{uuid.uuid4().hex}.tar.gz"
            self.job.log.write(f"upload {source} → {remote_file}")
            self._put(source, remote_file)
            command = tentacle.install_from_file_command(remote_file, restart_instance=restart)
        else:
            command = tentacle.install_from_url_command(source, restart_instance=restart)
        result = self.remote(command)
        version = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "?"
        version = version.split("+")[0]
        if wanted and _version(version) < _version(wanted):
            raise StepFailed(f"installed {version}, but {wanted} was wanted: check the source")
        self.probe = tentacle.with_version(probe, version, restart_pending=bool(restart))
        return "changed", f"installed Tentacle {before}{version}"

    def _put(self, local: str, remote_path: str) -> None:
        self._check_cancelled()  # Fabric would reopen a connection the runner closed
        try:
            self.job.conn.put(local, remote_path)
        except FileNotFoundError as exc:
            raise StepFailed(f"cannot read the Tentacle archive: {exc}") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self._check_cancelled()
            raise StepFailed(f"upload failed: {exc}", State.UNREACHABLE) from None

    # --- identity -------------------------------------------------------------------------

    def step_identity(self) -> tuple[str, str]:
        probe, store, name = self._probe(), self.job.identities, self.machine.name
        if not probe.installed:
            raise StepFailed("Tentacle is not installed: run `inv install` (or bootstrap) first")
        assert store is not None
        renamed_from = self.job.options.get("renamed_from")
        if renamed_from and not self.job.dry_run:
            store.rename(renamed_from, name)
        # In a dry run the identity has not moved yet.
        known = store.get(name) or (store.get(renamed_from) if renamed_from else None)
        if probe.thumbprint and probe.thumbprint != (known.thumbprint if known else None):
            self._refuse_another_machines_certificate(probe.thumbprint)
        if known or self.job.dry_run:
            self.identity = known
        else:
            self.identity = store.get_or_create(name)
        self.thumbprint = self.identity.thumbprint if self.identity else None
        self.job.result.thumbprint = self.thumbprint
        self.conflict = self._registration_conflict()
        if self.conflict:
            return "skipped", "not imported: Octopus has a conflicting record (see register)"
        if probe.instance_exists and self.thumbprint and probe.thumbprint == self.thumbprint:
            return "unchanged", self.thumbprint
        # A damaged configuration is recreated: the identity and the settings it held are
        # all in the store and the inventory, and the configure step follows.
        damaged = probe.configuration_error is not None
        create = not probe.instance_exists or damaged
        command = tentacle.import_identity_command(
            self.machine.tentacle.instance, create_instance=create, replace_configuration=damaged
        )
        repaired = " into a new configuration (the old one was damaged)" if damaged else ""
        if self.job.dry_run:
            what = self.thumbprint or "a new identity (minted on the controller)"
            return self.plan(f"would import {what}{repaired}", command)
        assert self.identity is not None
        pfx = self.identity.unprotected_pfx()
        self.remote(command, stdin=base64.b64encode(pfx).decode() + "\n")
        self.created_instance = create
        self.probe = tentacle.with_version(probe, probe.version, restart_pending=True)
        minted = " (new identity)" if self.identity.created else ""
        return "changed", f"imported {self.thumbprint}{minted}{repaired}"

    def _refuse_another_machines_certificate(self, host_thumbprint: str) -> None:
        """The host carries a certificate this machine's identity is not. If Octopus has it
        under another name, the host is a registered machine under a new name (renamed in
        the inventory, or the address is wrong): replacing its certificate would strand that
        record and make a second one, so stop."""
        name = self.machine.name
        holders = [
            m
            for m in self._octopus().machines_with_thumbprint(host_thumbprint)
            if m["Name"].strip().lower() != name.lower()
        ]
        if holders:
            listed = ", ".join(f"{m['Name']} ({m['Id']})" for m in holders)
            old = holders[0]["Name"]
            raise StepFailed(
                f"the host already carries certificate {host_thumbprint}, which Octopus has "
                f"registered as {listed}: if {old} was renamed {name}, run again with "
                f"--renamed-from {old} (it keeps its identity and Octopus Id); otherwise check "
                f"{name}'s address. Nothing was changed"
            )

    def _registration_conflict(self) -> str | None:
        """Why registering this machine's certificate would be refused, if it would."""
        # The space's machines are read once per run, not twice per machine.
        known, name = self._octopus().machine_index(), self.machine.name
        renamed_from = (self.job.options.get("renamed_from") or "").lower()
        previous: Resource | None = None  # the record to rename (--renamed-from)
        if self.thumbprint:
            others = []
            for m in known.with_thumbprint(self.thumbprint):
                if m["Name"].strip().lower() == renamed_from:
                    previous = m
                elif m["Name"].strip().lower() != name.lower():
                    others.append(m)
            if others:
                listed = ", ".join(f"{m['Name']} ({m['Id']})" for m in others)
                return (
                    f"thumbprint {self.thumbprint} is already registered as {listed}: a second "
                    "record for one certificate would be a duplicate; deregister that one first"
                )
        named = known.named(name)
        if named and previous:
            return (
                f"both {named[0]['Name']} ({named[0]['Id']}) and {previous['Name']} "
                f"({previous['Id']}) are registered: deregister the one that is not this "
                "machine, then run again"
            )
        self.record = named[0] if named else previous
        if self.record:
            registered = registered_thumbprint(self.record)
            if registered != (self.thumbprint or ""):
                if self.job.options.get("take_over"):
                    return None
                return (
                    f"the name {name} is registered ({self.record['Id']}) with another "
                    f"thumbprint {registered or '(none)'}, not this machine's "
                    f"{self.thumbprint or '(new)'}: deregister it, rename one of them, or "
                    "run with --take-over to give that record this machine's certificate"
                )
        return None

    # --- configure ----------------------------------------------------------------------

    def step_configure(self) -> tuple[str, str]:
        if self.conflict:
            return "skipped", "Octopus has a conflicting record (see register)"
        probe, options = self._probe(), self.machine.tentacle
        server = self._octopus().server_thumbprint()
        if (
            not self.created_instance
            and probe.instance_exists
            and probe.port == options.port
            and probe.no_listen is False
            and probe.app_dir == options.app_dir
            and probe.trusted == (server,)
        ):
            return "unchanged", f"port {options.port}, trusts {server[:8]}…"
        command = tentacle.configure_command(
            options.instance, port=options.port, app_dir=options.app_dir, server_thumbprint=server
        )
        what = f"listening on {options.port}, trusts only {server[:8]}…"
        if self.job.dry_run:
            return self.plan(f"would configure: {what}", command)
        self.remote(command)
        self.probe = tentacle.with_version(probe, probe.version, restart_pending=True)
        return "changed", what

    # --- register -------------------------------------------------------------------------

    def step_register(self) -> tuple[str, str]:
        if self.conflict:
            raise StepFailed(self.conflict)
        octopus = self._octopus()
        assert self.job.environment_id is not None
        wanted = drift.wanted_record(
            self.machine,
            environment_id=self.job.environment_id,
            ssh_host=self.job.conn.host,
            thumbprint=self.thumbprint or "",
        )
        if self.record is None:
            if self.job.dry_run:
                return self.plan(
                    f"would create a machine in {self.machine.environment}", "POST machines"
                )
            created = octopus.create_machine(wanted.new(self.machine.name))
            self.job.result.octopus_id = created["Id"]
            return "changed", f"created {created['Id']}"
        current = self.record
        self.job.result.octopus_id = current["Id"]
        differences = [d.what for d in drift.differences(wanted, current)]
        renamed = current["Name"].strip().lower() != self.machine.name.lower()
        if renamed:  # --renamed-from: the same record under its new name
            differences.insert(0, f"name {current['Name']} → {self.machine.name}")
        if not differences:
            return "unchanged", current["Id"]
        if self.job.dry_run:
            return self.plan(
                f"would update {current['Id']}: {', '.join(differences)}",
                f"PUT machines/{current['Id']}",
            )
        name = self.machine.name if renamed else current["Name"]
        updated = octopus.update_machine({**wanted.applied_to(current), "Name": name})
        return "changed", f"updated {updated['Id']}: {', '.join(differences)}"

    # --- service and health -------------------------------------------------------------

    def step_service(self) -> tuple[str, str]:
        probe, options = self._probe(), self.machine.tentacle
        unit = tentacle.unit_name(options.instance)
        if not probe.service_enabled:
            action, done = "install", "installed and started"
        elif probe.restart_pending:
            action, done = "restart", "restarted"
        elif not probe.service_active:
            action, done = "start", "started"
        else:
            return "unchanged", f"{unit} active"
        command = self._service_command(action)
        if self.job.dry_run:
            return self.plan(f"would have {unit} {done}", command)
        self.remote(command)
        self.service_started = True
        return "changed", f"{unit} {done}"

    def step_health(self) -> tuple[str, str]:
        octopus, machine_id = self._octopus(), self.job.result.octopus_id
        if self.job.dry_run:
            if machine_id is None:
                return "skipped", "not registered yet"
            status = octopus.machine(machine_id).get("HealthStatus", "Unknown")
            return "skipped", f"last known: {status}"
        assert machine_id is not None
        check, restarted = self._check_health(machine_id), ""
        if check.health_status == "Unavailable" and not self.service_started:
            # systemd said active, yet Octopus gets no answer: a hung service (stopped,
            # deadlocked) stays "active" for ever. Restart it once, then ask again.
            unit = tentacle.unit_name(self.machine.tentacle.instance)
            self.remote(self._service_command("restart"))
            restarted = f" after restarting {unit}, active but Unavailable in {check.task_id}"
            check = self._check_health(machine_id)
        if not check.healthy and check.task_failed_itself:
            raise StepFailed(
                f"health task {check.task_id} {check.task_state}: "
                f"{check.error or 'Octopus gave no reason'}"
            )
        if not check.healthy:
            raise StepFailed(
                f"Octopus says {check.health_status} ({check.task_id} {check.task_state}"
                f"{restarted}): {check.reason}"
            )
        return ("changed" if restarted else "ok"), f"Healthy ({check.task_id}){restarted}"

    def _service_command(self, action: str) -> str:
        options = self.machine.tentacle
        return tentacle.service_command(options.instance, action, port=options.port)

    def _check_health(self, machine_id: str) -> HealthResult:
        """This machine's health, from a Health task it may share with others (health.py)."""
        assert self.job.health is not None and self.job.environment_id is not None
        try:
            return self.job.health.check(
                machine_id,
                self.machine.name,
                self.job.environment_id,
                deadline=self.deadline - 1,
                cancelled=self.job.cancelled,
                note=self.job.note,
            )
        except TimeoutError as exc:
            raise StepFailed(f"health check did not finish: {exc}", State.TIMED_OUT) from None


class Install(Bootstrap):
    STEPS: ClassVar = ("connect", "probe", "install")
    NEEDS_OCTOPUS = NEEDS_IDENTITIES = False


class Register(Bootstrap):
    STEPS: ClassVar = (
        "connect", "probe", "identity", "configure", "register", "service", "health",
    )  # fmt: skip


def _version(text: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (text or "0").split("-")[0].split("+")[0].split("."):
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)
