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
from octoboot.interrupts import Terminated  # noqa: E402
from octoboot.prune import prune as prune_records  # noqa: E402
from octoboot.report import EXIT_INTERRUPTED, EXIT_TERMINATED, RunReport  # noqa: E402
from octoboot.sandbox.control import Sandbox  # noqa: E402
from octoboot.sandbox.standin_settings import StandInSettings  # noqa: E402
from octoboot.settings import load_settings  # noqa: E402
from octoboot.status import Status  # noqa: E402
from octoboot.status import status as machine_status  # noqa: E402

# OCTOBOOT_SANDBOX_DIR lets the sandbox tests drive the sandbox tasks on a sandbox of their own.
SANDBOX = Sandbox(Path(os.environ.get("OCTOBOOT_SANDBOX_DIR") or PROJECT / ".sandbox"))


@contextmanager
def user_errors() -> Iterator[None]:
    """Expected errors become one line on stderr and the error's exit code."""
    try:
        yield
    except OctobootError as exc:
        raise Exit(f"octoboot: {exc}", code=exc.exit_code) from None
    except Terminated:
        raise Exit("octoboot: terminated (SIGTERM)", code=EXIT_TERMINATED) from None
    except KeyboardInterrupt:
        raise Exit("octoboot: interrupted", code=EXIT_INTERRUPTED) from None


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
    "workers": (None, "with --parallel: at most this many machines at once (default: as many "
                "as the controller can hold, OCTOBOOT_WORKERS)"),
    "batch": (None, "run the machines N (or P%) at a time, a batch after the previous one ended"),
    "max_fail": (None, "stop starting machines once more than N (or P% of the batch) failed or "
                 "were unreachable; the rest are skipped"),
    "format": ("table", "table (default) or json (only JSON on stdout, for CI)"),
    "verbose": (False, "with --parallel: also print each machine's steps as they end"),
    "deadline": (None, "seconds each machine may take in all (default: the inventory's, 900; "
                 f"status: {Status.DEADLINE:g} at most)"),
    "connect_timeout": (None, "seconds to wait for SSH to answer (default: the inventory's)"),
    "accept_new_host_key": (False, "accept a changed SSH host key for the machines named by "
                            "--host/--limit (rebuilt ones)"),
    "dry_run": (False, "probe hosts and Octopus read-only and say what would be done"),
}  # fmt: skip


def fleet_task(name, doc, call, *, extra=None, dry_run=True, parallel=False, iterable=()):
    """A task that runs `call(selection, options, settings, **extra flags)` over the selected
    machines and prints its report. Every fleet task shares FLEET_FLAGS; `extra` adds its own
    (name: (default, help)), `iterable` names those that repeat; parallel=True makes
    --parallel the default (--no-parallel)."""
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
                    batch=values["batch"],
                    max_fail=values["max_fail"],
                ),
                settings(),
                **{k: given.get(k, default) for k, (default, _) in own.items()},
            )
        print_report(report, values["format"])

    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    run.__signature__ = inspect.Signature(parameters)
    helps = {k: h for k, (_, h) in {**common, **own}.items()}
    return task(run, help=helps, iterable=["host", "limit", *iterable])


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


REGISTRATION = {
    "take_over": (False, "a record with this machine's name but another certificate is given "
                  "this machine's certificate (instead of failing)"),
    "renamed_from": (None, "OLD: the machine (one, with --host NEW) was called OLD; its "
                     "identity and Octopus record (same Id) take the new name"),
}  # fmt: skip

