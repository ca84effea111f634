"""The library's front door: bootstrap, install, register, deregister and exec (status is
in octoboot.status).

    report = octoboot.jobs.bootstrap(Selection(env="qa"), RunOptions(parallel=True))
    print(report.table()); sys.exit(report.exit_code)

Everything that can be checked before touching a host is checked first (inventory,
settings, flags, the identity store and its password, each Octopus: key, space, server
certificate, environments), so a configuration error costs nothing and says so in one line
(a ConfigError). Then every machine runs its pipeline through a FleetGroup; whatever happens
to one machine ends up as that machine's row in the report, and the report and the logs are
always written, Ctrl-C included.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from octoboot.bootstrap import Bootstrap, Install, Register
from octoboot.drift import PollingServer, polling_server
from octoboot.errors import ConfigError
from octoboot.fleet import DeadlineExceeded, FleetGroup, FleetInterrupted, Interrupted
from octoboot.identity import IdentityStore
from octoboot.inventory import Inventory, Machine, load_inventory
from octoboot.lifecycle import Deregister, Exec
from octoboot.octopus import OctopusClient
from octoboot.pipeline import Job, Pipeline
from octoboot.report import MachineResult, RunReport, State, StepResult
from octoboot.runlog import MachineLog, Masker, new_run_dir
from octoboot.settings import Settings, load_settings
from octoboot.ssh import Connector, close

Console = Callable[[str], None]


@dataclass(frozen=True)
class Selection:
    env: str | None = None
    hosts: Sequence[str] = ()
    limits: Sequence[str] = ()
    retry_failed: bool = False  # only the machines that failed in the env's last run


@dataclass(frozen=True)
class RunOptions:
    parallel: bool = False
    workers: int | None = None  # default: the settings' (OCTOBOOT_WORKERS, 32)
    verbose: bool = False
    deadline: float | None = None  # seconds per machine; default: the inventory's
    connect_timeout: float | None = None
    accept_new_host_key: bool = False
    dry_run: bool = False
    octopus_retry_seconds: float = 30.0  # how long to retry an Octopus that fails (5xx, down)
    console: Console = field(default=lambda line: print(line, file=sys.stderr, flush=True))


def bootstrap(
    selection: Selection,
    options: RunOptions = RunOptions(),
    settings: Settings | None = None,
    *,
    take_over: bool = False,
) -> RunReport:
    """Install, identify, configure, register, start and health-check each machine.
    take_over: a record with the machine's name but another certificate gets this one."""
    return Run(
        "bootstrap", Bootstrap, selection, options, settings, job_options={"take_over": take_over}
    ).execute()


def install(
    selection: Selection, options: RunOptions = RunOptions(), settings: Settings | None = None
) -> RunReport:
    """Install (or upgrade) the Tentacle on each machine; nothing else."""
    return Run("install", Install, selection, options, settings).execute()


def register(
    selection: Selection,
    options: RunOptions = RunOptions(),
    settings: Settings | None = None,
    *,
    take_over: bool = False,
) -> RunReport:
    """Identity, configuration, registration, service and health on installed machines."""
    return Run(
        "register", Register, selection, options, settings, job_options={"take_over": take_over}
    ).execute()


def deregister(
    selection: Selection,
    options: RunOptions = RunOptions(),
    settings: Settings | None = None,
    *,
    uninstall: bool = False,
    forget_identity: bool = False,
) -> RunReport:
    """Remove each machine's record from Octopus; with uninstall, also its service and
    instance on the host; with forget_identity, also its certificate from the store."""
    return Run(
        "deregister",
        Deregister,
        selection,
        options,
        settings,
        job_options={"uninstall": uninstall, "forget_identity": forget_identity},
    ).execute()


def exec_command(
    selection: Selection,
    options: RunOptions = RunOptions(),
    settings: Settings | None = None,
    *,
    command: str,
) -> RunReport:
    """Run one shell command (as root) on each machine; its output is in the logs and JSON."""
    if not command.strip():
        raise ConfigError("no command to run: give --command 'CMD' (or -- CMD)")
    return Run(
        "exec",
        Exec,
        selection,
        replace(options, dry_run=False),
        settings,
        job_options={"command": command},
    ).execute()


