"""The Octopus stand-in's catalog: what a machine record refers to by Id.

Machine policies (`MachinePolicyId`; the default one is there from the start), tenants
(`TenantIds`), tag sets whose tags' canonical names a machine carries (`TenantTags`), and
proxies (a listening endpoint's `ProxyId`). Each kind is a `Kind`: its route under the space,
its Id prefix, its paging ItemType and link template, and `build`, which checks a POST body
the way the server does and returns the stored resource. The shapes are Octopus.Client's
models and the REST API reference (octopus-facts §6); what the stand-in stores is what the
server answers, except a proxy's password, which is answered as {HasValue, NewValue: null}.

OctopusState keeps the items (`catalog`, `add_catalog_item`) and checks machines' references
against them; `routes` serves them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from octoboot.sandbox.octopus_api.records import (
    SPACE_ID,
    USER_NAME,
    Resource,
    ServerError,
    ValidationError,
    iso,
    known,
    now,
    same_name,
    slugify,
    string_list,
)

DEFAULT_MACHINE_POLICY_ID = "MachinePolicies-1"
Build = Callable[[Resource, str, Mapping[str, list[Resource]]], Resource]


@dataclass(frozen=True)
class Kind:
    route: str  # under /api/{space}/
    prefix: str  # of the Ids: MachinePolicies-1
    item_type: str  # a page's ItemType
    template: str  # the query a page's Template link names
    what: str  # in messages
    build: Build


def _named(body: Resource, items: list[Resource], what: str) -> str:
    name = body.get("Name")
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise ValidationError(f"Please provide a name for this {what}.")
    if any(same_name(item["Name"], name) for item in items):
        raise ValidationError(
            f"A {what} with the name '{name}' already exists. Please choose a different name."
        )
    return name


def _audited() -> Resource:
    return {"SpaceId": SPACE_ID, "LastModifiedOn": iso(now()), "LastModifiedBy": USER_NAME}


# --- machine policies ------------------------------------------------------------------------


def _policy(body: Resource, item_id: str, catalog: Mapping[str, list[Resource]]) -> Resource:
    name = _named(body, catalog["machinepolicies"], "machine policy")
    cleanup = body.get("MachineCleanupPolicy") or {}
    behaviors = ("DoNotDelete", "DeleteUnavailableMachines")
    behavior = cleanup.get("DeleteMachinesBehavior", "DoNotDelete")
    if behavior not in behaviors:
        raise ValidationError(f"DeleteMachinesBehavior must be one of {', '.join(behaviors)}.")
    policy = {
        **_policy_defaults(),
        **{k: v for k, v in body.items() if k in _policy_defaults()},
        "Id": item_id,
        "Name": name,
        "Slug": slugify(name),
        "IsDefault": False,  # the default policy is the server's own
        "MachineCleanupPolicy": {
            "DeleteMachinesBehavior": behavior,
            "DeleteMachinesElapsedTimeSpan": cleanup.get("DeleteMachinesElapsedTimeSpan")
            or "1.00:00:00",
        },
    }
    return {**policy, **_audited()}


def _policy_defaults() -> Resource:
    """A new policy's settings, as the REST API reference shows them (octopus-facts §6.1)."""
    return {
        "Description": "",
        "MachineHealthCheckPolicy": {
            "PowerShellHealthCheckPolicy": {"RunType": "InheritFromDefault", "ScriptBody": None},
            "BashHealthCheckPolicy": {"RunType": "InheritFromDefault", "ScriptBody": None},
            "HealthCheckInterval": "01:00:00",
            "HealthCheckCron": None,
            "HealthCheckCronTimezone": "UTC",
            "HealthCheckType": "RunScript",
        },
        "MachineConnectivityPolicy": {"MachineConnectivityBehavior": "ExpectedToBeOnline"},
        "MachineCleanupPolicy": {
            "DeleteMachinesBehavior": "DoNotDelete",
            "DeleteMachinesElapsedTimeSpan": "1.00:00:00",
        },
        "MachineUpdatePolicy": {
            "CalamariUpdateBehavior": "UpdateOnDeployment",
            "TentacleUpdateBehavior": "NeverUpdate",
            "KubernetesAgentUpdateBehavior": "Update",
            "TentacleUpdateAccountId": None,
        },
        "MachineRpcCallRetryPolicy": {
            "Enabled": True,
            "RetryDuration": "00:02:30",
            "HealthCheckRetryDuration": "00:02:30",
        },
        "PollingRequestQueueTimeout": "00:02:00",
        "ConnectionRetrySleepInterval": "00:00:01",
        "ConnectionRetryCountLimit": 5,
        "ConnectionRetryTimeLimit": "00:05:00",
        "ConnectionConnectTimeout": "00:01:00",
    }


