"""inv status on the sandbox: real sshd hosts, the Tentacle stand-in, the Octopus stand-in
over real HTTP. Status reads hosts, the identity store and Octopus, and changes none of them."""

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from octoboot.bootstrap import bootstrap
from octoboot.inventory import load_inventory
from octoboot.report import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, State
from octoboot.run import RunOptions, Selection
from octoboot.status import status
from tests.sandbox.project import by_name, inv, octopus_machines
from tests.sandbox.project import tree_digest as snapshot

HOSTS = ("sbx01", "sbx02", "sbx03", "sbx04")
PROBE_COMMANDS = {"version", "show-configuration"}


@pytest.fixture(scope="module")
def sandbox(sandbox_factory):
    return sandbox_factory(len(HOSTS), install_seconds=0.5)


@pytest.fixture(scope="module")
def known_hosts(settings):
    """The known_hosts file the sandbox inventory's machines are checked against."""
    machine = load_inventory(settings.machines_dir).environments["sandbox"].machines[0]
    return machine.ssh.known_hosts or settings.state_dir / "known_hosts"


def run_status(settings, health=False, deadline=None, **selection):
    options = RunOptions(parallel=True, deadline=deadline, console=lambda line: None)
    selection = {"env": "sandbox", **selection}
    return status(Selection(**selection), options, settings, health=health)


def octopus_requests(sandbox) -> list[dict]:
    log = sandbox.root / "octopus" / "requests.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@contextmanager
def changes_nothing(sandbox, settings, known_hosts):
    """Status must write nothing to Octopus, run only the probe's Tentacle commands on the
    hosts, and leave the identity store and known_hosts as they were."""
    offset = len(octopus_requests(sandbox))
    calls = {h.name: len(h.tentacle_calls()) for h in sandbox.hosts()}
    files = snapshot(settings.state_dir / "identities", known_hosts)
    yield
    new = octopus_requests(sandbox)[offset:]
    assert new, "status asked Octopus nothing"
    assert [r for r in new if r["method"] != "GET"] == []
    for host in sandbox.hosts():
        commands = {argv[1] for argv in host.tentacle_calls()[calls[host.name] :]}
        assert commands <= PROBE_COMMANDS, (host.name, commands)
    assert snapshot(settings.state_dir / "identities", known_hosts) == files


def test_before_bootstrap_every_machine_is_missing(sandbox, settings, known_hosts):
    assert not known_hosts.exists()
    with changes_nothing(sandbox, settings, known_hosts):
        report = run_status(settings)
    assert report.exit_code == EXIT_FAILED, report.table()
    rows = by_name(report)
    assert sorted(rows) == list(HOSTS)
    for row in rows.values():
        assert row.state == State.FAILED and row.failed_step == "drift"
        assert row.facts["reachable"] == "yes" and row.facts["version"] == "not installed"
        assert row.facts["drift"] == "not installed, no stored identity, missing from Octopus"
        assert row.octopus_id is None
    # read-only: no host key remembered, no identity minted, no outcome recorded
    assert not known_hosts.exists()
    assert not (settings.state_dir / "identities").exists()
    assert not (settings.state_dir / "last-run").exists()
    table = (Path(report.run_dir) / "report.txt").read_text()
    assert "host thumbprint" in table and "missing from Octopus" in table


@pytest.fixture(scope="module")
def bootstrapped(sandbox, settings):
    report = bootstrap(
        Selection(env="sandbox"),
        RunOptions(parallel=True, console=lambda line: None),
        settings,
    )
    assert report.exit_code == EXIT_OK, report.table()
    # A stale upload that only a changing run's probe would clean up.
    stale = sandbox.host("sbx01").disk_path("/tmp") / "octoboot-stale"
    stale.mkdir()
    os.utime(stale, (0, 0))
    return stale


