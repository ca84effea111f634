"""octoboot's Invoke tasks: `inv --list` for all of them, `inv --help TASK` for the flags.

Each task turns flags into one library call, prints, and exits with the library's code.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Collection, Exit, task

PROJECT = Path(__file__).resolve().parent
# This checkout's octoboot, even with another one installed: Invoke puts this folder first
# on sys.path only when it is not there at all, so one already there behind another
# octoboot (PYTHONPATH, an editable install's .pth) would lose.
sys.path[:] = [str(PROJECT), *(p for p in sys.path if Path(p or os.curdir).resolve() != PROJECT)]

from octoboot import jobs  # noqa: E402
from octoboot.errors import OctobootError  # noqa: E402
from octoboot.report import RunReport  # noqa: E402
from octoboot.sandbox.control import Sandbox  # noqa: E402
from octoboot.settings import load_settings  # noqa: E402
from octoboot.status import status as machine_status  # noqa: E402

SANDBOX = Sandbox(PROJECT / ".sandbox")


@contextmanager
def user_errors() -> Iterator[None]:
    """Expected errors become one line on stderr and the error's exit code."""
    try:
        yield
    except OctobootError as exc:
        raise Exit(f"octoboot: {exc}", code=exc.exit_code) from None
    except KeyboardInterrupt:
        raise Exit("octoboot: interrupted", code=130) from None


def settings():
    # Relative paths (machines/, .octoboot/) are the project's, wherever `inv` was run from.
    os.chdir(PROJECT)
    return load_settings(dotenv_path=PROJECT / ".env")


def print_report(report: RunReport, output_format: str) -> None:
    print(report.to_json() if output_format == "json" else report.table())
    if report.exit_code:
        raise Exit(code=report.exit_code)


FLEET_FLAGS = {
    # name: (default, help)
    "env": (None, "the environment: machines/<ENV>.toml"),
    "host": (None, "only this machine (repeatable); found in whichever environment lists it"),
    "limit": (None, "only machines whose name matches this glob (repeatable), e.g. 'web*'"),
    "retry_failed": (False, "only the machines that failed or were unreachable last time (--env)"),
    "parallel": (False, "run the machines concurrently (default: one after another)"),
    "workers": (None, "with --parallel: at most this many machines at once (default 32)"),
    "format": ("table", "table (default) or json (only JSON on stdout, for CI)"),
    "verbose": (False, "with --parallel: also print each machine's steps as they end"),
    "deadline": (None, "seconds each machine may take in all (default: the inventory's, 900)"),
    "connect_timeout": (None, "seconds to wait for SSH to answer (default: the inventory's)"),
    "accept_new_host_key": (False, "accept a changed SSH host key for the machines named by "
                            "--host/--limit (rebuilt ones)"),
    "dry_run": (False, "probe hosts and Octopus read-only and say what would be done"),
}  # fmt: skip


