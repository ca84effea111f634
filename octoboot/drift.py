"""The wanted state of a machine, and how what Octopus and the host hold differs from it.

    wanted = wanted_record(machine, environment_id="Environments-1", ssh_host="10.0.0.5",
                           thumbprint=identity.thumbprint)
    differences(wanted, record)          # → [Drift("address", "Octopus https://…, …")]

A machine is a deployment target (`/machines`: an environment and roles) or a worker
(`/workers`: worker pools), listening (`Uri` https://host:port/, where Octopus connects) or
polling (`Uri` poll://<subscription id>/, the id the host's Tentacle polls with: the host
generates it, octoboot reads it back and writes it into the record).

One truth for every command that compares: `register` creates the record from
`WantedRecord.new()` or updates it with `applied_to()` when `differences()` finds any (and
`--dry-run` names them), and `status` calls the same differences drift (`find_drift`, which
adds the host's side), so the two cannot disagree. `unlisted()` finds the records no
inventory lists (`listed()`: the names that count as listed), `duplicates_of()` one
certificate registered under several names. Pure: data in, data out,
no SSH or HTTP.

A registration field is added in three places here, next to each other: a `RegistrationIds`
field (or a `WantedRecord` one, for what is not named in Octopus), its place in `fields()`,
and its row in `differences()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from octoboot.inventory import (
    DEFAULT_POLLING_PORT,
    TARGET,
    UNTENANTED,
    WORKER,
    Inventory,
    Machine,
    OctopusOverride,
    PollingProxy,
    name_key,
)
from octoboot.octopus import HEALTHY, Resource, health_status, registered_thumbprint
from octoboot.tentacle import PollingProxySettings, Probe

LISTENING = "TentaclePassive"  # Octopus' name for a listening Tentacle's endpoint
POLLING = "TentacleActive"  # ... and for a polling one's
# Where Octopus keeps each kind of machine: /api/{space}/machines or /api/{space}/workers.
COLLECTIONS = {TARGET: "machines", WORKER: "workers"}


def collection(machine: Machine) -> str:
    return COLLECTIONS[machine.kind]


@dataclass(frozen=True)
class PollingServer:
    """Where a polling Tentacle connects to (`server-comms --host --port`)."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """As the Tentacle stores it: .NET's Uri of https://host:port (a trailing slash, no
        port 443)."""
        port = "" if self.port == 443 else f":{self.port}"
        return f"https://{self.host.lower()}{port}/"


def polling_server(octopus_url: str, override: OctopusOverride | None) -> PollingServer:
    """The Octopus URL's host, or server_comms_address's, on polling_port if set, else the
    address's port (443 when it names none), else 10943, as `register-with` chooses
    (RegisterMachineCommandBase, --server-comms-address and --server-comms-port)."""
    override = override or OctopusOverride()
    if override.server_comms_address:
        address = urlsplit(override.server_comms_address)
        host, port = address.hostname or "", address.port or 443
    else:
        host, port = urlsplit(octopus_url).hostname or "", DEFAULT_POLLING_PORT
    return PollingServer(host, override.polling_port or port)


@dataclass(frozen=True)
class RegistrationIds:
    """The inventory's registration fields (inventory.Registration) as the Ids Octopus keeps,
    found once per run (registration.py)."""

    machine_policy_id: str
    tenant_ids: tuple[str, ...] = ()
    tenant_tags: tuple[str, ...] = ()  # canonical names, spelt as the tag sets spell them
    tenanted: str = UNTENANTED
    proxy_id: str | None = None  # a listening endpoint's Octopus-side proxy; None: direct


@dataclass(frozen=True)
class WantedRecord:
    """The Octopus machine record the inventory asks for (the name aside: that is the key
    the record is found by)."""

    environment_id: str | None  # targets only
    roles: tuple[str, ...]  # targets only
    communication_style: str
    # Listening: https://host:port/. Polling: the host's poll://<id>/; "" for one the host
    # does not have yet (a dry run); None when the host was not looked at (status), and
    # then not compared.
    uri: str | None
    # The machine's certificate; "" for one a dry run would mint; None when neither the
    # store nor the host has one (status), and then not compared.
    thumbprint: str | None
    registration: RegistrationIds
    kind: str = TARGET
    worker_pool_ids: tuple[str, ...] = ()  # workers only

    def fields(self) -> Resource:
        """The record's fields as Octopus takes them."""
        registration = self.registration
        placed: Resource = (
            {"WorkerPoolIds": list(self.worker_pool_ids)}
            if self.kind == WORKER
            else {
                "EnvironmentIds": [self.environment_id],
                "Roles": list(self.roles),
                # Lists as [], never null: a null tenant list once failed the server
                # (octopus-facts §6.2).
                "TenantIds": list(registration.tenant_ids),
                "TenantTags": list(registration.tenant_tags),
                "TenantedDeploymentParticipation": registration.tenanted,
            }
        )
        endpoint: Resource = {
            "CommunicationStyle": self.communication_style,
            "Uri": self.uri or "",
            "Thumbprint": self.thumbprint or "",
        }
        if self.communication_style == LISTENING:
            # ListeningTentacleEndpointResource's: null is direct. A polling Tentacle's
            # proxy is its own setting (polling-proxy), not the record's.
            endpoint["ProxyId"] = registration.proxy_id
        return {**placed, "MachinePolicyId": registration.machine_policy_id, "Endpoint": endpoint}

    def new(self, name: str) -> Resource:
        """The body that creates the record."""
        return {"Name": name, **self.fields(), "IsDisabled": False}

    def applied_to(self, current: Resource) -> Resource:
        """current with the wanted fields: the same record (Id, links, fields octoboot does
        not manage), updated in place."""
        fields = self.fields()
        endpoint = {**(current.get("Endpoint") or {}), **fields["Endpoint"]}
        return {**current, **fields, "Endpoint": endpoint}


