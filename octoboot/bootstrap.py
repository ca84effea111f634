"""The bootstrap pipeline, step by step, each step idempotent:

    connect → probe → install → identity → configure → register → service → health

`Install` and `Register` run parts of it; the three commands' entry functions are here too,
with `RegistrationRun`, which checks --renamed-from before anything else. Before a
certificate is put on a host, Octopus is asked whether registering it would conflict (its
thumbprint under another name, or the name under another thumbprint): a failed run must not
leave a working target with a certificate Octopus does not know.

Targets and workers, listening and polling, go through the same steps; the record's place
(environment and roles, or worker pools) and endpoint come from `drift.wanted_record`. A
polling machine's configure step also runs `server-comms` and reads the subscription id back
(one round trip), and register writes that id into the record: a rebuilt polling machine
keeps its record (found by name, same certificate) with its new id.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from octoboot import drift, tentacle
from octoboot.drift import COLLECTIONS
from octoboot.errors import ConfigError
from octoboot.health import HealthResult
from octoboot.identity import Identity
from octoboot.inventory import SAFE_NAME, Machine, PollingProxy, TentacleOptions, name_key
from octoboot.octopus import (
    UNAVAILABLE,
    MachineIndex,
    Resource,
    health_status,
    label,
    registered_thumbprint,
)
from octoboot.pipeline import (
    Action,
    ApiCall,
    Change,
    Command,
    IdentityAction,
    Job,
    Noop,
    Pipeline,
    Plan,
    StepFailed,
    Upload,
)
from octoboot.report import RunReport, State
from octoboot.run import Run, RunOptions, Selection
from octoboot.settings import Settings


@dataclass(frozen=True)
class BootstrapOptions:
    """bootstrap's and register's own flags (install takes none of them)."""

    # A record with the machine's name but another certificate gets this one.
    take_over: bool = False
    # The one selected machine was called so: its identity and its Octopus record (same Id)
    # take the new name.
    renamed_from: str | None = None


# --- the commands ------------------------------------------------------------------------


def bootstrap(
    selection: Selection,
    options: RunOptions = RunOptions(),
    settings: Settings | None = None,
    *,
    take_over: bool = False,
    renamed_from: str | None = None,
) -> RunReport:
    """Install, identify, configure, register, start and health-check each machine.
    take_over: a record with the machine's name but another certificate gets this one.
    renamed_from: the one selected machine was called so: its identity and its Octopus
    record (same Id) take the new name."""
    own = BootstrapOptions(take_over=take_over, renamed_from=renamed_from)
    return RegistrationRun("bootstrap", Bootstrap, selection, options, settings, own).execute()


def install(
    selection: Selection, options: RunOptions = RunOptions(), settings: Settings | None = None
) -> RunReport:
    """Install (or upgrade) the Tentacle on each machine; nothing else."""
    return Run("install", Install, selection, options, settings, BootstrapOptions()).execute()


def register(
    selection: Selection,
    options: RunOptions = RunOptions(),
    settings: Settings | None = None,
    *,
    take_over: bool = False,
    renamed_from: str | None = None,
) -> RunReport:
    """Identity, configuration, registration, service and health on installed machines."""
    own = BootstrapOptions(take_over=take_over, renamed_from=renamed_from)
    return RegistrationRun("register", Register, selection, options, settings, own).execute()


class RegistrationRun(Run[BootstrapOptions]):
    """bootstrap and register: --renamed-from is checked before anything else."""

    def check(self) -> None:
        if self.pipeline_options.renamed_from:
            self._check_rename(self.pipeline_options.renamed_from)
        super().check()

    def _check_rename(self, old: str) -> None:
        if len(self.machines) != 1:
            raise ConfigError(
                f"--renamed-from {old} renames one machine: select it alone with --host NEW"
            )
        new = self.machines[0].name
        if not SAFE_NAME.fullmatch(old) or name_key(old) == name_key(new):
            raise ConfigError(f"--renamed-from takes the machine's old name, not {old!r}")
        listed = self.inventory.files_listing(old)
        if listed:
            raise ConfigError(
                f"{old} is still listed in {', '.join(map(str, listed))}: remove it there "
                f"(it is {new} now), then run again"
            )


# --- the pipeline ------------------------------------------------------------------------


class Bootstrap(Pipeline[BootstrapOptions]):
    STEPS: ClassVar[Sequence[str]] = (
        "connect", "probe", "install", "identity", "configure", "register", "service", "health",
    )  # fmt: skip
    NEEDS_OCTOPUS = NEEDS_IDENTITIES = NEEDS_REGISTRATION = True

    def __init__(self, job: Job[BootstrapOptions]) -> None:
        super().__init__(job)
        self.thumbprint: str | None = None  # None in a dry run when it would be minted
        self.stored_as: str | None = None  # the name the store holds the identity under
        self.record: Resource | None = None
        self.conflict: str | None = None
        self.service_started = False  # (re)started by this run

    # Each step gathers the facts that need I/O, plans from them (the module's plan_*
    # functions) and hands the plan to apply(); the real run's detail may come from what
    # the commands printed.

    def step_install(self) -> tuple[str, str]:
        probe, options = self._probe(), self.machine.tentacle
        plan = plan_install(
            probe,
            options,
            source_file=str(self.machine.source_file),
            upload_to=f"/tmp/octoboot-{uuid.uuid4().hex}.tar.gz",
        )

        def installed(results: list[Any]) -> str:
            stdout = results[-1].stdout.strip()
            version = (stdout.splitlines()[-1] if stdout else "?").split("+")[0]
            wanted = options.version
            if wanted and _version(version) < _version(wanted):
                raise StepFailed(f"installed {version}, but {wanted} was wanted: check the source")
            restart = probe.instance_exists
            self.probe = tentacle.with_version(probe, version, restart_pending=restart)
            before = f"{probe.version} → " if probe.installed else ""
            return f"installed Tentacle {before}{version}"

        return self.apply(plan, then=installed)

    def step_identity(self) -> tuple[str, str]:
        probe, store, name = self._probe(), self._identities(), self.machine.name
        renamed_from = self.job.options.renamed_from
        known = store.get(name)
        self.stored_as = name if known else None
        if known is None and renamed_from:
            known = store.get(renamed_from)  # moved to the new name by register
            self.stored_as = renamed_from if known else None
        self.thumbprint = known.thumbprint if known else None
        self.job.result.thumbprint = self.thumbprint
        holders: Sequence[Resource] = ()
        if probe.installed:
            # The space's machines (or workers), read once per run, not per machine.
            index = self._octopus().machine_index(self.collection)
            if probe.thumbprint and probe.thumbprint != self.thumbprint:
                # The records that hold the certificate the host carries, if not ours.
                holders = index.with_thumbprint(probe.thumbprint)
            find = functools.partial(
                find_record,
                name,
                self.thumbprint,
                index=index,
                renamed_from=renamed_from,
                take_over=self.job.options.take_over,
            )
            self.record, self.conflict = find()
            if self.record is None and self.conflict is None and self.thumbprint:
                # A new record: the other kind's records are read only then (not on a
                # rerun), for the same certificate registered as a worker, or a target.
                other = next(c for c in COLLECTIONS.values() if c != self.collection)
                index_of_other = self._octopus().machine_index(other)
                self.record, self.conflict = find(
                    elsewhere=index_of_other.with_thumbprint(self.thumbprint)
                )
        plan = plan_identity(
            probe,
            self.machine,
            self.thumbprint,
            stored_as=self.stored_as,
            holders=holders,
            conflict=self.conflict,
        )

        def imported(results: list[Any]) -> str:
            identity = results[0] if isinstance(results[0], Identity) else known
            assert identity is not None
            self.thumbprint = self.job.result.thumbprint = identity.thumbprint
            self.stored_as = name if self.stored_as is None else self.stored_as
            minted = " (new identity)" if identity.created else ""
            return f"imported {identity.thumbprint}{minted}{_repaired(probe)}"

        return self.apply(plan, then=imported)

    def step_configure(self) -> tuple[str, str]:
        if self.conflict:
            return self.apply(Noop("skipped", "Octopus has a conflicting record (see register)"))
        probe = self._probe()
        plan = plan_configure(
            probe, self.machine, self._octopus().server_thumbprint(), self.job.polling
        )

        def configured(results: list[Any]) -> str:
            assert isinstance(plan, Change)
            if plan.probe is None or plan.probe.subscription != NEW_SUBSCRIPTION:
                return plan.done
            # A new subscription: the one the Tentacle printed back.
            try:
                self.probe = tentacle.reconfigured(probe, results[-1].stdout)
            except ValueError as exc:
                raise StepFailed(f"configured, but {exc}") from None
            return f"{plan.done}, as {self.probe.subscription}"

        return self.apply(plan, then=configured)

    def step_register(self) -> tuple[str, str]:
        subscription = self._probe().subscription or ""
        wanted = self.wanted_record(thumbprint=self.thumbprint or "", subscription=subscription)
        plan = plan_register(
            self.machine,
            wanted,
            self.record,
            conflict=self.conflict,
            subscription=subscription,
            collection=self.collection,
            stored_as=self.stored_as,
        )
        if self.record is not None:
            self.job.result.octopus_id = self.record["Id"]

        def registered(results: list[Any]) -> str:
            if self.record is None:
                created = results[0]
                self.job.result.octopus_id = created["Id"]
                return f"created {created['Id']}"
            assert isinstance(plan, Change)
            return plan.done

        return self.apply(plan, then=registered)

    def step_service(self) -> tuple[str, str]:
        plan = plan_service(self._probe(), self.machine)

        def started(results: list[Any]) -> str:
            self.service_started = True
            assert isinstance(plan, Change)
            return plan.done

        return self.apply(plan, then=started)

    def step_health(self) -> tuple[str, str]:
        octopus, machine_id = self._octopus(), self.job.result.octopus_id
        if not self.writes:  # a health check is a task in Octopus: a dry run only reads
            if machine_id is None:
                return "skipped", "not registered yet"
            status = health_status(octopus.machine(machine_id, self.collection))
            return "skipped", f"last known: {status}"
        assert machine_id is not None
        check, status, restarted = self._check_health(machine_id), State.OK, ""
        if check.health_status == UNAVAILABLE and not self.service_started:
            # systemd said active, yet Octopus gets no answer: a hung service (stopped,
            # deadlocked) stays "active" for ever. Restart it once, then ask again.
            status, done = self.apply(plan_hung_service_restart(self.machine, check.task_id))
            restarted = f" {done}"
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
        return status, f"Healthy ({check.task_id}){restarted}"

    def _check_health(self, machine_id: str) -> HealthResult:
        try:
            return self.check_health(machine_id, self.machine.name, self.job.environment_id)
        except TimeoutError as exc:
            raise StepFailed(f"health check did not finish: {exc}", State.TIMED_OUT) from None


class Install(Bootstrap):
    STEPS: ClassVar = ("connect", "probe", "install")
    NEEDS_OCTOPUS = NEEDS_IDENTITIES = NEEDS_REGISTRATION = False


class Register(Bootstrap):
    STEPS: ClassVar = (
        "connect", "probe", "identity", "configure", "register", "service", "health",
    )  # fmt: skip


# --- planning: from data alone ---------------------------------------------------------------

# A dry run's stand-in for the subscription id `server-comms` will make: the later steps
# plan with it (register: the record's Uri changes) as a real run does with the new one.
NEW_SUBSCRIPTION = "poll://(new subscription)/"


def plan_install(
    probe: tentacle.Probe, options: TentacleOptions, *, source_file: str, upload_to: str
) -> Plan:
    """Install (or upgrade to) the wanted Tentacle unless the host has it (or a newer one).
    A local archive is uploaded to upload_to first; an instance there is restarted."""
    wanted = options.version
    if probe.installed and (wanted is None or _version(probe.version) >= _version(wanted)):
        return Noop("unchanged", f"Tentacle {probe.version}")
    source = options.resolved_source()
    if source is None:
        raise StepFailed(
            f"Tentacle is not installed and {source_file} has no [tentacle] source to install "
            "it from"
        )
    restart = options.instance if probe.instance_exists else None
    actions: tuple[Action, ...]
    if options.source_is_local:
        command = tentacle.install_from_file_command(upload_to, restart_instance=restart)
        actions = (Upload(source, upload_to), Command(command))
    else:
        actions = (Command(tentacle.install_from_url_command(source, restart_instance=restart)),)
    before = f"{probe.version} → " if probe.installed else ""
    return Change(
        f"would install Tentacle {before}{wanted or source}",
        actions,
        done=f"installed Tentacle {before}{wanted or '?'}",
        probe=tentacle.with_version(probe, wanted or "?", restart_pending=bool(restart)),
    )


def find_record(
    name: str,
    thumbprint: str | None,
    *,
    index: MachineIndex,
    elsewhere: Sequence[Resource] = (),
    renamed_from: str | None = None,
    take_over: bool = False,
) -> tuple[Resource | None, str | None]:
    """This machine's Octopus record (by name, or by --renamed-from and its certificate),
    and why registering its certificate would be refused, if it would. index: the space's
    records of the machine's kind; elsewhere: the records of the other kind with this
    thumbprint (a target that becomes a worker, or the reverse, is deregistered first)."""
    old = name_key(renamed_from or "")
    previous: Resource | None = None  # the record to rename (--renamed-from)
    if thumbprint:
        others = []
        for m in index.with_thumbprint(thumbprint):
            if name_key(m["Name"]) == old:
                previous = m
            elif name_key(m["Name"]) != name_key(name):
                others.append(m)
        if others:
            return None, _duplicate(thumbprint, others)
    named = index.named(name)
    if named and previous:
        return None, (
            f"both {label(named[0])} and {label(previous)} are registered: deregister the "
            "one that is not this machine, then run again"
        )
    record = named[0] if named else previous
    if record is None and thumbprint and elsewhere:
        return None, _duplicate(thumbprint, elsewhere)
    if record is not None:
        registered = registered_thumbprint(record)
        if registered != (thumbprint or "") and not take_over:
            return record, (
                f"the name {name} is registered ({record['Id']}) with another "
                f"thumbprint {registered or '(none)'}, not this machine's "
                f"{thumbprint or '(new)'}: deregister it, rename one of them, or "
                "run with --take-over to give that record this machine's certificate"
            )
    return record, None


def _duplicate(thumbprint: str, others: Sequence[Resource]) -> str:
    listed = ", ".join(map(label, others))
    return (
        f"thumbprint {thumbprint} is already registered as {listed}: a second "
        "record for one certificate would be a duplicate; deregister that one first"
    )


def plan_identity(
    probe: tentacle.Probe,
    machine: Machine,
    thumbprint: str | None,
    *,
    stored_as: str | None = None,
    holders: Sequence[Resource] = (),
    conflict: str | None = None,
) -> Plan:
    """Give the host the machine's certificate (thumbprint: the store's, None when it is
    to be minted; stored_as: the name the store holds it under). holders: Octopus' records
    with the host's certificate when it is not the machine's; conflict: find_record's."""
    name = machine.name
    if not probe.installed:
        raise StepFailed("Tentacle is not installed: run `inv install` (or bootstrap) first")
    if probe.thumbprint and probe.thumbprint != thumbprint:
        _refuse_another_machines_certificate(name, probe.thumbprint, holders)
    if conflict:
        return Noop("skipped", "not imported: Octopus has a conflicting record (see register)")
    if probe.instance_exists and thumbprint and probe.thumbprint == thumbprint:
        return Noop("unchanged", thumbprint)
    # A damaged configuration is recreated: the identity and the settings it held are
    # all in the store and the inventory, and the configure step follows.
    damaged = probe.configuration_error is not None
    create = not probe.instance_exists or damaged
    command = tentacle.import_identity_command(
        machine.tentacle.instance, create_instance=create, replace_configuration=damaged
    )
    mint: tuple[Action, ...] = () if thumbprint else (IdentityAction("mint", name),)
    after = tentacle.with_version(probe, probe.version, restart_pending=True)
    if create:  # a new configuration: none of the old settings are there to keep
        after = replace(
            after,
            instance_exists=True,
            configuration_error=None,
            port=None,
            no_listen=None,
            app_dir=None,
            trusted=(),
            polling_address=None,
            subscription=None,
            polling_proxy=tentacle.PollingProxySettings(),
        )
    what = thumbprint or "a new identity (minted on the controller)"
    return Change(
        f"would import {what}{_repaired(probe)}",
        (*mint, Command(command, pfx_of=stored_as or name)),
        done=f"imported {thumbprint}{_repaired(probe)}",
        probe=after,
    )


