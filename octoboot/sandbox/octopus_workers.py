"""The Octopus stand-in's worker routes: `/api/{space}/workers` and `/api/{space}/workerpools`.

Workers are machines kept apart from deployment targets (Octopus.Client's WorkerResource:
`WorkerPoolIds` instead of environments, roles and tenants), with the same paging, filters
and error bodies; worker pools are static (they take workers) or dynamic (Octopus's own
workers: a worker added to one is refused, OctopusTentacle#331). Mixed into OctopusStandIn,
whose `_page`, `_state` and filters these use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from octoboot.sandbox.octopus_state import SPACE_ID, Resource

if TYPE_CHECKING:
    from octoboot.sandbox.octopus_api import _Call

_S = f"/api/{SPACE_ID}"
TEMPLATES = {
    "Worker": (
        f"{_S}/workers{{/id}}{{?skip,take,name,ids,partialName,isDisabled,healthStatuses,"
        "commStyles,workerpoolIds,thumbprint}"
    ),
    "WorkerPool": f"{_S}/workerpools{{/id}}{{?name,skip,ids,take,partialName}}",
}


class WorkerRoutes:
    """Route handlers for workers and worker pools."""

    _state: Any
    _page: Any

    def worker_routes(self, space: str, item: str) -> list[tuple[str, str, Any]]:
        return [
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

    @staticmethod
    def _worker_out(worker: Resource) -> Resource:
        self_link = f"{_S}/workers/{worker['Id']}"
        links = {"Self": self_link, "Connection": f"{self_link}/connection"}
        return {**worker, "Links": links}

    @staticmethod
    def _pool_out(pool: Resource) -> Resource:
        self_link = f"{_S}/workerpools/{pool['Id']}"
        links = {"Self": self_link, "Workers": f"{self_link}/workers{{?skip,take}}"}
        return {**pool, "Links": links}

    # The shared filters are imported where used: octopus_api imports this module.

    def _filtered_workers(self, call: _Call) -> list[Resource]:
        from octoboot.sandbox.octopus_api import _filter_machines

        pools = call.values("workerpoolIds")
        return [
            w
            for w in _filter_machines(self._state.workers(), call)
            if not pools or any(p.casefold() in pools for p in w["WorkerPoolIds"])
        ]

    def _workers_page(self, call: _Call) -> tuple[int, Any]:
        return 200, self._page(call, "Worker", self._filtered_workers(call), self._worker_out)

    def _workers_all(self, call: _Call) -> tuple[int, Any]:
        return 200, [self._worker_out(w) for w in self._filtered_workers(call)]

    def _worker(self, call: _Call) -> tuple[int, Any]:
        return 200, self._worker_out(self._state.worker(call.params["id"]))

    def _worker_create(self, call: _Call) -> tuple[int, Any]:
        return 201, self._worker_out(self._state.add_machine(call.json(), "workers"))

    def _worker_update(self, call: _Call) -> tuple[int, Any]:
        updated = self._state.update_machine(call.params["id"], call.json(), "workers")
        return 200, self._worker_out(updated)

    def _worker_delete(self, call: _Call) -> tuple[int, Any]:
        return 200, self._worker_out(self._state.delete_machine(call.params["id"], "workers"))

    def _pools_page(self, call: _Call) -> tuple[int, Any]:
        from octoboot.sandbox.octopus_api import _filter_named

        pools = _filter_named(self._state.worker_pools(), call)
        return 200, self._page(call, "WorkerPool", pools, self._pool_out)

    def _pools_all(self, call: _Call) -> tuple[int, Any]:
        from octoboot.sandbox.octopus_api import _filter_named

        return 200, [self._pool_out(p) for p in _filter_named(self._state.worker_pools(), call)]

    def _pool(self, call: _Call) -> tuple[int, Any]:
        return 200, self._pool_out(self._state.worker_pool(call.params["id"]))

    def _pool_workers(self, call: _Call) -> tuple[int, Any]:
        pool_id = self._state.worker_pool(call.params["id"])["Id"]
        workers = [w for w in self._state.workers() if pool_id in w["WorkerPoolIds"]]
        return 200, self._page(call, "Worker", workers, self._worker_out)
