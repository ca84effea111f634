"""Resources as Octopus answers them: the stored records (`state`) with their `Links`, the
link templates (which a page's `Template` link and the root's links name), and the resources
that are not stored (the root document, the space home, the current user, the server
certificate, a task's activity log). The shapes are Octopus.Client's models."""

from __future__ import annotations

from collections.abc import Callable

from octoboot.sandbox.octopus_api import catalog
from octoboot.sandbox.octopus_api.records import SPACE_ID, Resource

VERSION = "2025.4.1234"
API_VERSION = "3.0.0"
USER_ID = "Users-1"

S = f"/api/{SPACE_ID}"
TEMPLATES = {
    "Environment": f"{S}/environments{{/id}}{{?name,skip,ids,take,partialName}}",
    "DeploymentTarget": (
        f"{S}/machines{{/id}}{{?skip,take,name,ids,partialName,roles,isDisabled,healthStatuses,"
        "commStyles,tenantIds,tenantTags,environmentIds,thumbprint,deploymentId}"
    ),
    **{
        kind.item_type: f"{S}/{kind.route}{{/id}}{kind.template}" for kind in catalog.KINDS.values()
    },
    "Space": "/api/spaces{/id}{?name,skip,ids,take,partialName}",
    "Task": "/api/tasks{/id}{?skip,take,ids,name,states,spaces}",
    "Worker": (
        f"{S}/workers{{/id}}{{?skip,take,name,ids,partialName,isDisabled,healthStatuses,"
        "commStyles,workerpoolIds,thumbprint}"
    ),
    "WorkerPool": f"{S}/workerpools{{/id}}{{?name,skip,ids,take,partialName}}",
}
# A task's State as the Status of its activity (ActivityStatus in Octopus.Client).
_ACTIVITY_STATUS = {
    "Queued": "Pending", "Executing": "Running", "Cancelling": "Running", "Success": "Success",
    "Canceled": "Canceled",
}  # fmt: skip
_ENV_MACHINES_TEMPLATE = (
    "{?skip,take,partialName,roles,isDisabled,healthStatuses,commStyles,tenantIds,tenantTags}"
)


# -- root, spaces, users, server certificate --


def root(installation_id: str) -> Resource:
    return {
        "Application": "Octopus Deploy",
        "Version": VERSION,
        "ApiVersion": API_VERSION,
        "InstallationId": installation_id,
        "Links": {
            "Self": "/api",
            "Spaces": TEMPLATES["Space"],
            "SpaceHome": "/api/{spaceId}",
            "CurrentUser": "/api/users/me",
            "Users": "/api/users{/id}",
            "CertificateConfiguration": (
                "/api/configuration/certificates{/id}{?skip,take,ids,partialName}"
            ),
            "Certificates": "/api/certificates{/id}{?skip,take,ids,partialName}",
            **_space_links(),
        },
    }


def _space_links() -> dict[str, str]:
    return {
        "Environments": TEMPLATES["Environment"],
        "Machines": TEMPLATES["DeploymentTarget"],
        "MachinePolicies": TEMPLATES["MachinePolicy"],
        "Workers": TEMPLATES["Worker"],
        "WorkerPools": TEMPLATES["WorkerPool"],
        "Tasks": TEMPLATES["Task"],
        **{kind.prefix: TEMPLATES[kind.item_type] for kind in catalog.KINDS.values()},
    }


def space_home() -> Resource:
    return {"Links": {"Self": S, **_space_links()}}


def space_out(space: Resource) -> Resource:
    links = {"Self": f"/api/spaces/{space['Id']}", "SpaceHome": f"/api/{space['Id']}"}
    return {**space, "Links": links}


def user_out() -> Resource:
    return {
        "Id": USER_ID,
        "Username": "admin",
        "DisplayName": "Administrator",
        "IsActive": True,
        "IsService": False,
        "EmailAddress": None,
        "CanPasswordBeEdited": True,
        "IsRequestor": False,
        "Identities": [],
        "Links": {"Self": f"/api/users/{USER_ID}", "Spaces": f"/api/users/{USER_ID}/spaces"},
    }


def server_certificate(thumbprint: str) -> Resource:
    return {
        "Id": "certificate-global",
        "Name": "Octopus Portal",
        "Thumbprint": thumbprint,
        "SignatureAlgorithm": "sha256RSA",
        "Links": {"Self": "/api/configuration/certificates/certificate-global"},
    }


# -- environments, machines, workers, worker pools, the catalog --


def environment_out(env: Resource) -> Resource:
    self_link = f"{S}/environments/{env['Id']}"
    links = {"Self": self_link, "Machines": f"{self_link}/machines{_ENV_MACHINES_TEMPLATE}"}
    return {**env, "Links": links}


def machine_out(machine: Resource) -> Resource:
    self_link = f"{S}/machines/{machine['Id']}"
    links = {
        "Self": self_link,
        "Connection": f"{self_link}/connection",
        "TasksTemplate": f"{self_link}/tasks{{?skip,take,type}}",
    }
    return {**machine, "Links": links}


def worker_out(worker: Resource) -> Resource:
    self_link = f"{S}/workers/{worker['Id']}"
    links = {"Self": self_link, "Connection": f"{self_link}/connection"}
    return {**worker, "Links": links}


def pool_out(pool: Resource) -> Resource:
    self_link = f"{S}/workerpools/{pool['Id']}"
    links = {"Self": self_link, "Workers": f"{self_link}/workers{{?skip,take}}"}
    return {**pool, "Links": links}


def catalog_out(kind: catalog.Kind) -> Callable[[Resource], Resource]:
    return lambda item: catalog.rendered(kind, item, S)


# -- tasks --


def task_out(task: Resource) -> Resource:
    self_link = f"/api/tasks/{task['Id']}"
    links = {
        "Self": self_link,
        "Web": f"/app#/{task['SpaceId']}/tasks/{task['Id']}",
        "Raw": f"{self_link}/raw",
        "Details": f"{self_link}/details{{?verbose,tail}}",
        "Cancel": f"{self_link}/cancel",
    }
    return {**task, "Links": links}


def task_details(task: Resource, log: list[Resource]) -> Resource:
    """The task and its activity log (TaskDetailsResource): under the task, one element
    per machine it checks, named after the machine, with its outcome and messages."""
    task = task_out(task)
    children = [
        {
            "Id": f"{task['Id']}_{n}",
            "ShowAtSummaryLevel": True,
            "Children": [],
            "ProgressPercentage": 0 if entry["Ended"] is None else 100,
            "ProgressMessage": "",
            **entry,
        }
        for n, entry in enumerate(log, 1)
    ]
    done = sum(1 for child in children if child["Ended"] is not None)
    percent = 100 * done // len(children) if children else 0
    activity = {
        "Id": task["Id"],
        "Name": task["Description"],
        "Started": task["StartTime"],
        "Ended": task["CompletedTime"],
        "Status": _ACTIVITY_STATUS.get(task["State"], "Failed"),
        "ShowAtSummaryLevel": True,
        "LogElements": [],
        "ProgressPercentage": percent,
        "ProgressMessage": "",
        "Children": children,
    }
    progress = {"ProgressPercentage": percent, "EstimatedTimeRemaining": ""}
    return {"Task": task, "ActivityLogs": [activity], "Progress": progress}
