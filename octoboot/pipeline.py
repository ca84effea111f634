"""The per-machine pipeline, step by step, each step idempotent:

    connect → probe → install → identity → configure → register → service → health

Each step reports changed / unchanged / ok (a check) or fails with a reason; a failure stops
that machine only. Remote work is one round trip per step at most (the probe reads install
state, version, settings and service state in one command), because at fleet scale round
trips and Tentacle start-ups, not bytes, are what cost.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from octoboot import tentacle
from octoboot.errors import OctobootError
from octoboot.identity import Identity, IdentityStore
from octoboot.inventory import Machine
from octoboot.octopus import OctopusClient, OctopusError, Resource
from octoboot.report import MachineResult, State, StepResult
from octoboot.runlog import MachineLog
from octoboot.ssh import host_key_changed_message, is_unreachable

BOOTSTRAP = (
    "connect",
    "probe",
    "install",
    "identity",
    "configure",
    "register",
    "service",
    "health",
)
INSTALL = ("connect", "probe", "install")
REGISTER = ("connect", "probe", "identity", "configure", "register", "service", "health")


class StepFailed(OctobootError):
    """A step could not do its work; the message is the reason shown in the report."""

    def __init__(self, reason: str, state: State = State.FAILED) -> None:
        super().__init__(reason)
        self.state = state


@dataclass
class Job:
    """Everything one machine's run needs."""

    job_id: int
    machine: Machine
    conn: Connection
    log: MachineLog
    deadline_seconds: float
    octopus: OctopusClient | None = None
    environment_id: str | None = None
    identities: IdentityStore | None = None
    pfx_password: str | None = None
    steps: Sequence[str] = BOOTSTRAP
    on_step: Callable[[Job, StepResult], None] | None = None
    # Written as the job goes; read by the runner if the job runs out of time.
    current_step: str | None = None
    result: MachineResult = field(init=False)

    def __post_init__(self) -> None:
        self.result = MachineResult(
            self.job_id, self.machine.name, self.machine.environment, log=str(self.log.path)
        )


