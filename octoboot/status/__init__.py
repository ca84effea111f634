"""`status`: what each host, the identity store and Octopus say about a machine, and where
that differs from what the inventory wants; the exit code works as a check in CI.

    report = octoboot.status.status(Selection(env="qa"), RunOptions(parallel=True))

Nothing changes anywhere: the probe does not clean up old uploads, the API is only read
(except the health task that `health=True` asks for), identities are only read, and new host
keys are accepted for this run without being written to known_hosts.

The command is four modules, one concern each, so that each reads (and changes) without
the others: this one, the entry and its run (which pipeline, which report, which extra
rows); `steps`, the `Status` pipeline (one machine's checks, and when it is `ok`); `table`,
how the report shows what was found; `unlisted`, the extra rows (state `unknown`) for the
machines and workers Octopus has in the selected places that no inventory file lists.
"""

from __future__ import annotations

from octoboot.octopus import OctopusError
from octoboot.report import MachineResult, RunReport
from octoboot.run import Run, RunOptions, Selection
from octoboot.settings import Settings
from octoboot.status.steps import Status, StatusOptions
from octoboot.status.table import StatusReport
from octoboot.status.unlisted import unlisted_rows


def status(
    selection: Selection,
    options: RunOptions = RunOptions(),
    settings: Settings | None = None,
    *,
    health: bool = False,
) -> RunReport:
    """One row per machine: reachable, Tentacle version, service, thumbprints (host, store,
    Octopus), Octopus Id, health and drift; plus the machines only Octopus knows.
    health: ask Octopus for a fresh health check first (else: the last known status)."""
    return StatusRun(selection, options, settings, StatusOptions(health)).execute()


class StatusRun(Run[StatusOptions]):
    REPORT = StatusReport

    def __init__(
        self,
        selection: Selection,
        options: RunOptions,
        settings: Settings | None,
        pipeline_options: StatusOptions,
    ) -> None:
        super().__init__("status", Status, selection, options, settings, pipeline_options)
        self.selection = selection

    def extra_rows(self, first_id: int, *, interrupted: bool) -> list[MachineResult]:
        """The machines only Octopus knows, unless the run was asked about some machines
        only (--host, --retry-failed: those are what was asked about) or was interrupted."""
        if self.selection.hosts or self.selection.retry_failed or interrupted:
            return []
        try:
            return unlisted_rows(self, self.selection.limits, first_id)
        except OctopusError as exc:
            # The machines' rows are already known: keep them, and say what is missing.
            self.options.console(f"could not list the machines only Octopus knows: {exc}")
            return []
