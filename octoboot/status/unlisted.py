"""status' extra rows: the machines Octopus has in a selected environment, and the workers
it has in a selected worker's pool, that no inventory file lists (state `unknown`). Asked
for once the machines have ended (Run.extra_rows)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from octoboot.drift import listed, unlisted
from octoboot.octopus import Resource, health_status, registered_thumbprint
from octoboot.report import MachineResult, State
from octoboot.run import Run
from octoboot.status.steps import DRIFT, HEALTH, OCTOPUS_THUMBPRINT


def unlisted_rows(run: Run[Any], limits: Sequence[str], first_id: int) -> list[MachineResult]:
    """Rows for the machines Octopus has in the selected environments, and the workers
    it has in the selected workers' pools, that no inventory file lists (under any
    environment file naming the same Octopus environment; workers: in any file)."""
    rows: list[MachineResult] = []
    seen: set[tuple[str, str | None, str]] = set()
    for env_key in dict.fromkeys(m.env_key for m in run.machines):
        client = run.clients[env_key]
        names = listed(run.inventory)  # a name any file lists is never "only Octopus's"
        groups = []  # (group Id, record field, where, its records)
        if env_key in run.environment_ids:
            environment_id = run.environment_ids[env_key]
            where = run.inventory.environments[env_key].name
            # Read once per run, with the machines.
            records = client.machine_index().records
            groups.append((environment_id, "EnvironmentIds", where, records))
        for pool, pool_id in run.worker_pool_ids.get(env_key, {}).items():
            records = client.machine_index("workers").records
            groups.append((pool_id, "WorkerPoolIds", f"pool {pool}", records))
        for group_id, field, where, records in groups:
            if (client.url, client.space_name, group_id) in seen:
                continue
            seen.add((client.url, client.space_name, group_id))
            for record in unlisted(records, group_id, names, limits, field):
                rows.append(unlisted_result(first_id + len(rows), record, where))
    return rows


def unlisted_result(job_id: int, record: Resource, environment: str) -> MachineResult:
    health = health_status(record)
    return MachineResult(
        job_id,
        record["Name"],
        environment,
        state=State.UNKNOWN,
        octopus_id=record["Id"],
        reason=f"Octopus has {record['Id']} in {environment}, but no inventory file lists it",
        facts={
            OCTOPUS_THUMBPRINT: registered_thumbprint(record),
            HEALTH: health,
            DRIFT: "not in the inventory",
        },
    )
