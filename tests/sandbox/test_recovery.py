"""Faults a fleet meets, and what octoboot makes of them: Octopus failing or restarting
during registration, a Tentacle service that hangs, a damaged Tentacle configuration, and a
machine renamed in the inventory. Real SSH to real sshd hosts, real HTTP to the stand-in."""

import datetime as dt
import json
import secrets
import threading
import time

import pytest

from octoboot.bootstrap import bootstrap, register
from octoboot.errors import ConfigError
from octoboot.octopus import OctopusClient
from octoboot.report import EXIT_OK, State
from octoboot.run import Selection
from octoboot.settings import API_KEY_VARIABLE
from tests.sandbox.conftest import run
from tests.sandbox.project import inv, octopus_machines, quiet

ALL = Selection(env="sandbox")
CONFIG = "/etc/octopus/Tentacle/tentacle-Tentacle.config"
SERVICE_PID = "/run/octoboot-sandbox/units/Tentacle.service.pid"


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(6, install_seconds=0.5)


@pytest.fixture(scope="module")
def bootstrapped(sandbox, settings):
    report = bootstrap(Selection(env="sandbox", limits=("sbx0[1-5]",)), quiet(), settings)
    assert report.exit_code == EXIT_OK, report.table()
    return report


def one(name: str) -> Selection:
    return Selection(hosts=(name,))


def steps(row) -> dict[str, str]:
    return {s.name: f"{s.status}: {s.detail}" for s in row.steps}


def stop_service(ssh, sandbox, host: str) -> int:
    """SIGSTOP the host's Tentacle service: systemd still says active, nothing answers."""
    conn = ssh(sandbox, host)
    pid = int(run(conn, f"cat {SERVICE_PID}").stdout)
    assert run(conn, f"kill -STOP {pid}").ok
    return pid


def resume(ssh, sandbox, host: str, pid: int) -> None:
    run(ssh(sandbox, host), f"kill -CONT {pid} 2>/dev/null")


def wait_for(predicate, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)
    return found


# --- Octopus faults during registration -------------------------------------------------


@pytest.fixture
def octopus_fault(sandbox):
    yield sandbox.set_octopus_fault
    sandbox.set_octopus_fault(None, 0)


def test_503s_on_posts_are_retried_and_make_one_record(sandbox, settings, octopus, octopus_fault):
    octopus_fault(503, 3, match="/machines", methods=["POST"])
    created = bootstrap(one("sbx06"), quiet(), settings)
    assert created.exit_code == EXIT_OK, created.table()
    records = [m for m in octopus_machines(octopus).values() if m["Name"] == "sbx06"]
    assert len(records) == 1 and created.results[0].octopus_id == records[0]["Id"]

    octopus_fault(503, 2, match="/tasks", methods=["POST"])
    checked = register(one("sbx06"), quiet(), settings)
    assert checked.exit_code == EXIT_OK, checked.table()
    assert steps(checked.results[0])["health"].startswith("ok: Healthy")


def test_a_create_answered_too_late_is_found_not_made_twice(sandbox, octopus, octopus_fault):
    environment = octopus.get("/api/Spaces-1/environments/all").json()[0]["Id"]
    name, thumbprint = f"late-{secrets.token_hex(3)}", secrets.token_hex(20).upper()
    body = {
        "Name": name,
        "EnvironmentIds": [environment],
        "Roles": ["web"],
        "Endpoint": {
            "CommunicationStyle": "TentaclePassive",
            "Uri": "https://late.example:10933/",
            "Thumbprint": thumbprint,
        },
    }
    # Octopus holds the first POST for 2 s and only then creates the record: the client
    # gave up on it after 1 s, and Octopus creates it afterwards.
    octopus_fault(None, 1, match="/machines", methods=["POST"], delay=2)
    ends, sent = sandbox.endpoints(), dt.datetime.now(dt.UTC)
    with OctopusClient(
        ends.octopus_url,
        sandbox.api_key(),
        key_hint=API_KEY_VARIABLE,
        timeout=1,
        retry_seconds=20,
    ) as client:
        client.connect([])
        created = client.create_machine(body)

    def held_post_answered() -> bool:
        return any(
            r["method"] == "POST"
            and r["path"].endswith("/machines")
            and dt.datetime.fromisoformat(r["time"]) >= sent + dt.timedelta(seconds=2)
            for r in map(json.loads, requests(sandbox))
        )

    wait_for(held_post_answered, "Octopus to answer the POST it held", 10)
    records = [m for m in octopus_machines(octopus).values() if m["Name"] == name]
    assert [r["Id"] for r in records] == [created["Id"]]
    assert records[0]["Endpoint"]["Thumbprint"] == thumbprint


