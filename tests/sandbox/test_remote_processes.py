"""Remote work ends with its session, on real sshd hosts: a command and everything it started
end when it returns, at its deadline, when the connection drops (the controller killed with
SIGKILL, the transport closed), and when the run is stopped (Ctrl-C, SIGTERM); the private
key that crosses a host for the import never outlives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from octoboot import tentacle
from octoboot.bootstrap import bootstrap
from octoboot.exec import exec_command
from octoboot.report import State
from octoboot.run import Selection
from octoboot.status import status
from tests.sandbox.conftest import connect, run
from tests.sandbox.project import REPO, quiet

GONE_WITHIN = 15  # seconds for the host to end what a session left; deadlines are far longer
LONG_DEADLINE = 300


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(4, install_seconds=0.5)


@pytest.fixture(scope="module")
def host_shell(sandbox):
    """Run a shell command on a host over a connection of the test's own."""
    opened = {}

    def shell(name: str, command: str):
        if name not in opened:
            opened[name] = connect(sandbox, name)
        return run(opened[name], command)

    yield shell
    for conn in opened.values():
        conn.close()


def running(host_shell, name: str, pattern: str) -> list[str]:
    """Command lines of the host's processes matching pattern (a regex that does not match
    itself: write one character as a class, e.g. 'sleep 60[1]')."""
    return host_shell(name, f"pgrep -af {pattern!r}").stdout.splitlines()


def wait_until(what: str, check, within: float = GONE_WITHIN):
    deadline = time.monotonic() + within
    while not (value := check()):
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.2)
    return value


def wait_gone(host_shell, name: str, pattern: str, within: float = GONE_WITHIN) -> None:
    left: list[str] = []

    def gone() -> bool:
        left[:] = running(host_shell, name, pattern)
        return not left

    try:
        wait_until(f"{pattern} ended on {name}", gone, within)
    except AssertionError:
        raise AssertionError(f"still running on {name} after {within} s: {left}") from None


def inv_env(settings) -> dict[str, str]:
    return {
        **os.environ,
        "OCTOBOOT_STATE_DIR": str(settings.state_dir),
        "OCTOBOOT_MACHINES_DIR": str(settings.machines_dir),
        "OCTOBOOT_PFX_PASSWORD": settings.pfx_password().reveal(),
    }


def start_inv(settings, *args: str) -> subprocess.Popen:
    # SIGINT as a terminal's Ctrl-C finds it, even when pytest runs as a background job
    # (`cmd &`), whose children start with SIGINT ignored.
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=inv_env(settings), text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def ended(proc: subprocess.Popen, within: float = 60) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=within)
    finally:
        kill(proc)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# --- a command and what it started end with the session ----------------------------------


def test_what_a_command_leaves_behind_ends_when_it_returns(sandbox, settings, host_shell):
    report = exec_command(
        Selection(hosts=("sbx01",)),
        quiet(deadline=20),
        settings,
        command="sleep 601 & sh -c 'trap \"\" TERM; exec sleep 602' & echo started",
    )
    row = report.results[0]
    assert row.state == State.OK, report.table()
    assert row.facts["stdout"].strip() == "started"
    # the one that ignores SIGTERM gets SIGKILL
    wait_gone(host_shell, "sbx01", "sleep 60[12]")


def test_the_deadline_ends_the_command_and_everything_it_started(sandbox, settings, host_shell):
    report = exec_command(
        Selection(hosts=("sbx01",)),
        quiet(deadline=4),
        settings,
        command="sleep 603 & sleep 604",
    )
    assert report.results[0].state == State.TIMED_OUT, report.table()
    wait_gone(host_shell, "sbx01", "sleep 60[34]")


