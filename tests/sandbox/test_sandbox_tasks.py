"""`inv sandbox.fault` from the real command line: each boolean fault turns on with --FLAG and
off with --no-FLAG, and the host really behaves so (real SSH, real TCP, real installs)."""

import json
import os
import socket
import subprocess

import paramiko
import pytest

from octoboot.bootstrap import bootstrap as run_bootstrap
from octoboot.bootstrap import install as run_install
from octoboot.report import MachineResult, State
from octoboot.run import Selection
from tests.sandbox.conftest import connect, run
from tests.sandbox.project import by_name, inv_argv, quiet


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(2, install_seconds=0)


def sandbox_inv(sandbox, *args: str) -> subprocess.CompletedProcess:
    """`inv ARGS` (project.inv's command line) on this sandbox."""
    return subprocess.run(
        inv_argv(args), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
        env={**os.environ, "OCTOBOOT_SANDBOX_DIR": str(sandbox.root)},
    )  # fmt: skip


def fault(sandbox, host: str, *flags: str) -> subprocess.CompletedProcess:
    return sandbox_inv(sandbox, "sandbox.fault", "--host", host, *flags)


def test_show_names_the_stand_ins_limits_and_the_hosts_take_the_start_up(sandbox):
    shown = sandbox_inv(sandbox, "sandbox.show")
    assert shown.returncode == 0, shown.stderr
    for limit in sandbox.settings().describe():
        assert limit in shown.stdout
    was = sandbox.settings().tentacle_startup_seconds
    try:
        sandbox.change_settings(tentacle_startup_seconds=0.7)
        assert "Tentacle command start-up 0.7 s" in sandbox_inv(sandbox, "sandbox.show").stdout
        for host in sandbox.hosts():  # what each host's Tentacle stand-in sleeps
            latency = json.loads((host.control / "latency.json").read_text())
            assert latency == {"startup_seconds": 0.7}
    finally:
        sandbox.change_settings(tentacle_startup_seconds=was)


def turn(sandbox, host: str, flag: str) -> None:
    done = fault(sandbox, host, flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{host}: ")


def stored(sandbox, host: str) -> dict:
    """faults.json as the host's stand-ins read it."""
    return json.loads((sandbox.host(host).control / "faults.json").read_text())


def silent(address: str) -> bool:
    try:
        socket.create_connection((address, 22), timeout=1.5).close()
    except TimeoutError:
        return True
    return False


def logs_in(sandbox, host: str) -> bool:
    conn = connect(sandbox, host)
    try:
        return run(conn, "hostname").stdout.strip() == host
    except paramiko.AuthenticationException:
        return False
    finally:
        conn.close()


def test_blackhole_on_and_off(sandbox):
    address = sandbox.host("sbx01").address
    try:
        turn(sandbox, "sbx01", "--blackhole")
        assert silent(address)
        assert "blackhole=True" in sandbox.describe()
    finally:
        turn(sandbox, "sbx01", "--no-blackhole")
    assert not silent(address)
    assert "blackhole" not in sandbox.describe()


def test_refuse_login_on_and_off(sandbox):
    try:
        turn(sandbox, "sbx01", "--refuse-login")
        assert stored(sandbox, "sbx01")["refuse_login"] is True
        assert not logs_in(sandbox, "sbx01")
    finally:
        turn(sandbox, "sbx01", "--no-refuse-login")
    assert stored(sandbox, "sbx01")["refuse_login"] is False
    assert logs_in(sandbox, "sbx01")


def install(settings) -> MachineResult:
    report = run_install(Selection(hosts=("sbx02",)), quiet(), settings)
    return by_name(report)["sbx02"]


def test_install_fails_on_and_off(sandbox, settings):
    try:
        turn(sandbox, "sbx02", "--install-fails")
        assert stored(sandbox, "sbx02")["install_fails"] is True
        row = install(settings)
        assert (row.state, row.failed_step) == (State.FAILED, "install")
    finally:
        turn(sandbox, "sbx02", "--no-install-fails")
    assert stored(sandbox, "sbx02")["install_fails"] is False
    # The archive is unpacked already; the Tentacle's first run now succeeds.
    row = install(settings)
    assert row.state in (State.CHANGED, State.UNCHANGED), row.reason


def bootstrap(sandbox, settings) -> MachineResult:
    # The Tentacle service reads the fault when it starts: power-cycle the host first.
    sandbox.stop_host("sbx02")
    sandbox.start_host("sbx02")
    report = run_bootstrap(Selection(hosts=("sbx02",)), quiet(), settings)
    return by_name(report)["sbx02"]


def test_untrusting_on_and_off(sandbox, settings):
    try:
        turn(sandbox, "sbx02", "--untrusting")
        assert stored(sandbox, "sbx02")["untrusting"] is True
        row = bootstrap(sandbox, settings)
        assert (row.state, row.failed_step) == (State.FAILED, "health")
        assert "trust" in row.reason
    finally:
        turn(sandbox, "sbx02", "--no-untrusting")
    assert stored(sandbox, "sbx02")["untrusting"] is False
    row = bootstrap(sandbox, settings)
    assert row.state in (State.CHANGED, State.UNCHANGED), row.reason


@pytest.mark.parametrize("flag", ["--install-fails=false", "--blackhole=no", "--untrusting=0"])
def test_a_value_on_a_switch_is_refused_and_nothing_is_stored(sandbox, flag):
    before = stored(sandbox, "sbx01")
    done = fault(sandbox, "sbx01", flag)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert stored(sandbox, "sbx01") == before
    assert not silent(sandbox.host("sbx01").address)


def test_on_and_off_at_once_is_refused(sandbox):
    before = stored(sandbox, "sbx01")
    done = fault(sandbox, "sbx01", "--refuse-login", "--no-refuse-login")
    assert done.returncode == 2
    assert done.stderr.strip() == "octoboot: give --refuse-login or --no-refuse-login, not both"
    assert stored(sandbox, "sbx01") == before
