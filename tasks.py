"""octoboot's Invoke tasks: `inv --list` for all of them, `inv --help TASK` for the flags.

Each task turns flags into one library call, prints, and exits with the library's code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Collection, Exit, task

from octoboot.errors import OctobootError
from octoboot.sandbox.control import Sandbox

PROJECT = Path(__file__).resolve().parent
SANDBOX = Sandbox(PROJECT / ".sandbox")


@contextmanager
def user_errors() -> Iterator[None]:
    """Expected errors become one line on stderr and the error's exit code."""
    try:
        yield
    except OctobootError as exc:
        raise Exit(f"octoboot: {exc}", code=exc.exit_code) from None


# --- sandbox ---------------------------------------------------------------------------


@task(
    help={
        "hosts": "how many hosts (sbx01..sbxNN) to start (default 5)",
        "install_seconds": "how long a Tentacle install takes on each host (default 3)",
    }
)
def sandbox_up(c, hosts=5, install_seconds=3.0):
    """Start a local fleet of sshd hosts plus Octopus and package stand-ins."""
    with user_errors():
        if SANDBOX.is_up():
            print(f"sandbox already up in {SANDBOX.root}")
        else:
            SANDBOX.up(int(hosts), install_seconds=float(install_seconds))
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
    },
    iterable=["hang"],
)
def sandbox_fault(
    c, host, install_fails=None, install_seconds=None, hang=None, no_hang=False, blackhole=None
):
    """Give a host faults: failing or slow install, hanging commands, no answer at all."""
    with user_errors():
        faults = SANDBOX.set_faults(
            host,
            install_fails=install_fails,
            install_seconds=None if install_seconds is None else float(install_seconds),
            hang=[] if no_hang else (hang or None),
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

ns = Collection(sandbox)
