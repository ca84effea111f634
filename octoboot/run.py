"""A run of a pipeline over the selected machines: `Run` (checks first, a `Job` per
machine, the fleet batch by batch, one report), what selects the machines (`Selection`),
the flags every fleet command shares (`RunOptions`), and the outcome file --retry-failed
reads. Each command's entry function lives with its pipeline (bootstrap.bootstrap,
deregister.deregister, exec.exec_command, status.status, prune.prune); this module knows
none of them.

    report = octoboot.bootstrap.bootstrap(Selection(env="qa"), RunOptions(parallel=True))
    print(report.table()); sys.exit(report.exit_code)

Everything that can be checked before touching a host is checked first (inventory,
settings, flags, a writable state directory, the identity store and its password, each
Octopus: key, space, server certificate, environments, and the names of what the machines'
records refer to: machine policy), so a configuration error costs
nothing and says so in one line (a ConfigError). A run that changes machines then takes
their locks (locks.py): machines another run holds are `skipped`, naming it. Then each
machine gets its Job, and the jobs run through the fleet (fleet.run_jobs), batch by batch;
whatever happens to one machine ends up as that machine's row in the report, and the report
and the logs are always written, Ctrl-C included (or the terminal says why they could not
be).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic

from octoboot.errors import ConfigError
from octoboot.files import StateWriteError, check_writable, describe, write_atomic
from octoboot.flags import number
from octoboot.fleet import (
    FDS_PER_MACHINE,
    DeadlineExceeded,
    FleetInterrupted,
    Interrupted,
    open_files,
    run_jobs,
    workers_for_open_files,
)
from octoboot.interrupts import signal_of, sigterm_interrupts
from octoboot.inventory import Inventory, Machine, load_inventory
from octoboot.locks import Locks
from octoboot.pipeline import Job, OptionsT, Pipeline
from octoboot.report import MachineResult, RunReport, State, StepResult, printable
from octoboot.rolling import Rollout, Share, batch_sizes
from octoboot.runlog import MachineLog, Masker, new_run_dir
from octoboot.settings import Settings, load_settings
from octoboot.ssh import Connector

# What only the pipelines that talk to Octopus or keep identities use (httpx, cryptography's
# x509: half of `inv exec`'s start-up, before its first connection) is imported where they
# use it.
if TYPE_CHECKING:
    from octoboot.drift import PollingServer, RegistrationIds
    from octoboot.health import HealthCoordinator
    from octoboot.identity import IdentityStore
    from octoboot.octopus import OctopusClient

Console = Callable[[str], None]
REPORT_FORMATS = ("table", "json")


@dataclass(frozen=True)
class Selection:
    env: str | None = None
    hosts: Sequence[str] = ()
    limits: Sequence[str] = ()
    retry_failed: bool = False  # only the machines that failed in the env's last run

    @classmethod
    def from_flags(
        cls,
        env: str | None = None,
        host: Iterable[str] | None = None,
        limit: Iterable[str] | None = None,
        retry_failed: bool = False,
    ) -> Selection:
        """--env, --host and --limit (each repeatable) and --retry-failed, as Invoke gives
        them."""
        return cls(env, tuple(host or ()), tuple(limit or ()), retry_failed)


@dataclass(frozen=True)
class RunOptions:
    parallel: bool = False
    workers: int | None = None  # default: the settings' (OCTOBOOT_WORKERS, or what fits)
    verbose: bool = False
    batch: str | int | None = None  # N or "P%" machines at a time (octoboot.rolling)
    max_fail: str | int | None = None  # stop starting machines beyond N or "P%" failures
    deadline: float | None = None  # seconds per machine; default: the inventory's
    connect_timeout: float | None = None
    accept_new_host_key: bool = False
    dry_run: bool = False
    console: Console = field(default=lambda line: print(line, file=sys.stderr, flush=True))

    @classmethod
    def from_flags(
        cls,
        *,
        parallel: bool = False,
        workers: str | int | None = None,
        verbose: bool = False,
        batch: str | None = None,
        max_fail: str | None = None,
        deadline: str | float | None = None,
        connect_timeout: str | float | None = None,
        accept_new_host_key: bool = False,
        dry_run: bool = False,
    ) -> RunOptions:
        """The shared flags, as Invoke gives them (numbers as text); a wrong one is a
        ConfigError saying which."""
        if workers is not None and not parallel:
            raise ConfigError("--workers applies only with --parallel")
        return cls(
            parallel=parallel,
            workers=number(workers, "--workers", int, more_than=0),
            verbose=verbose,
            batch=batch,
            max_fail=max_fail,
            deadline=number(deadline, "--deadline", float, more_than=0),
            connect_timeout=number(connect_timeout, "--connect-timeout", float, more_than=0),
            accept_new_host_key=accept_new_host_key,
            dry_run=dry_run,
        )


def report_format(value: str) -> str:
    """--format: how the report is printed."""
    if value not in REPORT_FORMATS:
        raise ConfigError(f"--format must be {' or '.join(REPORT_FORMATS)}, not {value!r}")
    return value


class Run(Generic[OptionsT]):
    """One run of a pipeline over the selected machines."""

    # What the run's report is; status' shows what it found.
    REPORT: ClassVar[type[RunReport]] = RunReport

    def __init__(
        self,
        command: str,
        pipeline: type[Pipeline[OptionsT]],
        selection: Selection,
        options: RunOptions,
        settings: Settings | None,
        pipeline_options: OptionsT,
    ) -> None:
        self.command = command + (" --dry-run" if options.dry_run else "")
        self.pipeline = pipeline
        self.options = options
        self.pipeline_options = pipeline_options
        self.settings = settings or load_settings()
        self.records_outcome = pipeline.RECORDS_OUTCOME and not options.dry_run
        self.persist_host_keys = not (pipeline.READ_ONLY or options.dry_run)
        self.takes_locks = pipeline.TAKES_LOCKS and self.persist_host_keys
        self.batch = None if options.batch is None else Share.parse(options.batch, "--batch")
        self.max_fail = (
            None if options.max_fail is None else Share.parse(options.max_fail, "--max-fail")
        )
        self.inventory: Inventory = load_inventory(self.settings.machines_dir)
        self.machines = [_with_overrides(m, options) for m in self._select(selection)]
        self.clients: dict[str, OctopusClient] = {}
        self._servers: dict[tuple[str, str, str | None], OctopusClient] = {}
        self.environment_ids: dict[str, str] = {}
        # Per environment file: its workers' pools (name → Id) and where its polling
        # Tentacles connect to; resolved once per run.
        self.worker_pool_ids: dict[str, dict[str, str]] = {}
        self.polling: dict[str, PollingServer] = {}
        self.registrations: dict[str, RegistrationIds] = {}
        # Loaded so that they are masked in every output, whether or not this run uses them:
        # exec output or a command line may hold any of them.
        self.settings.load_secrets(self.inventory.environments.values())
        self.identities: IdentityStore | None = None

    def deadline(self, machine: Machine) -> float:
        """The seconds a machine may take in all: --deadline, else the inventory's, at most
        the pipeline's own bound (status answers in seconds)."""
        if self.options.deadline is not None:
            return self.options.deadline
        cap = self.pipeline.DEADLINE
        return machine.ssh.deadline if cap is None else min(machine.ssh.deadline, cap)

    def extra_rows(self, first_id: int, *, interrupted: bool) -> list[MachineResult]:
        """Rows the report has besides the machines', numbered from first_id, asked for once
        the machines have ended (status: the machines only Octopus knows). None here."""
        return []

    # --- checks before any host is touched ------------------------------------------------

    def _select(self, selection: Selection) -> list[Machine]:
        retry_env = selection.env if selection.retry_failed else None
        if selection.retry_failed and not retry_env:
            raise ConfigError("--retry-failed needs --env: it re-runs that environment's")
        machines = self.inventory.select(selection.env, selection.hosts, selection.limits)
        # A limit such as '*' that keeps the whole environment names no machine in particular.
        if (
            self.options.accept_new_host_key
            and not selection.hosts
            and len(machines) == len(self.inventory.select(selection.env))
        ):
            limits = " ".join(f"--limit {pattern!r}" for pattern in selection.limits)
            raise ConfigError(
                "--accept-new-host-key accepts a changed key only for machines named with "
                "--host or --limit (the rebuilt ones), not for a whole environment"
                + (f": {limits} selects every machine of {selection.env}" if limits else "")
            )
        if not retry_env:
            return machines
        failed = set(last_failures(self.settings.state_dir, retry_env))
        return [m for m in machines if m.name in failed]

    def check(self) -> None:
        check_writable(self.settings.state_dir)
        if self.pipeline.NEEDS_IDENTITIES:
            from octoboot.identity import IdentityStore

            password = self.settings.pfx_password().reveal()
            self.identities = IdentityStore(self.settings.state_dir, password)
            self.identities.check()
        if self.pipeline.NEEDS_OCTOPUS:
            for env_key in dict.fromkeys(m.env_key for m in self.machines):
                self.connect(env_key)
        if self.pipeline.NEEDS_REGISTRATION:
            from octoboot.registration import resolve_all

            self.registrations = resolve_all(self.machines, self.clients)

    def connect(self, env_key: str) -> OctopusClient:
        """The Octopus of an environment file, connected, and what its machines need from
        it looked up once: its environment (workers have none: a file of workers only needs
        none in Octopus), its workers' pools, where its polling Tentacles connect to. One
        client per Octopus (and key and space), whatever number of files name it: what it
        reads once, and its rate limit, are the server's."""
        from octoboot.drift import polling_server
        from octoboot.octopus import OctopusClient

        environment = self.inventory.environments[env_key]
        target = self.settings.octopus_for(environment)
        server = (target.url, target.api_key.reveal(), target.space)
        if server not in self._servers:
            self._servers[server] = OctopusClient(
                target.url,
                target.api_key.reveal(),
                space=target.space,
                key_hint=target.key_source,
                url_hint=target.url_source,
            )
        client = self.clients[env_key] = self._servers[server]
        machines = [m for m in self.machines if m.env_key == env_key]
        workers_only = bool(machines) and all(m.is_worker for m in machines)
        names = [] if workers_only else [environment.name]
        ids = client.connect(names)
        if names:
            self.environment_ids[env_key] = ids[environment.name]
        pools = sorted({pool for m in machines for pool in m.worker_pools})
        if pools:
            self.worker_pool_ids[env_key] = client.worker_pool_ids(pools)
        self.polling[env_key] = polling_server(target.url, environment.octopus)
        return client

    # --- the run --------------------------------------------------------------------------

    def execute(self) -> RunReport:
        # SIGTERM (a cancelled CI job) stops the run as Ctrl-C does.
        with sigterm_interrupts():
            try:
                self.check()
                return self._run_machines()
            finally:
                for client in {id(c): c for c in self.clients.values()}.values():
                    client.close()

    def _run_machines(self) -> RunReport:
        locks = Locks(self.settings.state_dir, self.command)
        try:
            return self._run_locked(locks)
        finally:
            locks.release()

    def _health_coordinators(
        self, sequential: bool, announce: Console | None
    ) -> dict[int, HealthCoordinator]:
        """One per Octopus client (by id): its machines' Health tasks, shared."""
        if not self.clients:
            return {}
        from octoboot.health import GATHER_SECONDS, HealthCoordinator

        return {
            id(client): HealthCoordinator(
                client,
                # One machine at a time has nobody to share a task with.
                gather_seconds=0 if sequential else GATHER_SECONDS,
                per_machine=self.settings.health_tasks == "per-machine",
                announce=announce,
            )
            for client in self.clients.values()
        }

    def _run_locked(self, locks: Locks) -> RunReport:
        started = time.monotonic()
        masker = Masker()
        console = _masked(self.options.console, masker)
        workers = self._workers(console)
        connector = Connector(
            self.settings.state_dir / "known_hosts",
            accept_new_for=[m.name for m in self.machines]
            if self.options.accept_new_host_key
            else (),
            persist_host_keys=self.persist_host_keys,
            locks=locks,
        )
        connections = [connector.connection(m) for m in self.machines]
        _refuse_shared_connections(self.machines, connections)
        busy: dict[str, str] = {}
        if self.takes_locks:
            busy = locks.acquire_machines([m.name for m in self.machines], on_wait=console)
        try:
            run_dir = new_run_dir(self.settings.state_dir, self.command.replace(" --", "-"))
        except OSError as exc:
            raise ConfigError(
                f"cannot make the run's folder in {self.settings.state_dir / 'runs'}: "
                f"{describe(exc)}"
            ) from None
        sequential = not self.options.parallel
        quiet = not (sequential or self.options.verbose)
        coordinators = self._health_coordinators(sequential, console if quiet else None)

        jobs: list[Job[OptionsT]] = []
        skipped: list[MachineResult] = []
        for job_id, (machine, conn) in enumerate(zip(self.machines, connections, strict=True), 1):
            if machine.name in busy:
                row = MachineResult(
                    job_id,
                    machine.name,
                    machine.environment,
                    State.SKIPPED,
                    reason=busy[machine.name],
                )
                skipped.append(row)
                console(row.summary_line())
                continue
            echo = _indented(console) if sequential else None
            client = self.clients.get(machine.env_key)
            jobs.append(
                Job(
                    job_id=job_id,
                    machine=machine,
                    conn=conn,
                    log=MachineLog(run_dir / f"{machine.name}.log", masker, echo=echo),
                    deadline_seconds=self.deadline(machine),
                    options=self.pipeline_options,
                    octopus=client,
                    environment_id=self.environment_ids.get(machine.env_key),
                    registration=self.registrations.get(machine.name),
                    health=coordinators.get(id(client)),
                    worker_pool_ids=self.worker_pool_ids.get(machine.env_key, {}),
                    polling=self.polling.get(machine.env_key),
                    identities=self.identities,
                    dry_run=self.options.dry_run,
                    on_step=_step_printer(console, sequential, self.options.verbose),
                    on_note=None if sequential or quiet else _note_printer(console),
                    on_output=None if sequential else _output_printer(console),
                )
            )
        finished: dict[Job[OptionsT], MachineResult] = {}
        sizes = batch_sizes(len(jobs), self.batch)
        rollout = Rollout(self.max_fail, batched=len(sizes) > 1)
        counted: set[int] = set()
        count_lock = threading.Lock()

        def count(job: Job[OptionsT], state: State) -> None:
            """Tell the rollout how a machine ended, once: from its own thread, so that the
            next one does not start before, or from the runner (deadline), if first."""
            with count_lock:
                if job.job_id not in counted:
                    counted.add(job.job_id)
                    rollout.ended(state)

        def run_one(job: Job[OptionsT]) -> MachineResult:
            if rollout.stop_reason:  # too many failed while this one waited for a worker
                return _skipped(job, rollout.stop_reason)
            if sequential:
                console(f"[{job.job_id}] {job.machine.name} ({job.machine.placement})")
            result = self.pipeline(job).run()
            count(job, result.state)
            return result

        def on_result(job: Job[OptionsT], value: object) -> None:
            result = finished[job] = _result_of(job, value, masker)
            count(job, result.state)
            job.log.write(f"result: {result.summary_line()}", echo=False)
            job.close()  # a machine that has ended holds no descriptor: only those at work do
            console(result.summary_line())

        interrupted = None
        waiting = list(jobs)
        try:
            for number, size in enumerate(sizes, 1):
                batch, waiting = waiting[:size], waiting[size:]
                if rollout.stop_reason:
                    for job in batch:
                        on_result(job, _skipped(job, rollout.stop_reason))
                    continue
                if len(sizes) > 1:
                    console(f"batch {number} of {len(sizes)}: {size} machine(s)")
                rollout.start_batch(number, size)
                run_jobs(
                    batch,
                    run_one,
                    workers=workers,
                    on_result=on_result,
                    on_abandon=lambda job: job.cancelled.set(),
                )
        except FleetInterrupted as stop:
            interrupted = signal_of(stop.__cause__)
        except KeyboardInterrupt as stop:
            interrupted = signal_of(stop)
        finally:
            # Whatever happened, every machine gets its row, its log is closed, and the
            # report is written (a second Ctrl-C lands here at worst).
            for job in jobs:
                job.cancelled.set()
                job.close()
            for coordinator in coordinators.values():
                coordinator.close()
        results = []
        for job in jobs:
            result = finished.get(job)
            if result is None:  # never started, or a second Ctrl-C cut its ending short
                result = _result_of(job, None, masker)
                job.log.write(f"result: {result.summary_line()}", echo=False)
                job.log.close()
            results.append(result)
        rows = sorted([*results, *skipped], key=lambda r: r.job_id)
        extras = self.extra_rows(len(rows) + 1, interrupted=interrupted is not None)
        for row in extras:
            console(row.summary_line())
        report = self.REPORT(
            self.command,
            [*rows, *extras],
            time.monotonic() - started,
            str(run_dir),
            interrupted=interrupted,
            host_keys_learned=connector.host_keys_learned(),
            host_keys_kept=self.persist_host_keys,
            stopped=rollout.stopped,
        )
        self.write_report(report)
        if self.records_outcome:
            try:
                record_outcome(self.settings.state_dir, report, self.machines, locks)
            except (StateWriteError, ConfigError) as exc:  # a record it cannot write or read
                console(f"octoboot: --retry-failed will not know this run: {exc}")
        return report

    def write_report(self, report: RunReport) -> None:
        """Write the report into its run folder, or say on the terminal why it could not."""
        assert report.run_dir is not None
        try:
            report.write(Path(report.run_dir))
        except StateWriteError as exc:
            self.options.console(f"octoboot: the report was not written ({exc})")

    def _workers(self, console: Console) -> int:
        """How many machines at once: the options' or the settings' number, fewer if the
        open-files limit would not hold them (said in one line)."""
        wanted = (self.options.workers or self.settings.workers) if self.options.parallel else 1
        wanted = max(1, min(wanted, len(self.machines)))
        limit, open_now = open_files()
        fitting = workers_for_open_files(wanted, soft_limit=limit, open_now=open_now)
        if fitting < 1:
            raise ConfigError(
                f"the open-files limit (ulimit -n: {limit}, {open_now} open) leaves no room "
                f"for one machine ({FDS_PER_MACHINE} descriptors): raise it, e.g. ulimit -n 4096"
            )
        if fitting < wanted:
            console(
                f"octoboot: the open-files limit (ulimit -n: {limit}) holds only {fitting} of "
                f"{wanted} machines at once: running {fitting} at a time (raise it to run more)"
            )
        return fitting


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


