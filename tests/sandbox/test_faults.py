"""Bad days on the sandbox: hosts down, silent, refusing us, failing, hanging; an Octopus
that fails or refuses the key; hostile input. Every machine gets a true answer, the others
finish, nothing is lost, no secret leaks."""

import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from octoboot import octopus as octopus_module
from octoboot.bootstrap import bootstrap
from octoboot.deregister import deregister
from octoboot.errors import ConfigError
from octoboot.exec import exec_command
from octoboot.octopus import OctopusClient, OctopusUnavailable
from octoboot.report import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, State
from octoboot.run import RunOptions, Selection
from tests.sandbox.conftest import connect, run
from tests.sandbox.project import (
    by_name,
    inv,
    octopus_machines,
    quiet,
    writes_since,
)

DEADLINE = 20
CONNECT_TIMEOUT = 3
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(10, install_seconds=1)


@pytest.fixture(scope="module")
def faulty_run(sandbox, settings):
    """One parallel bootstrap of 10 machines where five things go wrong at once."""
    sandbox.stop_host("sbx01")
    sandbox.set_blackhole("sbx02", True)
    sandbox.set_faults("sbx03", refuse_login=True)
    sandbox.set_faults("sbx04", install_fails=True)
    sandbox.set_faults("sbx05", hang=["configure"])
    lines: list[str] = []
    options = RunOptions(
        parallel=True, deadline=DEADLINE, connect_timeout=CONNECT_TIMEOUT, verbose=True,
        console=lines.append,
    )  # fmt: skip
    started = time.monotonic()
    report = bootstrap(Selection(env="sandbox"), options, settings)
    wall = time.monotonic() - started
    return report, wall, lines


def clear_faults(sandbox):
    sandbox.start_host("sbx01")
    sandbox.set_blackhole("sbx02", False)
    sandbox.set_faults("sbx03", refuse_login=False)
    sandbox.set_faults("sbx04", install_fails=False)
    sandbox.set_faults("sbx05", hang=[])


def test_every_row_says_what_happened(faulty_run):
    report, _, _ = faulty_run
    rows = by_name(report)
    expected = {
        "sbx01": (State.UNREACHABLE, "connect", "Connection refused"),
        "sbx02": (State.UNREACHABLE, "connect", "cannot reach"),
        "sbx03": (State.FAILED, "connect", "authentication failed"),
        "sbx04": (State.FAILED, "install", "No space left on device"),
        "sbx05": (State.TIMED_OUT, "configure", ""),
    }
    for name, (state, step, words) in expected.items():
        row = rows[name]
        assert (row.state, row.failed_step) == (state, step), row
        assert words in row.reason, row.reason
    for name in ("sbx06", "sbx07", "sbx08", "sbx09", "sbx10"):
        assert rows[name].state == State.CHANGED, rows[name]
    assert report.exit_code == EXIT_FAILED | EXIT_UNREACHABLE


def test_the_healthy_machines_are_registered_and_healthy(faulty_run, octopus):
    registered = octopus_machines(octopus)
    for name in ("sbx06", "sbx07", "sbx08", "sbx09", "sbx10"):
        assert registered[name]["HealthStatus"] == "Healthy"
    for name in ("sbx01", "sbx02", "sbx03", "sbx04"):
        assert name not in registered


def test_the_run_ends_within_the_deadline_and_the_silent_host_within_the_connect_timeout(
    faulty_run,
):
    report, wall, _ = faulty_run
    assert wall < DEADLINE + 10
    assert by_name(report)["sbx02"].seconds < CONNECT_TIMEOUT + 3
    assert by_name(report)["sbx01"].seconds < 2  # refused: at once


def test_the_hung_command_does_not_keep_running_on_the_host(faulty_run, sandbox):
    # `timeout` on the host ends it (and its process group) at the deadline
    conn = connect(sandbox, "sbx05")
    try:
        deadline = time.monotonic() + 15
        while run(conn, "pgrep -f 'tentacle/Tentacle configur[e]'").ok:
            assert time.monotonic() < deadline, "the hung configure is still running"
            time.sleep(0.2)
    finally:
        conn.close()


def test_logs_exist_for_all_and_no_secret_is_anywhere(faulty_run, sandbox, settings):
    report, _, lines = faulty_run
    secrets = [sandbox.api_key(), settings.pfx_password().reveal()]
    texts = ["\n".join(lines), report.to_json(), report.table()]
    for row in report.results:
        log = Path(row.log)
        assert log.exists() and log.stat().st_size > 0
        texts.append(log.read_text())
    texts += [p.read_text() for p in Path(report.run_dir).iterdir()]
    for host in sandbox.hosts():
        texts.append(json.dumps(host.tentacle_calls()))
    assert any("sbx06: health ok" in line for line in lines)  # -v: steps as they end
    for secret in secrets:
        assert not any(secret in text for text in texts)


