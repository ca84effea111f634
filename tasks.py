"""octoboot's Invoke tasks: `inv --list` for all of them, `inv --help TASK` for the flags.

Each task turns flags into one library call, prints, and exits with the library's code. The
fleet tasks share their flags (FLEET_HELP); the library parses and checks them
(`Selection.from_flags`, `RunOptions.from_flags`).
"""

from __future__ import annotations

import gc
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke import Collection, Exit, Task, task

if TYPE_CHECKING:
    from octoboot.sandbox.control import Sandbox

PROJECT = Path(__file__).resolve().parent
# This checkout's octoboot, even with another one installed: Invoke puts this folder first
# on sys.path only when it is not there at all, so one already there behind another
# octoboot (PYTHONPATH, an editable install's .pth) would lose.
sys.path[:] = [str(PROJECT), *(p for p in sys.path if Path(p or os.curdir).resolve() != PROJECT)]

# Each task imports its command's module when it runs: `inv exec` starts without bootstrap's
# (cryptography's x509, the identity store) or anything else it does not use. The modules
# below (Fabric, paramiko, octoboot) are objects that live as long as the process: no
# garbage collection while they load (it found none, and took 7 ms of `inv exec`'s start),
# and frozen after, so that the run's own collections do not go over them again.
gc.disable()
from octoboot.errors import OctobootError  # noqa: E402
from octoboot.flags import number  # noqa: E402
from octoboot.interrupts import Terminated  # noqa: E402
from octoboot.inventory import STATUS_DEADLINE, SshOptions  # noqa: E402
from octoboot.report import EXIT_INTERRUPTED, EXIT_TERMINATED, RunReport  # noqa: E402
from octoboot.run import RunOptions, Selection, report_format  # noqa: E402
from octoboot.sandbox.standin_settings import (  # noqa: E402
    DEFAULT_HOSTS,
    DEFAULT_INSTALL_SECONDS,
    StandInSettings,
)
from octoboot.settings import DOTENV, MACHINES_DIR, Settings, load_settings  # noqa: E402

gc.freeze()
gc.enable()


def the_sandbox() -> Sandbox:
    """The project's sandbox; OCTOBOOT_SANDBOX_DIR lets the sandbox tests drive the sandbox
    tasks on a sandbox of their own. Its module is imported here, not at every `inv`."""
    from octoboot.sandbox.control import Sandbox

    return Sandbox(Path(os.environ.get("OCTOBOOT_SANDBOX_DIR") or PROJECT / ".sandbox"))


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


def settings() -> Settings:
    # Relative paths (machines/, .octoboot/) are the project's, wherever `inv` was run from.
    os.chdir(PROJECT)
    return load_settings(dotenv_path=PROJECT / DOTENV)


def print_report(report: RunReport, output_format: str) -> None:
    print(report.to_json() if output_format == "json" else report.text)
    if report.exit_code:
        raise Exit(code=report.exit_code)


# The flags every fleet task takes, in this order (Invoke gives out the short flags, -e, -h,
# -l, ..., in the order of the signature), and the one help text of each. `--dry-run` is not
# on status and exec, which change nothing or are the change. A unit test checks each
# FleetTask against this table.
FLEET_HELP = {
    "env": "the environment: machines/<ENV>.toml",
    "host": "only this machine (repeatable); found in whichever environment lists it",
    "limit": "only machines whose name matches this glob (repeatable), e.g. 'web*'",
    "retry_failed": "only the machines that failed or were unreachable last time (--env)",
    "parallel": "run the machines concurrently (default: one after another; status: "
    "concurrently, --no-parallel for one after another)",
    "workers": "with --parallel: at most this many machines at once (default: as many as the "
    "controller can hold, OCTOBOOT_WORKERS)",
    "batch": "run the machines N (or P%) at a time, a batch after the previous one ended",
    "max_fail": "stop starting machines once more than N (or P% of the batch) failed or were "
    "unreachable; the rest are skipped",
    "format": "table (default) or json (only JSON on stdout, for CI)",
    "verbose": "with --parallel: also print each machine's steps as they end",
    "deadline": "seconds each machine may take in all (default: the inventory's, "
    f"{SshOptions().deadline:g}; status: {STATUS_DEADLINE:g} at most)",
    "connect_timeout": "seconds to wait for SSH to answer (default: the inventory's)",
    "accept_new_host_key": "accept a changed SSH host key for the machines named by "
    "--host/--limit (rebuilt ones)",
    "dry_run": "probe hosts and Octopus read-only and say what would be done",
}


