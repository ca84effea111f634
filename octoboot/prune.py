"""`prune`: remove from Octopus the records of an environment that no inventory lists: its
deployment targets, and the workers in its workers' pools.

    report = octoboot.prune.prune(Selection(env="qa"), RunOptions(dry_run=True))

Autoscaled machines come and go, and each one gone leaves its record behind (Unavailable for
ever). What goes, after it has been shown:

- every record in the environment whose name no inventory file lists (any file: a record
  another file lists is never touched, whatever environment it sits in);
- for a file of workers (kind = "worker"), every worker in the worker pools its machines
  join whose name no inventory file lists;
- every record that has the certificate of a record the environment's files list, under a
  name no inventory lists (one machine registered twice, e.g. under an old name): the one
  whose name the inventory lists is kept (targets among targets, workers among workers).

`older_than` (records not changed, by Octopus' `LastModifiedOn`, for that long) and
`only_unavailable` (HealthStatus Unavailable) narrow it; `--limit` globs narrow it by name.
Records are read once for the run; each is then removed as one "machine" of the run (its row,
its log), so `--dry-run`, the report and the exit code work as everywhere. No host is
touched and the identity store is left alone: a machine that comes back under its name comes
back with its certificate.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

from octoboot.drift import duplicates_of, listed, matches_limits, unlisted
from octoboot.errors import ConfigError
from octoboot.inventory import SAFE_NAME, Machine, name_key
from octoboot.octopus import (
    UNAVAILABLE,
    Resource,
    health_status,
    label,
    registered_thumbprint,
)
from octoboot.pipeline import Change, Pipeline, plan_delete
from octoboot.report import RunReport
from octoboot.run import Run, RunOptions, Selection
from octoboot.settings import Settings

_AGE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def prune(
    selection: Selection,
    options: RunOptions = RunOptions(),
    settings: Settings | None = None,
    *,
    older_than: str | None = None,
    only_unavailable: bool = False,
) -> RunReport:
    """Remove (or with options.dry_run, only show) the records of selection.env that no
    inventory lists, and the duplicates of those it lists. older_than: e.g. "7d", "12h"."""
    return PruneRun(
        selection, options, settings, older_than=older_than, only_unavailable=only_unavailable
    ).execute()


@dataclass(frozen=True)
class Doomed:
    """A record to remove, and why."""

    record: Resource
    why: str
    collection: str = "machines"  # where Octopus keeps it: machines, or workers


@dataclass(frozen=True)
class PruneOptions:
    """What each record's job removes: filled once Octopus has been read (PruneRun.check),
    by the record's key (its machine name in the run)."""

    doomed: dict[str, Doomed] = field(default_factory=dict)


def parse_age(text: str) -> float:
    """Seconds in an age such as "90s", "30m", "12h", "7d", "2w" (a bare number: seconds)."""
    match = _AGE.fullmatch(text.strip().lower())
    if not match or float(match["number"]) <= 0:
        raise ConfigError(f"--older-than takes an age such as 30m, 12h, 7d or 2w, not {text!r}")
    return float(match["number"]) * _UNIT_SECONDS[match["unit"]]


def doomed_records(
    records: Sequence[Resource],
    *,
    environment_id: str,
    names: Iterable[str],
    kept: Iterable[str],
    limits: Sequence[str] = (),
    older_than: float | None = None,
    only_unavailable: bool = False,
    now: dt.datetime,
    field: str = "EnvironmentIds",
    collection: str = "machines",
) -> list[Doomed]:
    """What prune removes, by name. records: every machine (collection "workers": every
    worker) of the space; environment_id: the group they are pruned from, an environment
    (field "WorkerPoolIds": a worker pool); names: every name any inventory file lists
    (never removed); kept: the names this environment's file lists, whose duplicates go."""
    names = [name_key(name) for name in names]
    found: dict[str, Doomed] = {
        record["Id"]: Doomed(record, "no inventory lists it", collection)
        for record in unlisted(records, environment_id, names, limits, field)
    }
    wanted = {name_key(name) for name in kept}
    for record in records:
        if name_key(record["Name"]) not in wanted:
            continue
        for other in duplicates_of(record, records):
            if name_key(other["Name"]) not in names and matches_limits(other["Name"], limits):
                why = f"duplicate of {label(record)}: the same certificate"
                found[other["Id"]] = Doomed(other, why, collection)
    doomed = [
        d
        for d in found.values()
        if (not only_unavailable or d.record.get("HealthStatus") == UNAVAILABLE)
        and (older_than is None or _age(d.record, now) >= older_than)
    ]
    return sorted(doomed, key=lambda d: d.record["Name"].lower())


def _age(record: Resource, now: dt.datetime) -> float:
    """Seconds since Octopus last changed the record; 0 (young) when it does not say."""
    try:
        modified = dt.datetime.fromisoformat(str(record.get("LastModifiedOn")))
    except ValueError:
        return 0.0
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=dt.UTC)
    return (now - modified).total_seconds()