def communication_style(machine: Machine) -> str:
    """How Octopus and the machine's Tentacle talk (`polling_proxy` is refused for a machine
    that does not poll: registration.py)."""
    return POLLING if machine.is_polling else LISTENING


def wanted_record(
    machine: Machine,
    *,
    environment_id: str | None,
    ssh_host: str,
    thumbprint: str | None,
    registration: RegistrationIds,
    subscription: str | None = None,
    worker_pool_ids: Sequence[str] = (),
) -> WantedRecord:
    """ssh_host: the address SSH reaches the machine by (ssh_config's HostName), the best
    default for Octopus to reach a listening one by too, unless the inventory names a
    public_hostname. subscription: a polling machine's poll://<id>/ on its host ("" when it
    has none yet, None when not known). environment_id: a target's; worker_pool_ids: a
    worker's pools, resolved."""
    style = communication_style(machine)
    if style == POLLING:
        uri = subscription
    else:
        host = (machine.public_hostname or ssh_host).lower()
        uri = f"https://{host}:{machine.tentacle.port}/"
    return WantedRecord(
        environment_id=None if machine.is_worker else environment_id,
        roles=tuple(sorted(machine.roles)),
        communication_style=style,
        uri=uri,
        thumbprint=thumbprint,
        registration=registration,
        kind=machine.kind,
        worker_pool_ids=tuple(sorted(worker_pool_ids)) if machine.is_worker else (),
    )


@dataclass(frozen=True)
class Drift:
    what: str  # short, for the table and register's "updated …: what, what"
    detail: str = ""  # for the reason

    def __str__(self) -> str:
        return f"{self.what} ({self.detail})" if self.detail else self.what


def _words(values: Iterable[str]) -> str:
    return " ".join(sorted(values))


def _folded(values: Iterable[str]) -> frozenset[str]:
    # Octopus compares role names, Ids and tag names without case; order never matters.
    return frozenset(v.lower() for v in values)


