"""Running one machine's steps: the machinery every job shares.

A Pipeline subclass names its steps (`STEPS`, or `steps()` when they depend on the job's
options: a dataclass of its own, `Pipeline[Options]`) and implements each as `step_<name>()`,
returning (status, detail): status is `changed`, `unchanged`, `ok` (a check), `skipped` or
`would change` (dry run); a failure raises StepFailed with the reason for the report, and
stops that machine only. Remote work goes through `remote()`, which runs the command as root,
bounded by the machine's deadline on the host itself (`timeout`) and on our side.

Plan apart from apply (as pyinfra does): a step that may change something gathers the facts
that need I/O (the probe, Octopus' records, the identity store), hands them to a pure
planning function of its module, which answers `Noop(status, reason)` or `Change(what,
actions)`, and gives that to `Pipeline.apply`, the one place a plan is carried out. In a dry
run apply logs the plan's actions and answers `would change`; otherwise it runs them. A
Change also says what the host will be like after it (`probe`), so that the later steps of
a dry run and of a real run go on from the same facts.
"""

from __future__ import annotations

import base64
import functools
import io
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from octoboot import tentacle
from octoboot.errors import OctobootError
from octoboot.inventory import Machine
from octoboot.ratelimit import api_budget
from octoboot.report import MachineResult, State, StepResult
from octoboot.runlog import MachineLog
from octoboot.ssh import (
    OutputSink,
    host_key_changed_message,
    is_unreachable,
    unreachable_reason,
)
from octoboot.ssh import close as close_connection

# Only the pipelines that talk to Octopus use these (drift and health bring httpx, identity
# cryptography's x509): imported where they are used, so that exec starts without them.
if TYPE_CHECKING:
    from octoboot import drift
    from octoboot.health import HealthCoordinator, HealthResult
    from octoboot.identity import IdentityStore
    from octoboot.octopus import OctopusClient

# --- plans -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A command run as root on the host. pfx_of: the machine whose identity (the store's
    PFX, unprotected, base64) is the command's one line of input, read only when it runs:
    a plan never holds a secret."""

    command: str
    pfx_of: str | None = None

    def __str__(self) -> str:
        return f"run: {self.command}"


@dataclass(frozen=True)
class Upload:
    """A file of the controller copied to the host."""

    local: str
    remote: str

    def __str__(self) -> str:
        return f"upload {self.local} → {self.remote}"


@dataclass(frozen=True)
class ApiCall:
    """A change to a record of Octopus: POST (body), PUT (body, with its Id) or DELETE."""

    method: str
    collection: str  # machines, or workers
    record_id: str | None = None
    body: dict[str, Any] | None = field(default=None, repr=False)

    def __str__(self) -> str:
        where = f"{self.collection}/{self.record_id}" if self.record_id else self.collection
        return f"call Octopus: {self.method} {where}"


@dataclass(frozen=True)
class IdentityAction:
    """A change to the controller's identity store: mint a machine's identity, rename it
    (from old), or forget it."""

    verb: str  # mint, rename, forget
    machine: str
    old: str | None = None

    def __str__(self) -> str:
        if self.verb == "rename":
            return f"rename the identity {self.old} → {self.machine} in the store"
        return f"{self.verb} the identity of {self.machine} in the store"


Action = Command | Upload | ApiCall | IdentityAction


@dataclass(frozen=True)
class Noop:
    """Nothing to do: the step's status (unchanged, ok, skipped) and why."""

    status: str
    reason: str


@dataclass(frozen=True)
class Change:
    """Something to do. what: how a dry run says it ("would install Tentacle 7.1"); done:
    how a real run says it once done, unless the step words it from what the actions
    returned; probe: the host as it will be after (None: as it was)."""

    what: str
    actions: tuple[Action, ...]
    done: str = ""
    probe: tentacle.Probe | None = None


Plan = Change | Noop


def plan_delete(record: dict[str, Any], collection: str) -> Change:
    """One record deleted from Octopus (deregister, prune)."""
    return Change(
        f"would delete {record['Id']}",
        (ApiCall("DELETE", collection, record["Id"]),),
        done=f"deleted {record['Id']}",
    )