def requests(sandbox) -> list[str]:
    return (sandbox.root / "octopus" / "requests.jsonl").read_text().splitlines()


def test_a_health_task_failed_by_an_octopus_restart_is_reported_with_its_error(
    bootstrapped, sandbox, settings, octopus, ssh
):
    record = octopus_machines(octopus)["sbx01"]
    assert record["HealthStatus"] == "Healthy"
    # A hung service keeps the Health task running long enough to restart Octopus under it.
    pid = stop_service(ssh, sandbox, "sbx01")
    done: dict = {}
    runner = threading.Thread(
        target=lambda: done.update(report=register(one("sbx01"), quiet(deadline=60), settings))
    )
    runner.start()
    try:

        def running():
            tasks = octopus.get("/api/tasks", params={"states": "Executing"}).json()["Items"]
            return [t for t in tasks if record["Id"] in t["Arguments"].get("MachineIds", [])]

        task = wait_for(running, "sbx01's health task to run")[0]
        sandbox.stop_octopus()
        sandbox.start_octopus()
    finally:
        runner.join(timeout=120)
        resume(ssh, sandbox, "sbx01", pid)
    row = done["report"].results[0]
    assert (row.state, row.failed_step) == (State.FAILED, "health"), row
    failed = octopus.get(f"/api/tasks/{task['Id']}").json()
    assert failed["State"] == "Failed" and failed["ErrorMessage"]
    assert row.reason == f"health task {task['Id']} Failed: {failed['ErrorMessage']}"
    assert "Octopus says" not in row.reason


# --- a hung Tentacle service --------------------------------------------------------------


def test_a_hung_service_is_restarted_once_when_octopus_says_unavailable(
    bootstrapped, sandbox, settings, octopus, ssh
):
    pid = stop_service(ssh, sandbox, "sbx02")
    try:
        report = bootstrap(one("sbx02"), quiet(deadline=60), settings)
    finally:
        resume(ssh, sandbox, "sbx02", pid)
    row = report.results[0]
    assert report.exit_code == EXIT_OK and row.state == State.CHANGED, report.table()
    assert steps(row)["service"].startswith("unchanged")
    assert "after restarting Tentacle.service, active but Unavailable" in steps(row)["health"]
    conn = ssh(sandbox, "sbx02")
    assert int(run(conn, f"cat {SERVICE_PID}").stdout) != pid
    stat = run(conn, f"cat /proc/{pid}/stat 2>/dev/null").stdout
    assert not stat or stat.rpartition(")")[2].split()[0] == "Z"  # the hung process is gone
    assert octopus_machines(octopus)["sbx02"]["HealthStatus"] == "Healthy"