def fleet_task(name, doc, call, *, extra=None, dry_run=True, parallel=False):
    """A task that runs `call(selection, options, settings, **extra flags)` over the selected
    machines and prints its report. Every fleet task shares FLEET_FLAGS; `extra` adds its own
    (name: (default, help)); parallel=True makes --parallel the default (--no-parallel)."""
    common = dict(FLEET_FLAGS)
    if not dry_run:
        common.pop("dry_run")
    if parallel:
        common["parallel"] = (True, "run the machines concurrently (default; --no-parallel: "
                              "one after another)")  # fmt: skip
    own = extra or {}
    parameters = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [
        inspect.Parameter(flag, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        for flag, (default, _) in {**common, **own}.items()
    ]

    def run(c, **given):
        values = {k: given.get(k, default) for k, (default, _) in common.items()}
        if values["workers"] is not None and not values["parallel"]:
            raise Exit("octoboot: --workers applies only with --parallel", 2)
        if values["format"] not in ("table", "json"):
            raise Exit(f"octoboot: --format must be table or json, not {values['format']!r}", 2)
        with user_errors():
            report = call(
                jobs.Selection(
                    env=values["env"],
                    hosts=tuple(values["host"] or ()),
                    limits=tuple(values["limit"] or ()),
                    retry_failed=values["retry_failed"],
                ),
                jobs.RunOptions(
                    parallel=values["parallel"],
                    workers=number(values["workers"], "--workers", int),
                    verbose=values["verbose"],
                    deadline=number(values["deadline"], "--deadline"),
                    connect_timeout=number(values["connect_timeout"], "--connect-timeout"),
                    accept_new_host_key=values["accept_new_host_key"],
                    dry_run=values.get("dry_run", False),
                ),
                settings(),
                **{k: given.get(k, default) for k, (default, _) in own.items()},
            )
        print_report(report, values["format"])

    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    run.__signature__ = inspect.Signature(parameters)
    helps = {k: h for k, (_, h) in {**common, **own}.items()}
    return task(run, help=helps, iterable=["host", "limit"])


def number(value, flag, kind=float):
    """A positive number from a flag, or None when the flag was not given."""
    if value is None:
        return None
    try:
        parsed = kind(value)
    except ValueError:
        raise Exit(f"octoboot: {flag} takes a number, not {value!r}", 2) from None
    if not math.isfinite(parsed):
        raise Exit(f"octoboot: {flag} takes a finite number, not {value!r}", 2)
    if parsed <= 0:
        raise Exit(f"octoboot: {flag} must be more than 0, not {value}", 2)
    return parsed


TAKE_OVER = {
    "take_over": (False, "a record with this machine's name but another certificate is given "
                  "this machine's certificate (instead of failing)"),
}  # fmt: skip

bootstrap = fleet_task(
    "bootstrap",
    "Make machines ready Octopus targets: install, identity, register, start, health.",
    jobs.bootstrap,
    extra=TAKE_OVER,
)
install = fleet_task(
    "install", "Install or upgrade the Tentacle on machines, and nothing else.", jobs.install
)
register = fleet_task(
    "register",
    "Identity, configure, register with Octopus, start and health-check installed machines.",
    jobs.register,
    extra=TAKE_OVER,
)
status = fleet_task(
    "status",
    "Show what hosts, the identity store and Octopus say per machine, and any drift (read-only).",
    machine_status,
    extra={"health": (False, "ask Octopus for a fresh health check first (default: the last "
                      "known health status)")},
    dry_run=False,
    parallel=True,
)  # fmt: skip
deregister = fleet_task(
    "deregister",
    "Remove machines from Octopus (and with --uninstall, their Tentacle service and instance).",
    jobs.deregister,
    extra={
        "uninstall": (False, "also stop and remove the Tentacle service and instance on the host"),
        "forget_identity": (False, "also delete the machine's certificate from the identity "
                            "store (it would come back with a new thumbprint)"),
    },
)  # fmt: skip


def exec_command(selection, options, settings, *, command):
    # `inv exec --env qa -- systemctl status Tentacle`: Invoke parses no task flags after
    # `--` and does not pass that remainder to tasks, so it is read from argv.
    if command is None and "--" in sys.argv:
        # Words joined with spaces, as ssh does: `-- 'df -h | tail -1'` is a pipeline.
        command = " ".join(sys.argv[sys.argv.index("--") + 1 :])
    return jobs.exec_command(selection, options, settings, command=command or "")


exec_ = fleet_task(
    "exec",
    "Run one command (as root) on every selected machine: inv exec --env qa -- uptime",
    exec_command,
    extra={"command": (None, "the shell command to run (or give it after --)")},
    dry_run=False,
)


# --- sandbox ---------------------------------------------------------------------------


@task(
    help={
        "hosts": "how many hosts (sbx01..sbxNN) to start (default 5)",
        "install_seconds": "how long a Tentacle install takes on each host (default 3)",
        "ssh_only": "how many of the hosts (the last ones) Octopus cannot reach, only SSH can "
        "(as behind NAT): their inventory entries poll (default 0)",
    }
)
def sandbox_up(c, hosts=5, install_seconds=3.0, ssh_only=0):
    """Start a local fleet of sshd hosts plus Octopus and package stand-ins."""
    with user_errors():
        if SANDBOX.is_up():
            print(f"sandbox already up in {SANDBOX.root}")
        else:
            SANDBOX.up(int(hosts), install_seconds=float(install_seconds), ssh_only=int(ssh_only))
        written = SANDBOX.write_target_files(PROJECT / "machines", PROJECT / ".env")
        print(SANDBOX.describe())
        print("wrote " + ", ".join(str(p.relative_to(PROJECT)) for p in written))


@task
def sandbox_down(c):
    """Stop the sandbox and remove everything it made (safe to repeat)."""
    with user_errors():
        SANDBOX.down()
    print("sandbox down")


@task
def sandbox_show(c):
    """List the sandbox's hosts (address, running?, faults) and its endpoints."""
    with user_errors():
        print(SANDBOX.describe())


@task(help={"host": "the host to power off (e.g. sbx03)"})
def sandbox_stop(c, host):
    """Power a host off: it refuses connections, its processes end, its disk stays."""
    with user_errors():
        SANDBOX.stop_host(host)
    print(f"{host} stopped")


@task(help={"host": "the host to power on"})
def sandbox_start(c, host):
    """Power a host on again; services it had enabled start as at boot."""
    with user_errors():
        SANDBOX.start_host(host)
    print(f"{host} started")


@task(help={"host": "the host to destroy and recreate"})
def sandbox_rebuild(c, host):
    """Destroy and recreate a host: empty disk, new SSH host key, no old processes."""
    with user_errors():
        SANDBOX.rebuild_host(host)
    print(f"{host} rebuilt")


@task(
    help={
        "host": "the host to change",
        "install_fails": "the Tentacle install fails (--no-install-fails to clear)",
        "install_seconds": "how long the install takes, in seconds",
        "hang": "a Tentacle command that hangs (repeatable; '*' for all)",
        "no_hang": "no command hangs any more",
        "blackhole": "drop every packet from the controller (--no-blackhole to clear)",
        "untrusting": "the Tentacle service trusts no Octopus Server (--no-untrusting to clear)",
        "refuse_login": "sshd refuses the client's key (--no-refuse-login to clear)",
    },
    iterable=["hang"],
)
def sandbox_fault(
    c, host, install_fails=None, install_seconds=None, hang=None, no_hang=False, blackhole=None,
    untrusting=None, refuse_login=None,
):  # fmt: skip
    """Give a host faults: failing or slow install, hanging commands, no answer at all."""
    with user_errors():
        faults = SANDBOX.set_faults(
            host,
            install_fails=install_fails,
            install_seconds=None if install_seconds is None else float(install_seconds),
            hang=[] if no_hang else (hang or None),
            untrusting=untrusting,
            refuse_login=refuse_login,
        )
        if blackhole is not None:
            SANDBOX.set_blackhole(host, blackhole)
    print(f"{host}: {faults}" + ("" if blackhole is None else f", blackhole={blackhole}"))


sandbox = Collection("sandbox")
for _name, _task in {
    "up": sandbox_up,
    "down": sandbox_down,
    "show": sandbox_show,
    "stop": sandbox_stop,
    "start": sandbox_start,
    "rebuild": sandbox_rebuild,
    "fault": sandbox_fault,
}.items():
    sandbox.add_task(_task, name=_name)

ns = Collection(bootstrap, install, register, deregister, status, sandbox)
ns.add_task(exec_, name="exec")