def _repaired(probe: tentacle.Probe) -> str:
    if probe.configuration_error is None:
        return ""
    return " into a new configuration (the old one was damaged)"


def _refuse_another_machines_certificate(
    name: str, host_thumbprint: str, holders: Sequence[Resource]
) -> None:
    """The host carries a certificate this machine's identity is not. If Octopus has it
    under another name, the host is a registered machine under a new name (renamed in
    the inventory, or the address is wrong): replacing its certificate would strand that
    record and make a second one, so stop."""
    others = [m for m in holders if name_key(m["Name"]) != name_key(name)]
    if others:
        listed = ", ".join(map(label, others))
        old = others[0]["Name"]
        raise StepFailed(
            f"the host already carries certificate {host_thumbprint}, which Octopus has "
            f"registered as {listed}: if {old} was renamed {name}, run again with "
            f"--renamed-from {old} (it keeps its identity and Octopus Id); otherwise check "
            f"{name}'s address. Nothing was changed"
        )


def plan_configure(
    probe: tentacle.Probe,
    machine: Machine,
    server_thumbprint: str,
    polling: drift.PollingServer | None = None,
) -> Plan:
    """Listen on the inventory's port (or poll the server), trusting only this Octopus."""
    if machine.is_polling:
        assert polling is not None
        return _plan_polling(probe, machine, server_thumbprint, polling)
    options, server = machine.tentacle, server_thumbprint
    if (
        probe.instance_exists
        and probe.port == options.port
        and probe.no_listen is False
        and probe.polling_address is None
        and probe.app_dir == options.app_dir
        and probe.trusted == (server,)
    ):
        return Noop("unchanged", f"port {options.port}, trusts {server[:8]}…")
    command = tentacle.configure_command(
        options.instance, port=options.port, app_dir=options.app_dir, server_thumbprint=server
    )
    what = f"listening on {options.port}, trusts only {server[:8]}…"
    after = tentacle.with_version(probe, probe.version, restart_pending=True)
    return Change(f"would configure: {what}", (Command(command),), done=what, probe=after)