class FleetTask(Task):
    """A task over the selected machines: the FLEET_HELP flags it takes get their help from
    there, and --host and --limit repeat."""

    def __init__(
        self,
        body: Callable,
        *,
        help: dict[str, str] | None = None,
        iterable: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        flags = inspect.signature(body).parameters
        shared = {flag: text for flag, text in FLEET_HELP.items() if flag in flags}
        super().__init__(
            body, help={**shared, **(help or {})}, iterable=["host", "limit", *iterable], **kwargs
        )


# RunOptions.from_flags' flags, as each fleet task has them (status and exec: no dry_run).
_OPTION_FLAGS = (
    "parallel", "workers", "batch", "max_fail", "verbose", "deadline", "connect_timeout",
    "accept_new_host_key", "dry_run",
)  # fmt: skip


def run_fleet(run: Callable[..., RunReport], flags: dict[str, Any], **own: Any) -> None:
    """A fleet task's one library call: its shared flags (the task's locals()) as a
    Selection and RunOptions, its own flags as they are; then the report and exit code."""
    with user_errors():
        output = report_format(flags["format"])
        report = run(
            Selection.from_flags(
                flags["env"], flags["host"], flags["limit"], flags["retry_failed"]
            ),
            RunOptions.from_flags(**{name: flags[name] for name in _OPTION_FLAGS if name in flags}),
            settings(),
            **own,
        )
    # The run has ended (connections and logs closed, report written): what it made lives
    # until the process exits, and the interpreter's last collections need not go over it
    # (3-5 ms of `inv exec`'s exit at 30 machines).
    gc.freeze()
    print_report(report, output)


REGISTRATION_HELP = {
    "take_over": "a record with this machine's name but another certificate is given this "
    "machine's certificate (instead of failing)",
    "renamed_from": "OLD: the machine (one, with --host NEW) was called OLD; its identity and "
    "Octopus record (same Id) take the new name",
}


@task(klass=FleetTask, help=REGISTRATION_HELP)
def bootstrap(
    c, env=None, host=None, limit=None, retry_failed=False, parallel=False, workers=None,
    batch=None, max_fail=None, format="table", verbose=False, deadline=None,
    connect_timeout=None, accept_new_host_key=False, dry_run=False, take_over=False,
    renamed_from=None,
):  # fmt: skip
    """Make machines ready Octopus targets: install, identity, register, start, health."""
    import octoboot.bootstrap

    run_fleet(
        octoboot.bootstrap.bootstrap, locals(), take_over=take_over, renamed_from=renamed_from
    )


@task(klass=FleetTask)
def install(
    c, env=None, host=None, limit=None, retry_failed=False, parallel=False, workers=None,
    batch=None, max_fail=None, format="table", verbose=False, deadline=None,
    connect_timeout=None, accept_new_host_key=False, dry_run=False,
):  # fmt: skip
    """Install or upgrade the Tentacle on machines, and nothing else."""
    import octoboot.bootstrap

    run_fleet(octoboot.bootstrap.install, locals())


@task(klass=FleetTask, help=REGISTRATION_HELP)
def register(
    c, env=None, host=None, limit=None, retry_failed=False, parallel=False, workers=None,
    batch=None, max_fail=None, format="table", verbose=False, deadline=None,
    connect_timeout=None, accept_new_host_key=False, dry_run=False, take_over=False,
    renamed_from=None,
):  # fmt: skip
    """Identity, configure, register with Octopus, start and health-check installed machines."""
    import octoboot.bootstrap

    run_fleet(octoboot.bootstrap.register, locals(), take_over=take_over, renamed_from=renamed_from)


@task(
    klass=FleetTask,
    help={"health": "ask Octopus for a fresh health check first (default: the last known "
          "health status)"},
)  # fmt: skip
def status(
    c, env=None, host=None, limit=None, retry_failed=False, parallel=True, workers=None,
    batch=None, max_fail=None, format="table", verbose=False, deadline=None,
    connect_timeout=None, accept_new_host_key=False, health=False,
):  # fmt: skip
    """Show what hosts, the identity store and Octopus say per machine, and any drift (read-only)."""  # noqa: E501 (one line: inv --list shows the first)
    import octoboot.status

    run_fleet(octoboot.status.status, locals(), health=health)


@task(
    klass=FleetTask,
    help={
        "uninstall": "also stop and remove the Tentacle service and instance on the host",
        "forget_identity": "also delete the machine's certificate from the identity store (it "
        "would come back with a new thumbprint)",
        "record": "NAME: the Octopus record of this name, which no inventory lists any more "
        "(repeatable; with --env, whose Octopus has it)",
    },
    iterable=["record"],
)
def deregister(
    c, env=None, host=None, limit=None, retry_failed=False, parallel=False, workers=None,
    batch=None, max_fail=None, format="table", verbose=False, deadline=None,
    connect_timeout=None, accept_new_host_key=False, dry_run=False, uninstall=False,
    forget_identity=False, record=None,
):  # fmt: skip
    """Remove machines from Octopus (and with --uninstall, their Tentacle service and instance)."""
    import octoboot.deregister

    run_fleet(
        octoboot.deregister.deregister,
        locals(),
        uninstall=uninstall,
        forget_identity=forget_identity,
        records=tuple(record or ()),
    )


@task(
    klass=FleetTask,
    help={
        "older_than": "only records Octopus has not changed for this long, e.g. 7d, 12h, 30m",
        "only_unavailable": "only records whose health is Unavailable",
    },
)
def prune(
    c, env=None, host=None, limit=None, retry_failed=False, parallel=False, workers=None,
    batch=None, max_fail=None, format="table", verbose=False, deadline=None,
    connect_timeout=None, accept_new_host_key=False, dry_run=False, older_than=None,
    only_unavailable=False,
):  # fmt: skip
    """Remove the records of an environment (or a workers file's pools) no inventory lists."""
    import octoboot.prune

    run_fleet(
        octoboot.prune.prune, locals(), older_than=older_than, only_unavailable=only_unavailable
    )


@task(klass=FleetTask, help={"command": "the shell command to run (or give it after --)"})
def exec_(
    c, env=None, host=None, limit=None, retry_failed=False, parallel=False, workers=None,
    batch=None, max_fail=None, format="table", verbose=False, deadline=None,
    connect_timeout=None, accept_new_host_key=False, command=None,
):  # fmt: skip
    """Run one command (as root) on every selected machine: inv exec --env qa -- uptime"""
    # `inv exec --env qa -- systemctl status Tentacle`: Invoke parses no task flags after
    # `--` and does not pass that remainder to tasks, so it is read from argv.
    if command is None and "--" in sys.argv:
        # Words joined with spaces, as ssh does: `-- 'df -h | tail -1'` is a pipeline.
        command = " ".join(sys.argv[sys.argv.index("--") + 1 :])
    import octoboot.exec

    run_fleet(octoboot.exec.exec_command, locals(), command=command or "")


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
        "hosts": f"how many hosts (sbx01..sbxNN) to start (default {DEFAULT_HOSTS})",
        "install_seconds": "how long a Tentacle install takes on each host (default "
        f"{DEFAULT_INSTALL_SECONDS:g})",
        "ssh_only": "how many of the hosts (the last ones) Octopus cannot reach, only SSH can "
        "(as behind NAT): their inventory entries poll (default 0)",
        "inventory_command": "machines/sandbox.toml takes its machines from a command that "
        "lists the sandbox's hosts ([source]) instead of listing them",
        **STANDIN_FLAGS,
    }
)
def sandbox_up(
    c, hosts=str(DEFAULT_HOSTS), install_seconds=str(DEFAULT_INSTALL_SECONDS), ssh_only="0",
    task_cap=None, health_seconds=None, health_seconds_per_machine=None, rate_limit=None,
    rate_burst=None, tentacle_startup_seconds=None, inventory_command=False,
):  # fmt: skip
    """Start a local fleet of sshd hosts plus Octopus and package stand-ins (or change how
    real the stand-ins are, if it is up)."""
    # Every number flag defaults to text (or None): Invoke would convert an int or float
    # default's flag itself, with a traceback for a wrong one.
    flags = dict(locals())
    with user_errors():
        # Parsed before anything starts: a wrong number costs nothing. StandInSettings and
        # Sandbox.up refuse what is out of range.
        given = {
            name: number(flags[name], "--" + name.replace("_", "-"), type(getattr(_REAL, name)))
            for name in STANDIN_FLAGS
            if flags[name] is not None
        }
        count = number(hosts, "--hosts", int)
        seconds = number(install_seconds, "--install-seconds", float, at_least=0)
        nat = number(ssh_only, "--ssh-only", int)
        box = the_sandbox()
        if box.is_up():
            print(f"sandbox already up in {box.root}")
            if given:
                box.change_settings(**given)
        else:
            settings = StandInSettings(**given)
            box.up(count, install_seconds=seconds, settings=settings, ssh_only=nat)
        written = box.write_target_files(
            PROJECT / MACHINES_DIR, PROJECT / DOTENV, from_command=inventory_command
        )
        print(box.describe())
        print("wrote " + ", ".join(str(p.relative_to(PROJECT)) for p in written))