def test_no_pfx_remains_on_any_host(faulty_run, sandbox):
    for host in sandbox.hosts():
        leftovers = [
            p
            for folder in ("/tmp", "/opt/octopus", "/home/Octopus")
            for p in host.disk_path(folder).rglob("*")
            if p.suffix == ".pfx" or p.name.startswith("octoboot-")
        ]
        assert leftovers == [], host.name


def test_retry_failed_after_the_faults_are_gone(faulty_run, sandbox, settings):
    clear_faults(sandbox)
    report = bootstrap(
        Selection(env="sandbox", retry_failed=True),
        quiet(deadline=DEADLINE, connect_timeout=CONNECT_TIMEOUT),
        settings,
    )
    assert sorted(by_name(report)) == ["sbx01", "sbx02", "sbx03", "sbx04", "sbx05"]
    assert report.exit_code == EXIT_OK, report.table()


def test_a_host_that_drops_during_install(faulty_run, sandbox, settings):
    sandbox.rebuild_host("sbx10")
    sandbox.set_faults("sbx10", install_seconds=8)
    host = sandbox.host("sbx10")

    def power_cut():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(call[1:2] == ["version"] for call in host.tentacle_calls()[-1:]):
                sandbox.stop_host("sbx10")
                return
            time.sleep(0.1)

    cutter = threading.Thread(target=power_cut)
    calls_before = len(host.tentacle_calls())
    cutter.start()
    try:
        report = bootstrap(Selection(hosts=("sbx10",)), quiet(accept_new_host_key=True), settings)
    finally:
        cutter.join()
        sandbox.set_faults("sbx10", install_seconds=1)
        sandbox.start_host("sbx10")
    assert len(host.tentacle_calls()) > calls_before
    row = report.results[0]
    assert row.failed_step == "install" and row.state in (State.UNREACHABLE, State.FAILED), row
    assert row.seconds < 15


def test_octopus_down_at_the_start_is_reported_before_any_host_is_touched(
    sandbox, settings, monkeypatch
):
    # the real client, with a retry budget shorter than its 30 s so the test does not wait
    monkeypatch.setattr(octopus_module, "OctopusClient", partial(OctopusClient, retry_seconds=2))
    calls = {h.name: len(h.tentacle_calls()) for h in sandbox.hosts()}
    sandbox.stop_octopus()
    try:
        # what to check, and the setting the URL came from
        with pytest.raises(
            OctopusUnavailable,
            match=r"did not answer: .* \(is it up and reachable from here\? the URL is ",
        ) as err:
            bootstrap(Selection(env="sandbox"), quiet(), settings)
    finally:
        sandbox.start_octopus()
    assert err.value.exit_code == 3
    assert {h.name: len(h.tentacle_calls()) for h in sandbox.hosts()} == calls


def test_octopus_5xx_is_retried_and_then_reported_per_machine(sandbox, settings, octopus):
    sandbox.set_octopus_fault(503, 2, match="/machines")
    report = bootstrap(Selection(hosts=("sbx06",)), quiet(), settings)
    assert report.exit_code == EXIT_OK, report.table()  # two 503s, then fine

    sandbox.rebuild_host("sbx09")
    deregister(Selection(hosts=("sbx09",)), quiet(), settings)
    sandbox.set_octopus_fault(500, 50, match="/machines", methods=["POST"])
    try:
        report = bootstrap(Selection(hosts=("sbx09",)), quiet(accept_new_host_key=True), settings)
    finally:
        sandbox.set_octopus_fault(500, 0)
    row = report.results[0]
    assert (row.state, row.failed_step) == (State.FAILED, "register"), row
    assert "500" in row.reason and "Injected fault" in row.reason


@pytest.mark.parametrize("key", ["", "API-WRONGWRONGWRONGWRONGWRONG"])
def test_a_missing_or_wrong_api_key_is_one_line_before_any_host(sandbox, settings, key):
    key_file = sandbox.endpoints().api_key_file
    calls = {h.name: len(h.tentacle_calls()) for h in sandbox.hosts()}
    original = key_file.read_text()
    key_file.write_text(key + "\n")
    try:
        with pytest.raises(ConfigError) as err:
            bootstrap(Selection(env="sandbox"), quiet(), settings)
    finally:
        key_file.write_text(original)
    message = str(err.value)
    assert "\n" not in message and "api-key" in message
    if key:
        assert sandbox.endpoints().octopus_url in message and "401" in message
        assert key not in message
    assert err.value.exit_code == 2
    assert {h.name: len(h.tentacle_calls()) for h in sandbox.hosts()} == calls


