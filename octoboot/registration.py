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

from octoboot.drift import RegistrationIds
from octoboot.errors import ConfigError
from octoboot.inventory import Machine, Registration
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
    if missing or policy is None:
        return None, missing
    return RegistrationIds(machine_policy_id=policy["Id"]), []


def resolve_all(
    machines: Iterable[Machine], clients: Mapping[str, OctopusClient]
) -> dict[str, RegistrationIds]:
    """Each machine's RegistrationIds, from the Octopus of its environment file (clients, by
    env key). Raises one ConfigError naming every name some Octopus does not have."""
    found: dict[str, RegistrationIds] = {}
    problems: dict[str, None] = {}  # ordered, without repeats
    catalogs: dict[int, Catalog] = {}
    for machine in machines:
        client = clients[machine.env_key]
        if id(client) not in catalogs:
            catalogs[id(client)] = Catalog(machine_policies=client.catalog("machinepolicies"))
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


def _find(resources: Sequence[Resource], wanted: str, fields: Sequence[str]) -> Resource | None:
    """The resource whose Id, name or slug (the fields, in that order of preference) is
    wanted, compared as Octopus compares them: without case, trimmed."""
    key = wanted.strip().lower()
    for field in fields:
        for resource in resources:
            if str(resource.get(field) or "").strip().lower() == key:
                return resource
    return None