def test_a_killed_controller_leaves_nothing_running_on_the_host(sandbox, settings, host_shell):
    proc = start_inv(
        settings, "exec", "--host", "sbx02", "--deadline", str(LONG_DEADLINE), "--",
        "sleep 605 & sleep 606",
    )  # fmt: skip
    try:
        wait_until("the command runs", lambda: running(host_shell, "sbx02", "sleep 60[6]"))
    finally:
        kill(proc)  # SIGKILL: no handler runs on the controller; the kernel drops the TCP
    wait_gone(host_shell, "sbx02", "sleep 60[56]")


def test_a_closed_transport_ends_the_command(sandbox, host_shell):
    conn = connect(sandbox, "sbx02")
    command = tentacle.supervised("sleep 607 & sleep 608", LONG_DEADLINE)
    outcome: list[object] = []

    def remote() -> None:
        try:
            outcome.append(run(conn, command))
        except Exception as exc:  # the transport closing under the command is the point
            outcome.append(exc)

    worker = threading.Thread(target=remote)
    worker.start()
    try:
        wait_until("the command runs", lambda: running(host_shell, "sbx02", "sleep 60[8]"))
        conn.client.get_transport().close()
        wait_gone(host_shell, "sbx02", "sleep 60[78]")
    finally:
        conn.close()
        worker.join(30)
    assert outcome, "the command's thread did not come back"


# --- Ctrl-C and SIGTERM: remote work ended, then the report ---------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_run_ends_the_remote_work_and_writes_its_report(
    sandbox, settings, host_shell, sig, code
):
    hung = " -S [^ ]*tentacle/Tentacle configur[e]"  # the Tentacle itself, not its wrappers
    sandbox.set_faults("sbx03", hang=["configure"])
    try:
        proc = start_inv(
            settings, "bootstrap", "--host", "sbx03", "--deadline", str(LONG_DEADLINE),
            "--format", "json",
        )  # fmt: skip
        try:
            wait_until("configure hangs", lambda: running(host_shell, "sbx03", hung), 60)
            hanging_since = time.monotonic()
            wait_until("a while passes", lambda: time.monotonic() - hanging_since > 1)
            proc.send_signal(sig)
            signalled = time.monotonic()
            out, err = ended(proc, within=30)
        finally:
            kill(proc)
        # the hung command and its children are gone, long before the host's own deadline
        wait_gone(host_shell, "sbx03", hung)
    finally:
        sandbox.set_faults("sbx03", hang=[])
    assert proc.returncode == code, err
    assert "Traceback" not in err
    data = json.loads(out)
    assert data["exit_code"] == code
    row = data["machines"][0]
    assert (row["state"], row["failed_step"]) == ("interrupted", "configure"), row
    assert signalled - hanging_since <= row["seconds"] <= time.monotonic() - hanging_since + 60
    run_dir = Path(data["run_dir"])
    assert json.loads((run_dir / "report.json").read_text())["exit_code"] == code
    assert "interrupted" in (run_dir / "report.txt").read_text()
    last_run = json.loads((settings.state_dir / "last-run" / "sandbox.json").read_text())
    assert last_run["run_dir"] == str(run_dir) and "sbx03" in last_run["failed"]


# --- the private key's transient copy on the host ---------------------------------------------

IMPORTING = " -S [^ ]*tentacle/Tentacle import-certificat[e]"  # not its wrappers


def hung_import(sandbox, settings, host_shell, name: str) -> tuple[subprocess.Popen, str]:
    """A bootstrap of a new machine whose Tentacle hangs in import-certificate: the controller
    and the PID of the hung import on the host."""
    sandbox.set_faults(name, hang=["import-certificate"])
    proc = start_inv(settings, "bootstrap", "--host", name, "--deadline", str(LONG_DEADLINE))
    try:
        lines = wait_until("the import hangs", lambda: running(host_shell, name, IMPORTING), 60)
    except BaseException:
        kill(proc)
        raise
    return proc, lines[0].split()[0]


def key_files(host_shell, name: str) -> list[str]:
    """Every transient identity file the host's own processes can see at the usual places."""
    found = host_shell(name, "ls -d /dev/shm/* /dev/shm/*/* /tmp/octoboot-* /tmp/octoboot-*/*")
    return [line for line in found.stdout.splitlines() if "octoboot" in line]