def differences(wanted: WantedRecord, record: Resource) -> list[Drift]:
    """Where the record Octopus holds differs from the wanted one."""
    found: list[Drift] = []

    def compare(what: str, differs: bool, have: str, want: str, source: str = "inventory") -> None:
        if differs:
            found.append(Drift(what, f"Octopus {have or 'none'}, {source} {want or 'none'}"))

    registration = wanted.registration
    if wanted.kind == WORKER:
        pools = record.get("WorkerPoolIds") or []
        compare(
            "worker pools",
            set(pools) != set(wanted.worker_pool_ids),
            _words(pools),
            _words(wanted.worker_pool_ids),
        )
    else:
        environments, roles = record.get("EnvironmentIds") or [], record.get("Roles") or []
        compare(
            "environment",
            set(environments) != {wanted.environment_id},
            _words(environments),
            str(wanted.environment_id),
        )
        compare(
            "roles", _folded(roles) != _folded(wanted.roles), _words(roles), _words(wanted.roles)
        )
        tenants, tags = record.get("TenantIds") or [], record.get("TenantTags") or []
        compare(
            "tenants",
            _folded(tenants) != _folded(registration.tenant_ids),
            _words(tenants),
            _words(registration.tenant_ids),
        )
        compare(
            "tenant tags",
            _folded(tags) != _folded(registration.tenant_tags),
            _words(tags),
            _words(registration.tenant_tags),
        )
        # A record that does not say is told as Octopus.Client tells it (octopus-facts §6.2).
        tenanted = record.get("TenantedDeploymentParticipation") or (
            "Tenanted" if tenants or tags else UNTENANTED
        )
        compare("tenanted", tenanted != registration.tenanted, tenanted, registration.tenanted)
    policy, wanted_policy = record.get("MachinePolicyId") or "", registration.machine_policy_id
    compare("machine policy", policy.lower() != wanted_policy.lower(), policy, wanted_policy)
    endpoint = record.get("Endpoint") or {}
    style, uri = endpoint.get("CommunicationStyle") or "", endpoint.get("Uri") or ""
    compare(
        "communication style",
        style != wanted.communication_style,
        style,
        wanted.communication_style,
    )
    if wanted.communication_style == POLLING:
        if wanted.uri is not None:
            # The id routes Octopus' requests to the Tentacle that polls with it.
            compare(
                "subscription",
                uri.lower() != wanted.uri.lower(),
                uri,
                wanted.uri or "a new one",
                source="host",
            )
    else:
        compare("address", uri.lower() != (wanted.uri or "").lower(), uri, str(wanted.uri))
        proxy, wanted_proxy = endpoint.get("ProxyId") or "", registration.proxy_id or ""
        compare("proxy", proxy.lower() != wanted_proxy.lower(), proxy, wanted_proxy)
    if wanted.thumbprint is not None:
        registered, expected = registered_thumbprint(record), wanted.thumbprint.upper()
        compare(
            "Octopus thumbprint",
            registered != expected,
            registered,
            expected or "a new identity",
            source="expected",
        )
    return found


def polling_proxy_settings(wanted: PollingProxy | None) -> PollingProxySettings:
    """The host's settings once `tentacle.polling_proxy_command` has applied wanted: its
    proxy, or none at all (not even the system's default)."""
    if wanted is None:
        return PollingProxySettings(use_default=False)
    return PollingProxySettings(wanted.host, wanted.port, wanted.username or "", False)


def polling_proxy_drift(probe: Probe, wanted: PollingProxy | None) -> Drift | None:
    """How a polling Tentacle's own proxy on the host differs from the inventory's
    `polling_proxy`. None wanted: no proxy host of its own; the system's default proxy (a
    fresh instance's, UseDefaultProxy) is left to the host, where it is the service's
    environment's. The host name is compared without case (the Tentacle keeps it as .NET's
    UriBuilder reads it)."""
    have, want = probe.polling_proxy, polling_proxy_settings(wanted)
    if want.host is None:
        same = have.host is None
    else:
        same = (have.host or "").lower() == want.host.lower() and (
            have.port,
            have.username,
            have.use_default,
        ) == (want.port, want.username, False)
    return None if same else Drift("polling proxy", f"host {have}, inventory {want}")