def _skipped(job: Job, reason: str) -> MachineResult:
    result = job.snapshot()
    result.state, result.reason = State.SKIPPED, reason
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
    if options.connect_timeout is None:
        return machine
    return replace(machine, ssh=replace(machine.ssh, connect_timeout=options.connect_timeout))


def _masked(console: Console, masker: Masker) -> Console:
    """console, with secrets masked, hosts' control characters escaped, and one line at a
    time: `-v` prints from every machine's thread."""
    lock = threading.Lock()

    def write(line: str) -> None:
        with lock:
            console(printable(masker(line), keep="\n\t"))

    return write


def _indented(console: Console) -> Console:
    """A sequential run shows each machine's lines under its name."""
    return lambda text: console("\n".join(f"  {line}" for line in text.split("\n")))


def _output_printer(console: Console) -> Callable[[Job, str, str], None]:
    """In a parallel run each line of a command's output shows whose it is, as
    parallel-ssh's `-P` and pyinfra do: `web1: line`, `web1 stderr: line`."""

    def show(job: Job, stream: str, text: str) -> None:
        prefix = job.machine.name + (": " if stream == "stdout" else f" {stream}: ")
        console("\n".join(prefix + line for line in text.split("\n")))

    return show


def _note_printer(console: Console) -> Callable[[Job, str], None]:
    return lambda job, text: console(f"{job.machine.name}: {text}")


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
    try:
        return list(json.loads(path.read_text())["failed"])
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {describe(exc)}") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is not a record octoboot wrote: delete it") from None


def record_outcome(
    state_dir: Path, report: RunReport, machines: list[Machine], locks: Locks
) -> None:
    """Per environment: the machines whose last run did not succeed (for --retry-failed).
    A machine that succeeds leaves the list; one not in this run keeps its entry. Under the
    environment's lock, so runs on other machines of it do not lose each other's entries."""
    env_of = {m.name: m.env_key for m in machines}
    by_env: dict[str, list[MachineResult]] = {}
    for result in report.results:
        if result.machine in env_of:  # not a row the run added (Run.extra_rows)
            by_env.setdefault(env_of[result.machine], []).append(result)
    for env_key, results in by_env.items():
        path = _outcome_file(state_dir, env_key)
        with locks.held(f"last-run:{env_key}"):
            failed = set(last_failures(state_dir, env_key))
            failed -= {r.machine for r in results if r.state in DONE_STATES}
            failed |= {r.machine for r in results if r.state in RETRY_STATES}
            try:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise StateWriteError(path.parent, exc) from None
            record = {
                "command": report.command,
                "run_dir": report.run_dir,
                "failed": sorted(failed),
            }
            write_atomic(path, json.dumps(record, indent=1))
