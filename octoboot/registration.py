"""The inventory's registration fields (inventory.Registration), named as people name them,
turned into the Ids Octopus keeps (drift.RegistrationIds): once per run, before any machine is
touched.

    ids = resolve_all(machines, clients)       # {machine name: RegistrationIds}

What a run needs of each Octopus is read once (`OctopusClient.catalog`: the machine
policies always, for the default one; the rest only when a machine names one), and every name
Octopus does not have is told in one line, naming the file it is in (a ConfigError: exit 2,
nothing touched). `resolve` is pure: names and the server's lists in, Ids or what is missing
out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from octoboot.drift import POLLING, RegistrationIds, communication_style
from octoboot.errors import ConfigError
from octoboot.inventory import UNTENANTED, Machine, Registration
from octoboot.octopus import OctopusClient, Resource


@dataclass(frozen=True)
class Missing:
    """A name the inventory uses that Octopus does not have."""

    what: str  # "machine policy"
    name: str

    def __str__(self) -> str:
        return f'no {self.what} "{self.name}"'


@dataclass(frozen=True)
class Catalog:
    """What one Octopus has of what machines refer to (its `/all` lists)."""

    machine_policies: Sequence[Resource] = ()
    tenants: Sequence[Resource] = ()
    tag_sets: Sequence[Resource] = ()
    proxies: Sequence[Resource] = ()

    @staticmethod
    def routes(registrations: Iterable[Registration]) -> set[str]:
        """The lists a run needs: the policies always (the default one), the others only
        when some machine names one."""
        registrations = list(registrations)
        return {"machinepolicies"} | {
            route
            for route, used in (
                ("tenants", any(r.tenants for r in registrations)),
                ("tagsets", any(r.tenant_tags for r in registrations)),
                ("proxies", any(r.proxy for r in registrations)),
            )
            if used
        }


def resolve(
    registration: Registration, catalog: Catalog
) -> tuple[RegistrationIds | None, list[Missing]]:
    """The Ids of what registration names, or what Octopus does not have."""
    missing: list[Missing] = []
    policies = catalog.machine_policies
    if registration.machine_policy is None:
        policy = next((p for p in policies if p.get("IsDefault")), None)
        if policy is None:
            missing.append(Missing("machine policy", "(the default one)"))
    else:
        policy = _find(policies, registration.machine_policy, ("Id", "Name"))
        if policy is None:
            missing.append(Missing("machine policy", registration.machine_policy))
    tenant_ids = []
    for name in registration.tenants:
        tenant = _find(catalog.tenants, name, ("Id", "Name", "Slug"))
        if tenant is None:
            missing.append(Missing("tenant", name))
        elif tenant["Id"] not in tenant_ids:
            tenant_ids.append(tenant["Id"])
    canonical = _tenant_tags(catalog.tag_sets)
    tags = []
    for tag in registration.tenant_tags:
        found = canonical.get(tag.strip().lower())
        if found is None:
            missing.append(Missing("tenant tag", tag))
        elif found not in tags:
            tags.append(found)
    proxy = None
    if registration.proxy is not None:
        proxy = _find(catalog.proxies, registration.proxy, ("Id", "Name"))
        if proxy is None:
            missing.append(Missing("proxy", registration.proxy))
    if missing or policy is None:
        return None, missing
    tenanted = registration.tenanted or ("Tenanted" if tenant_ids or tags else UNTENANTED)
    return RegistrationIds(
        machine_policy_id=policy["Id"],
        tenant_ids=tuple(tenant_ids),
        tenant_tags=tuple(tags),
        tenanted=tenanted,
        proxy_id=proxy["Id"] if proxy else None,
    ), []


def _tenant_tags(tag_sets: Sequence[Resource]) -> dict[str, str]:
    """The canonical names ("Set/Tag") of the tags a machine may carry, folded: those of
    tag sets that apply to tenants (a set that does not say is from before scopes)."""
    return {
        str(tag["CanonicalTagName"]).strip().lower(): tag["CanonicalTagName"]
        for tag_set in tag_sets
        if "Tenant" in (tag_set.get("Scopes") or ["Tenant"])
        for tag in tag_set.get("Tags") or []
    }


def resolve_all(
    machines: Iterable[Machine], clients: Mapping[str, OctopusClient]
) -> dict[str, RegistrationIds]:
    """Each machine's RegistrationIds, from the Octopus of its environment file (clients, by
    env key). Raises one ConfigError naming every name some Octopus does not have."""
    machines = list(machines)
    found: dict[str, RegistrationIds] = {}
    problems: dict[str, None] = {}  # ordered, without repeats
    catalogs: dict[int, Catalog] = {}
    for machine in machines:
        polls = communication_style(machine) == POLLING
        if machine.registration.polling_proxy and not polls:
            raise ConfigError(
                f"{machine.source_file}: machine {machine.name!r}: polling_proxy is the proxy a "
                "polling Tentacle reaches Octopus through; this machine listens, so Octopus "
                "reaches it, through the Octopus proxy that `proxy` names if any"
            )
        if machine.registration.proxy and polls:
            # As `register-with --proxy` refuses it (octopus-facts §6.3): a polling endpoint
            # has no ProxyId, so the name would be resolved and then ignored.
            raise ConfigError(
                f"{machine.source_file}: machine {machine.name!r}: proxy is the Octopus-side "
                "proxy Octopus reaches a listening Tentacle through; this machine polls, so it "
                "reaches Octopus itself, through the proxy that `polling_proxy` names if any"
            )
        client = clients[machine.env_key]
        if id(client) not in catalogs:
            catalogs[id(client)] = _catalog(
                client, [m.registration for m in machines if clients[m.env_key] is client]
            )
        ids, missing = resolve(machine.registration, catalogs[id(client)])
        for gap in missing:
            problems[f"{machine.source_file}: Octopus at {client.url} has {gap}"] = None
        if ids is not None:
            found[machine.name] = ids
    if problems:
        raise ConfigError(
            "; ".join(problems) + ": create what is missing in Octopus, or fix the inventory"
        )
    return found


def _catalog(client: OctopusClient, registrations: list[Registration]) -> Catalog:
    """What this Octopus has of what these registrations name: each list read once."""
    needed = Catalog.routes(registrations)

    def read(route: str) -> list[Resource]:
        return client.catalog(route) if route in needed else []

    return Catalog(
        machine_policies=read("machinepolicies"),
        tenants=read("tenants"),
        tag_sets=read("tagsets"),
        proxies=read("proxies"),
    )


def _find(resources: Sequence[Resource], wanted: str, fields: Sequence[str]) -> Resource | None:
    """The resource whose Id, name or slug (the fields, in that order of preference) is
    wanted, compared as Octopus compares them: without case, trimmed."""
    key = wanted.strip().lower()
    for field in fields:
        for resource in resources:
            if str(resource.get(field) or "").strip().lower() == key:
                return resource
    return None