def _plan_polling(
    probe: tentacle.Probe, machine: Machine, server: str, polling: drift.PollingServer
) -> Plan:
    app_dir, instance = machine.tentacle.app_dir, machine.tentacle.instance
    what = f"polls {polling.address}, trusts only {server[:8]}…"
    # The Tentacle's own proxy is set in the same round trip as the rest, before it.
    wanted_proxy = machine.registration.polling_proxy
    proxy = ""
    if drift.polling_proxy_drift(probe, wanted_proxy):
        proxy = _polling_proxy_command(instance, wanted_proxy)
        wanted = drift.polling_proxy_settings(wanted_proxy)
        what += f", polling proxy {probe.polling_proxy} → {wanted}"
    restarted = tentacle.with_version(probe, probe.version, restart_pending=True)
    if (
        probe.instance_exists
        and probe.no_listen is True
        and probe.app_dir == app_dir
        and probe.trusted == (server,)
        and probe.polling_address == polling.address
        and probe.subscription
    ):
        if not proxy:
            return Noop("unchanged", f"{what}, as {probe.subscription}")
        return Change(
            f"would configure: {what}",
            (Command(proxy),),
            done=f"{what}, as {probe.subscription}",
            probe=restarted,
        )
    command = tentacle.configure_polling_command(
        instance,
        app_dir=app_dir,
        server_thumbprint=server,
        server_host=polling.host,
        server_port=polling.port,
    )
    if proxy:
        command = f"{proxy} && {command}"
    # --reset-trust drops the subscription: server-comms makes a new one, which a real run
    # reads back from the command's output.
    return Change(
        f"would configure: {what}, with a new subscription",
        (Command(command),),
        done=what,
        probe=replace(restarted, subscription=NEW_SUBSCRIPTION),
    )