@task
def sandbox_down(c):
    """Stop the sandbox and remove everything it made (safe to repeat)."""
    with user_errors():
        the_sandbox().down()
    print("sandbox down")


@task
def sandbox_show(c):
    """List the sandbox's hosts (address, running?, faults) and its endpoints."""
    with user_errors():
        print(the_sandbox().describe())


@task(help={"host": "the host to power off (e.g. sbx03)"})
def sandbox_stop(c, host):
    """Power a host off: it refuses connections, its processes end, its disk stays."""
    with user_errors():
        the_sandbox().stop_host(host)
    print(f"{host} stopped")


@task(help={"host": "the host to power on"})
def sandbox_start(c, host):
    """Power a host on again; services it had enabled start as at boot."""
    with user_errors():
        the_sandbox().start_host(host)
    print(f"{host} started")


@task(help={"host": "the host to destroy and recreate"})
def sandbox_rebuild(c, host):
    """Destroy and recreate a host: empty disk, new SSH host key, no old processes."""
    with user_errors():
        the_sandbox().rebuild_host(host)
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
        faults = the_sandbox().set_faults(
            host,
            install_fails=switch(install_fails, no_install_fails, "install-fails"),
            install_seconds=number(install_seconds, "--install-seconds", float, at_least=0),
            hang=[] if no_hang else (hang or None),
            untrusting=switch(untrusting, no_untrusting, "untrusting"),
            refuse_login=switch(refuse_login, no_refuse_login, "refuse-login"),
            blackhole=switch(blackhole, no_blackhole, "blackhole"),
        )
    print(f"{host}: {faults}")


def switch(on: bool, off: bool, flag: str) -> bool | None:
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

ns = Collection(bootstrap, install, register, deregister, status, prune, sandbox)
ns.add_task(exec_, name="exec")