# --- a damaged Tentacle configuration -----------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "half-written"])
def test_a_damaged_configuration_is_reported_and_repaired(
    bootstrapped, sandbox, settings, octopus, damage
):
    config = sandbox.host("sbx03").disk_path(CONFIG)
    before = octopus_machines(octopus)["sbx03"]
    text = config.read_text()
    config.write_text("" if damage == "empty" else text[: len(text) // 2])

    seen = status(settings, "sbx03")
    assert seen.failed_step == "drift" and "configuration damaged" in seen.facts["drift"]
    assert "There is an error in XML document" in seen.reason
    assert "no host certificate" not in seen.reason

    repaired = bootstrap(one("sbx03"), quiet(), settings)
    row = repaired.results[0]
    assert repaired.exit_code == EXIT_OK and row.state == State.CHANGED, repaired.table()
    assert "the old one was damaged" in steps(row)["identity"]
    assert steps(row)["configure"].startswith("changed")
    after = octopus_machines(octopus)["sbx03"]
    assert after["Id"] == before["Id"] and after["HealthStatus"] == "Healthy"
    assert after["Endpoint"]["Thumbprint"] == before["Endpoint"]["Thumbprint"] == row.thumbprint
    again = bootstrap(one("sbx03"), quiet(), settings)
    assert again.results[0].state == State.UNCHANGED, again.table()
    assert status(settings, "sbx03").state == State.OK


def status(settings, name):
    from octoboot.status import status as machine_status

    return machine_status(one(name), quiet(), settings).results[0]


# --- a renamed machine ---------------------------------------------------------------------


def test_a_renamed_machine_is_stopped_and_renamed_in_place_when_asked(
    bootstrapped, sandbox, settings, octopus
):
    inventory = settings.machines_dir / "sandbox.toml"
    original = inventory.read_text()
    before = octopus_machines(octopus)["sbx04"]
    store = settings.state_dir / "identities"
    host_config = sandbox.host("sbx04").disk_path(CONFIG)
    host_before = host_config.read_bytes()
    inventory.write_text(
        original.replace('name = "sbx04"', 'name = "sbx04-new"\naddress = "sbx04"')
    )
    try:
        refused = bootstrap(one("sbx04-new"), quiet(), settings)
        row = refused.results[0]
        assert (row.state, row.failed_step) == (State.FAILED, "identity"), refused.table()
        assert "\n" not in row.reason
        assert f"registered as sbx04 ({before['Id']})" in row.reason
        assert "--renamed-from sbx04" in row.reason
        assert host_config.read_bytes() == host_before  # the certificate was not replaced
        assert not (store / "sbx04-new.pfx").exists()
        assert "sbx04-new" not in octopus_machines(octopus)

        renamed = bootstrap(one("sbx04-new"), quiet(), settings, renamed_from="sbx04")
        row = renamed.results[0]
        assert renamed.exit_code == EXIT_OK and row.state == State.CHANGED, renamed.table()
        assert "name sbx04 → sbx04-new" in steps(row)["register"]
        assert steps(row)["identity"].startswith("unchanged")
        machines = octopus_machines(octopus)
        assert "sbx04" not in machines
        after = machines["sbx04-new"]
        assert after["Id"] == before["Id"] == row.octopus_id
        assert after["Endpoint"]["Thumbprint"] == before["Endpoint"]["Thumbprint"]
        assert after["HealthStatus"] == "Healthy"
        assert (store / "sbx04-new.pfx").exists() and not (store / "sbx04.pfx").exists()

        again = bootstrap(one("sbx04-new"), quiet(), settings, renamed_from="sbx04")
        assert again.results[0].state == State.UNCHANGED, again.table()
    finally:
        inventory.write_text(original)


def test_renamed_from_is_checked_before_any_host(bootstrapped, settings):
    with pytest.raises(ConfigError, match="renames one machine"):
        bootstrap(ALL, quiet(), settings, renamed_from="old01")
    with pytest.raises(ConfigError, match="sbx02 is still listed"):
        bootstrap(one("sbx01"), quiet(), settings, renamed_from="sbx02")


def test_deregister_removes_a_record_no_inventory_lists(bootstrapped, sandbox, settings, octopus):
    listed = octopus_machines(octopus)["sbx05"]
    ghost = dict(listed, Name="sbx05-old", Endpoint=dict(listed["Endpoint"], Thumbprint="AB" * 20))
    for key in ("Id", "Links", "Slug"):
        ghost.pop(key)
    octopus.post("/api/Spaces-1/machines", json=ghost).raise_for_status()

    unknown = inv(settings, "deregister", "--host", "sbx05-old")
    assert unknown.returncode == ConfigError.exit_code
    assert "no machine 'sbx05-old'" in unknown.stderr
    refused = inv(settings, "deregister", "--env", "sandbox", "--record", "sbx05")
    assert refused.returncode == ConfigError.exit_code
    assert refused.stderr.strip().endswith("deregister it with --host sbx05")

    removed = inv(settings, "deregister", "--env", "sandbox", "--record", "sbx05-old")
    assert removed.returncode == EXIT_OK, removed.stdout + removed.stderr
    assert "Traceback" not in removed.stderr
    machines = octopus_machines(octopus)
    assert "sbx05-old" not in machines and machines["sbx05"]["Id"] == listed["Id"]
    again = inv(settings, "deregister", "--env", "sandbox", "--record", "sbx05-old")
    assert again.returncode == EXIT_OK and "not registered in Octopus" in again.stderr