def _polling_proxy_command(instance: str, wanted: PollingProxy | None) -> str:
    if wanted is None:
        return tentacle.polling_proxy_command(instance, None)
    return tentacle.polling_proxy_command(instance, wanted.host, wanted.port, wanted.username)


def plan_register(
    machine: Machine,
    wanted: drift.WantedRecord,
    record: Resource | None,
    *,
    conflict: str | None = None,
    subscription: str = "",
    collection: str = "machines",
    stored_as: str | None = None,
) -> Plan:
    """Create the machine's record, or update the one it has (record) where it differs
    from wanted; a record found by --renamed-from takes the new name, and so does the
    identity in the store (stored_as: the name it is under). subscription: a polling
    Tentacle's, as the probe has it after configure."""
    if conflict:
        raise StepFailed(conflict)
    if machine.is_polling and not subscription:
        raise StepFailed(
            "the Tentacle has no polling subscription to register (configure did not "
            "leave one): run bootstrap again, or check `Tentacle show-configuration`"
        )
    rename: tuple[Action, ...] = ()
    if stored_as and stored_as != machine.name:
        rename = (IdentityAction("rename", machine.name, old=stored_as),)
    if record is None:
        where = (
            f"a worker in {', '.join(machine.worker_pools)}"
            if machine.is_worker
            else f"a machine in {machine.environment}"
        )
        post = ApiCall("POST", collection, body=wanted.new(machine.name))
        return Change(f"would create {where}", (*rename, post), done=f"created in {collection}")
    differences = [d.what for d in drift.differences(wanted, record)]
    renamed = name_key(record["Name"]) != name_key(machine.name)
    if renamed:  # --renamed-from: the same record under its new name
        differences.insert(0, f"name {record['Name']} → {machine.name}")
    if not differences:
        if rename:  # an earlier run renamed the record, and stopped before the identity
            renamed_identity = f"renamed the identity {stored_as} → {machine.name}"
            return Change(f"would {rename[0]}", rename, done=renamed_identity)
        return Noop("unchanged", record["Id"])
    name = machine.name if renamed else record["Name"]
    put = ApiCall("PUT", collection, record["Id"], body={**wanted.applied_to(record), "Name": name})
    listed = ", ".join(differences)
    return Change(
        f"would update {record['Id']}: {listed}",
        (*rename, put),
        done=f"updated {record['Id']}: {listed}",
    )


