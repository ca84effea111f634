"""The library's front door: bootstrap, install and register a selection of machines.

    report = octoboot.jobs.bootstrap(Selection(env="qa"), RunOptions(parallel=True))
    print(report.table()); sys.exit(report.exit_code)

Everything that can be checked before touching a host is checked first (inventory,
settings, identity store, each Octopus: key, space, server certificate, environments), so
a configuration error costs nothing and says so in one line (ConfigError, exit code 2).
Then every machine runs its pipeline through a FleetGroup; whatever happens to one machine
ends up as that machine's row in the report, and the report and logs are always written.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from octoboot import pipeline
from octoboot.fleet import DeadlineExceeded, FleetGroup
from octoboot.identity import IdentityStore
from octoboot.inventory import Machine, load_inventory
from octoboot.octopus import OctopusClient
from octoboot.report import MachineResult, RunReport, State, StepResult
from octoboot.runlog import MachineLog, Masker, new_run_dir
from octoboot.settings import Settings, load_settings
from octoboot.ssh import Connector

Console = Callable[[str], None]


@dataclass(frozen=True)
class Selection:
    env: str | None = None
    hosts: Sequence[str] = ()
    limits: Sequence[str] = ()


@dataclass(frozen=True)
class RunOptions:
    parallel: bool = False
    workers: int | None = None  # default: the settings' (OCTOBOOT_WORKERS, 32)
    verbose: bool = False
    deadline: float | None = None  # seconds per machine; default: the inventory's
    connect_timeout: float | None = None
    accept_new_host_key: bool = False
    console: Console = field(default=lambda line: print(line, file=sys.stderr, flush=True))


def bootstrap(
    selection: Selection, options: RunOptions = RunOptions(), settings: Settings | None = None
) -> RunReport:
    """Install, identify, configure, register, start and health-check each machine."""
    return _run("bootstrap", pipeline.BOOTSTRAP, selection, options, settings)


def install(
    selection: Selection, options: RunOptions = RunOptions(), settings: Settings | None = None
) -> RunReport:
    """Install (or upgrade) the Tentacle on each machine; nothing else."""
    return _run("install", pipeline.INSTALL, selection, options, settings)


def register(
    selection: Selection, options: RunOptions = RunOptions(), settings: Settings | None = None
) -> RunReport:
    """Identity, configuration, registration, service and health on installed machines."""
    return _run("register", pipeline.REGISTER, selection, options, settings)


def _run(
    command: str,
    steps: Sequence[str],
    selection: Selection,
    options: RunOptions,
    settings: Settings | None,
) -> RunReport:
    settings = settings or load_settings()
    inventory = load_inventory(settings.machines_dir)
    machines = inventory.select(selection.env, selection.hosts, selection.limits)
    needs_octopus = "register" in steps
    clients: dict[str, OctopusClient] = {}
    environment_ids: dict[str, str] = {}
    secrets: list[str] = []
    identities, pfx_password = None, None
    if "identity" in steps:
        pfx_password = settings.pfx_password().reveal()
        secrets.append(pfx_password)
        identities = IdentityStore(settings.state_dir, pfx_password)
    try:
        if needs_octopus:
            for env_key in dict.fromkeys(m.env_key for m in machines):
                environment = inventory.environments[env_key]
                target = settings.octopus_for(environment)
                secrets.append(target.api_key.reveal())
                client = OctopusClient(
                    target.url, target.api_key.reveal(), space=target.space,
                    key_hint=f"the API key setting for {environment.file}",
                )  # fmt: skip
                clients[env_key] = client
                environment_ids.update(
                    {env_key: client.connect([environment.name])[environment.name]}
                )
        return _run_machines(
            command, steps, machines, options, settings, Masker(secrets),
            clients, environment_ids, identities, pfx_password,
        )  # fmt: skip
    finally:
        for client in clients.values():
            client.close()


def _run_machines(
    command: str,
    steps: Sequence[str],
    machines: list[Machine],
    options: RunOptions,
    settings: Settings,
    masker: Masker,
    clients: dict[str, OctopusClient],
    environment_ids: dict[str, str],
    identities: IdentityStore | None,
    pfx_password: str | None,
) -> RunReport:
    started = time.monotonic()
    run_dir = new_run_dir(settings.state_dir, command)
    console = options.console
    connector = Connector(
        settings.state_dir / "known_hosts",
        accept_new_for=[m.name for m in machines] if options.accept_new_host_key else (),
    )
    sequential = not options.parallel
    jobs: dict[object, pipeline.Job] = {}
    for job_id, machine in enumerate(machines, start=1):
        machine = _with_overrides(machine, options)
        echo = (lambda line, m=machine.name: console(f"  {line}")) if sequential else None
        job = pipeline.Job(
            job_id=job_id,
            machine=machine,
            conn=connector.connection(machine),
            log=MachineLog(run_dir / f"{machine.name}.log", masker, echo=echo),
            deadline_seconds=machine.ssh.deadline,
            octopus=clients.get(machine.env_key),
            environment_id=environment_ids.get(machine.env_key),
            identities=identities,
            pfx_password=pfx_password,
            steps=steps,
            on_step=_step_printer(console, sequential, options.verbose),
        )
        jobs[job.conn] = job
    workers = (options.workers or settings.workers) if options.parallel else 1
    group = FleetGroup.from_connections(
        list(jobs), workers=workers, deadline=lambda cxn: jobs[cxn].deadline_seconds
    )

    def run_one(cxn: object) -> MachineResult:
        job = jobs[cxn]
        if sequential:
            console(f"[{job.job_id}] {job.machine.name} ({job.machine.environment})")
        return pipeline.Pipeline(job).run()

    def finished(cxn: object, value: object) -> None:
        result = _result_of(jobs[cxn], value)
        jobs[cxn].log.write(f"result: {result.summary_line()}", echo=False)
        console(masker(result.summary_line()))

    interrupted = False
    try:
        outcome = group.call(run_one, on_result=finished)
    except KeyboardInterrupt:
        interrupted, outcome = True, {}
    results = []
    for cxn, job in jobs.items():
        if cxn in outcome:
            results.append(_result_of(job, outcome[cxn]))
        else:
            job.result.state = State.INTERRUPTED if job.current_step else State.SKIPPED
            job.result.failed_step = job.current_step
            results.append(job.result)
        job.log.close()
        cxn.close()
    report = RunReport(
        command, results, time.monotonic() - started, str(run_dir), interrupted=interrupted
    )
    report.write(run_dir)
    return report


def _with_overrides(machine: Machine, options: RunOptions) -> Machine:
    ssh = machine.ssh
    if options.deadline is not None:
        ssh = replace(ssh, deadline=options.deadline)
    if options.connect_timeout is not None:
        ssh = replace(ssh, connect_timeout=options.connect_timeout)
    return replace(machine, ssh=ssh)


def _result_of(job: pipeline.Job, value: object) -> MachineResult:
    if isinstance(value, MachineResult):
        return value
    result = job.result
    result.failed_step = job.current_step
    if isinstance(value, DeadlineExceeded):
        result.state = State.TIMED_OUT
        result.reason = f"{value} (at {job.current_step})"
    else:
        result.state = State.FAILED
        result.reason = f"internal error: {type(value).__name__}: {value}"
    return result


def _step_printer(
    console: Console, sequential: bool, verbose: bool
) -> Callable[[pipeline.Job, StepResult], None] | None:
    if sequential:
        return lambda job, step: console(
            f"  {step.name}: {step.status}" + (f" ({step.detail})" if step.detail else "")
        )
    if verbose:
        return lambda job, step: console(f"{job.machine.name}: {step.name} {step.status}")
    return None
