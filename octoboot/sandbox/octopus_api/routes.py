"""The router: which method and path go to which handler, and the handlers, each a few lines
from a `Call` to the state (`state`), the filters and paging (`paging`) and the answer's
shape (`resources`). Routes take an optional `/{space}` (only `Spaces-1` exists); an unknown
path is 404 and a known path with another method 405, with Octopus's error body."""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from octoboot.sandbox.octopus_api import catalog, resources
from octoboot.sandbox.octopus_api.call import ApiError, Call, Handler
from octoboot.sandbox.octopus_api.health import HealthTasks
from octoboot.sandbox.octopus_api.paging import (
    filter_machines,
    filter_named,
    filter_workers,
    page,
)
from octoboot.sandbox.octopus_api.records import SPACE_ID, same_name
from octoboot.sandbox.octopus_api.state import OctopusState


def _check_user(user_id: str) -> None:
    if user_id.casefold() != resources.USER_ID.casefold():
        raise ApiError(404, f"The user '{user_id}' was not found.")


class Routes:
    """The API's routes over one state; health tasks go to `tasks` to run."""

    def __init__(self, state: OctopusState, server_thumbprint: str, tasks: HealthTasks) -> None:
        self._state = state
        self._thumbprint = server_thumbprint
        self._tasks = tasks
        self._table = self._route_table()

    def route(self, call: Call) -> tuple[int, Any]:
        """(status, JSON payload) of the handler the call's method and path name."""
        allowed: list[str] = []
        for method, pattern, handler in self._table:
            match = pattern.fullmatch(call.path)
            if match is None:
                continue
            if method != call.method:
                allowed.append(method)
                continue
            call.params = {k: v for k, v in match.groupdict().items() if v is not None}
            space = call.params.get("space")
            if space is not None and space.casefold() != SPACE_ID.casefold():
                raise ApiError(404, f"The space '{space}' was not found.")
            return handler(call)
        if allowed:
            raise ApiError(405, f"The method {call.method} is not allowed on {call.path}.")
        raise ApiError(404, f"The resource '{call.path}' was not found.")

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        space = r"(?:/(?P<space>spaces-\d+))?"
        item = r"/(?P<id>[^/]+)"
        table: list[tuple[str, str, Handler]] = [
            ("GET", r"/api", self._root),
            ("GET", r"/api/spaces", self._spaces_page),
            ("GET", r"/api/spaces/all", self._spaces_all),
            ("GET", rf"/api/spaces{item}", self._space),
            ("GET", r"/api/(?P<space>spaces-\d+)", self._space_home),
            ("GET", r"/api/users/me", self._current_user),
            ("GET", rf"/api/users{item}", self._user),
            ("GET", rf"/api/users{item}/spaces", self._user_spaces),
            ("GET", r"/api/(?:configuration/)?certificates/certificate-global", self._server_cert),
            ("GET", rf"/api{space}/environments", self._environments_page),
            ("POST", rf"/api{space}/environments", self._environment_create),
            ("GET", rf"/api{space}/environments/all", self._environments_all),
            ("GET", rf"/api{space}/environments{item}", self._environment),
            ("GET", rf"/api{space}/environments{item}/machines", self._environment_machines),
            ("GET", rf"/api{space}/machines", self._machines_page),
            ("POST", rf"/api{space}/machines", self._machine_create),
            ("GET", rf"/api{space}/machines/all", self._machines_all),
            ("GET", rf"/api{space}/machines{item}", self._machine),
            ("PUT", rf"/api{space}/machines{item}", self._machine_update),
            ("DELETE", rf"/api{space}/machines{item}", self._machine_delete),
            ("GET", rf"/api{space}/tasks", self._tasks_page),
            ("POST", rf"/api{space}/tasks", self._task_create),
            ("GET", rf"/api{space}/tasks{item}", self._task),
            ("GET", rf"/api{space}/tasks{item}/details", self._task_details),
            ("GET", rf"/api{space}/workers", self._workers_page),
            ("POST", rf"/api{space}/workers", self._worker_create),
            ("GET", rf"/api{space}/workers/all", self._workers_all),
            ("GET", rf"/api{space}/workers{item}", self._worker),
            ("PUT", rf"/api{space}/workers{item}", self._worker_update),
            ("DELETE", rf"/api{space}/workers{item}", self._worker_delete),
            ("GET", rf"/api{space}/workerpools", self._pools_page),
            ("GET", rf"/api{space}/workerpools/all", self._pools_all),
            ("GET", rf"/api{space}/workerpools{item}", self._pool),
            ("GET", rf"/api{space}/workerpools{item}/workers", self._pool_workers),
        ]
        for kind in catalog.KINDS.values():
            table += [
                ("GET", rf"/api{space}/{kind.route}", partial(self._catalog_page, kind)),
                ("POST", rf"/api{space}/{kind.route}", partial(self._catalog_create, kind)),
                ("GET", rf"/api{space}/{kind.route}/all", partial(self._catalog_all, kind)),
                ("GET", rf"/api{space}/{kind.route}{item}", partial(self._catalog_item, kind)),
            ]
        return [(m, re.compile(p, re.IGNORECASE), h) for m, p, h in table]

    # -- root, spaces, users, server certificate --

    def _root(self, call: Call) -> tuple[int, Any]:
        return 200, resources.root(self._state.installation_id)

    def _spaces_page(self, call: Call) -> tuple[int, Any]:
        spaces = filter_named(self._state.spaces(), call)
        return 200, page(call, "Space", spaces, resources.space_out)

    def _spaces_all(self, call: Call) -> tuple[int, Any]:
        return 200, [resources.space_out(s) for s in filter_named(self._state.spaces(), call)]

    def _space(self, call: Call) -> tuple[int, Any]:
        for space in self._state.spaces():
            if space["Id"].casefold() == call.params["id"].casefold():
                return 200, resources.space_out(space)
        raise ApiError(404, f"The space '{call.params['id']}' was not found.")

    def _space_home(self, call: Call) -> tuple[int, Any]:
        return 200, resources.space_home()

    def _current_user(self, call: Call) -> tuple[int, Any]:
        return 200, resources.user_out()

    def _user(self, call: Call) -> tuple[int, Any]:
        _check_user(call.params["id"])
        return 200, resources.user_out()

    def _user_spaces(self, call: Call) -> tuple[int, Any]:
        _check_user(call.params["id"])
        return 200, [resources.space_out(space) for space in self._state.spaces()]

    def _server_cert(self, call: Call) -> tuple[int, Any]:
        return 200, resources.server_certificate(self._thumbprint)

    # -- environments --

    def _environments_page(self, call: Call) -> tuple[int, Any]:
        envs = filter_named(self._state.environments(), call)
        return 200, page(call, "Environment", envs, resources.environment_out)

    def _environments_all(self, call: Call) -> tuple[int, Any]:
        envs = filter_named(self._state.environments(), call)
        return 200, [resources.environment_out(env) for env in envs]

    def _environment(self, call: Call) -> tuple[int, Any]:
        return 200, resources.environment_out(self._state.environment(call.params["id"]))

    def _environment_create(self, call: Call) -> tuple[int, Any]:
        return 201, resources.environment_out(self._state.add_environment(call.json()))

    def _environment_machines(self, call: Call) -> tuple[int, Any]:
        env_id = self._state.environment(call.params["id"])["Id"]
        machines = [
            m
            for m in filter_machines(self._state.machines(), call)
            if env_id in m["EnvironmentIds"]
        ]
        return 200, page(call, "DeploymentTarget", machines, resources.machine_out)

    # -- the catalog: machine policies, tenants, tag sets, proxies (catalog) --

    def _catalog_page(self, kind: catalog.Kind, call: Call) -> tuple[int, Any]:
        items = filter_named(self._state.catalog(kind.route), call)
        return 200, page(call, kind.item_type, items, resources.catalog_out(kind))

    def _catalog_all(self, kind: catalog.Kind, call: Call) -> tuple[int, Any]:
        items = filter_named(self._state.catalog(kind.route), call)
        return 200, [catalog.rendered(kind, item, resources.S) for item in items]

    def _catalog_item(self, kind: catalog.Kind, call: Call) -> tuple[int, Any]:
        item = self._state.catalog_item(kind.route, call.params["id"])
        return 200, catalog.rendered(kind, item, resources.S)

    def _catalog_create(self, kind: catalog.Kind, call: Call) -> tuple[int, Any]:
        item = self._state.add_catalog_item(kind.route, kind.prefix, call.json(), kind.build)
        return 201, catalog.rendered(kind, item, resources.S)

    # -- machines --

    def _machines_page(self, call: Call) -> tuple[int, Any]:
        machines = filter_machines(self._state.machines(), call)
        return 200, page(call, "DeploymentTarget", machines, resources.machine_out)

    def _machines_all(self, call: Call) -> tuple[int, Any]:
        machines = filter_machines(self._state.machines(), call)
        return 200, [resources.machine_out(m) for m in machines]

    def _machine(self, call: Call) -> tuple[int, Any]:
        return 200, resources.machine_out(self._state.machine(call.params["id"]))

    def _machine_create(self, call: Call) -> tuple[int, Any]:
        return 201, resources.machine_out(self._state.add_machine(call.json()))

    def _machine_update(self, call: Call) -> tuple[int, Any]:
        body = call.json()
        return 200, resources.machine_out(self._state.update_machine(call.params["id"], body))

    def _machine_delete(self, call: Call) -> tuple[int, Any]:
        return 200, resources.machine_out(self._state.delete_machine(call.params["id"]))

    # -- workers and worker pools: workers are machines kept apart from deployment targets
    # (WorkerPoolIds instead of environments, roles and tenants); a dynamic pool (Octopus's
    # own workers) refuses a worker (OctopusTentacle#331) --

    def _workers_page(self, call: Call) -> tuple[int, Any]:
        workers = filter_workers(self._state.workers(), call)
        return 200, page(call, "Worker", workers, resources.worker_out)

    def _workers_all(self, call: Call) -> tuple[int, Any]:
        return 200, [resources.worker_out(w) for w in filter_workers(self._state.workers(), call)]

    def _worker(self, call: Call) -> tuple[int, Any]:
        return 200, resources.worker_out(self._state.worker(call.params["id"]))

    def _worker_create(self, call: Call) -> tuple[int, Any]:
        return 201, resources.worker_out(self._state.add_machine(call.json(), "workers"))

    def _worker_update(self, call: Call) -> tuple[int, Any]:
        updated = self._state.update_machine(call.params["id"], call.json(), "workers")
        return 200, resources.worker_out(updated)

    def _worker_delete(self, call: Call) -> tuple[int, Any]:
        deleted = self._state.delete_machine(call.params["id"], "workers")
        return 200, resources.worker_out(deleted)

    def _pools_page(self, call: Call) -> tuple[int, Any]:
        pools = filter_named(self._state.worker_pools(), call)
        return 200, page(call, "WorkerPool", pools, resources.pool_out)

    def _pools_all(self, call: Call) -> tuple[int, Any]:
        pools = filter_named(self._state.worker_pools(), call)
        return 200, [resources.pool_out(p) for p in pools]

    def _pool(self, call: Call) -> tuple[int, Any]:
        return 200, resources.pool_out(self._state.worker_pool(call.params["id"]))

    def _pool_workers(self, call: Call) -> tuple[int, Any]:
        pool_id = self._state.worker_pool(call.params["id"])["Id"]
        workers = [w for w in self._state.workers() if pool_id in w["WorkerPoolIds"]]
        return 200, page(call, "Worker", workers, resources.worker_out)

    # -- health tasks --

    def _tasks_page(self, call: Call) -> tuple[int, Any]:
        ids, states, name = call.values("ids"), call.values("states"), call.value("name")
        tasks = [
            t
            for t in self._state.tasks()
            if (not ids or t["Id"].casefold() in ids)
            and (not states or t["State"].casefold() in states)
            and (name is None or same_name(t["Name"], name))
        ]
        return 200, page(call, "Task", tasks, resources.task_out)

    def _task(self, call: Call) -> tuple[int, Any]:
        return 200, resources.task_out(self._state.task(call.params["id"]))

    def _task_details(self, call: Call) -> tuple[int, Any]:
        task = self._state.task(call.params["id"])
        return 200, resources.task_details(task, self._state.task_log(task["Id"]))

    def _task_create(self, call: Call) -> tuple[int, Any]:
        task, machines = self._state.add_health_task(call.json())
        self._tasks.submit(task, machines)
        return 201, resources.task_out(task)