def plan_service(probe: tentacle.Probe, machine: Machine) -> Plan:
    """The service installed and started, or restarted when a step asked for it."""
    unit = tentacle.unit_name(machine.tentacle.instance)
    if not probe.service_enabled:
        action, done = "install", "installed and started"
    elif probe.restart_pending:
        action, done = "restart", "restarted"
    elif not probe.service_active:
        action, done = "start", "started"
    else:
        return Noop("unchanged", f"{unit} active")
    after = replace(probe, service_enabled=True, service_active=True, restart_pending=False)
    return Change(
        f"would have {unit} {done}",
        (Command(service_command(machine, action)),),
        done=f"{unit} {done}",
        probe=after,
    )


def plan_hung_service_restart(machine: Machine, task_id: str) -> Change:
    """The service restarted once: systemd says active, yet Octopus found it Unavailable
    (in the Health task task_id)."""
    unit = tentacle.unit_name(machine.tentacle.instance)
    why = f"active but Unavailable in {task_id}"
    return Change(
        f"would restart {unit}, {why}",
        (Command(service_command(machine, "restart")),),
        done=f"after restarting {unit}, {why}",
    )


def service_command(machine: Machine, action: str) -> str:
    options = machine.tentacle
    port = None if machine.is_polling else options.port
    return tentacle.service_command(options.instance, action, port=port)


def _version(text: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (text or "0").split("-")[0].split("+")[0].split("."):
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)