# --- the run ---------------------------------------------------------------------------------


class PruneRecord(Pipeline[PruneOptions]):
    """One record to remove: no host, one request."""

    STEPS: ClassVar = ("prune",)
    NEEDS_OCTOPUS = True
    RECORDS_OUTCOME = False  # nothing for --retry-failed to re-run

    def step_prune(self) -> tuple[str, str]:
        doomed = self.job.options.doomed[self.machine.name]
        record = doomed.record
        self.job.result.octopus_id = record["Id"]
        self.job.result.thumbprint = registered_thumbprint(record) or None
        named = "" if record["Name"] == self.machine.name else f"{record['Name']}: "
        self.job.result.reason = named + doomed.why
        return self.apply(plan_prune(doomed))


def plan_prune(doomed: Doomed) -> Change:
    """The doomed record deleted from Octopus: decided when the run read Octopus (check)."""
    return plan_delete(doomed.record, doomed.collection)


class PruneRun(Run[PruneOptions]):
    """The environment's Octopus is read before anything is removed; the records found
    become the run's machines."""

    def __init__(
        self,
        selection: Selection,
        options: RunOptions,
        settings: Settings | None,
        *,
        older_than: str | None,
        only_unavailable: bool,
    ) -> None:
        if selection.hosts or selection.retry_failed:
            raise ConfigError(
                "prune takes no --host or --retry-failed: it removes records no inventory "
                "lists, the inventory's machines stay"
            )
        if not selection.env:
            raise ConfigError("prune needs --env: the environment whose records to prune")
        if options.accept_new_host_key:
            raise ConfigError("prune connects to no host: --accept-new-host-key does not apply")
        self.selection = selection
        self.older_than = None if older_than is None else parse_age(older_than)
        self.only_unavailable = only_unavailable
        super().__init__("prune", PruneRecord, selection, options, settings, PruneOptions())

    def _select(self, selection: Selection) -> list[Machine]:
        environment = self.inventory.environment(selection.env or "")
        if not environment.machines:
            # An empty list (a [source] command that printed []) would make every record of
            # the environment "unlisted": too much to remove on the word of an empty file.
            raise ConfigError(
                f"{environment.file} lists no machines, so prune would remove every record of "
                f"{environment.name}: remove them by name (inv deregister --env "
                f"{environment.key} --record NAME) if that is what you want"
            )
        return []  # known once Octopus has been read (check)

    def check(self) -> None:
        super().check()
        env_key = self.selection.env
        assert env_key is not None
        environment = self.inventory.environment(env_key)
        # connect() looks up what the file's machines need: its environment (if it has
        # targets) and its workers' pools.
        self.machines = list(environment.machines)
        client = self.connect(env_key)
        doomed_in = partial(
            doomed_records,
            names=listed(self.inventory),
            limits=self.selection.limits,
            older_than=self.older_than,
            only_unavailable=self.only_unavailable,
            now=dt.datetime.now(dt.UTC),
        )
        found: dict[str, Doomed] = {}
        places = []
        if env_key in self.environment_ids:
            places.append(environment.name)
            targets = [m.name for m in environment.machines if not m.is_worker]
            for d in doomed_in(
                client.machine_index().records,
                environment_id=self.environment_ids[env_key],
                kept=targets,
            ):
                found[d.record["Id"]] = d
        workers = [m.name for m in environment.machines if m.is_worker]
        for pool, pool_id in self.worker_pool_ids.get(env_key, {}).items():
            places.append(f"worker pool {pool}")
            for d in doomed_in(
                client.machine_index("workers").records,
                environment_id=pool_id,
                kept=workers,
                field="WorkerPoolIds",
                collection="workers",
            ):
                found[d.record["Id"]] = d  # a worker in several pools is removed once
        doomed = sorted(found.values(), key=lambda d: d.record["Name"].lower())
        by_key: dict[str, Doomed] = {}
        for d in doomed:
            key = _key(d.record)
            by_key[d.record["Id"] if key in by_key else key] = d  # a target and a worker
        self.pipeline_options.doomed.update(by_key)
        self.machines = [environment.unlisted_machine(key) for key in by_key]
        self._show(" and ".join(places), doomed)

    def _show(self, environment: str, doomed: list[Doomed]) -> None:
        """The records, before anything is removed."""
        console = self.options.console
        if not doomed:
            console(f"prune: nothing to remove in {environment}")
            return
        verb = "would remove" if self.options.dry_run else "removing"
        console(f"prune: {verb} {len(doomed)} record(s) in {environment}:")
        for d in doomed:
            health = health_status(d.record)
            console(f"  {d.record['Name']} ({d.record['Id']}, {health}): {d.why}")


def _key(record: Resource) -> str:
    """The record as a machine of the run: its name, unless Octopus allows a name that is
    not safe as a file name (the run's log) and a lock key; then its Id."""
    return record["Name"] if SAFE_NAME.fullmatch(record["Name"]) else record["Id"]