class Run:
    """One run of a pipeline over the selected machines."""

    def __init__(
        self,
        command: str,
        pipeline: type[Pipeline],
        selection: Selection,
        options: RunOptions,
        settings: Settings | None,
        *,
        job_options: dict[str, Any] | None = None,
    ) -> None:
        self.command = command + (" --dry-run" if options.dry_run else "")
        self.pipeline = pipeline
        self.options = options
        self.job_options = job_options or {}
        self.settings = settings or load_settings()
        self.records_outcome = pipeline.RECORDS_OUTCOME and not options.dry_run
        self.persist_host_keys = not (pipeline.READ_ONLY or options.dry_run)
        self.inventory: Inventory = load_inventory(self.settings.machines_dir)
        self.machines = [_with_overrides(m, options) for m in self._select(selection)]
        self.clients: dict[str, OctopusClient] = {}
        self.environment_ids: dict[str, str] = {}
        # Per environment file: its workers' pools (name → Id) and where its polling
        # Tentacles connect to; resolved once per run.
        self.worker_pool_ids: dict[str, dict[str, str]] = {}
        self.polling: dict[str, PollingServer] = {}
        # Masked in every output, whether or not this run uses them (exec output may hold
        # them, and the settings' PFX password or API key must never be printed).
        self.secrets: list[str] = [
            secret.reveal()
            for secret in (self.settings.pfx_secret, self.settings.octopus_api_key)
            if secret is not None
        ]
        self.identities: IdentityStore | None = None

    # --- checks before any host is touched ------------------------------------------------

    def _select(self, selection: Selection) -> list[Machine]:
        if self.options.accept_new_host_key and not (selection.hosts or selection.limits):
            raise ConfigError(
                "--accept-new-host-key accepts a changed key only for machines named with "
                "--host or --limit (the rebuilt ones), not for a whole environment"
            )
        if selection.retry_failed and not selection.env:
            raise ConfigError("--retry-failed needs --env: it re-runs that environment's")
        machines = self.inventory.select(selection.env, selection.hosts, selection.limits)
        if not selection.retry_failed:
            return machines
        failed = set(last_failures(self.settings.state_dir, selection.env))
        return [m for m in machines if m.name in failed]

    def check(self) -> None:
        if self.pipeline.NEEDS_IDENTITIES:
            password = self.settings.pfx_password().reveal()
            self.secrets.append(password)
            self.identities = IdentityStore(self.settings.state_dir, password)
            self.identities.check([m.name for m in self.machines])
        if self.pipeline.NEEDS_OCTOPUS:
            for env_key in dict.fromkeys(m.env_key for m in self.machines):
                environment = self.inventory.environments[env_key]
                target = self.settings.octopus_for(environment)
                self.secrets.append(target.api_key.reveal())
                client = OctopusClient(
                    target.url,
                    target.api_key.reveal(),
                    space=target.space,
                    key_hint=target.key_source,
                    retry_seconds=self.options.octopus_retry_seconds,
                )
                self.clients[env_key] = client
                machines = [m for m in self.machines if m.env_key == env_key]
                # Workers have no environment: a file of workers only needs none in Octopus.
                names = [environment.name] if not all(m.is_worker for m in machines) else []
                ids = client.connect(names)
                if names:
                    self.environment_ids[env_key] = ids[environment.name]
                pools = sorted({pool for m in machines for pool in m.worker_pools})
                if pools:
                    self.worker_pool_ids[env_key] = client.worker_pool_ids(pools)
                self.polling[env_key] = polling_server(target.url, environment.octopus)

    # --- the run --------------------------------------------------------------------------

    def execute(self) -> RunReport:
        try:
            self.check()
            return self._run_machines()
        finally:
            for client in self.clients.values():
                client.close()

    def _run_machines(self) -> RunReport:
        started = time.monotonic()
        masker = Masker(self.secrets)
        console = _masked(self.options.console, masker)
        connector = Connector(
            self.settings.state_dir / "known_hosts",
            accept_new_for=[m.name for m in self.machines]
            if self.options.accept_new_host_key
            else (),
            persist_host_keys=self.persist_host_keys,
        )
        connections = [connector.connection(m) for m in self.machines]
        _refuse_shared_connections(self.machines, connections)
        run_dir = new_run_dir(self.settings.state_dir, self.command.replace(" --", "-"))
        sequential = not self.options.parallel
        jobs: dict[Any, Job] = {}
        for job_id, (machine, conn) in enumerate(zip(self.machines, connections, strict=True), 1):
            echo = (lambda line: console(f"  {line}")) if sequential else None
            jobs[conn] = Job(
                job_id=job_id,
                machine=machine,
                conn=conn,
                log=MachineLog(run_dir / f"{machine.name}.log", masker, echo=echo),
                deadline_seconds=machine.ssh.deadline,
                octopus=self.clients.get(machine.env_key),
                environment_id=self.environment_ids.get(machine.env_key),
                worker_pool_ids=self.worker_pool_ids.get(machine.env_key, {}),
                polling=self.polling.get(machine.env_key),
                identities=self.identities,
                dry_run=self.options.dry_run,
                options=self.job_options,
                on_step=_step_printer(console, sequential, self.options.verbose),
            )
        workers = (self.options.workers or self.settings.workers) if self.options.parallel else 1
        group = FleetGroup.from_connections(
            list(jobs), workers=workers, deadline=lambda cxn: jobs[cxn].deadline_seconds
        )
        finished: dict[Any, MachineResult] = {}

        def run_one(cxn: Any) -> MachineResult:
            job = jobs[cxn]
            if sequential:
                console(f"[{job.job_id}] {job.machine.name} ({job.machine.placement})")
            return self.pipeline(job).run()

        def on_result(cxn: Any, value: object) -> None:
            result = finished[cxn] = _result_of(jobs[cxn], value, masker)
            jobs[cxn].log.write(f"result: {result.summary_line()}", echo=False)
            console(result.summary_line())

        interrupted = False
        try:
            group.call(run_one, on_result=on_result, on_abandon=lambda c: jobs[c].cancelled.set())
        except (FleetInterrupted, KeyboardInterrupt):
            interrupted = True
        finally:
            # Whatever happened, every machine gets its row, its log is closed, and the
            # report is written (a second Ctrl-C lands here at worst).
            for cxn, job in jobs.items():
                job.cancelled.set()
                job.log.close()
                close(cxn)
        results = [finished.get(cxn) or _result_of(job, None, masker) for cxn, job in jobs.items()]
        report = RunReport(
            self.command,
            results,
            time.monotonic() - started,
            str(run_dir),
            interrupted=interrupted,
        )
        report.write(run_dir)
        if self.records_outcome:
            record_outcome(self.settings.state_dir, report, self.machines)
        return report