def no_secret_in_any_argv(sandbox, settings) -> None:
    password = settings.pfx_password().reveal()
    for host in sandbox.hosts():
        for argv in host.tentacle_calls():
            words = " ".join(argv)
            assert password not in words and "pfx-password" not in words, argv
            assert "--pw" not in argv and not any(a.startswith("--pw=") for a in argv), argv


def test_the_key_crosses_the_host_on_a_tmpfs_private_to_the_import(sandbox, settings, host_shell):
    proc, pid = hung_import(sandbox, settings, host_shell, "sbx04")
    try:
        # the copy exists only where the import's own processes look: a tmpfs of their own
        mounts = host_shell("sbx04", f"cat /proc/{pid}/mountinfo").stdout.splitlines()
        assert any(" /dev/shm " in m and " tmpfs octoboot " in m for m in mounts), mounts
        inside = host_shell("sbx04", f"ls /proc/{pid}/root/dev/shm/*/").stdout.split()
        assert inside == ["identity.pfx"]
        assert key_files(host_shell, "sbx04") == []
    finally:
        kill(proc)  # the connection drops mid-import
        sandbox.set_faults("sbx04", hang=[])
    wait_gone(host_shell, "sbx04", IMPORTING)
    anywhere = host_shell("sbx04", "ls -d /proc/[0-9]*/root/dev/shm/octoboot-*").stdout
    assert anywhere.strip() == "" and key_files(host_shell, "sbx04") == []
    no_secret_in_any_argv(sandbox, settings)


def test_without_namespaces_the_copy_on_dev_shm_goes_when_the_connection_drops(
    sandbox, settings, host_shell
):
    sandbox.set_faults("sbx04", no_namespaces=True)
    try:
        proc, _ = hung_import(sandbox, settings, host_shell, "sbx04")
        try:
            files = key_files(host_shell, "sbx04")
            assert any(f.startswith("/dev/shm/octoboot-") for f in files), files
            fs = host_shell("sbx04", "stat -f -c %T /dev/shm").stdout.strip()
            assert fs == "tmpfs"  # never on a disk, even here
        finally:
            kill(proc)
            sandbox.set_faults("sbx04", hang=[])
        wait_gone(host_shell, "sbx04", IMPORTING)
        wait_until("the copy is removed", lambda: key_files(host_shell, "sbx04") == [])
    finally:
        sandbox.set_faults("sbx04", no_namespaces=False)
    no_secret_in_any_argv(sandbox, settings)


def test_a_key_an_earlier_run_left_is_removed_at_the_next_contact(sandbox, settings, host_shell):
    dead = host_shell("sbx04", "sh -c 'echo $$'").stdout.strip()
    plant = (
        f"mkdir -m 700 /dev/shm/octoboot-{dead}-AbCdEfGh /tmp/octoboot-IjKlMnOp && "
        f"echo key > /dev/shm/octoboot-{dead}-AbCdEfGh/identity.pfx && "
        "echo key > /tmp/octoboot-IjKlMnOp/identity.pfx"
    )
    assert host_shell("sbx04", plant).ok
    assert len(key_files(host_shell, "sbx04")) == 4
    # status only looks, and still does not leave a private key lying there
    status(Selection(hosts=("sbx04",)), quiet(), settings)
    assert key_files(host_shell, "sbx04") == []


def test_after_the_faults_the_machine_bootstraps_through_the_private_tmpfs(
    sandbox, settings, host_shell
):
    report = bootstrap(Selection(hosts=("sbx04",)), quiet(), settings)
    assert report.results[0].state == State.CHANGED, report.table()
    identity = next(s for s in report.results[0].steps if s.name == "identity")
    assert identity.status == "changed"
    log = Path(report.results[0].log).read_text()
    assert "transient copy: on a private tmpfs" in log
    assert key_files(host_shell, "sbx04") == []
    no_secret_in_any_argv(sandbox, settings)