class Pipeline:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.machine = job.machine
        self.probe: tentacle.Probe | None = None
        self.identity: Identity | None = None
        self.restart_needed = False
        self.created_instance = False

    def run(self) -> MachineResult:
        job, result = self.job, self.job.result
        start = time.monotonic()
        self.deadline = start + job.deadline_seconds
        changed = False
        try:
            for name in job.steps:
                job.current_step = name
                step_start = time.monotonic()
                job.log.write(f"--- {name}")
                try:
                    status, detail = getattr(self, f"step_{name}")()
                except StepFailed as exc:
                    self._record(name, "failed", str(exc), step_start)
                    result.state, result.failed_step, result.reason = exc.state, name, str(exc)
                    return result
                self._record(name, status, detail, step_start)
                changed |= status == "changed"
            job.current_step = None
            result.state = State.CHANGED if changed else State.UNCHANGED
            return result
        except Exception as exc:  # a bug: keep the traceback in the log, fail this machine only
            job.log.write(traceback.format_exc())
            result.state, result.failed_step = State.FAILED, job.current_step
            result.reason = f"internal error: {type(exc).__name__}: {exc}"
            return result
        finally:
            result.seconds = time.monotonic() - start
            job.log.write(f"=== {result.state}" + (f": {result.reason}" if result.reason else ""))

    def _record(self, name: str, status: str, detail: str, started: float) -> None:
        step = StepResult(name, status, detail, round(time.monotonic() - started, 3))
        self.job.result.steps.append(step)
        self.job.log.write(f"{name}: {status}" + (f" ({detail})" if detail else ""), echo=False)
        if self.job.on_step:
            self.job.on_step(self.job, step)

    # --- remote commands ------------------------------------------------------------------

    def remote(self, command: str) -> Any:
        """Run command as root on the host, bounded by the machine's deadline on both ends."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 1:
            raise StepFailed("the machine's deadline was reached", State.TIMED_OUT)
        wrapped = tentacle.as_root(
            tentacle.with_deadline(command, remaining), sudo=self.machine.ssh.sudo
        )
        self.job.log.write(f"$ {command}")
        started = time.monotonic()
        try:
            result = self.job.conn.run(
                wrapped,
                hide=True,
                warn=True,
                in_stream=False,
                timeout=remaining + 10,
            )
        except CommandTimedOut:
            raise StepFailed(f"timed out after {remaining:.0f} s", State.TIMED_OUT) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            reason = f"connection lost: {exc or type(exc).__name__}"
            raise StepFailed(reason, State.UNREACHABLE) from None
        for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
            if text.strip():
                self.job.log.write(f"[{stream}]\n{text}")
        self.job.log.write(f"[exit {result.exited}, {time.monotonic() - started:.2f}s]")
        if result.exited == 124:
            raise StepFailed(f"timed out after {remaining:.0f} s", State.TIMED_OUT)
        if result.exited != 0:
            raise StepFailed(_last_lines(result.stderr or result.stdout, result.exited))
        return result

    # --- steps --------------------------------------------------------------------------

    def step_connect(self) -> tuple[str, str]:
        conn = self.job.conn
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise StepFailed(host_key_changed_message(self.machine.name, exc)) from None
        except paramiko.AuthenticationException as exc:
            raise StepFailed(f"authentication failed as {conn.user}: {exc}") from None
        except Exception as exc:
            if is_unreachable(exc):
                raise StepFailed(
                    f"cannot reach {conn.host}:{conn.port}: {exc or type(exc).__name__}",
                    State.UNREACHABLE,
                ) from None
            raise
        return "ok", f"{conn.user}@{conn.host}:{conn.port}"

    def step_probe(self) -> tuple[str, str]:
        result = self.remote(tentacle.probe_command(self.machine.tentacle.instance))
        self.probe = probe = tentacle.parse_probe(result.stdout)
        if not probe.installed:
            return "ok", "Tentacle not installed"
        parts = [f"Tentacle {probe.version or '?'}"]
        parts.append(f"thumbprint {probe.thumbprint}" if probe.thumbprint else "no certificate")
        parts.append("service active" if probe.service_active else "service not active")
        return "ok", ", ".join(parts)

    def step_install(self) -> tuple[str, str]:
        options, probe = self.machine.tentacle, self._probe()
        wanted = options.version
        if probe.installed and (wanted is None or _version(probe.version) >= _version(wanted)):
            return "unchanged", f"Tentacle {probe.version}"
        source = options.resolved_source()
        if source is None:
            raise StepFailed(
                f"Tentacle is not installed and {self.machine.source_file} has no "
                "[tentacle] source to install it from"
            )
        if options.source_is_local:
            remote_file = f"/tmp/octoboot-{uuid.uuid4().hex}.tar.gz"
            self.job.log.write(f"upload {source} → {remote_file}")
            self.job.conn.put(source, remote_file)
            result = self.remote(tentacle.install_from_file_command(remote_file))
        else:
            result = self.remote(tentacle.install_from_url_command(source))
        version = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "?"
        if wanted and _version(version) < _version(wanted):
            raise StepFailed(f"installed {version}, but {wanted} was wanted: check the source")
        self.restart_needed |= probe.installed
        self.probe = _replace_version(probe, version)
        before = f"{probe.version} → " if probe.installed else ""
        return "changed", f"installed Tentacle {before}{version}"

    def step_identity(self) -> tuple[str, str]:
        probe = self._probe()
        if not probe.installed:
            raise StepFailed("Tentacle is not installed: run `inv install` (or bootstrap) first")
        store, password = self.job.identities, self.job.pfx_password
        assert store is not None and password is not None
        self.identity = identity = store.get_or_create(self.machine.name)
        self.job.result.thumbprint = identity.thumbprint
        if probe.instance_exists and probe.thumbprint == identity.thumbprint:
            return "unchanged", identity.thumbprint
        upload_dir = f"/tmp/octoboot-{uuid.uuid4().hex}"
        sftp = self.job.conn.sftp()
        sftp.mkdir(upload_dir, mode=0o700)
        try:
            with sftp.open(f"{upload_dir}/identity.pfx", "wb") as out:
                out.write(identity.unprotected_pfx(password))
        except BaseException:
            self._remove_upload(upload_dir)
            raise
        self.remote(
            tentacle.import_identity_command(
                self.machine.tentacle.instance,
                upload_dir,
                create_instance=not probe.instance_exists,
            )
        )
        self.created_instance = not probe.instance_exists
        self.restart_needed = True
        minted = " (new identity)" if identity.created else ""
        return "changed", f"imported {identity.thumbprint}{minted}"

    def _remove_upload(self, upload_dir: str) -> None:
        try:
            self.remote(f"rm -rf {upload_dir}")
        except StepFailed as exc:
            self.job.log.write(f"could not remove {upload_dir}: {exc}")

    def step_configure(self) -> tuple[str, str]:
        probe, options = self._probe(), self.machine.tentacle
        server = self._octopus().server_thumbprint()
        if (
            not self.created_instance
            and probe.port == options.port
            and probe.no_listen is False
            and probe.app_dir == options.app_dir
            and probe.trusted == (server,)
        ):
            return "unchanged", f"port {options.port}, trusts {server[:8]}…"
        self.remote(
            tentacle.configure_command(
                options.instance, port=options.port, app_dir=options.app_dir,
                server_thumbprint=server,
            )
        )  # fmt: skip
        self.restart_needed = True
        return "changed", f"listening on {options.port}, trusts only {server[:8]}…"

    def step_register(self) -> tuple[str, str]:
        octopus, identity = self._octopus(), self.identity
        assert identity is not None and self.job.environment_id is not None
        name = self.machine.name
        try:
            status, machine, detail = self._register(octopus, name, identity.thumbprint)
        except OctopusError as exc:
            raise StepFailed(str(exc)) from None
        self.job.result.octopus_id = machine["Id"]
        return status, detail

    def _register(
        self, octopus: OctopusClient, name: str, thumbprint: str
    ) -> tuple[str, Resource, str]:
        same_thumbprint = octopus.machines_with_thumbprint(thumbprint)
        others = [m for m in same_thumbprint if m["Name"].strip().lower() != name.lower()]
        if others:
            listed = ", ".join(f"{m['Name']} ({m['Id']})" for m in others)
            raise StepFailed(
                f"thumbprint {thumbprint} is already registered as {listed}: two records "
                "for one certificate would be a duplicate; deregister that one first"
            )
        wanted = self._wanted_record(thumbprint)
        named = octopus.machines_named(name)
        if not named:
            created = octopus.create_machine({"Name": name, **wanted, "IsDisabled": False})
            return "changed", created, f"created {created['Id']}"
        current = named[0]
        registered = (current.get("Endpoint") or {}).get("Thumbprint", "").upper()
        if registered != thumbprint:
            raise StepFailed(
                f"the name {name} is registered ({current['Id']}) with another thumbprint "
                f"{registered or '(none)'}, not this machine's {thumbprint}: deregister it "
                "or rename one of them"
            )
        differences = _differences(current, wanted)
        if not differences:
            return "unchanged", current, current["Id"]
        updated = octopus.update_machine({**current, **wanted})
        return "changed", updated, f"updated {updated['Id']}: {', '.join(differences)}"

    def _wanted_record(self, thumbprint: str) -> Resource:
        host = self.machine.public_hostname or self._ssh_hostname()
        return {
            "EnvironmentIds": [self.job.environment_id],
            "Roles": sorted(self.machine.roles),
            "Endpoint": {
                "CommunicationStyle": "TentaclePassive",
                "Uri": f"https://{host.lower()}:{self.machine.tentacle.port}/",
                "Thumbprint": thumbprint,
            },
        }

    def _ssh_hostname(self) -> str:
        """The address SSH resolved for the machine (ssh_config's HostName): the address the
        machine is known by, so the best default for Octopus to reach it by too."""
        return self.job.conn.host

    def step_service(self) -> tuple[str, str]:
        probe = self._probe()
        if not probe.service_enabled:
            action = "install"
        elif self.restart_needed:
            action = "restart"
        elif not probe.service_active:
            action = "start"
        else:
            return "unchanged", f"{tentacle.unit_name(self.machine.tentacle.instance)} active"
        self.remote(
            tentacle.service_command(
                self.machine.tentacle.instance, action, port=self.machine.tentacle.port
            )
        )
        done = {"install": "installed and started", "restart": "restarted", "start": "started"}
        return "changed", f"{tentacle.unit_name(self.machine.tentacle.instance)} {done[action]}"

    def step_health(self) -> tuple[str, str]:
        octopus = self._octopus()
        machine_id = self.job.result.octopus_id
        assert machine_id is not None and self.job.environment_id is not None
        try:
            check = octopus.check_health(
                machine_id, self.job.environment_id, deadline=self.deadline - 1
            )
        except TimeoutError as exc:
            raise StepFailed(f"health check did not finish: {exc}", State.TIMED_OUT) from None
        except OctopusError as exc:
            raise StepFailed(str(exc)) from None
        if check.health_status != "Healthy":
            raise StepFailed(f"Octopus says {check.health_status}: {check.summary}")
        return "ok", f"Healthy ({check.task_id})"

    # --- helpers ------------------------------------------------------------------------

    def _probe(self) -> tentacle.Probe:
        if self.probe is None:
            raise RuntimeError("the probe step must run first")
        return self.probe

    def _octopus(self) -> OctopusClient:
        if self.job.octopus is None:
            raise RuntimeError("this job has no Octopus client")
        return self.job.octopus


def _differences(current: Resource, wanted: Resource) -> list[str]:
    found = []
    if set(current.get("EnvironmentIds", [])) != set(wanted["EnvironmentIds"]):
        found.append("environment")
    if {r.lower() for r in current.get("Roles", [])} != {r.lower() for r in wanted["Roles"]}:
        found.append("roles")
    endpoint, want = current.get("Endpoint") or {}, wanted["Endpoint"]
    if endpoint.get("CommunicationStyle") != want["CommunicationStyle"]:
        found.append("communication style")
    if (endpoint.get("Uri") or "").lower() != want["Uri"].lower():
        found.append("address")
    return found


def _version(text: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (text or "0").split("-")[0].split("+")[0].split("."):
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)


def _replace_version(probe: tentacle.Probe, version: str) -> tentacle.Probe:
    return replace(probe, installed=True, version=version)


def _last_lines(text: str, exit_code: int, count: int = 3) -> str:
    # The Tentacle separates an exception from its message with a row of '='.
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and set(ln.strip()) != {"="}]
    tail = " | ".join(lines[-count:]) or "no output"
    return f"exit {exit_code}: {tail}"
