"""Remote work ends with its session, on real sshd hosts: a command and everything it started
end when it returns, at its deadline, when the connection drops (the controller killed with
SIGKILL, the transport closed), and when the run is stopped (Ctrl-C, SIGTERM)."""

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

from octoboot import jobs, tentacle
from octoboot.report import State
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
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=inv_env(settings), text=True,
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
    report = jobs.exec_command(
        jobs.Selection(hosts=("sbx01",)),
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
    report = jobs.exec_command(
        jobs.Selection(hosts=("sbx01",)),
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
    hung = "tentacle_standin configur[e]"
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