def find_drift(
    wanted: WantedRecord,
    *,
    probe: Probe | None,
    store_thumbprint: str | None,
    record: Resource | None,
    health: str | None,
    thumbprint_registered_as: Sequence[str] = (),
    polling: PollingServer | None = None,
    polling_proxy: PollingProxy | None = None,
    duplicates: Sequence[str] = (),
) -> list[Drift]:
    """How a machine differs from the wanted state: the host, the identity store, the
    Octopus record (`differences`) and its health. probe None: the host was not reached, so
    only the store and Octopus are compared; record None: Octopus has no machine of this
    name (thumbprint_registered_as: the records that have its thumbprint instead);
    duplicates: the records that have the record's thumbprint under other names; health:
    from a fresh check (None: the record's own HealthStatus).
    polling: where a polling machine's Tentacle should connect to; polling_proxy: the
    proxy it should connect through (None: none)."""
    drift: list[Drift] = []
    host_thumbprint = probe.thumbprint if probe else None
    if probe is not None:
        drift += [Drift("probe", problem) for problem in probe.problems]
        if not probe.installed:
            drift.append(Drift("not installed"))
        else:
            if probe.configuration_error:
                drift.append(Drift("configuration damaged", probe.configuration_error))
            elif not host_thumbprint:
                drift.append(Drift("no host certificate"))
            if not probe.service_active:
                drift.append(Drift("service not active"))
            if probe.instance_exists:
                drift += _host_communication(wanted, probe, polling)
                proxy = polling_proxy_drift(probe, polling_proxy)
                if wanted.communication_style == POLLING and proxy:
                    drift.append(proxy)
    if store_thumbprint is None:
        drift.append(Drift("no stored identity"))
    elif host_thumbprint and host_thumbprint != store_thumbprint:
        drift.append(Drift("host thumbprint", f"host {host_thumbprint}, store {store_thumbprint}"))
    if record is None:
        elsewhere = ", ".join(thumbprint_registered_as)
        detail = f"its thumbprint is registered as {elsewhere}" if elsewhere else ""
        drift.append(Drift("missing from Octopus", detail))
        return drift
    drift += differences(wanted, record)
    if duplicates:
        also = ", ".join(duplicates)
        drift.append(Drift("duplicate records", f"its thumbprint is also registered as {also}"))
    health = health_status(record) if health is None else health
    if health != HEALTHY:
        drift.append(Drift("health", health))
    return drift


def _host_communication(
    wanted: WantedRecord, probe: Probe, polling: PollingServer | None
) -> list[Drift]:
    """The host's Tentacle against the wanted style: listening, or polling the right server
    with a subscription."""
    host = f"polls {probe.polling_address}" if probe.polling_address else "listening"
    if wanted.communication_style == LISTENING:
        if probe.polling_address or probe.no_listen:
            return [Drift("host communication", f"host {host}, inventory listening")]
        return []
    want = polling.address if polling else None
    if probe.polling_address is None or (want and probe.polling_address != want):
        return [Drift("host communication", f"host {host}, inventory polls {want or 'Octopus'}")]
    if not probe.subscription:
        return [Drift("no polling subscription on the host")]
    return []


def unlisted(
    records: Iterable[Resource],
    group_id: str,
    listed: Iterable[str],
    limits: Sequence[str] = (),
    field: str = "EnvironmentIds",
) -> list[Resource]:
    """The records in the group (an environment; WorkerPoolIds: a worker pool) whose names
    are not listed (case-insensitively) and match one of the --limit globs, if any; by
    name."""
    known = {name_key(name) for name in listed}
    return sorted(
        (
            record
            for record in records
            # Filtered here too: the group filter is the server's to honour or not.
            if group_id in (record.get(field) or [])
            and name_key(record["Name"]) not in known
            and matches_limits(record["Name"], limits)
        ),
        key=lambda record: record["Name"].lower(),
    )


def matches_limits(name: str, limits: Sequence[str]) -> bool:
    """Whether a record of this name is within --limit: it matches one of the globs, or
    there are none."""
    return not limits or any(fnmatchcase(name, pattern) for pattern in limits)


def duplicates_of(record: Resource, records: Iterable[Resource]) -> list[Resource]:
    """The other records with this record's thumbprint: one certificate registered under
    several names (a machine re-registered under a new name, a clone). By name."""
    thumbprint, name = registered_thumbprint(record), name_key(record["Name"])
    if not thumbprint:
        return []
    return sorted(
        (
            other
            for other in records
            if registered_thumbprint(other) == thumbprint and name_key(other["Name"]) != name
        ),
        key=lambda other: other["Name"].lower(),
    )


def listed(inventory: Inventory) -> list[str]:
    """Every machine name any inventory file lists. A record of one of them is never
    "unlisted", whatever environment it is in: it is that file's machine (in the wrong
    environment, that file's status calls it drift)."""
    return [machine.name for file in inventory.environments.values() for machine in file.machines]
