"""Which records a list route answers and how: the query filters (name, partialName, ids;
a machine's thumbprint, environments, roles, health, style, disabled; a worker's pools) and
Octopus's paging (skip, take, `TotalResults`, the `Page.*` links)."""

from __future__ import annotations

import math
from collections.abc import Callable
from urllib.parse import urlencode

from octoboot.sandbox.octopus_api.call import Call
from octoboot.sandbox.octopus_api.records import Resource, same_name
from octoboot.sandbox.octopus_api.resources import TEMPLATES

DEFAULT_TAKE = 30
TAKE_ALL = 2147483647


def page(
    call: Call,
    item_type: str,
    items: list[Resource],
    render: Callable[[Resource], Resource],
) -> Resource:
    skip = call.integer("skip", 0)
    take = call.integer("take", DEFAULT_TAKE)
    total = len(items)
    pages = max(1, math.ceil(total / take)) if take else 1
    filters = [(k, v) for k, v in call.query if k.lower() not in ("skip", "take")]

    def page_link(page_skip: int, page_take: int) -> str:
        return f"{call.path}?{urlencode([('skip', page_skip), ('take', page_take), *filters])}"

    links = {
        "Self": f"{call.path}?{urlencode(call.query)}" if call.query else call.path,
        "Template": TEMPLATES[item_type],
        "Page.All": page_link(0, TAKE_ALL),
        "Page.Current": page_link(skip, take),
    }
    if take and skip + take < total:
        links["Page.Next"] = page_link(skip + take, take)
    links["Page.Last"] = page_link((pages - 1) * take, take)
    links.update({f"Page.{n}": page_link(n * take, take) for n in range(pages)})
    return {
        "ItemType": item_type,
        "IsStale": False,
        "TotalResults": total,
        "ItemsPerPage": take,
        "NumberOfPages": pages,
        "LastPageNumber": pages - 1,
        "Items": [render(item) for item in items[skip : skip + take]],
        "Links": links,
    }


def filter_named(resources: list[Resource], call: Call) -> list[Resource]:
    """The name / partialName / ids filters shared by spaces, environments and policies."""
    name, partial, ids = call.value("name"), call.value("partialName"), call.values("ids")
    return [
        r
        for r in resources
        if (name is None or same_name(r["Name"], name))
        and (partial is None or partial.casefold() in r["Name"].casefold())
        and (not ids or r["Id"].casefold() in ids)
    ]


def filter_machines(machines: list[Resource], call: Call) -> list[Resource]:
    thumb = call.value("thumbprint")
    envs, roles = call.values("environmentIds"), call.values("roles")
    health, styles = call.values("healthStatuses"), call.values("commStyles")
    disabled = call.value("isDisabled")

    def matches(m: Resource) -> bool:
        return (
            (
                thumb is None
                or str(m["Endpoint"].get("Thumbprint", "")).casefold() == thumb.casefold()
            )
            and (not envs or any(e.casefold() in envs for e in m["EnvironmentIds"]))
            and (not roles or any(r.casefold() in roles for r in m["Roles"]))
            and (not health or m["HealthStatus"].casefold() in health)
            and (not styles or str(m["Endpoint"].get("CommunicationStyle")).casefold() in styles)
            and (disabled is None or str(m["IsDisabled"]).casefold() == disabled.casefold())
        )

    return [m for m in filter_named(machines, call) if matches(m)]


def filter_workers(workers: list[Resource], call: Call) -> list[Resource]:
    """The machine filters, and workerpoolIds."""
    pools = call.values("workerpoolIds")
    return [
        w
        for w in filter_machines(workers, call)
        if not pools or any(p.casefold() in pools for p in w["WorkerPoolIds"])
    ]