def default_machine_policy() -> Resource:
    """The policy every server has, used by machines that name none (IsDefault)."""
    return {
        **_policy_defaults(),
        "Id": DEFAULT_MACHINE_POLICY_ID,
        "Name": "Default Machine Policy",
        "Slug": "default-machine-policy",
        "Description": "This policy is used by machines that are not assigned to any other policy.",
        "IsDefault": True,
        **_audited(),
    }


# --- tenants and tag sets ---------------------------------------------------------------------


def _tag_set(body: Resource, item_id: str, catalog: Mapping[str, list[Resource]]) -> Resource:
    name = _named(body, catalog["tagsets"], "tag set")
    tags = body.get("Tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, dict) for tag in tags):
        raise ValidationError("Tags must be a list of tags.")
    seen: list[Resource] = []
    for number, tag in enumerate(tags, start=1):
        tag_name = _named(tag, seen, "tag")
        seen.append(
            {
                "Id": f"{item_id}-{number}",
                "Name": tag_name,
                "CanonicalTagName": f"{name}/{tag_name}",
                "Color": tag.get("Color") or "#6e6e6e",
                "Description": tag.get("Description") or "",
                "SortOrder": number - 1,
            }
        )
    scopes = body.get("Scopes") or ["Tenant"]
    return {
        "Id": item_id,
        "Name": name,
        "Description": body.get("Description") or "",
        "SortOrder": len(catalog["tagsets"]),
        "Scopes": scopes,
        "Type": body.get("Type") or "MultiSelect",
        "IsSystem": False,
        "Tags": seen,
        **_audited(),
    }


def tenant_tags(catalog: Mapping[str, list[Resource]]) -> dict[str, str]:
    """Every tag a tenant or a machine may carry, by folded canonical name: the tags of the
    tag sets that apply to tenants."""
    return {
        tag["CanonicalTagName"].casefold(): tag["CanonicalTagName"]
        for tag_set in catalog["tagsets"]
        if "Tenant" in tag_set["Scopes"]
        for tag in tag_set["Tags"]
    }


def _tenant(body: Resource, item_id: str, catalog: Mapping[str, list[Resource]]) -> Resource:
    name = _named(body, catalog["tenants"], "tenant")
    tags = body.get("TenantTags") or []
    known = tenant_tags(catalog)
    missing = [tag for tag in tags if str(tag).casefold() not in known]
    if missing:
        raise ValidationError(
            *(f"The tag '{tag}' does not exist in any tag set that applies to tenants."
              for tag in missing)
        )  # fmt: skip
    slug = body.get("Slug")
    return {
        "Id": item_id,
        "Name": name,
        "Slug": slug if isinstance(slug, str) and slug else slugify(name),
        "Description": body.get("Description") or "",
        "IsDisabled": bool(body.get("IsDisabled", False)),
        "TenantTags": [known[str(tag).casefold()] for tag in tags],
        "ProjectEnvironments": body.get("ProjectEnvironments") or {},
        "ClonedFromTenantId": None,
        **_audited(),
    }


# --- what a machine refers to -----------------------------------------------------------------


def machine_references(
    body: Resource, catalog: Mapping[str, list[Resource]], errors: list[str]
) -> tuple[str, list[str], list[str]]:
    """The machine policy, tenants and tenant tags a machine body names, and the listening
    endpoint's proxy, checked against the catalog (errors collects what is wrong): (policy
    Id, tenant Ids, tenant tags)."""
    for field in ("TenantIds", "TenantTags"):
        if field in body and body[field] is None:
            # terraform-provider-octopusdeploy#162: a null list reached LINQ on the server.
            raise ServerError("Value cannot be null. (Parameter 'source')")
    policies = catalog["machinepolicies"]
    policy_id = body.get("MachinePolicyId") or next(p["Id"] for p in policies if p["IsDefault"])
    if not known(policies, policy_id):
        errors.append(f"The machine policy '{policy_id}' does not exist.")
    tenant_ids = string_list(body, "TenantIds", errors)
    errors += [
        f"The tenant '{tenant}' does not exist."
        for tenant in tenant_ids
        if not known(catalog["tenants"], tenant)
    ]
    tags, canonical = string_list(body, "TenantTags", errors), tenant_tags(catalog)
    errors += [
        f"The tag '{tag}' does not exist in any tag set that applies to tenants."
        for tag in tags
        if tag.casefold() not in canonical
    ]
    proxy_id = (body.get("Endpoint") or {}).get("ProxyId")
    if proxy_id and not known(catalog["proxies"], str(proxy_id)):
        errors.append(f"The proxy '{proxy_id}' does not exist.")
    return policy_id, tenant_ids, tags


# --- proxies ---------------------------------------------------------------------------------


def _proxy(body: Resource, item_id: str, catalog: Mapping[str, list[Resource]]) -> Resource:
    name = _named(body, catalog["proxies"], "proxy")
    host = body.get("Host")
    if not isinstance(host, str) or not host.strip():
        raise ValidationError("Please provide a host for this proxy.")
    port = body.get("Port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValidationError("The proxy's port must be a number from 0 to 65535.")
    if (body.get("ProxyType") or "HTTP") != "HTTP":
        raise ValidationError("The type of proxy must be HTTP: only HTTP proxies are supported.")
    password = body.get("Password") or {}
    return {
        "Id": item_id,
        "Name": name,
        "Host": host.strip(),
        "Port": port,
        "ProxyType": "HTTP",
        "Username": body.get("Username"),
        # A sensitive value: the server keeps it and answers only whether it has one.
        "Password": {"HasValue": bool(password.get("NewValue")), "NewValue": None, "Hint": None},
        **_audited(),
    }


KINDS: dict[str, Kind] = {
    kind.route: kind
    for kind in (
        Kind(
            "machinepolicies",
            "MachinePolicies",
            "MachinePolicy",
            "{?skip,take,ids,partialName}",
            "machine policy",
            _policy,
        ),
        Kind(
            "tenants",
            "Tenants",
            "Tenant",
            "{?skip,projectId,name,tags,take,ids,clone,partialName,clonedFromTenantId}",
            "tenant",
            _tenant,
        ),
        Kind("tagsets", "TagSets", "TagSet", "{?skip,take,ids,partialName}", "tag set", _tag_set),
        Kind("proxies", "Proxies", "Proxy", "{?skip,take,ids,partialName}", "proxy", _proxy),
    )
}


def seeds() -> dict[str, list[Resource]]:
    """What a new server's catalog holds: the default machine policy, nothing else."""
    policies = [default_machine_policy()]
    return {route: policies if route == "machinepolicies" else [] for route in KINDS}


def rendered(kind: Kind, item: Resource, space_path: str) -> Resource:
    """An item as the API answers it: with its links."""
    return {**item, "Links": {"Self": f"{space_path}/{kind.route}/{item['Id']}"}}