def test_after_bootstrap_every_machine_is_ok(bootstrapped, sandbox, settings, octopus, known_hosts):
    # Forget sbx02's host key: status must accept it for this run without writing it down.
    address = sandbox.host("sbx02").address
    remembered = known_hosts.read_text()
    known_hosts.write_text(
        "".join(
            line
            for line in remembered.splitlines(keepends=True)
            if not line.startswith(f"{address} ")
        )
    )
    try:
        with changes_nothing(sandbox, settings, known_hosts):
            report = run_status(settings)
    finally:
        known_hosts.write_text(remembered)
    assert report.exit_code == EXIT_OK, report.table()
    registered = octopus_machines(octopus)
    for name, row in by_name(report).items():
        record = registered[name]
        thumbprint = record["Endpoint"]["Thumbprint"]
        assert row.state == State.OK and row.failed_step is None, row
        assert row.octopus_id == record["Id"]
        assert row.facts == {
            "reachable": "yes",
            "version": row.facts["version"],
            "service": "active",
            "host_thumbprint": thumbprint,
            "store_thumbprint": thumbprint,
            "octopus_thumbprint": thumbprint,
            "health": "Healthy",
            "drift": "",
        }
        assert row.facts["version"][0].isdigit()
    assert bootstrapped.exists()
    assert f"{thumbprint[:8]}…" in report.table()


def test_roles_changed_in_octopus_are_drift(bootstrapped, sandbox, settings, octopus, known_hosts):
    record = octopus_machines(octopus)["sbx02"]
    octopus.put(f"/api/Spaces-1/machines/{record['Id']}", json={**record, "Roles": ["db"]})
    try:
        with changes_nothing(sandbox, settings, known_hosts):
            proc = inv(settings, "status", "--env", "sandbox", "--format", "json")
    finally:
        octopus.put(f"/api/Spaces-1/machines/{record['Id']}", json=record)
    assert proc.returncode == EXIT_FAILED, proc.stderr
    data = json.loads(proc.stdout)
    assert data["exit_code"] == EXIT_FAILED
    rows = {m["machine"]: m for m in data["machines"]}
    assert rows["sbx02"]["state"] == "failed" and rows["sbx02"]["failed_step"] == "drift"
    assert rows["sbx02"]["facts"]["drift"] == "roles"
    assert rows["sbx02"]["reason"] == "drift: roles (Octopus db, inventory web)"
    assert {rows[n]["state"] for n in HOSTS if n != "sbx02"} == {"ok"}


def test_a_port_changed_in_octopus_is_drift_and_register_puts_it_back(
    bootstrapped, sandbox, settings, octopus, known_hosts
):
    """status and register compare the same wanted record: a port the inventory does not
    say is drift for one and an update in place for the other."""
    record = octopus_machines(octopus)["sbx03"]
    uri = record["Endpoint"]["Uri"]
    moved = uri.replace(":10933/", ":10999/")
    assert moved != uri
    changed = {**record, "Endpoint": {**record["Endpoint"], "Uri": moved}}
    octopus.put(f"/api/Spaces-1/machines/{record['Id']}", json=changed).raise_for_status()
    try:
        with changes_nothing(sandbox, settings, known_hosts):
            proc = inv(settings, "status", "--env", "sandbox", "--format", "json")
            planned = inv(settings, "register", "--host", "sbx03", "--dry-run", "--format", "json")
        fixed = inv(settings, "register", "--host", "sbx03", "--format", "json")
        after = octopus_machines(octopus)
    finally:  # as it was, whatever register did
        octopus.put(f"/api/Spaces-1/machines/{record['Id']}", json=record)
    assert proc.returncode == EXIT_FAILED, proc.stderr
    rows = {m["machine"]: m for m in json.loads(proc.stdout)["machines"]}
    assert rows["sbx03"]["state"] == "failed" and rows["sbx03"]["failed_step"] == "drift"
    assert rows["sbx03"]["facts"]["drift"] == "address"
    assert rows["sbx03"]["reason"] == f"drift: address (Octopus {moved}, inventory {uri})"
    assert {rows[n]["state"] for n in HOSTS if n != "sbx03"} == {"ok"}

    def register_step(proc) -> dict:
        machine = json.loads(proc.stdout)["machines"][0]
        return next(step for step in machine["steps"] if step["name"] == "register")

    assert planned.returncode == EXIT_OK, planned.stdout + planned.stderr
    assert register_step(planned)["status"] == "would change"
    assert register_step(planned)["detail"] == f"would update {record['Id']}: address"
    assert fixed.returncode == EXIT_OK, fixed.stdout + fixed.stderr
    assert register_step(fixed)["status"] == "changed"
    assert register_step(fixed)["detail"] == f"updated {record['Id']}: address"
    assert list(after).count("sbx03") == 1 and len(after) == len(HOSTS)
    assert after["sbx03"]["Id"] == record["Id"] and after["sbx03"]["Endpoint"]["Uri"] == uri
    assert run_status(settings).exit_code == EXIT_OK