class StepFailed(OctobootError):
    """A step could not do its work; the message is the reason shown in the report."""

    def __init__(self, reason: str, state: State = State.FAILED) -> None:
        super().__init__(reason)
        self.state = state


class Cancelled(Exception):
    """The runner gave up on this machine (deadline or Ctrl-C): stop at the next chance."""


# A pipeline's options: what its command's own flags say (e.g. bootstrap.BootstrapOptions).
OptionsT = TypeVar("OptionsT")


@dataclass(eq=False)  # a job is itself: the fleet keys outcomes by it
class Job(Generic[OptionsT]):
    """Everything one machine's run needs."""

    job_id: int
    machine: Machine
    conn: Connection
    log: MachineLog
    deadline_seconds: float  # what it may take in all, counted from its start
    options: OptionsT
    octopus: OctopusClient | None = None
    environment_id: str | None = None  # a target's; None for workers
    worker_pool_ids: dict[str, str] = field(default_factory=dict)  # pool as listed → Id
    polling: drift.PollingServer | None = None  # where polling Tentacles connect to
    # The record's other fields as Octopus Ids (registration.py), for pipelines that compare.
    registration: drift.RegistrationIds | None = None
    health: HealthCoordinator | None = None  # this Octopus' health checks, shared
    identities: IdentityStore | None = None
    dry_run: bool = False
    on_step: Callable[[Job, StepResult], None] | None = None
    # Progress within a step (e.g. a health task queued), for the live output.
    on_note: Callable[[Job, str], None] | None = None
    # Where a command's output is shown as it comes (job, stream, lines), if not the log's echo.
    on_output: Callable[[Job, str, str], None] | None = None
    # Set by the runner when it stops waiting for this machine.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Written as the job goes; read by the runner if the job runs out of time.
    current_step: str | None = None
    started: float | None = None  # time.monotonic() when its pipeline began
    result: MachineResult = field(init=False)

    def __post_init__(self) -> None:
        self.result = MachineResult(
            self.job_id, self.machine.name, self.machine.placement, log=str(self.log.path)
        )

    def note(self, text: str) -> None:
        """Progress worth showing while a step still runs: logged (and echoed when the
        machine's output streams), and passed to on_note."""
        self.log.write(text)
        if self.on_note and not self.cancelled.is_set():
            self.on_note(self, text)

    def close(self) -> None:
        """Close its log and its connection: it has ended, and holds no descriptor."""
        self.log.close()
        close_connection(self.conn)

    def snapshot(self) -> MachineResult:
        """A copy of the result as it is now, safe from the job's thread going on; a job
        still at work has run for as long as it has been going."""
        seconds = self.result.seconds
        if not seconds and self.started is not None:
            seconds = time.monotonic() - self.started
        return replace(
            self.result,
            steps=list(self.result.steps),
            facts=dict(self.result.facts),
            seconds=seconds,
        )