bootstrap = fleet_task(
    "bootstrap",
    "Make machines ready Octopus targets: install, identity, register, start, health.",
    jobs.bootstrap,
    extra=REGISTRATION,
)
install = fleet_task(
    "install", "Install or upgrade the Tentacle on machines, and nothing else.", jobs.install
)
register = fleet_task(
    "register",
    "Identity, configure, register with Octopus, start and health-check installed machines.",
    jobs.register,
    extra=REGISTRATION,
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


def deregister_machines(selection, options, settings, *, uninstall, forget_identity, record):
    return jobs.deregister(
        selection, options, settings, uninstall=uninstall, forget_identity=forget_identity,
        records=tuple(record or ()),
    )  # fmt: skip


deregister = fleet_task(
    "deregister",
    "Remove machines from Octopus (and with --uninstall, their Tentacle service and instance).",
    deregister_machines,
    extra={
        "uninstall": (False, "also stop and remove the Tentacle service and instance on the host"),
        "forget_identity": (False, "also delete the machine's certificate from the identity "
                            "store (it would come back with a new thumbprint)"),
        "record": (None, "NAME: the Octopus record of this name, which no inventory lists any "
                   "more (repeatable; with --env, whose Octopus has it)"),
    },
    iterable=["record"],
)  # fmt: skip


prune_ = fleet_task(
    "prune",
    "Remove the records of an environment (or a workers file's pools) that no inventory lists, "
    "and duplicate records.",
    prune_records,
    extra={
        "older_than": (None, "only records Octopus has not changed for this long, e.g. 7d, "
                       "12h, 30m"),
        "only_unavailable": (False, "only records whose health is Unavailable"),
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


_REAL = StandInSettings()
STANDIN_FLAGS = {
    "task_cap": f"tasks Octopus runs at once, the rest wait Queued (default {_REAL.task_cap})",
    "health_seconds": f"seconds one Health task takes (default {_REAL.health_seconds:g})",
    "health_seconds_per_machine": "and more per machine it covers beyond the first (default "
    f"{_REAL.health_seconds_per_machine:g})",
    "rate_limit": "API requests per minute per API key, answered 429 + Retry-After beyond it; "
    f"0: no limit (default {_REAL.rate_limit})",
    "rate_burst": f"requests an API key may make at once (default {_REAL.rate_burst})",
    "tentacle_startup_seconds": "seconds every Tentacle command takes to start (default "
    f"{_REAL.tentacle_startup_seconds:g})",
}


@task(
    help={
        "hosts": "how many hosts (sbx01..sbxNN) to start (default 5)",
        "install_seconds": "how long a Tentacle install takes on each host (default 3)",
        "ssh_only": "how many of the hosts (the last ones) Octopus cannot reach, only SSH can "
        "(as behind NAT): their inventory entries poll (default 0)",
        "inventory_command": "machines/sandbox.toml takes its machines from a command that "
        "lists the sandbox's hosts ([source]) instead of listing them",
        **STANDIN_FLAGS,
    }
)
def sandbox_up(
    c, hosts=5, install_seconds=3.0, ssh_only=0, task_cap=None, health_seconds=None,
    health_seconds_per_machine=None, rate_limit=None, rate_burst=None,
    tentacle_startup_seconds=None, inventory_command=False,
):  # fmt: skip
    """Start a local fleet of sshd hosts plus Octopus and package stand-ins (or change how
    real the stand-ins are, if it is up)."""
    flags = dict(locals())
    given = {
        name: setting(flags[name], name, type(getattr(_REAL, name)))
        for name in STANDIN_FLAGS
        if flags[name] is not None
    }
    with user_errors():
        if SANDBOX.is_up():
            print(f"sandbox already up in {SANDBOX.root}")
            if given:
                SANDBOX.change_settings(**given)
        else:
            settings = StandInSettings(**given)
            SANDBOX.up(
                int(hosts),
                install_seconds=float(install_seconds),
                settings=settings,
                ssh_only=int(ssh_only),
            )
        written = SANDBOX.write_target_files(
            PROJECT / "machines", PROJECT / ".env", from_command=inventory_command
        )
        print(SANDBOX.describe())
        print("wrote " + ", ".join(str(p.relative_to(PROJECT)) for p in written))


def setting(value, name, kind):
    """A stand-in setting from its flag (StandInSettings refuses what is out of range)."""
    try:
        parsed = kind(value)
    except ValueError:
        flag = "--" + name.replace("_", "-")
        raise Exit(f"octoboot: {flag} takes a number, not {value!r}", 2) from None
    if not math.isfinite(parsed):
        raise Exit(f"octoboot: --{name.replace('_', '-')} takes a finite number", 2)
    return parsed


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
        "install_fails": "the Tentacle install fails",
        "no_install_fails": "the Tentacle install succeeds again",
        "install_seconds": "how long the install takes, in seconds",
        "hang": "a Tentacle command that hangs (repeatable; '*' for all)",
        "no_hang": "no command hangs any more",
        "blackhole": "drop every packet from the controller",
        "no_blackhole": "answer the controller again",
        "untrusting": "the Tentacle service trusts no Octopus Server",
        "no_untrusting": "the Tentacle service trusts its configured servers again",
        "refuse_login": "sshd refuses the client's key",
        "no_refuse_login": "sshd accepts the client's key again",
    },
    iterable=["hang"],
    auto_shortflags=False,  # with a --no- flag per fault, Invoke would hand out "-" as one
)
def sandbox_fault(
    c, host, install_fails=False, no_install_fails=False, install_seconds=None, hang=None,
    no_hang=False, blackhole=False, no_blackhole=False, untrusting=False, no_untrusting=False,
    refuse_login=False, no_refuse_login=False,
):  # fmt: skip
    """Give a host faults: failing or slow install, hanging commands, no answer at all."""
    with user_errors():
        faults = SANDBOX.set_faults(
            host,
            install_fails=switch(install_fails, no_install_fails, "install-fails"),
            install_seconds=None if install_seconds is None else float(install_seconds),
            hang=[] if no_hang else (hang or None),
            untrusting=switch(untrusting, no_untrusting, "untrusting"),
            refuse_login=switch(refuse_login, no_refuse_login, "refuse-login"),
            blackhole=switch(blackhole, no_blackhole, "blackhole"),
        )
    print(f"{host}: {faults}")


def switch(on, off, flag):
    """A fault turned on (--FLAG), off (--no-FLAG) or left as it is (neither): True, False,
    None. Invoke makes `--no-FLAG` only for flags that default to True, so each is a flag."""
    if on and off:
        raise Exit(f"octoboot: give --{flag} or --no-{flag}, not both", 2)
    return True if on else False if off else None


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
ns.add_task(prune_, name="prune")