def test_a_name_registered_with_another_thumbprint_fails_at_register(sandbox, settings, octopus):
    machine = octopus_machines(octopus)["sbx07"]
    stranger = dict(machine, Endpoint=dict(machine["Endpoint"], Thumbprint="AB" * 20))
    octopus.put(f"/api/Spaces-1/machines/{machine['Id']}", json=stranger).raise_for_status()
    report = bootstrap(Selection(hosts=("sbx07",)), quiet(), settings)
    row = report.results[0]
    assert (row.state, row.failed_step) == (State.FAILED, "register")
    assert machine["Id"] in row.reason and "AB" * 20 in row.reason
    assert {s.name: s.status for s in row.steps}["identity"] == "skipped"
    assert octopus_machines(octopus)["sbx07"]["Endpoint"]["Thumbprint"] == "AB" * 20

    taken = bootstrap(Selection(hosts=("sbx07",)), quiet(), settings, take_over=True)
    assert taken.exit_code == EXIT_OK, taken.table()
    after = octopus_machines(octopus)["sbx07"]
    assert after["Id"] == machine["Id"]
    assert after["Endpoint"]["Thumbprint"] == machine["Endpoint"]["Thumbprint"]


def test_a_hostile_role_name_reaches_octopus_verbatim_and_no_host_shell(sandbox, settings, octopus):
    hostile = "web; touch /tmp/pwned $(touch /tmp/pwned2) `touch /tmp/pwned3`"
    inventory = settings.machines_dir / "sandbox.toml"
    original = inventory.read_text()
    inventory.write_text(
        original.replace('name = "sbx08"', f'name = "sbx08"\nroles = [{json.dumps(hostile)}]')
    )
    try:
        report = bootstrap(Selection(hosts=("sbx08",)), quiet(), settings)
        executed = exec_command(Selection(hosts=("sbx08",)), quiet(), settings, command="ls /tmp")
    finally:
        inventory.write_text(original)
    assert report.exit_code == EXIT_OK, report.table()
    assert octopus_machines(octopus)["sbx08"]["Roles"] == [hostile]
    assert "pwned" not in executed.results[0].facts["stdout"]


def test_ctrl_c_marks_machines_in_flight_interrupted_and_writes_everything(sandbox, settings):
    sandbox.set_faults("sbx05", hang=["configure"])
    sandbox.rebuild_host("sbx05")
    env = {
        **os.environ,
        "OCTOBOOT_STATE_DIR": str(settings.state_dir),
        "OCTOBOOT_MACHINES_DIR": str(settings.machines_dir),
        "OCTOBOOT_PFX_PASSWORD": settings.pfx_password().reveal(),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "bootstrap",
         "--env", "sandbox", "--limit", "sbx0[5-8]", "--parallel", "--accept-new-host-key",
         "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
        text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True)
    reader.start()
    try:
        finished, deadline = set(), time.monotonic() + 60
        while finished != {"sbx06", "sbx07", "sbx08"}:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if "changed (" in line or "unchanged (" in line:
                finished.add(line.split()[1].rstrip(":"))
        proc.send_signal(signal.SIGINT)
        out = proc.stdout.read()
        proc.wait(timeout=60)
        reader.join(timeout=10)
        err = "".join(lines.queue)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sandbox.set_faults("sbx05", hang=[])
    assert proc.returncode == 130, err
    data = json.loads(out)
    states = {m["machine"]: m["state"] for m in data["machines"]}
    assert states.pop("sbx05") == "interrupted"
    assert set(states) == {"sbx06", "sbx07", "sbx08"}
    assert set(states.values()) <= {"changed", "unchanged"}
    run_dir = Path(data["run_dir"])
    assert json.loads((run_dir / "report.json").read_text())["exit_code"] == 130
    assert all((run_dir / f"sbx0{n}.log").exists() for n in (5, 6, 7, 8))
    assert "Traceback" not in err


def exec_with_open_files_limit(settings, limit: int):
    """inv exec on every host at once, under a soft open-files limit (the hard one stays)."""

    def lower() -> None:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )

    return inv(
        settings, "exec", "--env", "sandbox", "--parallel", "--workers", "10", "--", "hostname",
        preexec_fn=lower,
    )  # fmt: skip


def test_a_low_open_files_limit_sizes_the_pool_with_one_line(sandbox, settings):
    limit = 20  # 10 machines at once would need more than this
    proc = exec_with_open_files_limit(settings, limit)
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    assert "Too many open files" not in proc.stdout + proc.stderr
    said = [line for line in proc.stderr.splitlines() if "open-files limit" in line]
    assert len(said) == 1 and f"ulimit -n: {limit}" in said[0], proc.stderr
    assert proc.stdout.count(" ok ") == 10
    # a limit that leaves room for no machine at all is one line before any host
    refused = exec_with_open_files_limit(settings, 10)
    assert refused.returncode == 2 and refused.stdout == "", refused.stderr
    assert refused.stderr.count("\n") == 1 and "ulimit -n: 10" in refused.stderr


def test_writes_since_helper_sees_posts(sandbox, octopus):
    # guards the helper the dry-run and status tests rely on
    offset = len((sandbox.root / "octopus" / "requests.jsonl").read_text().splitlines())
    octopus.post("/api/Spaces-1/environments", json={"Name": "Probe"})
    assert [w["method"] for w in writes_since(sandbox, offset)] == ["POST"]