def test_a_machine_no_inventory_lists_gets_its_own_row(
    bootstrapped, sandbox, settings, octopus, known_hosts
):
    environment = octopus.get("/api/Spaces-1/environments/all").json()[0]
    stray = octopus.post(
        "/api/Spaces-1/machines",
        json={
            "Name": "stray01",
            "EnvironmentIds": [environment["Id"]],
            "Roles": ["web"],
            "Endpoint": {
                "CommunicationStyle": "TentaclePassive",
                "Uri": "https://10.99.0.1:10933/",
                "Thumbprint": "C" * 40,
            },
        },
    ).json()
    try:
        with changes_nothing(sandbox, settings, known_hosts):
            report = run_status(settings)
            narrowed = run_status(settings, limits=("sbx*",))
    finally:
        octopus.delete(f"/api/Spaces-1/machines/{stray['Id']}")
    assert report.exit_code == EXIT_FAILED, report.table()
    row = report.results[-1]
    assert row.machine == "stray01" and row.state == State.UNKNOWN
    assert row.environment == environment["Name"] and row.octopus_id == stray["Id"]
    assert row.facts["octopus_thumbprint"] == "C" * 40
    assert row.facts["drift"] == "not in the inventory"
    assert {r.state for r in report.results[:-1]} == {State.OK}
    # --limit narrows the extra rows too
    assert narrowed.exit_code == EXIT_OK and "stray01" not in by_name(narrowed)


def test_a_hung_host_is_timed_out_within_the_deadline_and_the_table_comes_back(
    bootstrapped, sandbox, settings, octopus, known_hosts
):
    record = octopus_machines(octopus)["sbx03"]
    sandbox.set_faults("sbx03", hang=["version"])  # the probe's first Tentacle command
    try:
        with changes_nothing(sandbox, settings, known_hosts):
            report = run_status(settings, deadline=6)
    finally:
        sandbox.set_faults("sbx03", hang=[])
    assert report.exit_code == EXIT_UNREACHABLE, report.table()
    row = by_name(report)["sbx03"]
    assert row.state == State.TIMED_OUT and row.failed_step == "probe", row
    assert row.seconds < 6
    # what the store and Octopus say about it is still there
    assert row.octopus_id == record["Id"]
    assert row.facts["store_thumbprint"] == record["Endpoint"]["Thumbprint"]
    assert row.facts["health"] == "Healthy"
    assert {by_name(report)[n].state for n in HOSTS if n != "sbx03"} == {State.OK}


def test_a_stopped_host_is_unreachable_with_its_octopus_columns(
    bootstrapped, sandbox, settings, octopus, known_hosts
):
    record = octopus_machines(octopus)["sbx04"]
    sandbox.stop_host("sbx04")
    try:
        with changes_nothing(sandbox, settings, known_hosts):
            report = run_status(settings)
        checked = run_status(settings, health=True, hosts=("sbx04",))
    finally:
        sandbox.start_host("sbx04")
    assert report.exit_code == EXIT_UNREACHABLE, report.table()
    row = by_name(report)["sbx04"]
    assert row.state == State.UNREACHABLE and row.failed_step == "connect"
    assert row.facts["reachable"] == "no" and "version" not in row.facts
    assert row.octopus_id == record["Id"]
    assert row.facts["octopus_thumbprint"] == record["Endpoint"]["Thumbprint"]
    assert row.facts["store_thumbprint"] == record["Endpoint"]["Thumbprint"]
    assert row.facts["health"] == "Healthy"  # the last known: nobody asked Octopus again
    assert {by_name(report)[n].state for n in HOSTS if n != "sbx04"} == {State.OK}
    # --health: Octopus checks for itself and finds the Tentacle gone
    fresh = checked.results[0]
    assert fresh.state == State.UNREACHABLE and fresh.facts["health"] == "Unavailable"
    assert fresh.facts["drift"] == "health" and "drift: health (Unavailable)" in fresh.reason
    assert checked.exit_code == EXIT_UNREACHABLE