def _result_of(job: Job, value: object, masker: Masker) -> MachineResult:
    """The row of a machine: its pipeline's result, or what the runner knows of it."""
    if isinstance(value, MachineResult):
        result = value
    else:
        result = job.snapshot()
        result.failed_step = job.current_step
        if isinstance(value, DeadlineExceeded):
            result.state = State.TIMED_OUT
            result.reason = f"{value} (at {job.current_step})"
        elif isinstance(value, Interrupted) or value is None:
            started = value.started if isinstance(value, Interrupted) else False
            result.state = State.INTERRUPTED if started else State.SKIPPED
            result.reason = str(value) if value else "not run"
        else:
            result.state = State.FAILED
            result.reason = f"internal error: {type(value).__name__}: {value}"
    result.reason = masker(result.reason)
    result.steps = [replace(s, detail=masker(s.detail)) for s in result.steps]
    result.facts = {key: masker(value) for key, value in result.facts.items()}
    return result


def _refuse_shared_connections(machines: list[Machine], connections: list[Any]) -> None:
    seen: dict[tuple, str] = {}
    for machine, conn in zip(machines, connections, strict=True):
        key = (conn.host, conn.user, conn.port)
        if key in seen:
            raise ConfigError(
                f"{seen[key]} and {machine.name} both connect to {conn.user}@{conn.host}:"
                f"{conn.port}: one machine, one entry"
            )
        seen[key] = machine.name


def _with_overrides(machine: Machine, options: RunOptions) -> Machine:
    ssh = machine.ssh
    if options.deadline is not None:
        ssh = replace(ssh, deadline=options.deadline)
    if options.connect_timeout is not None:
        ssh = replace(ssh, connect_timeout=options.connect_timeout)
    return replace(machine, ssh=ssh)


def _masked(console: Console, masker: Masker) -> Console:
    """console, with secrets masked and one line at a time: `-v` prints from every
    machine's thread."""
    lock = threading.Lock()

    def write(line: str) -> None:
        with lock:
            console(masker(line))

    return write


def _step_printer(
    console: Console, sequential: bool, verbose: bool
) -> Callable[[Job, StepResult], None] | None:
    if sequential:
        return lambda job, step: console(
            f"  {step.name}: {step.status}" + (f" ({step.detail})" if step.detail else "")
        )
    if verbose:
        return lambda job, step: console(f"{job.machine.name}: {step.name} {step.status}")
    return None


# --- what failed last time, per environment ---------------------------------------------

RETRY_STATES = frozenset({State.FAILED, State.UNREACHABLE, State.TIMED_OUT, State.INTERRUPTED})
DONE_STATES = frozenset({State.CHANGED, State.UNCHANGED, State.OK})  # a skipped one stays


def _outcome_file(state_dir: Path, env_key: str) -> Path:
    return state_dir / "last-run" / f"{env_key}.json"


def last_failures(state_dir: Path, env_key: str) -> list[str]:
    path = _outcome_file(state_dir, env_key)
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text())["failed"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is not a record octoboot wrote: delete it") from None


def record_outcome(state_dir: Path, report: RunReport, machines: list[Machine]) -> None:
    """Per environment: the machines whose last run did not succeed (for --retry-failed).
    A machine that succeeds leaves the list; one not in this run keeps its entry."""
    env_of = {m.name: m.env_key for m in machines}
    by_env: dict[str, list[MachineResult]] = {}
    for result in report.results:
        by_env.setdefault(env_of[result.machine], []).append(result)
    for env_key, results in by_env.items():
        path = _outcome_file(state_dir, env_key)
        failed = set(last_failures(state_dir, env_key))
        failed -= {r.machine for r in results if r.state in DONE_STATES}
        failed |= {r.machine for r in results if r.state in RETRY_STATES}
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(
            json.dumps(
                {"command": report.command, "run_dir": report.run_dir, "failed": sorted(failed)},
                indent=1,
            )
        )