class Pipeline(Generic[OptionsT]):
    STEPS: ClassVar[Sequence[str]] = ("connect", "probe")
    # What a run of this pipeline needs, checked before any host is touched (run.Run).
    NEEDS_OCTOPUS: ClassVar[bool] = False
    NEEDS_IDENTITIES: ClassVar[bool] = False
    # The inventory's registration fields resolved to Octopus Ids (job.registration).
    NEEDS_REGISTRATION: ClassVar[bool] = False
    # Its failures are what --retry-failed re-runs (not for pipelines that only look).
    RECORDS_OUTCOME: ClassVar[bool] = True
    # Writes nothing anywhere, new host keys included (like a dry run).
    READ_ONLY: ClassVar[bool] = False
    # Holds its machines' locks for the run, unless read-only or a dry run (locks.py).
    TAKES_LOCKS: ClassVar[bool] = True
    # At most this many seconds per machine unless --deadline says otherwise (the
    # inventory's deadline still wins when it is shorter); None: the inventory's.
    DEADLINE: ClassVar[float | None] = None

    # When the machine's time is up (time.monotonic()), from its start (run()).
    deadline: float

    def __init__(self, job: Job[OptionsT]) -> None:
        self.job = job
        self.machine = job.machine
        # Whether this run writes anywhere: not in a dry run or a read-only pipeline.
        self.writes = not (job.dry_run or self.READ_ONLY)
        self.probe: tentacle.Probe | None = None

    @functools.cached_property
    def collection(self) -> str:
        """Where Octopus keeps the machine's record (machines or workers)."""
        from octoboot import drift

        return drift.collection(self.machine)

    def run(self) -> MachineResult:
        """The steps, in order, until one fails; the machine's API calls wait (for a rate
        limit) at most until its deadline, and the result says how long they did."""
        start = self.job.started = time.monotonic()
        self.deadline = start + self.job.deadline_seconds
        with api_budget(self.deadline) as api:
            try:
                return self._run_steps(start)
            finally:
                self.job.result.api_wait_seconds = round(api.waited, 1)

    def _run_steps(self, start: float) -> MachineResult:
        job, result = self.job, self.job.result
        statuses = []
        try:
            for name in self.steps():
                self._check_cancelled()
                job.current_step = name
                step_start = time.monotonic()
                job.log.write(f"--- {name}")
                try:
                    status, detail = getattr(self, f"step_{name}")()
                    self._check_log()
                except StepFailed as exc:
                    self._record(name, "failed", str(exc), step_start)
                    result.state, result.failed_step, result.reason = exc.state, name, str(exc)
                    return result
                except OctobootError as exc:
                    self._record(name, "failed", str(exc), step_start)
                    result.state, result.failed_step, result.reason = State.FAILED, name, str(exc)
                    return result
                self._record(name, status, detail, step_start)
                statuses.append(status)
            job.current_step = None
            result.state = self.final_state(statuses)
            return result
        except Cancelled:
            job.log.write("=== stopped: the runner gave up on this machine (see its result)")
            return result
        except Exception as exc:  # a bug: keep the traceback in the log, fail this machine only
            job.log.write(traceback.format_exc())
            result.state, result.failed_step = State.FAILED, job.current_step
            result.reason = f"internal error: {type(exc).__name__}: {exc}"
            return result
        finally:
            result.seconds = time.monotonic() - start
            if not job.cancelled.is_set():
                job.log.write(
                    f"=== {result.state}" + (f": {result.reason}" if result.reason else "")
                )

    def steps(self) -> Sequence[str]:
        return self.STEPS

    def final_state(self, statuses: list[str]) -> State:
        if State.WOULD_CHANGE in statuses:
            return State.WOULD_CHANGE
        return State.CHANGED if State.CHANGED in statuses else State.UNCHANGED

    def _record(self, name: str, status: str, detail: str, started: float) -> None:
        step = StepResult(name, status, detail, round(time.monotonic() - started, 3))
        self.job.result.steps.append(step)
        self.job.log.write(f"{name}: {status}" + (f" ({detail})" if detail else ""), echo=False)
        if self.job.on_step and not self.job.cancelled.is_set():
            self.job.on_step(self.job, step)

    def _check_log(self) -> None:
        # A machine whose log cannot be written (full disk) fails, with one line: its work
        # would leave no trace to look at.
        if self.job.log.failure:
            raise StepFailed(self.job.log.failure)

    def _check_cancelled(self) -> None:
        if self.job.cancelled.is_set():
            raise Cancelled

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # --- remote commands ------------------------------------------------------------------

    def remote(
        self,
        command: str,
        *,
        stdin: str | None = None,
        check: bool = True,
        output: tuple[OutputSink, OutputSink] | None = None,
    ) -> Any:
        """Run command as root on the host, bounded by the machine's deadline on both ends,
        in a process group that ends with the SSH session (tentacle.supervised). stdin, if
        given, is one line sent to the command as its whole input (and never logged).
        output: sinks that get its stdout and stderr as they come, instead of the result
        (and the log) holding them."""
        self._check_cancelled()
        remaining = self.remaining()
        if remaining <= 1:
            raise StepFailed("the machine's deadline was reached", State.TIMED_OUT)
        if stdin is not None and "\n" in stdin:
            raise ValueError("a remote command's input is one line")
        wrapped = tentacle.as_root(
            tentacle.supervised(command, remaining, stdin_line=stdin is not None),
            sudo=self.machine.ssh.sudo,
        )
        self.job.log.write(f"$ {command}")
        started = time.monotonic()
        try:
            result = self.job.conn.run(
                wrapped,
                hide=True,
                warn=True,
                in_stream=io.StringIO(stdin + "\n") if stdin is not None else False,
                out_stream=output[0] if output else None,
                err_stream=output[1] if output else None,
                timeout=remaining + 10,
            )
        except CommandTimedOut:
            raise StepFailed(f"timed out after {remaining:.0f} s", State.TIMED_OUT) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self._check_cancelled()
            reason = f"connection lost: {exc or type(exc).__name__}"
            raise StepFailed(reason, State.UNREACHABLE) from None
        self._check_cancelled()  # the runner ended the command: its outcome is not the step's
        for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
            if text.strip():
                self.job.log.write(f"[{stream}]\n{text}")
        elapsed = time.monotonic() - started
        self.job.log.write(f"[exit {result.exited}, {elapsed:.2f}s]")
        if result.exited == -1:  # the channel closed without an exit status
            self._check_cancelled()
            raise StepFailed("connection lost while the command ran", State.UNREACHABLE)
        if result.exited == 124 and elapsed >= remaining - 2:  # our `timeout`, not the command's
            raise StepFailed(f"timed out after {remaining:.0f} s", State.TIMED_OUT)
        if check and result.exited != 0:
            raise StepFailed(last_lines(result.stderr or result.stdout, result.exited))
        return result

    # --- applying a plan ---------------------------------------------------------------

    def apply(self, plan: Plan, then: Callable[[list[Any]], str] | None = None) -> tuple[str, str]:
        """Carry out a step's plan: the one place where anything is changed. A Noop is the
        step's answer as it is. A Change leaves self.probe as the plan says the host will be;
        in a dry run its actions are logged and nothing is done (`would change`); otherwise
        they run in order, and then(their results), if given, words the step's detail (and
        may read what they printed, e.g. the version installed)."""
        if isinstance(plan, Noop):
            return plan.status, plan.reason
        if plan.probe is not None:
            self.probe = plan.probe
        if self.job.dry_run:
            for action in plan.actions:
                self.job.log.write(f"would {action}")
            return State.WOULD_CHANGE, plan.what
        results = [self._carry_out(action) for action in plan.actions]
        return State.CHANGED, then(results) if then else plan.done

    def _carry_out(self, action: Action) -> Any:
        if isinstance(action, Command):
            stdin = None
            if action.pfx_of is not None:
                identity = self._identities().get(action.pfx_of)
                assert identity is not None, f"{action.pfx_of} has no identity to send"
                stdin = base64.b64encode(identity.unprotected_pfx()).decode()
            return self.remote(action.command, stdin=stdin)
        if isinstance(action, Upload):
            return self._upload(action.local, action.remote)
        if isinstance(action, ApiCall):
            octopus = self._octopus()
            if action.method == "POST":
                assert action.body is not None
                return octopus.create_machine(action.body, action.collection)
            if action.method == "PUT":
                assert action.body is not None
                return octopus.update_machine(action.body, action.collection)
            assert action.method == "DELETE" and action.record_id is not None
            return octopus.delete_machine(action.record_id, action.collection)
        store = self._identities()
        if action.verb == "mint":
            return store.get_or_create(action.machine)
        if action.verb == "rename":
            assert action.old is not None
            return store.rename(action.old, action.machine)
        assert action.verb == "forget"
        return store.forget(action.machine)

    def _upload(self, local: str, remote_path: str) -> None:
        self._check_cancelled()  # Fabric would reopen a connection the runner closed
        self.job.log.write(f"upload {local} → {remote_path}")
        try:
            self.job.conn.put(local, remote_path)
        except FileNotFoundError as exc:
            raise StepFailed(f"cannot read the Tentacle archive: {exc}") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self._check_cancelled()
            raise StepFailed(f"upload failed: {exc}", State.UNREACHABLE) from None

    # --- shared steps ---------------------------------------------------------------------

    def step_connect(self) -> tuple[str, str]:
        conn = self.job.conn
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise StepFailed(host_key_changed_message(self.machine.name, exc)) from None
        except paramiko.AuthenticationException as exc:
            raise StepFailed(f"authentication failed as {conn.user}: {exc}") from None
        except FileNotFoundError as exc:
            raise StepFailed(f"cannot read the SSH key: {exc}") from None
        except Exception as exc:
            self._check_cancelled()
            if is_unreachable(exc):
                why = unreachable_reason(exc, self.machine.ssh.connect_timeout)
                raise StepFailed(
                    f"cannot reach {conn.host}:{conn.port}: {why}", State.UNREACHABLE
                ) from None
            if isinstance(exc, paramiko.SSHException):
                raise StepFailed(f"SSH failed: {exc}") from None
            raise
        return "ok", f"{conn.user}@{conn.host}:{conn.port}"

    def step_probe(self) -> tuple[str, str]:
        # Cleaning stale uploads is a change: only in a run that writes.
        command = tentacle.probe_command(self.machine.tentacle.instance, clean=self.writes)
        result = self.remote(command)
        self.probe = probe = tentacle.parse_probe(result.stdout)
        if probe.problems:
            raise StepFailed("; ".join(probe.problems))
        if not probe.installed:
            return "ok", "Tentacle not installed"
        parts = [f"Tentacle {probe.version or '?'}"]
        if probe.configuration_error:
            parts.append(f"configuration damaged: {probe.configuration_error}")
        else:
            parts.append(f"thumbprint {probe.thumbprint}" if probe.thumbprint else "no certificate")
        parts.append("service active" if probe.service_active else "service not active")
        return "ok", ", ".join(parts)

    # --- helpers ------------------------------------------------------------------------

    def wanted_record(
        self, *, thumbprint: str | None, subscription: str | None
    ) -> drift.WantedRecord:
        """The record Octopus should hold for this machine (see drift.wanted_record)."""
        from octoboot import drift

        assert self.job.registration is not None, "this pipeline does not compare records"
        return drift.wanted_record(
            self.machine,
            environment_id=self.job.environment_id,
            ssh_host=self.job.conn.host,
            thumbprint=thumbprint,
            registration=self.job.registration,
            subscription=subscription,
            worker_pool_ids=[self.job.worker_pool_ids[p] for p in self.machine.worker_pools],
        )

    def check_health(self, machine_id: str, name: str, environment_id: str | None) -> HealthResult:
        """The machine's health, from a Health task it may share with others (health.py),
        within its deadline; TimeoutError when that task does not finish in time."""
        assert self.job.health is not None
        return self.job.health.check(
            machine_id,
            name,
            environment_id,
            deadline=self.deadline - 1,
            cancelled=self.job.cancelled,
            note=self.job.note,
            collection=self.collection,
        )

    def _probe(self) -> tentacle.Probe:
        if self.probe is None:
            raise RuntimeError("the probe step must run first")
        return self.probe

    def _identities(self) -> IdentityStore:
        if self.job.identities is None:
            raise RuntimeError("this job has no identity store")
        return self.job.identities

    def _octopus(self) -> OctopusClient:
        if self.job.octopus is None:
            raise RuntimeError("this job has no Octopus client")
        return self.job.octopus


def last_lines(text: str, exit_code: int, count: int = 3) -> str:
    # The Tentacle separates an exception from its message with a row of '='.
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and set(ln.strip()) != {"="}]
    tail = " | ".join(lines[-count:]) or "no output"
    return f"exit {exit_code}: {tail}"
